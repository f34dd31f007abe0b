/** What an agent reports about its machine: collected fresh at every report, sent only when changed. */
import { existsSync, readdirSync, readFileSync, statfsSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { jsonBoundsViolation, MAX_FACTS_DEPTH, MAX_FACTS_JSON_LENGTH } from '../protocol/json-bounds.js';
import { FERRY_VERSION } from '../protocol/version.js';
import type { ReportedFacts } from '../protocol/api/fleet.js';

/** The Nix system name of this machine (`x86_64-linux`, `aarch64-linux`, …). */
export function nixSystem(): string {
  const arch = { x64: 'x86_64', arm64: 'aarch64', ia32: 'i686', riscv64: 'riscv64' }[os.arch() as string] ?? os.arch();
  return `${arch}-${os.platform()}`;
}

function osRelease(): string | undefined {
  try {
    const text = readFileSync('/etc/os-release', 'utf8');
    return /^PRETTY_NAME="?([^"\n]*)"?$/m.exec(text)?.[1];
  } catch {
    return undefined;
  }
}

function readTrimmed(file: string): string | undefined {
  try {
    return readFileSync(file, 'utf8').trim() || undefined;
  } catch {
    return undefined;
  }
}

/**
 * Facts: system, hostname, OS, kernel, CPUs, memory, disk (of the state
 * dir's filesystem), machine-id, addresses, agent version, plus every
 * `facts.d/*.json` object merged in (a file that is not a JSON object is
 * reported under `factErrors`, never silently dropped).
 */
export function collectFacts(stateDir: string, factsDir: string, settings: { keepGenerations?: number } = {}): ReportedFacts {
  const addresses = Object.values(os.networkInterfaces())
    .flat()
    .filter((address) => address && !address.internal)
    .map((address) => address!.address)
    .slice(0, 64);
  let diskBytes: number | undefined;
  try {
    const stats = statfsSync(stateDir);
    diskBytes = stats.blocks * stats.bsize;
  } catch {
    diskBytes = undefined;
  }
  const facts: ReportedFacts = {
    system: nixSystem(),
    hostname: os.hostname(),
    os: osRelease(),
    kernel: os.release(),
    cpus: os.cpus().length || 1,
    memoryBytes: os.totalmem(),
    diskBytes,
    machineId: readTrimmed('/etc/machine-id'),
    addresses,
    agentVersion: FERRY_VERSION,
    ...(settings.keepGenerations !== undefined ? { keepGenerations: settings.keepGenerations } : {}),
  };
  const errors: string[] = [];
  if (existsSync(factsDir)) {
    for (const name of readdirSync(factsDir).filter((entry) => entry.endsWith('.json')).sort()) {
      try {
        // The coordinator refuses facts past these bounds: a file past them is reported, not sent.
        const file = path.join(factsDir, name);
        if (statSync(file).size > MAX_FACTS_JSON_LENGTH) throw new Error(`larger than ${MAX_FACTS_JSON_LENGTH} bytes`);
        const extra: unknown = JSON.parse(readFileSync(file, 'utf8'));
        if (extra === null || typeof extra !== 'object' || Array.isArray(extra)) throw new Error('not a JSON object');
        const violation = jsonBoundsViolation(extra, { maxDepth: MAX_FACTS_DEPTH });
        if (violation) throw new Error(violation.message);
        Object.assign(facts, extra);
      } catch (error) {
        errors.push(`${name}: ${(error as Error).message}`);
      }
    }
  }
  if (errors.length > 0) facts.factErrors = errors;
  for (const [key, value] of Object.entries(facts)) if (value === undefined) delete facts[key];
  return facts;
}
