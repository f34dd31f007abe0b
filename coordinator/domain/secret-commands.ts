/**
 * Secrets' commands (docs/secrets.md): a new version (`ferry secrets set`,
 * `rekey`) and removal. The coordinator never sees a value: it checks the
 * ciphertext's shape and bounds, that each recipient is an enrolled agent,
 * and records who it is encrypted to and the ciphertext's SHA-256; the
 * ciphertext itself is kept beside the state by the caller, in the same
 * transaction (db/secret-ciphertexts.ts).
 */
import { FerryError } from '../../protocol/errors.js';
import { SecretRefInput, SetSecretInput } from '../../protocol/api/secrets.js';
import { ciphertextDigest, ciphertextProblem } from '../../protocol/secret-refs.js';
import type { KeyId } from '../../protocol/identity.js';
import { allow, parse, type CommandContext } from './commands.js';
import type { EventDraft } from './events.js';

/**
 * Records a secret's next version (admins only). Refuses (INVALID) what
 * SetSecretInput refuses and a ciphertext that is not an age file within
 * the bounds; (NOT_FOUND) a recipient that is no agent; (CONFLICT) one
 * that is not enrolled (waiting, rejected or revoked). Returns the event
 * and the ciphertext's bytes, for the caller to keep in the transaction.
 */
export function setSecret(context: CommandContext, input: unknown): { draft: EventDraft<'secret.set'>; ciphertext: Uint8Array } {
  allow(context, 'admin');
  const { name, ciphertext: encoded, recipients, selector } = parse(SetSecretInput, input);
  const ciphertext = new Uint8Array(Buffer.from(encoded, 'base64'));
  const problem = ciphertextProblem(ciphertext);
  if (problem) throw new FerryError('INVALID', `ciphertext: ${problem}`);
  for (const agentId of recipients) {
    const agent = context.state.get('agents', agentId);
    if (!agent) throw new FerryError('NOT_FOUND', `recipient ${agentId} is no agent`);
    if (agent.status !== 'enrolled') throw new FerryError('CONFLICT', `recipient ${agent.name} (${agentId}) is ${agent.status}, not enrolled: it may not be given a secret`);
  }
  const previous = context.state.get('secrets', name);
  const payload = {
    name,
    version: (previous?.version ?? 0) + 1,
    recipients: [...recipients].sort(),
    setter: context.actor.keyId as KeyId,
    selector,
    ciphertextSha256: ciphertextDigest(ciphertext),
    ciphertextBytes: ciphertext.length,
  };
  return { draft: { action: 'secret.set', subject: name, payload }, ciphertext };
}

/**
 * Removes a secret (admins only). Refuses (NOT_FOUND) one that is not set,
 * and (CONFLICT) one a desired config references (`usedBy` names where,
 * e.g. "the head of graph 'edge'"): its agents would fail their next
 * activation; the secret is removed once no head or pin uses it.
 */
export function removeSecret(context: CommandContext, input: unknown, usedBy: (name: string) => string | undefined): EventDraft<'secret.remove'> {
  allow(context, 'admin');
  const { name } = parse(SecretRefInput, input);
  const secret = context.state.get('secrets', name);
  if (!secret || secret.removed) throw new FerryError('NOT_FOUND', `no secret '${name}'`);
  const user = usedBy(name);
  if (user) throw new FerryError('CONFLICT', `secret '${name}' is used by ${user}: move the head (or pin) to a config without it first`);
  return { action: 'secret.remove', subject: name, payload: { name } };
}
