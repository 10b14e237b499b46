/**
 * The catalog: models and tiers, GPUs, memory kinds, CPU platforms, cloud instance types and the
 * efficiency factors, all YAML data under catalog/, validated here with zod so that adding a GPU
 * or a tier is a data change and a typo in the data is an error that names the file and key.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { parse as parseYaml } from "yaml";
import { z } from "zod";
import { GGML_TYPE_NAMES } from "./ggml-types";
import { describeIssues } from "./errors";
import { parseSize } from "./units";

export const CATALOG_DIR = join(__dirname, "..", "catalog");

const sizeBytes = z.union([z.string(), z.number()]).transform((value, context) => {
  const bytes = parseSize(value);
  if (bytes === undefined) {
    context.addIssue({
      code: "custom",
      message: `not a size; allowed: "24576MiB", "340GB", "2TB" or bytes`,
      input: value,
    });
    return z.NEVER;
  }
  return bytes;
});
const ggmlType = z.enum(GGML_TYPE_NAMES as [string, ...string[]]);

export const TENSOR_CLASSES = [
  "routedExperts",
  "sharedExperts",
  "denseFfn",
  "attention",
  "router",
  "norms",
  "embedding",
  "output",
] as const;
export type TensorClass = (typeof TENSOR_CLASSES)[number];

const architectureSchema = z.strictObject({
  /** deepseek2 (MLA) for the catalog's models; a lock may bring another MoE architecture. */
  llamaCppArch: z.string(),
  /** Standard grouped-query attention (qwen3moe, glm4moe…); absent means MLA, which keeps only the latent K. */
  attention: z
    .strictObject({
      kind: z.literal("gqa"),
      headCountKv: z.int().positive(),
      keyLength: z.int().positive(),
      valueLength: z.int().positive(),
    })
    .optional(),
  layers: z.int().positive(),
  denseLeadingLayers: z.int().nonnegative(),
  hiddenSize: z.int().positive(),
  attentionHeads: z.int().positive(),
  qLoraRank: z.int().positive(),
  kvLoraRank: z.int().positive(),
  qkNopeHeadDim: z.int().positive(),
  qkRopeHeadDim: z.int().positive(),
  vHeadDim: z.int().positive(),
  denseFfnSize: z.int().positive(),
  routedExperts: z.int().positive(),
  activeExperts: z.int().positive(),
  sharedExperts: z.int().nonnegative(),
  expertFfnSize: z.int().positive(),
  vocabSize: z.int().positive(),
  contextLength: z.int().positive(),
  /**
   * Hybrid models (kimi-k3: KDA linear attention + MLA): the layers that keep a recurrent state per
   * slot instead of KV cells, and that state's F32 elements per layer (llama_hparams n_embd_r +
   * n_embd_s). Absent: every layer keeps KV.
   */
  recurrent: z
    .strictObject({
      layers: z.array(z.int().nonnegative()),
      stateFloatsPerLayer: z.int().positive(),
      /** KDA (Kimi Delta Attention) shapes: heads × headDim inner width, short-convolution kernel. */
      kda: z
        .strictObject({ heads: z.int().positive(), headDim: z.int().positive(), convKernel: z.int().positive() })
        .optional(),
      /**
       * qwen3next's gated delta net: the short convolution's channels (ssm.inner_size + 2 × group_count × state_size)
       * and kernel.
       */
      ssmConv: z.strictObject({ channels: z.int().positive(), kernel: z.int().positive() }).optional(),
    })
    .optional(),
  /**
   * Per-layer caches, for architectures whose layers differ (read from GGUF metadata): K and V
   * elements per token of each layer's cache (0: the layer keeps none), which layers keep a sliding
   * window (gpt-oss) or chunk (llama4) of swaWindow tokens instead of the whole context, and the
   * sparse-attention indexer's own cache per layer (deepseek32, glm-dsa: K only; minimax-m3: K and V).
   * Absent: every layer keeps the uniform cache of `attention` (GQA) or MLA.
   */
  kvLayout: z
    .strictObject({
      kElements: z.array(z.int().nonnegative()),
      vElements: z.array(z.int().nonnegative()),
      swaLayers: z.array(z.int().nonnegative()),
      swaWindow: z.int().nonnegative(),
      indexerK: z.array(z.int().nonnegative()),
      indexerV: z.array(z.int().nonnegative()),
    })
    .optional(),
  /**
   * deepseek4 (llama-kv-cache-dsv4.cpp): every layer keeps a raw K-only window; layers with
   * compression ratio 4 (CSA) or 128 (HCA) also keep a compressed K cache of ctx/ratio cells, CSA
   * layers a lightning-indexer K cache too, and each such layer a small F32 compressor state per slot.
   */
  dsv4: z
    .strictObject({
      kElements: z.int().positive(),
      window: z.int().nonnegative(),
      compressRatios: z.array(z.int().nonnegative()),
      indexerKey: z.int().nonnegative(),
      headK: z.int().positive(),
    })
    .optional(),
  /**
   * Sparse attention's indexer (deepseek32, glm-dsa, minimax-m3, deepseek4): its heads and key width
   * (attention.indexer.head_count, key_length), whose per-token queries and per-cell scores are the
   * largest activations of those models' compute graphs.
   */
  indexer: z.strictObject({ heads: z.int().positive(), keyLength: z.int().positive() }).optional(),
  /**
   * llama4 (interleave_moe_layer_step): every that-many-th layer is MoE, the others dense FFN layers of denseFfnSize.
   */
  moeLayerInterval: z.int().positive().optional(),
  /** deepseek4's hyper-connections (hyper_connection.count): the residual stream is that many hidden-wide copies. */
  hyperConnections: z.int().positive().optional(),
  /** Kimi K3: routed experts work in a latent width (hidden → latent → experts → latent → hidden). */
  expertLatentSize: z.int().positive().optional(),
});
export type Architecture = z.infer<typeof architectureSchema>;

const tierSchema = z.strictObject({
  name: z.string().min(1),
  publishedSizeBytes: sizeBytes,
  types: z.strictObject(
    Object.fromEntries(TENSOR_CLASSES.map((cls) => [cls, ggmlType])) as Record<TensorClass, typeof ggmlType>,
  ),
  /**
   * Dynamic quants keep the routed experts' down projection at more bits than gate and up; absent: as routedExperts.
   */
  routedExpertsDown: ggmlType.optional(),
  shards: z.strictObject({ count: z.int().positive(), verified: z.boolean() }),
});
export type Tier = z.infer<typeof tierSchema>;

const modelSchema = z.strictObject({
  id: z.string(),
  name: z.string(),
  repo: z.string().regex(/^[\w.-]+\/[\w.-]+$/),
  architecture: architectureSchema,
  serving: z.strictObject({
    alias: z.string(),
    jinja: z.boolean(),
    sampling: z.strictObject({ temperature: z.number(), topP: z.number(), minP: z.number() }),
  }),
  tiers: z.array(tierSchema).min(1),
  /**
   * The model's vision projector (mmproj) and why the pinned llama.cpp release cannot load it; a stack
   * asking for vision is refused with that reason (the kit fetches no projector it cannot load).
   */
  vision: z.strictObject({ notLoadableBecause: z.string() }).optional(),
  shardPathPattern: z.string().includes("{tier}").includes("{index}").includes("{count}"),
});
export type ModelEntry = z.infer<typeof modelSchema>;

const gpuSchema = z.strictObject({
  id: z.string(),
  name: z.string(),
  memory: sizeBytes,
  bandwidthGBps: z.number().positive(),
  int8Tops: z.number().positive(),
  pcieGen: z.int().min(3).max(6),
  pcieLanes: z.int().positive(),
  arch: z.string(),
});
export type GpuEntry = z.infer<typeof gpuSchema>;

const isaSchema = z.array(z.enum(["avx2", "avx512", "neon", "sve"]));
const memoryPlatformSchema = z.strictObject({ kind: z.string(), channels: z.int().positive() });

const cpuPlatformSchema = z.strictObject({
  id: z.string(),
  name: z.string(),
  cores: z.int().positive(),
  sockets: z.int().positive(),
  numaNodes: z.int().positive(),
  ccds: z.int().positive().optional(),
  fabricClockMHz: z.number().positive().optional(),
  allCoreGHz: z.number().positive(),
  fp32FlopsPerCycle: z.int().positive(),
  isa: isaSchema,
  memory: memoryPlatformSchema,
});
export type CpuPlatformEntry = z.infer<typeof cpuPlatformSchema>;

const inlineCpuSchema = z.strictObject({
  cores: z.int().positive(),
  allCoreGHz: z.number().positive(),
  fp32FlopsPerCycle: z.int().positive(),
  isa: isaSchema,
});

const instanceSchema = z.strictObject({
  id: z.string(),
  provider: z.literal("aws"),
  vcpus: z.int().positive(),
  memory: sizeBytes,
  usdPerHour: z.number().positive(),
  cpuPlatform: z.string().optional(),
  cpu: inlineCpuSchema.optional(),
  memoryPlatform: memoryPlatformSchema.optional(),
  numaNodes: z.int().positive().optional(),
  gpus: z.strictObject({ model: z.string(), count: z.int().positive() }).optional(),
});
export type InstanceEntry = z.infer<typeof instanceSchema>;

const sourced = <T extends z.ZodType>(value: T) => z.strictObject({ value, source: z.string() });

const efficiencySchema = z.strictObject({
  cpu: z.strictObject({
    achievableFractionOfPeak: sourced(z.number().gt(0).lte(1)),
    fabricBytesPerClockPerCcd: sourced(z.number().positive()),
    decodeSecondsPerLayer: sourced(z.number().min(0)),
    priors: z.strictObject({
      decodeComputeEfficiency: sourced(z.number().gt(0).lte(1)),
      numaRemoteGain: sourced(z.number().min(0).lte(1)),
      pageableStreamFraction: sourced(z.number().gt(0).lte(1)),
    }),
    /**
     * Written by npm run bench:published -- --write: the factors fitted on every convertible mainline run, and the
     * leave-one-source-out error bands.
     */
    corpusFit: z
      .strictObject({
        fittedOn: z.string(),
        factors: z.strictObject({
          decodeEfficiency: z.number().gt(0).lte(1.5).optional(),
          decodeSecondsPerLayer: z.number().min(0).optional(),
          decodeComputeEfficiency: z.number().gt(0).lte(1).optional(),
          prefillEfficiency: z.number().gt(0).lte(1).optional(),
          numaRemoteGain: z.number().min(0).lte(1).optional(),
          pcieStreamFraction: z.number().gt(0).lte(1).optional(),
          pageableStreamFraction: z.number().gt(0).lte(1).optional(),
        }),
        errorBands: z.array(
          z.strictObject({
            hardwareClass: z.string(),
            phase: z.enum(["decode", "prefill"]),
            runs: z.int().positive(),
            /** Projected ÷ measured − 1 at the 10th and 90th percentiles of the held-out runs. */
            p10: z.number(),
            p90: z.number(),
            medianAbsolute: z.number().min(0),
          }),
        ),
      })
      .optional(),
    decodeCalibration: z.strictObject({
      model: z.string(),
      tier: z.string(),
      decodeTokensPerSecond: z.number().positive(),
      measuredBandwidthGBps: z.number().positive(),
      depthTokens: z.int().nonnegative(),
      source: z.string(),
    }),
    prefillCalibration: z.strictObject({
      model: z.string(),
      tier: z.string(),
      prefillTokensPerSecond: z.number().positive(),
      promptTokens: z.int().positive(),
      cores: z.int().positive(),
      allCoreGHz: z.number().positive(),
      fp32FlopsPerCycle: z.int().positive(),
      source: z.string(),
    }),
  }),
  gpu: z.strictObject({
    decodeBandwidthFraction: sourced(z.number().gt(0).lte(1)),
    prefillComputeFraction: sourced(z.number().gt(0).lte(1)),
  }),
  rpc: z.strictObject({
    /**
     * Host time one llama.cpp RPC command costs over TCP besides its round trip and bytes (planner/network.ts
     * visitSeconds).
     */
    tcpSecondsPerCommand: sourced(z.number().nonnegative()),
  }),
  pcie: z.strictObject({
    effectiveFraction: sourced(z.number().gt(0).lte(1)),
    gigabytesPerSecondPerLane: sourced(z.record(z.string(), z.number().positive())),
  }),
  memoryHeadroom: z.strictObject({
    hostOsBytes: sourced(sizeBytes),
    hostFractionOfRam: sourced(z.number().min(0).lt(1)),
    gpuRuntimeBytes: sourced(sizeBytes),
    gpuMarginBytes: sourced(sizeBytes),
  }),
});
export type Efficiency = z.infer<typeof efficiencySchema>;

const repackSchema = z.strictObject({
  source: z.string(),
  rules: z.array(
    z.strictObject({
      type: ggmlType,
      requires: z.enum(["avx2", "avx512", "neon", "sve"]),
      rowMultiple: z.int().positive(),
    }),
  ),
});
export type RepackRules = z.infer<typeof repackSchema>;

const llamaCppSchema = z.strictObject({
  release: z.string(),
  commit: z.string(),
  /** rpc: the official images are built without -DGGML_RPC=ON, so a split needs an image of the kit's own build. */
  images: z.strictObject({ cpu: z.string(), cuda: z.string(), cuda13: z.string(), rpc: z.string() }),
  cuda13MinDriverMajor: z.int().positive(),
  defaults: z.strictObject({
    port: z.int(),
    batch: z.int(),
    ubatch: z.int(),
    cacheRamMiB: z.int(),
    ctxCheckpoints: z.int().nonnegative(),
  }),
  repack: repackSchema,
  mechanicsChanges: z.array(
    z.strictObject({
      pr: z.int().positive(),
      since: z.string().regex(/^\d{4}-\d{2}-\d{2}$/, "a date as YYYY-MM-DD (the day the change is first seen)"),
      /** cuda-moe: routed experts multiplied on a CUDA device (GPU-only and hybrid runs with GPU layers). */
      path: z.enum(["cuda-moe"]),
      what: z.string().min(1),
    }),
  ),
});
export type LlamaCppRelease = z.infer<typeof llamaCppSchema>;

const rangeSchema = z.strictObject({ min: z.number().nonnegative(), max: z.number().positive() });
/**
 * The hardware a seed claim is about: a stack's host is compared with a claim only when it matches
 * (GPU model and count, memory family, RAM and core count within the ranges), because a figure
 * measured on one build says nothing about another.
 */
const seedHardwareSchema = z.strictObject({
  id: z.string(),
  description: z.string(),
  gpus: z.strictObject({ model: z.string().optional(), count: z.int().nonnegative() }),
  /** A memory-kind prefix such as "DDR5"; any kind when absent. */
  memoryFamily: z.string().optional(),
  ramGB: rangeSchema,
  cores: rangeSchema.optional(),
});
export type SeedHardware = z.infer<typeof seedHardwareSchema>;

const claimSchema = z.strictObject({
  id: z.string(),
  appliesTo: z.enum(["cpu-only", "hybrid", "all-gpu", "any"]),
  /** Ids from seedHardware: the builds the claim describes. */
  hardware: z.array(z.string()).min(1),
  text: z.string(),
  decodeTokensPerSecond: z.strictObject({ low: z.number(), high: z.number() }).optional(),
  bandwidthGBps: z.number().optional(),
  ttftSeconds: z.number().optional(),
  tokensPerMonth: z.number().optional(),
});
export type SeedClaim = z.infer<typeof claimSchema>;

const catalogSchema = z.strictObject({
  claims: z.array(claimSchema),
  seedHardware: z.array(seedHardwareSchema),
  models: z.array(modelSchema),
  gpus: z.array(gpuSchema),
  memoryKinds: z.array(z.strictObject({ id: z.string(), megaTransfers: z.number().positive() })),
  cpuPlatforms: z.array(cpuPlatformSchema),
  instances: z.array(instanceSchema),
  efficiency: efficiencySchema,
  llamaCpp: llamaCppSchema,
});
export type Catalog = z.infer<typeof catalogSchema>;

const FILES = {
  "models.yaml": ["models"],
  "gpus.yaml": ["gpus"],
  "platforms.yaml": ["memoryKinds", "cpuPlatforms"],
  "cloud-instances.yaml": ["instances"],
  "efficiency.yaml": ["efficiency"],
  "llama-cpp.yaml": ["llamaCpp"],
  "claims.yaml": ["claims", "seedHardware"],
} as const;

export class CatalogError extends Error {}

let cached: Catalog | undefined;

/** Reads and validates catalog/*.yaml once per process. */
export function loadCatalog(dir = CATALOG_DIR): Catalog {
  if (cached && dir === CATALOG_DIR) return cached;
  const merged: Record<string, unknown> = {};
  const origin: Record<string, string> = {};
  for (const [file, keys] of Object.entries(FILES)) {
    const data = parseYaml(readFileSync(join(dir, file), "utf8")) as Record<string, unknown>;
    for (const key of keys) {
      merged[key] = data[key];
      origin[key] = file;
    }
  }
  const result = catalogSchema.safeParse(merged, { reportInput: true });
  if (!result.success) {
    const lines = describeIssues(result.error.issues, (path) => `catalog/${origin[String(path[0])] ?? "?"}: `);
    throw new CatalogError(`the catalog is invalid:\n${lines.map((line) => `  - ${line}`).join("\n")}`);
  }
  checkReferences(result.data);
  if (dir === CATALOG_DIR) cached = result.data;
  return result.data;
}

function checkReferences(catalog: Catalog): void {
  const problems: string[] = [];
  const memoryKinds = new Set(catalog.memoryKinds.map((kind) => kind.id));
  const platforms = new Set(catalog.cpuPlatforms.map((platform) => platform.id));
  const gpus = new Set(catalog.gpus.map((gpu) => gpu.id));
  for (const platform of catalog.cpuPlatforms) {
    if (!memoryKinds.has(platform.memory.kind))
      problems.push(`cpuPlatforms ${platform.id}: unknown memory kind ${platform.memory.kind}`);
  }
  for (const instance of catalog.instances) {
    if (instance.cpuPlatform && !platforms.has(instance.cpuPlatform))
      problems.push(`instances ${instance.id}: unknown cpuPlatform ${instance.cpuPlatform}`);
    if (!instance.cpuPlatform && !(instance.cpu && instance.memoryPlatform))
      problems.push(`instances ${instance.id}: needs cpuPlatform or cpu + memoryPlatform`);
    if (instance.memoryPlatform && !memoryKinds.has(instance.memoryPlatform.kind))
      problems.push(`instances ${instance.id}: unknown memory kind ${instance.memoryPlatform.kind}`);
    if (instance.gpus && !gpus.has(instance.gpus.model))
      problems.push(`instances ${instance.id}: unknown GPU ${instance.gpus.model}`);
  }
  const seedHardware = new Set(catalog.seedHardware.map((entry) => entry.id));
  for (const claim of catalog.claims) {
    for (const id of claim.hardware)
      if (!seedHardware.has(id)) problems.push(`claims ${claim.id}: unknown seedHardware ${id}`);
  }
  for (const entry of catalog.seedHardware) {
    if (entry.gpus.model && !gpus.has(entry.gpus.model))
      problems.push(`seedHardware ${entry.id}: unknown GPU ${entry.gpus.model}`);
  }
  if (problems.length > 0)
    throw new CatalogError(`the catalog is inconsistent:\n${problems.map((p) => `  - ${p}`).join("\n")}`);
}

export function findModelByRepo(catalog: Catalog, repo: string): ModelEntry | undefined {
  return catalog.models.find((model) => model.repo.toLowerCase() === repo.toLowerCase() || model.id === repo);
}

export function memoryKindMegaTransfers(catalog: Catalog, kind: string): number | undefined {
  return catalog.memoryKinds.find((entry) => entry.id === kind)?.megaTransfers;
}

// ---- catalog/prices.yaml: what `plan --recommend` prices bare-metal builds with ----------------

/** A figure's provenance: a page or a stack file, and the date the source gives (or it was read). */
const provenance = {
  source: z.string().min(1),
  date: z.string().regex(/^\d{4}-\d{2}(-\d{2})?$/, "allowed: a date like 2026-11-29 (or 2022-12)"),
};
const usd = z.number().positive();

const pricesSchema = z.strictObject({
  amortizationMonths: z.strictObject({ value: z.int().positive().max(120), ...provenance }),
  electricity: z.strictObject({ usdPerKwh: z.number().nonnegative().max(5), ...provenance }),
  platforms: z.array(
    z.strictObject({
      /** An id from catalog/platforms.yaml cpuPlatforms. */
      platform: z.string(),
      socket: z.string().min(1),
      /** The socket counts a board may take for this CPU. */
      sockets: z.array(z.int().positive().max(8)).min(1),
      dimm: z.enum(["RDIMM", "UDIMM"]),
      dimmsPerChannel: z.int().positive().max(2),
      /** PCIe generation and the lanes left for GPUs on one board (all sockets together). */
      pcie: z.strictObject({ gen: z.int().min(3).max(6), gpuLanes: z.int().positive().max(256), ...provenance }),
      /** Absent: the CPU is not priced, and no build of it is enumerated. */
      price: z.strictObject({ usd, ...provenance }).optional(),
      power: z.strictObject({ watts: z.number().positive(), ...provenance }).optional(),
    }),
  ),
  boards: z.array(z.strictObject({ socket: z.string(), sockets: z.int().positive(), usd, ...provenance })),
  dimmSizesGiB: z.array(z.int().positive().max(1024)).min(1),
  dimms: z.array(
    z.strictObject({
      kind: z.enum(["RDIMM", "UDIMM"]),
      sizeGiB: z.int().positive(),
      usd,
      modules: z.int().positive(),
      ...provenance,
    }),
  ),
  gpus: z.array(
    z.strictObject({
      /** An id from catalog/gpus.yaml. */
      gpu: z.string(),
      usd,
      condition: z.enum(["new", "used"]),
      ...provenance,
      power: z.strictObject({ watts: z.number().positive(), ...provenance }),
    }),
  ),
  unpriced: z.array(z.strictObject({ component: z.string(), why: z.string().min(1) })).default([]),
  base: z.array(z.strictObject({ socket: z.string(), usd, what: z.string().min(1), ...provenance })),
  power: z.strictObject({
    dimm: z.strictObject({ watts: z.number().positive(), ...provenance }),
    base: z.strictObject({ watts: z.number().positive(), ...provenance }),
  }),
});
export type Prices = z.infer<typeof pricesSchema>;

/** Reads and validates catalog/prices.yaml against the catalog it prices; every problem named by file and key. */
export function loadPrices(catalog: Catalog, dir = CATALOG_DIR): Prices {
  const data = parseYaml(readFileSync(join(dir, "prices.yaml"), "utf8")) as unknown;
  const result = pricesSchema.safeParse(data, { reportInput: true });
  if (!result.success) {
    const lines = describeIssues(result.error.issues, () => "catalog/prices.yaml: ");
    throw new CatalogError(`the price list is invalid:\n${lines.map((line) => `  - ${line}`).join("\n")}`);
  }
  const prices = result.data;
  const problems: string[] = [];
  const platforms = new Set(catalog.cpuPlatforms.map((platform) => platform.id));
  const gpus = new Set(catalog.gpus.map((gpu) => gpu.id));
  for (const entry of prices.platforms)
    if (!platforms.has(entry.platform))
      problems.push(`platforms ${entry.platform}: not a cpuPlatforms id in catalog/platforms.yaml`);
  for (const entry of prices.gpus)
    if (!gpus.has(entry.gpu)) problems.push(`gpus ${entry.gpu}: not a GPU id in catalog/gpus.yaml`);
  // One figure per thing: two prices for the same DIMM or card would make the ranking depend on file order.
  const seen = new Set<string>();
  for (const key of [
    ...prices.platforms.map((entry) => `platform ${entry.platform}`),
    ...prices.gpus.map((entry) => `gpu ${entry.gpu}`),
    ...prices.dimms.map((entry) => `dimm ${entry.kind} ${entry.sizeGiB}`),
    ...prices.boards.map((entry) => `board ${entry.socket} ×${entry.sockets}`),
    ...prices.base.map((entry) => `base ${entry.socket}`),
  ]) {
    if (seen.has(key)) problems.push(`${key}: listed twice`);
    seen.add(key);
  }
  for (const entry of prices.platforms) {
    if (entry.price && !entry.power)
      problems.push(`platforms ${entry.platform}: priced but without power (a build's monthly cost needs both)`);
  }
  if (problems.length > 0)
    throw new CatalogError(`catalog/prices.yaml is inconsistent:\n${problems.map((p) => `  - ${p}`).join("\n")}`);
  return prices;
}
