/**
 * The coordinator's signatures on the answers an agent acts on: which
 * config to run, and what that config's closure is. Control messages and
 * the data plane's fallback travel over plain HTTP, where the request
 * signatures prove who asks but nothing proves who answers; without these,
 * anything between an agent and its coordinator could hand the agent a
 * config with its own activation command, or a manifest naming other
 * contents. The agent checks them against the coordinator key it pinned at
 * enrollment (from the join string). Blobs and directories need no proof:
 * they are verified against the ids these answers name.
 */
import { createHash } from 'node:crypto';
import { z } from 'zod';
import { canonicalJson } from './canonical-json.js';
import { ed25519Verify } from './ed25519.js';
import { publicKeyOf, type Identity, type KeyId } from './identity.js';

function digestOf(value: unknown): string {
  return createHash('sha256').update(canonicalJson(value)).digest('hex');
}

function proofMessage(kind: string, subject: string, digest: string): Uint8Array {
  return new TextEncoder().encode(`ferry-${kind}-v1\n${subject}\n${digest}`);
}

/**
 * What a desired-config answer's proof covers of the answer itself (the
 * config and, when it references any, the secrets delivered with it, and
 * the agent's parameters when it has any): the same for every agent given
 * that answer, so a coordinator answering a fleet computes it once per
 * config (and set of secrets; per agent only with parameters).
 */
export function desiredAnswerDigest(answer: { configId: string | null; config: unknown; secrets?: unknown; params?: unknown }): string {
  // The secrets and parameters are covered when the answer has them; an answer without keeps the digest it always had.
  return digestOf({
    configId: answer.configId,
    config: answer.config,
    ...(answer.secrets === undefined ? {} : { secrets: answer.secrets }),
    ...(answer.params === undefined ? {} : { params: answer.params }),
  });
}

/**
 * What the desired-config answer for `agentId` signs: bound to that agent
 * (it cannot be given to another) and to the random `challenge` the agent
 * sent with its request (an old answer cannot be replayed to it). `answer`
 * may be given as its desiredAnswerDigest.
 */
export function desiredProofMessage(agentId: string, challenge: string, answer: { configId: string | null; config: unknown; secrets?: unknown; params?: unknown } | string): Uint8Array {
  return proofMessage('desired', `${agentId}\n${challenge}`, typeof answer === 'string' ? answer : desiredAnswerDigest(answer));
}

/** A desired-config request's challenge: 16 random bytes, hex. */
export const DesiredChallengeSchema = z.string().regex(/^[0-9a-f]{32}$/, 'a challenge is 32 hex digits');

/**
 * What the coordinator tells an agent beside its desired config, in the
 * desired answer: `retry` (the seq of the last `agents retry` of this agent:
 * a later one than the agent took up clears the configs it refused, so it
 * tries its desired config again) and `stop` (`agents assign … --none
 * --stop`: run the current config's deactivate command and leave no
 * generation active). Signed apart from the answer (directivesProofMessage),
 * so agents from before directives verify the rest as they always did and
 * ignore them.
 */
export const DirectivesSchema = z.strictObject({
  retry: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER).optional(),
  stop: z.literal(true).optional(),
  proof: z.string().max(128),
});
export type Directives = z.infer<typeof DirectivesSchema>;

/**
 * What the directives of a desired answer for `agentId` sign: bound to the
 * agent, its challenge and the config id of the answer they came with, so
 * they can be neither replayed nor moved to another answer.
 */
export function directivesProofMessage(agentId: string, challenge: string, configId: string | null, directives: { retry?: number; stop?: true }): Uint8Array {
  return proofMessage('directives', `${agentId}\n${challenge}`, digestOf({ configId, retry: directives.retry ?? null, stop: directives.stop ?? false }));
}

/** What a closure manifest signs. */
export function manifestProofMessage(manifest: { configId: string; system: string; target: string; storePaths: unknown }): Uint8Array {
  return proofMessage('manifest', manifest.configId, digestOf({ configId: manifest.configId, system: manifest.system, target: manifest.target, storePaths: manifest.storePaths }));
}

/** The coordinator's proof over `message` (base64 ed25519). */
export function signProof(coordinator: Identity, message: Uint8Array): string {
  return Buffer.from(coordinator.sign(message)).toString('base64');
}

/** Whether `proof` is `coordinatorKey`'s signature of `message`; false for anything malformed. */
export function verifyProof(coordinatorKey: KeyId, message: Uint8Array, proof: unknown): boolean {
  if (typeof proof !== 'string' || proof.length > 128) return false;
  try {
    return ed25519Verify(publicKeyOf(coordinatorKey), message, Buffer.from(proof, 'base64'));
  } catch {
    return false;
  }
}
