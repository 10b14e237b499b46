/**
 * `npm run lock` against a loopback server that serves a repo the way Hugging Face does: the tree
 * API for sizes and LFS sha256, and range requests for the GGUF headers. The shards are a real
 * deepseek2 model made by test-llama-archs and split by llama-gguf-split.
 */
import { mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gguf } from "@huggingface/gguf";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildLock } from "../../hub/lock-builder";
import { tensorsFromLock } from "../../planner/lock";
import { buildPlan } from "../../planner/plan";
import { loadStackConfig } from "../../planner/stack-file";
import { sha256File, startHfServer, type HfServer } from "../support/hf-server";
import { generateDeepseek2Model, splitGguf } from "../../lab/models";

const REPO = "kimi-kit-test/deepseek2-moe-GGUF";
const TIER = "F32";
let root: string;
let server: HfServer;
let shards: string[];
let whole: string;

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), "kimi-kit-lock-"));
  whole = generateDeepseek2Model(join(root, "src"));
  shards = splitGguf(whole, join(root, "repo", TIER, `deepseek2-moe-${TIER}`), 16);
  server = await startHfServer({ root: join(root, "repo"), repo: REPO, token: "hf_test_token" });
}, 900_000);

afterAll(async () => {
  await server?.stop();
  if (root) rmSync(root, { recursive: true, force: true });
});

describe("npm run lock", () => {
  it("lists every shard with size and sha256 and reads every tensor table over range requests", async () => {
    const lock = await buildLock({
      repo: REPO,
      tier: TIER,
      baseUrl: server.baseUrl,
      revision: "main",
      token: "hf_test_token",
    });
    expect(lock.shards.map((shard) => shard.path)).toEqual(shards.map((file) => `${TIER}/${file.split("/").pop()}`));
    for (const [index, shard] of lock.shards.entries()) {
      expect(shard.size).toBe(statSync(shards[index]!).size);
      expect(shard.sha256).toBe(await sha256File(shards[index]!));
    }
    const reference = await gguf(whole, { allowLocalFile: true });
    const names = lock.shards.flatMap((shard) => shard.tensors.map((tensor) => tensor.name));
    expect(names.sort()).toEqual(reference.tensorInfos.map((info) => info.name).sort());
    // Headers are read with range requests (a few MiB each), never whole 50 GB shards.
    const reads = server.requests.filter((request) => request.kind === "resolve");
    expect(reads.length).toBeGreaterThanOrEqual(lock.shards.length);
    for (const read of reads) {
      expect(read.rangeStart, read.url).not.toBeNull();
      expect(read.rangeStart, read.url).not.toBeUndefined();
    }
  });

  it("classifies the real tensors: fused routed experts, shared experts, MLA attention", async () => {
    const lock = await buildLock({
      repo: REPO,
      tier: TIER,
      baseUrl: server.baseUrl,
      revision: "main",
      token: "hf_test_token",
    });
    const tensors = tensorsFromLock(lock);
    const experts = tensors.filter((tensor) => tensor.cls === "routedExperts");
    expect(experts.length).toBeGreaterThan(0);
    expect(
      experts.some((tensor) => tensor.name.includes("ffn_gate_up_exps") || tensor.name.includes("ffn_up_exps")),
    ).toBe(true);
    expect(tensors.some((tensor) => tensor.cls === "sharedExperts")).toBe(true);
    expect(tensors.some((tensor) => tensor.name.includes("attn_kv_a_mqa") && tensor.cls === "attention")).toBe(true);
    expect(tensors.every((tensor) => tensor.bytes > 0)).toBe(true);
  });

  it("says what failed when the token is wrong or the tier folder is missing", async () => {
    await expect(
      buildLock({ repo: REPO, tier: TIER, baseUrl: server.baseUrl, revision: "main", token: "wrong" }),
    ).rejects.toThrow(/tree\/main\/F32 failed/);
    await expect(
      buildLock({ repo: REPO, tier: "Q9", baseUrl: server.baseUrl, revision: "main", token: "hf_test_token" }),
    ).rejects.toThrow(/Q9/);
  });
});

describe("planning from a lock", () => {
  it("places the real tensors and takes the architecture from the GGUF metadata, for a repo the catalog does not list", async () => {
    const lock = await buildLock({
      repo: REPO,
      tier: TIER,
      baseUrl: server.baseUrl,
      revision: "main",
      token: "hf_test_token",
    });
    const lockFile = join(root, "deepseek2.lock.json");
    writeFileSync(lockFile, JSON.stringify(lock));
    const base = loadStackConfig("cpu-ddr5");
    const plan = buildPlan("local-lock", {
      ...base,
      model: { repo: REPO, tier: TIER, vision: false },
      serving: { ...base.serving, contextLength: 256 },
      deployment: { ...base.deployment, lockFile },
    });
    expect(plan.tensorSource).toBe("lock");
    expect(plan.model.architecture.layers).toBe(2);
    expect(plan.model.architecture.kvLoraRank + plan.model.architecture.qkRopeHeadDim).toBe(576);
    expect(plan.modelBytes).toBe(
      lock.shards
        .flatMap((shard) => shard.tensors)
        .reduce(
          (sum, t) => sum + tensorsFromLock({ ...lock, shards: [{ ...lock.shards[0]!, tensors: [t] }] })[0]!.bytes,
          0,
        ),
    );
    expect(plan.placement.memory[0]!.kvBytes).toBe(256 * 576 * 2 * 2);
    expect(plan.llamaServerArgs[plan.llamaServerArgs.indexOf("--model") + 1]).toBe(`/models/${lock.shards[0]!.path}`);
  });
});
