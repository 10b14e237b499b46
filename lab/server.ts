/**
 * Runs the real llama-server for the benchmarks: starts it with the given arguments and -lv 4,
 * reads the buffer sizes it logs (the ground truth for memory prediction), times completions
 * through its HTTP API, and stops it. It can run inside a network namespace (ServerPlacement).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { request as httpRequestRaw } from "node:http";
import { freePort } from "./net";
import { llamaServerPath } from "./llama-cpp";

export interface LoggedBuffers {
  /** `load_tensors: <BUF> model buffer size = X MiB`, summed per buffer name (CPU, CPU_Mapped, CPU_REPACK, CUDA0…). */
  model: Record<string, number>;
  /** `llama_kv_cache: <BUF> KV buffer size`. */
  kv: Record<string, number>;
  /** `sched_reserve: <BUF> compute buffer size`. */
  compute: Record<string, number>;
  /** `llama_context: <BUF> output buffer size`. */
  output: Record<string, number>;
  /**
   * `llama_memory_recurrent: <BUF> RS buffer size` (hybrid models' recurrent state) and `llama_dsv4_comp_state: <BUF>
   * DSV4 … state buffer size` (deepseek4's compressor states).
   */
  recurrent: Record<string, number>;
}

const MiB = 1024 * 1024;

export function parseBuffers(log: string): LoggedBuffers {
  const buffers: LoggedBuffers = { model: {}, kv: {}, compute: {}, output: {}, recurrent: {} };
  const add = (record: Record<string, number>, name: string, mib: string) =>
    (record[name] = (record[name] ?? 0) + Number(mib) * MiB);
  for (const match of log.matchAll(/load_tensors:\s+(\S+) model buffer size =\s+([\d.]+) MiB/g))
    add(buffers.model, match[1]!, match[2]!);
  for (const match of log.matchAll(/llama_kv_cache:\s+(\S+) KV buffer size =\s+([\d.]+) MiB/g))
    add(buffers.kv, match[1]!, match[2]!);
  for (const match of log.matchAll(/sched_reserve:\s+(\S+) compute buffer size =\s+([\d.]+) MiB/g))
    add(buffers.compute, match[1]!, match[2]!);
  for (const match of log.matchAll(/llama_context:\s+(\S+)\s+output buffer size =\s+([\d.]+) MiB/g))
    add(buffers.output, match[1]!, match[2]!);
  for (const match of log.matchAll(/llama_memory_recurrent:\s+(\S+) RS buffer size =\s+([\d.]+) MiB/g))
    add(buffers.recurrent, match[1]!, match[2]!);
  for (const match of log.matchAll(/llama_dsv4_comp_state:\s+(\S+) DSV4 \w+ state buffer size =\s+([\d.]+) MiB/g))
    add(buffers.recurrent, match[1]!, match[2]!);
  return buffers;
}

export interface RunningServer {
  /** The TCP port it listens on (passed, but unused, when it listens on a Unix socket). */
  port: number;
  log(): string;
  complete(body: Record<string, unknown>): Promise<{
    timings: { prompt_n: number; prompt_per_second: number; predicted_n: number; predicted_per_second: number };
  }>;
  /**
   * Settles once the process has exited, however (its own exit, a signal, stop()), and its output is read to the end.
   */
  exited: Promise<ServerExit>;
  stop(): Promise<void>;
}

export interface ServerExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** startServer's error when llama-server exits before it is healthy: the whole log and how the process ended. */
export class ServerStartError extends Error {
  constructor(
    message: string,
    readonly log: string,
    readonly exit: ServerExit,
  ) {
    super(message);
    this.name = "ServerStartError";
  }
}

export interface ServerPlacement {
  /**
   * Argv put before llama-server's, e.g. `["ip", "netns", "exec", "kk1-head"]` to run it inside a
   * network namespace. It must exec llama-server in place (as `ip netns exec` does), so that the
   * child's pid, signals and exit status are llama-server's own.
   */
  command?: readonly string[];
  /**
   * Where llama-server listens and where requests go (default 127.0.0.1, as before): an IPv4
   * address, or a path ending in `.sock` for a Unix socket. A server inside another network
   * namespace is only reachable from here through a socket path: a filesystem socket belongs to
   * no network namespace, while its TCP addresses exist only in its own.
   */
  host?: string;
}

/**
 * One HTTP exchange with the server, over TCP or its Unix socket (which fetch cannot reach); the body is read whole.
 */
function httpRequest(
  target: { host: string; port: number } | { socketPath: string },
  method: "GET" | "POST",
  path: string,
  body?: string,
): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const request = httpRequestRaw(
      {
        ...target,
        method,
        path,
        headers:
          body === undefined ? {} : { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(body) },
      },
      (response) => {
        let text = "";
        response.setEncoding("utf8");
        response.on("data", (chunk: string) => (text += chunk));
        response.on("end", () => resolve({ status: response.statusCode ?? 0, text }));
        response.on("error", reject);
      },
    );
    request.on("error", reject);
    request.end(body);
  });
}

/** What waitUntilHealthy watches: the starting child, where it should listen, and its log so far. */
interface StartingServer {
  child: ChildProcess;
  target: { host: string; port: number } | { socketPath: string };
  /** The log line that shows our child (not another process) listens at the target. */
  listening: string;
  timeoutMs: number;
  log(): string;
  exited: Promise<ServerExit>;
  hasExited(): boolean;
}

/** Polls /health until the child answers 200; throws if it exits first or the timeout passes (killing it). */
async function waitUntilHealthy(server: StartingServer): Promise<void> {
  const { child, target, listening, timeoutMs, exited, hasExited } = server;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (hasExited()) {
      const exit = await exited;
      const log = server.log();
      throw new ServerStartError(
        `llama-server exited (${exit.code ?? exit.signal}) before it was healthy:\n${log.slice(-3000)}`,
        log,
        exit,
      );
    }
    try {
      const response = await httpRequest(target, "GET", "/health");
      // Healthy, and it is our child that listens there (not another process that took the free port first).
      if (response.status === 200 && server.log().includes(listening)) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`llama-server not healthy after ${timeoutMs} ms:\n${server.log().slice(-3000)}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

export async function startServer(
  model: string,
  args: readonly string[],
  timeoutMs = 300_000,
  placement: ServerPlacement = {},
): Promise<RunningServer> {
  const port = await freePort();
  const host = placement.host ?? "127.0.0.1";
  const viaSocket = host.endsWith(".sock");
  const target = viaSocket ? { socketPath: host } : { host, port };
  // llama-server logs `listening on unix://PATH` for a socket, `listening on http://HOST:PORT` otherwise.
  const listening = viaSocket ? `listening on unix://${host}` : `listening on http://${host}:${port}`;
  const [program, ...prefix] = [...(placement.command ?? []), llamaServerPath()];
  const child: ChildProcess = spawn(
    program!,
    [...prefix, "-m", model, "--host", host, "--port", String(port), "-lv", "4", ...args],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  let log = "";
  child.stdout?.on("data", (chunk: Buffer) => (log += chunk.toString()));
  child.stderr?.on("data", (chunk: Buffer) => (log += chunk.toString()));
  // 'close', not 'exit': it comes once stdout and stderr are read to their end, so log() is whole.
  const exited = new Promise<ServerExit>((resolve) =>
    child.once("close", (code: number | null, signal: NodeJS.Signals | null) => resolve({ code, signal })),
  );
  // A process killed by a signal (an abort, say) has exitCode null and signalCode set.
  const hasExited = () => child.exitCode !== null || child.signalCode !== null;
  await waitUntilHealthy({ child, target, listening, timeoutMs, log: () => log, exited, hasExited });
  return {
    port,
    log: () => log,
    exited,
    async complete(body) {
      const response = await httpRequest(target, "POST", "/completion", JSON.stringify(body));
      if (response.status !== 200) throw new Error(`completion failed: HTTP ${response.status} ${response.text}`);
      return JSON.parse(response.text) as Awaited<ReturnType<RunningServer["complete"]>>;
    },
    async stop() {
      if (hasExited()) return;
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
      await exited;
      clearTimeout(timer);
    },
  };
}
