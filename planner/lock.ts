/**
 * A manifest lock: the files of one tier of one repo at one revision, with sizes, sha256 and the
 * tensor table of every shard (read from the GGUF headers). Written by `npm run lock`; when a stack
 * has one, the planner places these real tensors instead of the catalog's estimate, and the
 * GgufShards component downloads exactly these files. Planning reads it from disk: never the network.
 */
import { existsSync, readFileSync } from "node:fs";
import { z } from "zod";
import { GGML_TYPE_NAMES, type GgmlTypeName } from "./ggml-types";
import { makeTensor, type TensorInfo } from "./tensors";
import type { Architecture } from "./catalog";
import { describeIssues } from "./errors";

export const lockSchema = z.strictObject({
  lockVersion: z.literal(1),
  repo: z.string(),
  revision: z.string(),
  tier: z.string(),
  source: z.string(),
  generatedAt: z.string(),
  /** Scalar GGUF metadata of the first shard (tokenizer arrays left out): the model's real architecture. */
  metadata: z.record(z.string(), z.union([z.number(), z.string(), z.boolean()])),
  shards: z
    .array(
      z.strictObject({
        path: z.string(),
        size: z.int().positive(),
        sha256: z.string().regex(/^[0-9a-f]{64}$/),
        tensors: z.array(z.strictObject({ name: z.string(), type: z.enum(GGML_TYPE_NAMES as [string, ...string[]]), shape: z.array(z.int().nonnegative()), offset: z.int().nonnegative() })),
      }),
    )
    .min(1),
});
export type ManifestLock = z.infer<typeof lockSchema>;

/** Where `npm run lock` writes a repo tier's lock, and where the planner looks for one by default. */
export function conventionalLockPath(repo: string, tier: string): string {
  return `locks/${repo.replace("/", "__")}/${tier}.lock.json`;
}

export function readLock(path: string): ManifestLock | undefined {
  if (!existsSync(path)) return undefined;
  const result = lockSchema.safeParse(JSON.parse(readFileSync(path, "utf8")), { reportInput: true });
  if (!result.success) throw new Error(`lock ${path} is invalid:\n${describeIssues(result.error.issues).map((line) => `  - ${line}`).join("\n")}`);
  return result.data;
}

/**
 * The architecture numbers of an MoE GGUF, from its metadata (gguf-py/gguf/constants.py keys):
 * deepseek2 with MLA, or a grouped-query-attention MoE (qwen3moe, glm4moe, …).
 */
export function architectureFromMetadata(metadata: ManifestLock["metadata"]): Architecture {
  const arch = String(metadata["general.architecture"]);
  const number = (key: string, fallback?: number): number => {
    const value = metadata[`${arch}.${key}`];
    if (typeof value === "number") return value;
    if (fallback !== undefined) return fallback;
    throw new Error(`the lock's GGUF metadata lacks ${arch}.${key}`);
  };
  // What every MoE architecture states the same way.
  const common = {
    llamaCppArch: arch,
    layers: number("block_count"),
    denseLeadingLayers: number("leading_dense_block_count", 0),
    hiddenSize: number("embedding_length"),
    attentionHeads: number("attention.head_count"),
    denseFfnSize: number("feed_forward_length"),
    routedExperts: number("expert_count"),
    activeExperts: number("expert_used_count"),
    sharedExperts: number("expert_shared_count", 0),
    expertFfnSize: number("expert_feed_forward_length"),
    vocabSize: number("vocab_size"),
    contextLength: number("context_length"),
  };
  if (arch !== "deepseek2") {
    const headDim = Math.floor(common.hiddenSize / common.attentionHeads);
    const valueLength = number("attention.value_length", headDim);
    return {
      ...common,
      attention: { kind: "gqa", headCountKv: number("attention.head_count_kv", common.attentionHeads), keyLength: number("attention.key_length", headDim), valueLength },
      qLoraRank: 0,
      kvLoraRank: 0,
      qkNopeHeadDim: 0,
      qkRopeHeadDim: number("rope.dimension_count", headDim),
      vHeadDim: valueLength,
    };
  }
  const rope = number("rope.dimension_count");
  return {
    ...common,
    qLoraRank: number("attention.q_lora_rank", 0),
    kvLoraRank: number("attention.kv_lora_rank"),
    qkNopeHeadDim: number("attention.key_length_mla") - rope,
    qkRopeHeadDim: rope,
    vHeadDim: number("attention.value_length_mla"),
  };
}

export function tensorsFromLock(lock: ManifestLock): TensorInfo[] {
  return lock.shards.flatMap((shard) => shard.tensors.map((tensor) => makeTensor(tensor.name, tensor.type as GgmlTypeName, tensor.shape)));
}

/** The manifest GgufShards downloads and fetch-gguf.sh reads: "sha256<TAB>size<TAB>path" lines. */
export function manifestTsv(lock: ManifestLock): string {
  return lock.shards.map((shard) => `${shard.sha256}\t${shard.size}\t${shard.path}`).join("\n") + "\n";
}
