/**
 * The two answers an agent acts on, signed by the coordinator
 * (protocol/coordinator-proofs.ts): which config to run, and that config's
 * closure manifest. When a config is submitted to a graph, every follower
 * asks for both within seconds, so what they share is computed once per
 * config (and system) and kept: the answer and its canonical digest, the
 * manifest and its proof. What is per agent stays one ed25519 signature
 * over (agent, challenge, digest). Configs are content-addressed and never
 * change, so nothing kept can go stale; the caches are bounded by count.
 */
import { desiredAnswerDigest, desiredProofMessage, directivesProofMessage, manifestProofMessage, signProof, type Directives } from '../../protocol/coordinator-proofs.js';
import type { ConfigBody } from '../../protocol/config.js';
import type { StorePath } from '../../nix/store-path.js';
import type { StorePathInfo } from '../../castore/index.js';
import type { Coordinator } from '../coordinator.js';
import type { AgentRow } from '../domain/state.js';
import { desiredConfigOf } from './queries.js';
import { relayOffer } from './relay-access.js';
import { deliveredSecrets, secretRefsOf } from './secret-delivery.js';
import { secretsStamp, type DeliveredSecret } from '../../protocol/secret-refs.js';
import { paramsStamp } from '../../protocol/params.js';
import { agentDesiredParams } from './param-layers.js';

/** Configs (and config/system pairs) whose shared parts are kept, the most recently computed first out. */
const KEPT_CONFIGS = 256;

interface SharedDesired {
  answer: { configId: string | null; config: ({ id: string } & ConfigBody) | null };
  digest: string;
}

type Manifest = { configId: string; system: string; target: StorePath; storePaths: StorePathInfo[]; proof: string };

interface Caches {
  desired: Map<string, SharedDesired>;
  manifests: Map<string, Manifest>;
}

const caches = new WeakMap<Coordinator, Caches>();

function cachesOf(coordinator: Coordinator): Caches {
  let found = caches.get(coordinator);
  if (!found) {
    found = { desired: new Map(), manifests: new Map() };
    caches.set(coordinator, found);
  }
  return found;
}

function keep<V>(map: Map<string, V>, key: string, value: V): V {
  if (map.size >= KEPT_CONFIGS) map.delete(map.keys().next().value!);
  map.set(key, value);
  return value;
}

/** The answer (and its digest) every agent that should run `configId` gets. */
function sharedDesired(coordinator: Coordinator, configId: string | null): SharedDesired {
  const cache = cachesOf(coordinator).desired;
  const key = configId ?? '';
  const found = cache.get(key);
  if (found) return found;
  const config = configId ? coordinator.state.get('configs', configId) : undefined;
  const answer = { configId, config: config ? { id: config.id, ...(config.body as ConfigBody) } : null };
  return keep(cache, key, { answer, digest: desiredAnswerDigest(answer) });
}

/**
 * The answer (and its digest) for `configId` with the secrets delivered to
 * one agent: the same for every agent the same versions are delivered to,
 * so kept by config and stamp like the plain answer.
 */
function sharedDesiredWithSecrets(coordinator: Coordinator, shared: SharedDesired, secrets: DeliveredSecret[]): SharedDesired & { secrets: DeliveredSecret[] } {
  const cache = cachesOf(coordinator).desired;
  const key = `${shared.answer.configId}\n${secretsStamp(secrets)}`;
  const found = cache.get(key);
  if (found) return { ...found, secrets };
  const answer = { ...shared.answer, secrets };
  return { ...keep(cache, key, { answer: shared.answer, digest: desiredAnswerDigest(answer) }), secrets };
}

/**
 * The desired-config answer for `agent`, signed for it and `challenge` (the
 * empty string when the agent sent none), with its relays and their grant
 * when a relay serves it (relay-access.ts relayOffer), and when the config
 * references secrets, each one's ciphertext for this agent
 * (secret-delivery.ts deliveredSecrets), and its effective parameters
 * when it has any (param-layers.ts), under the same proof.
 */
export function desiredAnswer(coordinator: Coordinator, agent: AgentRow, challenge: string) {
  let shared = sharedDesired(coordinator, desiredConfigOf(coordinator.state, agent));
  const refs = secretRefsOf(shared.answer.config ?? undefined);
  const withSecrets = refs.length > 0 ? sharedDesiredWithSecrets(coordinator, shared, deliveredSecrets(coordinator, agent.id, refs)) : undefined;
  if (withSecrets) shared = withSecrets;
  // Parameters are per agent: with any, the digest is this agent's own (computed, not kept).
  const params = shared.answer.configId === null ? undefined : agentDesiredParams(coordinator, agent);
  const secretsField = withSecrets ? { secrets: withSecrets.secrets } : {};
  const digest = params ? desiredAnswerDigest({ ...shared.answer, ...secretsField, params }) : shared.digest;
  const relays = relayOffer(coordinator, agent, shared.answer.configId, challenge);
  const directives = directivesFor(coordinator, agent, shared.answer.configId, challenge);
  return {
    ...shared.answer,
    ...secretsField,
    ...(params ? { params } : {}),
    proof: signProof(coordinator.identity, desiredProofMessage(agent.id, challenge, digest)),
    ...(relays ? { relays } : {}),
    ...(directives ? { directives } : {}),
  };
}

/**
 * The secretsStamp of what `agent`'s desired answer delivers now (undefined
 * when its desired config references no secret): what a held watch
 * compares with the agent's.
 */
export function desiredSecretsStamp(coordinator: Coordinator, agent: AgentRow): { stamp: string; names: string[] } | undefined {
  const shared = sharedDesired(coordinator, desiredConfigOf(coordinator.state, agent));
  const refs = secretRefsOf(shared.answer.config ?? undefined);
  if (refs.length === 0) return undefined;
  return { stamp: secretsStamp(deliveredSecrets(coordinator, agent.id, refs)), names: refs.map((ref) => ref.name) };
}

/**
 * The directives of `agent`'s desired answer (coordinator-proofs.ts
 * DirectivesSchema), signed for it, its challenge and the answer's config:
 * its last retry, and stop when it was told to stop and has no desired
 * config. Undefined when neither applies (the answer is then what agents
 * from before directives got).
 */
function directivesFor(coordinator: Coordinator, agent: AgentRow, configId: string | null, challenge: string): Directives | undefined {
  const said = {
    ...(agent.retrySeq !== null ? { retry: agent.retrySeq } : {}),
    ...(agent.stopRequested && configId === null ? { stop: true as const } : {}),
  };
  if (said.retry === undefined && said.stop === undefined) return undefined;
  return { ...said, proof: signProof(coordinator.identity, directivesProofMessage(agent.id, challenge, configId, said)) };
}

/**
 * The signed closure manifest of `configId`'s `target` for `system`. Throws
 * (CastoreError STORE_PATH_NOT_FOUND) when the store does not hold the
 * whole closure; a kept manifest is given only while it holds the target.
 */
export function closureManifest(coordinator: Coordinator, configId: string, target: StorePath, system: string): Manifest {
  const cache = cachesOf(coordinator).manifests;
  const key = `${configId}\n${system}`;
  const store = coordinator.castore;
  const found = cache.get(key);
  if (found && found.target === target && store.getStorePath(target)) return found;
  const storePaths = store.closure([target]).map((storePath) => store.getStorePath(storePath)!);
  const manifest = { configId, system, target, storePaths };
  return keep(cache, key, { ...manifest, proof: signProof(coordinator.identity, manifestProofMessage(manifest)) });
}

/**
 * The paramsStamp of what `agent`'s desired answer carries now (of none
 * when it has no config or no parameter): what a held watch compares with
 * the agent's.
 */
export function desiredParamsStamp(coordinator: Coordinator, agent: AgentRow): string {
  return paramsStamp(desiredConfigOf(coordinator.state, agent) === null ? undefined : agentDesiredParams(coordinator, agent));
}
