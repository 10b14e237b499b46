/**
 * A manifest lock: the files of one tier of one repo at one revision, with sizes, sha256 and the
 * tensor table of every shard (read from the GGUF headers). Written by `npm run lock`; when a stack
 * has one, the planner places these real tensors instead of the catalog's estimate, and the
 * GgufShards component downloads exactly these files. Planning reads it from disk: never the network.
 */
import { existsSync, readFileSync, statSync } from "node:fs";
import { z } from "zod";
import { GGML_TYPE_NAMES, type GgmlTypeName } from "./ggml-types";
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
  .regex(/^[A-Za-z0-9_][A-Za-z0-9_.+-]*(\/[A-Za-z0-9_][A-Za-z0-9_.+-]*)*$/, "allowed: a relative path of plain names (letters, digits, _ . + -; none starting with - or .)")
  .refine((path) => !path.split("/").includes(".."), { message: "allowed: a relative path without `..`" });

const lockShard = z.strictObject({
  path: z.string(),
  size: z.int().positive(),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  tensors: z.array(z.strictObject({ name: z.string(), type: z.enum(GGML_TYPE_NAMES as [string, ...string[]]), shape: z.array(z.int().nonnegative()), offset: z.int().nonnegative() })),
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
  /** GGUF metadata of the first shard, scalars and per-layer number arrays (tokenizer arrays left out): the model's real architecture. */
  metadata: z.record(z.string(), z.union([z.number(), z.string(), z.boolean(), z.array(z.number()).max(MAX_METADATA_ARRAY)])),
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
export function readLock(path: string, where: { stack: string; field: string } = { stack: "(no stack)", field: "lock" }): ManifestLock | undefined {
  if (!existsSync(path)) return undefined;
  const refuse = (what: string, details: string[] = []): never => {
    throw new ConfigError(where.stack, [`${where.field}: found ${JSON.stringify(path)}, ${what}; allowed: a lock written by \`npm run lock -- --stack ${where.stack}\``, ...details]);
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
    return refuse("which is not a lock", lines.length > 5 ? [...lines.slice(0, 5), `… and ${lines.length - 5} more`] : lines);
  }
  return result.data;
}

/**
 * Architectures this kit sizes exactly from GGUF metadata, and why each other one is refused: a model
 * whose memory the estimator cannot account for is never guessed.
 */
export const SIZED_ARCHITECTURES = ["deepseek2", "kimi-k3", "qwen3moe", "glm4moe"] as const;

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
  const raw = (key: string) => metadata[`${arch}.${key}`];
  const number = (key: string, fallback?: number): number => {
    const value = raw(key);
    if (typeof value === "number") return value;
    if (fallback !== undefined) return fallback;
    throw new Error(`the lock's GGUF metadata lacks ${arch}.${key}`);
  };
  const layers = number("block_count");
  /** A per-layer key: llama.cpp reads either one number for every layer or an array of block_count. */
  const perLayer = (key: string, fallback?: number): number[] => {
    const value = raw(key);
    if (Array.isArray(value)) {
      if (value.length !== layers) throw new Error(`the lock's GGUF metadata ${arch}.${key} has ${value.length} entries; allowed: one per layer (${arch}.block_count = ${layers})`);
      return value;
    }
    return Array.from({ length: layers }, () => number(key, fallback));
  };
  const heads = perLayer("attention.head_count");
  // What every MoE architecture states the same way.
  const common = {
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
  if (arch === "qwen3moe" || arch === "glm4moe") {
    const headDim = Math.floor(common.hiddenSize / common.attentionHeads);
    const valueLength = number("attention.value_length", headDim);
    return {
      ...common,
      attention: { kind: "gqa", headCountKv: Math.max(...perLayer("attention.head_count_kv", common.attentionHeads)), keyLength: number("attention.key_length", headDim), valueLength },
      qLoraRank: 0,
      kvLoraRank: 0,
      qkNopeHeadDim: 0,
      qkRopeHeadDim: number("rope.dimension_count", headDim),
      vHeadDim: valueLength,
    };
  }
  const rope = number("rope.dimension_count");
  const mla = {
    ...common,
    qLoraRank: number("attention.q_lora_rank", 0),
    kvLoraRank: number("attention.kv_lora_rank"),
    qkNopeHeadDim: number("attention.key_length_mla") - rope,
    qkRopeHeadDim: rope,
    vHeadDim: number("attention.value_length_mla"),
  };
  if (arch === "deepseek2") return mla;
  // kimi-k3: attention.recurrent_layers flags the KDA layers. Their state per slot is
  // llama_hparams::n_embd_r() (Q, K and V conv states: 3 × (conv_kernel − 1) × n_head × head_dim) plus
  // n_embd_s() (head_dim² × n_head), F32, where n_head is layer 0's head count as llama.cpp's n_head().
  const recurrentFlags = perLayer("attention.recurrent_layers", 0);
  const kdaHeadDim = number("kda.head_dim");
  const convKernel = number("ssm.conv_kernel", 4);
  const headsOfLayer0 = heads[0]!;
  const convFloats = 3 * (convKernel > 0 ? convKernel - 1 : 3) * headsOfLayer0 * kdaHeadDim;
  return {
    ...mla,
    recurrent: { layers: recurrentFlags.flatMap((flag, layer) => (flag ? [layer] : [])), stateFloatsPerLayer: convFloats + kdaHeadDim * kdaHeadDim * headsOfLayer0 },
  };
}

export function tensorsFromLock(lock: ManifestLock): TensorInfo[] {
  // Where each tensor sits (shard, offset in its data section): memory-mapped loading maps file spans.
  return lock.shards.flatMap((shard, file) => shard.tensors.map((tensor) => ({ ...makeTensor(tensor.name, tensor.type as GgmlTypeName, tensor.shape), file, offset: tensor.offset })));
}

/** The manifest GgufShards downloads and fetch-gguf.sh reads: "sha256<TAB>size<TAB>path" lines. */
export function manifestTsv(lock: ManifestLock): string {
  return lock.shards.map((shard) => `${shard.sha256}\t${shard.size}\t${shard.path}`).join("\n") + "\n";
}
