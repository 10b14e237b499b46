import { describe, expect, it } from "vitest";
import { loadCatalog } from "../../planner/catalog";
import { ConfigError } from "../../planner/errors";
import { estimate } from "../../planner/estimate";
import { parseFlags, type SizingFlags } from "../../planner/flags";
import type { HostSpec } from "../../planner/host";
import { buildPlan } from "../../planner/plan";
import { listStacks, loadStackConfig } from "../../planner/stack-file";
import { tensorsFromArchitecture } from "../../planner/tensors";

const catalog = loadCatalog();
const kimi = catalog.models.find((model) => model.id === "kimi-k2.6")!;
const tier = kimi.tiers.find((entry) => entry.name === "UD-Q2_K_XL")!;
const tensors = tensorsFromArchitecture(kimi.architecture, tier);
const arch = kimi.architecture;
const cpuHost = buildPlan("cpu-ddr5", loadStackConfig("cpu-ddr5")).host;
const gpuHost = buildPlan("rtx3090x4", loadStackConfig("rtx3090x4")).host;
const run = (host: HostSpec, flags: SizingFlags) => estimate(tensors, arch, host, flags, { catalog });
const total = tensors.reduce((sum, tensor) => sum + tensor.bytes, 0);

describe("estimate: memory by kind for any command line", () => {
  it("Kimi's f16 MLA cache is 70,272 bytes per token over 61 layers (docs/reference: 8.58 GiB at 131,072)", () => {
    const cpu = run(cpuHost, { ctxSize: 131072, parallel: 1 }).devices[0]!;
    expect(cpu.kvBytes).toBe(70272 * 131072);
  });

  it("grouped-query attention: -ctk sizes K and -ctv sizes V (8 KV heads × 128: q8_0 = 32 × 34 B, q4_0 = 32 × 18 B per token per layer)", () => {
    const gqa = { ...arch, attention: { kind: "gqa" as const, headCountKv: 8, keyLength: 128, valueLength: 128 } };
    const kvOf = (flags: SizingFlags) =>
      estimate(tensors, gqa, cpuHost, { ctxSize: 4096, parallel: 1, ...flags }, { catalog }).devices[0]!.kvBytes;
    expect(kvOf({ cacheTypeK: "q8_0", cacheTypeV: "q8_0" })).toBe(61 * 4096 * 32 * 34 * 2);
    expect(kvOf({ cacheTypeK: "q8_0", cacheTypeV: "q4_0" })).toBe(61 * 4096 * (32 * 34 + 32 * 18));
  });

  it("-np auto is 4 slots sharing one unified cache: every slot's mask spans all cells", () => {
    const auto = run(cpuHost, { ctxSize: 8192 });
    const four = run(cpuHost, { ctxSize: 8192, parallel: 4 });
    expect(auto.settings).toMatchObject({ slots: 4, kvUnified: true, kvCells: 8192 });
    expect(four.settings).toMatchObject({ slots: 4, kvUnified: false, kvCells: 8192, contextPerSlot: 2048 });
    // f16 mask: 2 bytes per visible cell per ubatch token (512): unified sees 8192 cells, a slot 2048.
    expect(auto.devices[0]!.computeBytes - four.devices[0]!.computeBytes).toBe(512 * 2 * (8192 - 2048));
  });

  it("--no-repack keeps every weight in the plain CPU buffer; repacking only moves bytes", () => {
    const repacked = run(cpuHost, { ctxSize: 4096 }).devices[0]!;
    const plain = run(cpuHost, { ctxSize: 4096, repack: false }).devices[0]!;
    expect(repacked.repackBytes).toBeGreaterThan(0.9 * total);
    expect(plain.repackBytes).toBe(0);
    expect(plain.modelBytes).toBe(total);
    expect(repacked.modelBytes + repacked.repackBytes).toBe(total);
  });

  it("memory-mapped loading (the default) maps the span from the first to the last plain CPU tensor; --load-mode none maps nothing", () => {
    const repacked = run(cpuHost, {}).devices[0]!;
    // Kimi's first tensor (token_embd) and last (output) stay plain, so the span is the whole model.
    expect(repacked.mappedBytes).toBe(total);
    expect(repacked.modelBytes + repacked.repackBytes).toBe(total); // the repacked copies are not added twice
    expect(run(cpuHost, { loadMode: "mmap" }).notes.join(" ")).toMatch(/memory-mapped/);
    expect(run(cpuHost, { loadMode: "none" }).devices[0]!.mappedBytes).toBe(0);
    // With every expert on a GPU nothing but token_embd stays mapped.
    const gpu = run(gpuHost, { gpuLayers: "all" }).devices[0]!;
    expect(gpu.mappedBytes).toBe(tensors.find((tensor) => tensor.name === "token_embd.weight")!.bytes);
  });

  it("-fa off adds f32 scores (heads × visible cells × 4 bytes per ubatch token), an f32 mask and the latent V copied out", () => {
    const on = run(cpuHost, { ctxSize: 4096, parallel: 1, flashAttn: "on" }).devices[0]!;
    const off = run(cpuHost, { ctxSize: 4096, parallel: 1, flashAttn: "off" }).devices[0]!;
    const scores = 512 * arch.attentionHeads * 4096 * 4;
    const maskToF32 = 512 * 4096 * 2;
    const latentV = arch.kvLoraRank * 4096 * 2; // the f16 cache's latent, one row per cell
    // The flash path's peak also holds a third residual-width activation (the attention norm's input).
    const residual = 512 * arch.hiddenSize * 4;
    expect(off.computeBytes - on.computeBytes).toBe(scores + maskToF32 + latentV - residual);
  });

  it("-ngl 10 leaves the first 52 of 61 layers (and their KV) on the CPU, the output layer on a GPU", () => {
    const result = run(gpuHost, { ctxSize: 4096, parallel: 1, gpuLayers: 10 });
    expect(result.placement.layerDevice.filter((device) => device === "CPU")).toHaveLength(52);
    expect(result.placement.outputDevice).toMatch(/^CUDA/);
    expect(result.devices[0]!.kvBytes).toBe(52 * 1152 * 4096);
    expect(result.placement.mode).toBe("hybrid");
  });

  it("--cpu-moe puts every routed expert on the CPU; --n-cpu-moe N only those of the first N layers", () => {
    const all = run(gpuHost, { gpuLayers: "all", cpuMoe: true });
    const experts = tensors.filter((tensor) => tensor.cls === "routedExperts");
    for (const tensor of experts) expect(all.placement.deviceOfTensor.get(tensor.name), tensor.name).toBe("CPU");
    const five = run(gpuHost, { gpuLayers: "all", nCpuMoe: 5 });
    const onCpu = experts
      .filter((tensor) => five.placement.deviceOfTensor.get(tensor.name) === "CPU")
      .map((tensor) => tensor.layer);
    expect([...new Set(onCpu)]).toEqual([1, 2, 3, 4]); // layer 0 is Kimi's dense layer
    // With a GPU, the CUDA host buffer comes before CPU_REPACK: nothing is repacked.
    expect(all.devices[0]!.repackBytes).toBe(0);
  });

  it("--no-op-offload: the first GPU no longer holds a CPU expert for big batches, and prefill runs them on the CPU", () => {
    const flags: SizingFlags = { gpuLayers: "all", cpuMoe: true, ubatch: 2048 };
    const offload = run(gpuHost, flags);
    const local = run(gpuHost, { ...flags, opOffload: false });
    const largestExpert = Math.max(
      ...tensors.filter((tensor) => tensor.cls === "routedExperts").map((tensor) => tensor.bytes),
    );
    expect(offload.devices[1]!.computeBytes - local.devices[1]!.computeBytes).toBe(largestExpert);
    expect(local.projection.prefillBasis).toMatch(/on the CPU/);
    expect(offload.projection.prefillBasis).toMatch(/streamed over PCIe/);
  });

  it("an -ot rule naming a device the host lacks is one problem naming -ot", () => {
    expect(() => run(gpuHost, { overrideTensor: [{ pattern: "exps", device: "CUDA9" }] })).toThrow(ConfigError);
    try {
      run(gpuHost, { overrideTensor: [{ pattern: "exps", device: "CUDA9" }] });
    } catch (error) {
      expect((error as ConfigError).problems).toEqual([
        expect.stringMatching(/^-ot: found "exps=CUDA9"; allowed: .*CPU, CUDA0, CUDA1, CUDA2, CUDA3/),
      ]);
    }
  });
});

describe("estimate: projections", () => {
  it("decode slows with depth; prefill is quoted by prompt length", () => {
    const result = estimate(
      tensors,
      arch,
      cpuHost,
      { ctxSize: 65536, parallel: 1 },
      { catalog, decodeDepths: [0, 8192, 65536], prefillPrompts: [512, 8192] },
    );
    const decode = result.projection.decodeByDepth.map((point) => point.tokensPerSecond);
    expect(decode).toEqual([...decode].sort((a, b) => b - a));
    expect(result.projection.prefillByPrompt.map((point) => point.promptTokens)).toEqual(
      expect.arrayContaining([512, 8192]),
    );
  });

  it("-tb: prompt processing scales with the batch threads (compute-bound), decode does not", () => {
    const all = run(cpuHost, { ctxSize: 4096, parallel: 1 });
    const quarter = run(cpuHost, { ctxSize: 4096, parallel: 1, threadsBatch: cpuHost.cpu.cores / 4 });
    expect(all.projection.prefillTokensPerSecond / quarter.projection.prefillTokensPerSecond).toBeCloseTo(4, 6);
    expect(quarter.projection.decodeTokensPerSecond).toBe(all.projection.decodeTokensPerSecond);
  });

  it("without --numa on a two-node host one node's memory serves every thread; with it the second node adds numaRemoteGain of its own", () => {
    const twoNodes: HostSpec = { ...cpuHost, cpu: { ...cpuHost.cpu, numaNodes: 2 } };
    const withGain = (numaRemoteGain: number, numa?: "distribute") =>
      estimate(
        tensors,
        arch,
        twoNodes,
        { ctxSize: 4096, parallel: 1, ...(numa ? { numa } : {}) },
        { catalog, cpuFactors: { numaRemoteGain, source: "test" } },
      ).projection.decodeTraffic[0]!.effectiveBandwidth;
    const oneNode = withGain(0.5);
    // Per node: half the host's achievable bandwidth, times the decode efficiency.
    expect(withGain(0.3, "distribute") / oneNode).toBeCloseTo(1.3, 9);
    expect(withGain(0, "distribute")).toBeCloseTo(oneNode, 0);
    expect(withGain(1, "distribute")).toBeCloseTo(2 * oneNode, 0);
  });

  it("-t: decode on few threads is bound by their arithmetic (it scales with -t), on all cores by bandwidth", () => {
    // A per-layer cost of its own, so the test does not lean on the corpus fit's value.
    const perLayerSeconds = 0.0003;
    const slowCompute = { decodeComputeEfficiency: 0.01, decodeSecondsPerLayer: perLayerSeconds, source: "test" };
    const decodeAt = (
      threads: number,
      cpuFactors?: { decodeComputeEfficiency: number; decodeSecondsPerLayer?: number; source: string },
    ) =>
      estimate(
        tensors,
        arch,
        cpuHost,
        { ctxSize: 4096, parallel: 1, threads },
        { catalog, ...(cpuFactors ? { cpuFactors } : {}) },
      ).projection;
    // At 1% of peak every thread count is compute-bound: time = FLOPs ÷ (threads × clock × FLOP/cycle × 0.01) + layers
    // × per-layer cost.
    const two = decodeAt(2, slowCompute);
    const four = decodeAt(4, slowCompute);
    const perLayer = perLayerSeconds * arch.layers;
    expect((1 / two.decodeTokensPerSecond - perLayer) / (1 / four.decodeTokensPerSecond - perLayer)).toBeCloseTo(2, 6);
    // At full peak, half the cores still out-compute the memory: both stream at the bandwidth bound.
    const fastCompute = { decodeComputeEfficiency: 1, source: "test" };
    const cores = cpuHost.cpu.cores;
    expect(decodeAt(cores / 2, fastCompute).decodeTokensPerSecond).toBe(
      decodeAt(cores, fastCompute).decodeTokensPerSecond,
    );
    expect(decodeAt(1, fastCompute).decodeTokensPerSecond).toBeLessThan(
      decodeAt(cores, fastCompute).decodeTokensPerSecond,
    );
  });
});

describe("choose and estimate agree", () => {
  it.each(listStacks())(
    "%s: the kit's rendered command line, parsed back and estimated, is the plan's memory map",
    (stack) => {
      const plan = buildPlan(stack, loadStackConfig(stack));
      const parsed = parseFlags(plan.llamaServerArgs);
      const again = estimate(plan.tensors, plan.model.architecture, plan.host, parsed.sizing, {
        catalog,
        ...(plan.cluster ? { rpc: plan.cluster.rpc } : {}),
      });
      expect(again.devices).toEqual(plan.placement.memory);
    },
  );
});
