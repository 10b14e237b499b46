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
import { describeIssues } from "./errors";

export const lockSchema = z.strictObject({
  lockVersion: z.literal(1),
  repo: z.string(),
  revision: z.string(),
  tier: z.string(),
  source: z.string(),
  generatedAt: z.string(),
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

export function readLock(path: string): ManifestLock | undefined {
  if (!existsSync(path)) return undefined;
  const result = lockSchema.safeParse(JSON.parse(readFileSync(path, "utf8")), { reportInput: true });
  if (!result.success) throw new Error(`lock ${path} is invalid:\n${describeIssues(result.error.issues).map((line) => `  - ${line}`).join("\n")}`);
  return result.data;
}

export function tensorsFromLock(lock: ManifestLock): TensorInfo[] {
  return lock.shards.flatMap((shard) => shard.tensors.map((tensor) => makeTensor(tensor.name, tensor.type as GgmlTypeName, tensor.shape)));
}

/** The manifest GgufShards downloads and fetch-gguf.sh reads: "sha256<TAB>size<TAB>path" lines. */
export function manifestTsv(lock: ManifestLock): string {
  return lock.shards.map((shard) => `${shard.sha256}\t${shard.size}\t${shard.path}`).join("\n") + "\n";
}
