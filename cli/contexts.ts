/**
 * CLI contexts: named coordinators the CLI talks to (URL, the key to sign
 * with, the coordinator's public key), kept in `contexts.json` under
 * $FERRY_CONFIG_DIR (default: $XDG_CONFIG_HOME/ferry or ~/.config/ferry).
 */
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import path from 'node:path';
import { z } from 'zod';
import type { DataClient } from '../protocol/data-client.js';
import { CoordinatorHttpClient } from '../protocol/http-client.js';
import { loadIdentity } from '../protocol/identity.js';
import { normalizeFingerprint } from '../protocol/tls-pinning.js';
import { stringOption, UsageError, type OptionSpec, type OptionValues } from './command.js';

export const ContextSchema = z.strictObject({
  url: z.url(),
  keyFile: z.string(),
  coordinatorKey: z.string().optional(),
  /**
   * SHA-256 of the coordinator's TLS certificate, pinned for QUIC and, when
   * `url` is http:// (the coordinator's own port), for TLS on that port:
   * the CLI's requests are then encrypted.
   */
  tlsFingerprint: z.string().optional(),
});
export type Context = z.infer<typeof ContextSchema>;

const ContextsFileSchema = z.strictObject({
  current: z.string().nullable(),
  contexts: z.record(z.string(), ContextSchema),
});
export type ContextsFile = z.infer<typeof ContextsFileSchema>;

export function configDir(): string {
  if (process.env.FERRY_CONFIG_DIR) return path.resolve(process.env.FERRY_CONFIG_DIR);
  return path.join(process.env.XDG_CONFIG_HOME || path.join(homedir(), '.config'), 'ferry');
}

function contextsPath(): string {
  return path.join(configDir(), 'contexts.json');
}

export function readContexts(): ContextsFile {
  const file = contextsPath();
  if (!existsSync(file)) return { current: null, contexts: {} };
  const parsed = ContextsFileSchema.safeParse(JSON.parse(readFileSync(file, 'utf8')));
  if (!parsed.success) throw new UsageError(`${file} is not a valid contexts file: ${parsed.error.issues[0]!.message}`);
  return parsed.data;
}

/** Writes atomically (temp file + rename), so a crash never leaves half a file. */
export function writeContexts(contexts: ContextsFile): void {
  const file = contextsPath();
  mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  writeFileSync(`${file}.tmp`, `${JSON.stringify(contexts, null, 2)}\n`, { mode: 0o600 });
  renameSync(`${file}.tmp`, file);
}

export function saveContext(name: string, context: Context, makeCurrent: boolean): void {
  const contexts = readContexts();
  contexts.contexts[name] = ContextSchema.parse(context);
  if (makeCurrent || contexts.current === null) contexts.current = name;
  writeContexts(contexts);
}

export const connectionOptions: Record<string, OptionSpec> = {
  context: { type: 'string', valueName: 'NAME', description: 'coordinator context to use (default: the current one; see ferry context ls)' },
  url: { type: 'string', valueName: 'URL', description: 'coordinator URL (overrides the context; or $FERRY_URL)' },
  key: { type: 'string', valueName: 'FILE', description: 'key to sign requests with (overrides the context; or $FERRY_KEY)' },
  fingerprint: {
    type: 'string',
    valueName: 'SHA256',
    description: "the coordinator's TLS fingerprint, pinned for QUIC and for TLS to an http:// URL's port (overrides the context; or $FERRY_FINGERPRINT)",
  },
};

function chosenContext(options: OptionValues): { url: string; keyFile: string; tlsFingerprint?: string } {
  const contexts = readContexts();
  const name = stringOption(options, 'context') ?? process.env.FERRY_CONTEXT ?? contexts.current ?? undefined;
  const context = name ? contexts.contexts[name] : undefined;
  if (name && !context && stringOption(options, 'context')) throw new UsageError(`no context named '${name}' (see ferry context ls)`);
  const url = stringOption(options, 'url') ?? process.env.FERRY_URL ?? context?.url;
  const keyFile = stringOption(options, 'key') ?? process.env.FERRY_KEY ?? context?.keyFile;
  if (!url || !keyFile) {
    throw new UsageError('no coordinator configured: run `ferry coordinator init` on the coordinator, or `ferry context add NAME --url URL --key FILE`');
  }
  const tlsFingerprint =
    fingerprintOption(stringOption(options, 'fingerprint') ?? process.env.FERRY_FINGERPRINT) ?? (context?.tlsFingerprint && url === context.url ? context.tlsFingerprint : undefined);
  return { url, keyFile, ...(tlsFingerprint ? { tlsFingerprint } : {}) };
}

/** A `--fingerprint` value as lowercase hex; refuses (UsageError) anything that is not a SHA-256. */
export function fingerprintOption(value: string | undefined): string | undefined {
  try {
    return value === undefined ? undefined : normalizeFingerprint(value);
  } catch (error) {
    throw new UsageError(`--fingerprint: ${(error as Error).message}`);
  }
}

/** The fingerprint to pin TLS to on the coordinator's port: a context's, for its own http:// URL (an https:// one is a proxy with a CA certificate). */
export function pinnedFingerprintOf(context: { url: string; tlsFingerprint?: string }): string | undefined {
  return context.tlsFingerprint && new URL(context.url).protocol === 'http:' ? context.tlsFingerprint : undefined;
}

/** The API client for the chosen context, with flags and environment overriding it. */
export function clientFrom(options: OptionValues): CoordinatorHttpClient {
  const context = chosenContext(options);
  const pinnedFingerprint = pinnedFingerprintOf(context);
  return new CoordinatorHttpClient(context.url, loadIdentity(context.keyFile), pinnedFingerprint ? { pinnedFingerprint } : {});
}

/** A data-plane client (QUIC, HTTP fallback) for the chosen context, its certificate pinned. */
export async function dataClientFrom(options: OptionValues, onNotice?: (message: string) => void): Promise<DataClient> {
  const context = chosenContext(options);
  const { url, keyFile, tlsFingerprint } = context;
  // The QUIC library loads only for the commands that move data.
  const { openDataClient } = await import('../protocol/connect.js');
  const opened = await openDataClient(url, loadIdentity(keyFile), {
    httpOnly: options.http === true,
    pinnedTls: pinnedFingerprintOf(context) !== undefined,
    ...(tlsFingerprint ? { tlsFingerprint } : {}),
    ...(onNotice ? { onNotice } : {}),
  });
  return opened.client;
}
