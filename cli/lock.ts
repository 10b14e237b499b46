/**
 * `npm run lock -- --stack NAME [--base-url URL] [--revision REV] [--out FILE]`
 * Writes the manifest lock of the stack's model tier: every .gguf file of the tier folder with its
 * size and LFS sha256 (Hugging Face tree API through @huggingface/hub) and every shard's tensor table
 * (GGUF headers read with @huggingface/gguf over HTTP range requests — no shard is downloaded).
 * The base URL defaults to the stack's deployment.huggingFaceBaseUrl (a mirror works the same way);
 * a token is read from HF_TOKEN. Commit a lock only when it was generated from the real repository.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { parseArgs } from "node:util";
import { listFiles } from "@huggingface/hub";
import { gguf } from "@huggingface/gguf";
import { findModelByRepo, loadCatalog } from "../planner/catalog";
import { ConfigError } from "../planner/errors";
import { GGML_TYPE_BY_ID } from "../planner/ggml-types";
import { conventionalLockPath, lockSchema, MAX_METADATA_ARRAY, type ManifestLock } from "../planner/lock";
import { REPO_ROOT } from "../planner/plan";
import { loadStackConfig } from "../planner/stack-file";

const USAGE = "usage: npm run lock -- --stack NAME [--base-url URL] [--revision REV] [--out FILE]";

export async function buildLock(options: { repo: string; tier: string; baseUrl: string; revision: string; token?: string }): Promise<ManifestLock> {
  const credentials = options.token ? { accessToken: options.token } : {};
  const files: { path: string; size: number; sha256: string }[] = [];
  try {
    for await (const entry of listFiles({ repo: { type: "model", name: options.repo }, path: options.tier, revision: options.revision, hubUrl: options.baseUrl, ...credentials })) {
      if (entry.type !== "file" || !entry.path.endsWith(".gguf")) continue;
      if (!entry.lfs?.oid) throw new Error(`${entry.path} has no LFS sha256 in the tree listing`);
      files.push({ path: entry.path, size: entry.lfs.size ?? entry.size, sha256: entry.lfs.oid });
    }
  } catch (error) {
    throw new Error(`listing ${options.baseUrl}/api/models/${options.repo}/tree/${options.revision}/${options.tier} failed: ${(error as Error).message}`, { cause: error });
  }
  if (files.length === 0) throw new Error(`no .gguf files under ${options.tier}/ in ${options.repo}@${options.revision} at ${options.baseUrl}`);
  files.sort((a, b) => a.path.localeCompare(b.path));

  const shards: ManifestLock["shards"] = [];
  let metadata: ManifestLock["metadata"] = {};
  for (const file of files) {
    const url = `${options.baseUrl}/${options.repo}/resolve/${encodeURIComponent(options.revision)}/${file.path}`;
    const header = await gguf(url, { additionalFetchHeaders: options.token ? { Authorization: `Bearer ${options.token}` } : {} });
    if (shards.length === 0) metadata = scalarMetadata(header.metadata as Record<string, unknown>);
    shards.push({
      ...file,
      tensors: header.tensorInfos.map((info) => {
        const type = GGML_TYPE_BY_ID[Number(info.dtype)];
        if (!type) throw new Error(`${file.path}: tensor ${info.name} has ggml type id ${info.dtype}, which the planner does not know`);
        return { name: info.name, type, shape: info.shape.map(Number), offset: Number(info.offset) };
      }),
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

export function scalarMetadata(metadata: Record<string, unknown>): ManifestLock["metadata"] {
  const scalars: ManifestLock["metadata"] = {};
  for (const [key, value] of Object.entries(metadata)) {
    if (key.startsWith("tokenizer.")) continue;
    if (typeof value === "bigint") scalars[key] = Number(value);
    else if ((typeof value === "number" && Number.isFinite(value)) || typeof value === "string" || typeof value === "boolean") scalars[key] = value;
    else if (Array.isArray(value) && value.length <= MAX_METADATA_ARRAY && value.every((entry) => typeof entry === "number" || typeof entry === "bigint" || typeof entry === "boolean")) {
      // Per-layer arrays (head counts, recurrent-layer flags): what hybrid architectures are sized from.
      scalars[key] = value.map((entry) => Number(entry));
    }
  }
  return scalars;
}

async function main(argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { stack: { type: "string" }, "base-url": { type: "string" }, revision: { type: "string" }, out: { type: "string" }, help: { type: "boolean", short: "h" } } });
  if (values.help || !values.stack) {
    process.stdout.write(`${USAGE}\n`);
    return values.help ? 0 : 2;
  }
  try {
    const config = loadStackConfig(values.stack);
    const model = findModelByRepo(loadCatalog(), config.model.repo);
    const repo = model?.repo ?? config.model.repo;
    const lock = await buildLock({
      repo,
      tier: config.model.tier,
      baseUrl: (values["base-url"] ?? config.deployment.huggingFaceBaseUrl).replace(/\/$/, ""),
      revision: values.revision ?? "main",
      token: process.env.HF_TOKEN,
    });
    const out = values.out ?? join(REPO_ROOT, conventionalLockPath(repo, config.model.tier));
    mkdirSync(dirname(out), { recursive: true });
    writeFileSync(out, `${JSON.stringify(lock, null, 1)}\n`);
    const tier = model?.tiers.find((entry) => entry.name === config.model.tier);
    const tensors = lock.shards.reduce((sum, shard) => sum + shard.tensors.length, 0);
    const bytes = lock.shards.reduce((sum, shard) => sum + shard.size, 0);
    process.stdout.write(`wrote ${relative(process.cwd(), out) || out}: ${lock.shards.length} shard(s), ${bytes} bytes, ${tensors} tensors from ${lock.source}\n`);
    if (tier && tier.shards.count !== lock.shards.length) {
      process.stdout.write(`note: the catalog expected ${tier.shards.count} shards for ${tier.name}; the repository has ${lock.shards.length} (the lock wins)\n`);
    }
    return 0;
  } catch (error) {
    process.stderr.write(`${error instanceof ConfigError ? error.message : `lock failed: ${(error as Error).message}`}\n`);
    return 1;
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then((code) => (process.exitCode = code));
}
