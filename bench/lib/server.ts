/**
 * Runs the real llama-server for the benchmarks: starts it with the given arguments and -lv 4,
 * reads the buffer sizes it logs (the ground truth for memory prediction), times completions
 * through its HTTP API, and stops it.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { freePort } from "../../test/support/net";
import { llamaServerPath } from "../../test/support/llama-cpp";

export interface LoggedBuffers {
  /** `load_tensors: <BUF> model buffer size = X MiB`, summed per buffer name (CPU, CPU_Mapped, CPU_REPACK, CUDA0…). */
  model: Record<string, number>;
  /** `llama_kv_cache: <BUF> KV buffer size`. */
  kv: Record<string, number>;
  /** `sched_reserve: <BUF> compute buffer size`. */
  compute: Record<string, number>;
  /** `llama_context: <BUF> output buffer size`. */
  output: Record<string, number>;
  /** `llama_memory_recurrent: <BUF> RS buffer size` (hybrid models' recurrent state) and `llama_dsv4_comp_state: <BUF> DSV4 … state buffer size` (deepseek4's compressor states). */
  recurrent: Record<string, number>;
}

const MiB = 1024 * 1024;

export function parseBuffers(log: string): LoggedBuffers {
  const buffers: LoggedBuffers = { model: {}, kv: {}, compute: {}, output: {}, recurrent: {} };
  const add = (record: Record<string, number>, name: string, mib: string) => (record[name] = (record[name] ?? 0) + Number(mib) * MiB);
  for (const match of log.matchAll(/load_tensors:\s+(\S+) model buffer size =\s+([\d.]+) MiB/g)) add(buffers.model, match[1]!, match[2]!);
  for (const match of log.matchAll(/llama_kv_cache:\s+(\S+) KV buffer size =\s+([\d.]+) MiB/g)) add(buffers.kv, match[1]!, match[2]!);
  for (const match of log.matchAll(/sched_reserve:\s+(\S+) compute buffer size =\s+([\d.]+) MiB/g)) add(buffers.compute, match[1]!, match[2]!);
  for (const match of log.matchAll(/llama_context:\s+(\S+)\s+output buffer size =\s+([\d.]+) MiB/g)) add(buffers.output, match[1]!, match[2]!);
  for (const match of log.matchAll(/llama_memory_recurrent:\s+(\S+) RS buffer size =\s+([\d.]+) MiB/g)) add(buffers.recurrent, match[1]!, match[2]!);
  for (const match of log.matchAll(/llama_dsv4_comp_state:\s+(\S+) DSV4 \w+ state buffer size =\s+([\d.]+) MiB/g)) add(buffers.recurrent, match[1]!, match[2]!);
  return buffers;
}

export interface RunningServer {
  port: number;
  log(): string;
  complete(body: Record<string, unknown>): Promise<{ timings: { prompt_n: number; prompt_per_second: number; predicted_n: number; predicted_per_second: number } }>;
  stop(): Promise<void>;
}

export async function startServer(model: string, args: readonly string[], timeoutMs = 300_000): Promise<RunningServer> {
  const port = await freePort();
  const child: ChildProcess = spawn(llamaServerPath(), ["-m", model, "--host", "127.0.0.1", "--port", String(port), "-lv", "4", ...args], { stdio: ["ignore", "pipe", "pipe"] });
  let log = "";
  child.stdout?.on("data", (chunk: Buffer) => (log += chunk.toString()));
  child.stderr?.on("data", (chunk: Buffer) => (log += chunk.toString()));
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`llama-server exited (${child.exitCode}) before it was healthy:\n${log.slice(-3000)}`);
    try {
      const response = await fetch(`http://127.0.0.1:${port}/health`);
      // Healthy, and it is our child that listens there (not another process that took the free port first).
      if (response.status === 200 && log.includes(`listening on http://127.0.0.1:${port}`)) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`llama-server not healthy after ${timeoutMs} ms:\n${log.slice(-3000)}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  return {
    port,
    log: () => log,
    async complete(body) {
      const response = await fetch(`http://127.0.0.1:${port}/completion`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
      if (response.status !== 200) throw new Error(`completion failed: HTTP ${response.status} ${await response.text()}`);
      return (await response.json()) as Awaited<ReturnType<RunningServer["complete"]>>;
    },
    async stop() {
      if (child.exitCode !== null) return;
      const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
      await exited;
      clearTimeout(timer);
    },
  };
}
