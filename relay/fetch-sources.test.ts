// What a relay takes of an upstream offer in its prefetch answer (fetch-sources.ts): only one the pinned
// coordinator key signed for this relay and this query's challenge, whose grants all name this relay's key.
// Anything else leaves it fetching from the coordinator. No request is made: the coordinator's client
// points nowhere, and these checks come before any fetch.
import { describe, expect, it } from 'vitest';
import { signProof } from '../protocol/coordinator-proofs.js';
import { DataClient } from '../protocol/data-client.js';
import { Identity } from '../protocol/identity.js';
import { upstreamOfferMessage, type UpstreamOffer } from '../protocol/relay-prefetch.js';
import { relayGrantMessage, type RelayGrant } from '../protocol/relays.js';
import { FetchSources } from './fetch-sources.js';

const coordinator = Identity.generate();
const site = Identity.generate();
const depot = Identity.generate();
const challenge = 'ab'.repeat(16);
const configId = 'c'.repeat(64);

function grant(forKey: string): RelayGrant {
  const expiresAt = Date.now() + 600_000;
  return { agentId: forKey as RelayGrant['agentId'], configId, expiresAt, proof: signProof(coordinator, relayGrantMessage(forKey, configId, expiresAt)) };
}

function offer(options: { signer?: Identity; forRelay?: string; signedChallenge?: string; grants?: RelayGrant[] } = {}): UpstreamOffer {
  const unsigned = { relay: { id: depot.keyId, url: 'https://127.0.0.1:9', fingerprint: 'aa'.repeat(32) } as UpstreamOffer['relay'], grants: options.grants ?? [grant(site.keyId)] };
  const message = upstreamOfferMessage(options.forRelay ?? site.keyId, options.signedChallenge ?? challenge, unsigned);
  return { ...unsigned, proof: signProof(options.signer ?? coordinator, message) };
}

describe("a relay's upstream offer", () => {
  it('is taken when the coordinator signed it for this relay and challenge, and refused otherwise', async () => {
    const sources = new FetchSources(new DataClient({ identity: site, httpUrl: 'https://127.0.0.1:9', httpOnly: true, retries: 0 }), site, coordinator.keyId);
    try {
      expect(sources.accept(offer(), challenge)).toBe(true);
      expect(sources.status()).toMatchObject({ relay: { id: depot.keyId }, fetchingFrom: 'relay', grants: 1 });
      const forged: [string, UpstreamOffer][] = [
        ['signed by another key', offer({ signer: Identity.generate() })],
        ['signed for another relay', offer({ forRelay: Identity.generate().keyId })],
        ['signed for another challenge (a replayed answer)', offer({ signedChallenge: 'cd'.repeat(16) })],
        ['carrying a grant for another key', offer({ grants: [grant(site.keyId), grant(Identity.generate().keyId)] })],
      ];
      for (const [why, bad] of forged) {
        expect(sources.accept(bad, challenge), why).toBe(false);
        expect(sources.status(), why).toMatchObject({ relay: null, fetchingFrom: 'coordinator', grants: 0 });
        // Each time from a taken offer, so a refusal is seen to drop it.
        expect(sources.accept(offer(), challenge)).toBe(true);
      }
      // An answer without an offer: the coordinator only.
      expect(sources.accept(undefined, challenge)).toBe(true);
      expect(sources.status()).toMatchObject({ relay: null, fetchingFrom: 'coordinator' });
    } finally {
      await sources.close();
    }
  });
});
