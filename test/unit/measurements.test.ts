import { readFileSync } from "node:fs";
import { parse as parseYaml } from "yaml";
import { describe, expect, it } from "vitest";
import {
  GPU_ONLY_PLACEHOLDER_HOST,
  PLATFORM_FACTS,
  convert,
  predatedChanges,
  stripAnnotations,
  fitFactor,
  fitPhase,
  leaveOneSourceOut,
  projectRun,
  quantile,
  runCatalogModel,
  runModel,
  serverWords,
  sizedFromFile,
  splitWords,
} from "../../bench/published";
import { loadCatalog } from "../../planner/catalog";
import { tensorsFromArchitecture, totalBytes } from "../../planner/tensors";
import {
  MEASUREMENTS_FILE,
  MeasurementsError,
  hardwareClass,
  loadMeasurements,
  mainlineFitRuns,
  parseMeasurements,
  quantFamily,
  quantSizeProblem,
  runsBySource,
} from "../../planner/measurements";

function rawCorpus(): Record<string, unknown[]> {
  return parseYaml(readFileSync(MEASUREMENTS_FILE, "utf8")) as Record<string, unknown[]>;
}

describe("catalog/measurements.yaml", () => {
  const corpus = loadMeasurements();

  it("parses against the schema", () => {
    expect(corpus.runs.length).toBeGreaterThan(0);
    expect(corpus.sources.length).toBeGreaterThan(0);
  });

  it("gives every run a source with a URL and at least one verbatim quote naming one of its figures", () => {
    const sources = new Map(corpus.sources.map((source) => [source.id, source]));
    for (const run of corpus.runs) {
      const source = sources.get(run.source);
      expect(source, run.id).toBeDefined();
      expect(source!.url, run.id).toMatch(/^https?:\/\//);
      expect(run.quotes.length, run.id).toBeGreaterThan(0);
      // At least one quote carries one of the figures recorded (as printed: 7.30, 22.05, 14…).
      const figures = [run.decode?.tokensPerSecond, run.prefill?.tokensPerSecond].filter(
        (value): value is number => value !== undefined,
      );
      const printed = figures.flatMap((value) => [String(value), value.toFixed(2), value.toFixed(1)]);
      const quoted = run.quotes.join(" ");
      expect(
        printed.some((text) => quoted.includes(text)),
        `${run.id}: no quote contains ${figures.join(" or ")}`,
      ).toBe(true);
    }
  });

  it("counts its runs and distinct sources, and says so in the header", () => {
    const bySource = runsBySource(corpus);
    const mainline = corpus.runs.filter((run) => !run.engine.fork);
    const mainlineSources = new Set(mainline.map((run) => run.source));
    const forks = corpus.runs.filter((run) => run.engine.fork);
    const forkSources = new Set(forks.map((run) => run.source));
    const header = readFileSync(MEASUREMENTS_FILE, "utf8").split("\n").slice(0, 12).join("\n");
    expect(header).toContain(`${corpus.runs.length} runs from ${bySource.size} distinct sources`);
    expect(header).toContain(`${mainline.length} mainline llama.cpp runs from ${mainlineSources.size}`);
    expect(header).toContain(`${forks.length} fork runs`);
    expect(header).toContain(`from ${forkSources.size} sources`);
    // Every declared source has a run (exclusions live in their own list).
    expect(bySource.size).toBe(corpus.sources.length);
    // The issue's aim is >= 25 runs from >= 12 sources overall.
    expect(corpus.runs.length).toBeGreaterThanOrEqual(25);
    expect(bySource.size).toBeGreaterThanOrEqual(12);
  });

  it("keeps forks out of the mainline fit and gives every excluded mainline run a reason", () => {
    const fit = mainlineFitRuns(corpus);
    expect(fit.every((run) => !run.engine.fork)).toBe(true);
    for (const run of corpus.runs.filter((entry) => !entry.engine.fork && !fit.includes(entry))) {
      expect(run.fit?.excluded, run.id).toMatch(/\w/);
    }
    for (const exclusion of corpus.exclusions) expect(exclusion.reason.length).toBeGreaterThan(10);
  });

  it("states every quant size inside its family's bits-per-weight range", () => {
    for (const run of corpus.runs) expect(quantSizeProblem(run.model), run.id).toBeUndefined();
  });

  it("classes runs by where the experts run", () => {
    const classes = new Set(corpus.runs.map(hardwareClass));
    expect(classes).toContain("cpu-only/arm");
    expect(classes).toContain("hybrid/x86");
    expect(classes).toContain("gpu-only");
  });
});

describe("the quant size rule", () => {
  it("names quant families", () => {
    expect(quantFamily("UD-Q4_K_XL")).toBe("Q4");
    expect(quantFamily("IQ2_KL")).toBe("IQ2");
    expect(quantFamily("Q8_0")).toBe("Q8");
    expect(quantFamily("MXFP4")).toBe("MXFP4");
    expect(quantFamily("UD-IQ1_S")).toBe("IQ1");
  });

  it("refuses a run whose stated size is outside its family's range, naming the run", () => {
    const raw = rawCorpus();
    const runs = raw.runs as Record<string, unknown>[];
    const bad = structuredClone(runs[0]!);
    bad.id = "constructed-bad-q8";
    // 307.20 GiB for 672.05 B parameters is 3.93 bits per weight: not a Q8_0 file.
    bad.model = { name: "DeepSeek-R1", totalParamsB: 672.05, quant: "Q8_0", fileSize: "307.20GiB", statedBpw: null };
    expect(() => parseMeasurements({ ...raw, runs: [...runs, bad] })).toThrow(MeasurementsError);
    expect(() => parseMeasurements({ ...raw, runs: [...runs, bad] })).toThrow(
      /constructed-bad-q8: Q8_0: 307\.20GiB for 672\.05 B parameters is 3\.93 bits per weight, outside the Q8 family's 8–8\.7/,
    );
  });

  it("refuses a stated bpw outside the family's range", () => {
    expect(quantSizeProblem({ quant: "IQ4_NL", totalParamsB: null, fileSize: null, statedBpw: 2.7 })).toMatch(
      /outside the IQ4 family/,
    );
    expect(quantSizeProblem({ quant: "UD-IQ2_M", totalParamsB: null, fileSize: null, statedBpw: 2.7 })).toBeUndefined();
  });

  it("refuses an unknown quant family, a run with an unknown source and a run without figures", () => {
    const raw = rawCorpus();
    const runs = raw.runs as Record<string, unknown>[];
    const odd = structuredClone(runs[0]!);
    odd.id = "constructed-odd";
    odd.model = { ...(odd.model as object), quant: "EXL2-4.0" };
    expect(() => parseMeasurements({ ...raw, runs: [...runs, odd] })).toThrow(
      /constructed-odd: quant EXL2-4.0 is of no known family/,
    );
    const orphan = structuredClone(runs[0]!);
    orphan.id = "constructed-orphan";
    orphan.source = "nowhere";
    expect(() => parseMeasurements({ ...raw, runs: [...runs, orphan] })).toThrow(
      /constructed-orphan: unknown source nowhere/,
    );
    const empty = structuredClone(runs[0]!);
    empty.id = "constructed-empty";
    empty.decode = null;
    empty.prefill = null;
    expect(() => parseMeasurements({ ...raw, runs: [...runs, empty] })).toThrow(
      /constructed-empty: neither decode nor prefill/,
    );
  });
});

describe("bench/published helpers", () => {
  it("splits a command line, fits a factor in (0, 1] and takes quantiles", () => {
    expect(splitWords(`-ot "blk\\.(3|4)\\.ffn_.*=CUDA0" -ot exps=CPU --threads 32`)).toEqual([
      "-ot",
      "blk\\.(3|4)\\.ffn_.*=CUDA0",
      "-ot",
      "exps=CPU",
      "--threads",
      "32",
    ]);
    // A projection proportional to the factor, measured at 0.42 of the factor-1 figure.
    expect(fitFactor((factor) => Math.log((100 * factor) / 42) ** 2)).toBeCloseTo(0.42, 3);
    expect(fitFactor((factor) => Math.log((100 * factor) / 150) ** 2)).toBeCloseTo(1, 3);
    expect(quantile([1, 2, 3, 4, 5], 0.5)).toBe(3);
    expect(quantile([0, 10], 0.9)).toBeCloseTo(9);
  });
});

describe("bench/published conversion", () => {
  it("drops annotations in parentheses but keeps the groups of a quoted -ot pattern", () => {
    expect(stripAnnotations("-t 64 (pp512)")).toBe("-t 64");
    expect(stripAnnotations("single-stream decode (threads not stated for this row; decode peaks at 64 threads)")).toBe(
      "single-stream decode",
    );
    expect(stripAnnotations(`-ot "blk\\.(3|4|5)\\.ffn_.*=CUDA0" -ot exps=CPU (19 of 75 layers)`)).toBe(
      `-ot "blk\\.(3|4|5)\\.ffn_.*=CUDA0" -ot exps=CPU`,
    );
    // The corpus's 7800X3D run: layers 0-6's FFN on CUDA0 as its -ot rule says, not on the CPU.
    const catalog = loadCatalog();
    const run = loadMeasurements().runs.find((entry) => entry.id === "deepseek-v3-0324-udiq3xxs-7800x3d-5gpu")!;
    const conversion = convert(run, catalog);
    if (!("inputs" in conversion)) throw new Error(conversion.blockers.join("; "));
    expect(conversion.inputs.flags.overrideTensor?.[0]?.pattern).toBe("blk.(0|1|2|3|4|5|6).ffn.");
  });

  it("translates benchmark-tool flags into llama-server words", () => {
    expect(serverWords("-ub 4096 --flash-attn -npp 4096 -ntg 1024 -npl 1")!.words).toEqual([
      "-ub",
      "4096",
      "--flash-attn",
      "on",
      "--parallel",
      "1",
    ]);
    expect(serverWords("-ngl 62 -fa 0 -p 512 -n 128 -t 12")!.words).toEqual([
      "-ngl",
      "62",
      "--flash-attn",
      "off",
      "-t",
      "12",
    ]);
    expect(serverWords("--threads 12 -no-cnv --prio 2")!.words).toEqual(["--threads", "12"]);
    expect(serverWords("single-stream decode")).toBeUndefined();
    // Whether weights are mapped decides pinned vs pageable op-offload copies, so it is kept.
    expect(serverWords("--no-mmap -ngl 36")!.words).toEqual(["--load-mode", "none", "-ngl", "36"]);
    expect(serverWords("-mmp 0 -ngl 99")!.words).toEqual(["--load-mode", "none", "-ngl", "99"]);
    expect(serverWords("-mmp 1 -ngl 99")!.words).toEqual(["--load-mode", "mmap", "-ngl", "99"]);
  });

  it("builds DeepSeek-V3/R1 and GLM-5 with their published parameter counts", () => {
    const models = loadCatalog().models;
    const params = (id: string) => {
      const model = models.find((entry) => entry.id === id)!;
      return (
        tensorsFromArchitecture(model.architecture, model.tiers[0]!).reduce((sum, tensor) => sum + tensor.elements, 0) /
        1e9
      );
    };
    expect(params("deepseek-v3")).toBeCloseTo(671, -1);
    expect(params("glm-5")).toBeGreaterThan(735);
    expect(params("glm-5")).toBeLessThan(755);
  });

  it("converts a mainline run with platform facts, and refuses one without a described host", () => {
    const catalog = loadCatalog();
    const runs = loadMeasurements().runs;
    const kimi = convert(
      runs.find((run) => run.id === "kimi-k2-q4kxl-dual-9355-rtx6000pro")!,
      catalog,
    );
    expect("inputs" in kimi && kimi.inputs.host.memory.channels).toBe(23);
    expect("inputs" in kimi && kimi.inputs.flags.flashAttn).toBe("on");
    // No catalog platform: the datasheet clock of PLATFORM_FACTS stands in, and says so.
    expect("inputs" in kimi && kimi.inputs.host.cpu.allCoreGHz).toBe(3.55);
    expect("inputs" in kimi && kimi.inputs.assumptions.join("; ")).toMatch(/3\.55 GHz all-core of base 3\.55 GHz/);
    // A run on a quarter of the cores or fewer holds the boost clock.
    const light = convert(
      runs.find((run) => run.id === "deepseek-r1-udiq1s-epyc9654-3090-ngl8")!,
      catalog,
    );
    expect("inputs" in light && light.inputs.host.cpu.allCoreGHz).toBe(3.7);
    // A CPU named by neither the catalog nor PLATFORM_FACTS has no clock: the run is not projected.
    const n2 = runs.find((run) => run.id === "glm52-q4km-neoverse-n2-96c")!;
    const noClock = convert(
      { ...n2, hardware: { ...n2.hardware, cpu: { ...n2.hardware.cpu, model: "Some-Arm 96-core" } } },
      catalog,
    );
    expect("blockers" in noClock && noClock.blockers.join("; ")).toMatch(/no all-core clock for CPU Some-Arm 96-core/);
    const unknownHost = convert(
      runs.find((run) => run.id === "deepseek-v3-q4km-4x3090-ngl7")!,
      catalog,
    );
    expect("blockers" in unknownHost && unknownHost.blockers.join("; ")).toMatch(/no bandwidth/);
  });

  it("fits only the factors its runs inform: with no multi-socket run the NUMA gain keeps its prior", () => {
    const catalog = loadCatalog();
    const runs = loadMeasurements().runs;
    const singleSocket = ["deepseek-r1-q8-6980p-1s-mainline", "deepseek-r1-udiq1s-epyc7713-2xa6000ada"].map((id) => {
      const conversion = convert(
        runs.find((run) => run.id === id)!,
        catalog,
      );
      if (!("inputs" in conversion)) throw new Error(`${id} does not convert`);
      return conversion;
    });
    const { factors, informed } = fitPhase(singleSocket, catalog, "decode");
    expect(informed).not.toContain("numaRemoteGain");
    expect(factors.numaRemoteGain).toBe(catalog.efficiency.cpu.priors.numaRemoteGain.value);
    // The 16-of-64-threads run informs the arithmetic term.
    expect(informed).toContain("decodeComputeEfficiency");
  }, 60_000);

  it("fits each held-out source's factor without that source's runs: changing its figures leaves its projection unchanged", () => {
    const catalog = loadCatalog();
    const runs = loadMeasurements().runs;
    const pick = (id: string) => {
      const conversion = convert(
        runs.find((run) => run.id === id)!,
        catalog,
      );
      if (!("inputs" in conversion)) throw new Error(`${id} does not convert`);
      return conversion;
    };
    const held = pick("deepseek-r1-q8-6980p-1s-mainline");
    const other = pick("deepseek-r1-udiq1s-epyc7713-2xa6000ada");
    expect(held.run.source).not.toBe(other.run.source);
    // The held-out source's measured decode, tripled: a fit that saw it would move.
    const tripled = {
      ...held,
      run: { ...held.run, decode: { ...held.run.decode!, tokensPerSecond: held.run.decode!.tokensPerSecond * 3 } },
    };
    const projected = (residuals: ReturnType<typeof leaveOneSourceOut>, id: string) => {
      const entry = residuals.find((residual) => residual.run.id === id && residual.phase === "decode")!;
      return (entry.error + 1) * entry.run.decode!.tokensPerSecond;
    };
    const before = leaveOneSourceOut([held, other], catalog);
    const after = leaveOneSourceOut([tripled, other], catalog);
    expect(projected(after, held.run.id)).toBeCloseTo(projected(before, held.run.id), 6);
    // The other source's fit does train on the changed runs, so the test can tell the difference.
    expect(Math.abs(projected(after, other.run.id) / projected(before, other.run.id) - 1)).toBeGreaterThan(0.01);
  }, 60_000);
});

describe("bench/published: runs the catalog knows under another name or quant", () => {
  const catalog = loadCatalog();
  const runs = loadMeasurements().runs;
  const byId = (id: string) => runs.find((run) => run.id === id)!;

  it("maps a model by the corpus's explicit catalogModel alias, and refuses an alias the catalog lacks", () => {
    const tencent = byId("deepseek-q8-epyc9135or9115-12xddr5-5600");
    expect(tencent.model.catalogModel).toBe("deepseek-v3");
    const aliased = runCatalogModel(tencent, catalog);
    expect(typeof aliased !== "string" && aliased.id).toBe("deepseek-v3");
    // Without the alias the name matches no rule (no fuzzy matching).
    const bareModel = { ...tencent.model };
    delete bareModel.catalogModel;
    expect(runCatalogModel({ ...tencent, model: bareModel }, catalog)).toMatch(
      /no architecture for DeepSeek-671B \(R1\/V3\)/,
    );
    expect(runCatalogModel({ ...tencent, model: { ...tencent.model, catalogModel: "deepseek-v4" } }, catalog)).toMatch(
      /catalogModel deepseek-v4 of DeepSeek-671B \(R1\/V3\) is not in catalog\/models\.yaml/,
    );
    // The alias is stated beside the run; the run stays out for its corpus reasons, not for its name.
    const found = runModel(tencent, catalog);
    expect(typeof found !== "string" && found.assumptions.join("; ")).toMatch(
      /DeepSeek-671B \(R1\/V3\) is deepseek-v3's architecture/,
    );
    const conversion = convert(tencent, catalog);
    expect("blockers" in conversion && conversion.blockers.join("; ")).not.toMatch(/no architecture/);
    expect("blockers" in conversion && conversion.blockers.join("; ")).toMatch(/CPU model ambiguous/);
    // Kimi-K3 runs map to the catalog's kimi-k3; DeepSeek-V4-Flash (deepseek4) stays unmapped.
    const k3 = runCatalogModel(byId("kimi-k3-mxfp4-2x6248-2xrtx6000ada"), catalog);
    expect(typeof k3 !== "string" && k3.id).toBe("kimi-k3");
    expect(runCatalogModel(byId("deepseek-v4-flash-udq4-epyc9v45-cpu"), catalog)).toMatch(
      /no architecture for DeepSeek-V4-Flash/,
    );
  });

  it("sizes a quant that is no catalog tier from its stated file size, scaling only the routed experts", () => {
    const run = byId("deepseek-v3-q4km-4x3090-ngl7");
    const model = catalog.models.find((entry) => entry.id === "deepseek-v3")!;
    expect(model.tiers.map((tier) => tier.name)).not.toContain("Q4_K_M");
    const found = runModel(run, catalog);
    if (typeof found === "string") throw new Error(found);
    expect(found.tier).toBeUndefined();
    // The whole file is the stated 376.65 GiB.
    expect(totalBytes(found.tensors) / (376.65 * 2 ** 30)).toBeCloseTo(1, 9);
    expect(found.assumptions.join("; ")).toMatch(
      /Q4_K_M is no deepseek-v3 tier: tensors of its UD-Q3_K_XL .* routed experts' bytes ×1\.\d+ .* the stated 376\.65GiB/,
    );
    // Every tensor but the routed experts is the nearest tier's, unchanged.
    const nearest = tensorsFromArchitecture(
      model.architecture,
      model.tiers.find((tier) => tier.name === "UD-Q3_K_XL")!,
    );
    const others = (tensors: typeof nearest) =>
      tensors.filter((tensor) => tensor.cls !== "routedExperts").map((tensor) => [tensor.name, tensor.bytes]);
    expect(others(found.tensors)).toEqual(others(nearest));
    const experts = found.tensors.filter((tensor) => tensor.cls === "routedExperts");
    const expertBpw =
      (experts.reduce((sum, tensor) => sum + tensor.bytes, 0) * 8) /
      experts.reduce((sum, tensor) => sum + tensor.elements, 0);
    expect(expertBpw).toBeGreaterThan(4.3);
    expect(expertBpw).toBeLessThan(5.2);
    // The run no longer lacks a tier; it stays out because its CPU and memory are not stated.
    const conversion = convert(run, catalog);
    expect("blockers" in conversion && conversion.blockers.join("; ")).not.toMatch(/no tier/);
    expect("blockers" in conversion && conversion.blockers.join("; ")).toMatch(/no bandwidth/);
    // A stated size outside the family's bits-per-weight range for the architecture is refused.
    expect(sizedFromFile(model, "Q4_K_M", "200GiB")).toMatch(/outside the Q4 family's 4\.3–5\.2/);
    // A quant with neither a tier nor a stated size is not guessed.
    expect(runModel({ ...run, model: { ...run.model, fileSize: null } }, catalog)).toMatch(
      /no tier Q4_K_M for deepseek-v3 .* no stated file size/,
    );
  });

  it("reads a quant label as the catalog tier the corpus names in catalogTier", () => {
    const run = byId("glm52-q4k-neoverse-n2-pp512-t64");
    const found = runModel(run, catalog);
    expect(typeof found !== "string" && found.tier?.name).toBe("UD-Q4_K");
    expect(runModel({ ...run, model: { ...run.model, catalogTier: "Q5_K_M" } }, catalog)).toMatch(
      /catalogTier Q5_K_M is not a tier of glm-5/,
    );
  });

  it("projects the Neoverse-N2 runs with the datasheet facts, and a Ryzen 9 9900X host with its own", () => {
    const n2 = convert(byId("glm52-q4km-neoverse-n2-96c"), catalog);
    if (!("inputs" in n2)) throw new Error(n2.blockers.join("; "));
    expect(n2.inputs.host.cpu.allCoreGHz).toBe(3.4);
    expect(n2.inputs.host.cpu.fp32FlopsPerCycle).toBe(16);
    expect(n2.inputs.host.cpu.arch).toBe("arm64");
    expect(n2.inputs.assumptions.join("; ")).toMatch(/Neoverse-N2 96-core read as Azure Cobalt 100/);
    // The 9900X runs stay out for their corpus reasons; without them, the datasheet describes the CPU.
    const ryzen = byId("glm52-udiq2m-9900x-4x3090-t12");
    expect(ryzen.flags).toMatch(/^-t 12 /);
    const unexcluded = { ...ryzen };
    delete unexcluded.fit;
    const conversion = convert(unexcluded, catalog);
    if (!("inputs" in conversion)) throw new Error(conversion.blockers.join("; "));
    expect(conversion.inputs.flags.threads).toBe(12);
    expect(conversion.inputs.host.cpu.cores).toBe(PLATFORM_FACTS["AMD Ryzen 9 9900X"]!.cores);
    expect(conversion.inputs.host.cpu.cores).toBe(12);
    expect(conversion.inputs.host.cpu.allCoreGHz).toBe(4.4);
    expect(conversion.inputs.host.cpu.fp32FlopsPerCycle).toBe(64);
    expect(conversion.inputs.host.cpu.ccds).toBe(2);
  });
});

describe("bench/published: a run with every layer on its GPUs and no stated host", () => {
  it("converts with a placeholder CPU that its projection does not read", () => {
    const catalog = loadCatalog();
    const run = loadMeasurements().runs.find((entry) => entry.id === "deepseek-r1-udiq1s-2xh100")!;
    expect(run.hardware.cpu.model).toBeNull();
    const standard = convert(run, catalog);
    if (!("inputs" in standard)) throw new Error(standard.blockers.join("; "));
    expect(standard.inputs.assumptions.join("; ")).toMatch(/CPU and memory not stated: a placeholder host/);
    // Ten times the placeholder's cores and channels, four times its clock and eight times its FLOP/cycle (the most a
    // stack host allows): the projection stays put.
    const tenfold = convert(run, catalog, {
      gpuOnlyPlaceholder: {
        ...GPU_ONLY_PLACEHOLDER_HOST,
        cores: 80,
        allCoreGHz: 8,
        fp32FlopsPerCycle: 256,
        channels: 20,
      },
    });
    if (!("inputs" in tenfold)) throw new Error(tenfold.blockers.join("; "));
    for (const phase of ["decode", "prefill"] as const) {
      expect(
        projectRun(tenfold, catalog, phase, { source: "priors" }) /
          projectRun(standard, catalog, phase, { source: "priors" }),
      ).toBeCloseTo(1, 3);
    }
    // A hybrid run keeps needing its CPU: no placeholder there.
    const hybrid = { ...run, placement: "hybrid" as const };
    const refused = convert(hybrid, catalog);
    expect("blockers" in refused && refused.blockers.join("; ")).toMatch(/no bandwidth/);
  });
});

describe("bench/published: runs on builds older than the pinned release's mechanics", () => {
  const catalog = loadCatalog();
  const corpus = loadMeasurements();
  const byId = (id: string) => corpus.runs.find((run) => run.id === id)!;

  it("leaves out a GPU run posted before the CUDA MoE change, naming the change and the dates", () => {
    const h100 = byId("deepseek-r1-udiq1s-2xh100");
    const posted = corpus.sources.find((source) => source.id === h100.source)!.date;
    expect(posted).toBe("2025-01-28");
    const conversion = convert(h100, catalog, { sourceDate: posted });
    expect("blockers" in conversion).toBe(true);
    if (!("blockers" in conversion)) return;
    expect(conversion.blockers.join("\n")).toMatch(
      /engine predates llama\.cpp#13014 \(source dated 2025-01-28, change first seen 2025-04-19\)/,
    );
    // The same run posted after both changes converts.
    expect("inputs" in convert(h100, catalog, { sourceDate: "2025-06-01" })).toBe(true);
    // An undated source is no evidence of an old build.
    expect(predatedChanges(h100, catalog.llamaCpp, null)).toEqual([]);
  });

  it("keeps a CPU-only run of the same age: the change is on the CUDA path", () => {
    const cpuOnly = byId("deepseek-r1-q8-6980p-1s-mainline");
    expect(cpuOnly.placement).toBe("cpu-only");
    expect(predatedChanges(cpuOnly, catalog.llamaCpp, "2025-01-28")).toEqual([]);
    // A month-only date is read as the month's last day: April 2025 may be after 2025-04-19.
    const h100 = byId("deepseek-r1-udiq1s-2xh100");
    expect(predatedChanges(h100, catalog.llamaCpp, "2025-04").map((change) => change.pr)).toEqual([]);
    expect(predatedChanges(h100, catalog.llamaCpp, "2025-03").map((change) => change.pr)).toEqual([13014, 13199]);
  });
});
