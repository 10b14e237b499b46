/**
 * `npm run bench:concurrency`: holds planner/fleet.ts's aggregate decode (N slots decoding together:
 * the weights read once per step, each slot's KV, N tokens' arithmetic) against the real
 * llama-server on this machine, on the generated deepseek2 model (Kimi's shape, shrunk), with -np
 * 1, 2 and 4 and as many concurrent requests. The CPU factors are fitted on the -np 1 run alone
 * (bench/lib/calibrate.ts, as npm run bench does), so -np 2 and 4 are held out: they test the batch
 * physics, not the factors. Exits non-zero when a held-out case misses by more than ±35%.
 */
import { mkdirSync } from "node:fs";
import { readLocalModel, thisMachineHost, type LocalModel } from "../cli/local-model";
import { loadCatalog } from "../planner/catalog";
import { estimate } from "../planner/estimate";
import { aggregateDecodeTokensPerSecond } from "../planner/fleet";
import { parseFlags } from "../planner/flags";
import type { CpuFactorOverrides } from "../planner/speed";
import { generatedModelCase } from "../lab/model-mixes";
import { thisMachine } from "../lab/this-machine";
import { measureReadBandwidthGBps } from "../tools/bandwidth";
import { median, UNIT_CPU_FACTORS } from "./lib/calibrate";
import { startServer } from "../lab/server";
import { benchModelsDir, benchPrompt } from "./lib/workload";
import { kitArgsOnThisMachine } from "./lib/kit-args";

/** The gate: measured aggregate decode within ±35% of the projection for -np 2 and 4. */
const GATE = 0.35;
const SLOT_COUNTS = [1, 2, 4] as const;
/**
 * Short prompts: with continuous batching one slot's prompt is processed in the same batches as the
 * others' first decode steps, which the decode timings then include; 64 tokens keep that small.
 */
const PROMPT = 64;
const GENERATED = 128;
const DEPTH = PROMPT + GENERATED / 2;
const ROUNDS = 3;
const CONTEXT_PER_SLOT = 1024;

const catalog = loadCatalog();
const machine = thisMachine();

/**
 * Aggregate decode with `slots` requests in flight (the sum of their decode rates: they overlap) and
 * the prompt rate of those requests, each the median over rounds.
 */
async function measureAggregate(
  model: LocalModel,
  args: string[],
  slots: number,
): Promise<{ decode: number; prefill: number }> {
  const server = await startServer(model.path, args);
  try {
    await server.complete({ prompt: [1, 2, 3, 4], n_predict: 8, cache_prompt: false });
    const rounds: number[] = [];
    const prompts: number[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      const results = await Promise.all(
        Array.from({ length: slots }, (_, request) =>
          server.complete({
            prompt: benchPrompt(model.arch.vocabSize, round * 16 + request, PROMPT),
            n_predict: GENERATED,
            cache_prompt: false,
            temperature: 0,
            ignore_eos: true,
          }),
        ),
      );
      rounds.push(results.reduce((sum, result) => sum + result.timings.predicted_per_second, 0));
      prompts.push(median(results.map((result) => result.timings.prompt_per_second)));
    }
    return { decode: median(rounds), prefill: median(prompts) };
  } finally {
    await server.stop();
  }
}

type Project = (args: string[], cpuFactors: CpuFactorOverrides) => ReturnType<typeof estimate>;

/** Measures every slot count with the kit's flags: aggregate decode per count, the -np 1 prompt rate, the args used. */
async function measureSlotCounts(model: LocalModel): Promise<{
  measured: Map<number, number>;
  singlePrefill: number;
  argsFor: Map<number, string[]>;
}> {
  const measured = new Map<number, number>();
  let singlePrefill = 0;
  const argsFor = new Map<number, string[]>();
  for (const slots of SLOT_COUNTS) {
    const args = kitArgsOnThisMachine(model.lock, { contextLength: CONTEXT_PER_SLOT, parallelSlots: slots });
    argsFor.set(slots, args);
    const result = await measureAggregate(model, args, slots);
    measured.set(slots, result.decode);
    if (slots === 1) singlePrefill = result.prefill;
  }
  return { measured, singlePrefill, argsFor };
}

// Fit on -np 1 only. The arithmetic of a decode step with N sequences is N tokens through the same
// quantized dot-product kernels a prompt runs (ggml's CPU mul_mat for a few rows at a time), so
// its rate is the one the -np 1 prompt measured (prefill efficiency); decode efficiency is then
// fitted to the -np 1 step with that arithmetic term in place, the catalog's per-layer cost kept.
function fitOnSingleSlot(
  project: Project,
  singleArgs: string[],
  singlePrefill: number,
  singleDecode: number,
): CpuFactorOverrides {
  const single = project(singleArgs, UNIT_CPU_FACTORS);
  const unitPrefill = single.projection.prefillByPrompt[0]!.tokensPerSecond;
  const prefillEfficiency = singlePrefill / unitPrefill;
  const perLayer = catalog.efficiency.cpu.decodeSecondsPerLayer.value;
  const withCompute = (decodeEfficiency: number): CpuFactorOverrides => ({
    decodeEfficiency,
    decodeSecondsPerLayer: perLayer,
    decodeComputeEfficiency: prefillEfficiency,
    prefillEfficiency,
    source: "fitted on -np 1 by npm run bench:concurrency (arithmetic at the measured prompt rate)",
  });
  // Decode efficiency by bisection on the -np 1 projection (monotone in it); when the arithmetic
  // alone already takes the whole step the efficiency does not matter and stays at the top.
  let low = 1e-3;
  let high = 1;
  const decodeAt = (efficiency: number) =>
    project(singleArgs, withCompute(efficiency)).projection.decodeTokensPerSecond;
  if (decodeAt(high) > singleDecode) {
    for (let step = 0; step < 60; step++) {
      const middle = (low + high) / 2;
      if (decodeAt(middle) > singleDecode) high = middle;
      else low = middle;
    }
  }
  console.log(
    `fit on -np 1: prompt ${singlePrefill.toFixed(1)} tok/s → arithmetic efficiency ${prefillEfficiency.toFixed(3)}; decode efficiency ${high.toFixed(3)}`,
  );
  return withCompute(high);
}

/** Prints the measured-vs-projected table; returns the held-out cases' gate failures. */
function printTable(
  project: Project,
  factors: CpuFactorOverrides,
  measured: ReadonlyMap<number, number>,
  argsFor: ReadonlyMap<number, string[]>,
): string[] {
  const failures: string[] = [];
  console.log("| -np (= requests) | measured aggregate tok/s | projected tok/s | error | gated |");
  console.log("|---|---|---|---|---|");
  for (const slots of SLOT_COUNTS) {
    const projected = aggregateDecodeTokensPerSecond(project(argsFor.get(slots)!, factors).speedInputs, slots);
    const actual = measured.get(slots)!;
    const error = projected / actual - 1;
    const gated = slots > 1;
    if (gated && Math.abs(error) > GATE)
      failures.push(
        `-np ${slots}: projected ${projected.toFixed(2)} tok/s vs measured ${actual.toFixed(2)} (${(error * 100).toFixed(1)}% beyond ±${GATE * 100}%)`,
      );
    console.log(
      `| ${slots} | ${actual.toFixed(2)} | ${projected.toFixed(2)} | ${(error * 100).toFixed(1)}% | ${gated ? "yes" : "no (calibration)"} |`,
    );
  }
  return failures;
}

async function main(): Promise<void> {
  const workDir = benchModelsDir();
  mkdirSync(workDir, { recursive: true });
  const medium = await generatedModelCase(workDir, "medium");
  const model = await readLocalModel(medium.mixes["q2-experts"].path, "medium q2-experts");
  const bandwidthGBps = measureReadBandwidthGBps(machine.cores);
  const host = thisMachineHost(bandwidthGBps);
  const project: Project = (args, cpuFactors) =>
    estimate(model.tensors, model.arch, host, parseFlags(args, "bench").sizing, {
      catalog,
      decodeDepthTokens: DEPTH,
      decodeDepths: [DEPTH],
      prefillPrompts: [PROMPT],
      cpuFactors,
    });

  const { measured, singlePrefill, argsFor } = await measureSlotCounts(model);
  const fit = { factors: fitOnSingleSlot(project, argsFor.get(1)!, singlePrefill, measured.get(1)!) };

  console.log(
    `bench:concurrency — medium q2-experts (${(model.bytes / 2 ** 20).toFixed(0)} MiB, ${model.arch.routedExperts} experts, ${model.arch.activeExperts} active), ${machine.cores} core(s), ${bandwidthGBps.toFixed(1)} GB/s read; depth ${DEPTH}, ${GENERATED} tokens per request, median of ${ROUNDS}`,
  );
  console.log("");
  const failures = printTable(project, fit.factors, measured, argsFor);
  console.log("");
  console.log(
    `measured scaling: ${SLOT_COUNTS.map((slots) => `${slots} → ${(measured.get(slots)! / measured.get(1)!).toFixed(2)}×`).join(", ")}`,
  );
  if (failures.length > 0) {
    console.error(`FAIL (gate ±${GATE * 100}% on -np 2 and 4):\n  ${failures.join("\n  ")}`);
    process.exit(1);
  }
  console.log(`OK: -np 2 and 4 within ±${GATE * 100}% of the projection.`);
}

main().catch((error: unknown) => {
  console.error(error instanceof Error ? (error.stack ?? error.message) : String(error));
  process.exit(1);
});
