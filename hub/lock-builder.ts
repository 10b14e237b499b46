/**
 * The manifest lock of a model tier from a Hugging Face repository (or a mirror at another base URL):
 * every .gguf file of the tier folder with its size and LFS sha256 (the Hub's tree API through
 * @huggingface/hub) and every shard's tensor table (GGUF headers read with @huggingface/gguf over HTTP
 * range requests — no shard is downloaded). `npm run lock` writes it; the local stack builds one
 * against its loopback Hub.
 */
import { listFiles } from "@huggingface/hub";
import { gguf } from "@huggingface/gguf";
import { lockSchema, lockTensorsOf, scalarMetadata, type ManifestLock } from "../planner/lock";

export async function buildLock(options: {
  repo: string;
  tier: string;
  baseUrl: string;
  revision: string;
  token?: string;
}): Promise<ManifestLock> {
  const credentials = options.token ? { accessToken: options.token } : {};
  const files: { path: string; size: number; sha256: string }[] = [];
  try {
    for await (const entry of listFiles({
      repo: { type: "model", name: options.repo },
      path: options.tier,
      revision: options.revision,
      hubUrl: options.baseUrl,
      ...credentials,
    })) {
      if (entry.type !== "file" || !entry.path.endsWith(".gguf")) continue;
      if (!entry.lfs?.oid) throw new Error(`${entry.path} has no LFS sha256 in the tree listing`);
      files.push({ path: entry.path, size: entry.lfs.size ?? entry.size, sha256: entry.lfs.oid });
    }
  } catch (error) {
    throw new Error(
      `listing ${options.baseUrl}/api/models/${options.repo}/tree/${options.revision}/${options.tier} failed: ${(error as Error).message}`,
      { cause: error },
    );
  }
  if (files.length === 0)
    throw new Error(
      `no .gguf files under ${options.tier}/ in ${options.repo}@${options.revision} at ${options.baseUrl}`,
    );
  files.sort((a, b) => a.path.localeCompare(b.path));

  const shards: ManifestLock["shards"] = [];
  let metadata: ManifestLock["metadata"] = {};
  for (const file of files) {
    const url = `${options.baseUrl}/${options.repo}/resolve/${encodeURIComponent(options.revision)}/${file.path}`;
    const header = await gguf(url, {
      additionalFetchHeaders: options.token ? { Authorization: `Bearer ${options.token}` } : {},
    });
    if (shards.length === 0) metadata = scalarMetadata(header.metadata as Record<string, unknown>);
    shards.push({
      ...file,
      tensors: lockTensorsOf(header.tensorInfos, (problem) => new Error(`${file.path}: ${problem}`)),
    });
  }
  return lockSchema.parse({
    lockVersion: 1,
    repo: options.repo,
    revision: options.revision,
    tier: options.tier,
    source: options.baseUrl,
    generatedAt: new Date().toISOString(),
    metadata,
    shards,
  });
}
