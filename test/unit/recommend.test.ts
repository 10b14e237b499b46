import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { CATALOG_DIR, CatalogError, loadCatalog, loadPrices } from "../../planner/catalog";
import { parseStackConfig } from "../../planner/config";
import { buildPlan } from "../../planner/plan";
import {
  enumerateCandidates,
  recommend,
  recommendRequest,
  renderStackFile,
  stackValues,
  type RecommendRequest,
} from "../../planner/recommend";
import { loadStackConfig } from "../../planner/stack-file";

const catalog = loadCatalog();
const prices = loadPrices(catalog);
const K26 = "unsloth/Kimi-K2.6-GGUF";
const request = (overrides: Partial<RecommendRequest> = {}): RecommendRequest => ({
  ...recommendRequest({ model: K26 }, catalog, prices),
  ...overrides,
});
const run = (overrides: Partial<RecommendRequest> = {}) => recommend(request(overrides), { catalog, prices });

describe("catalog/prices.yaml", () => {
  it("loads, and every figure in it names a source and a date", () => {
    const text = readFileSync(join(CATALOG_DIR, "prices.yaml"), "utf8");
    // Every line that states a price or a power figure carries its source and date on the same entry.
    const figures = text.split("\n").filter((line) => /\b(usd|watts|value|usdPerKwh): [\d.]+/.test(line));
    expect(figures.length).toBeGreaterThan(15);
    for (const line of figures) expect(line, line).toMatch(/source: "[^"]+", date: \d{4}-\d{2}/);
  });

  it("a figure without its source is refused, naming the file and the key", () => {
    const dir = mkdtempSync(join(tmpdir(), "prices-"));
    try {
      const text = readFileSync(join(CATALOG_DIR, "prices.yaml"), "utf8").replace(
        /(gpu: rtx-4090, usd: 1599, condition: new), source: "[^"]*",/,
        "$1,",
      );
      writeFileSync(join(dir, "prices.yaml"), text);
      expect(() => loadPrices(catalog, dir)).toThrow(CatalogError);
      expect(() => loadPrices(catalog, dir)).toThrow("catalog/prices.yaml: gpus[1].source: found nothing (missing)");
      // An id the catalog does not have is refused too.
      copyFileSync(join(CATALOG_DIR, "prices.yaml"), join(dir, "prices.yaml"));
      writeFileSync(
        join(dir, "prices.yaml"),
        readFileSync(join(dir, "prices.yaml"), "utf8").replace("gpu: rtx-5090,", "gpu: rtx-9090,"),
      );
      expect(() => loadPrices(catalog, dir)).toThrow(/gpus rtx-9090: not a GPU id in catalog\/gpus\.yaml/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("the candidates", () => {
  const { candidates, skipped } = enumerateCandidates(catalog, prices, "any");

  it("enumerate only priced parts, and say what was left out", () => {
    const platforms = new Set(
      candidates.flatMap((candidate) => (candidate.host.kind === "bare-metal" ? [candidate.host.cpu.platform] : [])),
    );
    expect([...platforms].sort()).toEqual(["epyc-9124", "ryzen-9-9950x"]);
    const gpus = new Set(
      candidates.flatMap((candidate) =>
        candidate.host.kind === "bare-metal" ? (candidate.host.gpus ?? []).map((gpu) => gpu.model) : [],
      ),
    );
    for (const unpriced of ["h100-sxm", "h200", "a100-40gb", "rtx-6000-ada", "rtx-a6000"])
      expect(gpus.has(unpriced)).toBe(false);
    const components = skipped.map((entry) => entry.component);
    for (const expected of ["platform epyc-9374f", "platform xeon-platinum-8488c", "gpu h200", "2-socket epyc-9124"])
      expect(components).toContain(expected);
    // Every catalog cloud instance is a candidate.
    expect(
      candidates
        .filter((candidate) => candidate.kind === "cloud")
        .map((candidate) => candidate.group)
        .sort(),
    ).toEqual(catalog.instances.map((instance) => instance.id).sort());
  });

  it("populate every channel and give each card at least x4 of the platform's GPU lanes", () => {
    for (const candidate of candidates) {
      if (candidate.host.kind !== "bare-metal") continue;
      const platform = catalog.cpuPlatforms.find(
        (entry) => entry.id === (candidate.host as { cpu: { platform: string } }).cpu.platform,
      )!;
      const build = prices.platforms.find((entry) => entry.platform === platform.id)!;
      // 12 channels × 1 DIMM on SP5; 2 channels × 2 DIMMs on AM5 (the catalog's DDR5-3600 is the 2DPC rating).
      expect(candidate.ramBytes / 1024 ** 3).toBe(
        platform.memory.channels * build.dimmsPerChannel * candidate.dimmGiB!,
      );
      for (const gpu of candidate.host.gpus ?? []) {
        expect(candidate.host.pcie!.lanes).toBeGreaterThanOrEqual(4);
        expect(gpu.count * candidate.host.pcie!.lanes).toBeLessThanOrEqual(build.pcie.gpuLanes);
      }
    }
    // AM5's one x16 slot: up to four cards (x4 each), never eight.
    const am5Counts = candidates.flatMap((candidate) =>
      candidate.host.kind === "bare-metal" && candidate.host.cpu.platform === "ryzen-9-9950x"
        ? (candidate.host.gpus ?? []).map((gpu) => gpu.count)
        : [],
    );
    expect(Math.max(...am5Counts)).toBe(4);
  });

  it("price a build from prices.yaml: the seed's EPYC box comes to the $5,000 and 350 W its stack states", () => {
    const seed = candidates.find((candidate) => candidate.label === "EPYC 9124, 12 × 32 GiB RDIMM")!;
    // By hand from catalog/prices.yaml: CPU 1100 + board 750 + 12 DIMMs for 2300 + base 850;
    // 200 W CPU + 12 × 2.5 W DIMMs + 120 W base.
    expect(seed.build!.priceUsd).toBe(1100 + 750 + 2300 + 850);
    expect(seed.build!.powerWatts).toBe(200 + 12 * 2.5 + 120);
    const stack = loadStackConfig("cpu-ddr5");
    expect(seed.build!.priceUsd).toBe(stack.costs!.hardware!.priceUsd);
    expect(seed.build!.powerWatts).toBe(stack.costs!.hardware!.powerWatts);
    // And the GPU rig of stacks/Pulumi.rtx3090x4.yaml: 550 + 350 + 800 + 4 × 800 + 900.
    const rig = candidates.find(
      (candidate) => candidate.label === "Ryzen 9 9950X, 4 × 64 GiB UDIMM, 4 × RTX 3090 at x4",
    )!;
    expect(rig.build!.priceUsd).toBe(5800);
  });
});

describe("recommend", () => {
  it("the cheapest build that holds UD-Q2_K_XL is the seed's EPYC box, and it plans exactly like stacks/Pulumi.cpu-ddr5.yaml", () => {
    const result = run({ tier: "UD-Q2_K_XL", kind: "bare-metal", top: 1 });
    const first = result.recommended[0]!;
    expect(first.candidate.label).toBe("EPYC 9124, 12 × 32 GiB RDIMM");
    // $5,000 ÷ 36 + 350 W × 730 h × $0.15/kWh, by hand.
    expect(first.monthlyUsd).toBeCloseTo(5000 / 36 + 0.35 * 730 * 0.15, 6);
    const seed = buildPlan("cpu-ddr5", loadStackConfig("cpu-ddr5"));
    expect(first.plan.projection.decodeTokensPerSecond).toBeCloseTo(seed.projection.decodeTokensPerSecond, 9);
    expect(first.plan.cost!.monthlyUsd).toBeCloseTo(seed.cost!.monthlyUsd, 9);
    expect(first.plan.cost!.breakEvenReason).toBe(seed.cost!.breakEvenReason);
  });

  it("--usd-per-kwh changes only the power line: 350 W × 730 h at $0.30", () => {
    const result = run({ tier: "UD-Q2_K_XL", kind: "bare-metal", top: 1, usdPerKwh: 0.3 });
    expect(result.recommended[0]!.monthlyUsd).toBeCloseTo(5000 / 36 + 0.35 * 730 * 0.3, 6);
  });

  it("every recommendation fits, meets --min-decode and the cap, and they come cheapest first", () => {
    const result = run({ tier: "any", minDecode: 5, maxMonthlyUsd: 400 });
    expect(result.recommended.length).toBe(5);
    for (const evaluation of result.recommended) {
      expect(evaluation.plan.fits).toBe(true);
      expect(evaluation.plan.projection.decodeTokensPerSecond).toBeGreaterThanOrEqual(5);
      expect(evaluation.monthlyUsd).toBeLessThanOrEqual(400);
      expect(evaluation.monthlyUsd).toBeCloseTo(evaluation.plan.cost!.monthlyUsd, 9);
    }
    const monthly = result.recommended.map((evaluation) => evaluation.monthlyUsd);
    expect(monthly).toEqual([...monthly].sort((a, b) => a - b));
    // Nothing skipped as "not needed" is cheaper than the last pick: the search went cheapest first.
    expect(result.counts.planned + result.counts.tooSmall + result.counts.largerDimms + result.counts.notNeeded).toBe(
      result.counts.pairs,
    );
  });

  it("near misses name the constraint they fail, and it is true of their plan", () => {
    const result = run({ tier: "any", minDecode: 5 });
    expect(result.nearMisses.length).toBeGreaterThan(0);
    for (const miss of result.nearMisses) {
      if (miss.status === "too-slow") {
        expect(miss.why).toMatch(/^decode \d+\.\d tok\/s is below --min-decode 5$/);
        expect(miss.plan.projection.decodeTokensPerSecond).toBeLessThan(5);
      } else {
        expect(miss.status).toBe("does-not-fit");
        expect(miss.why).toMatch(/^does not fit: .* short by /);
        expect(miss.plan.fits).toBe(false);
      }
      // A near miss is cheaper than the most expensive pick: otherwise it would not be worth naming.
      expect(miss.monthlyUsd).toBeLessThanOrEqual(result.recommended.at(-1)!.monthlyUsd);
    }
    expect(result.nearMisses.some((miss) => miss.status === "too-slow")).toBe(true);
    expect(result.nearMisses.some((miss) => miss.status === "does-not-fit")).toBe(true);
    // Under a cap nothing meets, the cheapest host that would qualify is the near miss, over by its own figure.
    const capped = run({ tier: "UD-Q2_K_XL", kind: "bare-metal", maxMonthlyUsd: 150 });
    expect(capped.recommended).toEqual([]);
    const over = capped.nearMisses.find((miss) => miss.status === "over-budget")!;
    expect(over.why).toBe("$177.21/month is over --max-monthly-usd 150");
    expect(over.plan.fits).toBe(true);
  });

  it("what it does not plan could not have been picked: the weights exceed RAM + VRAM, or a smaller DIMM of the same build decodes the same", () => {
    const { candidates } = enumerateCandidates(catalog, prices, "bare-metal");
    const model = catalog.models.find((entry) => entry.repo === K26)!;
    const q4 = model.tiers.find((tier) => tier.name === "UD-Q4_K_XL")!;
    const planOf = (label: string) => {
      const candidate = candidates.find((entry) => entry.label === label)!;
      return buildPlan("t", parseStackConfig("t", stackValues(candidate, model, q4, request(), prices)), {
        catalog,
        alternatives: false,
      });
    };
    // 384 GiB holds less than UD-Q4_K_XL's 585 GB of weights: ruled out before planning, and rightly.
    expect(planOf("EPYC 9124, 12 × 32 GiB RDIMM").fits).toBe(false);
    // The same build with 64 GiB DIMMs instead of 32 decodes alike (same channels, CPU and GPUs): only the price
    // differs.
    const q2 = model.tiers.find((tier) => tier.name === "UD-Q2_K_XL")!;
    const decodeOf = (label: string) => {
      const candidate = candidates.find((entry) => entry.label === label)!;
      return buildPlan("t", parseStackConfig("t", stackValues(candidate, model, q2, request(), prices)), {
        catalog,
        alternatives: false,
      }).projection.decodeTokensPerSecond;
    };
    expect(decodeOf("EPYC 9124, 12 × 64 GiB RDIMM")).toBeCloseTo(decodeOf("EPYC 9124, 12 × 32 GiB RDIMM"), 9);
    expect(decodeOf("EPYC 9124, 12 × 64 GiB RDIMM, 2 × RTX 3090")).toBeCloseTo(
      decodeOf("EPYC 9124, 12 × 32 GiB RDIMM, 2 × RTX 3090"),
      9,
    );
  });

  it("with nothing that qualifies, one line says which constraint fails and what would pass", () => {
    const slow = run({ tier: "UD-Q4_K_XL", minDecode: 500 });
    expect(slow.recommended).toEqual([]);
    expect(slow.problem).toMatch(
      /^no catalog host meets --min-decode 500 for Kimi K2\.6 UD-Q4_K_XL at 32768 tokens × 1 slot\(s\); the fastest is (.+) at (\d+\.\d) tok\/s: --min-decode [\d.]+ or less would find it$/,
    );
    // And it is the fastest: at that --min-decode the search finds it.
    const rate = Number(/at (\d+\.\d) tok\/s/.exec(slow.problem!)![1]);
    expect(run({ tier: "UD-Q4_K_XL", minDecode: Math.floor(rate * 10) / 10 }).recommended.length).toBeGreaterThan(0);

    const poor = run({ tier: "UD-Q2_K_XL", maxMonthlyUsd: 100 });
    expect(poor.problem).toBe(
      "--max-monthly-usd 100 is below the cheapest host that holds Kimi K2.6 UD-Q2_K_XL: EPYC 9124, 12 × 32 GiB RDIMM at $177.21/month",
    );

    const noBareMetal = run({ tier: "BF16", kind: "bare-metal" });
    expect(noBareMetal.problem).toMatch(
      /^--kind bare-metal: no catalog bare-metal build holds Kimi K2\.6 BF16 at 32768 tokens × 1 slot\(s\) \(the largest, .* of RAM \+ VRAM for [\d.]+ GiB of BF16 weights\); --kind cloud does: the cheapest is AWS p5\.48xlarge/,
    );

    // 64 slots of 262144 tokens: no cloud instance holds the KV cache beside UD-Q8_K_XL, and no bare-metal
    // build either; a smaller tier does, and the line names the cheapest host for it.
    const noCloud = run({ tier: "UD-Q8_K_XL", kind: "cloud", contextLength: 262144, slots: 64 });
    expect(noCloud.problem).toMatch(
      /^--kind cloud: no catalog cloud instance holds Kimi K2\.6 UD-Q8_K_XL at 262144 tokens × 64 slot\(s\) \(the closest, AWS [\w.]+, UD-Q8_K_XL: .*short by .*\); UD-Q2_K_XL fits: the cheapest host is .* at \$[\d,]+\.\d\d\/month$/,
    );
  });

  it("a recommendation written as a stack plans unchanged", () => {
    const dir = mkdtempSync(join(tmpdir(), "recommend-stack-"));
    try {
      for (const kind of ["bare-metal", "cloud"] as const) {
        const result = run({ tier: "any", minDecode: kind === "cloud" ? undefined : 5, kind, top: 1 });
        const first = result.recommended[0]!;
        writeFileSync(
          join(dir, `Pulumi.written-${kind}.yaml`),
          renderStackFile(first, result, `written-${kind}`, "npm run plan -- --recommend (test)"),
        );
        const replanned = buildPlan(`written-${kind}`, loadStackConfig(`written-${kind}`, dir), { catalog });
        expect(replanned.fits).toBe(true);
        expect(replanned.tier.name).toBe(first.tier.name);
        expect(replanned.placement.mode).toBe(first.plan.placement.mode);
        expect(replanned.projection.decodeTokensPerSecond).toBe(first.plan.projection.decodeTokensPerSecond);
        expect(replanned.cost!.monthlyUsd).toBe(first.plan.cost!.monthlyUsd);
        expect(replanned.llamaServerArgs).toEqual(first.plan.llamaServerArgs);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("searches K2.6, every tier, every kind, within seconds even when it must plan everything", () => {
    const started = performance.now();
    const result = run({ tier: "any", minDecode: 10_000 });
    const seconds = (performance.now() - started) / 1000;
    expect(result.recommended).toEqual([]);
    expect(result.counts.notNeeded).toBe(0);
    // Generous for a loaded CI machine; on an idle one it takes a few seconds.
    expect(seconds).toBeLessThan(60);
  }, 120_000);
});
