import { describe, expect, it } from "vitest";
import { buildPlan } from "../../planner/plan";
import { loadStackConfig } from "../../planner/stack-file";

const plan = (stack: string) => buildPlan(stack, loadStackConfig(stack));

describe("projections against the seed", () => {
  it("cpu-ddr5 projects 8–12 tok/s decode for UD-Q2_K_XL", () => {
    const cpu = plan("cpu-ddr5");
    expect(cpu.projection.decodeTokensPerSecond).toBeGreaterThanOrEqual(8);
    expect(cpu.projection.decodeTokensPerSecond).toBeLessThanOrEqual(12);
    // bytes per token: ~21B routed params at ~2.6 bits plus ~10B always-read params at 8 bits
    const traffic = cpu.projection.decodeTraffic[0]!;
    expect(traffic.bytesPerToken / 1e9).toBeGreaterThan(12);
    expect(traffic.bytesPerToken / 1e9).toBeLessThan(20);
  });

  it("rtx3090x4 projects 5–9 tok/s at the context the stack names", () => {
    const rig = plan("rtx3090x4");
    expect(rig.projection.decodeDepthTokens).toBe(32768);
    expect(rig.projection.decodeTokensPerSecond).toBeGreaterThanOrEqual(5);
    expect(rig.projection.decodeTokensPerSecond).toBeLessThanOrEqual(9);
  });

  it("decode slows as the KV cache fills; TTFT grows faster than linearly with the prompt", () => {
    const cpu = plan("cpu-ddr5");
    const speeds = cpu.projection.decodeByDepth.map((point) => point.tokensPerSecond);
    for (let i = 1; i < speeds.length; i++) expect(speeds[i]!).toBeLessThan(speeds[i - 1]!);
    const prefill512 = 512 / cpu.projection.prefillTokensPerSecond;
    expect(cpu.projection.ttftSeconds).toBeGreaterThan(64 * prefill512);
  });

  it("prints its own 32K TTFT beside the seed's 17 minutes, and what ~100 GB/s would give", () => {
    const cpu = plan("cpu-ddr5");
    const ttft = cpu.seedChecks.find((check) => check.seedFigure === "17.0 min")!;
    expect(ttft.kitFigure).toMatch(/h|min/);
    expect(ttft.why).toMatch(/GFLOP\/token/);
    const bandwidth = cpu.seedChecks.find((check) => check.seedFigure === "100 GB/s")!;
    expect(bandwidth.why).toMatch(/would decode \d+\.\d tok\/s/);
  });

  it("streams CPU experts over PCIe in hybrid prefill, faster with a wider link", () => {
    const narrow = plan("rtx3090x4");
    expect(narrow.projection.prefillBasis).toMatch(/streamed over PCIe 4\.0 x4/);
    const config = loadStackConfig("rtx3090x4");
    if (config.host.kind !== "bare-metal") throw new Error();
    const wide = buildPlan("x", { ...config, host: { ...config.host, pcie: { gen: 4, lanes: 16 } } });
    expect(wide.projection.ttftSeconds).toBeLessThan(narrow.projection.ttftSeconds);
  });
});

describe("monthly cost and break-even", () => {
  it("owned hardware: amortization + power", () => {
    const cpu = plan("cpu-ddr5");
    expect(cpu.cost!.monthlyUsd).toBeCloseTo(5000 / 36 + 0.35 * 730 * 0.15, 6);
  });

  it("cloud: $/h × 730 plus the model volume", () => {
    const cloud = plan("aws-r7i");
    expect(cloud.cost!.lines[0]!.monthlyUsd).toBeCloseTo(3.1752 * 730, 6);
    expect(cloud.cost!.lines[1]!.basis).toBe("500 GB × $0.08/GB-month");
  });

  it("checks the seed's 50M-tokens claim: break-even is null with a reason when it lies beyond capacity", () => {
    const cpu = plan("cpu-ddr5");
    expect(cpu.cost!.breakEvenTokensPerMonth).toBeNull();
    expect(cpu.cost!.breakEvenReason).toMatch(/serves at most .*M tokens\/month/);
    expect(cpu.seedChecks.find((check) => check.seedFigure.startsWith("50M"))!.agrees).toBe(false);
  });

  it("gives a break-even volume when the API is dear enough", () => {
    const config = loadStackConfig("cpu-ddr5");
    const dear = buildPlan("x", { ...config, costs: { ...config.costs!, api: { usdPerMillionInput: 30, usdPerMillionOutput: 120 } } });
    const breakEven = dear.cost!.breakEvenTokensPerMonth!;
    expect(breakEven).toBeGreaterThan(0);
    expect(breakEven).toBeLessThanOrEqual(dear.cost!.capacityTokensPerMonth);
    expect((breakEven / 1e6) * dear.cost!.apiUsdPerMillionTokensAtMix).toBeCloseTo(dear.cost!.monthlyUsd, 6);
  });
});
