/**
 * `npm run bench` (full) / `npm run bench -- --quick` (CI): holds the planner's one estimator,
 * estimate(), against the real llama-server v0.5.0 on this machine, prints markdown tables, writes
 * bench/out/results.json (an ignored folder; --out elsewhere) and exits non-zero when a gate fails.
 *
 * - memory: estimate() of the very argv each llama-server got (parsed through the flag table) vs
 *   the buffer sizes llama-server logs at -lv 4 (model, CPU_REPACK, KV, compute), over deepseek2
 *   models made by test-llama-archs and by our generator, two quant mixes, several context sizes
 *   and slot counts, with and without repacking, experts forced to the CPU buffer by -ot,
 *   memory-mapped loading and -fa off;
 * - speed: this machine's read bandwidth measured here (tools/membw.c), then estimate()'s
 *   decode and prefill for the kit's flags vs measured (medians of 5); estimate()'s CPU factors are
 *   fitted on two calibration cases and the others are held back;
 * - kit vs --fit: the same model served with the kit's arguments and with llama.cpp's own
 *   defaults (--fit on), medians of 5 runs, as a ratio.
 * There is no model of memory or speed here: every prediction is estimate()'s.
 * GPU cases need a GPU machine; without one they are listed as unverified.
 */
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { parseArgs } from "node:util";
import { readLocalModel, thisMachineHost, type LocalModel } from "../cli/local-model";
import { loadCatalog } from "../planner/catalog";
import { estimate, type Estimate } from "../planner/estimate";
import { parseFlags } from "../planner/flags";
import type { HostSpec } from "../planner/host";
import type { CpuFactorOverrides } from "../planner/speed";
import { generatedModelCase, quantizeMix } from "../lab/model-mixes";
import { generateDeepseek2Model, splitGguf } from "../lab/models";
import { llamaTool } from "../lab/llama-cpp";
import { fitCpuFactors, median, UNIT_CPU_FACTORS, type CalibrationCase } from "./lib/calibrate";
import { parseBuffers, startServer } from "../lab/server";
import { benchModelsDir, benchPrompt, DECODE_DEPTH, GENERATED_TOKENS, PROMPT_TOKENS } from "./lib/workload";
import { kitArgsOnThisMachine } from "./lib/kit-args";
import { thisMachine } from "../lab/this-machine";
import { measureReadBandwidthGBps } from "../tools/bandwidth";

const MiB = 1024 * 1024;
const { values: flags } = parseArgs({ options: { quick: { type: "boolean" }, out: { type: "string" } } });
const quick = Boolean(flags.quick);
const workDir = benchModelsDir();
const catalog = loadCatalog();
const machine = thisMachine();

/**
 * CI gates (issue 8): estimate() against llama-server's own buffers and timings. Weights, repacked
 * weights and KV are exact arithmetic on the tensor table, so 0.5% is room only for rounding in the
 * log; compute buffers are a model of the graph allocator's peak, held to 5% on the generated
 * deepseek2 models (the architecture the kit serves); speed is held to 20% on held-back cases.
 */
const GATE = { exactKinds: 0.005, compute: 0.05, speed: 0.2 } as const;

interface ModelFile extends LocalModel {
  label: string;
  /** Made by our deepseek2 writer (Kimi's shape, shrunk): the compute gate applies. */
  generated: boolean;
}

async function readModel(
  label: string,
  path: string,
  generated: boolean,
  extraShards: string[] = [],
): Promise<ModelFile> {
  return { ...(await readLocalModel(path, label, extraShards)), label, generated };
}

type Kind = "model" | "repack" | "kv" | "compute" | "total";
interface BufferRecord {
  predictedBytes: number;
  measuredBytes: number;
}
interface CaseRecord {
  name: string;
  kind: "memory" | "speed" | "gpu";
  args?: string[];
  gated?: Kind[];
  devices?: Record<string, Record<Kind, BufferRecord>>;
  projectedDecode?: number;
  measuredDecode?: number;
  projectedPrefill?: number;
  measuredPrefill?: number;
  remeasured?: boolean;
  kitVsFitDecodeRatio?: number;
  kitVsFitPrefillRatio?: number;
  note?: string;
}
const records: CaseRecord[] = [];
const failures: string[] = [];

// ---------------------------------------------------------------- memory
/** slots "auto": no -np, so llama-server picks 4 slots sharing one unified KV cache (ctx is then the total). */
interface MemoryVariant {
  ctx: number;
  slots: number | "auto";
  repack: boolean;
  expertsOnCpuByOt: boolean;
  ubatch: number;
  loadMode?: "none" | "mmap";
  flashAttn?: "on" | "off";
}

const relativeError = (record: BufferRecord) =>
  record.measuredBytes === 0
    ? record.predictedBytes === 0
      ? 0
      : Infinity
    : Math.abs(record.predictedBytes / record.measuredBytes - 1);

async function memoryCase(model: ModelFile, variant: MemoryVariant, host: HostSpec): Promise<CaseRecord> {
  const slotArgs = variant.slots === "auto" ? [] : ["-np", String(variant.slots)];
  const args = [
    "-c",
    String(variant.slots === "auto" ? variant.ctx : variant.ctx * variant.slots),
    ...slotArgs,
    "-ub",
    String(variant.ubatch),
    "-b",
    String(Math.max(2048, variant.ubatch)),
    "-t",
    String(machine.cores),
    "--load-mode",
    variant.loadMode ?? "none",
    "--fit",
    "off",
    "-fa",
    variant.flashAttn ?? "on",
    "--cache-ram",
    "0",
  ];
  if (!variant.repack) args.push("--no-repack");
  if (variant.expertsOnCpuByOt) args.push("-ot", "ffn_(up|down|gate|gate_up)_exps\\.=CPU");
  const server = await startServer(model.path, args);
  await new Promise((resolve) => setTimeout(resolve, 300));
  const logged = parseBuffers(server.log());
  await server.stop();

  // The estimator's view of the very argv llama-server got: parsed through the flag table, estimated.
  const cpu = estimate(model.tensors, model.arch, host, parseFlags(args, "bench").sizing, { catalog }).devices[0]!;
  const measured = {
    model: (logged.model.CPU ?? 0) + (logged.model.CPU_Mapped ?? 0),
    repack: logged.model.CPU_REPACK ?? 0,
    kv: logged.kv.CPU ?? 0,
    compute: logged.compute.CPU ?? 0,
  };
  const cpuRecord: Record<Kind, BufferRecord> = {
    // Under mmap llama-server's CPU_Mapped buffer is the mapped file span, which estimate() reports as mappedBytes.
    model: { predictedBytes: cpu.mappedBytes > 0 ? cpu.mappedBytes : cpu.modelBytes, measuredBytes: measured.model },
    repack: { predictedBytes: cpu.repackBytes, measuredBytes: measured.repack },
    kv: { predictedBytes: cpu.kvBytes, measuredBytes: measured.kv },
    compute: { predictedBytes: cpu.computeBytes, measuredBytes: measured.compute },
    total: {
      predictedBytes:
        (cpu.mappedBytes > 0 ? cpu.mappedBytes : cpu.modelBytes) + cpu.repackBytes + cpu.kvBytes + cpu.computeBytes,
      measuredBytes: measured.model + measured.repack + measured.kv + measured.compute,
    },
  };
  const name = `${model.label} ctx ${variant.slots === "auto" ? `${variant.ctx} -np auto (4 slots, unified KV)` : `${variant.ctx}×${variant.slots}`} ub ${variant.ubatch}${variant.repack ? "" : " no-repack"}${variant.expertsOnCpuByOt ? " -ot exps=CPU" : ""}${variant.loadMode === "mmap" ? " mmap" : ""}${variant.flashAttn === "off" ? " -fa off" : ""}`;
  const gated: Kind[] = ["model", "repack", "kv", ...(model.generated ? (["compute"] as const) : [])];
  for (const kind of gated) {
    const limit = kind === "compute" ? GATE.compute : GATE.exactKinds;
    const error = relativeError(cpuRecord[kind]);
    if (error > limit)
      failures.push(
        `memory ${name}: ${kind} predicted ${(cpuRecord[kind].predictedBytes / MiB).toFixed(2)} MiB vs llama-server ${(cpuRecord[kind].measuredBytes / MiB).toFixed(2)} MiB (${(error * 100).toFixed(1)}% > ${limit * 100}%)`,
      );
  }
  return { name, kind: "memory", args, gated, devices: { CPU: cpuRecord } };
}

// ---------------------------------------------------------------- speed

interface Rates {
  decode: number;
  prefill: number;
}
/** Medians over the rounds, and the machine's read bandwidth: the median of one probe per round. */
interface SpeedMeasurement extends Rates {
  bandwidthGBps: number;
}

async function measureSpeed(model: ModelFile, args: string[], runs: number, firstRun = 0): Promise<Rates> {
  const server = await startServer(model.path, args);
  const decodes: number[] = [];
  const prefills: number[] = [];
  try {
    await server.complete({ prompt: [1, 2, 3, 4], n_predict: 8, cache_prompt: false });
    for (let run = firstRun; run < firstRun + runs; run++) {
      const result = await server.complete({
        prompt: benchPrompt(model.arch.vocabSize, run),
        n_predict: GENERATED_TOKENS,
        cache_prompt: false,
        temperature: 0,
        ignore_eos: true,
      });
      decodes.push(result.timings.predicted_per_second);
      prefills.push(result.timings.prompt_per_second);
    }
  } finally {
    await server.stop();
  }
  return { decode: median(decodes), prefill: median(prefills) };
}

/**
 * This shared machine's speed swings ~30% from one minute to the next (membw reads 26–35 GB/s back
 * to back), so the cases are measured in interleaved rounds — one run of every case per round, and a
 * bandwidth probe — and each case's figure is its median over the rounds: calibration and held-back
 * cases see the same mix of machine states, which one case after another would not.
 */
async function measureInterleaved(
  entries: readonly { model: ModelFile; args: string[] }[],
  rounds: number,
): Promise<SpeedMeasurement[]> {
  const rates: Rates[][] = entries.map(() => []);
  const bandwidths: number[] = [];
  for (let round = 0; round < rounds; round++) {
    bandwidths.push(measureReadBandwidthGBps(machine.cores));
    for (const [index, entry] of entries.entries())
      rates[index]!.push(await measureSpeed(entry.model, entry.args, 1, round));
  }
  const bandwidthGBps = median(bandwidths);
  return rates.map((list) => ({
    decode: median(list.map((rate) => rate.decode)),
    prefill: median(list.map((rate) => rate.prefill)),
    bandwidthGBps,
  }));
}

/** estimate() of the kit's command line for `model` on this machine, at the bench's decode depth and prompt. */
function projectSpeed(
  model: ModelFile,
  args: string[],
  host: HostSpec,
  cpuFactors: CpuFactorOverrides,
): { decode: number; prefill: number; estimate: Estimate } {
  const result = estimate(model.tensors, model.arch, host, parseFlags(args, "bench").sizing, {
    catalog,
    decodeDepthTokens: DECODE_DEPTH,
    decodeDepths: [DECODE_DEPTH],
    prefillPrompts: [PROMPT_TOKENS],
    cpuFactors,
  });
  const prefill = result.projection.prefillByPrompt.find(
    (point) => point.promptTokens === PROMPT_TOKENS,
  )!.tokensPerSecond;
  return { decode: result.projection.decodeTokensPerSecond, prefill, estimate: result };
}

// ---------------------------------------------------------------- main
function pct(predicted: number, measured: number): string {
  if (measured === 0 && predicted === 0) return "0.0%";
  return `${(((predicted - measured) / Math.max(measured, 1)) * 100).toFixed(1)}%`;
}

/** test-llama-archs' qwen3moe and glm4moe MoE models, F32 and quantized to Q8_0 (made once, then reused). */
async function otherArchModels(): Promise<ModelFile[]> {
  const otherArchs: ModelFile[] = [];
  for (const arch of ["qwen3moe", "glm4moe"]) {
    const dir = join(workDir, arch);
    const source = join(dir, `${arch}-moe.gguf`);
    if (!existsSync(source)) {
      mkdirSync(dir, { recursive: true });
      execFileSync(llamaTool("test-llama-archs"), ["-a", `^${arch}$`, "-o", dir], { stdio: "ignore" });
    }
    const q8 = join(dir, `${arch}-moe-q8_0.gguf`);
    if (!existsSync(q8))
      execFileSync(llamaTool("llama-quantize"), ["--pure", source, q8, "Q8_0", String(machine.cores)], {
        stdio: "ignore",
      });
    otherArchs.push(
      await readModel(`${arch} F32 (test-llama-archs)`, source, false),
      await readModel(`${arch} Q8_0`, q8, false),
    );
  }
  return otherArchs;
}

/** Every model the bench runs: other architectures, the tiny and medium (and, full, large) generated deepseek2 ones. */
async function prepareModels(): Promise<ModelFile[]> {
  const tinyPath = generateDeepseek2Model(join(workDir, "tiny"));
  const medium = await generatedModelCase(workDir, "medium");
  await quantizeMix(medium.source, medium.mixes["q2-experts"].path, "q2-experts");
  await quantizeMix(medium.source, medium.mixes["q4-experts"].path, "q4-experts");
  const shards = splitGguf(medium.mixes["q2-experts"].path, join(workDir, "medium-q2-split", "medium-q2"), 40);
  const otherArchs = await otherArchModels();
  const models = [
    ...otherArchs,
    await readModel("tiny F32 (test-llama-archs)", tinyPath, false),
    await readModel("medium q2-experts", medium.mixes["q2-experts"].path, true),
    await readModel("medium q4-experts", medium.mixes["q4-experts"].path, true),
  ];
  // A split model: architecture from the first shard, tensors from all of them, loaded from the first.
  models.push(await readModel(`medium q2-experts, ${shards.length} shards`, shards[0]!, true, shards.slice(1)));
  if (!quick) {
    const large = await generatedModelCase(workDir, "large");
    await quantizeMix(large.source, large.mixes["q2-experts"].path, "q2-experts");
    await quantizeMix(large.source, large.mixes["q4-experts"].path, "q4-experts");
    models.push(await readModel("large q2-experts", large.mixes["q2-experts"].path, true));
    models.push(await readModel("large q4-experts", large.mixes["q4-experts"].path, true));
  }
  return models;
}

/** The memory cases' server settings: a handful for --quick, the full set otherwise. */
function memoryVariants(): MemoryVariant[] {
  // Memory-mapped loading (llama-server's default) and -fa off are sized too, so they are checked too.
  return quick
    ? [
        { ctx: 1024, slots: 1, repack: true, expertsOnCpuByOt: false, ubatch: 512 },
        { ctx: 4096, slots: 2, repack: false, expertsOnCpuByOt: false, ubatch: 512 },
        { ctx: 2048, slots: 1, repack: true, expertsOnCpuByOt: false, ubatch: 512, loadMode: "mmap" },
        { ctx: 2048, slots: 1, repack: true, expertsOnCpuByOt: false, ubatch: 512, flashAttn: "off" },
        { ctx: 4096, slots: "auto", repack: true, expertsOnCpuByOt: false, ubatch: 512 },
      ]
    : [
        { ctx: 1024, slots: 1, repack: true, expertsOnCpuByOt: false, ubatch: 512 },
        { ctx: 4096, slots: 1, repack: true, expertsOnCpuByOt: false, ubatch: 512 },
        { ctx: 2048, slots: 2, repack: true, expertsOnCpuByOt: false, ubatch: 256 },
        { ctx: 4096, slots: 2, repack: false, expertsOnCpuByOt: false, ubatch: 512 },
        { ctx: 1024, slots: 1, repack: true, expertsOnCpuByOt: true, ubatch: 512 },
        { ctx: 8192, slots: 1, repack: true, expertsOnCpuByOt: false, ubatch: 2048 },
        { ctx: 2048, slots: 1, repack: true, expertsOnCpuByOt: false, ubatch: 512, loadMode: "mmap" },
        { ctx: 4096, slots: 1, repack: false, expertsOnCpuByOt: false, ubatch: 512, loadMode: "mmap" },
        { ctx: 2048, slots: 1, repack: true, expertsOnCpuByOt: false, ubatch: 512, flashAttn: "off" },
        { ctx: 4096, slots: "auto", repack: true, expertsOnCpuByOt: false, ubatch: 512 },
      ];
}

async function runMemoryCases(models: readonly ModelFile[], host: HostSpec): Promise<void> {
  const variants = memoryVariants();
  for (const model of models) {
    for (const variant of variants) {
      if (variant.ctx > model.arch.contextLength * 4) continue;
      records.push(await memoryCase(model, variant, host));
    }
  }
}

/** Medians of this many runs (interleaved rounds) per speed figure. */
const SPEED_RUNS = 5;

type SpeedEntry = { model: ModelFile; args: string[] };
type MeasuredSpeedEntry = SpeedEntry & { kit: SpeedMeasurement };

// Calibration uses estimate() itself with unit factors (bench/lib/calibrate.ts), on the
// largest and the smallest model.
function calibrationCase(entry: MeasuredSpeedEntry): CalibrationCase {
  const unit = projectSpeed(entry.model, entry.args, thisMachineHost(entry.kit.bandwidthGBps), UNIT_CPU_FACTORS);
  return {
    label: entry.model.label,
    layers: entry.model.arch.layers,
    measured: entry.kit,
    unit: unit.estimate.projection,
    unitPrefill: unit.prefill,
  };
}

/** Fits the CPU factors on the calibration cases and projects every case, all from one interleaved measurement. */
function evaluateSpeed(speedEntries: readonly SpeedEntry[], measured: readonly SpeedMeasurement[]) {
  const measuredSpeeds: MeasuredSpeedEntry[] = speedEntries.map((entry, index) => ({
    ...entry,
    kit: measured[index]!,
  }));
  const largest = measuredSpeeds[0]!;
  const smallest = measuredSpeeds.filter((entry) => !entry.model.label.includes("shards")).at(-1)!;
  const fit = fitCpuFactors(
    calibrationCase(largest),
    smallest === largest ? undefined : calibrationCase(smallest),
    catalog.efficiency.cpu.decodeSecondsPerLayer.value,
    (labels) => `fitted on this machine by npm run bench (${labels})`,
  );
  const { factors: localFactors, perLayerSeconds, fitted } = fit;
  const calibrationModels = new Set([largest.model, ...(fitted ? [smallest.model] : [])]);
  const cases = measuredSpeeds.map((entry) => {
    const heldBack = !calibrationModels.has(entry.model);
    const projected = projectSpeed(entry.model, entry.args, thisMachineHost(entry.kit.bandwidthGBps), localFactors);
    const miss =
      heldBack &&
      (Math.abs(projected.decode / entry.kit.decode - 1) > GATE.speed ||
        Math.abs(projected.prefill / entry.kit.prefill - 1) > GATE.speed);
    return { entry, heldBack, projected, miss };
  });
  return { localFactors, perLayerSeconds, fitted, calibrationModels, cases };
}

type SpeedEvaluation = ReturnType<typeof evaluateSpeed>;

/** Records every speed case, and a held-back case's miss as a gate failure. */
function recordSpeedCases(evaluation: SpeedEvaluation, fitRates: ReadonlyMap<ModelFile, Rates>, remeasured: boolean) {
  for (const { entry, heldBack, projected, miss } of evaluation.cases) {
    const measured = entry.kit;
    if (miss) {
      failures.push(
        `speed ${entry.model.label} (held back): decode ${projected.decode.toFixed(1)} projected vs ${measured.decode.toFixed(1)} measured, prefill ${projected.prefill.toFixed(1)} vs ${measured.prefill.toFixed(1)} tok/s (more than ${GATE.speed * 100}% off${remeasured ? ", measured twice" : ""})`,
      );
    }
    const fit = fitRates.get(entry.model)!;
    records.push({
      name: `${entry.model.label}${heldBack ? " (held back)" : " (calibration)"}`,
      kind: "speed",
      args: entry.args,
      projectedDecode: projected.decode,
      measuredDecode: measured.decode,
      projectedPrefill: projected.prefill,
      measuredPrefill: measured.prefill,
      remeasured,
      kitVsFitDecodeRatio: measured.decode / fit.decode,
      kitVsFitPrefillRatio: measured.prefill / fit.prefill,
    });
  }
}

async function runSpeedCases(
  models: readonly ModelFile[],
): Promise<{ evaluation: SpeedEvaluation; speedBandwidthGBps: number }> {
  // Speed: decode/prefill on models big enough for memory traffic to dominate, kit flags, medians
  // of 5. The estimator's CPU factors are fitted on this machine from two calibration cases (the
  // largest and the smallest model); the others are held back and gated.
  const speedModels = models
    .filter((model) => model.bytes > 100 * MiB && model.arch.llamaCppArch === "deepseek2")
    .sort((a, b) => b.bytes - a.bytes);
  const speedEntries = speedModels.map((model) => ({
    model,
    args: kitArgsOnThisMachine(model.lock, { contextLength: 2048, parallelSlots: 1 }),
  }));
  // llama-server's own --fit choice, for the kit/--fit ratio columns (not gated).
  const fitRates = new Map<ModelFile, Rates>();
  for (const model of speedModels) fitRates.set(model, await measureSpeed(model, ["-c", "2048"], SPEED_RUNS));

  let evaluation = evaluateSpeed(speedEntries, await measureInterleaved(speedEntries, SPEED_RUNS));
  // A miss is measured once more (every case again, interleaved, and the factors refitted) before it fails.
  const remeasured = evaluation.cases.some((entry) => entry.miss);
  if (remeasured) evaluation = evaluateSpeed(speedEntries, await measureInterleaved(speedEntries, SPEED_RUNS));
  const speedBandwidthGBps = evaluation.cases[0]!.entry.kit.bandwidthGBps;
  recordSpeedCases(evaluation, fitRates, remeasured);
  return { evaluation, speedBandwidthGBps };
}

// ------------------------------------------------------------ report
/** The machine line and the memory table. */
function memoryReport(lines: string[], bandwidthGBps: number): void {
  lines.push(
    `Machine: ${machine.cores} cores, AVX-512 ${machine.avx512 ? "yes" : "no"}, ${(machine.ramBytes / 1024 ** 3).toFixed(1)} GiB; read bandwidth measured ${bandwidthGBps.toFixed(1)} GB/s (tools/membw.c, ${machine.cores} threads)`,
  );
  lines.push("");
  lines.push("### Memory: estimate() vs llama-server's logged buffers (CPU)");
  lines.push("");
  lines.push(
    `Gates: weights, repacked and KV within ${GATE.exactKinds * 100}% on every case; compute within ${GATE.compute * 100}% on the generated deepseek2 models (marked *).`,
  );
  lines.push("");
  lines.push("| case | model MiB (pred/meas) | repack MiB | KV MiB | compute MiB | total err |");
  lines.push("|---|---:|---:|---:|---:|---:|");
  for (const record of records.filter((r) => r.kind === "memory")) {
    const d = record.devices!.CPU!;
    const cell = (b: BufferRecord) =>
      `${(b.predictedBytes / MiB).toFixed(2)} / ${(b.measuredBytes / MiB).toFixed(2)} (${pct(b.predictedBytes, b.measuredBytes)})`;
    lines.push(
      `| ${record.name}${record.gated?.includes("compute") ? " *" : ""} | ${cell(d.model)} | ${cell(d.repack)} | ${cell(d.kv)} | ${cell(d.compute)} | ${pct(d.total.predictedBytes, d.total.measuredBytes)} |`,
    );
  }
}

/** The speed table, with the fitted factors and the gate. */
function speedReport(lines: string[], evaluation: SpeedEvaluation, speedBandwidthGBps: number): void {
  const { localFactors, perLayerSeconds, fitted, calibrationModels } = evaluation;
  lines.push(
    `### Speed: estimate() vs measured (factors fitted on ${[...calibrationModels].map((m) => m.label).join(" and ")}: decode efficiency ${localFactors.decodeEfficiency!.toFixed(3)} of measured bandwidth + ${(perLayerSeconds * 1e6).toFixed(0)} µs per layer per token${fitted ? "" : " (catalog/efficiency.yaml)"}; prefill ${localFactors.prefillEfficiency!.toFixed(3)} of fp32 peak)`,
  );
  lines.push("");
  lines.push(
    `Gate: held-back cases within ${GATE.speed * 100}% (decode at depth ~${DECODE_DEPTH}, prefill of ${PROMPT_TOKENS} tokens; medians of ${SPEED_RUNS} interleaved rounds, one run of every case per round, projected with the median of one bandwidth probe per round (${speedBandwidthGBps.toFixed(1)} GB/s); a miss re-measures and refits everything once, marked †).`,
  );
  lines.push("");
  lines.push(
    "| case | decode tok/s (proj/meas) | err | prefill tok/s (proj/meas) | err | kit / --fit decode | kit / --fit prefill |",
  );
  lines.push("|---|---:|---:|---:|---:|---:|---:|");
  for (const record of records.filter((r) => r.kind === "speed")) {
    lines.push(
      `| ${record.name}${record.remeasured ? " †" : ""} | ${record.projectedDecode!.toFixed(1)} / ${record.measuredDecode!.toFixed(1)} | ${pct(record.projectedDecode!, record.measuredDecode!)} | ${record.projectedPrefill!.toFixed(1)} / ${record.measuredPrefill!.toFixed(1)} | ${pct(record.projectedPrefill!, record.measuredPrefill!)} | ${record.kitVsFitDecodeRatio?.toFixed(3) ?? "-"} | ${record.kitVsFitPrefillRatio?.toFixed(3) ?? "-"} |`,
    );
  }
}

/** The markdown report: memory and speed tables, the GPU note, the run's duration and the gates. */
function reportText(
  bandwidthGBps: number,
  speed: { evaluation: SpeedEvaluation; speedBandwidthGBps: number },
  started: number,
): string {
  const lines: string[] = [];
  memoryReport(lines, bandwidthGBps);
  lines.push("");
  speedReport(lines, speed.evaluation, speed.speedBandwidthGBps);
  lines.push("");
  lines.push("GPU (hybrid placement): unverified — no GPU machine was lent to this session.");
  lines.push("");
  lines.push(
    `${quick ? "quick" : "full"} run, ${((Date.now() - started) / 1000).toFixed(0)} s, medians of ${SPEED_RUNS} runs per speed figure`,
  );
  lines.push("");
  lines.push(
    failures.length === 0
      ? "Gates: all passed."
      : `Gates: ${failures.length} FAILED:\n${failures.map((failure) => `- ${failure}`).join("\n")}`,
  );
  return lines.join("\n");
}

async function main(): Promise<void> {
  mkdirSync(workDir, { recursive: true });
  const started = Date.now();
  // Bandwidth first: every estimate below runs on this machine as a host measured now.
  const bandwidthGBps = measureReadBandwidthGBps(machine.cores);
  const host = thisMachineHost(bandwidthGBps);
  const models = await prepareModels();
  await runMemoryCases(models, host);
  const speed = await runSpeedCases(models);
  records.push({
    name: "hybrid placement on a GPU",
    kind: "gpu",
    note: "unverified: no GPU machine was lent to this session",
  });

  const report = reportText(bandwidthGBps, speed, started);
  console.log(report);
  const { localFactors } = speed.evaluation;
  // Results are run output, not source: an ignored folder by default (.gitignore: bench/out/).
  const out = flags.out ?? join(__dirname, "out", "results.json");
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(
    out,
    `${JSON.stringify({ generatedAt: new Date().toISOString(), quick, bandwidthGBps, localFactors, gates: GATE, failures, records }, null, 1)}\n`,
  );
  if (failures.length > 0) process.exitCode = 1;
}

main().catch((error) => {
  console.error(error);
  process.exitCode = 1;
});
