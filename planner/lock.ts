/**
 * A manifest lock: the files of one tier of one repo at one revision, with sizes, sha256 and the
 * tensor table of every shard (read from the GGUF headers). Written by `npm run lock`; when a stack
 * has one, the planner places these real tensors instead of the catalog's estimate, and the
 * GgufShards component downloads exactly these files. Planning reads it from disk: never the network.
 */
import { existsSync, readFileSync, statSync } from "node:fs";
import { z } from "zod";
import { GGML_TYPE_BY_ID, GGML_TYPE_NAMES, type GgmlTypeName } from "./ggml-types";
import { makeTensor, type TensorInfo } from "./tensors";
import type { Architecture } from "./catalog";
import { ConfigError, describeIssues } from "./errors";
import { modelRepo, modelTier } from "./config";

/**
 * A shard's path inside the repo, which becomes a path under the model directory on the host:
 * relative, plain names only (no `..`, nothing starting with `-` or `.`, no control characters).
 */
const shardPath = z
  .string()
  .max(1024)
  .regex(
    /^[A-Za-z0-9_][A-Za-z0-9_.+-]*(\/[A-Za-z0-9_][A-Za-z0-9_.+-]*)*$/,
    "allowed: a relative path of plain names (letters, digits, _ . + -; none starting with - or .)",
  )
  .refine((path) => !path.split("/").includes(".."), { message: "allowed: a relative path without `..`" });

const lockShard = z.strictObject({
  path: z.string(),
  size: z.int().positive(),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  tensors: z.array(
    z.strictObject({
      name: z.string(),
      type: z.enum(GGML_TYPE_NAMES as [string, ...string[]]),
      shape: z.array(z.int().nonnegative()),
      offset: z.int().nonnegative(),
    }),
  ),
});

/** Longest per-layer metadata array a lock keeps (layer counts are in the hundreds). */
export const MAX_METADATA_ARRAY = 4096;

/** The lock's shape; also what `--gguf` builds in memory for a local file (absolute paths, no repo). */
export const lockSchema = z.strictObject({
  lockVersion: z.literal(1),
  repo: z.string(),
  revision: z.string(),
  tier: z.string(),
  source: z.string(),
  generatedAt: z.string(),
  /**
   * GGUF metadata of the first shard, scalars and per-layer number arrays (tokenizer arrays left out): the model's real
   * architecture.
   */
  metadata: z.record(
    z.string(),
    z.union([z.number(), z.string(), z.boolean(), z.array(z.number()).max(MAX_METADATA_ARRAY)]),
  ),
  shards: z.array(lockShard).min(1),
});

/**
 * A lock read from disk for a deployment: its repo, tier, revision and shard paths become host paths
 * and command-line words, so they are restricted like the stack's own model.repo and model.tier.
 */
export const deployableLockSchema = lockSchema.extend({
  repo: modelRepo,
  revision: z
    .string()
    .regex(/^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$/, "allowed: a commit id or a branch name (letters, digits, _ . / -)")
    .refine((revision) => !revision.includes(".."), { message: "allowed: a revision without `..`" }),
  tier: modelTier,
  shards: z.array(lockShard.extend({ path: shardPath })).min(1),
});
export type ManifestLock = z.infer<typeof lockSchema>;

/** Where `npm run lock` writes a repo tier's lock, and where the planner looks for one by default. */
export function conventionalLockPath(repo: string, tier: string): string {
  return `locks/${repo.replace("/", "__")}/${tier}.lock.json`;
}

/** A real lock is a few MB (tensor tables of every shard); far beyond that it is not one. */
const MAX_LOCK_BYTES = 256 * 1024 ** 2;

/**
 * The lock at `path`, or undefined when there is none. Anything else at that path (a directory, a
 * device, /etc/passwd, a JSON file that is not a lock) is a ConfigError naming the field and the
 * path, never the file's content and never a stack trace.
 */
export function readLock(
  path: string,
  where: { stack: string; field: string } = { stack: "(no stack)", field: "lock" },
): ManifestLock | undefined {
  if (!existsSync(path)) return undefined;
  const refuse = (what: string, details: string[] = []): never => {
    throw new ConfigError(where.stack, [
      `${where.field}: found ${JSON.stringify(path)}, ${what}; allowed: a lock written by \`npm run lock -- --stack ${where.stack}\``,
      ...details,
    ]);
  };
  const stat = statSync(path);
  if (!stat.isFile()) refuse("which is not a regular file");
  if (stat.size > MAX_LOCK_BYTES) refuse(`which is ${stat.size} bytes, more than any lock (${MAX_LOCK_BYTES})`);
  let document: unknown;
  try {
    document = JSON.parse(readFileSync(path, "utf8"));
  } catch {
    // JSON.parse's message quotes the file's first bytes: not something to print about an arbitrary file.
    return refuse("which is not JSON");
  }
  const result = deployableLockSchema.safeParse(document, { reportInput: true });
  if (!result.success) {
    const lines = describeIssues(result.error.issues).map((line) => `${where.field} ${line}`);
    return refuse(
      "which is not a lock",
      lines.length > 5 ? [...lines.slice(0, 5), `… and ${lines.length - 5} more`] : lines,
    );
  }
  return result.data;
}

/**
 * Architectures this kit sizes exactly from GGUF metadata, and why each other one is refused: a model
 * whose memory the estimator cannot account for is never guessed.
 */
export const SIZED_ARCHITECTURES = [
  "deepseek2",
  "kimi-k3",
  "kimi-linear",
  "deepseek32",
  "glm-dsa",
  "deepseek4",
  "qwen3next",
  "qwen3moe",
  "glm4moe",
  "gpt-oss",
  "llama4",
  "minimax-m2",
  "minimax-m3",
] as const;

export class UnsizedArchitectureError extends Error {
  constructor(readonly arch: string) {
    super(`architecture ${arch} is not sized by this kit (sized: ${SIZED_ARCHITECTURES.join(", ")})`);
  }
}

/**
 * The architecture numbers of an MoE GGUF, from its metadata (gguf-py/gguf/constants.py keys):
 * deepseek2 with MLA; kimi-k3 (MLA on some layers, KDA linear attention with a recurrent state on the
 * others); or a grouped-query-attention MoE (qwen3moe, glm4moe).
 */
export function architectureFromMetadata(metadata: ManifestLock["metadata"]): Architecture {
  const arch = String(metadata["general.architecture"]);
  if (!(SIZED_ARCHITECTURES as readonly string[]).includes(arch)) throw new UnsizedArchitectureError(arch);
  const reader = metadataReader(metadata, arch);
  return ARCHITECTURE_BUILDERS[arch as SizedArchitecture](reader, sharedShapes(reader));
}

type SizedArchitecture = (typeof SIZED_ARCHITECTURES)[number];

/**
 * Reads `<arch>.<key>` values, refusing a missing one that has no default and a per-layer array of the wrong length.
 */
interface MetadataReader {
  arch: string;
  layers: number;
  raw(key: string): ManifestLock["metadata"][string] | undefined;
  number(key: string, fallback?: number): number;
  /** A per-layer key: llama.cpp reads either one number for every layer or an array of block_count. */
  perLayer(key: string, fallback?: number): number[];
}

function metadataReader(metadata: ManifestLock["metadata"], arch: string): MetadataReader {
  const raw = (key: string) => metadata[`${arch}.${key}`];
  const number = (key: string, fallback?: number): number => {
    const value = raw(key);
    if (typeof value === "number") return value;
    if (fallback !== undefined) return fallback;
    throw new Error(`the lock's GGUF metadata lacks ${arch}.${key}`);
  };
  const layers = number("block_count");
  const perLayer = (key: string, fallback?: number): number[] => {
    const value = raw(key);
    if (Array.isArray(value)) {
      if (value.length !== layers)
        throw new Error(
          `the lock's GGUF metadata ${arch}.${key} has ${value.length} entries; allowed: one per layer (${arch}.block_count = ${layers})`,
        );
      return value;
    }
    return Array.from({ length: layers }, () => number(key, fallback));
  };
  return { arch, layers, raw, number, perLayer };
}

type KvLayout = NonNullable<Architecture["kvLayout"]>;

/** What every MoE architecture states the same way, and the shapes the builders combine. */
interface SharedShapes {
  common: Pick<
    Architecture,
    | "llamaCppArch"
    | "layers"
    | "denseLeadingLayers"
    | "hiddenSize"
    | "attentionHeads"
    | "denseFfnSize"
    | "routedExperts"
    | "activeExperts"
    | "sharedExperts"
    | "expertFfnSize"
    | "vocabSize"
    | "contextLength"
  >;
  heads: number[];
  kvHeads: number[];
  keyLength: number;
  valueLength: number;
  /** Layers before the MTP (nextn) ones, which are loaded but keep no cache in the main context. */
  trunk: number;
  gqa: Pick<Architecture, "attention" | "qLoraRank" | "kvLoraRank" | "qkNopeHeadDim" | "qkRopeHeadDim" | "vHeadDim">;
  mla: Pick<Architecture, "qLoraRank" | "kvLoraRank" | "qkNopeHeadDim" | "qkRopeHeadDim" | "vHeadDim">;
  none: () => number[];
  kv: (
    keepsCache: (layer: number) => boolean,
    key?: (layer: number) => number,
    value?: (layer: number) => number,
  ) => Pick<KvLayout, "kElements" | "vElements">;
  layout: (parts: Partial<KvLayout> & Pick<KvLayout, "kElements" | "vElements">) => KvLayout;
  layerList: (flags: number[]) => number[];
  /**
   * A per-layer pattern key if the GGUF has one, else llama.cpp's period rule: layer il matches when il % period <
   * period - 1.
   */
  pattern: (key: string, period: number) => number[];
  /** KDA (kimi-k3, kimi-linear): llama_hparams::n_embd_r() + n_embd_s() with n_head() = layer 0's head count. */
  kdaState: () => { floats: number; kda: { heads: number; headDim: number; convKernel: number } };
  /** The sparse-attention indexer's shape, for the compute buffer; absent when the GGUF does not state its heads. */
  indexerOf: (keyLength: number) => Pick<Architecture, "indexer">;
}

function sharedShapes(reader: MetadataReader): SharedShapes {
  const { layers, raw, number, perLayer } = reader;
  const heads = perLayer("attention.head_count");
  const common = commonOf(reader, heads);
  const kvHeads = perLayer("attention.head_count_kv", common.attentionHeads);
  const keyLength = number("attention.key_length", Math.floor(common.hiddenSize / common.attentionHeads));
  const valueLength = number("attention.value_length", keyLength);
  const mlaKeyLength = number("attention.key_length_mla", 0);
  const mlaValueLength = number("attention.value_length_mla", 0);
  // llama_hparams::is_mla(): such a model caches K only (the latent), whatever value_length says.
  const isMla = mlaKeyLength > 0 && mlaValueLength > 0;
  const none = () => Array.from({ length: layers }, () => 0);
  const kv: SharedShapes["kv"] = (keepsCache, key = () => keyLength, value = () => valueLength) => ({
    kElements: Array.from({ length: layers }, (_, layer) => (keepsCache(layer) ? key(layer) * kvHeads[layer]! : 0)),
    vElements: Array.from({ length: layers }, (_, layer) =>
      keepsCache(layer) && !isMla ? value(layer) * kvHeads[layer]! : 0,
    ),
  });
  const layerList = (flags: number[]) => flags.flatMap((flag, layer) => (flag ? [layer] : []));
  return {
    common,
    heads,
    kvHeads,
    keyLength,
    valueLength,
    trunk: layers - number("nextn_predict_layers", 0),
    ...headShapes(reader, { kvHeads, keyLength, valueLength, mlaKeyLength, mlaValueLength }),
    none,
    kv,
    layout: (parts) => ({ swaLayers: [], swaWindow: 0, indexerK: none(), indexerV: none(), ...parts }),
    layerList,
    pattern: (key, period) =>
      Array.isArray(raw(key))
        ? layerList(perLayer(key))
        : layerList(Array.from({ length: layers }, (_, layer) => Number(layer % period < period - 1))),
    kdaState: () => {
      const headDim = number("kda.head_dim");
      const convKernel = number("ssm.conv_kernel", 4);
      const headsOfLayer0 = heads[0]!;
      return {
        floats: 3 * (convKernel > 0 ? convKernel - 1 : 3) * headsOfLayer0 * headDim + headDim * headDim * headsOfLayer0,
        kda: { heads: headsOfLayer0, headDim, convKernel },
      };
    },
    indexerOf: (indexerKeyLength) => {
      const indexerHeads = number("attention.indexer.head_count", 0);
      return indexerHeads > 0 && indexerKeyLength > 0
        ? { indexer: { heads: indexerHeads, keyLength: indexerKeyLength } }
        : {};
    },
  };
}

/** What every MoE architecture states the same way. */
function commonOf({ arch, layers, number }: MetadataReader, heads: number[]): SharedShapes["common"] {
  return {
    llamaCppArch: arch,
    layers,
    denseLeadingLayers: number("leading_dense_block_count", 0),
    hiddenSize: number("embedding_length"),
    attentionHeads: Math.max(...heads),
    denseFfnSize: number("feed_forward_length"),
    routedExperts: number("expert_count"),
    activeExperts: number("expert_used_count"),
    sharedExperts: number("expert_shared_count", 0),
    expertFfnSize: number("expert_feed_forward_length"),
    vocabSize: number("vocab_size"),
    contextLength: number("context_length"),
  };
}

/** The attention head shapes, as grouped-query attention and as MLA (each builder takes the one it has). */
function headShapes(
  { number }: MetadataReader,
  widths: { kvHeads: number[]; keyLength: number; valueLength: number; mlaKeyLength: number; mlaValueLength: number },
): Pick<SharedShapes, "gqa" | "mla"> {
  const { kvHeads, keyLength, valueLength, mlaKeyLength, mlaValueLength } = widths;
  const rope = number("rope.dimension_count", 64);
  return {
    gqa: {
      attention: { kind: "gqa" as const, headCountKv: Math.max(...kvHeads), keyLength, valueLength },
      qLoraRank: 0,
      kvLoraRank: 0,
      qkNopeHeadDim: 0,
      qkRopeHeadDim: number("rope.dimension_count", keyLength),
      vHeadDim: valueLength,
    },
    mla: {
      qLoraRank: number("attention.q_lora_rank", 0),
      kvLoraRank: number("attention.kv_lora_rank", 512),
      qkNopeHeadDim: Math.max(1, mlaKeyLength - rope),
      qkRopeHeadDim: rope,
      vHeadDim: Math.max(1, mlaValueLength),
    },
  };
}

type ArchitectureBuilder = (reader: MetadataReader, shapes: SharedShapes) => Architecture;

/** Plain grouped-query attention, every trunk layer keeping K and V. */
const plainGqa: ArchitectureBuilder = (_, { common, gqa, kv, layout, trunk }) => ({
  ...common,
  ...gqa,
  kvLayout: layout(kv((layer) => layer < trunk)),
});

/** One builder per sized architecture: its caches and states, as llama.cpp v0.5.0 allocates them. */
const ARCHITECTURE_BUILDERS: Record<SizedArchitecture, ArchitectureBuilder> = {
  deepseek2: (_, { common, mla }) => ({ ...common, ...mla }),
  "kimi-k3": kimiK3,
  "kimi-linear": kimiLinear,
  qwen3next,
  qwen3moe: plainGqa,
  glm4moe: plainGqa,
  "minimax-m2": plainGqa,
  "gpt-oss": gptOss,
  llama4,
  deepseek32: sparseMla,
  "glm-dsa": sparseMla,
  "minimax-m3": minimaxM3,
  deepseek4,
};

function kimiK3(reader: MetadataReader, { common, mla, layerList, kdaState }: SharedShapes): Architecture {
  const state = kdaState();
  return {
    ...common,
    ...mla,
    recurrent: {
      layers: layerList(reader.perLayer("attention.recurrent_layers", 0)),
      stateFloatsPerLayer: state.floats,
      kda: state.kda,
    },
    expertLatentSize: reader.number("expert_latent_length", common.hiddenSize),
  };
}

/** models/kimi-linear.cpp: a layer with no KV heads is a KDA (recurrent) layer. */
function kimiLinear(_: MetadataReader, shapes: SharedShapes): Architecture {
  const { common, mla, kvHeads, layerList, kdaState, layout, kv, trunk } = shapes;
  const recurrentLayers = layerList(kvHeads.map((heads) => Number(heads === 0)));
  const state = kdaState();
  return {
    ...common,
    ...mla,
    recurrent: { layers: recurrentLayers, stateFloatsPerLayer: state.floats, kda: state.kda },
    kvLayout: layout(kv((layer) => layer < trunk && kvHeads[layer]! > 0)),
  };
}

/**
 * attention.recurrent_layers, else every full_attention_interval-th layer keeps KV (default 4); the rest keep SSM
 * state.
 */
function qwen3next(reader: MetadataReader, shapes: SharedShapes): Architecture {
  const { number, perLayer, raw, layers } = reader;
  const { common, gqa, layerList, layout, kv, trunk } = shapes;
  const interval = number("full_attention_interval", 4);
  const recurrentLayers = Array.isArray(raw("attention.recurrent_layers"))
    ? layerList(perLayer("attention.recurrent_layers"))
    : layerList(Array.from({ length: layers }, (_, layer) => Number((layer + 1) % interval !== 0)));
  const inner = number("ssm.inner_size");
  const stateSize = number("ssm.state_size");
  const convChannels = inner + 2 * number("ssm.group_count") * stateSize;
  const convFloats = (number("ssm.conv_kernel") - 1) * convChannels;
  return {
    ...common,
    ...gqa,
    recurrent: {
      layers: recurrentLayers.filter((layer) => layer < trunk),
      stateFloatsPerLayer: convFloats + stateSize * inner,
      ssmConv: { channels: convChannels, kernel: number("ssm.conv_kernel") },
    },
    kvLayout: layout(kv((layer) => layer < trunk && !recurrentLayers.includes(layer))),
  };
}

function gptOss({ number }: MetadataReader, shapes: SharedShapes): Architecture {
  const { common, gqa, pattern, kv, layout, trunk, keyLength, valueLength } = shapes;
  const swaLayers = pattern("attention.sliding_window_pattern", 2);
  const widths = kv(
    (layer) => layer < trunk,
    (layer) => (swaLayers.includes(layer) ? number("attention.key_length_swa", keyLength) : keyLength),
    (layer) => (swaLayers.includes(layer) ? number("attention.value_length_swa", valueLength) : valueLength),
  );
  return {
    ...common,
    ...gqa,
    kvLayout: layout({ ...widths, swaLayers, swaWindow: number("attention.sliding_window") }),
  };
}

/** Chunked attention sized as a window of 8192 whatever the GGUF says, unless sliding_window is 0. */
function llama4({ number }: MetadataReader, shapes: SharedShapes): Architecture {
  const { common, gqa, pattern, kv, layout, trunk } = shapes;
  const chunked = number("attention.sliding_window", 8192) !== 0;
  const interval = number("interleave_moe_layer_step", 1);
  return {
    ...common,
    ...gqa,
    ...(interval > 1 ? { moeLayerInterval: interval } : {}),
    kvLayout: layout({
      ...kv((layer) => layer < trunk),
      swaLayers: chunked ? pattern("attention.sliding_window_pattern", 4) : [],
      swaWindow: chunked ? 8192 : 0,
    }),
  };
}

/** Sparse attention (llama-kv-cache-dsa.cpp): the MLA cache plus the indexer's K-only cache. */
function sparseMla(reader: MetadataReader, shapes: SharedShapes): Architecture {
  const { arch, number, raw, perLayer } = reader;
  const { common, mla, kv, layout, trunk, indexerOf } = shapes;
  const indexerKey = number("attention.indexer.key_length");
  const glmDefault = (layer: number) =>
    common.contextLength < 1_048_576 || layer < 2 || (layer - 2) % 4 === 0 ? 1 : 0;
  const indexed =
    arch === "deepseek32"
      ? () => 1
      : raw("attention.indexer.types") !== undefined
        ? (layer: number) => perLayer("attention.indexer.types")[layer]!
        : glmDefault;
  const main = kv((layer) => layer < trunk);
  return {
    ...common,
    ...mla,
    ...indexerOf(indexerKey),
    kvLayout: layout({
      ...main,
      indexerK: main.kElements.map((_, layer) => (layer < trunk && indexed(layer) ? indexerKey : 0)),
    }),
  };
}

/** Every layer keeps K and V; the indexer cache (K and V) on the layers past the dense ones. */
function minimaxM3({ number }: MetadataReader, shapes: SharedShapes): Architecture {
  const { common, gqa, kv, layout, none, indexerOf, valueLength } = shapes;
  const past = (layer: number) => layer >= common.denseLeadingLayers;
  const indexerKey = number("attention.indexer.key_length");
  return {
    ...common,
    ...gqa,
    ...indexerOf(indexerKey),
    kvLayout: layout({
      ...kv(() => true),
      indexerK: none().map((_, layer) => (past(layer) ? indexerKey : 0)),
      indexerV: none().map((_, layer) => (past(layer) ? valueLength : 0)),
    }),
  };
}

/** Every layer (MTP ones too) keeps the windowed raw cache; compress_ratios may be longer than the trunk. */
function deepseek4({ arch, layers, number, raw }: MetadataReader, shapes: SharedShapes): Architecture {
  const { common, gqa, kvHeads, keyLength, indexerOf } = shapes;
  const ratios = raw("attention.compress_ratios");
  if (!Array.isArray(ratios) || ratios.length < layers)
    throw new Error(
      `the lock's GGUF metadata ${arch}.attention.compress_ratios must list at least one ratio per layer (${arch}.block_count = ${layers})`,
    );
  const keySwa = number("attention.key_length_swa", keyLength);
  return {
    ...common,
    ...gqa,
    dsv4: {
      kElements: keySwa * kvHeads[0]!,
      window: number("attention.sliding_window"),
      compressRatios: ratios.slice(0, layers),
      indexerKey: number("attention.indexer.key_length"),
      headK: keySwa,
    },
    ...indexerOf(number("attention.indexer.key_length")),
    hyperConnections: number("hyper_connection.count", 1),
  };
}

export function tensorsFromLock(lock: ManifestLock): TensorInfo[] {
  // Where each tensor sits (shard, offset in its data section): memory-mapped loading maps file spans.
  return lock.shards.flatMap((shard, file) =>
    shard.tensors.map((tensor) => ({
      ...makeTensor(tensor.name, tensor.type as GgmlTypeName, tensor.shape),
      file,
      offset: tensor.offset,
    })),
  );
}

/** The manifest GgufShards downloads and fetch-gguf.sh reads: "sha256<TAB>size<TAB>path" lines. */
export function manifestTsv(lock: ManifestLock): string {
  return lock.shards.map((shard) => `${shard.sha256}\t${shard.size}\t${shard.path}`).join("\n") + "\n";
}

/**
 * The GGUF metadata a lock keeps: scalars and the short numeric arrays hybrid architectures are sized
 * from (per-layer head counts, recurrent flags); the tokenizer's tables are left out.
 */
export function scalarMetadata(metadata: Record<string, unknown>): ManifestLock["metadata"] {
  const scalars: ManifestLock["metadata"] = {};
  for (const [key, value] of Object.entries(metadata)) {
    if (key.startsWith("tokenizer.")) continue;
    if (typeof value === "bigint") scalars[key] = Number(value);
    else if (
      (typeof value === "number" && Number.isFinite(value)) ||
      typeof value === "string" ||
      typeof value === "boolean"
    )
      scalars[key] = value;
    else if (
      Array.isArray(value) &&
      value.length <= MAX_METADATA_ARRAY &&
      value.every((entry) => typeof entry === "number" || typeof entry === "bigint" || typeof entry === "boolean")
    ) {
      // Per-layer arrays (head counts, recurrent-layer flags): what hybrid architectures are sized from.
      scalars[key] = value.map((entry) => Number(entry));
    }
  }
  return scalars;
}

/** A shard's tensor table as a GGUF header lists it (the reader's type ids and bigint shapes). */
export interface HeaderTensorInfo {
  name: string;
  dtype: number;
  shape: readonly (number | bigint)[];
  offset: number | bigint;
}

/**
 * The lock's tensor rows for a header's tensors; a type id the planner does not know is `refuse`d by the caller's
 * wording.
 */
export function lockTensorsOf(
  infos: readonly HeaderTensorInfo[],
  refuse: (problem: string) => Error,
): ManifestLock["shards"][number]["tensors"] {
  return infos.map((info) => {
    const type = GGML_TYPE_BY_ID[Number(info.dtype)];
    if (!type) throw refuse(`tensor ${info.name} has ggml type id ${info.dtype}, which the planner does not know`);
    return { name: info.name, type, shape: info.shape.map(Number), offset: Number(info.offset) };
  });
}
