/**
 * A small network built out of Linux network namespaces, for tests that need several "hosts" on
 * one machine: a switch namespace holding a bridge, and four hosts joined to it by veth pairs —
 * a head, two workers and an outsider — on one private /24. Links can be rate-limited with `tbf`
 * to stand in for 10 or 25 Gbit/s Ethernet.
 *
 *          <prefix>-head (.1)   <prefix>-w1 (.2)   <prefix>-w2 (.3)   <prefix>-out (.9)
 *                eth0               eth0               eth0                eth0
 *                 |                  |                  |                   |
 *               vhead               vw1                vw2                vout
 *                 \__________________|__ br0 (<prefix>-sw) ___|___________________/
 *
 * Both ends of every veth pair are created inside namespaces (`ip -n NS link add … peer … netns
 * NS2`): the machine's own (root) namespace never gets an interface, an address, a route, a qdisc
 * or a firewall rule from here. Needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) and iproute2's `ip`
 * and `tc`.
 */
import { spawn, type ChildProcess, type SpawnOptions } from "node:child_process";
import { run, type Result } from "./spawn";

/** The hosts of the topology (the switch namespace is not one: nothing runs there). */
export type Host = "head" | "w1" | "w2" | "out";
export const HOSTS: readonly Host[] = ["head", "w1", "w2", "out"];

/** The last octet of each host's address. */
const HOST_OCTET: Record<Host, number> = { head: 1, w1: 2, w2: 3, out: 9 };

export interface Topology {
  /** Unique per createTopology() call: `kk<pid>n<counter>`; every namespace name starts with it. */
  prefix: string;
  /** The switch namespace (holds the bridge `br0` and the host-facing veth ends `v<host>`). */
  switchNs: string;
  /** Namespace name of each host. */
  ns: Record<Host, string>;
  /** IPv4 address of each host on its `eth0`. */
  addr: Record<Host, string>;
  /** The /24 the addresses are in, e.g. `10.231.17.0/24`. */
  subnet: string;
  /** Runs argv to completion inside a host's namespace (`ip netns exec`); never throws on a non-zero exit. */
  exec(host: Host, argv: readonly string[], input?: string, timeoutMs?: number): Result;
  /** The `ip netns exec NS` prefix to put before a command so that it runs in a host's namespace. */
  prefixFor(host: Host): string[];
  /** Starts argv inside a host's namespace; stdio defaults to ignore/pipe/pipe. */
  spawnIn(host: Host, argv: readonly string[], options?: SpawnOptions): ChildProcess;
  /**
   * True when a TCP connection from `from` to host:port is accepted within timeoutS seconds.
   * A refused connection fails at once; one whose SYN is dropped (a firewall) runs into the timeout.
   */
  canConnect(from: Host, host: string, port: number, timeoutS?: number): boolean;
  /** Limits every link to gbitPerSecond in each direction (replacing an earlier limit). */
  setRate(gbitPerSecond: number): void;
  /** Removes the limits: the links run at veth speed (bounded only by the CPUs). */
  clearRate(): void;
  /** Deletes every namespace this topology made; idempotent. Kill the processes inside first. */
  destroy(): void;
}

let counter = 0;

function must(argv: string[]): string {
  const r = run(argv, undefined, 30_000);
  if (r.status !== 0) throw new Error(`${argv.join(" ")} exited ${r.status}: ${r.stderr}${r.stdout}`);
  return r.stdout;
}

/**
 * Why namespaces cannot be used here (not root, or `ip netns add` refused), or undefined when they
 * can: tests skip with this reason. The probe namespace is deleted again at once.
 */
export function netnsUnavailable(): string | undefined {
  if (process.getuid?.() !== 0) return "needs root to create network namespaces";
  const probe = `kkprobe${process.pid}`;
  try {
    const added = run(["ip", "netns", "add", probe]);
    if (added.status !== 0) return `ip netns add failed: ${added.stderr.trim() || `exit ${added.status}`}`;
  } catch (error) {
    return `ip netns add could not run: ${String(error)}`;
  }
  run(["ip", "netns", "del", probe]);
  return undefined;
}

/** Makes the namespaces (recording each in `made`), the switch's bridge, and one veth link per host. */
function buildNetwork(switchNs: string, ns: Record<Host, string>, addr: Record<Host, string>, made: string[]): void {
  for (const name of [switchNs, ...HOSTS.map((host) => ns[host])]) {
    // A namespace of this name can only be a leftover of a crashed run of a process that had
    // this pid (live processes have distinct pids): it is ours to replace.
    run(["ip", "netns", "del", name]);
    must(["ip", "netns", "add", name]);
    made.push(name);
    must(["ip", "-n", name, "link", "set", "lo", "up"]);
  }
  must(["ip", "-n", switchNs, "link", "add", "br0", "type", "bridge"]);
  must(["ip", "-n", switchNs, "link", "set", "br0", "up"]);
  for (const host of HOSTS) {
    must(["ip", "-n", switchNs, "link", "add", `v${host}`, "type", "veth", "peer", "name", "eth0", "netns", ns[host]]);
    must(["ip", "-n", switchNs, "link", "set", `v${host}`, "master", "br0"]);
    must(["ip", "-n", switchNs, "link", "set", `v${host}`, "up"]);
    must(["ip", "-n", ns[host], "addr", "add", `${addr[host]}/24`, "dev", "eth0"]);
    must(["ip", "-n", ns[host], "link", "set", "eth0", "up"]);
  }
}

/** The tbf qdisc (argv after `root`) that limits a link's egress to gbitPerSecond. */
function tbfQdisc(gbitPerSecond: number): string[] {
  const bytesPerSecond = (gbitPerSecond * 1e9) / 8;
  // burst: how many bytes may leave back to back at veth speed before the token bucket makes
  // them wait. A real NIC never exceeds its line rate, so the bucket is kept small: 100 µs of
  // traffic (125 kB at 10 Gbit/s, 312.5 kB at 25 Gbit/s). That is still larger than the
  // biggest packet a veth hands over (a 64 KiB GSO segment plus headers; tbf would otherwise
  // cut such packets up in software), and it keeps the limiter's hrtimer wake-ups to at most
  // ~10,000 a second on a busy link, which 2 cores afford.
  const burst = Math.max(Math.ceil(bytesPerSecond * 100e-6), 70_000);
  // latency: the longest a packet may wait in the limiter's queue before it is dropped, which
  // sizes the queue (rate × latency + burst): 5 ms holds 6.25 MB at 10 Gbit/s, so a single
  // bulk TCP flow (the weights a head sends its workers at load) is paced by the bucket
  // rather than by drops, while request/response traffic such as the RPC calls during
  // decoding never queues long enough to see it.
  return ["tbf", "rate", `${gbitPerSecond}gbit`, "burst", String(burst), "latency", "5ms"];
}

/** Whether a TCP connection made with `prefix` (a host's `ip netns exec`) to host:port is accepted in time. */
function canConnectFrom(prefix: string[], host: string, port: number, timeoutS: number): boolean {
  // bash's /dev/tcp opens a plain TCP connection; `timeout` bounds a SYN that gets no answer.
  const r = run(
    [...prefix, "timeout", String(timeoutS), "bash", "-c", 'exec 3<>"/dev/tcp/$0/$1"', host, String(port)],
    undefined,
    (timeoutS + 10) * 1000,
  );
  return r.status === 0;
}

/**
 * Builds the topology. On any failure the namespaces made so far are deleted before the error is
 * rethrown, so a half-built topology never stays behind.
 */
export function createTopology(): Topology {
  const prefix = `kk${process.pid}n${++counter}`;
  // The addresses only exist inside this topology's namespaces, which share no link with anything
  // else, so equal subnets in two topologies could not even collide; a third octet that differs
  // per process and call still keeps logs and captures of parallel test files apart.
  const octet = ((process.pid * 7 + counter) % 250) + 1;
  const subnet = `10.231.${octet}.0/24`;
  const switchNs = `${prefix}-sw`;
  const ns = Object.fromEntries(HOSTS.map((host) => [host, `${prefix}-${host}`])) as Record<Host, string>;
  const addr = Object.fromEntries(HOSTS.map((host) => [host, `10.231.${octet}.${HOST_OCTET[host]}`])) as Record<
    Host,
    string
  >;
  const made: string[] = [];
  let limited = false;

  const destroy = (): void => {
    // Deleting a namespace destroys its interfaces, qdiscs and nftables tables with it; a veth
    // pair goes as soon as either end's namespace goes. `ip netns del` only removes the name: a
    // process still running inside keeps the namespace alive until it exits.
    while (made.length > 0) run(["ip", "netns", "del", made.pop()!]);
  };

  // Both ends of each link, as (namespace, device) pairs: the switch-side end and the host's eth0.
  const linkEnds = (): [string, string][] =>
    HOSTS.flatMap((host): [string, string][] => [
      [switchNs, `v${host}`],
      [ns[host], "eth0"],
    ]);

  try {
    buildNetwork(switchNs, ns, addr, made);
  } catch (error) {
    destroy();
    throw error;
  }

  const prefixFor = (host: Host): string[] => ["ip", "netns", "exec", ns[host]];

  return {
    prefix,
    switchNs,
    ns,
    addr,
    subnet,
    prefixFor,
    exec: (host, argv, input, timeoutMs = 60_000) => run([...prefixFor(host), ...argv], input, timeoutMs),
    spawnIn(host, argv, options) {
      // `ip netns exec` enters the namespace and execs the command in place (no extra process),
      // so the ChildProcess's pid, signals and exit status are the command's own.
      return spawn("ip", ["netns", "exec", ns[host], ...argv], { stdio: ["ignore", "pipe", "pipe"], ...options });
    },
    canConnect: (from, host, port, timeoutS = 2) => canConnectFrom(prefixFor(from), host, port, timeoutS),
    setRate(gbitPerSecond) {
      if (!(gbitPerSecond > 0)) throw new Error(`setRate wants a positive rate in Gbit/s, got ${gbitPerSecond}`);
      const tbf = tbfQdisc(gbitPerSecond);
      // Egress of BOTH ends of each veth: the host's eth0 limits what it sends, the switch-side
      // end what it receives. A packet between two hosts so passes two limiters of the same rate
      // in series, which limits it to that rate (plus a little queueing delay).
      for (const [name, dev] of linkEnds()) must(["tc", "-n", name, "qdisc", "replace", "dev", dev, "root", ...tbf]);
      limited = true;
    },
    clearRate() {
      if (!limited) return;
      // Deleting the root qdisc returns the veth to its default (noqueue, unlimited).
      for (const [name, dev] of linkEnds()) run(["tc", "-n", name, "qdisc", "del", "dev", dev, "root"]);
      limited = false;
    },
    destroy,
  };
}
