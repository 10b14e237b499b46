/**
 * llama.cpp RPC across "hosts" on one machine: two ggml-rpc-server workers and a head llama-server,
 * each in its own network namespace of a test topology (./netns.ts), the workers behind the kit's
 * firewall (ansible-free-scripts/firewall.sh, table `kimi_kit_rpc`: only the head may reach the
 * RPC port). Plus the measuring used on it: llama-server's own timings for a fixed token prompt.
 *
 * The head listens on a Unix socket: this process stays in the machine's own network namespace,
 * where the head's TCP address does not exist, while a filesystem socket is reachable from any.
 * Its RPC traffic to the workers still crosses the veth links and the bridge.
 */
import { type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { request } from "node:http";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { startServer, type RunningServer, type ServerExit } from "./server";
import { llamaTool } from "./llama-cpp";
import { createTopology, type Host, type Topology } from "./netns";

const FIREWALL = resolve(__dirname, "../ansible-free-scripts/firewall.sh");
/** The kit's table for the RPC port, kept apart from the front door's `kimi_kit`. */
export const RPC_FIREWALL_TABLE = "kimi_kit_rpc";

export type WorkerHost = Extract<Host, "w1" | "w2">;

export interface RpcWorker {
  host: WorkerHost;
  /** `ADDRESS:PORT`, as the head's --rpc takes it and as llama.cpp names the device (`RPC0[ADDRESS:PORT]`). */
  endpoint: string;
  /** What ggml-rpc-server printed (stdout and stderr interleaved), since its latest start. */
  log(): string;
  /** The latest process's exit, however it came, once its output is read to the end. */
  exited(): Promise<ServerExit>;
  alive(): boolean;
  kill(signal?: NodeJS.Signals): void;
}

export interface HeadServer extends RunningServer {
  socketPath: string;
}

export interface RpcCluster {
  topology: Topology;
  workers: RpcWorker[];
  port: number;
  /** What `firewall.sh apply` printed in each worker's namespace. */
  firewallOutput: Record<WorkerHost, string>;
  /**
   * Starts a llama-server in the head namespace with `args`, plus `--rpc` naming every worker
   * unless `rpc` is false (the single-host baseline, same namespace, same flags otherwise).
   */
  startHead(
    model: string,
    args: readonly string[],
    options?: { rpc?: boolean; timeoutMs?: number },
  ): Promise<HeadServer>;
  /** Starts a worker again after it died or was killed, and waits until it accepts connections. */
  restartWorker(host: WorkerHost): Promise<void>;
  /** Stops every head and worker, deletes the namespaces (their nftables tables go with them) and the socket folder. */
  stop(): Promise<void>;
}

export interface RpcClusterOptions {
  /**
   * The workers' RPC port (each worker is alone in its namespace, so one port serves all): default 50052,
   * ggml-rpc-server's own.
   */
  port?: number;
  /** ggml-rpc-server -t: default 1. */
  threads?: number;
  /** Apply the kit's firewall in each worker namespace (default true). */
  firewall?: boolean;
  /** How long a worker may take to accept connections: default 30 s. */
  startTimeoutMs?: number;
  /** Extra environment for every ggml-rpc-server, e.g. GGML_RPC_DEBUG=1 to log each command it serves. */
  workerEnv?: Record<string, string>;
}

interface WorkerState {
  child: ChildProcess;
  log: string;
  exited: Promise<ServerExit>;
}

/** Starts ggml-rpc-server in a worker's namespace, collecting what it prints. */
function launchWorker(
  topology: Topology,
  host: WorkerHost,
  port: number,
  threads: number,
  workerEnv: Record<string, string> | undefined,
): WorkerState {
  // stdbuf: ggml-rpc-server prints its banner with printf into a pipe, which stdio buffers until
  // the first "Accepted client connection" flush; line buffering shows each line as printed,
  // and keeps what it printed even when the worker is killed. stdbuf and `ip netns exec` both
  // exec in place, so the child's pid is ggml-rpc-server's.
  const child = topology.spawnIn(
    host,
    [
      "stdbuf",
      "-oL",
      "-eL",
      llamaTool("ggml-rpc-server"),
      "-H",
      topology.addr[host],
      "-p",
      String(port),
      "-t",
      String(threads),
    ],
    { env: { ...process.env, ...workerEnv } },
  );
  const state: WorkerState = {
    child,
    log: "",
    exited: new Promise((resolveExit) =>
      child.once("close", (code: number | null, signal: NodeJS.Signals | null) => resolveExit({ code, signal })),
    ),
  };
  child.stdout?.on("data", (chunk: Buffer) => (state.log += chunk.toString()));
  child.stderr?.on("data", (chunk: Buffer) => (state.log += chunk.toString()));
  return state;
}

/**
 * Ready means: the head can open a TCP connection to it (through the firewall, when applied).
 * Each probe is a client that connects and leaves at once; the worker logs it and goes back
 * to accepting.
 */
async function waitUntilReachable(
  topology: Topology,
  host: WorkerHost,
  port: number,
  state: WorkerState,
  startTimeoutMs: number,
): Promise<void> {
  const { child } = state;
  const deadline = Date.now() + startTimeoutMs;
  while (!topology.canConnect("head", topology.addr[host], port, 1)) {
    if (child.exitCode !== null || child.signalCode !== null)
      throw new Error(`ggml-rpc-server in ${host} exited (${child.exitCode ?? child.signalCode}):\n${state.log}`);
    if (Date.now() > deadline)
      throw new Error(
        `ggml-rpc-server in ${host} not reachable from the head after ${startTimeoutMs} ms:\n${state.log}`,
      );
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * Applies the kit's RPC firewall in a worker's namespace (only the head may reach the port); returns what it printed.
 */
function applyWorkerFirewall(topology: Topology, host: WorkerHost, port: number): string {
  const applied = topology.exec(host, [
    "bash",
    FIREWALL,
    "apply",
    "--table",
    RPC_FIREWALL_TABLE,
    "--allow",
    `${port}=${topology.addr.head}/32`,
  ]);
  if (applied.status !== 0)
    throw new Error(`firewall.sh apply in ${host} exited ${applied.status}: ${applied.stderr}${applied.stdout}`);
  return applied.stdout;
}

/** Kills a worker's process (if it still runs) and waits until it has exited. */
async function killWorker(state: WorkerState | undefined): Promise<void> {
  if (!state) return;
  if (state.child.exitCode === null && state.child.signalCode === null) state.child.kill("SIGKILL");
  await state.exited;
}

/** A worker as callers see it: always its latest process (restartWorker replaces the state). */
function workerHandle(host: WorkerHost, endpoint: string, states: ReadonlyMap<WorkerHost, WorkerState>): RpcWorker {
  const state = (): WorkerState => states.get(host)!;
  return {
    host,
    endpoint,
    log: () => state().log,
    exited: () => state().exited,
    alive: () => state().child.exitCode === null && state().child.signalCode === null,
    kill: (signal = "SIGKILL") => void state().child.kill(signal),
  };
}

export async function startRpcCluster(options: RpcClusterOptions = {}): Promise<RpcCluster> {
  const port = options.port ?? 50052;
  const threads = options.threads ?? 1;
  const startTimeoutMs = options.startTimeoutMs ?? 30_000;
  const topology = createTopology();
  const socketDir = mkdtempSync(join(tmpdir(), "kk-rpc-"));
  const heads: HeadServer[] = [];
  const states = new Map<WorkerHost, WorkerState>();
  const firewallOutput = {} as Record<WorkerHost, string>;
  let headCount = 0;

  const spawnWorker = async (host: WorkerHost): Promise<void> => {
    const state = launchWorker(topology, host, port, threads, options.workerEnv);
    states.set(host, state);
    await waitUntilReachable(topology, host, port, state, startTimeoutMs);
  };

  const stopWorker = (host: WorkerHost): Promise<void> => killWorker(states.get(host));

  const stop = async (): Promise<void> => {
    for (const head of heads) await head.stop();
    for (const host of states.keys()) await stopWorker(host);
    topology.destroy();
    rmSync(socketDir, { recursive: true, force: true });
  };

  const hosts: WorkerHost[] = ["w1", "w2"];
  try {
    for (const host of hosts) {
      // Before the worker listens, as on a real host: there is no moment the port is open to all.
      if (options.firewall ?? true) firewallOutput[host] = applyWorkerFirewall(topology, host, port);
      await spawnWorker(host);
    }
  } catch (error) {
    await stop();
    throw error;
  }

  const workers: RpcWorker[] = hosts.map((host) => workerHandle(host, `${topology.addr[host]}:${port}`, states));

  return {
    topology,
    workers,
    port,
    firewallOutput,
    async startHead(model, args, headOptions = {}) {
      const socketPath = join(socketDir, `head-${++headCount}.sock`);
      const rpc = (headOptions.rpc ?? true) ? ["--rpc", workers.map((w) => w.endpoint).join(",")] : [];
      const server = await startServer(model, [...args, ...rpc], headOptions.timeoutMs ?? 120_000, {
        command: topology.prefixFor("head"),
        host: socketPath,
      });
      const head: HeadServer = { ...server, socketPath };
      heads.push(head);
      return head;
    },
    async restartWorker(host) {
      await stopWorker(host);
      await spawnWorker(host);
    },
    stop,
  };
}

/** `n` token ids for a prompt: the generated models' "test" tokenizer has 128 ids; 0 is avoided. */
export function fixedPrompt(n: number): number[] {
  return Array.from({ length: n }, (_, i) => 1 + (i % 100));
}

export interface Measurement {
  promptTokens: number;
  predictedTokens: number;
  /** llama-server's timings.prompt_per_second (prefill), median of the runs. */
  promptPerSecond: number;
  /** llama-server's timings.predicted_per_second (decode), median of the runs. */
  predictedPerSecond: number;
  /** Every run's timings, in order. */
  runs: { promptN: number; promptPerSecond: number; predictedN: number; predictedPerSecond: number }[];
}

const median = (values: number[]): number => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
};

/**
 * Times `repeats` completions of the same token prompt on a running server, after one unmeasured
 * warm-up (first-use allocations, page faults), and returns llama-server's own timings. The prompt
 * cache is off, so every run evaluates the whole prompt, and EOS is ignored, so every run decodes
 * exactly nPredict tokens.
 */
export async function measure(
  server: RunningServer,
  options: { prompt: number[]; nPredict: number; repeats?: number },
): Promise<Measurement> {
  const body = {
    prompt: options.prompt,
    n_predict: options.nPredict,
    cache_prompt: false,
    ignore_eos: true,
    temperature: 0,
  };
  await server.complete(body);
  const runs: Measurement["runs"] = [];
  for (let i = 0; i < (options.repeats ?? 3); i++) {
    const { timings } = await server.complete(body);
    runs.push({
      promptN: timings.prompt_n,
      promptPerSecond: timings.prompt_per_second,
      predictedN: timings.predicted_n,
      predictedPerSecond: timings.predicted_per_second,
    });
  }
  return {
    promptTokens: options.prompt.length,
    predictedTokens: options.nPredict,
    promptPerSecond: median(runs.map((r) => r.promptPerSecond)),
    predictedPerSecond: median(runs.map((r) => r.predictedPerSecond)),
    runs,
  };
}

/** A plain-text table of measurements, one row per configuration. */
export function formatMeasurements(title: string, rows: [string, Measurement][]): string {
  const width = Math.max(14, ...rows.map(([label]) => label.length));
  const lines = [title, `${"configuration".padEnd(width)}  prompt t/s  decode t/s`];
  for (const [label, m] of rows)
    lines.push(
      `${label.padEnd(width)}  ${m.promptPerSecond.toFixed(1).padStart(10)}  ${m.predictedPerSecond.toFixed(1).padStart(10)}`,
    );
  return lines.join("\n");
}

export interface StreamOutcome {
  /** HTTP status of the response (0 when none came). */
  status: number;
  /** `data:` events received. */
  events: number;
  /** True only when the final event (`"stop": true`) arrived and the response ended cleanly. */
  completed: boolean;
  /** How the exchange failed, when it did (Node's error code and message). */
  error?: string;
}

/**
 * POSTs a streamed /completion to a server's Unix socket; onEvent is called with the count after
 * each `data:` event (one per token), so a caller can act while the generation is under way.
 */
export function streamCompletion(
  socketPath: string,
  body: Record<string, unknown>,
  onEvent: (events: number) => void,
): Promise<StreamOutcome> {
  const payload = JSON.stringify({ ...body, stream: true });
  return new Promise((resolveOutcome) => {
    const outcome: StreamOutcome = { status: 0, events: 0, completed: false };
    let settled = false;
    const settle = (error?: Error & { code?: string }) => {
      if (settled) return;
      settled = true;
      if (error) {
        outcome.completed = false;
        outcome.error = `${error.code ?? "error"}: ${error.message}`;
      }
      resolveOutcome(outcome);
    };
    const req = request(
      {
        socketPath,
        path: "/completion",
        method: "POST",
        headers: { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(payload) },
      },
      (response) => {
        outcome.status = response.statusCode ?? 0;
        let pending = "";
        let sawStop = false;
        response.setEncoding("utf8");
        response.on("data", (chunk: string) => {
          pending += chunk;
          let cut: number;
          while ((cut = pending.indexOf("\n\n")) >= 0) {
            const event = pending.slice(0, cut);
            pending = pending.slice(cut + 2);
            if (!event.startsWith("data: ")) continue;
            outcome.events++;
            if (/"stop"\s*:\s*true/.test(event)) sawStop = true;
            onEvent(outcome.events);
          }
        });
        response.on("end", () => {
          outcome.completed = sawStop;
          settle();
        });
        response.on("error", settle);
        // A response cut off mid-body (the server died) ends in 'close' without 'end' on some paths.
        response.on("close", () =>
          settle(
            response.complete
              ? undefined
              : Object.assign(new Error("response closed before its end"), { code: "ECLOSED" }),
          ),
        );
      },
    );
    req.on("error", settle);
    req.end(payload);
  });
}
