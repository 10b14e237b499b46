/**
 * npm run bench:published — leave-one-source-out accuracy of the estimator against the published
 * corpus (catalog/measurements.yaml).
 *
 * Each mainline run is converted to the estimator's inputs: a host from the run's hardware (through
 * the stack schema and resolveHost, so a catalog CPU platform supplies the clock and FLOP/cycle the
 * sources do not state), tensors from the catalog model and tier the run used, flags from its
 * command line (parseFlags). A run that cannot be converted is listed with what blocks it — nothing
 * is guessed. For every source, the CPU factors (decode bandwidth efficiency, prefill efficiency,
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
}

export type Conversion = { run: MeasuredRun; inputs: Inputs } | { run: MeasuredRun; blockers: string[] };

/** Splits a command line as a shell would for plain and double/single-quoted words (no expansion). */
export function splitWords(line: string): string[] {
  const words: string[] = [];
  const pattern = /"([^"]*)"|'([^']*)'|(\S+)/g;
  for (let match = pattern.exec(line); match; match = pattern.exec(line)) words.push(match[1] ?? match[2] ?? match[3]!);
  return words;
}

function catalogModel(run: MeasuredRun, catalog: Catalog): { model: ModelEntry; tier: Tier } | string {
  // Kimi K2, K2.5 and K2.6 share one architecture (deepseek2, 61 layers, 384 experts); the catalog has K2.6.
  const model = /^kimi-k2(\.\d)?(-|$)/i.test(run.model.name) ? catalog.models.find((entry) => entry.id.startsWith("kimi-k2")) : undefined;
  if (!model) return `no catalog model entry for ${run.model.name} (catalog/models.yaml has ${catalog.models.map((entry) => entry.id).join(", ")})`;
  const tier = model.tiers.find((entry) => entry.name === run.model.quant);
  if (!tier) return `no catalog tier ${run.model.quant} for ${model.id} (tiers: ${model.tiers.map((entry) => entry.name).join(", ")})`;
  return { model, tier };
}

/** The run's inputs for estimate(), or what blocks the conversion. */
export function convert(run: MeasuredRun, catalog: Catalog): Conversion {
  const blockers: string[] = [];
  if (run.engine.fork) blockers.push(`fork (${run.engine.name}), kept out of the mainline fit`);
  if (run.fit) blockers.push(`excluded in the corpus: ${run.fit.excluded}`);
  const found = catalogModel(run, catalog);
  if (typeof found === "string") blockers.push(found);
  const cpuModel = run.hardware.cpu.model;
  const platform = cpuModel ? catalog.cpuPlatforms.find((entry) => entry.name.toLowerCase().startsWith(cpuModel.toLowerCase())) : undefined;
  if (!platform) blockers.push(`CPU ${cpuModel ?? "(not stated)"} has no catalog platform, so its all-core clock and FLOP/cycle are unknown`);
  const memory = run.hardware.memory;
  const kind = memory.kind && memory.mtPerSecond ? `${memory.kind}-${memory.mtPerSecond}` : undefined;
  if (memory.measuredBandwidthGBps === null && (!kind || memory.channelsPerSocket === null)) blockers.push("no bandwidth: neither memory kind, speed and channels nor a measured figure");
  if (memory.totalGB === null) blockers.push("memory size not stated");
  let flags: SizingFlags | undefined;
  try {
    flags = parseFlags(splitWords(run.flags), `run ${run.id}`).sizing;
  } catch (error) {
    const lines = (error as Error).message.split("\n").map((line) => line.trim().replace(/^- /, ""));
    blockers.push(`flags do not parse as llama-server flags: ${lines.slice(1, 2).join(" ") || lines[0]}`);
  }
  if (blockers.length > 0 || typeof found === "string" || !platform || !flags) return { run, blockers };
  const stack = hostSchema.safeParse({
    kind: "bare-metal",
    cpu: { platform: platform.id, sockets: run.hardware.cpu.socketsUsed ?? run.hardware.cpu.sockets ?? 1 },
    memory: {
      total: `${memory.totalGB}GB`,
      ...(kind ? { kind } : {}),
      ...(memory.channelsPerSocket !== null ? { channelsPerSocket: memory.channelsPerSocket } : {}),
      ...(memory.measuredBandwidthGBps !== null ? { measuredBandwidthGBps: memory.measuredBandwidthGBps } : {}),
    },
    gpus: run.hardware.gpus.map((gpu) => ({ model: gpu.model, count: gpu.count })),
  });
  if (!stack.success) return { run, blockers: [`hardware does not make a stack host: ${stack.error.issues[0]?.message ?? "invalid"}`] };
  try {
    const host = resolveHost(`published:${run.id}`, stack.data, catalog);
    return { run, inputs: { tensors: tensorsFromArchitecture(found.model.architecture, found.tier), model: found.model, host, flags } };
  } catch (error) {
    return { run, blockers: [`host does not resolve: ${(error as Error).message.split("\n").slice(0, 2).join(" ")}`] };
  }
}

type Phase = "decode" | "prefill";

function measured(run: MeasuredRun, phase: Phase): number | undefined {
  return phase === "decode" ? run.decode?.tokensPerSecond : run.prefill?.tokensPerSecond;
}

function project(conversion: { run: MeasuredRun; inputs: Inputs }, catalog: Catalog, phase: Phase, factors: CpuFactorOverrides): number {
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
      const train = training.filter((entry) => measured(entry.run, phase) !== undefined);
      const test = testing.filter((entry) => measured(entry.run, phase) !== undefined);
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
  }
  const residuals = leaveOneSourceOut(converted, catalog);
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
