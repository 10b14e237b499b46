/**
 * The corpus of published llama.cpp runs (catalog/measurements.yaml): each run as its source states
 * it — hardware as a stack would state it, the model and quant with its file size, the flags, decode
 * and prefill with their prompt length and depth, the engine — with the source URL and a short
 * verbatim quote of the figure. Nothing here is estimated: a field the source does not state is null
 * (and a run missing what a projection needs carries a `fit.excluded` reason instead of a guess).
 *
 * Two rules beyond the shape: a run names a declared source, and a quant's stated size (or stated
 * bits per weight) must lie inside that quant family's bits-per-weight range for the model's
 * parameter count — a size outside it is a schema error naming the run.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { parse as parseYaml } from "yaml";
import { z } from "zod";
import { CATALOG_DIR } from "./catalog";
import { describeIssues } from "./errors";
import { parseSize } from "./units";

export const MEASUREMENTS_FILE = join(CATALOG_DIR, "measurements.yaml");

/**
 * Bits-per-weight range of each quant family, whole-file (file bytes × 8 ÷ parameters). The ranges
 * are wide enough for "dynamic" mixes (Unsloth UD-*, ubergarm recipes) that keep attention, shared
 * experts and embeddings at higher precision than the routed experts the family is named after,
 * and narrow enough that a file labelled with one family but sized like another is refused.
 */
export const QUANT_FAMILY_BPW: Record<string, readonly [number, number]> = {
  IQ1: [1.5, 2.5],
  TQ1: [1.5, 2.5],
  IQ2: [2.0, 3.1],
  Q2: [2.5, 3.6],
  IQ3: [3.0, 4.0],
  Q3: [3.3, 4.4],
  IQ4: [4.2, 5.0],
  Q4: [4.3, 5.2],
  MXFP4: [4.2, 5.2],
  Q5: [5.3, 6.1],
  Q6: [6.4, 7.0],
  Q8: [8.0, 8.7],
  BF16: [15.9, 16.1],
  F16: [15.9, 16.1],
};

/** The family a quant name belongs to: "UD-Q4_K_XL" → Q4, "IQ2_KL" → IQ2, "Q8_0" → Q8, "MXFP4" → MXFP4. */
export function quantFamily(quant: string): string | undefined {
  const name = quant
    .toUpperCase()
    .replace(/^UD-/, "")
    .replace(/^SMOL-/, "");
  for (const family of ["MXFP4", "BF16", "F16", "TQ1"]) if (name.startsWith(family)) return family;
  const match = /^(IQ|Q)(\d)/.exec(name);
  return match ? `${match[1]}${match[2]}` : undefined;
}

const nullableNumber = z.number().positive().nullable();
const nullableInt = z.int().positive().nullable();

const sourceSchema = z.strictObject({
  id: z.string().regex(/^[a-z0-9][a-z0-9.-]*$/),
  url: z.url(),
  /** Who posted the figures (a GitHub handle, a site); one person's posts in one thread are one source. */
  author: z.string().min(1),
  date: z
    .string()
    .regex(/^\d{4}-\d{2}(-\d{2})?$/)
    .nullable(),
  /** Which search corpus the page was read from in this kit's session (provenance of the quote). */
  readVia: z.enum(["issues", "pages"]),
});

const gpuSchema = z.strictObject({
  model: z.string().min(1),
  count: z.int().positive(),
  vramGB: nullableNumber,
  pcie: z.strictObject({ gen: nullableInt, lanes: nullableInt }).nullable(),
});

const hardwareSchema = z.strictObject({
  cpu: z.strictObject({
    /** As the source names it; null when the source does not name the CPU. */
    model: z.string().min(1).nullable(),
    sockets: nullableInt,
    /** Sockets the run actually used (numactl -N 0 on a dual-socket box uses one). */
    socketsUsed: nullableInt,
    cores: nullableInt,
    isa: z.enum(["x86", "arm"]).nullable(),
  }),
  memory: z.strictObject({
    kind: z.enum(["DDR4", "DDR5", "MRDIMM", "LPDDR5X", "unified"]).nullable(),
    mtPerSecond: nullableInt,
    /** Populated channels per socket, as stated (or as fixed by the platform, said in `notes`). */
    channelsPerSocket: nullableInt,
    totalGB: nullableNumber,
    /** A bandwidth the source measured (STREAM, mlc), GB/s for the whole run's memory. */
    measuredBandwidthGBps: nullableNumber,
  }),
  gpus: z.array(gpuSchema),
});

const decodeSchema = z.strictObject({
  tokensPerSecond: z.number().positive(),
  /** Tokens already in the context when generation was measured (tg128 → 0; pp4096+tg → 4096). */
  depthTokens: z.int().nonnegative().nullable(),
  generatedTokens: nullableInt,
});

const prefillSchema = z.strictObject({
  tokensPerSecond: z.number().positive(),
  promptTokens: nullableInt,
  depthTokens: z.int().nonnegative().nullable(),
});

const runSchema = z.strictObject({
  id: z.string().regex(/^[a-z0-9][a-z0-9.-]*$/),
  source: z.string(),
  engine: z.strictObject({
    name: z.enum(["llama.cpp", "ik_llama.cpp", "ktransformers"]),
    /** Forks are recorded but kept out of the mainline fit. */
    fork: z.boolean(),
    /** Build number, commit or "master" as stated; null when not stated. */
    version: z.string().nullable(),
    tool: z.enum([
      "llama-server",
      "llama-cli",
      "llama-bench",
      "llama-batched-bench",
      "llama-sweep-bench",
      "ktransformers",
      "unstated",
    ]),
  }),
  hardware: hardwareSchema,
  model: z.strictObject({
    name: z.string().min(1),
    /**
     * Total parameters in billions as stated by the source or the GGUF metadata it prints; null when neither states it.
     */
    totalParamsB: z.number().min(200).nullable(),
    quant: z.string().min(1),
    /** "376.65GiB", "213GB" as stated; null when the source does not state the file size. */
    fileSize: z.string().nullable(),
    /** Bits per weight when the source states it (llama.cpp prints it at load). */
    statedBpw: z.number().positive().nullable(),
    /**
     * The catalog model (catalog/models.yaml id) whose architecture this run's model has, where the
     * source's name is not one the kit's name rules know ("DeepSeek-671B (R1/V3)" is deepseek-v3's
     * shapes): an explicit alias stated by whoever records the run, never a fuzzy match. The reason
     * goes in `notes`.
     */
    catalogModel: z
      .string()
      .regex(/^[a-z0-9][a-z0-9.-]*$/)
      .optional(),
    /**
     * The catalog tier the source's quant label means, where the label is not the tier's name (an
     * author's "Q4_K" for the file the same author's table calls "Q4_K (UD mix)"). The reason goes
     * in `notes`. Absent: the quant is looked up by name, else sized from the stated file size.
     */
    catalogTier: z.string().min(1).optional(),
  }),
  /** The command-line flags as the source gives them (abridged to the ones that shape speed). */
  flags: z.string(),
  /** Where the routed experts ran, read off the flags: all on CPU, split CPU/GPU, or all on GPUs. */
  placement: z.enum(["cpu-only", "hybrid", "gpu-only"]),
  decode: decodeSchema.nullable(),
  prefill: prefillSchema.nullable(),
  /** Short verbatim quotes of the figures, copied from the source. */
  quotes: z.array(z.string().min(8)).min(1),
  notes: z.string().optional(),
  /** Present when the run is kept out of the mainline fit, with the reason. */
  fit: z.strictObject({ excluded: z.string().min(1) }).optional(),
});

const exclusionSchema = z.strictObject({
  url: z.url(),
  what: z.string().min(1),
  reason: z.string().min(1),
});

export const measurementsSchema = z
  .strictObject({
    sources: z.array(sourceSchema).min(1),
    runs: z.array(runSchema).min(1),
    exclusions: z.array(exclusionSchema),
  })
  .superRefine((corpus, context) => {
    const sourceIds = new Set<string>();
    corpus.sources.forEach((source, index) => {
      if (sourceIds.has(source.id))
        context.addIssue({
          code: "custom",
          path: ["sources", index, "id"],
          message: `duplicate source id ${source.id}`,
          input: source.id,
        });
      sourceIds.add(source.id);
    });
    const runIds = new Set<string>();
    corpus.runs.forEach((run, index) => {
      if (runIds.has(run.id))
        context.addIssue({
          code: "custom",
          path: ["runs", index, "id"],
          message: `duplicate run id ${run.id}`,
          input: run.id,
        });
      runIds.add(run.id);
      if (!sourceIds.has(run.source))
        context.addIssue({
          code: "custom",
          path: ["runs", index, "source"],
          message: `run ${run.id}: unknown source ${run.source}`,
          input: run.source,
        });
      if (!run.decode && !run.prefill)
        context.addIssue({
          code: "custom",
          path: ["runs", index],
          message: `run ${run.id}: neither decode nor prefill`,
          input: run.id,
        });
      if (run.engine.fork !== (run.engine.name !== "llama.cpp")) {
        context.addIssue({
          code: "custom",
          path: ["runs", index, "engine", "fork"],
          message: `run ${run.id}: fork must be true exactly for ${run.engine.name === "llama.cpp" ? "a fork" : run.engine.name}`,
          input: run.engine.fork,
        });
      }
      const problem = quantSizeProblem(run.model);
      if (problem)
        context.addIssue({
          code: "custom",
          path: ["runs", index, "model"],
          message: `run ${run.id}: ${problem}`,
          input: run.model.quant,
        });
    });
  });

export type Measurements = z.infer<typeof measurementsSchema>;
export type MeasuredRun = Measurements["runs"][number];

/** Why a run's stated size or bpw does not fit its quant family, or undefined when it fits (or nothing is stated). */
export function quantSizeProblem(model: {
  quant: string;
  totalParamsB: number | null;
  fileSize: string | null;
  statedBpw: number | null;
}): string | undefined {
  const family = quantFamily(model.quant);
  if (!family)
    return `quant ${model.quant} is of no known family; allowed families: ${Object.keys(QUANT_FAMILY_BPW).join(", ")}`;
  const [low, high] = QUANT_FAMILY_BPW[family]!;
  const checks: { bpw: number; what: string }[] = [];
  if (model.statedBpw !== null) checks.push({ bpw: model.statedBpw, what: `stated ${model.statedBpw} bpw` });
  if (model.fileSize !== null) {
    const bytes = parseSize(model.fileSize, { requireUnit: true });
    if (bytes === undefined)
      return `fileSize ${JSON.stringify(model.fileSize)} is not a size; allowed: "376.65GiB", "213GB"`;
    if (model.totalParamsB !== null)
      checks.push({
        bpw: (bytes * 8) / (model.totalParamsB * 1e9),
        what: `${model.fileSize} for ${model.totalParamsB} B parameters`,
      });
  }
  for (const check of checks) {
    if (check.bpw < low || check.bpw > high) {
      return `${model.quant}: ${check.what} is ${check.bpw.toFixed(2)} bits per weight, outside the ${family} family's ${low}–${high}`;
    }
  }
  return undefined;
}

export class MeasurementsError extends Error {}

/** Parses and validates a corpus (the file's text or already-parsed data). */
export function parseMeasurements(data: unknown, origin = "catalog/measurements.yaml"): Measurements {
  const result = measurementsSchema.safeParse(data, { reportInput: true });
  if (!result.success) {
    const lines = describeIssues(result.error.issues, () => `${origin}: `);
    const custom = result.error.issues
      .filter((issue) => issue.code === "custom")
      .map((issue) => `${origin}: ${issue.message}`);
    throw new MeasurementsError(
      `the measurements corpus is invalid:\n${[...custom, ...lines].map((line) => `  - ${line}`).join("\n")}`,
    );
  }
  return result.data;
}

export function loadMeasurements(file = MEASUREMENTS_FILE): Measurements {
  return parseMeasurements(parseYaml(readFileSync(file, "utf8")) as unknown, file);
}

/** Mainline runs the CPU-factor fit may use: not a fork and not excluded with a reason. */
export function mainlineFitRuns(corpus: Measurements): MeasuredRun[] {
  return corpus.runs.filter((run) => !run.engine.fork && !run.fit);
}

/** A coarse hardware class for reporting errors: where the routed experts run, and on what ISA. */
export function hardwareClass(run: MeasuredRun): string {
  if (run.placement === "gpu-only") return "gpu-only";
  return `${run.placement}/${run.hardware.cpu.isa ?? "unknown-isa"}`;
}

/** Distinct sources with at least one run, and how many runs each has. */
export function runsBySource(corpus: Measurements): Map<string, number> {
  const counts = new Map<string, number>();
  for (const run of corpus.runs) counts.set(run.source, (counts.get(run.source) ?? 0) + 1);
  return counts;
}
