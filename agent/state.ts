/**
 * The agent's state directory (default /var/lib/ferry):
 *
 *   identity.key      ed25519 key (0600): the agent's identity
 *   agent.json        coordinator, enrollment, deployment progress (atomic writes)
 *   castore/          verified objects fetched from the coordinator
 *   generations/N/    one per activation: config.json + `system` -> the target store path
 *   profile           symlink to the current generation (switched atomically)
 *   events.jsonl      bounded ring of recent events (see events.ts)
 *   facts.d/*.json    extra facts an operator adds
 *   run.lock, lock    the daemon's pid; whoever changes the directory now (state-lock.ts)
 */
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { KeyIdSchema } from '../protocol/identity.js';
import { PhaseSchema } from '../protocol/api/fleet.js';

export function agentPaths(stateDir: string) {
  return {
    stateDir,
    identity: path.join(stateDir, 'identity.key'),
    state: path.join(stateDir, 'agent.json'),
    castore: path.join(stateDir, 'castore'),
    generations: path.join(stateDir, 'generations'),
    profile: path.join(stateDir, 'profile'),
    events: path.join(stateDir, 'events.jsonl'),
    factsDir: path.join(stateDir, 'facts.d'),
  };
}

/** Config ids in the agent's own files are re-validated on load like everything it receives. */
const ConfigIdSchema = z.string().regex(/^[0-9a-f]{64}$/, 'a config id (64 hex characters)');

export const AgentStateSchema = z.strictObject({
  coordinator: z.strictObject({
    httpUrl: z.string(),
    coordinatorKey: KeyIdSchema,
    tlsFingerprint: z.string(),
    /** httpUrl is HTTPS to the coordinator itself, its certificate pinned (join strings with tls=pinned). */
    pinnedTls: z.boolean().default(false),
  }),
  agentId: KeyIdSchema,
  name: z.string(),
  storeDir: z.string().refine((dir) => path.isAbsolute(dir) && path.resolve(dir) !== '/', 'the store dir must be an absolute path other than /'),
  /** Facts last reported (a new revision is sent only when they change). */
  reportedFacts: z.string().nullable().default(null),
  /** A deployment that started and has not finished: resumed after a crash. */
  deploying: ConfigIdSchema.nullable().default(null),
  /** Configs that failed here (or were rolled back from): not retried until the desired config changes. */
  refused: z.array(ConfigIdSchema).default([]),
  /** The last `agents retry` taken up (its audit seq, from the signed desired answer): a later one clears `refused`. */
  retrySeen: z.number().int().nonnegative().default(0),
  /** Stopped (`agents assign … --none --stop`): no generation is active, and a failed deployment has none to go back to. */
  stopped: z.boolean().default(false),
  /**
   * For a refused config that references secrets: the secretsStamp it was
   * refused with. It is tried again once its secrets change (a new version,
   * a rekey that added this agent), though the config did not.
   */
  refusedStamps: z.record(ConfigIdSchema, z.string()).default({}),
  /**
   * The generation whose activation last succeeded here, when, and whether
   * it is on probation (a periodic health check turning degraded within the
   * config's probationSeconds rolls it back; never one rolled back to).
   */
  activated: z.strictObject({ generation: z.number().int().min(1), at: z.number(), probation: z.boolean() }).nullable().default(null),
  /** Reports not yet delivered (offline), oldest first. */
  pendingReports: z
    .array(
      z.strictObject({
        configId: ConfigIdSchema.nullable(),
        phase: PhaseSchema,
        error: z.string().nullable(),
        at: z.number(),
        /** Set while a bundle is applied: the coordinator records it in the report's audit event. */
        source: z.literal('bundle').optional(),
        /** With `source`: --force overrode a refusal (an older config). */
        forced: z.boolean().optional(),
        /** With `rolled-back`: the config the agent went back to (null: none). */
        running: ConfigIdSchema.nullable().optional(),
      }),
    )
    .default([]),
});
export type AgentState = z.infer<typeof AgentStateSchema>;

export class AgentStateError extends Error {
  override readonly name = 'AgentStateError';
  readonly code = 'AGENT_STATE';
}

export function readAgentState(stateDir: string): AgentState {
  const file = agentPaths(stateDir).state;
  if (!existsSync(file)) throw new AgentStateError(`${stateDir} holds no enrolled agent (run: ferry agent enroll <join-string> --state-dir ${stateDir})`);
  const parsed = AgentStateSchema.safeParse(JSON.parse(readFileSync(file, 'utf8')));
  if (!parsed.success) throw new AgentStateError(`${file} is not a valid agent state: ${parsed.error.issues[0]!.message}`);
  return parsed.data;
}

/** Writes atomically: a crash leaves the old or the new state, never half of one. */
export function writeAgentState(stateDir: string, state: AgentState): void {
  const file = agentPaths(stateDir).state;
  mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  writeFileSync(`${file}.tmp`, `${JSON.stringify(state, null, 2)}\n`, { mode: 0o600 });
  renameSync(`${file}.tmp`, file);
}
