/**
 * Secrets' ciphertexts (db/schema.ts secret_ciphertexts): each secret's
 * latest one, beside the state and outside the audit log. Written only in
 * the transaction of the secret.set or secret.remove that changes it
 * (Decision.publish), so what is served always matches the recorded
 * version and digest.
 */
import type Database from 'better-sqlite3';
import type { Coordinator } from '../coordinator.js';

export interface StoredCiphertext {
  version: number;
  sha256: string;
  ciphertext: Buffer;
}

export class SecretCiphertexts {
  private readonly statements;

  constructor(sqlite: Database.Database) {
    this.statements = {
      get: sqlite.prepare<[string], StoredCiphertext>('SELECT version, sha256, ciphertext FROM secret_ciphertexts WHERE id = ?'),
      put: sqlite.prepare<[string, number, string, Buffer]>(
        'INSERT INTO secret_ciphertexts (id, version, sha256, ciphertext) VALUES (?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET version = excluded.version, sha256 = excluded.sha256, ciphertext = excluded.ciphertext',
      ),
      remove: sqlite.prepare<[string]>('DELETE FROM secret_ciphertexts WHERE id = ?'),
    };
  }

  /** Secret `name`'s stored ciphertext, when it is `version` with digest `sha256` (what the state says is latest); else undefined. */
  latest(name: string, version: number, sha256: string): Buffer | undefined {
    const row = this.statements.get.get(name);
    return row && row.version === version && row.sha256 === sha256 ? row.ciphertext : undefined;
  }

  /** Keeps `ciphertext` as secret `name`'s `version`: call inside its secret.set's transaction. */
  put(name: string, version: number, sha256: string, ciphertext: Uint8Array): void {
    this.statements.put.run(name, version, sha256, Buffer.from(ciphertext));
  }

  /** Forgets secret `name`'s ciphertext: call inside its secret.remove's transaction. */
  remove(name: string): void {
    this.statements.remove.run(name);
  }
}

const stores = new WeakMap<Coordinator, SecretCiphertexts>();

/** The ciphertext store of `coordinator`'s database, prepared once. */
export function secretCiphertexts(coordinator: Coordinator): SecretCiphertexts {
  let store = stores.get(coordinator);
  if (!store) {
    store = new SecretCiphertexts(coordinator.database.sqlite);
    stores.set(coordinator, store);
  }
  return store;
}
