import { describe, expect, it } from "vitest";
import { buildPlan } from "../../planner/plan";
import { loadStackConfig } from "../../planner/stack-file";

const plan = (stack: string) => buildPlan(stack, loadStackConfig(stack));

describe("projections against the seed", () => {
  it("cpu-ddr5 (16 cores): decode is the slower of streaming the bytes and the cores' arithmetic; the seed's 8–12 tok/s is checked, not assumed", () => {
    const cpu = plan("cpu-ddr5");
    // bytes per token: ~21B routed params at ~2.6 bits plus ~10B always-read params at 8 bits
    const traffic = cpu.projection.decodeTraffic[0]!;
    expect(traffic.bytesPerToken / 1e9).toBeGreaterThan(12);
    expect(traffic.bytesPerToken / 1e9).toBeLessThan(20);
    // Never faster than the memory allows.
    expect(cpu.projection.decodeTokensPerSecond).toBeLessThan(traffic.effectiveBandwidth / traffic.bytesPerToken);
    // On 16 Zen 4 cores the published runs' fitted arithmetic binds first, and the report says so.
    expect(traffic.computeBound).toBe(true);
    expect(traffic.computeBasis).toMatch(/^compute-bound: \d+\.\d GFLOP\/token on 16 threads/);
    const seed = cpu.seedChecks.find((check) => check.seedFigure === "8–12 tok/s")!;
    expect(seed.agrees).toBe(cpu.projection.decodeTokensPerSecond >= 8 && cpu.projection.decodeTokensPerSecond <= 12);
  });

  it("rtx3090x4 projects at the context the stack names, the CPU's share of a token dominating", () => {
    const rig = plan("rtx3090x4");
    expect(rig.projection.decodeDepthTokens).toBe(32768);
    const [cpu, ...gpus] = rig.projection.decodeTraffic;
    expect(cpu!.device).toBe("CPU");
    for (const gpu of gpus) expect(gpu.secondsPerToken).toBeLessThan(cpu!.secondsPerToken);
  });

  it("decode never speeds up as the KV cache fills; TTFT grows faster than linearly with the prompt", () => {
    const cpu = plan("cpu-ddr5");
    const speeds = cpu.projection.decodeByDepth.map((point) => point.tokensPerSecond);
    for (let i = 1; i < speeds.length; i++) expect(speeds[i]!).toBeLessThanOrEqual(speeds[i - 1]!);
    const gpu = plan("epyc-pro6000").projection.decodeByDepth.map((point) => point.tokensPerSecond);
    // There the KV cache sits on the GPU, whose reads grow with depth.
    expect(gpu.at(-1)!).toBeLessThan(gpu[0]!);
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

  it("hybrid prefill: on the rig's x4 links the CPU multiplies its experts; a x16 link streams them and reaches the first token sooner", () => {
    const narrow = plan("rtx3090x4");
    expect(narrow.projection.prefillBasis).toMatch(/on the CPU at .* \(no op offload\)/);
    const config = loadStackConfig("rtx3090x4");
    if (config.host.kind !== "bare-metal") throw new Error();
    const wide = buildPlan("x", { ...config, host: { ...config.host, pcie: { gen: 4, lanes: 16 } } });
    expect(wide.projection.prefillBasis).toMatch(/streamed over PCIe 4\.0 x16/);
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
    const dear = buildPlan("x", {
      ...config,
      costs: { ...config.costs!, api: { usdPerMillionInput: 30, usdPerMillionOutput: 120 } },
    });
    const breakEven = dear.cost!.breakEvenTokensPerMonth!;
    expect(breakEven).toBeGreaterThan(0);
    expect(breakEven).toBeLessThanOrEqual(dear.cost!.capacityTokensPerMonth);
    expect((breakEven / 1e6) * dear.cost!.apiUsdPerMillionTokensAtMix).toBeCloseTo(dear.cost!.monthlyUsd, 6);
  });
});
