/**
 * `npm run bench` (full) / `npm run bench -- --quick` (CI): holds the planner's memory and speed
 * models against the real llama-server v0.5.0 on this machine, prints markdown tables and writes
 * bench/results.json (one record per case).
 *
 * - memory: predicted vs the buffer sizes llama-server logs at -lv 4 (model, CPU_REPACK, KV,
 *   compute), over deepseek2 models made by test-llama-archs and by our generator, two quant
 *   mixes, several context sizes and slot counts, with and without repacking and with experts
 *   forced to the CPU buffer by -ot;
 * - speed: this machine's read bandwidth measured here (test/support/membw.c), then projected vs
 *   measured decode and prefill; the CPU factors are calibrated on two cases and the error is
 *   reported on the others (held back);
 * - kit vs --fit: the same model served with the kit's arguments and with llama.cpp's own
 *   defaults (--fit on), medians of 5 runs, as a ratio.
 * GPU cases need a GPU machine; without one they are listed as unverified.
 */
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { gguf } from "@huggingface/gguf";
import { scalarMetadata } from "../cli/lock";
import { loadCatalog } from "../planner/catalog";
import { parseStackConfig } from "../planner/config";
import { buildPlan } from "../planner/plan";
import { GGML_TYPE_BY_ID } from "../planner/ggml-types";
import { architectureFromMetadata, lockSchema, tensorsFromLock, type ManifestLock } from "../planner/lock";
import { computeBufferBytes, isRepacked, kvBytesPerLayer, kvCells } from "../planner/memory";
import { attentionFlopsPerTokenPerLayer, decodeReadFraction, matmulFlopsPerToken, type TensorInfo } from "../planner/tensors";
import type { Architecture } from "../planner/catalog";
import type { CpuSpec } from "../planner/host";
import { generatedModelCase, quantizeMix } from "../test/support/model-mixes";
import { generateDeepseek2Model, splitGguf } from "../test/support/models";
import { llamaTool } from "../test/support/llama-cpp";
import { parseBuffers, startServer } from "./lib/server";
import { thisMachine } from "../test/support/local-stack";
import { measureReadBandwidthGBps } from "../test/support/bandwidth";

const MiB = 1024 * 1024;
const { values: flags } = parseArgs({ options: { quick: { type: "boolean" }, out: { type: "string" } } });
const quick = Boolean(flags.quick);
const workDir = join(process.env.KIMI_KIT_CACHE ?? join(process.env.HOME ?? "/tmp", ".cache", "kimi-kit"), "bench-models");
const catalog = loadCatalog();
const machine = thisMachine();
const cpu: CpuSpec = { name: "this machine", cores: machine.cores, sockets: 1, numaNodes: 1, allCoreGHz: machine.ghz, fp32FlopsPerCycle: 32, avx2: true, avx512: machine.avx512, ccds: undefined, fabricClockMHz: undefined };

interface ModelFile {
  label: string;
  path: string;
  arch: Architecture;
  tensors: TensorInfo[];
  bytes: number;
  lock: ManifestLock;
}

async function readModel(label: string, path: string, extraShards: string[] = []): Promise<ModelFile> {
  const header = await gguf(path, { allowLocalFile: true });
  const others = await Promise.all(extraShards.map((shard) => gguf(shard, { allowLocalFile: true })));
  const lock: ManifestLock = lockSchema.parse({
    lockVersion: 1, repo: "local/bench", revision: "local", tier: label, source: path, generatedAt: "bench",
    metadata: scalarMetadata(header.metadata as Record<string, unknown>),
    shards: [header, ...others].map((shard, index) => ({
      path: index === 0 ? path : extraShards[index - 1]!,
      size: 1,
      sha256: "0".repeat(64),
      tensors: shard.tensorInfos.map((info) => ({ name: info.name, type: GGML_TYPE_BY_ID[Number(info.dtype)]!, shape: info.shape.map(Number), offset: Number(info.offset) })),
    })),
  });
  const tensors = tensorsFromLock(lock);
  return { label, path, arch: architectureFromMetadata(lock.metadata), tensors, bytes: tensors.reduce((sum, t) => sum + t.bytes, 0), lock };
}

interface BufferRecord { predictedBytes: number; measuredBytes: number }
interface CaseRecord {
  name: string;
  kind: "memory" | "speed" | "gpu";
  devices?: Record<string, Record<"model" | "repack" | "kv" | "compute" | "total", BufferRecord>>;
  projectedDecode?: number;
  measuredDecode?: number;
  projectedPrefill?: number;
  measuredPrefill?: number;
  kitVsFitDecodeRatio?: number;
  kitVsFitPrefillRatio?: number;
  note?: string;
}
const records: CaseRecord[] = [];

// ---------------------------------------------------------------- memory
interface MemoryVariant { ctx: number; slots: number; repack: boolean; expertsOnCpuByOt: boolean; ubatch: number }

async function memoryCase(model: ModelFile, variant: MemoryVariant): Promise<CaseRecord> {
  const args = ["-c", String(variant.ctx * variant.slots), "-np", String(variant.slots), "-ub", String(variant.ubatch), "-b", String(Math.max(2048, variant.ubatch)), "-t", String(machine.cores), "--load-mode", "none", "--fit", "off", "-fa", "on", "--cache-ram", "0"];
  if (!variant.repack) args.push("--no-repack");
  if (variant.expertsOnCpuByOt) args.push("-ot", "ffn_(up|down|gate|gate_up)_exps\\.=CPU");
  const server = await startServer(model.path, args);
  await new Promise((resolve) => setTimeout(resolve, 300));
  const logged = parseBuffers(server.log());
  await server.stop();

  // The planner's view: the same functions plan.ts uses, applied to this file's real tensors.
  let modelBytes = 0;
  let repackBytes = 0;
  for (const tensor of model.tensors) {
    // An -ot override to CPU still lets llama.cpp choose its repack buffer (measured here), so it changes nothing on a CPU-only host.
    if (variant.repack && isRepacked(tensor, cpu, catalog.llamaCpp)) repackBytes += tensor.bytes;
    else modelBytes += tensor.bytes;
  }
  const cells = kvCells(variant.ctx, variant.slots);
  const kvBytes = kvBytesPerLayer(model.arch, "f16", cells) * model.arch.layers;
  const computeBytes = computeBufferBytes({ arch: model.arch, ubatch: variant.ubatch, contextTotal: variant.ctx * variant.slots, kvCellsPerSequence: kvCells(variant.ctx, 1), holdsOutput: true, offloadedWeightBytes: 0 });
  const measured = {
    model: (logged.model.CPU ?? 0) + (logged.model.CPU_Mapped ?? 0),
    repack: logged.model.CPU_REPACK ?? 0,
    kv: logged.kv.CPU ?? 0,
    compute: logged.compute.CPU ?? 0,
  };
  const cpuRecord = {
    model: { predictedBytes: modelBytes, measuredBytes: measured.model },
    repack: { predictedBytes: repackBytes, measuredBytes: measured.repack },
    kv: { predictedBytes: kvBytes, measuredBytes: measured.kv },
    compute: { predictedBytes: computeBytes, measuredBytes: measured.compute },
    total: { predictedBytes: modelBytes + repackBytes + kvBytes + computeBytes, measuredBytes: measured.model + measured.repack + measured.kv + measured.compute },
  };
  const name = `${model.label} ctx ${variant.ctx}×${variant.slots} ub ${variant.ubatch}${variant.repack ? "" : " no-repack"}${variant.expertsOnCpuByOt ? " -ot exps=CPU" : ""}`;
  return { name, kind: "memory", devices: { CPU: cpuRecord } };
}

// ---------------------------------------------------------------- speed

interface SpeedMeasurement { decode: number; prefill: number }

async function measureSpeed(model: ModelFile, args: string[], runs: number): Promise<SpeedMeasurement> {
  const server = await startServer(model.path, args);
  const decodes: number[] = [];
  const prefills: number[] = [];
  try {
    const vocab = model.arch.vocabSize;
    await server.complete({ prompt: [1, 2, 3, 4], n_predict: 8, cache_prompt: false });
    for (let run = 0; run < runs; run++) {
      const prompt = Array.from({ length: 256 }, (_, i) => ((i * 7919 + run * 104729) % (vocab - 2)) + 1);
      const result = await server.complete({ prompt, n_predict: 48, cache_prompt: false, temperature: 0, ignore_eos: true });
      decodes.push(result.timings.predicted_per_second);
      prefills.push(result.timings.prompt_per_second);
    }
  } finally {
    await server.stop();
  }
  const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;
  return { decode: median(decodes), prefill: median(prefills) };
}

/** The kit's own llama-server flags for this model on this machine: the planner's, minus what the runner sets itself. */
function kitArgsFor(model: ModelFile, contextLength: number): string[] {
  const config = parseStackConfig("bench", {
    host: { kind: "bare-metal", cpu: { cores: machine.cores, allCoreGHz: machine.ghz, avx512: machine.avx512 }, memory: { total: machine.ramBytes, measuredBandwidthGBps: 30 } },
    model: { repo: model.lock.repo, tier: model.lock.tier },
    serving: { contextLength, parallelSlots: 1 },
    costs: { hardware: { priceUsd: 0, amortizationMonths: 1, powerWatts: 0, usdPerKwh: 0 }, api: { usdPerMillionOutput: 4 }, usage: { tokensPerMonth: 0, mix: { input: 1, output: 1 } } },
  });
  const args = buildPlan("bench", config, { lock: model.lock }).llamaServerArgs;
  const runnerSets = new Set(["--model", "--host", "--port", "--api-key-file"]);
  return args.filter((arg, index) => !runnerSets.has(arg) && !runnerSets.has(args[index - 1] ?? ""));
}

function decodeBytesPerToken(model: ModelFile, depth: number): number {
  const weights = model.tensors.reduce((sum, tensor) => sum + tensor.bytes * decodeReadFraction(tensor, model.arch), 0);
  return weights + depth * kvBytesPerLayer(model.arch, "f16", 1) * model.arch.layers;
}

function prefillFlopsPerToken(model: ModelFile, promptTokens: number): number {
  const weights = model.tensors.reduce((sum, tensor) => sum + matmulFlopsPerToken(tensor, model.arch), 0);
  return weights + model.arch.layers * attentionFlopsPerTokenPerLayer(model.arch, (promptTokens - 1) / 2);
}

// ---------------------------------------------------------------- main
function pct(predicted: number, measured: number): string {
  if (measured === 0 && predicted === 0) return "0.0%";
  return `${(((predicted - measured) / Math.max(measured, 1)) * 100).toFixed(1)}%`;
}

async function main(): Promise<void> {
  mkdirSync(workDir, { recursive: true });
  const started = Date.now();
  const tinyPath = generateDeepseek2Model(join(workDir, "tiny"));
  const medium = await generatedModelCase(workDir, "medium");
  await quantizeMix(medium.source, medium.mixes["q2-experts"].path, "q2-experts");
  await quantizeMix(medium.source, medium.mixes["q4-experts"].path, "q4-experts");
  const shards = splitGguf(medium.mixes["q2-experts"].path, join(workDir, "medium-q2-split", "medium-q2"), 40);
  const otherArchs: ModelFile[] = [];
  for (const arch of ["qwen3moe", "glm4moe"]) {
    const dir = join(workDir, arch);
    const source = join(dir, `${arch}-moe.gguf`);
    if (!existsSync(source)) {
      mkdirSync(dir, { recursive: true });
      execFileSync(llamaTool("test-llama-archs"), ["-a", `^${arch}$`, "-o", dir], { stdio: "ignore" });
    }
    const q8 = join(dir, `${arch}-moe-q8_0.gguf`);
    if (!existsSync(q8)) execFileSync(llamaTool("llama-quantize"), ["--pure", source, q8, "Q8_0", String(machine.cores)], { stdio: "ignore" });
    otherArchs.push(await readModel(`${arch} F32 (test-llama-archs)`, source), await readModel(`${arch} Q8_0`, q8));
  }
  const models = [
    ...otherArchs,
    await readModel("tiny F32 (test-llama-archs)", tinyPath),
    await readModel("medium q2-experts", medium.mixes["q2-experts"].path),
    await readModel("medium q4-experts", medium.mixes["q4-experts"].path),
  ];
  // A split model: architecture from the first shard, tensors from all of them, loaded from the first.
  models.push(await readModel(`medium q2-experts, ${shards.length} shards`, shards[0]!, shards.slice(1)));
  let large: Awaited<ReturnType<typeof generatedModelCase>> | undefined;
  if (!quick) {
    large = await generatedModelCase(workDir, "large");
    await quantizeMix(large.source, large.mixes["q2-experts"].path, "q2-experts");
    await quantizeMix(large.source, large.mixes["q4-experts"].path, "q4-experts");
    models.push(await readModel("large q2-experts", large.mixes["q2-experts"].path));
    models.push(await readModel("large q4-experts", large.mixes["q4-experts"].path));
  }

  const variants: MemoryVariant[] = quick
    ? [
        { ctx: 1024, slots: 1, repack: true, expertsOnCpuByOt: false, ubatch: 512 },
        { ctx: 4096, slots: 2, repack: false, expertsOnCpuByOt: false, ubatch: 512 },
      ]
    : [
        { ctx: 1024, slots: 1, repack: true, expertsOnCpuByOt: false, ubatch: 512 },
        { ctx: 4096, slots: 1, repack: true, expertsOnCpuByOt: false, ubatch: 512 },
        { ctx: 2048, slots: 2, repack: true, expertsOnCpuByOt: false, ubatch: 256 },
        { ctx: 4096, slots: 2, repack: false, expertsOnCpuByOt: false, ubatch: 512 },
        { ctx: 1024, slots: 1, repack: true, expertsOnCpuByOt: true, ubatch: 512 },
        { ctx: 8192, slots: 1, repack: true, expertsOnCpuByOt: false, ubatch: 2048 },
      ];
  for (const model of models) {
    for (const variant of variants) {
      if (variant.ctx > model.arch.contextLength * 4) continue;
      records.push(await memoryCase(model, variant));
    }
  }

  // Speed: bandwidth first, then decode/prefill on models big enough for memory traffic to dominate.
  const bandwidthGBps = measureReadBandwidthGBps(machine.cores);
  // Largest first: the calibration case is the most memory-bound one, the others are held back.
  const speedModels = models.filter((model) => model.bytes > 100 * MiB && model.arch.llamaCppArch === "deepseek2").sort((a, b) => b.bytes - a.bytes);
  const runs = quick ? 3 : 5;
  const measuredSpeeds: { model: ModelFile; kit: SpeedMeasurement; fit?: SpeedMeasurement }[] = [];
  for (const model of speedModels) {
    const kit = await measureSpeed(model, kitArgsFor(model, 2048), runs);
    const fit = await measureSpeed(model, ["-c", "2048"], runs);
    measuredSpeeds.push({ model, kit, fit });
  }
  // Decode time per token = bytes read / (bandwidth × efficiency) + layers × a fixed per-layer cost
  // (kernel dispatch and thread sync, which dominate small models and vanish at Kimi's 18 GB/token).
  // Both are calibrated on the largest and the smallest model (two equations, two unknowns); every
  // other case is held back. Prefill: one efficiency, calibrated on the largest model.
  const largest = measuredSpeeds[0]!;
  const smallest = measuredSpeeds.filter((entry) => !entry.model.label.includes("shards")).at(-1)!;
  const bytesA = decodeBytesPerToken(largest.model, 280);
  const bytesB = decodeBytesPerToken(smallest.model, 280);
  const layersA = largest.model.arch.layers;
  const layersB = smallest.model.arch.layers;
  const secondsA = 1 / largest.kit.decode;
  const secondsB = 1 / smallest.kit.decode;
  const determinant = bytesA * layersB - bytesB * layersA;
  let secondsPerByte = secondsA / bytesA;
  let perLayerSeconds = 0;
  if (smallest !== largest && determinant !== 0) {
    const x = (secondsA * layersB - secondsB * layersA) / determinant;
    const o = (bytesA * secondsB - bytesB * secondsA) / determinant;
    if (x > 0 && o >= 0) {
      secondsPerByte = x;
      perLayerSeconds = o;
    }
  }
  const decodeEfficiency = 1 / (secondsPerByte * bandwidthGBps * 1e9);
  const calibrationModels = new Set([largest.model, ...(perLayerSeconds > 0 ? [smallest.model] : [])]);
  const calibration = largest;
  const peakFlops = machine.cores * machine.ghz * 1e9 * cpu.fp32FlopsPerCycle;
  const prefillEfficiency = (calibration.kit.prefill * prefillFlopsPerToken(calibration.model, 256)) / peakFlops;
  for (const { model, kit, fit } of measuredSpeeds) {
    records.push({
      name: `${model.label}${calibrationModels.has(model) ? " (calibration)" : " (held back)"}`,
      kind: "speed",
      projectedDecode: 1 / (decodeBytesPerToken(model, 280) * secondsPerByte + model.arch.layers * perLayerSeconds),
      measuredDecode: kit.decode,
      projectedPrefill: (peakFlops * prefillEfficiency) / prefillFlopsPerToken(model, 256),
      measuredPrefill: kit.prefill,
      kitVsFitDecodeRatio: fit ? kit.decode / fit.decode : undefined,
      kitVsFitPrefillRatio: fit ? kit.prefill / fit.prefill : undefined,
    });
  }
  records.push({ name: "hybrid placement on a GPU", kind: "gpu", note: "unverified: no GPU machine was lent to this session (device status: not drawn)" });

  // ------------------------------------------------------------ report
  const lines: string[] = [];
  lines.push(`Machine: ${machine.cores} cores, AVX-512 ${machine.avx512 ? "yes" : "no"}, ${(machine.ramBytes / 1024 ** 3).toFixed(1)} GiB; read bandwidth measured ${bandwidthGBps.toFixed(1)} GB/s (test/support/membw.c, ${machine.cores} threads)`);
  lines.push("");
  lines.push("### Memory: predicted vs llama-server's logged buffers (CPU)");
  lines.push("");
  lines.push("| case | model MiB (pred/meas) | repack MiB | KV MiB | compute MiB | total err |");
  lines.push("|---|---:|---:|---:|---:|---:|");
  for (const record of records.filter((r) => r.kind === "memory")) {
    const d = record.devices!.CPU!;
    const cell = (b: BufferRecord) => `${(b.predictedBytes / MiB).toFixed(2)} / ${(b.measuredBytes / MiB).toFixed(2)} (${pct(b.predictedBytes, b.measuredBytes)})`;
    lines.push(`| ${record.name} | ${cell(d.model)} | ${cell(d.repack)} | ${cell(d.kv)} | ${cell(d.compute)} | ${pct(d.total.predictedBytes, d.total.measuredBytes)} |`);
  }
  lines.push("");
  lines.push(`### Speed: projected vs measured (calibrated on ${[...calibrationModels].map((m) => m.label).join(" and ")}: decode efficiency ${decodeEfficiency.toFixed(3)} of measured bandwidth + ${(perLayerSeconds * 1e6).toFixed(0)} µs per layer per token; prefill ${prefillEfficiency.toFixed(3)} of fp32 peak)`);
  lines.push("");
  lines.push("| case | decode tok/s (proj/meas) | err | prefill tok/s (proj/meas) | err | kit / --fit decode | kit / --fit prefill |");
  lines.push("|---|---:|---:|---:|---:|---:|---:|");
  for (const record of records.filter((r) => r.kind === "speed")) {
    lines.push(`| ${record.name} | ${record.projectedDecode!.toFixed(1)} / ${record.measuredDecode!.toFixed(1)} | ${pct(record.projectedDecode!, record.measuredDecode!)} | ${record.projectedPrefill!.toFixed(1)} / ${record.measuredPrefill!.toFixed(1)} | ${pct(record.projectedPrefill!, record.measuredPrefill!)} | ${record.kitVsFitDecodeRatio?.toFixed(3) ?? "-"} | ${record.kitVsFitPrefillRatio?.toFixed(3) ?? "-"} |`);
  }
  lines.push("");
  lines.push("GPU (hybrid placement): unverified — no GPU machine was lent to this session.");
  lines.push("");
  lines.push(`${quick ? "quick" : "full"} run, ${((Date.now() - started) / 1000).toFixed(0)} s, medians of ${runs} runs per speed figure`);
  const report = lines.join("\n");
  console.log(report);
  const out = flags.out ?? join(__dirname, "results.json");
  writeFileSync(out, `${JSON.stringify({ generatedAt: new Date().toISOString(), quick, bandwidthGBps, decodeEfficiency, decodePerLayerSeconds: perLayerSeconds, prefillEfficiency, records }, null, 1)}\n`);
}

main().catch((error) => {
  console.error(error);
  process.exitCode = 1;
});
