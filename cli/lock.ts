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
import { buildLock } from "../hub/lock-builder";
import { findModelByRepo, loadCatalog } from "../planner/catalog";
import { ConfigError } from "../planner/errors";
import { conventionalLockPath } from "../planner/lock";
import { REPO_ROOT } from "../planner/plan";
import { loadStackConfig } from "../planner/stack-file";

const USAGE = "usage: npm run lock -- --stack NAME [--base-url URL] [--revision REV] [--out FILE]";

async function main(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      stack: { type: "string" },
      "base-url": { type: "string" },
      revision: { type: "string" },
      out: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
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
    process.stdout.write(
      `wrote ${relative(process.cwd(), out) || out}: ${lock.shards.length} shard(s), ${bytes} bytes, ${tensors} tensors from ${lock.source}\n`,
    );
    if (tier && tier.shards.count !== lock.shards.length) {
      process.stdout.write(
        `note: the catalog expected ${tier.shards.count} shards for ${tier.name}; the repository has ${lock.shards.length} (the lock wins)\n`,
      );
    }
    return 0;
  } catch (error) {
    process.stderr.write(
      `${error instanceof ConfigError ? error.message : `lock failed: ${(error as Error).message}`}\n`,
    );
    return 1;
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then((code) => (process.exitCode = code));
}
