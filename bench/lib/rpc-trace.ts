/**
 * Where a split's time goes, read from the kernel while it runs: each process's CPU time, time
 * spent runnable but waiting for a core, and times it was switched in (/proc/PID/task/TID/schedstat,
 * summed over threads), and each TCP connection's segment and byte counters (`ss -tin` in the
 * head's namespace). And what a worker serves: ggml-rpc-server logs one line per command under
 * GGML_RPC_DEBUG=1 ("[set_tensor] …", "[graph_recompute] …", "[get_tensor] …").
 */
import { execFileSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import type { Host, Topology } from "../../lab/netns";

export interface SchedCounters {
  cpuSeconds: number;
  runqueueWaitSeconds: number;
  /** Times a thread was put on a core: each is a wake-up (or a preemption) of one of its threads. */
  switches: number;
}

const ZERO: SchedCounters = { cpuSeconds: 0, runqueueWaitSeconds: 0, switches: 0 };

/** The processes in a host's namespace whose command line contains `match` (every one when omitted). */
export function pidsIn(topology: Topology, host: Host, match?: string): number[] {
  const listed = execFileSync("ip", ["netns", "pids", topology.ns[host]])
    .toString()
    .split(/\s+/)
    .filter(Boolean)
    .map(Number);
  return listed.filter((pid) => {
    if (match === undefined) return true;
    try {
      return readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").includes(match);
    } catch {
      return false; // it exited between the listing and the read
    }
  });
}

/**
 * schedstat summed over every thread of `pids` (threads that exited since are not counted, on either side of a
 * difference).
 */
export function schedCounters(pids: readonly number[]): SchedCounters {
  const total = { ...ZERO };
  for (const pid of pids) {
    let threads: string[];
    try {
      threads = readdirSync(`/proc/${pid}/task`);
    } catch {
      continue;
    }
    for (const tid of threads) {
      try {
        const [cpu, wait, slices] = readFileSync(`/proc/${pid}/task/${tid}/schedstat`, "utf8")
          .trim()
          .split(/\s+/)
          .map(Number);
        total.cpuSeconds += cpu! / 1e9;
        total.runqueueWaitSeconds += wait! / 1e9;
        total.switches += slices!;
      } catch {
        // the thread exited between the listing and the read
      }
    }
  }
  return total;
}

export function subtractSched(after: SchedCounters, before: SchedCounters): SchedCounters {
  return {
    cpuSeconds: after.cpuSeconds - before.cpuSeconds,
    runqueueWaitSeconds: after.runqueueWaitSeconds - before.runqueueWaitSeconds,
    switches: after.switches - before.switches,
  };
}

export interface TcpCounters {
  /** Segments sent and received, data or not (ACKs included). */
  segsOut: number;
  segsIn: number;
  /** Segments that carried payload. */
  dataSegsOut: number;
  dataSegsIn: number;
  bytesSent: number;
  bytesReceived: number;
}

/** `ss -tin` counters summed over the established connections from `host`'s namespace to `peer` (ADDRESS:PORT). */
export function tcpCounters(topology: Topology, host: Host, peer: string): TcpCounters {
  const listed = topology.exec(host, ["ss", "-tinH", "state", "established"]);
  if (listed.status !== 0) throw new Error(`ss -tin in ${host} exited ${listed.status}: ${listed.stderr}`);
  const total: TcpCounters = { segsOut: 0, segsIn: 0, dataSegsOut: 0, dataSegsIn: 0, bytesSent: 0, bytesReceived: 0 };
  // ss prints each socket as an address line followed by an indented line of its tcp_info fields.
  const lines = listed.stdout.split("\n");
  for (let index = 0; index < lines.length; index++) {
    const fields = lines[index]!.trim().split(/\s+/);
    if (!fields.includes(peer)) continue;
    const info = lines[index + 1] ?? "";
    const field = (name: string) => Number(new RegExp(`\\b${name}:(\\d+)`).exec(info)?.[1] ?? 0);
    total.segsOut += field("segs_out");
    total.segsIn += field("segs_in");
    total.dataSegsOut += field("data_segs_out");
    total.dataSegsIn += field("data_segs_in");
    total.bytesSent += field("bytes_sent");
    total.bytesReceived += field("bytes_received");
  }
  return total;
}

export function subtractTcp(after: TcpCounters, before: TcpCounters): TcpCounters {
  return {
    segsOut: after.segsOut - before.segsOut,
    segsIn: after.segsIn - before.segsIn,
    dataSegsOut: after.dataSegsOut - before.dataSegsOut,
    dataSegsIn: after.dataSegsIn - before.dataSegsIn,
    bytesSent: after.bytesSent - before.bytesSent,
    bytesReceived: after.bytesReceived - before.bytesReceived,
  };
}

export function scaleTcp(counters: TcpCounters, factor: number): TcpCounters {
  return {
    segsOut: counters.segsOut * factor,
    segsIn: counters.segsIn * factor,
    dataSegsOut: counters.dataSegsOut * factor,
    dataSegsIn: counters.dataSegsIn * factor,
    bytesSent: counters.bytesSent * factor,
    bytesReceived: counters.bytesReceived * factor,
  };
}

/** Commands a ggml-rpc-server served, by name, from its GGML_RPC_DEBUG=1 output (one "[name] …" line each). */
export function countRpcCommands(log: string): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const match of log.matchAll(/^\[(\w+)\]/gm)) counts[match[1]!] = (counts[match[1]!] ?? 0) + 1;
  return counts;
}

/** The bytes each command carried, by name, from the same output ("size: N" on set_tensor and get_tensor lines). */
export function rpcPayloadBytes(log: string): Record<string, number> {
  const bytes: Record<string, number> = {};
  for (const match of log.matchAll(/^\[(\w+)\][^\n]*\bsize: (\d+)/gm))
    bytes[match[1]!] = (bytes[match[1]!] ?? 0) + Number(match[2]);
  return bytes;
}

export interface SystemCpu {
  /** CPU seconds all cores spent busy (user, nice, system, irq, softirq). */
  busySeconds: number;
  /** CPU seconds the hypervisor ran something else while a core of this VM wanted to run. */
  stealSeconds: number;
}

let clockTicks: number | undefined;

/** The whole machine's CPU counters (/proc/stat's first line, in clock ticks). */
export function systemCpu(): SystemCpu {
  clockTicks ??= Number(execFileSync("getconf", ["CLK_TCK"]).toString().trim());
  const [user, nice, system, , , irq, softirq, steal] = readFileSync("/proc/stat", "utf8")
    .split("\n")[0]!
    .trim()
    .split(/\s+/)
    .slice(1)
    .map(Number);
  return { busySeconds: (user! + nice! + system! + irq! + softirq!) / clockTicks, stealSeconds: steal! / clockTicks };
}
