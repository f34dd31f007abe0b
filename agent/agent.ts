/**
 * The agent: follows its position in the artifact graph. Each round it
 * delivers pending reports, reports facts when they changed, asks for its
 * desired config, and when that differs from what runs here: fetches the
 * closure (verified), materializes it, creates and switches to a new
 * generation, activates, health-checks, and on failure switches back to the
 * previous generation, re-activates it and reports `rolled-back`.
 *
 * Crash safety: store paths appear atomically (materialize.ts), the profile
 * switches atomically (generations.ts), the fetch resumes from committed
 * blobs, and a deployment interrupted at any point is resumed from
 * `agent.json` at the next start.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import path from 'node:path';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { BundleError, collectGarbage, copyClosure, LocalCastore, openVouchedClosure, readBundle, referencesFirst, type BlobTemplate, type BundleManifest, type Digest, type StorePathInfo, type TransferProgress } from '../castore/index.js';
import { ActivationEnvironmentError, environmentRefusal } from '../protocol/activation-environment.js';
import { compareHlc, HlcStringSchema, parseHlc } from '../protocol/hlc.js';
import { dataClientFor, discoverDataPlane, openRelayDataClient, type DataPlaneRoute, type OpenDataClientOptions } from '../protocol/connect.js';
import { RelayQuicInfoCache } from '../protocol/relay-quic-info-cache.js';
import { DataClient, TransportError } from '../protocol/data-client.js';
import { encodeRelayGrant, RELAY_GRANT_HEADER, relayOfferMessage, type RelayEndpoint, type RelayOffer } from '../protocol/relays.js';
import { ApiError, CoordinatorHttpClient, type CoordinatorHttpClientOptions } from '../protocol/http-client.js';
import { createIdentityFile, loadIdentity, type Identity } from '../protocol/identity.js';
import { desiredProofMessage, directivesProofMessage, verifyProof } from '../protocol/coordinator-proofs.js';
import { DEFAULT_WATCH_SECONDS, DesiredAnswerSchema, MAX_WATCH_SECONDS, WatchUnchangedSchema, type AgentConfig, type DesiredAnswer, type WatchUnchanged } from '../protocol/config.js';
import { parseJoinString } from '../protocol/join-string.js';
import type { Phase } from '../protocol/api/fleet.js';
import { adoptMaterializedFiles } from './adopt-store-files.js';
import { EventRing } from './events.js';
import { collectFacts, nixSystem } from './facts.js';
import { Generations, type Generation } from './generations.js';
import { ClosureMaterializer, removeStaleTemps, removeTree } from './materialize.js';
import { storePathLocation } from '../nix/store-path.js';
import { commandEnvironment, runCommand, type CommandResult } from './run-command.js';
import { agentPaths, readAgentState, writeAgentState, type AgentState } from './state.js';
import { lockStateDir } from './state-lock.js';
import { MetricsTextfile } from './metrics-textfile.js';
import { monitorHealth, type HealthMonitorHost } from './health-monitor.js';
import { SecretError } from '../protocol/secrets.js';
import { secretsStamp, type DeliveredSecret } from '../protocol/secret-refs.js';
import { paramsStamp } from '../protocol/params.js';
import { bundledDelivery, decryptSecrets, keepSecrets, keptSecrets, removeOtherSecrets, secretsEnvironment, secretsRoot, secretsToKeep, stampOfKept, type StoredSecret } from './generation-secrets.js';

/** How often the daemon logs a fetch's progress. */
const PROGRESS_LOG_INTERVAL_MS = 5000;

export interface AgentOptions {
  /** Longest wait between rounds when nothing changes (default DEFAULT_WATCH_SECONDS, at most MAX_WATCH_SECONDS); the coordinator's watch ends it early. */
  pollIntervalMs?: number;
  /** Pause between health-check attempts (default 1 s). */
  healthRetryDelayMs?: number;
  httpOnly?: boolean;
  /** Where notices and warnings go (default: stderr). */
  log?: (line: string) => void;
  /** Also log every event as it is recorded (the daemon: its journal says what it does). */
  logEvents?: boolean;
  /** A node_exporter textfile rewritten after each deployment (metrics-textfile.ts). */
  metricsTextfile?: string;
  /** How long a relay may keep a request waiting for its reply header (default RELAY_REPLY_TIMEOUT_MS, 15 s). */
  relayReplyTimeoutMs?: number;
  /**
   * Generations kept when the agent collects garbage after each successful
   * deployment (the current one and the newest others: `gc --keep`); reported
   * in its facts. Default DEFAULT_KEEP_GENERATIONS.
   */
  keepGenerations?: number;
}

/** Generations an agent keeps after a successful deployment when `--keep-generations` does not say (the unit says it too). */
export const DEFAULT_KEEP_GENERATIONS = 5;

/** An answer the agent would act on came without the coordinator's signature (something between them changed it). */
export class UnverifiedAnswerError extends Error {
  override readonly name = 'UnverifiedAnswerError';
  readonly code = 'UNVERIFIED_ANSWER';
}

/**
 * Whether a round failed because the coordinator could not be reached (the
 * network, or the coordinator down), rather than because of this machine
 * or of an answer the agent refused.
 */
function coordinatorUnreachable(error: unknown): boolean {
  if (error instanceof TransportError) return true;
  return error instanceof ApiError && (error.code === 'UNREACHABLE' || error.status >= 500);
}


/** What `ferry agent apply-bundle` did: the config, the deployment's outcome, and whether --force overrode a refusal. */
export interface BundleOutcome {
  configId: string;
  result: RoundResult;
  /** --force applied a bundle this agent would have refused (its config is older than the one running). */
  forced: boolean;
}

export type RoundResult = 'idle' | 'active' | 'rolled-back' | 'failed' | 'offline' | 'stopped';

/** A desired-config answer as received (not yet checked), with the challenge it should be signed for. */
interface SignedDesired {
  answer: unknown;
  challenge: string;
}

/** What a watch brought: a new answer to check, or word that the desired config is still the one named. */
type Watched = SignedDesired | { unchanged: WatchUnchanged['configId'] };

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** How the agent's HTTP client reaches its coordinator: pinned HTTPS when the join string said so. */
/**
 * How long an agent waits for a relay's reply header (connecting included) before it goes to the
 * coordinator: what a withholding relay costs per attempt (two attempts), once its reply started,
 * REPLY_INACTIVITY_MS (5 s) without bytes. Long enough for the relay to fetch a 16 MiB segment it
 * lacks through a slow uplink first.
 */
const RELAY_REPLY_TIMEOUT_MS = 15_000;
/** Failures in a row after which an agent stops using a relay for RELAY_DROP_MS. */
const RELAY_DROP_AFTER = 3;
const RELAY_DROP_MS = 10 * 60 * 1000;

function pinningOf(coordinator: { tlsFingerprint: string; pinnedTls: boolean }): CoordinatorHttpClientOptions {
  return coordinator.pinnedTls ? { pinnedFingerprint: coordinator.tlsFingerprint } : {};
}

export class Agent {
  readonly paths: ReturnType<typeof agentPaths>;
  readonly identity: Identity;
  readonly generations: Generations;
  readonly events: EventRing;
  state: AgentState;
  private store: LocalCastore | undefined;
  private dataClient: DataClient | undefined;
  /**
   * Where the coordinator's data plane is and its checked certificate, kept
   * from one deployment to the next (two round trips fewer per deployment);
   * forgotten after a failed round or a deployment that could not use QUIC.
   */
  private dataPlaneRoute: DataPlaneRoute | undefined;
  private readonly http: CoordinatorHttpClient;
  private readonly log: (line: string) => void;
  private readonly metricsTextfile: MetricsTextfile | undefined;
  /** Bytes the deployment under way fetched (for the metrics textfile). */
  private lastFetchedBytes = 0;

  /** AgentOptions.keepGenerations with its default. */
  readonly keepGenerations: number;

  constructor(
    readonly stateDir: string,
    private readonly options: AgentOptions = {},
  ) {
    this.keepGenerations = options.keepGenerations ?? DEFAULT_KEEP_GENERATIONS;
    this.paths = agentPaths(stateDir);
    this.state = readAgentState(stateDir);
    this.identity = loadIdentity(this.paths.identity);
    this.generations = new Generations(this.paths.generations, this.paths.profile);
    this.log = options.log ?? ((line) => process.stderr.write(`${line}\n`));
    this.events = new EventRing(this.paths.events, options.logEvents ? (event) => this.log(`ferry agent: ${event.kind}: ${event.message}`) : undefined);
    this.http = new CoordinatorHttpClient(this.state.coordinator.httpUrl, this.identity, pinningOf(this.state.coordinator));
    this.metricsTextfile = options.metricsTextfile === undefined ? undefined : new MetricsTextfile(options.metricsTextfile);
  }

  /**
   * Enrolls a new agent from a join string: creates its identity (0600) in
   * `stateDir`, reports its facts, and records the coordinator. Refuses a
   * state dir that already holds an agent. Returns the enrollment status
   * (`enrolling` until an admin approves, unless the token auto-approves).
   */
  static async enroll(joinString: string, options: { stateDir: string; storeDir: string; name?: string; type?: string }): Promise<{ agentId: string; status: string }> {
    const join = parseJoinString(joinString);
    const paths = agentPaths(options.stateDir);
    if (existsSync(paths.state)) throw new Error(`${options.stateDir} already holds an enrolled agent`);
    const identity = existsSync(paths.identity) ? loadIdentity(paths.identity) : createIdentityFile(paths.identity);
    const http = new CoordinatorHttpClient(join.httpUrl, identity, pinningOf(join));
    const info = await http.call('info');
    if (info.coordinatorKey !== join.coordinatorKey) {
      throw new Error(`the coordinator at ${join.httpUrl} has key ${info.coordinatorKey}, but the join string names ${join.coordinatorKey}: refusing to enroll`);
    }
    const name = options.name ?? hostname();
    const facts = collectFacts(options.stateDir, paths.factsDir);
    const result = await http.call('enroll', { token: join.token, name, type: options.type ?? 'machine', facts });
    if (result.agentId !== identity.keyId) throw new Error(`the coordinator enrolled ${String(result.agentId).slice(0, 80)}, not this agent's key ${identity.keyId}: refusing it`);
    writeAgentState(options.stateDir, {
      coordinator: { httpUrl: join.httpUrl, coordinatorKey: join.coordinatorKey, tlsFingerprint: join.tlsFingerprint, pinnedTls: join.pinnedTls },
      agentId: identity.keyId,
      name,
      storeDir: path.resolve(options.storeDir),
      reportedFacts: JSON.stringify(facts),
      deploying: null,
      refused: [],
      retrySeen: 0,
      stopped: false,
      refusedStamps: {},
      activated: null,
      pendingReports: [],
    });
    new EventRing(paths.events).add('enrolled', `enrolled with ${join.httpUrl} as ${name} (${result.status})`);
    return result;
  }

  /** Whether the coordinator has approved this agent yet. */
  async enrollmentStatus(): Promise<string> {
    return (await this.http.call('agents.show', { agentId: this.identity.keyId })).status;
  }

  private save(): void {
    writeAgentState(this.stateDir, this.state);
  }

  private castore(): LocalCastore {
    this.store ??= LocalCastore.open(this.paths.castore);
    return this.store;
  }

  private async data(): Promise<DataClient> {
    if (!this.dataClient) {
      const options: OpenDataClientOptions = {
        tlsFingerprint: this.state.coordinator.tlsFingerprint,
        pinnedTls: this.state.coordinator.pinnedTls,
        httpOnly: this.options.httpOnly ?? false,
        // Its HTTPS connection to the coordinator is warm (the watch, the reports): small fetches go over it, streams over QUIC.
        warmHttps: true,
        onNotice: (message) => this.log(`ferry agent: ${message}`),
      };
      this.dataPlaneRoute ??= await discoverDataPlane(this.state.coordinator.httpUrl, options);
      this.dataClient = dataClientFor(this.state.coordinator.httpUrl, this.identity, this.dataPlaneRoute, options);
    }
    return this.dataClient;
  }

  private async releaseDataClient(options: { forgetRoute?: boolean } = {}): Promise<void> {
    const client = this.dataClient;
    this.dataClient = undefined;
    // A route whose QUIC address no longer answers (the coordinator moved) is learnt again next time.
    if (options.forgetRoute || client?.quicUnreachable) this.dataPlaneRoute = undefined;
    await client?.close().catch(() => undefined);
  }

  async close(): Promise<void> {
    await this.releaseDataClient();
    this.store?.close();
    this.store = undefined;
  }

  /** Set while a bundle is applied: every report of that deployment says so (and whether it was forced). */
  private reportProvenance: { source: 'bundle'; forced: boolean } | undefined;

  /**
   * Queues a report and tries to deliver every queued one, in order;
   * offline, they wait. With `wait: false` the deployment goes on while it
   * is delivered (`fetching`, `activating`: progress, not outcomes — a round
   * trip each otherwise).
   */
  private async report(configId: string | null, phase: Phase, error: string | null = null, options: { wait?: boolean; running?: string | null } = {}): Promise<void> {
    const running = options.running !== undefined ? { running: options.running } : {};
    this.state.pendingReports.push({ configId, phase, error: error === null ? null : error.slice(0, 8000), at: Date.now(), ...this.reportProvenance, ...running });
    this.save();
    const delivery = this.deliverReports().catch(() => undefined);
    if (options.wait ?? true) await delivery;
  }

  /** The delivery under way; the next one starts after it (two at once would post the same report twice). */
  private reportDelivery: Promise<void> = Promise.resolve();

  /** Delivers every queued report, in order, after any delivery already under way; throws when the coordinator refuses or cannot be reached. */
  private deliverReports(): Promise<void> {
    const delivery = this.reportDelivery.then(() => this.flushReports());
    this.reportDelivery = delivery.catch(() => undefined);
    return delivery;
  }

  private async flushReports(): Promise<void> {
    while (this.state.pendingReports.length > 0) {
      const next = this.state.pendingReports[0]!;
      const provenance = next.source ? { source: next.source, forced: next.forced ?? false } : {};
      const running = next.running !== undefined ? { running: next.running } : {};
      await this.http.call('agent.status', { configId: next.configId, phase: next.phase, error: next.error, ...provenance, ...running });
      this.state.pendingReports.shift();
      this.save();
    }
  }

  private lastActivity = 0;
  /** Set when a fetch starts: one shorter than the interval logs no progress. */
  private lastProgressLog = 0;
  /** The desired-config answer the last round verified: the watch waits for another config. */
  private lastAnswer: DesiredAnswer | undefined;
  /** Relays' failures in a row, and until when one is dropped (relayOutcome); in memory: a restart tries them again. */
  private readonly relayFailures = new Map<string, { count: number; droppedUntil: number }>();
  /** What each relay answered to "do you serve QUIC?", kept ten minutes (protocol/relay-quic-info-cache.ts). */
  private readonly relayQuicInfo = new RelayQuicInfoCache();

  /**
   * Tells the coordinator what is happening now (progress, recent events):
   * not audited, at most every 500 ms unless `force`, never blocking the
   * deployment, and lost without harm when offline.
   */
  private publishActivity(phase: string, configId: string | null, progress?: TransferProgress, force = false): void {
    const now = Date.now();
    if (!force && now - this.lastActivity < 500) return;
    this.lastActivity = now;
    const events = this.events.read().slice(-20).map((event) => ({ ...event, message: event.message.slice(0, 2000) }));
    this.http
      .call('agent.activity', {
        phase,
        configId,
        bytesDone: progress?.bytesDone ?? 0,
        bytesTotal: progress?.bytesTotal ?? 0,
        objectsDone: progress?.objectsDone ?? 0,
        objectsTotal: progress?.objectsTotal ?? 0,
        events,
      })
      .catch(() => undefined);
  }

  /** A line in the log every few seconds while blobs arrive (the coordinator gets them twice a second). */
  private logFetchProgress(configId: string, progress: TransferProgress): void {
    const now = Date.now();
    if (progress.phase === 'manifest') this.lastProgressLog = now;
    if (progress.phase !== 'blobs' || progress.bytesTotal === 0 || now - this.lastProgressLog < PROGRESS_LOG_INTERVAL_MS) return;
    this.lastProgressLog = now;
    const mib = (bytes: number) => (bytes / 2 ** 20).toFixed(1);
    this.log(
      `ferry agent: fetching ${configId.slice(0, 12)}: ${Math.floor((100 * progress.bytesDone) / progress.bytesTotal)}% ` +
        `(${mib(progress.bytesDone)} of ${mib(progress.bytesTotal)} MiB, ${progress.objectsDone} of ${progress.objectsTotal} blobs)`,
    );
  }

  private async reportFacts(): Promise<void> {
    const facts = collectFacts(this.stateDir, this.paths.factsDir, { keepGenerations: this.keepGenerations });
    const text = JSON.stringify(facts);
    if (text === this.state.reportedFacts) return;
    await this.http.call('agent.facts', { facts });
    this.state.reportedFacts = text;
    this.save();
    this.events.add('facts', 'reported changed facts');
  }

  /**
   * One round: deliver reports, facts, then converge on the desired config.
   * Throws ApiError/TransportError when the coordinator cannot be reached
   * (the caller backs off); the running generation is never touched then.
   * `reachable` is called once the coordinator has answered with a signed,
   * valid desired config (before any deployment: its reports follow).
   * `watched` is what a watch just brought (waitForChange): an answer
   * used when the coordinator signed it for its challenge (else asked for
   * again), or "unchanged", which reuses the answer verified last.
   */
  async runOnce(reachable?: () => void, watched?: Watched): Promise<RoundResult> {
    await this.deliverReports();
    const desired = await this.desiredAnswer(watched);
    reachable?.();
    this.lastAnswer = desired;
    this.takeUpRetry(desired);
    if (desired.directives?.stop && !desired.configId) return this.stop();
    const current = this.generations.current();
    if (!desired.config || !desired.configId) return 'idle';
    // A config's secrets are part of what runs: the same config with other versions is a new generation (a rotation).
    const stamp = desired.secrets ? secretsStamp(desired.secrets) : null;
    // So are its per-machine parameters: other values are a new generation of the same config (docs/secrets.md).
    const sameParams = paramsStamp(current?.params ?? undefined) === paramsStamp(desired.params);
    if (this.state.deploying !== desired.configId && current?.configId === desired.configId && current.secrets === stamp && sameParams) return 'idle';
    if (this.state.refused.includes(desired.configId) && this.state.deploying !== desired.configId) {
      const refusedWith = this.state.refusedStamps[desired.configId];
      if (refusedWith === undefined || refusedWith === stamp) return 'idle';
      // Refused with other secrets (a rekey added this agent, a new version came): tried again.
      this.state.refused = this.state.refused.filter((id) => id !== desired.configId);
      delete this.state.refusedStamps[desired.configId];
    }
    const result = await this.deploy(desired.config, undefined, desired.secrets, desired.params);
    if (stamp !== null && this.state.refused.includes(desired.configId)) {
      this.state.refusedStamps[desired.configId] = stamp;
      this.save();
    }
    return result;
  }

  /**
   * The desired config, signed by the coordinator for this agent and a
   * fresh challenge, and valid; reports changed facts on the way. Throws
   * UnverifiedAnswerError for an answer that is not.
   */
  private async desiredAnswer(watched: Watched | undefined): Promise<DesiredAnswer> {
    if (watched && 'unchanged' in watched && this.lastAnswer && this.lastAnswer.configId === watched.unchanged) {
      await this.reportFacts();
      return this.lastAnswer;
    }
    let signed: SignedDesired;
    if (watched && 'answer' in watched && this.signedForUs(watched)) {
      signed = watched;
      await this.reportFacts();
    } else {
      const challenge = randomBytes(16).toString('hex');
      // Asked first: the facts are collected (reading /proc, /sys, the network interfaces: milliseconds of
      // this thread) once the request has left, while it travels.
      // Unchecked: the proof is checked over the answer as received, then the schema (below).
      const asked = this.http.callUnchecked('agent.desired', { challenge });
      const [answer] = await Promise.all([asked, nextTurn().then(() => this.reportFacts())]);
      signed = { answer, challenge };
      // It says which activation command to run, and may travel over plain HTTP: only the coordinator's fresh word counts.
      if (!this.signedForUs(signed)) {
        throw new UnverifiedAnswerError(`the desired-config answer from ${this.state.coordinator.httpUrl} is not signed by the coordinator key ${this.state.coordinator.coordinatorKey}: ignoring it`);
      }
    }
    // Signed is not sane: the answer is parsed like any input before anything acts on it.
    const parsed = DesiredAnswerSchema.safeParse(signed.answer);
    if (!parsed.success) {
      const issue = parsed.error.issues[0]!;
      throw new UnverifiedAnswerError(`the desired-config answer from ${this.state.coordinator.httpUrl} is signed but invalid (${issue.path.join('.') || 'answer'}: ${issue.message}): ignoring it`);
    }
    const { relays, directives: said, ...unsigned } = parsed.data;
    // Directives (retry, stop) only on the coordinator's word for this agent, challenge and config; without it, none.
    const directivesHold = said !== undefined && verifyProof(this.state.coordinator.coordinatorKey, directivesProofMessage(this.identity.keyId, signed.challenge, unsigned.configId, said), said.proof);
    if (said && !directivesHold) this.events.add('directives-refused', 'the retry or stop of the desired answer is not signed by the coordinator: ignoring it', unsigned.configId);
    const answer: DesiredAnswer = directivesHold ? { ...unsigned, directives: said } : unsigned;
    // Relays only on the coordinator's word for this agent and challenge; without it, everything comes from the coordinator.
    if (relays && !verifyProof(this.state.coordinator.coordinatorKey, relayOfferMessage(this.identity.keyId, signed.challenge, relays), relays.proof)) {
      this.events.add('relay-refused', 'the relays of the desired answer are not signed by the coordinator: fetching from the coordinator', answer.configId);
      return answer;
    }
    return relays ? { ...answer, relays } : answer;
  }

  /**
   * Takes up a retry the coordinator ordered (`agents retry`) that this
   * agent has not taken up yet: forgets the configs it refused (one that
   * failed here, or that a rollback abandoned), so the desired config is
   * deployed again.
   */
  private takeUpRetry(desired: DesiredAnswer): void {
    const retry = desired.directives?.retry;
    if (retry === undefined || retry <= this.state.retrySeen) return;
    const forgotten = this.state.refused;
    this.state.retrySeen = retry;
    this.state.refused = [];
    this.save();
    this.events.add('retry', `retry ordered by the coordinator (audit event #${retry}): ${forgotten.length > 0 ? `config(s) ${forgotten.join(', ')} will be tried again` : 'no config was refused'}`, desired.configId);
  }

  /**
   * Stops, as the coordinator ordered (`agents assign … --none --stop`): runs
   * the current generation's deactivate command (if its config has one, in
   * the same clean environment as its activation, FERRY_COMMAND=deactivation),
   * then removes the profile, so no generation is active, and reports
   * `stopped` (with the command's failure as the error, if it failed: the
   * agent stops anyway, since it was told to). The generations stay until
   * GC. Idle when nothing is active.
   */
  private async stop(): Promise<RoundResult> {
    const current = this.generations.current();
    if (!current) return 'idle';
    let error: string | null = null;
    if (current.deactivate) {
      const result = await this.runGenerationCommand(current, 'deactivation', current.deactivate, current.activation.timeoutSeconds);
      if (!result.ok) {
        const how = result.timedOut ? 'timed out' : result.exitCode === null ? 'did not run' : `exited with ${result.exitCode}`;
        error = `deactivate '${current.deactivate}' ${how}; output:\n${result.outputTail}`;
      }
    }
    this.generations.unlinkProfile();
    this.state.deploying = null;
    this.state.activated = null;
    this.state.stopped = true;
    this.save();
    this.events.add('stopped', `generation ${current.number} (${current.configId}) stopped${current.deactivate ? '' : ' (its config has no deactivate command)'}; no generation is active${error ? `: ${error}` : ''}`, current.configId);
    await this.report(current.configId, 'stopped', error);
    this.publishActivity('stopped', current.configId, undefined, true);
    return 'stopped';
  }

  /**
   * The relay to fetch `configId` through, with the grant: the first of the
   * last answer's relays not dropped, when its grant is for that config and
   * still valid on this machine's clock (an expired one would only be
   * refused by the relay).
   */
  private relayFor(configId: string): { relay: RelayEndpoint; grant: RelayOffer['grant'] } | undefined {
    const offer = this.lastAnswer?.relays;
    if (!offer || offer.grant.configId !== configId || offer.grant.agentId !== this.identity.keyId || offer.grant.expiresAt <= Date.now()) return undefined;
    const now = Date.now();
    const relay = offer.relays.find((candidate) => (this.relayFailures.get(candidate.id)?.droppedUntil ?? 0) <= now);
    return relay && { relay, grant: offer.grant };
  }

  /**
   * Counts a relay's failure: after RELAY_DROP_AFTER in a row it is dropped
   * for RELAY_DROP_MS (the next relay of the list, or the coordinator, serves
   * meanwhile); a success forgets its failures.
   */
  private relayOutcome(relay: RelayEndpoint, ok: boolean, configId: string): void {
    if (ok) {
      this.relayFailures.delete(relay.id);
      return;
    }
    const failures = (this.relayFailures.get(relay.id)?.count ?? 0) + 1;
    const dropped = failures >= RELAY_DROP_AFTER;
    this.relayFailures.set(relay.id, { count: dropped ? 0 : failures, droppedUntil: dropped ? Date.now() + RELAY_DROP_MS : 0 });
    if (dropped) this.events.add('relay-dropped', `relay ${relay.url} (${relay.id}) failed ${failures} times in a row: not used for ${RELAY_DROP_MS / 60_000} min`, configId);
  }

  /**
   * A data client to `relay`: QUIC first when it serves it (its answer
   * remembered ten minutes), HTTPS as the fallback (both pinned to the
   * fingerprint the coordinator gave; protocol/connect.ts
   * openRelayDataClient), the grant on every request, few retries (a relay that fails costs a bounded time, then the
   * coordinator serves the rest).
   */
  private relayClient(relay: RelayEndpoint, grant: RelayOffer['grant']): Promise<DataClient> {
    return openRelayDataClient(relay, this.identity, {
      retries: 1,
      replyTimeoutMs: this.options.relayReplyTimeoutMs ?? RELAY_REPLY_TIMEOUT_MS,
      headers: { [RELAY_GRANT_HEADER]: encodeRelayGrant(grant) },
      onNotice: (message) => this.log(`ferry agent: relay ${relay.url}: ${message}`),
      quicInfo: this.relayQuicInfo,
    });
  }

  /** Whether `signed.answer` carries the coordinator's proof for this agent and `signed.challenge`. */
  private signedForUs({ answer, challenge }: SignedDesired): boolean {
    if (typeof answer !== 'object' || answer === null) return false;
    const { configId = null, config = null, secrets, params, proof } = answer as { configId?: string | null; config?: unknown; secrets?: unknown; params?: unknown; proof?: unknown };
    // The secrets delivered with the config and the agent's parameters are under the same proof (coordinator-proofs.ts desiredAnswerDigest).
    return verifyProof(
      this.state.coordinator.coordinatorKey,
      desiredProofMessage(this.identity.keyId, challenge, { configId, config, ...(secrets === undefined ? {} : { secrets }), ...(params === undefined ? {} : { params }) }),
      proof,
    );
  }

  /**
   * Waits until the desired config differs from the one the last round
   * saw, at most one poll interval: the coordinator holds the request (a
   * watch), so a new config starts deploying within a fraction of a second.
   * Returns the watch's answer (signed for a fresh challenge, so the next
   * round need not ask again) or its word that nothing changed, or
   * undefined when `signal` ended the wait.
   */
  private async waitForChange(signal: AbortSignal): Promise<Watched | undefined> {
    const seconds = Math.min(MAX_WATCH_SECONDS, Math.max(1, Math.round((this.options.pollIntervalMs ?? DEFAULT_WATCH_SECONDS * 1000) / 1000)));
    const known = this.lastAnswer?.configId ?? 'none';
    // With secrets, also what they are: a new version is answered at once (a rotation re-activates).
    const secrets = this.lastAnswer?.secrets ? { secrets: secretsStamp(this.lastAnswer.secrets) } : {};
    // And which parameters it has (none too): a change of its effective parameters is answered at once.
    const params = paramsStamp(this.lastAnswer?.params);
    const challenge = randomBytes(16).toString('hex');
    const aborted = new Promise<undefined>((resolve) => signal.addEventListener('abort', () => resolve(undefined), { once: true }));
    // What directives it holds, so a retry or a stop that changes no config still ends the watch.
    const directives = { retry: this.state.retrySeen, stop: this.lastAnswer?.directives?.stop ? ('1' as const) : ('0' as const) };
    const watched = this.http.callUnchecked('agent.watch', { known, wait: seconds, challenge, ...directives, ...secrets, params }).then((answer): Watched => {
      const unchanged = WatchUnchangedSchema.safeParse(answer);
      return unchanged.success ? { unchanged: unchanged.data.configId } : { answer, challenge };
    });
    return Promise.race([watched, aborted]);
  }

  /** Set inside `exclusively`'s work (and what it calls): a nested call runs at once. */
  private readonly holdingStateLock = new AsyncLocalStorage<true>();
  /** The turn of this process's last `exclusively` caller: the rounds and the health monitor take turns. */
  private stateTurn: Promise<void> = Promise.resolve();

  /**
   * Runs `work` holding the state directory's lock (agent/state-lock.ts),
   * after this process's other holders (the rounds, the health monitor's
   * rollback) and waiting for another process's turn to end, with the state
   * read again (that process may have changed it). Reentrant: a call from
   * within `work` runs at once.
   */
  private async exclusively<T>(work: () => Promise<T>): Promise<T> {
    if (this.holdingStateLock.getStore()) return work();
    const previous = this.stateTurn;
    let endTurn!: () => void;
    this.stateTurn = new Promise((resolve) => (endTurn = resolve));
    await previous;
    try {
      const release = await lockStateDir(this.stateDir, {
        waitMs: 10 * 60_000,
        onWait: (pid) => this.log(`ferry agent: waiting for the agent process ${pid} to finish what it is doing in ${this.stateDir}…`),
      });
      try {
        this.state = readAgentState(this.stateDir);
        return await this.holdingStateLock.run(true, work);
      } finally {
        // A report delivered in the background (report with wait: false) saves the state when it is through: under the lock.
        await this.reportDelivery;
        release();
      }
    } finally {
      endTurn();
    }
  }

  /**
   * Runs rounds until `signal` aborts, backing off (exponential, with
   * jitter) while the coordinator is unreachable. Each round holds the
   * state directory's lock; the wait for the coordinator does not, so local
   * commands (rollback, gc…) can run meanwhile. Refuses (AgentBusyError) a
   * state directory another `run` is working on.
   */
  async run(signal: AbortSignal): Promise<void> {
    const releaseDaemon = await lockStateDir(this.stateDir, { name: 'run.lock' });
    try {
      await this.exclusively(async () => {
        // Temp trees are a deployment's progress: kept while one is in progress (its next attempt takes them up).
        if (this.state.deploying !== null) return;
        try {
          removeStaleTemps(this.state.storeDir);
        } catch (error) {
          // The rounds go on: a deployment meets the same problem and reports it.
          this.events.add('error', `cannot tidy the store dir ${this.state.storeDir}: ${(error as Error).message}`);
        }
        // A crash between a deployment's end and its adoption left the castore's copy: release it now.
        const current = this.generations.current();
        if (current) this.keepBytesOnce(current);
      });
      await Promise.all([this.runRounds(signal), monitorHealth(this.healthMonitorHost(), signal)]);
    } finally {
      releaseDaemon();
    }
  }

  /** What the health monitor (health-monitor.ts) checks, reports and rolls back through. */
  private healthMonitorHost(): HealthMonitorHost {
    return {
      active: () => {
        if (this.state.deploying !== null) return undefined;
        const generation = this.generations.current();
        if (!generation) return undefined;
        const activated = this.state.activated;
        // A generation activated before the agent recorded activations: checked, never on probation.
        if (activated?.generation !== generation.number) return { generation, since: generation.createdAt, probation: false };
        return { generation, since: activated.at, probation: activated.probation };
      },
      check: (generation) => this.runGenerationCommand(generation, 'health-check', generation.health!.command, generation.health!.timeoutSeconds),
      report: (report) => this.http.call('agent.health', report),
      probationRollback: (generation, reason) => this.exclusively(() => this.probationRollbackLocked(generation, reason)),
      note: (kind, message, configId) => this.events.add(kind, message, configId),
      changed: (configId, health) => void this.metricsTextfile?.recordHealth(configId, health).catch((error: unknown) => this.textfileNotWritten(error)),
      now: () => Date.now(),
    };
  }

  /** Rolls back from `generation`, which turned degraded in its probation, unless something else replaced it meanwhile. */
  private async probationRollbackLocked(generation: Generation, reason: string): Promise<void> {
    const current = this.generations.current();
    if (current?.number !== generation.number || this.state.deploying !== null) return;
    this.state.refused.push(generation.configId);
    const back = this.generations.list().filter((entry) => entry.number < generation.number).at(-1);
    if (!back) {
      // Nothing to go back to: the generation stays, and the coordinator is told it failed.
      this.state.activated = null;
      this.save();
      this.events.add('failed', `generation ${generation.number} turned degraded in its probation, and there is no earlier generation to go back to: ${reason}`, generation.configId);
      await this.report(generation.configId, 'failed', reason);
      return;
    }
    await this.switchBack(generation, back, generation.configId, reason);
  }

  private async runRounds(signal: AbortSignal): Promise<void> {
    let failures = 0;
    let offline = false;
    /** The last local failure reported, so a persistent one is reported once, not every round. */
    let reportedFailure: string | undefined;
    /** What the last watch answered: the next round's desired config. */
    let watched: Watched | undefined;
    while (!signal.aborted) {
      try {
        // Back online as soon as the coordinator answers: before the deployment that may follow (whose
        // `active` report would otherwise reach the coordinator before the agent says it is back).
        const cameBack = () => {
          if (offline) this.events.add('online', `coordinator reachable again after ${failures} failed attempt(s)`);
          offline = false;
        };
        const answered = watched;
        watched = undefined;
        await this.exclusively(() => this.runOnce(cameBack, answered));
        // Between deployments the agent only watches (HTTP): no QUIC session kept alive with pings.
        await this.releaseDataClient();
        failures = 0;
        reportedFailure = undefined;
        watched = await this.waitForChange(signal);
      } catch (error) {
        failures++;
        const delay = Math.min(60_000, 500 * 2 ** Math.min(failures, 7)) * (0.5 + Math.random() / 2);
        const message = (error as Error).message;
        const retry = `retrying in ${Math.round(delay / 1000)} s (running generation unchanged)`;
        await this.releaseDataClient({ forgetRoute: true });
        if (coordinatorUnreachable(error)) {
          if (!offline) this.events.add('offline', `coordinator unreachable: ${message}`);
          offline = true;
          this.log(`ferry agent: ${message}; ${retry}`);
        } else if (message !== reportedFailure) {
          // Something on this machine (a full disk, an unwritable store) or an answer refused: not "offline",
          // and the coordinator is told, so `ferry agents status` shows why the deployment is not going on.
          reportedFailure = message;
          const configId = this.state.deploying ?? null;
          this.events.add('error', `${configId ? `deployment of ${configId} failed` : 'round failed'}: ${message}; ${retry}`, configId);
          if (configId) await this.exclusively(() => this.report(configId, 'failed', message));
        } else {
          this.log(`ferry agent: ${message}; ${retry}`);
        }
        await sleep(delay);
      }
    }
  }

  /**
   * Runs a generation's activation or health-check command in its clean
   * environment (agent/run-command.ts, docs/agent.md). A generation whose
   * environment sets a refused key (one recorded before the key was
   * refused) is not run: that is a failed command, naming the key.
   */
  private runGenerationCommand(generation: Generation, which: 'activation' | 'health-check' | 'deactivation', command: string, timeoutSeconds: number): Promise<CommandResult> {
    let env: Record<string, string>;
    let secrets: Record<string, string> | undefined;
    try {
      secrets = this.secretsVariables(generation);
    } catch (error) {
      if (!(error instanceof SecretError)) throw error;
      return Promise.resolve({ ok: false, exitCode: null, timedOut: false, outputTail: `not run: ${error.message}` });
    }
    try {
      env = commandEnvironment(
        {
          command: which,
          agentId: this.identity.keyId,
          configId: generation.configId,
          generation: generation.number,
          target: generation.location,
          stateDir: this.stateDir,
          storeDir: this.state.storeDir,
          ...(secrets ? { secrets } : {}),
          ...(generation.params ? { params: generation.params } : {}),
        },
        generation.activation.environment,
      );
    } catch (error) {
      if (!(error instanceof ActivationEnvironmentError)) throw error;
      return Promise.resolve({ ok: false, exitCode: null, timedOut: false, outputTail: `not run: ${error.message}` });
    }
    return runCommand(command, { cwd: generation.location, env, timeoutSeconds });
  }

  /** Where this agent decrypts its generations' secrets (generation-secrets.ts secretsRoot). */
  private get secretsRoot(): string {
    this.secretsRootDir ??= secretsRoot(this.stateDir, this.identity.keyId);
    return this.secretsRootDir;
  }
  private secretsRootDir: string | undefined;

  /** FERRY_SECRETS_DIR and FERRY_SECRET_<NAME> of `generation` (undefined: it has no secrets). Paths only: the files exist once it was activated. */
  private secretsVariables(generation: Generation): Record<string, string> | undefined {
    if (generation.secrets === null) return undefined;
    const dir = path.join(this.secretsRoot, String(generation.number));
    const kept = keptSecrets(this.generations.dirOf(generation.number));
    const variables = secretsEnvironment({ dir, files: Object.fromEntries(kept.map((secret) => [secret.name, path.join(dir, secret.path)])) });
    // `--env-secret`: the value itself, read from the decrypted file (only once activation decrypted it).
    for (const secret of kept) {
      const file = path.join(dir, secret.path);
      if (secret.env && existsSync(file)) variables[secret.env] = readFileSync(file, 'utf8');
    }
    return variables;
  }

  /**
   * Runs `generation`'s activation, its secrets decrypted first into its
   * runtime dir (generation-secrets.ts); a secret that does not decrypt
   * (not for this agent's key, corrupt) is a failed activation naming it,
   * the command not run. Once it succeeds, the other generations' secrets
   * are removed: only the active one's are on the machine.
   */
  private async activate(generation: Generation): Promise<CommandResult> {
    if (generation.secrets !== null) {
      const seed = this.identity.seedForDecryption();
      try {
        const kept = keptSecrets(this.generations.dirOf(generation.number));
        await decryptSecrets(this.secretsRoot, generation.number, kept, seed, (message) => this.events.add('secrets', message, generation.configId));
      } catch (error) {
        if (!(error instanceof SecretError)) throw error;
        return { ok: false, exitCode: null, timedOut: false, outputTail: `not run: ${error.message}` };
      } finally {
        seed.fill(0);
      }
    }
    const result = await this.runGenerationCommand(generation, 'activation', generation.activation.command, generation.activation.timeoutSeconds);
    if (result.ok) removeOtherSecrets(this.secretsRoot, generation.number);
    return result;
  }

  /** Activation, then the health check with its retries; the first failure ends it. */
  private async activateAndCheck(generation: Generation): Promise<{ ok: true } | { ok: false; error: string }> {
    const activation = await this.activate(generation);
    if (!activation.ok) {
      const how = activation.timedOut ? 'timed out' : activation.exitCode === null ? 'did not run' : `exited with ${activation.exitCode}`;
      return { ok: false, error: `activation '${generation.activation.command}' ${how}; output:\n${activation.outputTail}` };
    }
    const health = generation.health;
    if (!health) return { ok: true };
    let last: CommandResult | undefined;
    for (let attempt = 0; attempt <= health.retries; attempt++) {
      if (attempt > 0) await sleep(this.options.healthRetryDelayMs ?? 1000);
      last = await this.runGenerationCommand(generation, 'health-check', health.command, health.timeoutSeconds);
      if (last.ok) return { ok: true };
    }
    return { ok: false, error: `health check '${health.command}' failed ${health.retries + 1} time(s), last ${last!.timedOut ? 'timed out' : `exit ${last!.exitCode}`}; output:\n${last!.outputTail}` };
  }

  /**
   * Applies a bundle (`ferry bundle create`) with no network: verifies it
   * against the enrolled coordinator's key, checks it may run here, ingests
   * it, and deploys its config like any other (activation, health check,
   * rollback). Refuses, before anything is stored (BundleError): a bundle
   * whose audience does not name this agent (BUNDLE_NOT_FOR_THIS_AGENT), an
   * expired one (BUNDLE_EXPIRED) — neither can be forced: they are the
   * coordinator's limits —, and unless `force`, a config older (HLC) than
   * the one the current generation runs (BUNDLE_CONFIG_OLDER). Reports are
   * queued, marked as from a bundle (and forced, when `force` overrode a
   * refusal), and delivered when the coordinator is next reachable.
   */
  applyBundle(source: AsyncIterable<Uint8Array>, options: { force?: boolean } = {}): Promise<BundleOutcome> {
    return this.exclusively(() => this.applyBundleLocked(source, options.force ?? false));
  }

  private async applyBundleLocked(source: AsyncIterable<Uint8Array>, force: boolean): Promise<BundleOutcome> {
    let forced = false;
    const manifest = await readBundle(source, this.castore(), this.state.coordinator.coordinatorKey, {
      accept: (candidate) => {
        forced = this.acceptBundle(candidate, force);
      },
    });
    const config: AgentConfig = manifest.config;
    const note = forced ? ', forced: its config is older than the one running' : '';
    this.events.add('bundle', `bundle of config ${config.id} verified (${manifest.storePaths.length} store paths, made ${new Date(manifest.createdAt).toISOString()})${note}`, config.id);
    this.state.refused = this.state.refused.filter((id) => id !== config.id);
    this.reportProvenance = { source: 'bundle', forced };
    try {
      // Its secrets' ciphertexts came signed in the manifest: kept and decrypted as an answer's are.
      return { configId: config.id, result: await this.deploy(config, manifest.storePaths, bundledDelivery(manifest.secrets, this.identity.keyId)), forced };
    } finally {
      this.reportProvenance = undefined;
    }
  }

  /**
   * Whether this agent takes `manifest` (see applyBundle): throws the
   * refusal; returns true when `force` overrode one (the config is older).
   */
  private acceptBundle(manifest: BundleManifest, force: boolean): boolean {
    const me = this.identity.keyId;
    if (!manifest.audience.agents.includes(me)) {
      const made = manifest.audience.where.length > 0 ? ` (selected with --where ${manifest.audience.where.join(' --where ')})` : '';
      throw new BundleError(
        'BUNDLE_NOT_FOR_THIS_AGENT',
        `this bundle of config ${manifest.config.id} is not for this agent ${me}: it names ${manifest.audience.agents.length} other agent(s)${made}; ` +
          `make one for this agent with ferry bundle create ${manifest.config.id} --agents ${me}`,
      );
    }
    const now = Date.now();
    if (manifest.expiresAt <= now) {
      throw new BundleError(
        'BUNDLE_EXPIRED',
        `this bundle of config ${manifest.config.id} expired at ${new Date(manifest.expiresAt).toISOString()} (made ${new Date(manifest.createdAt).toISOString()}, this machine's clock says ${new Date(now).toISOString()}); make a new one`,
      );
    }
    const current = this.generations.current();
    // A generation made before generations recorded their config's HLC cannot be compared: not refused.
    if (!current?.hlc || current.configId === manifest.config.id) return false;
    if (compareHlc(parseHlc(manifest.config.hlc), parseHlc(current.hlc)) >= 0) return false;
    if (!force) {
      throw new BundleError(
        'BUNDLE_CONFIG_OLDER',
        `config ${manifest.config.id} (${manifest.config.hlc}) is older than config ${current.configId} (${current.hlc}), which generation ${current.number} runs: ` +
          'refusing to go back; apply it with --force to do so anyway (reported to the coordinator as forced)',
      );
    }
    return true;
  }

  /** Monitoring is no reason to fail anything: a textfile that cannot be written is said, and skipped. */
  private textfileNotWritten(error: unknown): void {
    this.log(`ferry agent: warning: metrics textfile ${this.metricsTextfile!.file} not written: ${error instanceof Error ? error.message : String(error)}`);
  }

  /** Deploys `config` (deployConfig), then records the deployment in the metrics textfile when there is one. */
  private async deploy(config: AgentConfig, bundled?: readonly StorePathInfo[], secrets?: readonly DeliveredSecret[], params?: Readonly<Record<string, string>>): Promise<RoundResult> {
    const started = performance.now();
    this.lastFetchedBytes = 0;
    const result = await this.deployConfig(config, bundled, secrets, params);
    if (this.metricsTextfile) {
      const deployment = { configId: config.id, result, seconds: (performance.now() - started) / 1000, fetchedBytes: this.lastFetchedBytes, generation: this.generations.current()?.number ?? null };
      await this.metricsTextfile.record(deployment).catch((error: unknown) => this.textfileNotWritten(error));
    }
    return result;
  }

  private async deployConfig(config: AgentConfig, bundled?: readonly StorePathInfo[], delivered?: readonly DeliveredSecret[], params?: Readonly<Record<string, string>>): Promise<RoundResult> {
    const system = nixSystem();
    const target = config.targets[system];
    if (!target) {
      this.state.refused.push(config.id);
      this.save();
      await this.report(config.id, 'failed', `config ${config.id} has no target for ${system} (it has ${Object.keys(config.targets).join(', ')})`);
      return 'failed';
    }
    // Checked again here though the coordinator checked it at submission: a signature proves who wrote a config, not that it is sane.
    const refusal = environmentRefusal(config.activation.environment);
    if (refusal) {
      this.state.refused.push(config.id);
      this.save();
      await this.report(config.id, 'failed', new ActivationEnvironmentError(refusal.key, refusal.reason).message);
      return 'failed';
    }
    // Each secret it references must have come for this agent: else it fails now, naming the secret, before anything is fetched.
    let secrets: StoredSecret[];
    try {
      secrets = secretsToKeep(config.secrets ?? [], delivered, this.identity.keyId, bundled ? 'bundle' : 'answer');
    } catch (error) {
      if (!(error instanceof SecretError)) throw error;
      this.state.refused.push(config.id);
      this.save();
      this.events.add('failed', error.message, config.id);
      await this.report(config.id, 'failed', error.message);
      return 'failed';
    }
    const stamp = secrets.length > 0 ? stampOfKept(secrets) : null;
    const resuming = this.state.deploying === config.id;
    this.state.deploying = config.id;
    this.save();
    const previous = this.generations.current();
    let generation: Generation;
    let fetchedTemplates: Promise<ReadonlyMap<Digest, BlobTemplate>> | undefined;
    if (resuming && previous?.configId === config.id && previous.secrets === stamp && paramsStamp(previous.params ?? undefined) === paramsStamp(params)) {
      // Killed after the switch: the generation is complete, activation (idempotent) runs again.
      generation = previous;
      this.events.add('resume', `resuming deployment of ${config.id} at activation`, config.id);
    } else {
      this.events.add('deploy', `${resuming ? 'resuming' : 'starting'} deployment of ${config.id} (${target})`, config.id);
      // Trees are laid out while their blobs arrive; what the fetch did not bring comes from the castore.
      let materializer = new ClosureMaterializer(this.castore(), this.state.storeDir);
      let storePaths: readonly StorePathInfo[];
      let written: number;
      try {
        if (bundled) {
          storePaths = this.castore().closure([target]).map((storePath) => this.castore().getStorePath(storePath)!);
          materializer.plan(referencesFirst(storePaths));
        } else {
          await this.report(config.id, 'fetching', null, { wait: false });
          const fetchFrom = async (client: DataClient, options: { groupVerifiedStreams?: boolean } = {}) => {
            const closure = await openVouchedClosure(client, config.id, system, this.state.coordinator.coordinatorKey, options);
            const sink = materializer;
            return copyClosure(closure.source, this.castore(), closure.storePaths, {
              onProgress: (progress) => {
                this.publishActivity('fetching', config.id, progress, progress.phase === 'done');
                this.logFetchProgress(config.id, progress);
              },
              // Small blobs are written once, into the store's temp trees (the resume state of an
              // interrupted deployment), and adopted by the castore at the end (keepBytesOnce).
              smallBlobs: {
                plan: (infos, readDirectory) => sink.plan(referencesFirst(infos), readDirectory),
                accept: (id, bytes) => sink.offer(id, bytes),
              },
            });
          };
          let fetched: Awaited<ReturnType<typeof fetchFrom>> | undefined;
          const through = this.relayFor(config.id);
          if (through) {
            // Through the site's relay first: verified exactly as from the coordinator, so a relay can cost
            // time (bounded) but never corrupt anything. Whatever it did bring stays for the coordinator's turn.
            const { relay } = through;
            let client: DataClient | undefined;
            try {
              client = await this.relayClient(relay, through.grant);
              // A relay passes its upstream's stream on: its large blobs are verified per 16 KiB group, not at their end.
              fetched = await fetchFrom(client, { groupVerifiedStreams: true });
              this.relayOutcome(relay, true, config.id);
              this.events.add('relay', `fetched through relay ${relay.url} (${relay.id}) over ${client.transportKind === 'quic' ? 'QUIC' : 'HTTPS'}`, config.id);
            } catch (error) {
              await materializer.suspend();
              materializer = new ClosureMaterializer(this.castore(), this.state.storeDir);
              this.events.add('relay-failed', `relay ${relay.url} (${relay.id}) failed: ${(error as Error).message}; fetching the rest from the coordinator`, config.id);
              this.relayOutcome(relay, false, config.id);
            } finally {
              await client?.close();
            }
          }
          fetched ??= await fetchFrom(await this.data());
          const deltas = fetched.deltaBlobs > 0 ? ` (${fetched.deltaBlobs} rebuilt from their previous version with ${fetched.deltaGroupBytes} bytes of changed 16 KiB groups)` : '';
          // Restored: over a normalized blob already here (the file differs only in store path hashes), or over one
          // that came as a delta against its previous version's (it also changed a little).
          const overDeltas = fetched.normalizedDeltaBlobs > 0 ? `, ${fetched.normalizedDeltaBlobs} of their normalized blobs rebuilt from their previous version's with ${fetched.normalizedDeltaGroupBytes} bytes of changed 16 KiB groups` : '';
          const restored = fetched.restoredBlobs > 0 ? `; ${fetched.restoredBlobs} files restored from ones already here that differ in store path hashes${overDeltas}` : '';
          this.events.add('fetched', `fetched ${fetched.copiedStorePaths} store paths, ${fetched.copiedBlobs} blobs, ${fetched.copiedBytes} bytes${deltas}${restored}`, config.id);
          fetchedTemplates = fetched.templates;
          storePaths = fetched.storePaths;
          this.lastFetchedBytes = fetched.copiedBytes;
        }
        written = await materializer.finish();
      } catch (error) {
        // What is written stays for the next attempt (the run loop retries the deployment).
        await materializer.suspend();
        throw error;
      }
      this.events.add('materialized', `materialized ${written} new store paths in ${this.state.storeDir}`, config.id);
      generation = this.generations.create({
        configId: config.id,
        graph: config.graph,
        target,
        location: storePathLocation(this.state.storeDir, target),
        closure: storePaths.map((info) => info.storePath),
        activation: config.activation,
        health: config.health,
        deactivate: config.deactivate ?? null,
        // Kept only when well-formed: the generation file is validated whenever it is read.
        hlc: HlcStringSchema.safeParse(config.hlc).success ? config.hlc! : null,
        secrets: stamp,
        params: params && Object.keys(params).length > 0 ? { ...params } : null,
      }, (dir) => keepSecrets(dir, secrets));
      this.generations.switchTo(generation.number);
      this.events.add('switched', `profile -> generation ${generation.number}`, config.id);
    }
    const result = await this.activateGeneration(config, generation, previous);
    // The claims of what was fetched whole may still be on their way (copyClosure): only adoption needs them.
    this.keepBytesOnce(generation, fetchedTemplates ? await fetchedTemplates : undefined);
    // Once the castore adopted the new generation's files (so the adoption is its own, and said).
    if (result === 'active') await this.collectAfterDeployment(generation);
    return result;
  }

  /** Activation and health check of the switched-to `generation`; on failure, back to `previous` (or the one before). */
  private async activateGeneration(config: AgentConfig, generation: Generation, previous: Generation | undefined): Promise<RoundResult> {
    await this.report(config.id, 'activating', null, { wait: false });
    const outcome = await this.activateAndCheck(generation);
    if (outcome.ok) {
      this.state.deploying = null;
      this.state.stopped = false;
      this.state.activated = { generation: generation.number, at: Date.now(), probation: true };
      this.save();
      this.events.add('active', `generation ${generation.number} (${config.id}) is active`, config.id);
      // The outcome first: the live view of progress can wait the round trip, what the coordinator records cannot.
      await this.report(config.id, 'active');
      this.publishActivity('active', config.id, undefined, true);
      return 'active';
    }
    this.state.refused.push(config.id);
    // A stopped agent has nothing to go back to: the generations it stopped stay stopped.
    const back = this.state.stopped
      ? undefined
      : previous && previous.number !== generation.number
        ? previous
        : this.generations.list().filter((entry) => entry.number < generation.number).at(-1);
    if (!back) {
      this.state.deploying = null;
      this.save();
      this.events.add('failed', outcome.error, config.id);
      await this.report(config.id, 'failed', outcome.error);
      return 'failed';
    }
    await this.switchBack(generation, back, config.id, outcome.error);
    return 'rolled-back';
  }

  /**
   * After a successful deployment: keeps the current and the newest
   * generations, `keepGenerations` in all, and collects the rest (gcLocked).
   * A failure is logged, never the deployment's: it succeeded.
   */
  private async collectAfterDeployment(generation: Generation): Promise<void> {
    try {
      await this.gcLocked(this.keepGenerations);
    } catch (error) {
      this.log(`ferry agent: garbage collection after generation ${generation.number} failed: ${(error as Error).message}`);
    }
  }

  /**
   * Switches the profile from `generation` back to `back`, re-activates it
   * (no probation for it: a rollback does not cascade) and reports
   * `configId` rolled back with `error`, naming the config it runs again.
   */
  private async switchBack(generation: Generation, back: Generation, configId: string, error: string): Promise<void> {
    this.generations.switchTo(back.number);
    const restored = await this.activate(back);
    this.state.deploying = null;
    this.state.activated = restored.ok ? { generation: back.number, at: Date.now(), probation: false } : null;
    this.save();
    const note = restored.ok ? '' : `\n(re-activating generation ${back.number} also failed: exit ${restored.exitCode})`;
    this.events.add('rolled-back', `generation ${generation.number} failed, back on ${back.number}: ${error}${note}`, configId);
    await this.report(configId, 'rolled-back', `${error}${note}`, { running: restored.ok ? back.configId : null });
    this.publishActivity('rolled-back', configId, undefined, true);
  }

  /**
   * After a deployment (whatever its outcome: the generation stays until
   * GC), the castore adopts the generation's materialized files and drops
   * its copy of them (agent/adopt-store-files.ts). Off the deployment's
   * critical path; a failure only leaves the bytes stored twice until the
   * next deployment, so it is logged, not thrown.
   */
  private keepBytesOnce(generation: Generation, templates?: ReadonlyMap<Digest, BlobTemplate>): void {
    try {
      const store = this.castore();
      const infos = generation.closure.map((storePath) => store.getStorePath(storePath)).filter((info) => info !== undefined);
      const { adopted, releasedBytes } = adoptMaterializedFiles(store, this.state.storeDir, infos, templates);
      if (adopted > 0) this.events.add('adopted', `castore: ${adopted} blobs read from the store's files from now on (${releasedBytes} bytes of its own copies released)`, generation.configId);
    } catch (error) {
      this.log(`ferry agent: could not release the castore's copy of generation ${generation.number}: ${(error as Error).message}`);
    }
  }

  /**
   * Switches back to generation `to` (default: the one before the current)
   * and re-activates it; the coordinator is told (an audited report) and
   * the abandoned config is not redeployed until the desired config changes.
   */
  rollback(to?: number): Promise<Generation> {
    return this.exclusively(() => this.rollbackLocked(to));
  }

  private async rollbackLocked(to?: number): Promise<Generation> {
    const current = this.generations.current();
    const target = to !== undefined ? this.generations.get(to) : this.generations.list().filter((entry) => entry.number < (current?.number ?? 0)).at(-1);
    if (!target) throw new Error(to !== undefined ? `there is no generation ${to} (see ferry agent generations)` : 'there is no earlier generation to roll back to');
    this.generations.switchTo(target.number);
    const result = await this.activate(target);
    if (current && current.configId !== target.configId) this.state.refused.push(current.configId);
    this.state.activated = result.ok ? { generation: target.number, at: Date.now(), probation: false } : null;
    this.save();
    this.events.add('rollback', `local rollback to generation ${target.number} (${target.configId})${result.ok ? '' : `: activation failed (exit ${result.exitCode})`}`, target.configId);
    await this.report(target.configId, result.ok ? 'active' : 'failed', result.ok ? null : `local rollback: activation failed:\n${result.outputTail}`);
    return target;
  }

  /**
   * Keeps the current generation and the `keep` newest others; deletes the
   * rest, then every store path (in the store dir) and castore object no
   * kept generation needs. Only paths the agent's castore knows are ever
   * deleted from the store dir.
   */
  gc(keep = 5): Promise<{ removedGenerations: number[]; removedStorePaths: string[] }> {
    return this.exclusively(() => this.gcLocked(keep));
  }

  private async gcLocked(keep: number): Promise<{ removedGenerations: number[]; removedStorePaths: string[] }> {
    const current = this.generations.current();
    const all = this.generations.list();
    const kept = new Set([...(keep > 0 ? all.slice(-keep) : []).map((entry) => entry.number), ...(current ? [current.number] : [])]);
    // A generation a deployment in progress switched to is not collected from under it.
    for (const entry of all) if (this.state.deploying !== null && entry.configId === this.state.deploying) kept.add(entry.number);
    const removedGenerations = all.filter((entry) => !kept.has(entry.number)).map((entry) => entry.number);
    for (const number of removedGenerations) this.generations.remove(number);
    const live = new Set(all.filter((entry) => kept.has(entry.number)).flatMap((entry) => entry.closure));
    const store = this.castore();
    const removedStorePaths: string[] = [];
    const known = new Set(store.listStorePaths().map((info) => info.storePath));
    const keptPaths = [...live].filter((storePath) => known.has(storePath));
    // Blobs adopted from a store path about to go are first re-pointed to a kept path holding them.
    adoptMaterializedFiles(store, this.state.storeDir, keptPaths.map((storePath) => store.getStorePath(storePath)!));
    if (existsSync(this.state.storeDir)) {
      for (const storePath of known) {
        if (live.has(storePath)) continue;
        const location = storePathLocation(this.state.storeDir, storePath);
        if (existsSync(location)) removeTree(location);
        removedStorePaths.push(storePath);
      }
    }
    await collectGarbage(store, { keepStorePaths: keptPaths });
    this.events.add('gc', `removed generations [${removedGenerations.join(', ')}] and ${removedStorePaths.length} store paths`);
    return { removedGenerations, removedStorePaths };
  }
}
