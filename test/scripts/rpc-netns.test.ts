/**
 * llama.cpp RPC across hosts, for real on one machine: two ggml-rpc-server workers and a head
 * llama-server, each in its own network namespace, joined by veth pairs through a bridge
 * (lab/netns.ts), the links rate-limited with tbf to 10 and 25 Gbit/s. The workers sit
 * behind the kit's firewall (firewall.sh, table kimi_kit_rpc: only the head's address reaches the
 * RPC port). Nothing is added to the machine's own namespace: the head is reached through a Unix
 * socket, every interface, qdisc and nftables table lives and dies with the namespaces.
 *
 * For a generated deepseek2 model (Kimi K2's architecture in llama.cpp) and a kimi-k3 model:
 * the firewall admits the head and drops an outsider; the head places layers, KV cache (or
 * recurrent state) on both workers and serves; llama-server's own timings on one host and across
 * the links (printed, not judged: these tiny models measure round trips, not bandwidth); and what
 * happens when a worker dies mid-request and when a head starts with a worker down.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseBuffers, ServerStartError } from "../../lab/server";
import { readLocalModel, thisMachineHost } from "../../cli/local-model";
import { loadCatalog } from "../../planner/catalog";
import { estimate } from "../../planner/estimate";
import { parseFlags } from "../../planner/flags";
import { linkSpec } from "../../planner/network";
import { generateArchModel, generateDeepseek2Model } from "../../lab/models";
import { netnsUnavailable } from "../../lab/netns";
import {
  fixedPrompt,
  formatMeasurements,
  measure,
  RPC_FIREWALL_TABLE,
  startRpcCluster,
  streamCompletion,
  type HeadServer,
  type Measurement,
  type RpcCluster,
} from "../../lab/rpc-cluster";

const unavailable = netnsUnavailable();

/**
 * Flags for every head, with or without workers: all layers offloaded, one slot, one thread (the machine may have 2
 * cores).
 */
const FLAGS = ["-ngl", "99", "-c", "512", "-np", "1", "-t", "1", "--fit", "off"];
/**
 * llama.cpp splits the offloaded layers (2 repeating + the output layer here) at cumulative
 * fractions of the devices' free memory, both workers reporting the same: layer il goes to the
 * first device whose split point exceeds il/3, so with equal shares (points 0.5, 1) both repeating
 * layers land on the first worker and the second gets only the output layer, no KV. A 1:3 split
 * (points 0.25, 1) puts layer 0 on w1, layer 1 and the output on w2: each worker holds a layer.
 */
const SPLIT = ["-ts", "1,3"];
const PROMPT = fixedPrompt(64);
const N_PREDICT = 16;

/** The drop counter of the kit's rule for `port` in a worker's namespace. */
function dropCount(cluster: RpcCluster, host: "w1" | "w2"): number {
  const listed = cluster.topology.exec(host, ["nft", "list", "table", "inet", RPC_FIREWALL_TABLE]);
  expect(listed.status, listed.stderr).toBe(0);
  const line = listed.stdout
    .split("\n")
    .find((l) => l.includes(`tcp dport ${cluster.port} counter`) && l.trim().endsWith("drop"));
  const packets = /counter packets (\d+)/.exec(line ?? "")?.[1];
  if (packets === undefined) throw new Error(`no drop counter for port ${cluster.port} in:\n${listed.stdout}`);
  return Number(packets);
}

const bufferLines = (log: string) =>
  log.split("\n").filter((line) => /(model|KV|RS|compute) buffer size|common_param: {3}- RPC/.test(line));

function expectAllRuns(m: Measurement): void {
  for (const run of m.runs) {
    expect(run.promptN).toBe(PROMPT.length);
    expect(run.predictedN).toBe(N_PREDICT);
    expect(run.promptPerSecond).toBeGreaterThan(0);
    expect(run.predictedPerSecond).toBeGreaterThan(0);
  }
}

/**
 * The suite for one model. `secondWorkerState` is where the second worker's layer keeps its
 * per-sequence state: a KV cache for deepseek2's MLA layer, recurrent state for kimi-k3's KDA layer.
 */
function rpcSuite(arch: "deepseek2" | "kimi-k3", secondWorkerState: "kv" | "recurrent"): void {
  describe.skipIf(unavailable !== undefined)(
    `llama.cpp RPC across network namespaces, ${arch}${unavailable ? ` (skipped: ${unavailable})` : ""}`,
    () => {
      let dir = "";
      let model = "";
      let cluster: RpcCluster | undefined;
      let head: HeadServer | undefined;
      const c = (): RpcCluster => cluster!;

      beforeAll(async () => {
        dir = mkdtempSync(join(tmpdir(), `rpc-netns-${arch}-`));
        model = arch === "deepseek2" ? generateDeepseek2Model(dir) : generateArchModel(dir, arch);
        cluster = await startRpcCluster();
      }, 300_000);

      afterAll(async () => {
        await cluster?.stop();
        if (dir) rmSync(dir, { recursive: true, force: true });
      });

      it("the kit's firewall in each worker's namespace admits the head to the RPC port and drops an outsider", () => {
        const { topology, port, workers } = c();
        for (const worker of workers) {
          expect(c().firewallOutput[worker.host]).toBe(
            `firewall=applied table=inet ${RPC_FIREWALL_TABLE} ports=${port}\n`,
          );
          expect(topology.canConnect("head", topology.addr[worker.host], port)).toBe(true);
          const before = dropCount(c(), worker.host);
          // A dropped SYN shows only as a timeout; 2 s is ample between namespaces of one machine,
          // and the counter below says the kit's rule dropped it, not a missing route.
          expect(topology.canConnect("out", topology.addr[worker.host], port, 2)).toBe(false);
          const after = dropCount(c(), worker.host);
          expect(after).toBeGreaterThan(before);
          expect(after).toBeGreaterThan(0);
        }
      }, 60_000);

      it("a head in its own namespace places model layers and per-sequence state on both workers and serves", async () => {
        const [w1, w2] = c().workers as [RpcCluster["workers"][number], RpcCluster["workers"][number]];
        head = await c().startHead(model, [...FLAGS, ...SPLIT]);
        const log = head.log();
        console.log(`${arch} head, RPC devices and buffers:\n${bufferLines(log).join("\n")}`);
        // The head numbers the devices RPC0, RPC1 in --rpc order; their buffers are named by the
        // device's index on its own server (0 for both: each serves one CPU device) and the endpoint.
        expect(log).toMatch(new RegExp(`common_param: {3}- RPC0 +: ${w1.endpoint.replace(/\./g, "\\.")} `));
        expect(log).toMatch(new RegExp(`common_param: {3}- RPC1 +: ${w2.endpoint.replace(/\./g, "\\.")} `));
        const buffers = parseBuffers(log);
        const d1 = `RPC0[${w1.endpoint}]`;
        const d2 = `RPC0[${w2.endpoint}]`;
        expect(buffers.model[d1] ?? 0).toBeGreaterThan(0);
        expect(buffers.model[d2] ?? 0).toBeGreaterThan(0);
        expect(buffers.kv[d1] ?? 0).toBeGreaterThan(0);
        expect(buffers[secondWorkerState][d2] ?? 0).toBeGreaterThan(0);
        expect(buffers.compute[d1] ?? 0).toBeGreaterThan(0);

        // The estimator, given the same command line and the two workers, predicts each RPC
        // device's buffers: weights and per-sequence state to the log's 0.01 MiB, compute printed
        // beside llama.cpp's figure (its model is deepseek2's attention step; see planner/memory.ts).
        const local = await readLocalModel(model);
        const workerHost = thisMachineHost(10);
        const predicted = estimate(
          local.tensors,
          local.arch,
          thisMachineHost(10),
          parseFlags([...FLAGS, ...SPLIT, "--rpc", `${w1.endpoint},${w2.endpoint}`], "test").sizing,
          {
            catalog: loadCatalog(),
            rpc: {
              workers: [w1, w2].map((worker) => ({ endpoint: worker.endpoint, host: workerHost, threads: 1 })),
              link: linkSpec(10, 100, "tcp"),
            },
          },
        );
        const MiB = 1024 * 1024;
        const rows = [d1, d2].map((device) => {
          const planned = predicted.devices.find((entry) => entry.device === device)!;
          return {
            device,
            model: [planned.modelBytes / MiB, (buffers.model[device] ?? 0) / MiB],
            state: [
              (planned.kvBytes + planned.recurrentBytes) / MiB,
              ((buffers.kv[device] ?? 0) + (buffers.recurrent[device] ?? 0)) / MiB,
            ],
            compute: [planned.computeBytes / MiB, (buffers.compute[device] ?? 0) / MiB],
          };
        });
        console.log(
          `${arch}: predicted vs logged MiB per RPC device\n${rows.map((row) => `${row.device}  model ${row.model.map((v) => v.toFixed(2)).join(" / ")}  state ${row.state.map((v) => v.toFixed(2)).join(" / ")}  compute ${row.compute.map((v) => v.toFixed(2)).join(" / ")}`).join("\n")}`,
        );
        for (const row of rows) {
          expect(Math.abs(row.model[0]! - row.model[1]!), `${row.device} model`).toBeLessThan(0.006);
          expect(Math.abs(row.state[0]! - row.state[1]!), `${row.device} KV/recurrent`).toBeLessThan(0.011);
        }

        const answer = await head.complete({ prompt: [1, 2, 3, 4], n_predict: 4, ignore_eos: true });
        expect(answer.timings.predicted_n).toBe(4);

        // ggml-rpc-server logs no allocations: its banner, then one line per client connection
        // opened and closed (readiness probes, the head's short set-up connections, its lasting one).
        for (const worker of [w1, w2]) {
          console.log(`${arch} ${worker.host} ggml-rpc-server output:\n${worker.log()}`);
          expect(worker.log()).toContain("Starting RPC server");
          expect(worker.log()).toContain(`endpoint       : ${worker.endpoint}`);
          expect(worker.log()).toContain("Accepted client connection");
        }
      }, 180_000);

      it("serves on one host and across links limited to 10 and 25 Gbit/s (llama-server's timings, printed)", async () => {
        const { topology } = c();
        const rows: [string, Measurement][] = [];
        const baseline = await c().startHead(model, FLAGS, { rpc: false });
        expect(Object.keys(parseBuffers(baseline.log()).model).some((name) => name.startsWith("RPC"))).toBe(false);
        rows.push(["single host", await measure(baseline, { prompt: PROMPT, nPredict: N_PREDICT })]);
        await baseline.stop();

        rows.push(["RPC, veth (no limit)", await measure(head!, { prompt: PROMPT, nPredict: N_PREDICT })]);
        for (const gbit of [10, 25]) {
          topology.setRate(gbit);
          const qdisc = topology.exec("head", ["tc", "qdisc", "show", "dev", "eth0"]).stdout;
          expect(qdisc).toMatch(new RegExp(`qdisc tbf .* rate ${gbit}Gbit`));
          rows.push([`RPC, ${gbit} Gbit/s`, await measure(head!, { prompt: PROMPT, nPredict: N_PREDICT })]);
        }
        topology.clearRate();
        expect(topology.exec("head", ["tc", "qdisc", "show", "dev", "eth0"]).stdout).not.toContain("tbf");

        for (const [, m] of rows) expectAllRuns(m);
        console.log(
          formatMeasurements(`${arch}: ${PROMPT.length}-token prompt, ${N_PREDICT} tokens decoded, median of 3`, rows),
        );
      }, 300_000);

      it("a worker killed mid-request aborts the head (the request is cut off); a new head cannot start while it is down", async () => {
        const w2 = c().workers[1]!;
        const serving = head!;
        let eventsAtKill = 0;
        // Kill the second worker as soon as the first token has streamed back: the generation is
        // under way, with 199 tokens to go.
        const outcome = await streamCompletion(
          serving.socketPath,
          { prompt: fixedPrompt(8), n_predict: 200, ignore_eos: true, cache_prompt: false },
          (events) => {
            if (eventsAtKill === 0) {
              eventsAtKill = events;
              w2.kill("SIGKILL");
            }
          },
        );
        const headExit = await serving.exited;
        const workerExit = await w2.exited();
        const abortLines = serving
          .log()
          .split("\n")
          .filter((line) => /send failed|recv failed|ggml-rpc\.cpp:\d+:/.test(line));
        console.log(
          `${arch}: the stream after the kill: ${JSON.stringify(outcome)}; the head exited ${JSON.stringify(headExit)}, logging:\n${abortLines.join("\n")}`,
        );

        expect(workerExit.signal).toBe("SIGKILL");
        expect(eventsAtKill).toBe(1);
        expect(outcome.status).toBe(200); // the stream had started…
        expect(outcome.completed).toBe(false); // …and was cut off, without its final event
        expect(outcome.error).toBeDefined();
        expect(outcome.events).toBeLessThan(200);
        // RPC_STATUS_ASSERT in the head's RPC dispatcher: GGML_ABORT, the process dies by SIGABRT.
        expect(serving.log()).toMatch(/ggml-rpc\.cpp:\d+: Remote RPC server crashed or returned malformed response/);
        expect(headExit.signal).toBe("SIGABRT");

        // A new head while the worker is down: --rpc connects to each endpoint while parsing the
        // arguments, and the refused connection is another GGML_ABORT, naming the endpoint.
        const failed = await c()
          .startHead(model, [...FLAGS, ...SPLIT])
          .then(
            () => undefined,
            (error: unknown) => error,
          );
        expect(failed).toBeInstanceOf(ServerStartError);
        const startError = failed as ServerStartError;
        const failLines = startError.log
          .split("\n")
          .filter((line) => /Failed to connect|ggml-rpc\.cpp:\d+:/.test(line));
        console.log(
          `${arch}: a new head with ${w2.endpoint} down exited ${JSON.stringify(startError.exit)}, logging:\n${failLines.join("\n")}`,
        );
        expect(startError.log).toContain(`Failed to connect to ${w2.endpoint}`);
        expect(startError.exit.signal).toBe("SIGABRT");

        // Recovery is a restart of the worker, then of the head.
        await c().restartWorker("w2");
        const again = await c().startHead(model, [...FLAGS, ...SPLIT]);
        expect(
          (await again.complete({ prompt: [1, 2, 3, 4], n_predict: 4, ignore_eos: true })).timings.predicted_n,
        ).toBe(4);
      }, 180_000);
    },
  );
}

rpcSuite("deepseek2", "kv");
rpcSuite("kimi-k3", "recurrent");
