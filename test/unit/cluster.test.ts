/**
 * Multi-host stacks (llama.cpp RPC): the stack shape's bad input, the split's placement and memory,
 * the link's cost, and the verdicts that refuse a split that is the wrong answer. Expected figures
 * are worked here from llama.cpp's rules and the model's published dimensions (Kimi K2.6: hidden
 * 7168, vocabulary 163840), not read back from the planner.
 */
import { describe, expect, it } from "vitest";
import { loadCatalog } from "../../planner/catalog";
import { parseStackConfig } from "../../planner/config";
import { estimate } from "../../planner/estimate";
import { parseFlags } from "../../planner/flags";
import { resolveHost } from "../../planner/host";
import { linkSpec } from "../../planner/network";
import { buildPlan } from "../../planner/plan";
import { loadStackConfig, readStackValues } from "../../planner/stack-file";
import { tensorsFromArchitecture } from "../../planner/tensors";
import { configProblems } from "../support/config-errors";

const catalog = loadCatalog();
const STACK = "cpu-ddr5-q4-split";

const problemsOf = configProblems;

/** The split stack's raw values with a change applied to its hosts or link. */
function variant(
  change: (raw: { hosts: Record<string, unknown>[]; link: Record<string, unknown> } & Record<string, unknown>) => void,
): Record<string, unknown> {
  const raw = structuredClone(readStackValues(STACK)) as {
    hosts: Record<string, unknown>[];
    link: Record<string, unknown>;
  } & Record<string, unknown>;
  change(raw);
  return raw;
}

describe("the multi-host stack shape refuses bad input before anything is planned", () => {
  it("parses the split stack into the head (host) and its workers (cluster)", () => {
    const config = loadStackConfig(STACK);
    expect(config.host.kind).toBe("bare-metal");
    expect(config.cluster?.head).toEqual({ id: "head", privateAddress: "10.20.0.1", index: 0 });
    expect(
      config.cluster?.workers.map((worker) => [worker.id, worker.privateAddress, worker.rpcPort, worker.index]),
    ).toEqual([["worker-1", "10.20.0.2", 50052, 1]]);
    expect(config.cluster?.link).toMatchObject({
      gbitPerSecond: 25,
      roundTripMicroseconds: 50,
      transport: "tcp",
      minimumGbitPerSecond: 10,
    });
  });

  it("a worker on a public address is refused, naming the key and the value", () => {
    const problems = problemsOf(() =>
      parseStackConfig(
        STACK,
        variant((raw) => (raw.hosts[1]!.privateAddress = "203.0.113.11")),
      ),
    );
    expect(problems).toEqual([
      expect.stringMatching(
        /^hosts\[1\]\.privateAddress: found "203\.0\.113\.11"; allowed: a private IPv4 address .*never listen on a public network/,
      ),
    ]);
  });

  it("duplicate private addresses, ids and SSH endpoints are refused, naming the host that repeats one", () => {
    const problems = problemsOf(() =>
      parseStackConfig(
        STACK,
        variant((raw) => {
          raw.hosts.push({ ...structuredClone(raw.hosts[1]!) });
        }),
      ),
    );
    expect(problems).toEqual([
      expect.stringMatching(
        /^hosts\[2\]\.id: found "worker-1"; allowed: a value no other host has \(hosts\[1\] has it too\)/,
      ),
      expect.stringMatching(
        /^hosts\[2\]\.privateAddress: found "10\.20\.0\.2"; allowed: a value no other host has \(hosts\[1\]/,
      ),
      expect.stringMatching(/^hosts\[2\]\.ssh\.host: found "203\.0\.113\.11:22"; allowed: a value no other host has/),
    ]);
  });

  it("a link slower than the stated minimum is refused, and so is a minimum under the kit's floor", () => {
    expect(
      problemsOf(() =>
        parseStackConfig(
          STACK,
          variant((raw) => (raw.link = { gbitPerSecond: 25, minimumGbitPerSecond: 40 })),
        ),
      ),
    ).toEqual([
      expect.stringMatching(
        /^link\.gbitPerSecond: found 25; allowed: at least link\.minimumGbitPerSecond \(40 Gbit\/s\)/,
      ),
    ]);
    expect(
      problemsOf(() =>
        parseStackConfig(
          STACK,
          variant((raw) => (raw.link = { gbitPerSecond: 1 })),
        ),
      ),
    ).toEqual([
      expect.stringMatching(
        /^link\.gbitPerSecond: found 1; allowed: at least link\.minimumGbitPerSecond \(10 Gbit\/s\)/,
      ),
    ]);
    expect(
      problemsOf(() =>
        parseStackConfig(
          STACK,
          variant((raw) => (raw.link = { gbitPerSecond: 25, minimumGbitPerSecond: 1 })),
        ),
      )[0],
    ).toMatch(/^link\.minimumGbitPerSecond: found 1; allowed: at least the kit's floor of 10 Gbit\/s/);
  });

  it("host and hosts together, two heads, no worker or no link are refused", () => {
    const both = problemsOf(() =>
      parseStackConfig(
        STACK,
        variant((raw) => (raw.host = readStackValues("cpu-ddr5").host)),
      ),
    );
    expect(both[0]).toMatch(/^hosts: .*either host \(one machine\) or hosts/);
    const twoHeads = problemsOf(() =>
      parseStackConfig(
        STACK,
        variant((raw) => (raw.hosts[1]!.role = "head")),
      ),
    );
    expect(twoHeads.join("\n")).toMatch(/hosts: .*exactly one host with role head \(found 2\)/);
    expect(twoHeads.join("\n")).toMatch(/hosts: .*at least one host with role rpc-worker/);
    expect(
      problemsOf(() =>
        parseStackConfig(
          STACK,
          variant((raw) => delete (raw as Record<string, unknown>).link),
        ),
      )[0],
    ).toMatch(/^link: .*the link between the hosts/);
  });

  it("a worker with less memory than its planned share is refused by the plan, naming its device and the shortfall", () => {
    const config = parseStackConfig(
      STACK,
      variant((raw) => (raw.hosts[1]!.memory = { total: "128GiB" })),
    );
    const plan = buildPlan(STACK, config);
    expect(plan.fits).toBe(false);
    expect(plan.refusal).toMatch(
      /does not fit .*RPC0\[10\.20\.0\.2:50052\] \(EPYC 9124 16-core, 12 × 32 GiB DDR5-4800 \(worker\) \(ggml-rpc-server\)\) needs [\d.]+ GB \([\d.]+ GiB\), has 137\.4 GB \(128\.0 GiB\), short by/,
    );
  });

  it("a worker with a GPU is refused, naming hosts[i].gpus", () => {
    const config = parseStackConfig(
      STACK,
      variant((raw) => (raw.hosts[1]!.gpus = [{ model: "rtx-3090" }])),
    );
    expect(problemsOf(() => buildPlan(STACK, config))).toEqual([
      expect.stringMatching(/^hosts\[1\]\.gpus: found 1 GPU model\(s\); allowed: none/),
    ]);
  });
});

describe("a split over two of the seed's boxes", () => {
  const plan = buildPlan(STACK, loadStackConfig(STACK));
  const arch = plan.model.architecture;

  it("places the first layers on the head and the rest plus the output on the worker, by llama.cpp's -ngl rule", () => {
    expect(plan.fits).toBe(true);
    const ngl = Number(plan.llamaServerArgs[plan.llamaServerArgs.indexOf("--gpu-layers") + 1]);
    // -ngl N puts the last N of the 61 + 1 layers (the +1 is the output) on the devices.
    const headLayers = arch.layers + 1 - ngl;
    expect(plan.cluster!.head.layers).toEqual(Array.from({ length: headLayers }, (_, layer) => layer));
    expect(plan.cluster!.workers[0]!.layers).toEqual(
      Array.from({ length: arch.layers - headLayers }, (_, i) => headLayers + i),
    );
    expect(plan.cluster!.workers[0]!.holdsOutput).toBe(true);
    expect(plan.llamaServerArgs.join(" ")).toContain("--rpc 10.20.0.2:50052");
    // Balanced by memory: neither host is more than 5 points fuller than the other.
    const [head, worker] = plan.placement.memory;
    expect(
      Math.abs(head!.plannedBytes / head!.capacityBytes - worker!.plannedBytes / worker!.capacityBytes),
    ).toBeLessThan(0.05);
  });

  it("the worker holds its layers' weights, KV and compute in its own RAM; the head keeps the prompt cache", () => {
    const worker = plan.placement.memory.find((device) => device.device === "RPC0[10.20.0.2:50052]")!;
    // The output layer (output_norm and output) goes where llama.cpp puts the output: the last device; token_embd stays
    // on the CPU.
    const weightsOnWorker = plan.tensors
      .filter(
        (tensor) =>
          (tensor.layer === null && tensor.cls !== "embedding") ||
          (tensor.layer !== null && plan.cluster!.workers[0]!.layers.includes(tensor.layer)),
      )
      .reduce((sum, tensor) => sum + tensor.bytes, 0);
    expect(worker.modelBytes).toBe(weightsOnWorker);
    expect(worker.repackBytes).toBe(0);
    expect(worker.promptCacheBytes).toBe(0);
    // MLA K cache at f16: (kv_lora 512 + rope 64) × 2 bytes per token per layer, padded cells.
    expect(worker.kvBytes).toBe(plan.cluster!.workers[0]!.layers.length * 32768 * (512 + 64) * 2);
    expect(plan.cluster!.shippedBytes).toBe(weightsOnWorker);
    expect(plan.cluster!.loadSeconds).toBeCloseTo(weightsOnWorker / (25e9 / 8), 6);
  });

  it("each decoded token pays one round trip, the activations and logits at the link's rate, and each command's host time", () => {
    // Worked by hand: residual in (7168 f32) + F16 mask over 4096 cells in + logits out (163840 f32);
    // 7 commands (SET_TENSOR of residual, positions, K indices, mask and output ids; GRAPH_RECOMPUTE; GET_TENSOR).
    const bytes = 7168 * 4 + 4096 * 2 + 163840 * 4;
    expect(plan.cluster!.networkSecondsPerToken).toBeCloseTo(
      50e-6 + bytes / (25e9 / 8) + 7 * loadCatalog().efficiency.rpc.tcpSecondsPerCommand.value,
      9,
    );
    const slow = buildPlan(
      STACK,
      parseStackConfig(
        STACK,
        variant((raw) => (raw.link = { gbitPerSecond: 10, roundTripMicroseconds: 50 })),
      ),
    );
    const secondsPerToken = (p: typeof plan) => 1 / p.projection.decodeTokensPerSecond;
    expect(secondsPerToken(slow) - secondsPerToken(plan)).toBeCloseTo(bytes / (10e9 / 8) - bytes / (25e9 / 8), 9);
  });

  it("the split's decode is the head's and the worker's CPU time one after the other, plus the link", () => {
    const traffic = plan.projection.decodeTraffic;
    expect(traffic.map((entry) => entry.device)).toEqual(["CPU", "RPC0[10.20.0.2:50052]"]);
    const total = traffic.reduce((sum, entry) => sum + entry.secondsPerToken, 0);
    expect(1 / total).toBeCloseTo(plan.projection.decodeTokensPerSecond, 9);
    expect(traffic[1]!.networkSecondsPerToken).toBeCloseTo(plan.cluster!.networkSecondsPerToken, 12);
  });
});

describe("a split that is the wrong answer is refused, with the numbers", () => {
  it("a tier that fits on the head alone: run one host and add replicas", () => {
    const config = parseStackConfig(STACK, {
      ...readStackValues(STACK),
      model: { repo: "unsloth/Kimi-K2.6-GGUF", tier: "UD-Q2_K_XL" },
    });
    const plan = buildPlan(STACK, config);
    expect(plan.fits).toBe(false);
    expect(plan.placement.fits).toBe(true);
    expect(plan.refusal).toMatch(
      /split over 2 hosts is the wrong answer: it fits on the head alone .* projects [\d.]+ tok\/s against the split's [\d.]+\. Run it on one host .*replicas .*1\.30–1\.91×/,
    );
  });

  it("a split below projection.minDecodeTokensPerSecond is refused", () => {
    const raw = readStackValues(STACK) as Record<string, Record<string, unknown>>;
    const plan = buildPlan(
      STACK,
      parseStackConfig(STACK, { ...raw, projection: { ...raw.projection, minDecodeTokensPerSecond: 50 } }),
    );
    expect(plan.fits).toBe(false);
    expect(plan.refusal).toMatch(
      /projects [\d.]+ tok\/s decode at depth 4096, below projection\.minDecodeTokensPerSecond \(50\); the link costs [\d.]+ ms per token/,
    );
  });

  it("a catalog host that decodes faster for no more a month refuses the split; costs bound the comparison, and it can be switched off", () => {
    const raw = readStackValues(STACK) as Record<string, Record<string, unknown>>;
    const withCosts = buildPlan(STACK, parseStackConfig(STACK, raw));
    // Two owned boxes at $366/month: no catalog instance that holds 585 GB costs that little.
    expect(withCosts.fits).toBe(true);
    const noCosts = Object.fromEntries(Object.entries(raw).filter(([key]) => key !== "costs"));
    const uncapped = buildPlan(STACK, parseStackConfig(STACK, noCosts));
    expect(uncapped.fits).toBe(false);
    const match =
      /projects ([\d.]+) tok\/s decode, below one aws (\S+) holding the same tier alone \(([\d.]+) tok\/s, \$(\d+)\/month; the stack states no costs, so every catalog host is compared\)/.exec(
        uncapped.refusal ?? "",
      );
    expect(match, uncapped.refusal).not.toBeNull();
    expect(Number(match![3])).toBeGreaterThan(Number(match![1]));
    const instance = catalog.instances.find((entry) => entry.id === match![2])!;
    expect(Number(match![4])).toBe(Math.round(instance.usdPerHour * 730));
    const off = buildPlan(
      STACK,
      parseStackConfig(STACK, { ...noCosts, projection: { ...raw.projection, compareSplitWithCatalogHosts: false } }),
    );
    expect(off.fits).toBe(true);
  });
});

describe("estimate() with --rpc", () => {
  const model = catalog.models.find((entry) => entry.id === "kimi-k2.6")!;
  const tier = model.tiers.find((entry) => entry.name === "UD-Q4_K_XL")!;
  const tensors = tensorsFromArchitecture(model.architecture, tier);
  const head = resolveHost("t", loadStackConfig("cpu-ddr5").host, catalog);
  const link = linkSpec(25, 50, "tcp");

  it("refuses an endpoint the stack does not describe, naming --rpc", () => {
    expect(
      problemsOf(() =>
        estimate(tensors, model.architecture, head, parseFlags(["--rpc", "10.9.9.9:50052", "-ngl", "30"]).sizing, {
          catalog,
        }),
      ),
    ).toEqual([
      expect.stringMatching(
        /^--rpc: found 10\.9\.9\.9:50052; allowed: endpoints of the stack's rpc-workers \(the stack has none/,
      ),
    ]);
  });

  it("without -ts splits the offloaded layers by each worker's RAM, as a CPU ggml-rpc-server reports all of it free", () => {
    const big = { ...head, memory: { ...head.memory, totalBytes: 3 * head.memory.totalBytes } };
    const workers = [
      { endpoint: "10.0.0.2:50052", host: head, threads: 16 },
      { endpoint: "10.0.0.3:50052", host: big, threads: 16 },
    ];
    const result = estimate(
      tensors,
      model.architecture,
      head,
      parseFlags(["--rpc", "10.0.0.2:50052,10.0.0.3:50052", "-ngl", "40"]).sizing,
      { catalog, rpc: { workers, link } },
    );
    const count = (device: string) => result.placement.layerDevice.filter((owner) => owner === device).length;
    // 40 offloaded of 62 (61 + output): the first 22 layers stay; a 1:3 split gives the first
    // worker 10 of the 40 positions and the second the other 30, the output among them.
    expect(count("CPU")).toBe(22);
    expect(count("RPC0[10.0.0.2:50052]")).toBe(10);
    expect(count("RPC0[10.0.0.3:50052]")).toBe(29);
    expect(result.placement.outputDevice).toBe("RPC0[10.0.0.3:50052]");
  });
});
