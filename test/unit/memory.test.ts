import { describe, expect, it } from "vitest";
import { loadCatalog } from "../../planner/catalog";
import { isRepacked, kvBytesOfLayer, kvBytesPerTokenPerLayer, kvCells, type CacheSettings } from "../../planner/memory";

/** One slot, f16 K and V, a stream of `cells` cells. */
const oneSlot = (cells: number): CacheSettings => ({
  cacheTypeK: "f16",
  cacheTypeV: "f16",
  kvUnified: false,
  slots: 1,
  cellsPerStream: cells,
  ubatch: 512,
});
import { buildPlan } from "../../planner/plan";
import { loadStackConfig } from "../../planner/stack-file";
import { makeTensor } from "../../planner/tensors";
import { GiB, MiB } from "../../planner/units";
import type { CpuSpec } from "../../planner/host";

const catalog = loadCatalog();
const kimi = catalog.models[0]!.architecture;
const cpu = (avx512: boolean): CpuSpec => ({
  name: "x",
  cores: 2,
  sockets: 1,
  numaNodes: 1,
  allCoreGHz: 3,
  fp32FlopsPerCycle: 32,
  arch: "x86-64",
  isa: avx512 ? ["avx2", "avx512"] : ["avx2"],
  avx2: true,
  avx512,
  ccds: undefined,
  fabricClockMHz: undefined,
});

describe("KV cache (MLA keeps K only)", () => {
  it("matches the llama-server log of the test-llama-archs deepseek2 model: 256 cells × 2 layers × 576 × f16 = 0.5625 MiB", () => {
    const tiny = { ...kimi, layers: 2, kvLoraRank: 512, qkRopeHeadDim: 64 };
    expect(kvBytesOfLayer(tiny, 0, oneSlot(kvCells(256, 1))) * 2).toBe(0.5625 * MiB);
  });

  it("is 70,272 bytes per token at f16 for Kimi's 61 layers: 8.58 GiB at 131,072 tokens", () => {
    expect(kvBytesPerTokenPerLayer(kimi, "f16") * kimi.layers).toBe(70_272);
    expect((kvBytesOfLayer(kimi, 0, oneSlot(kvCells(131_072, 1))) * kimi.layers) / GiB).toBeCloseTo(8.58, 2);
    expect(kvBytesPerTokenPerLayer(kimi, "q8_0")).toBe(612);
  });

  it("multiplies by slots and pads cells to 256", () => {
    expect(kvCells(1000, 3)).toBe(3072);
    expect(kvCells(32768, 2)).toBe(65536);
  });
});

describe("repacking on x86 (ggml-cpu repack.cpp, v0.5.0)", () => {
  const q4k = makeTensor("blk.3.ffn_up_exps.weight", "Q4_K", [7168, 2048, 384]);
  const q2k = makeTensor("blk.3.ffn_up_exps.weight", "Q2_K", [7168, 2048, 384]);
  const q8 = makeTensor("blk.3.attn_q_a.weight", "Q8_0", [7168, 1536]);
  const embd = makeTensor("token_embd.weight", "Q4_K", [7168, 163840]);
  it("repacks Q4_K with AVX2, Q2_K only with AVX-512, never Q8_0 on x86 nor the embedding", () => {
    expect(isRepacked(q4k, cpu(false), catalog.llamaCpp)).toBe(true);
    expect(isRepacked(q2k, cpu(false), catalog.llamaCpp)).toBe(false);
    expect(isRepacked(q2k, cpu(true), catalog.llamaCpp)).toBe(true);
    expect(isRepacked(q8, cpu(true), catalog.llamaCpp)).toBe(false);
    expect(isRepacked(embd, cpu(true), catalog.llamaCpp)).toBe(false);
  });
});

describe("memory fit per device", () => {
  it("fits UD-Q2_K_XL on the 384 GiB CPU build, with the repacked copy replacing the original", () => {
    const plan = buildPlan("cpu-ddr5", loadStackConfig("cpu-ddr5"));
    const ram = plan.placement.memory[0]!;
    expect(plan.fits).toBe(true);
    expect(ram.modelBytes + ram.repackBytes).toBe(plan.modelBytes);
    expect(ram.repackBytes).toBeGreaterThan(0.8 * plan.modelBytes);
    expect(ram.kvBytes).toBe(32768 * 70_272);
    expect(ram.plannedBytes).toBeLessThanOrEqual(ram.capacityBytes);
  });

  it("refuses UD-Q4_K_XL on 384 GiB with needed vs available and what would fit", () => {
    const plan = buildPlan("cpu-ddr5-q4", loadStackConfig("cpu-ddr5-q4"));
    expect(plan.fits).toBe(false);
    expect(plan.refusal).toMatch(
      /CPU \(system RAM \(DDR5-4800\)\) needs \d{3}\.\d GB .* has 412\.3 GB \(384\.0 GiB\), short by/,
    );
    expect(plan.alternatives).toEqual({ tiersThatFit: ["UD-Q2_K_XL"], maxContextPerSlotThatFits: null });
  });

  it("offers the largest context that fits when only the context is too long", () => {
    const config = loadStackConfig("cpu-ddr5");
    const plan = buildPlan("cpu-ddr5-long", {
      ...config,
      serving: { ...config.serving, contextLength: 262144, parallelSlots: 4 },
    });
    expect(plan.fits).toBe(false);
    const best = plan.alternatives!.maxContextPerSlotThatFits!;
    expect(best).toBeGreaterThan(32768);
    expect(best).toBeLessThan(262144);
    expect(
      buildPlan("x", { ...config, serving: { ...config.serving, contextLength: best, parallelSlots: 4 } }).fits,
    ).toBe(true);
    expect(
      buildPlan("x", { ...config, serving: { ...config.serving, contextLength: best + 256, parallelSlots: 4 } }).fits,
    ).toBe(false);
  });

  it("keeps every GPU within its VRAM in the hybrid plan", () => {
    const plan = buildPlan("rtx3090x4", loadStackConfig("rtx3090x4"));
    expect(plan.placement.mode).toBe("hybrid");
    for (const device of plan.placement.memory)
      expect(device.plannedBytes, device.device).toBeLessThanOrEqual(device.capacityBytes);
    const gpus = plan.placement.memory.filter((device) => device.device.startsWith("CUDA"));
    expect(gpus).toHaveLength(4);
    expect(gpus.reduce((sum, device) => sum + device.kvBytes, 0)).toBe(32768 * 70_272);
  });
});
