/**
 * Secrets as agents and admins read them (docs/secrets.md): the
 * ciphertexts a desired answer delivers to one agent, what `ferry secrets
 * ls` shows (who needs a rekey), and which desired configs use a secret.
 */
import type { SecretRef, DeliveredSecret } from '../../protocol/secret-refs.js';
import type { KeyId } from '../../protocol/identity.js';
import type { ConfigBody } from '../../protocol/config.js';
import type { Coordinator } from '../coordinator.js';
import type { SecretRow } from '../domain/state.js';
import { secretCiphertexts } from '../db/secret-ciphertexts.js';
import { listAgents, parseWhere } from './queries.js';

/**
 * Each of `refs` as delivered to agent `agentId`: the latest version's
 * ciphertext (base64) when the agent is among its recipients, else null
 * (version null: no such secret is set, or it was removed, or its
 * ciphertext is missing from this database).
 */
export function deliveredSecrets(coordinator: Coordinator, agentId: string, refs: readonly SecretRef[]): DeliveredSecret[] {
  const store = secretCiphertexts(coordinator);
  return refs.map(({ name }) => {
    const row = coordinator.state.get('secrets', name);
    if (!row || row.removed) return { name, version: null, ciphertext: null };
    if (!row.recipients.includes(agentId)) return { name, version: row.version, ciphertext: null };
    const ciphertext = store.latest(name, row.version, row.ciphertextSha256);
    return ciphertext ? { name, version: row.version, ciphertext: ciphertext.toString('base64') } : { name, version: null, ciphertext: null };
  });
}

/** The secrets `body` references (none for a config from before secrets). */
export function secretRefsOf(body: ConfigBody | undefined): readonly SecretRef[] {
  return body?.secrets ?? [];
}

/**
 * Secret `row` as `ferry secrets ls` shows it: `needsRekey`, the enrolled
 * agents its `--where` selector matches now that are not recipients (a
 * fixed `--agents` list matches no new agent); `revokedRecipients`, those
 * no longer enrolled (the next rekey drops them).
 */
export function secretView(coordinator: Coordinator, row: SecretRow) {
  const recipients = new Set(row.recipients);
  const needsRekey =
    'where' in row.selector
      ? listAgents(coordinator.state, parseWhere(row.selector.where), (id) => coordinator.presence.presenceOf(id))
          .filter((agent) => agent.status === 'enrolled' && !recipients.has(agent.id))
          .map((agent) => agent.id as KeyId)
          .sort()
      : [];
  const revokedRecipients = row.recipients.filter((id) => coordinator.state.get('agents', id)?.status !== 'enrolled') as KeyId[];
  return {
    name: row.id,
    version: row.version,
    recipients: row.recipients as KeyId[],
    setter: row.setter as KeyId,
    selector: row.selector as { where: string[] } | { agents: KeyId[] },
    ciphertextSha256: row.ciphertextSha256,
    ciphertextBytes: row.ciphertextBytes,
    updatedSeq: row.updatedSeq,
    needsRekey,
    revokedRecipients,
  };
}

/** Where a desired config references secret `name` (a graph's head, an agent's pin), said for people; undefined: nowhere. */
export function secretUsedBy(coordinator: Coordinator, name: string): string | undefined {
  const uses = (configId: string) => secretRefsOf(coordinator.state.get('configs', configId)?.body as ConfigBody | undefined).some((ref) => ref.name === name);
  const graph = coordinator.state.all('graphs').find((row) => uses(row.head));
  if (graph) return `the head of graph '${graph.id}' (config ${graph.head})`;
  const pinned = coordinator.state.all('agents').find((agent) => agent.pinnedConfig && uses(agent.pinnedConfig));
  if (pinned) return `agent ${pinned.name}'s pin (config ${pinned.pinnedConfig})`;
  return undefined;
}
