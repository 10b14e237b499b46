/**
 * What the link between two namespaces of a test topology (lab/netns.ts) does, measured
 * the way llama.cpp's RPC uses it: a TCP connection with Nagle off. The round trip is a 1-byte
 * request answered by a 1-byte reply, each side blocked in a read in between (as the head is while
 * a worker computes): it includes both processes' wake-ups, which an ICMP ping does not (and this
 * machine has no ping). The throughput is one bulk TCP stream, the way the head ships weights.
 * Both ends are small Node programs run with this process's own node, so nothing is installed.
 */
import type { ChildProcess } from "node:child_process";
import type { Host, Topology } from "../../lab/netns";
import { median } from "./calibrate";

/**
 * The far end. `echo`: every chunk is written back. `sink N`: reads N bytes, then writes one byte.
 * It prints "ready" once listening, which is what the caller waits for.
 */
const SERVER = `
const net = require("node:net");
const [host, port, mode, total] = process.argv.slice(1);
const server = net.createServer({ noDelay: true }, (socket) => {
  socket.setNoDelay(true);
  if (mode === "echo") { socket.on("data", (chunk) => socket.write(chunk)); return; }
  let received = 0;
  socket.on("data", (chunk) => { received += chunk.length; if (received >= Number(total)) socket.write(Buffer.alloc(1)); });
});
server.listen(Number(port), host, () => console.log("ready"));
`;

/**
 * `ping COUNT WARMUP`: one byte there and back, COUNT times after WARMUP; prints the round trips in µs as JSON. `bulk
 * N`: sends N bytes, waits for the reply byte; prints the seconds.
 */
const CLIENT = `
const net = require("node:net");
const [host, port, mode, a, b] = process.argv.slice(1);
const socket = net.connect({ host, port: Number(port), noDelay: true }, () => {
  socket.setNoDelay(true);
  if (mode === "ping") {
    const count = Number(a), warmup = Number(b), rtts = [];
    let sent = 0n, done = 0;
    const send = () => { sent = process.hrtime.bigint(); socket.write(Buffer.alloc(1)); };
    socket.on("data", () => {
      if (done++ >= warmup) rtts.push(Number(process.hrtime.bigint() - sent) / 1e3);
      if (rtts.length < count) send(); else { console.log(JSON.stringify(rtts)); socket.end(); }
    });
    send();
  } else {
    const total = Number(a), chunk = Buffer.alloc(1 << 20);
    const started = process.hrtime.bigint();
    socket.once("data", () => { console.log(String(Number(process.hrtime.bigint() - started) / 1e9)); socket.end(); });
    let left = total;
    const pump = () => { while (left > 0) { const piece = left >= chunk.length ? chunk : chunk.subarray(0, left); left -= piece.length; if (!socket.write(piece)) { socket.once("drain", pump); return; } } };
    pump();
  }
});
`;

export interface RoundTrip {
  /** Median over the samples, µs. */
  medianMicroseconds: number;
  p10Microseconds: number;
  p90Microseconds: number;
  samples: number;
}

/** Starts a SERVER in `host`'s namespace and resolves once it listens (its "ready" line). */
async function startServer(topology: Topology, host: Host, port: number, mode: string[]): Promise<ChildProcess> {
  const child = topology.spawnIn(host, [process.execPath, "-e", SERVER, topology.addr[host], String(port), ...mode]);
  await new Promise<void>((resolve, reject) => {
    let out = "";
    let err = "";
    child.stderr?.on("data", (chunk: Buffer) => (err += chunk.toString()));
    child.stdout?.on("data", (chunk: Buffer) => {
      out += chunk.toString();
      if (out.includes("ready")) resolve();
    });
    child.once("close", (code) =>
      reject(new Error(`link probe server in ${host} exited (${code}) before listening: ${err}`)),
    );
  });
  return child;
}

async function stopServer(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const closed = new Promise((resolve) => child.once("close", resolve));
  child.kill("SIGKILL");
  await closed;
}

function runClient(topology: Topology, from: Host, to: Host, port: number, args: string[], timeoutMs: number): string {
  const result = topology.exec(
    from,
    [process.execPath, "-e", CLIENT, topology.addr[to], String(port), ...args],
    undefined,
    timeoutMs,
  );
  if (result.status !== 0)
    throw new Error(`link probe client ${from} → ${to} exited ${result.status}: ${result.stderr}`);
  return result.stdout.trim();
}

/**
 * The TCP round trip from `from` to `to`: `count` one-byte exchanges on one connection, after `warmup` unmeasured ones.
 */
export async function measureRoundTrip(
  topology: Topology,
  from: Host,
  to: Host,
  port: number,
  count = 400,
  warmup = 50,
): Promise<RoundTrip> {
  const server = await startServer(topology, to, port, ["echo"]);
  try {
    const rtts = (
      JSON.parse(runClient(topology, from, to, port, ["ping", String(count), String(warmup)], 60_000)) as number[]
    ).sort((a, b) => a - b);
    return {
      medianMicroseconds: median(rtts),
      p10Microseconds: rtts[Math.floor(rtts.length / 10)]!,
      p90Microseconds: rtts[Math.floor(rtts.length * 0.9)]!,
      samples: rtts.length,
    };
  } finally {
    await stopServer(server);
  }
}

/** One bulk TCP stream of `bytes` from `from` to `to`, in Gbit/s (the median of `runs`). */
export async function measureThroughputGbit(
  topology: Topology,
  from: Host,
  to: Host,
  port: number,
  bytes = 256 * 1024 * 1024,
  runs = 3,
): Promise<number> {
  const server = await startServer(topology, to, port, ["sink", String(bytes)]);
  try {
    const rates: number[] = [];
    for (let run = 0; run < runs; run++)
      rates.push((bytes * 8) / 1e9 / Number(runClient(topology, from, to, port, ["bulk", String(bytes)], 120_000)));
    return median(rates);
  } finally {
    await stopServer(server);
  }
}
