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
 * The desired-config answer for `agent`, signed for it and `challenge` (the
 * empty string when the agent sent none), with its relays and their grant
 * when a relay serves it (relay-access.ts relayOffer).
 */
export function desiredAnswer(coordinator: Coordinator, agent: AgentRow, challenge: string) {
  const { answer, digest } = sharedDesired(coordinator, desiredConfigOf(coordinator.state, agent));
  const relays = relayOffer(coordinator, agent, answer.configId, challenge);
  const directives = directivesFor(coordinator, agent, answer.configId, challenge);
  return { ...answer, proof: signProof(coordinator.identity, desiredProofMessage(agent.id, challenge, digest)), ...(relays ? { relays } : {}), ...(directives ? { directives } : {}) };
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
