/**
 * The coordinator's audit log on a real SQLite file (WAL) in a temp dir:
 * 1. append rate: >= 100,000 real commands through Coordinator.record /
 *    execute (command checks -> one chained audit event -> reducer -> state
 *    tables, one transaction each), a fleet-like mix: tokens, enrollments,
 *    approvals, changing facts, status reports, configs, assigns, pins,
 *    rollbacks, a few refused commands; rate over the whole run and over the
 *    last 20,000 events;
 * 2. replay of the whole log into an empty database with the live reducer
 *    (`replayLog` from coordinator/domain/reducer.ts, as the replay test
 *    does: Coordinator.events() -> applyEvent into a fresh SqliteStateStore,
 *    one transaction), then a row-by-row comparison of every state table
 *    with the live ones;
 * 3. Coordinator.verifyAudit (hash chain + signed checkpoints);
 * 4. ed25519 beside it: @noble/ed25519 vs node:crypto, verify and sign, on
 *    the same 2,000 (message, signature) pairs of 200 bytes.
 * Run: npm run bench:audit   (BENCH_EVENTS=... to change the log size)
 */
import { createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes, sign as nodeSign, verify as nodeVerify, type KeyObject } from 'node:crypto';
import type { StorePath } from '../nix/store-path.js';
import type { ConfigId } from '../protocol/config.js';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import { Coordinator } from '../coordinator/coordinator.js';
import { openCoordinatorDatabase } from '../coordinator/db/database.js';
import * as commands from '../coordinator/domain/commands.js';
import { FerryError } from '../protocol/errors.js';
import type { Actor, CommandContext } from '../coordinator/domain/commands.js';
import type { AuditEvent, ConfigBody, DraftWithFollowUps, EventDraft } from '../coordinator/domain/events.js';
import { replayLog } from '../coordinator/domain/reducer.js';
import { SqliteStateStore } from '../coordinator/domain/sqlite-state.js';
import { STATE_TABLES, type StateTableName } from '../coordinator/domain/state.js';
import { verifyChain, type ChainReport } from '../coordinator/audit/chain.js';
import { ed25519Sign, ed25519Verify, ed25519VerifyNoble } from '../protocol/ed25519.js';
import { Identity, keyIdOf, type KeyId } from '../protocol/identity.js';
import { addStorePath, coordinatorActor } from '../test/fleet-simulator.js';
import { seededRandom } from '../test/seeded-random.js';
import { bestOf, report } from './harness.js';

const TARGET_EVENTS = Number(process.env.BENCH_EVENTS ?? 100_000);
const TAIL_EVENTS = Math.min(20_000, Math.floor(TARGET_EVENTS / 5));
const MARK_EVERY = 1000;
const SIGNATURE_PAIRS = 2000;
const SIGNATURE_RUNS = Number(process.env.BENCH_RUNS ?? 2);

const seconds = (from: bigint): number => Number(process.hrtime.bigint() - from) / 1e9;
const perSecond = (count: number, time: number): string => `${Math.round(count / time).toLocaleString('en-US')}/s`;
const met = (ok: boolean, target: string): string => `${target} — ${ok ? 'met' : 'NOT MET'}`;

// --- ed25519 keys whose seed we hold, signed with node:crypto (the driver's client side stays cheap) ---

const PKCS8_ED25519_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');

interface SigningKey {
  seed: Uint8Array;
  publicKey: Uint8Array;
  keyId: KeyId;
  privateKey: KeyObject;
  publicKeyObject: KeyObject;
}

function signingKey(seed: Uint8Array = new Uint8Array(randomBytes(32))): SigningKey {
  const privateKey = createPrivateKey({ key: Buffer.concat([PKCS8_ED25519_PREFIX, seed]), format: 'der', type: 'pkcs8' });
  const publicKeyObject = createPublicKey(privateKey);
  const publicKey = new Uint8Array(publicKeyObject.export({ format: 'der', type: 'spki' }).subarray(-32));
  return { seed, publicKey, keyId: keyIdOf(publicKey), privateKey, publicKeyObject };
}

/** A fresh key id without the private half (agents, extra admin keys). */
function freshKeyId(): KeyId {
  return keyIdOf(new Uint8Array(generateKeyPairSync('ed25519').publicKey.export({ format: 'der', type: 'spki' }).subarray(-32)));
}

// --- the fleet: a seeded driver issuing the commands a real fleet would send ---

interface Agent {
  actor: Actor;
  hostname: string;
  system: string;
  machineId: string;
  factsRevision: number;
  graph: string | null;
  phase: number;
}

const GRAPHS = ['edge', 'core', 'lab', 'canary', 'kiosk'];
const SYSTEMS = ['x86_64-linux', 'aarch64-linux'];
const PHASES = ['fetching', 'activating', 'active'] as const;

class Fleet {
  readonly random = seededRandom(20261125);
  readonly adminKey = signingKey();
  readonly admin: Actor;
  readonly operator: Actor;
  readonly agents: Agent[] = [];
  readonly awaitingApproval: Agent[] = [];
  readonly heads = new Map<string, ConfigId>();
  readonly parents = new Map<string, ConfigId | null>();
  readonly counts = new Map<string, number>();
  token: { value: string; usesLeft: number; autoApprove: boolean } | null = null;
  refused = 0;
  attempted = 0;
  /** Seconds spent inside coordinator.record/execute (the rest is the driver). */
  insideCoordinator = 0;
  private step = 0;
  private readonly requestSignatures = Array.from({ length: 1024 }, () => randomBytes(64).toString('base64'));

  constructor(
    readonly coordinator: Coordinator,
    readonly storePaths: StorePath[],
  ) {
    this.admin = { keyId: this.adminKey.keyId, role: 'admin', requestSignature: null };
    this.operator = { keyId: freshKeyId(), role: 'operator', requestSignature: null };
    const self = coordinatorActor(coordinator);
    coordinator.record(self, () => ({ action: 'coordinator.init', subject: coordinator.identity.keyId, payload: { name: 'bench', coordinatorKey: coordinator.identity.keyId } }));
    coordinator.record(self, (context) => commands.addKey(context, { keyId: this.admin.keyId, role: 'admin', label: 'first admin' }));
    this.run('key.add', this.admin, (context) => commands.addKey(context, { keyId: this.operator.keyId, role: 'operator', label: 'ci' }));
    for (const graph of GRAPHS) this.submitConfig(graph, false);
  }

  /** Every command carries the signature of the HTTP request that brought it, as in the server. */
  private signed(actor: Actor): Actor {
    return { ...actor, requestSignature: this.requestSignatures[this.step++ & 1023]! };
  }

  private pick<T>(items: readonly T[]): T | undefined {
    return items.length === 0 ? undefined : items[this.random(items.length)];
  }

  /** Runs one command; a FerryError is a refusal (counted), anything else a bug. */
  run<R = undefined>(
    label: string,
    actor: Actor,
    decide: (context: CommandContext) => { draft: EventDraft; result: R } | DraftWithFollowUps | EventDraft | undefined,
  ): { event: AuditEvent; result: R } | undefined {
    this.attempted++;
    const start = process.hrtime.bigint();
    try {
      const out = this.coordinator.execute(this.signed(actor), (context) => {
        const decided = decide(context);
        if (decided === undefined) return undefined;
        if ('followUps' in decided) return { draft: decided.draft, followUps: decided.followUps, result: undefined as R };
        return 'draft' in decided ? decided : { draft: decided, result: undefined as R };
      });
      const outcome = out ? label : `${label} (no change, no event)`;
      this.counts.set(outcome, (this.counts.get(outcome) ?? 0) + 1);
      return out;
    } catch (error) {
      if (!(error instanceof FerryError)) throw error;
      this.refused++;
      this.counts.set(`${label} (refused)`, (this.counts.get(`${label} (refused)`) ?? 0) + 1);
      return undefined;
    } finally {
      this.insideCoordinator += seconds(start);
    }
  }

  private facts(agent: Agent) {
    const r = agent.factsRevision;
    return {
      system: agent.system,
      hostname: agent.hostname,
      os: 'NixOS 24.11 (Vicuna)',
      kernel: r % 7 === 6 ? '6.6.64' : '6.6.63',
      cpus: 4,
      memoryBytes: 8_339_546_112,
      diskBytes: 250_000_000_000 - r * 52_428_800,
      machineId: agent.machineId,
      addresses: [`10.${(r >> 8) & 255}.${r & 255}.17`, 'fe80::5054:ff:fe12:3456'],
      agentVersion: '0.1.0',
      labels: { site: `barn-${agent.hostname.length % 3}`, rack: 'r2' },
    };
  }

  submitConfig(graph: string, stale: boolean): void {
    const head = this.heads.get(graph) ?? null;
    const body: ConfigBody = {
      graph,
      parents: head && !stale ? [head] : [],
      targets: { [this.pick(SYSTEMS)!]: this.pick(this.storePaths)! },
      activation: { command: 'activate', environment: { FERRY_ENV: 'production' }, timeoutSeconds: 300 },
      health: { command: 'activate --check', timeoutSeconds: 60, retries: 3 },
      message: `deploy ${this.step} to ${graph}`,
      author: this.adminKey.keyId,
      hlc: this.coordinator.tickHlc(),
    };
    const id = commands.configId(body);
    const signature = nodeSign(null, commands.configSigningMessage(id), this.adminKey.privateKey).toString('base64');
    if (this.run('config.submit', this.admin, (context) => commands.submitConfig(context, { body, signature, force: false }))) {
      this.parents.set(id, head);
      this.heads.set(graph, id);
    }
  }

  /** One fleet step: mostly agents reporting facts and status, sometimes operators acting. */
  next(): void {
    const roll = this.random(1000);
    const agent = this.pick(this.agents);
    if (roll < 45 || !agent) return this.enroll();
    if (roll < 50) return this.badEnroll();
    if (roll < 60 && this.awaitingApproval.length > 0) {
      const waiting = this.awaitingApproval.shift()!;
      const decision = this.random(10) === 0 ? 'reject' : 'approve';
      this.run(`agent.${decision}`, this.operator, (context) => commands.decideAgent(context, { agentId: waiting.actor.keyId }, decision));
      if (decision === 'reject') this.forget(waiting);
      return;
    }
    if (roll < 370) {
      agent.factsRevision++;
      this.run('agent.facts', agent.actor, (context) => commands.reportFacts(context, { facts: this.facts(agent) }, this.coordinator.tickHlc()));
      return;
    }
    if (roll < 800) {
      const head = agent.graph ? (this.heads.get(agent.graph) ?? null) : null;
      const failed = head !== null && this.random(30) === 0;
      const phase = head === null ? 'pending' : failed ? 'failed' : PHASES[agent.phase++ % PHASES.length]!;
      this.run('agent.report', agent.actor, (context) => commands.reportStatus(context, { configId: head, phase, error: failed ? 'health check failed: exit status 1' : null }));
      return;
    }
    if (roll < 880) {
      const graph = this.pick(GRAPHS)!;
      agent.graph = graph;
      this.run('agent.assign', this.operator, (context) => commands.assignAgent(context, { agentId: agent.actor.keyId, graph }));
      return;
    }
    if (roll < 905) {
      const configId = this.random(3) === 0 || !agent.graph ? null : (this.heads.get(agent.graph) ?? null);
      this.run('agent.pin', this.operator, (context) => commands.pinAgent(context, { agentId: agent.actor.keyId, configId }));
      return;
    }
    if (roll < 960) return this.submitConfig(this.pick(GRAPHS)!, this.random(10) === 0);
    if (roll < 970) {
      const graph = this.pick(GRAPHS)!;
      const parent = this.parents.get(this.heads.get(graph)!) ?? null;
      if (this.run('graph.rollback', this.operator, (context) => commands.rollbackGraph(context, { graph })) && parent !== null) this.heads.set(graph, parent);
      return;
    }
    if (roll < 975) {
      this.run('agent.revoke', this.admin, (context) => commands.decideAgent(context, { agentId: agent.actor.keyId }, 'revoke'));
      this.forget(agent);
      return;
    }
    if (roll < 978) {
      const keyId = freshKeyId();
      this.run('key.add', this.admin, (context) => commands.addKey(context, { keyId, role: this.pick(['operator', 'pusher', 'viewer'] as const)!, label: `key ${this.step}` }));
      return;
    }
    // The rest: agents whose facts did not change (no event, as in a real fleet's periodic report).
    this.run('agent.facts', agent.actor, (context) => commands.reportFacts(context, { facts: this.facts(agent) }, this.coordinator.tickHlc()));
  }

  private forget(agent: Agent): void {
    const at = this.agents.indexOf(agent);
    if (at >= 0) this.agents.splice(at, 1);
  }

  private enroll(): void {
    if (!this.token || this.token.usesLeft === 0) {
      const autoApprove = this.random(5) !== 0;
      const value = this.run('token.create', this.operator, (context) => {
        const created = commands.createToken(context, { uses: 50, autoApprove, label: 'rollout', labels: { batch: String(this.step) } });
        return { draft: created.draft, result: created.token };
      });
      this.token = { value: value!.result, usesLeft: 50, autoApprove };
    }
    const hostname = `node-${this.agents.length.toString().padStart(5, '0')}.barn.example`;
    const agent: Agent = {
      actor: { keyId: freshKeyId(), role: 'agent', requestSignature: null },
      hostname,
      system: this.pick(SYSTEMS)!,
      machineId: randomBytes(16).toString('hex'),
      factsRevision: 1,
      graph: null,
      phase: 0,
    };
    const { value: token, autoApprove } = this.token;
    this.token.usesLeft--;
    if (!this.run('agent.enroll', agent.actor, (context) => commands.enrollAgent(context, { token, name: hostname, type: 'nixos', facts: this.facts(agent) }))) {
      throw new Error('an enrollment with a valid token was refused');
    }
    this.agents.push(agent);
    if (!autoApprove) this.awaitingApproval.push(agent);
  }

  /** A refused enrollment (unknown token): checked, no event. */
  private badEnroll(): void {
    const actor: Actor = { keyId: freshKeyId(), role: 'agent', requestSignature: null };
    this.run('agent.enroll', actor, (context) => commands.enrollAgent(context, { token: `${'0'.repeat(16)}.${'x'.repeat(32)}`, name: 'intruder', facts: { system: 'x86_64-linux', hostname: 'intruder' } }));
  }
}

function fileSize(file: string): number {
  try {
    return statSync(file).size;
  } catch {
    return 0;
  }
}

// --- 1-3: the audit log ---

const dir = mkdtempSync(path.join(tmpdir(), 'ferry-audit-bench-'));
const rows: Record<string, string | number>[] = [];
try {
  const coordinator = Coordinator.open(dir);
  const storePaths = [await addStorePath(coordinator, 'app-1'), await addStorePath(coordinator, 'app-2'), await addStorePath(coordinator, 'app-3')];
  const fleet = new Fleet(coordinator, storePaths);

  const marks = new Map<number, number>();
  const firstSeq = coordinator.lastSeq;
  const cpuAtStart = process.cpuUsage();
  const start = process.hrtime.bigint();
  let nextMark = Math.ceil((firstSeq + 1) / MARK_EVERY) * MARK_EVERY;
  let lastReport = 0;
  while (coordinator.lastSeq < TARGET_EVENTS) {
    fleet.next();
    if (coordinator.lastSeq >= nextMark) {
      const t = seconds(start);
      marks.set(nextMark, t);
      nextMark += MARK_EVERY;
      if (t - lastReport > 5) {
        lastReport = t;
        process.stderr.write(`  ${coordinator.lastSeq} events, ${t.toFixed(1)} s\n`);
      }
    }
  }
  const appendSeconds = seconds(start);
  const appendCpu = process.cpuUsage(cpuAtStart);
  const appendCpuSeconds = (appendCpu.user + appendCpu.system) / 1e6;
  marks.set(coordinator.lastSeq, appendSeconds);
  const events = coordinator.lastSeq;
  const appended = events - firstSeq;
  const rateAll = appended / appendSeconds;
  const tailFrom = events - TAIL_EVENTS;
  const tailSeconds = appendSeconds - marks.get(tailFrom)!;
  const rateTail = TAIL_EVENTS / tailSeconds;
  const headTo = Math.ceil((firstSeq + TAIL_EVENTS) / MARK_EVERY) * MARK_EVERY;
  let slowestWindow = Infinity;
  for (let at = Math.ceil(firstSeq / MARK_EVERY) * MARK_EVERY + 10_000; at <= events; at += MARK_EVERY) {
    const from = marks.get(at - 10_000) ?? 0;
    const to = marks.get(at);
    if (to !== undefined) slowestWindow = Math.min(slowestWindow, 10_000 / (to - from));
  }
  const paths = Coordinator.paths(dir);
  const walBytes = fileSize(`${paths.database}-wal`);
  const dbBytes = fileSize(paths.database) + walBytes;
  const mix = [...fleet.counts.entries()].sort((a, b) => b[1] - a[1]).map(([label, count]) => `${label} ${count}`).join(', ');
  console.log(`\n${appended} events appended (${fleet.attempted} commands, ${fleet.refused} refused); mix: ${mix}`);
  console.log(`${fleet.agents.length} agents at the end; database ${((dbBytes - walBytes) / 2 ** 20).toFixed(1)} MiB (${Math.round((dbBytes - walBytes) / events)} B/event) + WAL file ${(walBytes / 2 ** 20).toFixed(1)} MiB (its high-water mark: checkpoints reuse it, never shrink it)\n`);

  rows.push(
    { what: `append: ${appended.toLocaleString('en-US')} events (${fleet.attempted.toLocaleString('en-US')} commands), whole run`, value: `${appendSeconds.toFixed(2)} s`, rate: perSecond(appended, appendSeconds), target: met(rateAll >= 5000, '>= 5,000/s') },
    { what: `append: last ${TAIL_EVENTS.toLocaleString('en-US')} events`, value: `${tailSeconds.toFixed(2)} s`, rate: perSecond(TAIL_EVENTS, tailSeconds), target: met(rateTail >= 5000, '>= 5,000/s') },
    { what: `append: first ${(headTo - firstSeq).toLocaleString('en-US')} events`, value: `${marks.get(headTo)!.toFixed(2)} s`, rate: perSecond(headTo - firstSeq, marks.get(headTo)!), target: '' },
    { what: 'append: slowest 10,000-event window', value: '', rate: Number.isFinite(slowestWindow) ? `${Math.round(slowestWindow).toLocaleString('en-US')}/s` : 'n/a', target: '' },
    {
      what: 'append: CPU time, all threads (user + system; less noisy than wall time on a shared machine)',
      value: `${appendCpuSeconds.toFixed(2)} s (${(appendCpu.system / 1e6).toFixed(2)} s system)`,
      rate: `${perSecond(appended, appendCpuSeconds)} of CPU`,
      target: '',
    },
    { what: 'append: share of time inside coordinator.execute', value: `${fleet.insideCoordinator.toFixed(2)} s`, rate: `${((100 * fleet.insideCoordinator) / appendSeconds).toFixed(0)} %`, target: '' },
  );

  // 2. Replay into an empty database (events read and validated from the live log, applied in one transaction).
  const replayStart = process.hrtime.bigint();
  const replayDatabase = openCoordinatorDatabase(path.join(dir, 'replay', 'replay.db'));
  const replayStore = new SqliteStateStore(replayDatabase.db);
  const replayed = replayLog(coordinator.events(), replayStore);
  const replaySeconds = seconds(replayStart);
  if (replayed.events !== events) throw new Error(`replayed ${replayed.events} events, the log has ${events}`);
  const tableRows: string[] = [];
  for (const table of STATE_TABLES) {
    const live = coordinator.state.all(table as StateTableName);
    const again = replayStore.all(table as StateTableName);
    if (!isDeepStrictEqual(again, live)) throw new Error(`replayed table ${table} differs from the live one (${again.length} vs ${live.length} rows)`);
    tableRows.push(`${table} ${live.length}`);
  }
  replayDatabase.sqlite.close();
  console.log(`replayed state equals live state, row by row: ${tableRows.join(', ')}\n`);
  rows.push({ what: `replay ${events.toLocaleString('en-US')} events into an empty database (= live, all rows)`, value: `${replaySeconds.toFixed(2)} s`, rate: perSecond(events, replaySeconds), target: met(replaySeconds <= 10, '<= 10 s') });

  // 3. Verify the chain and the signed checkpoints, as `ferry audit verify` does.
  let verified: ChainReport | undefined;
  const verifySeconds = await bestOf(2, async () => {
    verified = await coordinator.verifyAudit();
  });
  if (!verified?.ok || verified.verifiedThrough !== events) throw new Error(`verifyAudit: ${JSON.stringify(verified)}`);
  rows.push({ what: `Coordinator.verifyAudit (${events.toLocaleString('en-US')} events, ${coordinator.checkpoints().length} checkpoints)`, value: `${verifySeconds.toFixed(2)} s`, rate: perSecond(events, verifySeconds), target: met(verifySeconds <= 5, '<= 5 s') });
  const inMemory = [...coordinator.events()];
  const checkpoints = coordinator.checkpoints();
  const chainSeconds = await bestOf(2, () => {
    if (!verifyChain(inMemory, checkpoints, coordinator.identity.publicKey).ok) throw new Error('verifyChain failed');
  });
  rows.push({ what: 'verifyChain alone, events already in memory (hashing, no SQLite)', value: `${chainSeconds.toFixed(2)} s`, rate: perSecond(events, chainSeconds), target: '' });
  coordinator.close();
} finally {
  rmSync(dir, { recursive: true, force: true });
}

// --- 4. ed25519: @noble/ed25519 vs node:crypto on the same pairs ---

const keys = Array.from({ length: SIGNATURE_PAIRS }, () => signingKey());
const messages = keys.map(() => new Uint8Array(randomBytes(200)));
const signatures = keys.map((key, i) => new Uint8Array(nodeSign(null, messages[i]!, key.privateKey)));
for (let i = 0; i < SIGNATURE_PAIRS; i += 97) {
  if (!Buffer.from(ed25519Sign(keys[i]!.seed, messages[i]!)).equals(signatures[i]!)) throw new Error('noble and node:crypto signatures differ');
  if (!ed25519VerifyNoble(keys[i]!.publicKey, messages[i]!, signatures[i]!)) throw new Error('noble refuses a node:crypto signature');
}
if (new Identity(keys[0]!.seed).keyId !== keys[0]!.keyId) throw new Error('key ids differ');
const verifyAll = (verify: (i: number) => boolean) => () => {
  for (let i = 0; i < SIGNATURE_PAIRS; i++) if (!verify(i)) throw new Error(`pair ${i} did not verify`);
};
const nobleVerify = await bestOf(SIGNATURE_RUNS, verifyAll((i) => ed25519VerifyNoble(keys[i]!.publicKey, messages[i]!, signatures[i]!)));
const nodeVerifyTime = await bestOf(SIGNATURE_RUNS, verifyAll((i) => nodeVerify(null, messages[i]!, keys[i]!.publicKeyObject, signatures[i]!)));
const ferryVerify = await bestOf(SIGNATURE_RUNS, verifyAll((i) => ed25519Verify(keys[i]!.publicKey, messages[i]!, signatures[i]!)));
const nobleSign = await bestOf(SIGNATURE_RUNS, () => {
  for (let i = 0; i < SIGNATURE_PAIRS; i++) ed25519Sign(keys[i]!.seed, messages[i]!);
});
const nodeSignTime = await bestOf(SIGNATURE_RUNS, () => {
  for (let i = 0; i < SIGNATURE_PAIRS; i++) nodeSign(null, messages[i]!, keys[i]!.privateKey);
});
const n = SIGNATURE_PAIRS;
rows.push(
  { what: `ed25519 verify, @noble/ed25519 (${n} pairs, 200 B, ${n} keys)`, value: `${nobleVerify.toFixed(3)} s`, rate: perSecond(n, nobleVerify), target: '1.00' },
  { what: 'ed25519 verify, node:crypto (KeyObject)', value: `${nodeVerifyTime.toFixed(3)} s`, rate: perSecond(n, nodeVerifyTime), target: `${(nobleVerify / nodeVerifyTime).toFixed(2)}x noble` },
  { what: 'ed25519 verify, ferry ed25519Verify (node + key cache)', value: `${ferryVerify.toFixed(3)} s`, rate: perSecond(n, ferryVerify), target: `${(nobleVerify / ferryVerify).toFixed(2)}x noble` },
  { what: 'ed25519 sign, @noble/ed25519 (ferry ed25519Sign)', value: `${nobleSign.toFixed(3)} s`, rate: perSecond(n, nobleSign), target: '1.00' },
  { what: 'ed25519 sign, node:crypto (KeyObject)', value: `${nodeSignTime.toFixed(3)} s`, rate: perSecond(n, nodeSignTime), target: `${(nobleSign / nodeSignTime).toFixed(2)}x noble` },
);

report('audit', rows);
