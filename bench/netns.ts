/**
 * Two network namespaces joined by one veth pair, for shaped-link benches
 * (DESIGN.md §9, §10): a coordinator side and an agent side, each with its
 * loopback up and one end of the pair on a private /24, and nothing else. No
 * interface, address or route is ever added to the namespace this process
 * runs in: the veth ends are created directly inside their namespaces.
 *
 * Shaping: `tc … tbf` as the root qdisc on the egress of BOTH veth ends, so
 * each direction is limited on its sending side (coordinator → agent on the
 * coordinator's end, agent → coordinator on the agent's end). This kernel has
 * tbf and htb but no netem: links get a rate and a bounded queue, not delay.
 *
 * Bytes on the wire are what the kernel counted at the agent's veth end
 * (`ip -s -j link show`, stats64): Ethernet frames as they crossed the link,
 * headers and retransmissions included, nothing self-reported.
 *
 * Lifetime: `remove()` kills what still runs inside the two namespaces (only
 * processes this bench started live there) and deletes them, which destroys
 * the veth pair. It runs from a `finally`, on SIGINT/SIGTERM and at exit;
 * `removeLeftovers()` removes, at most a bounded number of, namespaces named
 * with this prefix whose owning process (the pid in the name) is gone.
 */
import { execFileSync, spawnSync } from 'node:child_process';

export const NETNS_PREFIX = 'ferry-bench-';

/** A link setting: unshaped (the bare veth), or a rate in Mbit/s. */
export type LinkShape = { name: string; mbit: number | null };

export interface WireBytes {
  /** Bytes received by the agent's end: coordinator → agent. */
  down: number;
  /** Bytes sent by the agent's end: agent → coordinator. */
  up: number;
  downPackets: number;
  upPackets: number;
}

export interface NamespacePair {
  coordinatorNs: string;
  agentNs: string;
  coordinatorIf: string;
  agentIf: string;
  coordinatorAddress: string;
  agentAddress: string;
  /** argv that runs `command args` inside a namespace (`ip netns exec`, which execs: the pid is the command's). */
  execArgs(ns: string, command: string, args: string[]): [string, string[]];
  /** Sets both ends to `shape` (replacing what was there). */
  shape(shape: LinkShape): void;
  /** The qdiscs of both ends, as `tc` prints them (for the record). */
  describe(): string;
  /** Counters of the agent's veth end. */
  wireBytes(): WireBytes;
  /** Idempotent; synchronous so that it can run from an exit handler. */
  remove(): void;
}

const run = (command: string, args: string[]): string => execFileSync(command, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

/** Why namespaces cannot be made here, or undefined when they can. */
export function netnsUnavailableReason(): string | undefined {
  if (process.platform !== 'linux') return 'network namespaces are Linux only';
  if (process.getuid?.() !== 0) return 'creating network namespaces and veth pairs needs root';
  for (const tool of ['ip', 'tc']) {
    if (spawnSync(tool, ['-V'], { stdio: 'ignore' }).error) return `\`${tool}\` not found (apt-get install iproute2)`;
  }
  const probe = `${NETNS_PREFIX}probe-${process.pid}`;
  const added = spawnSync('ip', ['netns', 'add', probe], { encoding: 'utf8' });
  if (added.status !== 0) return `\`ip netns add\` failed: ${added.stderr.trim()}`;
  // The kernel's tbf, tried on the probe namespace's own loopback.
  const tbf = spawnSync('tc', ['-n', probe, 'qdisc', 'add', 'dev', 'lo', 'root', 'tbf', ...tbfParameters(1)], { encoding: 'utf8' });
  spawnSync('ip', ['netns', 'delete', probe], { stdio: 'ignore' });
  if (tbf.status !== 0) return `\`tc qdisc add … tbf\` failed: ${tbf.stderr.trim()}`;
  return undefined;
}

function namespaces(): string[] {
  const out = spawnSync('ip', ['-j', 'netns', 'list'], { encoding: 'utf8' }).stdout.trim();
  if (!out) return [];
  return (JSON.parse(out) as { name: string }[]).map((entry) => entry.name);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Kills what runs in `ns` (by pid, as `ip netns pids` lists them) and deletes it. */
function removeNamespace(ns: string): void {
  for (let attempt = 0; attempt < 20; attempt++) {
    const pids = spawnSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' }).stdout.split('\n').filter(Boolean).map(Number);
    if (pids.length === 0) break;
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    spawnSync('sleep', ['0.05']);
  }
  spawnSync('ip', ['netns', 'delete', ns], { stdio: 'ignore' });
}

/**
 * Removes namespaces a previous run of this bench left behind (killed with
 * SIGKILL, say): only names `ferry-bench-(coord|agent)-<pid>` whose pid is no
 * longer running, at most `limit` of them. Returns the names removed.
 */
export function removeLeftovers(limit = 16): string[] {
  const removed: string[] = [];
  for (const ns of namespaces()) {
    if (removed.length >= limit) break;
    const match = new RegExp(`^${NETNS_PREFIX}(coord|agent)-(\\d+)$`).exec(ns);
    if (!match || alive(Number(match[2]))) continue;
    removeNamespace(ns);
    removed.push(ns);
  }
  return removed;
}

/**
 * tbf parameters for `mbit` Mbit/s:
 * - burst = 4 ms worth of tokens, at least 16 KiB: enough for a full-size
 *   frame and for the qdisc watchdog's timer granularity (1 ms at HZ=1000,
 *   4 ms at HZ=250) to sustain the rate, small enough that the link never
 *   runs at veth speed for more than that (50 KB at 100 Mbit/s, 16 KiB at 20);
 * - latency 50 ms: the queue holds at most 50 ms of traffic at the rate
 *   (625 KB at 100 Mbit/s, 125 KB at 20), then drops, like a modem's buffer;
 *   TCP and QUIC see drops as congestion and back off, as on a real uplink;
 * - GSO super-packets larger than the burst are segmented by tbf itself.
 */
export function tbfParameters(mbit: number): string[] {
  const bytesPerSecond = (mbit * 1e6) / 8;
  const burst = Math.max(16 * 1024, Math.round(bytesPerSecond * 0.004));
  return ['rate', `${mbit}mbit`, 'burst', String(burst), 'latency', '50ms'];
}

const pairs = new Set<NamespacePair>();
let handlersInstalled = false;
function installHandlers(): void {
  if (handlersInstalled) return;
  handlersInstalled = true;
  const removeAll = () => {
    for (const pair of pairs) pair.remove();
  };
  process.on('exit', removeAll);
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      process.stderr.write(`${signal}: removing the bench's network namespaces\n`);
      removeAll();
      process.exit(signal === 'SIGINT' ? 130 : 143);
    });
  }
}

/**
 * Creates the two namespaces and the veth pair, unshaped. Names carry this
 * process's pid (a later run's `removeLeftovers` recognises them); addresses
 * are 10.231.<n>.1 (coordinator) and .2 (agent) on a /24 that exists only
 * inside the two namespaces.
 */
export function createNamespacePair(): NamespacePair {
  installHandlers();
  const pid = process.pid;
  const coordinatorNs = `${NETNS_PREFIX}coord-${pid}`;
  const agentNs = `${NETNS_PREFIX}agent-${pid}`;
  // Interface names: at most 15 bytes.
  const coordinatorIf = `fbc${pid}`.slice(0, 15);
  const agentIf = `fba${pid}`.slice(0, 15);
  const subnet = `10.231.${(pid % 250) + 1}`;
  const coordinatorAddress = `${subnet}.1`;
  const agentAddress = `${subnet}.2`;
  let removed = false;
  const pair: NamespacePair = {
    coordinatorNs,
    agentNs,
    coordinatorIf,
    agentIf,
    coordinatorAddress,
    agentAddress,
    execArgs: (ns, command, args) => ['ip', ['netns', 'exec', ns, command, ...args]],
    shape(shape) {
      for (const [ns, dev] of [
        [coordinatorNs, coordinatorIf],
        [agentNs, agentIf],
      ] as const) {
        if (shape.mbit === null) spawnSync('tc', ['-n', ns, 'qdisc', 'del', 'dev', dev, 'root'], { stdio: 'ignore' });
        else run('tc', ['-n', ns, 'qdisc', 'replace', 'dev', dev, 'root', 'tbf', ...tbfParameters(shape.mbit)]);
      }
    },
    describe() {
      return [
        [coordinatorNs, coordinatorIf],
        [agentNs, agentIf],
      ]
        .map(([ns, dev]) => `${dev}: ${run('tc', ['-n', ns!, 'qdisc', 'show', 'dev', dev!]).trim()}`)
        .join('; ');
    },
    wireBytes() {
      const [link] = JSON.parse(run('ip', ['-n', agentNs, '-s', '-j', 'link', 'show', 'dev', agentIf])) as {
        stats64: { rx: { bytes: number; packets: number }; tx: { bytes: number; packets: number } };
      }[];
      const stats = link!.stats64;
      return { down: stats.rx.bytes, up: stats.tx.bytes, downPackets: stats.rx.packets, upPackets: stats.tx.packets };
    },
    remove() {
      if (removed) return;
      removed = true;
      pairs.delete(pair);
      removeNamespace(agentNs);
      removeNamespace(coordinatorNs);
    },
  };
  pairs.add(pair);
  try {
    run('ip', ['netns', 'add', coordinatorNs]);
    run('ip', ['netns', 'add', agentNs]);
    // Both ends are born inside their namespaces: nothing appears in this one.
    run('ip', ['link', 'add', 'name', coordinatorIf, 'netns', coordinatorNs, 'type', 'veth', 'peer', 'name', agentIf, 'netns', agentNs]);
    for (const [ns, dev, address] of [
      [coordinatorNs, coordinatorIf, coordinatorAddress],
      [agentNs, agentIf, agentAddress],
    ] as const) {
      run('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
      run('ip', ['-n', ns, 'addr', 'add', `${address}/24`, 'dev', dev]);
      run('ip', ['-n', ns, 'link', 'set', dev, 'up']);
    }
  } catch (error) {
    pair.remove();
    throw error;
  }
  return pair;
}
