/**
 * Stack knobs (serving.batch/ubatch/threads/threadsBatch/opOffload/numa/vCacheType, host.cpu.arch/
 * isa/sockets, host.memory.channelsPerSocket), `costs` left out, and the seed figures block shown
 * only for the hardware a claim describes. Expected values are worked out here from llama.cpp's
 * rules and the stacks' own numbers, not read back from the planner.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { stringify } from "yaml";
import { loadCatalog, type Catalog } from "../../planner/catalog";
import { parseStackConfig } from "../../planner/config";
import { ConfigError } from "../../planner/errors";
import { buildPlan, type Plan } from "../../planner/plan";
import { planToJson, renderComparison, renderPlan, type PlanJson } from "../../planner/report";
import { readStackValues } from "../../planner/stack-file";

type Raw = Record<string, unknown>;
const catalog = loadCatalog();
const raw = (stack: string): Raw => structuredClone(readStackValues(stack));
const section = (values: Raw, key: string): Raw => (values[key] ??= {}) as Raw;
const planOf = (values: Raw, options: { catalog?: Catalog } = {}): Plan =>
  buildPlan("knobs", parseStackConfig("knobs", values), { lock: null, ...options });
const withServing = (stack: string, serving: Raw): Plan => {
  const values = raw(stack);
  Object.assign(section(values, "serving"), serving);
  return planOf(values);
};
/** The value after a flag on the kit's command line; undefined when the flag is absent. */
const argOf = (plan: Plan, flag: string): string | undefined => {
  const at = plan.llamaServerArgs.indexOf(flag);
  return at < 0 ? undefined : plan.llamaServerArgs[at + 1];
};
const cpuOf = (plan: Plan) => plan.placement.memory[0]!;
function problemsOf(values: Raw): string[] {
  try {
    planOf(values);
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return (error as ConfigError).problems;
  }
  throw new Error("expected a ConfigError");
}

const base = planOf(raw("cpu-ddr5"));

describe("serving knobs flow into the command line and the estimate", () => {
  it("the committed stack keeps the planner's choice: llama.cpp's default batches, one thread per core", () => {
    expect(argOf(base, "--batch-size")).toBe("2048");
    expect(argOf(base, "--ubatch-size")).toBe("512");
    expect(argOf(base, "--threads")).toBe("16"); // EPYC 9124: 16 cores
    expect(base.llamaServerArgs).not.toContain("--cache-type-v");
    expect(base.llamaServerArgs).not.toContain("--no-op-offload");
  });

  it("batch/ubatch: rendered as set; the CPU compute buffer is per ubatch, so twice the ubatch is twice the buffer", () => {
    const plan = withServing("cpu-ddr5", { batch: 4096, ubatch: 1024 });
    expect(argOf(plan, "--batch-size")).toBe("4096");
    expect(argOf(plan, "--ubatch-size")).toBe("1024");
    expect(cpuOf(plan).computeBytes / cpuOf(base).computeBytes).toBeCloseTo(2, 6);
    expect(cpuOf(plan).plannedBytes).toBeGreaterThan(cpuOf(base).plannedBytes);
  });

  it("a ubatch above llama.cpp's default batch raises the batch with it (llama.cpp would clamp it)", () => {
    const plan = withServing("cpu-ddr5", { ubatch: 4096 });
    expect(argOf(plan, "--ubatch-size")).toBe("4096");
    expect(argOf(plan, "--batch-size")).toBe("4096");
    expect(plan.placement.estimate.settings.ubatch).toBe(4096);
  });

  it("threads: -t and -tb follow serving.threads; CPU prefill compute is per core, so half the threads is half the prefill", () => {
    const plan = withServing("cpu-ddr5", { threads: 8 });
    expect(argOf(plan, "--threads")).toBe("8");
    expect(argOf(plan, "--threads-batch")).toBe("8");
    expect(plan.projection.prefillTokensPerSecond / base.projection.prefillTokensPerSecond).toBeCloseTo(8 / 16, 6);
    // Decode on the seed's 16 cores is compute-bound (the corpus fit): its arithmetic time doubles on half the threads.
    expect(base.projection.decodeTraffic[0]!.computeBound).toBe(true);
    const perLayerSeconds =
      base.model.architecture.layers *
      base.projection.factors.find((factor) => factor.name === "cpu.decodeSecondsPerLayer")!.value;
    const arithmetic = (of: Plan) => 1 / of.projection.decodeTokensPerSecond - perLayerSeconds;
    expect(arithmetic(plan) / arithmetic(base)).toBeCloseTo(2, 6);
  });

  it("threadsBatch alone: -tb as set, -t stays one per core", () => {
    const plan = withServing("cpu-ddr5", { threadsBatch: 4 });
    expect(argOf(plan, "--threads")).toBe("16");
    expect(argOf(plan, "--threads-batch")).toBe("4");
    expect(plan.projection.prefillTokensPerSecond / base.projection.prefillTokensPerSecond).toBeCloseTo(4 / 16, 6);
  });

  it("opOffload false on a GPU host: --no-op-offload, and CUDA0 no longer holds the largest CPU weight it would multiply", () => {
    // On x16 links streaming wins, so the kit keeps op offload on unless the stack turns it off.
    const wide = raw("rtx3090x4");
    (wide.host as Raw).pcie = { gen: 4, lanes: 16 };
    const rig = planOf(wide);
    const offValues = structuredClone(wide);
    (offValues.serving as Raw).opOffload = false;
    const off = planOf(offValues);
    expect(rig.llamaServerArgs).not.toContain("--no-op-offload");
    expect(off.llamaServerArgs).toContain("--no-op-offload");
    // The largest matmul weight left on the CPU, found here from the tensor list and the placement.
    const largest = Math.max(
      ...rig.tensors
        .filter(
          (tensor) =>
            rig.placement.deviceOfTensor.get(tensor.name) === "CPU" &&
            tensor.cls !== "embedding" &&
            tensor.cls !== "norms" &&
            tensor.shape.length >= 2,
        )
        .map((tensor) => tensor.bytes),
    );
    expect(largest).toBeGreaterThan(0);
    expect(rig.placement.memory[1]!.computeBytes - off.placement.memory[1]!.computeBytes).toBe(largest);
    expect(off.projection.prefillBasis).toMatch(/no op offload/);
  });

  it("opOffload false on a CPU-only host: rendered as asked, said to change nothing, the estimate unchanged", () => {
    const plan = withServing("cpu-ddr5", { opOffload: false });
    expect(plan.llamaServerArgs).toContain("--no-op-offload");
    expect(plan.placement.reasons.join("\n")).toMatch(/no GPU here, so it changes nothing/);
    expect(cpuOf(plan).plannedBytes).toBe(cpuOf(base).plannedBytes);
    expect(plan.projection.prefillTokensPerSecond).toBeCloseTo(base.projection.prefillTokensPerSecond, 9);
  });

  it("kvCacheType q8_0 on MLA: -ctk q8_0 and -ctv q8_0 (llama-server refuses differing types on MLA), KV bytes × 34/64 (q8_0 is 34 bytes per 32 values, f16 64)", () => {
    const plan = withServing("cpu-ddr5", { kvCacheType: "q8_0" });
    expect(argOf(plan, "--cache-type-k")).toBe("q8_0");
    expect(argOf(plan, "--cache-type-v")).toBe("q8_0");
    expect(cpuOf(plan).kvBytes / cpuOf(base).kvBytes).toBeCloseTo(34 / 64, 9);
  });

  it("vCacheType on MLA: not passed, said so, nothing sized for it", () => {
    const plan = withServing("cpu-ddr5", { vCacheType: "q4_0" });
    expect(plan.llamaServerArgs).not.toContain("--cache-type-v");
    expect(plan.placement.reasons.join("\n")).toMatch(/vCacheType q4_0 is not passed: .*MLA, which stores no V cache/);
    expect(cpuOf(plan).kvBytes).toBe(cpuOf(base).kvBytes);
  });

  it("a model that stores V (GQA): -ctv is passed whenever V is sized, and the V type changes the KV bytes", () => {
    // The same model, given grouped-query attention: 8 KV heads of 128 for K and for V.
    const gqa = structuredClone(catalog);
    gqa.models[0]!.architecture.attention = { kind: "gqa", headCountKv: 8, keyLength: 128, valueLength: 128 };
    const values = (serving: Raw) => {
      const v = raw("cpu-ddr5");
      Object.assign(section(v, "serving"), serving);
      return v;
    };
    const sameType = planOf(values({ kvCacheType: "q8_0" }), { catalog: gqa });
    const smallerV = planOf(values({ kvCacheType: "q8_0", vCacheType: "q4_0" }), { catalog: gqa });
    expect(argOf(sameType, "--cache-type-v")).toBe("q8_0");
    expect(argOf(smallerV, "--cache-type-k")).toBe("q8_0");
    expect(argOf(smallerV, "--cache-type-v")).toBe("q4_0");
    // Per token per layer: K 1024 values q8_0 = 32 blocks × 34 B; V q8_0 the same, V q4_0 32 × 18 B.
    expect(cpuOf(smallerV).kvBytes / cpuOf(sameType).kvBytes).toBeCloseTo((32 * 34 + 32 * 18) / (32 * 34 * 2), 9);
  });
});

describe("host knobs: sockets, channels, NUMA, architecture and ISA", () => {
  it("channelsPerSocket: peak = channels × MT/s × 8 B; fewer channels, slower decode", () => {
    const values = raw("cpu-ddr5");
    section(section(values, "host"), "memory").channelsPerSocket = 4;
    const plan = planOf(values);
    expect(plan.host.memory.channels).toBe(4);
    expect(plan.host.memory.peakBandwidth).toBe(4 * 4800e6 * 8);
    expect(plan.projection.decodeTokensPerSecond).toBeLessThan(base.projection.decodeTokensPerSecond);
  });

  it("sockets: 2 × the platform's cores and channels, two NUMA nodes, -t 32 and --numa distribute; faster decode", () => {
    const values = raw("cpu-ddr5");
    section(section(values, "host"), "cpu").sockets = 2;
    const plan = planOf(values);
    expect(plan.host.cpu.cores).toBe(32);
    expect(plan.host.memory.peakBandwidth).toBe(24 * 4800e6 * 8);
    expect(argOf(plan, "--threads")).toBe("32");
    expect(argOf(plan, "--numa")).toBe("distribute");
    expect(argOf(base, "--numa")).toBeUndefined();
    expect(plan.projection.decodeTokensPerSecond).toBeGreaterThan(base.projection.decodeTokensPerSecond);
  });

  it("numa on two nodes: isolate and off each read one node's memory, so decode is slower than distribute; isolate also halves prefill threads", () => {
    const variant = (numa: string | undefined) => {
      const values = raw("cpu-ddr5");
      section(section(values, "host"), "cpu").sockets = 2;
      if (numa) section(values, "serving").numa = numa;
      return planOf(values);
    };
    const distribute = variant(undefined);
    const isolate = variant("isolate");
    const off = variant("off");
    const numactl = variant("numactl");
    expect(argOf(isolate, "--numa")).toBe("isolate");
    expect(argOf(numactl, "--numa")).toBe("numactl");
    expect(off.llamaServerArgs).not.toContain("--numa");
    expect(isolate.projection.decodeTokensPerSecond).toBeLessThan(distribute.projection.decodeTokensPerSecond);
    expect(off.projection.decodeTokensPerSecond).toBeLessThan(distribute.projection.decodeTokensPerSecond);
    expect(numactl.projection.decodeTokensPerSecond).toBeCloseTo(distribute.projection.decodeTokensPerSecond, 9);
    expect(isolate.projection.prefillTokensPerSecond / distribute.projection.prefillTokensPerSecond).toBeCloseTo(
      16 / 32,
      6,
    );
  });

  it("isa: without avx512 the Q2_K experts are not repacked (llama.cpp's Q2_K layout needs AVX-512); arm64 takes no x86 layout", () => {
    const variant = (cpu: Raw) => {
      const values = raw("cpu-ddr5");
      Object.assign(section(section(values, "host"), "cpu"), cpu);
      return planOf(values);
    };
    const q2k = base.tensors
      .filter((tensor) => tensor.type === "Q2_K" && base.placement.estimate.placement.repacked.has(tensor.name))
      .reduce((sum, tensor) => sum + tensor.bytes, 0);
    expect(q2k).toBeGreaterThan(0);
    const avx2 = variant({ isa: ["avx2"] });
    expect(cpuOf(base).repackBytes - cpuOf(avx2).repackBytes).toBe(q2k);
    const legacy = variant({ avx512: false });
    expect(cpuOf(legacy).repackBytes).toBe(cpuOf(avx2).repackBytes);
    // An arm64 CPU described without a catalog platform (no catalog platform is arm64), same RAM.
    const armValues = raw("cpu-ddr5");
    const host = section(armValues, "host");
    host.cpu = {
      model: "arm64 server CPU",
      cores: 16,
      allCoreGHz: 3.0,
      arch: "arm64",
      isa: ["neon", "dotprod", "i8mm"],
    };
    Object.assign(section(host, "memory"), { kind: "DDR5-4800", channels: 12 });
    const arm = planOf(armValues);
    expect(arm.host.cpu.arch).toBe("arm64");
    expect(cpuOf(arm).repackBytes).toBe(0);
    // Weights move between the two columns, never appear or vanish.
    for (const plan of [avx2, arm])
      expect(cpuOf(plan).modelBytes + cpuOf(plan).repackBytes).toBe(cpuOf(base).modelBytes + cpuOf(base).repackBytes);
  });
});

describe("bad knob values are refused, naming key, value and what is allowed", () => {
  const cases: [string, (values: Raw) => void, RegExp][] = [
    ["serving.batch", (v) => (section(v, "serving").batch = 0), /^serving\.batch: found 0; allowed: an integer ≥ 1/],
    [
      "serving.ubatch",
      (v) => (section(v, "serving").ubatch = -1),
      /^serving\.ubatch: found -1; allowed: an integer ≥ 1/,
    ],
    [
      "serving.ubatch > batch",
      (v) => Object.assign(section(v, "serving"), { batch: 1024, ubatch: 2048 }),
      /^serving\.ubatch: found 2048; allowed: at most serving\.batch \(1024\)/,
    ],
    [
      "serving.threads",
      (v) => (section(v, "serving").threads = 0),
      /^serving\.threads: found 0; allowed: an integer ≥ 1/,
    ],
    [
      "serving.threadsBatch",
      (v) => (section(v, "serving").threadsBatch = 2.5),
      /^serving\.threadsBatch: found 2\.5; allowed: /,
    ],
    [
      "serving.numa",
      (v) => (section(v, "serving").numa = "interleave"),
      /^serving\.numa: found "interleave"; allowed: one of "distribute", "isolate", "numactl", "off"/,
    ],
    [
      "serving.vCacheType",
      (v) => (section(v, "serving").vCacheType = "q3_k"),
      /^serving\.vCacheType: found "q3_k"; allowed: one of .*"q8_0"/,
    ],
    [
      "serving.opOffload",
      (v) => (section(v, "serving").opOffload = "no"),
      /^serving\.opOffload: found "no"; allowed: a boolean/,
    ],
    [
      "host.cpu.arch",
      (v) => (section(section(v, "host"), "cpu").arch = "riscv64"),
      /^host\.cpu\.arch: found "riscv64"; allowed: one of "x86-64", "arm64"/,
    ],
    [
      "host.cpu.isa",
      (v) => (section(section(v, "host"), "cpu").isa = ["avx2", "neon"]),
      /^host\.cpu\.isa\[1\]: found "neon"; allowed: for arch x86-64, one of avx2, avx512/,
    ],
    [
      "host.cpu.isa unknown",
      (v) => (section(section(v, "host"), "cpu").isa = ["avx10"]),
      /^host\.cpu\.isa\[0\]: found "avx10"; allowed: one of /,
    ],
    [
      "host.cpu.avx512 vs isa",
      (v) => Object.assign(section(section(v, "host"), "cpu"), { avx512: true, isa: ["avx2"] }),
      /^host\.cpu\.avx512: found true; allowed: a value that agrees with host\.cpu\.isa/,
    ],
    [
      "host.cpu.arch vs platform",
      (v) => (section(section(v, "host"), "cpu").arch = "arm64"),
      /^host\.cpu\.arch: found "arm64"; allowed: "x86-64" for cpu\.platform epyc-9124/,
    ],
    [
      "host.memory.channelsPerSocket",
      (v) => (section(section(v, "host"), "memory").channelsPerSocket = 0),
      /^host\.memory\.channelsPerSocket: found 0; allowed: /,
    ],
    [
      "channels vs channelsPerSocket",
      (v) => Object.assign(section(section(v, "host"), "memory"), { channels: 12, channelsPerSocket: 8 }),
      /^host\.memory\.channels: found 12; allowed: memory\.channelsPerSocket × cpu\.sockets = 8 × 1 = 8/,
    ],
  ];
  for (const [name, mutate, expected] of cases) {
    it(name, () => {
      const values = raw("cpu-ddr5");
      mutate(values);
      const problems = problemsOf(values);
      expect(problems).toHaveLength(1);
      expect(problems[0]).toMatch(expected);
    });
  }
});

describe("a stack without costs", () => {
  const values = raw("cpu-ddr5");
  delete values.costs;
  const plan = planOf(values);

  it("plans and projects everything; the cost section is omitted with one line saying why", () => {
    expect(plan.fits).toBe(true);
    expect(plan.cost).toBeUndefined();
    expect(plan.projection.decodeTokensPerSecond).toBeCloseTo(base.projection.decodeTokensPerSecond, 9);
    const text = renderPlan(plan);
    expect(text.match(/^Monthly cost: omitted — .*no kimi-kit:costs/gm)).toHaveLength(1);
    expect(text).not.toMatch(/^ {2}(break-even|capacity|API at)/m);
    expect(text).toContain("decode");
    // The break-even claim needs a cost; the others still apply to this build.
    expect(plan.seedChecks.some((check) => check.seedFigure.startsWith("50M"))).toBe(false);
    expect(plan.seedChecks.length).toBeGreaterThan(0);
  });

  it("--json carries cost null and why; --compare shows the row without a cost", () => {
    const json = planToJson(plan);
    expect(json.cost).toBeNull();
    expect(json.costOmitted).toMatch(/no kimi-kit:costs/);
    const table = renderComparison([planOf(raw("cpu-ddr5")), { ...plan, stack: "no-costs" }]);
    expect(table).toMatch(/^no-costs .* no costs /m);
  });

  it("the CLI plans it, as text, --json and --compare --json", () => {
    const dir = mkdtempSync(join(tmpdir(), "kimi-no-costs-"));
    const config = Object.fromEntries(Object.entries(values).map(([key, value]) => [`kimi-kit:${key}`, value]));
    writeFileSync(join(dir, "Pulumi.no-costs.yaml"), stringify({ config }));
    const root = join(__dirname, "..", "..");
    const run = (...args: string[]) =>
      spawnSync(join(root, "node_modules", ".bin", "tsx"), [join(root, "cli", "plan.ts"), ...args], {
        cwd: root,
        encoding: "utf8",
        env: { ...process.env, KIMI_KIT_STACKS_DIR: dir },
      });
    const text = run("--stack", "no-costs");
    expect(text.status).toBe(0);
    expect(text.stdout).toMatch(/Monthly cost: omitted/);
    const json = JSON.parse(run("--stack", "no-costs", "--json").stdout) as PlanJson;
    expect(json.cost).toBeNull();
    const compare = run("--compare", "--json");
    expect(compare.status).toBe(0);
    const rows = JSON.parse(compare.stdout) as PlanJson[];
    expect(rows.map((row) => [row.stack, row.cost])).toEqual([["no-costs", null]]);
  }, 60_000);
});

describe("seed figures: only for the hardware a claim describes, in the stack's own numbers", () => {
  it("absent for cloud instances (r7i.12xlarge; r7i.24xlarge, 8 channels)", () => {
    const r7i = planOf(raw("aws-r7i"));
    expect(r7i.seedChecks).toEqual([]);
    expect(renderPlan(r7i)).not.toMatch(/Seed figures/);
    const values = raw("aws-r7i");
    section(values, "host").instanceType = "r7i.24xlarge";
    const eight = planOf(values);
    expect(eight.host.memory.channels).toBe(8);
    expect(eight.seedChecks).toEqual([]);
    expect(renderPlan(eight)).not.toMatch(/Seed figures|12-channel/);
  });

  it("absent when the CPU build no longer is the seed's: two sockets, 32 cores", () => {
    const values = raw("cpu-ddr5");
    section(section(values, "host"), "cpu").sockets = 2;
    expect(planOf(values).seedChecks).toEqual([]);
  });

  it("present for cpu-ddr5 with its own channels, memory kind and peak", () => {
    const text = renderPlan(base);
    expect(text).toMatch(
      /Seed figures, checked \(this host matches a CPU-only host with about 384 GB of DDR5 and 16 cores\)/,
    );
    const bandwidth = base.seedChecks.find((check) => check.seedFigure === "100 GB/s")!;
    // EPYC 9124 platform: 12 channels of DDR5-4800 → 12 × 4800 MT/s × 8 B = 460.8 GB/s.
    expect(bandwidth.why).toContain("12 channel(s) of DDR5-4800");
    expect(bandwidth.why).toContain(`${((12 * 4800 * 8) / 1000).toFixed(1)} GB/s peak`);
    expect(bandwidth.why).not.toMatch(/12-channel socket/);
    expect(bandwidth.agrees).toBe(false); // 230 GB/s achievable is not ~100
  });

  it("the bandwidth check can agree: 4 channels of DDR5-4800 reach about 100 GB/s, and the text says 4 channels", () => {
    const values = raw("cpu-ddr5");
    section(section(values, "host"), "memory").channelsPerSocket = 4;
    const bandwidth = planOf(values).seedChecks.find((check) => check.seedFigure === "100 GB/s")!;
    expect(bandwidth.why).toContain("4 channel(s) of DDR5-4800");
    expect(bandwidth.why).toContain(`${((4 * 4800 * 8) / 1000).toFixed(1)} GB/s peak`);
    expect(bandwidth.agrees).toBe(true);
  });

  it("present for the 4 × RTX 3090 rig, and only its claims", () => {
    const rig = planOf(raw("rtx3090x4"));
    expect(rig.seedChecks.map((check) => check.hardware)).toEqual([
      "4 × RTX 3090 with about 256 GB of RAM",
      "4 × RTX 3090 with about 256 GB of RAM",
    ]);
    expect(planOf(raw("epyc-pro6000")).seedChecks).toEqual([]);
  });
});
