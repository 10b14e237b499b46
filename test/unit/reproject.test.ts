/**
 * planner/reproject.ts: the plan re-projected with a measured memory bandwidth. The expectations are
 * physics, not the estimator's formula: a decode step reads the CPU's weights from RAM (time ∝
 * 1/bandwidth) plus work that does not depend on bandwidth, so halving the bandwidth at most halves
 * decode, and decode time is affine in 1/bandwidth; prefill on a CPU is compute-bound.
 */
import { describe, expect, it } from "vitest";
import { loadCatalog } from "../../planner/catalog";
import { buildPlan } from "../../planner/plan";
import { hostWithMeasuredBandwidth, reprojectWithBandwidth } from "../../planner/reproject";
import { loadStackConfig } from "../../planner/stack-file";

const published = loadCatalog();
const cpuPlan = buildPlan("cpu-ddr5", loadStackConfig("cpu-ddr5"));
// With the corpus fit the seed's 16-core box decodes at its cores' arithmetic, not its bandwidth
// (tested below); the bandwidth physics is tested on a catalog whose CPU arithmetic never binds and
// whose per-layer cost is this machine's measured one (the corpus fit puts it at 0), so a token's
// time is memory plus work that does not depend on bandwidth.
const catalog = {
  ...published,
  efficiency: {
    ...published.efficiency,
    cpu: {
      ...published.efficiency.cpu,
      corpusFit: {
        fittedOn: "test: memory-bound",
        factors: {
          ...published.efficiency.cpu.corpusFit?.factors,
          decodeComputeEfficiency: 1,
          decodeSecondsPerLayer: published.efficiency.cpu.decodeSecondsPerLayer.value,
        },
        errorBands: [],
      },
    },
  },
};
const hybridPlan = buildPlan("epyc-pro6000", loadStackConfig("epyc-pro6000"));
const gbps = (plan: typeof cpuPlan) => plan.host.memory.achievableBandwidth / 1e9;

describe("reprojectWithBandwidth", () => {
  it("at the plan's own bandwidth reproduces the plan's projection exactly (same estimator, same flags)", () => {
    for (const plan of [cpuPlan, hybridPlan]) {
      const same = reprojectWithBandwidth(plan, gbps(plan), published);
      expect(same.decodeTokensPerSecond).toBe(plan.projection.decodeTokensPerSecond);
      expect(same.prefillTokensPerSecond).toBe(plan.projection.prefillTokensPerSecond);
      expect(same.ttftSeconds).toBe(plan.projection.ttftSeconds);
      expect(same.projection.decodeDepthTokens).toBe(plan.projection.decodeDepthTokens);
    }
  });

  it("CPU only: halving the bandwidth lowers decode, by less than half (the fixed per-layer work stays)", () => {
    expect(cpuPlan.placement.mode).toBe("cpu-only");
    const full = reprojectWithBandwidth(cpuPlan, gbps(cpuPlan), catalog).decodeTokensPerSecond;
    const half = reprojectWithBandwidth(cpuPlan, gbps(cpuPlan) / 2, catalog).decodeTokensPerSecond;
    const double = reprojectWithBandwidth(cpuPlan, gbps(cpuPlan) * 2, catalog).decodeTokensPerSecond;
    expect(half / full).toBeGreaterThan(0.5);
    expect(half / full).toBeLessThan(1);
    expect(double / full).toBeGreaterThan(1);
    expect(double / full).toBeLessThan(2);
    // Memory-bound: at the catalog's bandwidth most of a token's time is reading weights, so halving
    // the bandwidth costs well over a quarter of the speed.
    expect(half / full).toBeLessThan(0.75);
  });

  it("CPU only: time per token is memory time ∝ 1/bandwidth plus a constant — the share read off two bandwidths predicts a third", () => {
    const at = (factor: number) =>
      1 / reprojectWithBandwidth(cpuPlan, gbps(cpuPlan) * factor, catalog).decodeTokensPerSecond;
    const t1 = at(1);
    // t(1/2) = t1 (1 + m) where m is the memory share of t1; then t(1/4) must be t1 (1 + 3m).
    const memoryShare = at(0.5) / t1 - 1;
    expect(memoryShare).toBeGreaterThan(0);
    expect(memoryShare).toBeLessThan(1);
    expect(at(0.25) / t1).toBeCloseTo(1 + 3 * memoryShare, 9);
    // And a measured 0.48 × the datasheet-derived figure (as published big servers measure) gives
    // t1 (1 + m (1/0.48 - 1)).
    expect(at(0.48) / t1).toBeCloseTo(1 + memoryShare * (1 / 0.48 - 1), 9);
  });

  it("CPU only, compute-bound (the published fit on the seed's 16 cores): a measured bandwidth above the bound leaves decode unchanged, one far below it lowers decode", () => {
    const plan = buildPlan("cpu-ddr5", loadStackConfig("cpu-ddr5"));
    const cpu = plan.projection.decodeTraffic[0]!;
    expect(cpu.computeBound).toBe(true);
    const full = reprojectWithBandwidth(plan, gbps(plan), published).decodeTokensPerSecond;
    expect(reprojectWithBandwidth(plan, gbps(plan) * 2, published).decodeTokensPerSecond).toBe(full);
    expect(reprojectWithBandwidth(plan, gbps(plan) / 10, published).decodeTokensPerSecond).toBeLessThan(full);
  });

  it("CPU only: prefill is compute-bound, so it does not follow bandwidth", () => {
    const full = reprojectWithBandwidth(cpuPlan, gbps(cpuPlan), catalog).prefillTokensPerSecond;
    const half = reprojectWithBandwidth(cpuPlan, gbps(cpuPlan) / 2, catalog).prefillTokensPerSecond;
    expect(half).toBeLessThanOrEqual(full);
    expect(half / full).toBeGreaterThan(0.9);
  });

  it("hybrid: only the CPU's share of a token slows down — decode falls, by less than for CPU only", () => {
    expect(hybridPlan.placement.mode).toBe("hybrid");
    const ratio = (plan: typeof cpuPlan) =>
      reprojectWithBandwidth(plan, gbps(plan) / 2, catalog).decodeTokensPerSecond /
      reprojectWithBandwidth(plan, gbps(plan), catalog).decodeTokensPerSecond;
    expect(ratio(hybridPlan)).toBeLessThan(1);
    expect(ratio(hybridPlan)).toBeGreaterThan(ratio(cpuPlan));
  });

  it("replaces only the achievable bandwidth, and refuses a figure that is not a positive number", () => {
    const host = hostWithMeasuredBandwidth(cpuPlan.host, 123.4);
    expect(host.memory.achievableBandwidth).toBe(123.4e9);
    expect(host.memory.basis).toMatch(/measured on the host by HostPrep: 123.4 GB\/s/);
    expect({ ...host, memory: { ...host.memory, achievableBandwidth: 0, basis: "" } }).toEqual({
      ...cpuPlan.host,
      memory: { ...cpuPlan.host.memory, achievableBandwidth: 0, basis: "" },
    });
    expect(cpuPlan.host.memory.achievableBandwidth).toBe(gbps(cpuPlan) * 1e9); // the plan is not changed
    for (const bad of [0, -5, Number.NaN, Number.POSITIVE_INFINITY])
      expect(() => reprojectWithBandwidth(cpuPlan, bad, catalog)).toThrow(/positive number/);
  });
});
