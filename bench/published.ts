/**
 * npm run bench:published — leave-one-source-out accuracy of the estimator against the published
 * corpus (catalog/measurements.yaml).
 *
 * Each mainline run is converted to the estimator's inputs: a host from the run's hardware (through
 * the stack schema and resolveHost, so a catalog CPU platform supplies the clock and FLOP/cycle the
 * sources do not state; PLATFORM_FACTS supplies a named CPU's datasheet channels and DIMM speed when
 * the source gives neither, and a stated STREAM/mlc figure is the achievable bandwidth), tensors from
 * the catalog model (Kimi K2.x) or the bench's DeepSeek-V3/R1 and GLM-5 entries, flags from its
 * command line translated from llama-bench/batched-bench/cli words (TOOL_FLAGS) and parsed by
 * parseFlags. Without a catalog platform there is no all-core clock: such a run counts for decode
 * only. Every assumption is printed next to the run; a run that cannot be converted is listed with
 * what blocks it. For every source, the CPU factors (decode bandwidth efficiency, prefill efficiency,
 * each in (0, 1]) are fitted on the convertible runs of all other sources and the held-out
 * source's runs are projected; decode and prefill errors are reported separately, overall and by
 * hardware class (a class only with >= 5 runs). Exits 1 when a target is missed or when there is
 * nothing to evaluate. Targets: decode median |error| <= 15 %, p90 <= 30 %; prefill median <= 25 %,
 * p90 <= 50 %.
 */
import { loadCatalog, type Catalog, type ModelEntry, type Tier } from "../planner/catalog";
import { hostSchema } from "../planner/config";
import { estimate } from "../planner/estimate";
import { parseFlags, type SizingFlags } from "../planner/flags";
import { resolveHost, type HostSpec } from "../planner/host";
import { hardwareClass, loadMeasurements, type MeasuredRun } from "../planner/measurements";
import type { CpuFactorOverrides } from "../planner/speed";
import { tensorsFromArchitecture, type TensorInfo } from "../planner/tensors";

export const TARGETS = { decode: { median: 0.15, p90: 0.3 }, prefill: { median: 0.25, p90: 0.5 } } as const;

interface Inputs {
  tensors: TensorInfo[];
  model: ModelEntry;
  host: HostSpec;
  flags: SizingFlags;
  /** Whether the run's prefill figure is projected (a real prompt length and a known clock). */
  prefill: boolean;
  /** Platform facts used in place of unstated hardware. */
  assumptions: string[];
}

export type Conversion = { run: MeasuredRun; inputs: Inputs } | { run: MeasuredRun; blockers: string[] };

/** Splits a command line as a shell would for plain and double/single-quoted words (no expansion). */
export function splitWords(line: string): string[] {
  const words: string[] = [];
  const pattern = /"([^"]*)"|'([^']*)'|(\S+)/g;
  for (let match = pattern.exec(line); match; match = pattern.exec(line)) words.push(match[1] ?? match[2] ?? match[3]!);
  return words;
}

/**
 * Translation of the benchmark tools' flags into llama-server sizing flags. llama-bench
 * (ggml-org/llama.cpp tools/llama-bench/README.md), llama-batched-bench (tools/batched-bench/README.md:
 * "-npp 128,256,512 -ntg 128,256 -npl 1,2,4,8,16,32": PP prompt tokens per batch, TG generated tokens
 * per batch, B parallel sequences) and llama-cli share the common argument parser with llama-server;
 * only these words differ. `drop` words describe the benchmark, not the server, and are read elsewhere
 * (prompt length and depth come from the run's recorded figures).
 */
export const TOOL_FLAGS: Record<string, { server?: string; takesValue: boolean; meaning: string }> = {
  "-npp": { takesValue: true, meaning: "batched-bench prompt tokens per sequence (the run's prefill.promptTokens)" },
  "-ntg": { takesValue: true, meaning: "batched-bench generated tokens per sequence (the run's decode.generatedTokens)" },
  "-npl": { server: "--parallel", takesValue: true, meaning: "batched-bench parallel sequences: llama-server's slots (-np)" },
  "-pps": { takesValue: false, meaning: "batched-bench shared prompt; no server equivalent" },
  "-p": { takesValue: true, meaning: "llama-bench prompt length (pp512 by default)" },
  "-n": { takesValue: true, meaning: "llama-bench/llama-cli generated tokens (tg128 by default)" },
  "-fa": { server: "--flash-attn", takesValue: true, meaning: "llama-bench -fa 0|1 = server --flash-attn off|on (on/off/auto pass through)" },
  "--flash-attn": { server: "--flash-attn", takesValue: false, meaning: "older builds' bare switch = --flash-attn on" },
  "-no-cnv": { takesValue: false, meaning: "llama-cli: no conversation mode; no server equivalent" },
  "--prio": { takesValue: true, meaning: "process priority; does not change sizing" },
  "--no-mmap": { takesValue: false, meaning: "load into RAM instead of mapping; not a speed input of the estimator" },
  "-r": { takesValue: true, meaning: "llama-bench repetitions" },
};

/** Rewrites a benchmark tool's command line into llama-server words; undefined when it is prose, not flags. */
export function serverWords(line: string): { words: string[]; dropped: string[] } | undefined {
  const words = splitWords(line);
  if (words.length === 0 || !words[0]!.startsWith("-")) return undefined;
  const out: string[] = [];
  const dropped: string[] = [];
  for (let index = 0; index < words.length; index++) {
    const word = words[index]!;
    const rule = TOOL_FLAGS[word];
    if (!rule) {
      out.push(word);
      continue;
    }
    const value = rule.takesValue ? words[++index] : undefined;
    dropped.push(value === undefined ? word : `${word} ${value}`);
    if (!rule.server) continue;
    if (rule.server === "--flash-attn") out.push("--flash-attn", value === undefined || value === "1" ? "on" : value === "0" ? "off" : value);
    else if (rule.server === "--parallel") out.push("--parallel", value!.split(",")[0]!);
  }
  return { words: out, dropped };
}

function catalogModel(run: MeasuredRun, catalog: Catalog): { model: ModelEntry; tier: Tier } | string {
  // Kimi K2, K2.5 and K2.6 share one architecture (deepseek2, 61 layers, 384 experts); the catalog has K2.6.
  const model = /^kimi-k2(\.\d)?(-|$)/i.test(run.model.name)
    ? catalog.models.find((entry) => entry.id.startsWith("kimi-k2"))
    : /^deepseek-(r1|v3)(-|$)/i.test(run.model.name)
      ? catalog.models.find((entry) => entry.id === "deepseek-v3")
      : /^glm-5(\.\d)?$/i.test(run.model.name)
        ? catalog.models.find((entry) => entry.id === "glm-5")
        : undefined;
  if (!model) return `no architecture for ${run.model.name} (catalog/models.yaml has ${catalog.models.map((entry) => entry.id).join(", ")})`;
  const tier = model.tiers.find((entry) => entry.name === run.model.quant);
  if (!tier) return `no tier ${run.model.quant} for ${model.id} (tiers: ${model.tiers.map((entry) => entry.name).join(", ")})`;
  return { model, tier };
}

/**
 * Platform facts from the CPU makers' datasheets (not source statements): memory channels per socket,
 * the fastest DIMM speed the socket supports at one DIMM per channel, CCD count. Used only where the
 * source names the CPU model and not its memory: the projection then assumes every channel populated
 * at the supported speed — an upper bound, reported as such. No all-core clock: datasheets give base
 * and boost, not the sustained all-core clock, so runs without a catalog platform get no prefill.
 */
export const PLATFORM_FACTS: Record<string, { cores: number; channelsPerSocket: number; kind: string; ccds?: number }> = {
  "AMD EPYC 9355": { cores: 32, channelsPerSocket: 12, kind: "DDR5-6000", ccds: 8 },
  "AMD EPYC 9654": { cores: 96, channelsPerSocket: 12, kind: "DDR5-4800", ccds: 12 },
  "AMD EPYC 7713": { cores: 64, channelsPerSocket: 8, kind: "DDR4-3200", ccds: 8 },
  // Also supports MRDIMM-8800; the source does not say which memory, so the DDR5 RDIMM speed is taken.
  "Intel Xeon 6980P": { cores: 128, channelsPerSocket: 12, kind: "DDR5-6400" },
};

/** The catalog GPU each source's GPU name means (names as the sources print them). */
const GPU_IDS: Record<string, string> = {
  "RTX PRO 6000 Blackwell": "rtx-pro-6000",
  "RTX 3090": "rtx-3090",
  "RTX 4090": "rtx-4090",
  "H100 80GB HBM3": "h100-sxm",
  "RTX 6000 Ada": "rtx-6000-ada",
};

/** Corpus exclusions that only say the memory was not described: lifted when a measured figure or a platform fact describes it. */
const MEMORY_ONLY = /^(DIMM speed not stated|memory channels and DIMM speed not stated|memory kind, channels and DIMM speed not stated.*|channels unequal between sockets.*)$/;
/** Exclusions that only concern prefill: the run's decode still counts. */
const PREFILL_ONLY = /prompt is no prefill rate/;

/** The run's inputs for estimate(), or what blocks the conversion. */
export function convert(run: MeasuredRun, catalog: Catalog): Conversion {
  const blockers: string[] = [];
  const assumptions: string[] = [];
  let prefillUsable = run.prefill !== null && run.prefill !== undefined;
  if (run.engine.fork) blockers.push(`fork (${run.engine.name}), kept out of the mainline fit`);
  const found = catalogModel(run, catalog);
  if (typeof found === "string") blockers.push(found);
  const cpuModel = run.hardware.cpu.model;
  const platform = cpuModel ? catalog.cpuPlatforms.find((entry) => entry.name.toLowerCase().startsWith(cpuModel.toLowerCase())) : undefined;
  const facts = cpuModel ? PLATFORM_FACTS[cpuModel] : undefined;
  const memory = run.hardware.memory;
  const stated = memory.kind && memory.mtPerSecond ? `${memory.kind}-${memory.mtPerSecond}` : undefined;
  const sockets = run.hardware.cpu.socketsUsed ?? run.hardware.cpu.sockets ?? 1;
  let kind = stated;
  let channels: number | undefined = memory.channelsPerSocket !== null ? memory.channelsPerSocket * sockets : undefined;
  // "23 channels in all" style statements (unequal sockets) are recorded in the quotes, not the fields.
  const inAll = run.quotes.map((quote) => /in (\d+) channels/.exec(quote)).find(Boolean);
  if (channels === undefined && inAll) channels = Number(inAll[1]);
  if (memory.measuredBandwidthGBps === null && facts) {
    if (!kind && (!memory.kind || facts.kind.startsWith(memory.kind))) {
      kind = facts.kind;
      assumptions.push(`${facts.kind} (${cpuModel} supported speed, platform fact)`);
    }
    if (channels === undefined) {
      channels = facts.channelsPerSocket * sockets;
      assumptions.push(`${channels} channels (${cpuModel} has ${facts.channelsPerSocket} per socket, platform fact; all assumed populated)`);
    }
  }
  const bandwidthKnown = memory.measuredBandwidthGBps !== null || (kind !== undefined && channels !== undefined);
  if (run.fit) {
    for (const reason of run.fit.excluded.split(/;\s*/)) {
      if (PREFILL_ONLY.test(reason)) prefillUsable = false;
      else if (!(MEMORY_ONLY.test(reason) && bandwidthKnown)) blockers.push(`excluded in the corpus: ${reason}`);
    }
  }
  if (!platform && !facts && run.hardware.cpu.cores === null) blockers.push(`CPU ${cpuModel ?? "(not stated)"}: neither a catalog platform nor a core count`);
  if (!bandwidthKnown) blockers.push("no bandwidth: neither memory kind, speed and channels nor a measured figure");
  // RAM size is no speed input (only the memory-fit table reads it): a run that states none is sized
  // with a placeholder that holds the model, and says so.
  if (memory.totalGB === null) assumptions.push("RAM size not stated (placeholder; not a speed input)");
  const gpus = run.hardware.gpus.map((gpu) => ({ model: GPU_IDS[gpu.model], count: gpu.count, name: gpu.model }));
  for (const gpu of gpus) if (!gpu.model) blockers.push(`GPU ${gpu.name} has no catalog entry`);
  let flags: SizingFlags | undefined;
  // Annotations in parentheses ("-t 64 (pp512)") describe the benchmark, not flags.
  const commandLine = run.flags.replace(/\s*\([^)]*\)/g, "").trim();
  let translated = serverWords(commandLine);
  if (!translated && run.hardware.gpus.length === 0 && run.decode) {
    // A CPU-only decode with no command line: llama-server's defaults; decode reads no flag a
    // prose description could change (the thread count only bounds prefill).
    translated = { words: [], dropped: [] };
    assumptions.push(`flags not given ("${run.flags}"): server defaults`);
  }
  if (!translated) blockers.push(`flags are not a command line: "${run.flags}"`);
  else {
    try {
      flags = parseFlags(translated.words, `run ${run.id}`).sizing;
    } catch (error) {
      const lines = (error as Error).message.split("\n").map((line) => line.trim().replace(/^- /, ""));
      blockers.push(`flags do not parse as llama-server flags: ${lines.slice(1, 2).join(" ") || lines[0]}`);
    }
  }
  if (blockers.length > 0 || typeof found === "string" || !flags) return { run, blockers };
  // Without a catalog platform there is no sustained all-core clock: the host is resolved with a
  // placeholder clock that only prefill reads, and prefill is not projected for the run.
  const clockKnown = platform !== undefined;
  if (!clockKnown) prefillUsable = false;
  if (!prefillUsable && !run.decode) return { run, blockers: ["prefill only, and no all-core clock (no catalog platform) to project prefill with"] };
  const stack = hostSchema.safeParse({
    kind: "bare-metal",
    cpu: platform
      ? { platform: platform.id, sockets }
      : {
          model: cpuModel ?? undefined,
          cores: run.hardware.cpu.cores ?? facts!.cores * sockets,
          sockets,
          allCoreGHz: 1,
          ...(facts?.ccds ? { ccds: facts.ccds * sockets } : {}),
          ...(run.hardware.cpu.isa === "arm" ? { arch: "arm64" } : {}),
        },
    memory: {
      total: memory.totalGB !== null ? `${memory.totalGB}GB` : "2TB",
      ...(kind ? { kind } : {}),
      ...(channels !== undefined ? { channels } : {}),
      ...(memory.measuredBandwidthGBps !== null ? { measuredBandwidthGBps: memory.measuredBandwidthGBps } : {}),
    },
    gpus: gpus.map((gpu) => ({ model: gpu.model!, count: gpu.count })),
  });
  if (!stack.success) return { run, blockers: [`hardware does not make a stack host: ${stack.error.issues[0]?.path.join(".")} ${stack.error.issues[0]?.message ?? "invalid"}`] };
  try {
    const host = resolveHost(`published:${run.id}`, stack.data, catalog);
    if (!clockKnown) host.cpu.allCoreGHz = Number.NaN;
    return { run, inputs: { tensors: tensorsFromArchitecture(found.model.architecture, found.tier), model: found.model, host, flags, prefill: prefillUsable, assumptions } };
  } catch (error) {
    return { run, blockers: [`host does not resolve: ${(error as Error).message.split("\n").slice(0, 2).join(" ")}`] };
  }
}

type Phase = "decode" | "prefill";

function measured(run: MeasuredRun, phase: Phase): number | undefined {
  return phase === "decode" ? run.decode?.tokensPerSecond : run.prefill?.tokensPerSecond;
}

function usable(entry: { run: MeasuredRun; inputs: Inputs }, phase: Phase): boolean {
  return measured(entry.run, phase) !== undefined && (phase === "decode" || entry.inputs.prefill);
}

export function project(conversion: { run: MeasuredRun; inputs: Inputs }, catalog: Catalog, phase: Phase, factors: CpuFactorOverrides): number {
  const { run, inputs } = conversion;
  const depth = run.decode?.depthTokens ?? 0;
  const prompt = run.prefill?.promptTokens ?? 512;
  const result = estimate(inputs.tensors, inputs.model.architecture, inputs.host, inputs.flags, {
    catalog,
    decodeDepthTokens: depth,
    decodeDepths: [depth],
    prefillPrompts: [prompt],
    ttftPromptTokens: prompt,
    cpuFactors: factors,
  });
  return phase === "decode" ? result.projection.decodeTokensPerSecond : result.projection.prefillTokensPerSecond;
}

/** Golden-section search for the factor in (0, 1] that minimises the squared log error over the runs. */
export function fitFactor(loss: (factor: number) => number, low = 0.01, high = 1): number {
  const ratio = (Math.sqrt(5) - 1) / 2;
  let a = low;
  let b = high;
  for (let step = 0; step < 40; step++) {
    const c = b - ratio * (b - a);
    const d = a + ratio * (b - a);
    if (loss(c) <= loss(d)) b = d;
    else a = c;
  }
  return (a + b) / 2;
}

export function quantile(values: readonly number[], q: number): number {
  const sorted = [...values].sort((x, y) => x - y);
  if (sorted.length === 0) return Number.NaN;
  const position = (sorted.length - 1) * q;
  const below = Math.floor(position);
  const above = Math.ceil(position);
  return sorted[below]! + (sorted[above]! - sorted[below]!) * (position - below);
}

interface Residual {
  run: MeasuredRun;
  phase: Phase;
  error: number;
}

/** For every source: fit each phase's factor on the other sources' runs, project the held-out ones. */
export function leaveOneSourceOut(converted: { run: MeasuredRun; inputs: Inputs }[], catalog: Catalog): Residual[] {
  const residuals: Residual[] = [];
  const sources = [...new Set(converted.map((entry) => entry.run.source))];
  for (const held of sources) {
    const training = converted.filter((entry) => entry.run.source !== held);
    const testing = converted.filter((entry) => entry.run.source === held);
    for (const phase of ["decode", "prefill"] as const) {
      const train = training.filter((entry) => usable(entry, phase));
      const test = testing.filter((entry) => usable(entry, phase));
      if (train.length === 0 || test.length === 0) continue;
      const key = phase === "decode" ? "decodeEfficiency" : "prefillEfficiency";
      const loss = (factor: number) =>
        train.reduce((sum, entry) => sum + Math.log(project(entry, catalog, phase, { [key]: factor, source: "fit" }) / measured(entry.run, phase)!) ** 2, 0);
      const factor = fitFactor(loss);
      for (const entry of test) {
        const projected = project(entry, catalog, phase, { [key]: factor, source: `fit without ${held}` });
        residuals.push({ run: entry.run, phase, error: projected / measured(entry.run, phase)! - 1 });
      }
    }
  }
  return residuals;
}

function main(): number {
  const catalog = loadCatalog();
  const corpus = loadMeasurements();
  const mainline = corpus.runs.filter((run) => !run.engine.fork);
  const conversions = mainline.map((run) => convert(run, catalog));
  const converted = conversions.filter((entry): entry is { run: MeasuredRun; inputs: Inputs } => "inputs" in entry);
  console.log(`published corpus: ${corpus.runs.length} runs from ${new Set(corpus.runs.map((run) => run.source)).size} sources; ${mainline.length} mainline, ${converted.length} convertible to the estimator's inputs`);
  for (const entry of conversions) {
    if ("blockers" in entry) console.log(`  not used  ${entry.run.id}: ${entry.blockers.join("; ")}`);
    else console.log(`  used      ${entry.run.id}${entry.inputs.prefill ? "" : " (decode only: no clock or no real prompt)"}${entry.inputs.assumptions.length > 0 ? ` — assumes ${entry.inputs.assumptions.join(", ")}` : ""}`);
  }
  const residuals = leaveOneSourceOut(converted, catalog);
  for (const entry of residuals) {
    const inputs = converted.find((candidate) => candidate.run === entry.run)!.inputs;
    const threads = inputs.flags.threads;
    // The estimator has no decode thread count: a run on a small share of the cores is projected as if on all of them.
    const note = entry.phase === "decode" && threads !== undefined && threads > 0 && threads < inputs.host.cpu.cores / 2 ? ` (--threads ${threads} of ${inputs.host.cpu.cores} cores; decode threads are not modelled)` : "";
    console.log(`  held out  ${entry.run.id} ${entry.phase}: ${entry.error >= 0 ? "+" : ""}${(entry.error * 100).toFixed(1)} %${note}`);
  }
  let missed = false;
  for (const phase of ["decode", "prefill"] as const) {
    const target = TARGETS[phase];
    const errors = residuals.filter((entry) => entry.phase === phase);
    if (errors.length === 0) {
      console.log(`${phase}: no held-out projections (needs convertible runs from at least two sources) — target not evaluated, counted as missed`);
      missed = true;
      continue;
    }
    const absolute = errors.map((entry) => Math.abs(entry.error));
    const median = quantile(absolute, 0.5);
    const p90 = quantile(absolute, 0.9);
    const ok = median <= target.median && p90 <= target.p90;
    missed ||= !ok;
    console.log(`${phase}: ${errors.length} runs, median |error| ${(median * 100).toFixed(1)} % (target ${target.median * 100} %), p90 ${(p90 * 100).toFixed(1)} % (target ${target.p90 * 100} %) — ${ok ? "met" : "MISSED"}`);
    const classes = new Map<string, number[]>();
    for (const entry of errors) classes.set(hardwareClass(entry.run), [...(classes.get(hardwareClass(entry.run)) ?? []), Math.abs(entry.error)]);
    for (const [name, values] of classes) {
      if (values.length >= 5) console.log(`  ${name}: ${values.length} runs, median ${(quantile(values, 0.5) * 100).toFixed(1)} %, p90 ${(quantile(values, 0.9) * 100).toFixed(1)} %`);
    }
  }
  return missed ? 1 : 0;
}

if (require.main === module) process.exit(main());
