/**
 * The `local` stack under the real Pulumi engine: preview, up, a no-change up, a changed serving
 * flag that replaces only the container, and destroy — against the loopback host (sshd on
 * 127.0.0.1, a loopback Hugging Face, the Docker engine the tests start). Remote steps run through
 * the kit's ssh dynamic provider (deployment.remoteExecutor: kimi-dynamic), because the
 * pulumi-command plugin cannot be built here; the container goes through the docker-CLI path.
 * Driven through the Automation API (LocalWorkspace): each check reads the engine's typed events
 * (steps and their op, the summary's resourceChanges, the stack's outputs), not the CLI's text.
 */
import { readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Stack } from "@pulumi/pulumi/automation";
import {
  destroy,
  namesOf,
  preview,
  pulumiProject,
  up,
  type EngineRun,
  type PulumiProject,
} from "../support/pulumi-cli";
import { HF_TOKEN, http, localStackValues, startLocalHost, type LocalHost } from "../support/local-stack";

const API_KEY = "sk-engine-local-0123456789abcdefghij";
let host: LocalHost;
let project: PulumiProject;
let values: Record<string, unknown>;
let stack: Stack;

function resolveGets(): number {
  return host.hf.requests.filter((request) => request.kind === "resolve" && request.method === "GET").length;
}

beforeAll(async () => {
  host = await startLocalHost();
  project = pulumiProject();
  values = localStackValues(host);
  (values.deployment as Record<string, unknown>).remoteExecutor = "kimi-dynamic";
  project.writeStack("local", values);
  stack = await project.stack("local");
  await stack.setAllConfig({
    "kimi-kit:apiKey": { value: API_KEY, secret: true },
    "kimi-kit:huggingFaceToken": { value: HF_TOKEN, secret: true },
    "kimi-kit:sshPrivateKey": { value: host.sshd.privateKey, secret: true },
  });
}, 1_800_000);

afterAll(async () => {
  if (stack) await destroy(stack);
  project?.remove();
  await host?.stop();
}, 600_000);

/**
 * A real `pulumi up` (image, container, health check) takes ~20 s alone; on CI's two cores it shares them with other
 * test files.
 */
const ENGINE_STEP_TIMEOUT_MS = 180_000;

/**
 * Each test that needs the stack deployed starts from here, so any one of them runs alone too
 * (`-t`): the stack's own config (one slot) and a successful `up` (no change when already up).
 */
async function deployedAtBaseline(): Promise<EngineRun> {
  await stack.setConfig("kimi-kit:serving.parallelSlots", { value: "1" }, true);
  const run = await up(stack);
  expect(run.ok, run.error).toBe(true);
  return run;
}

describe("pulumi on the local stack (real engine)", () => {
  it("preview lists the resources and the projected outputs, connecting to nothing", async () => {
    const before = resolveGets();
    const run = await preview(stack);
    expect(run.ok, run.error).toBe(true);
    const types = new Set(run.steps.map((step) => step.type));
    for (const type of [
      "kimi-kit:index:LlmDeployment",
      "kimi-kit:host:HostPrep",
      "kimi-kit:model:GgufShards",
      "kimi-kit:serving:LlamaServer",
    ])
      expect(types).toContain(type);
    expect(run.outputs.projectedDecodeTokensPerSecond).toBeGreaterThan(0);
    expect(run.eventsJson).not.toContain(API_KEY);
    expect(resolveGets()).toBe(before);
  });

  it(
    "up brings the endpoint up; it answers with the key and refuses without",
    async () => {
      const run = await deployedAtBaseline();
      expect(run.eventsJson).not.toContain(API_KEY);
      const base = `http://127.0.0.1:${host.servingPort}`;
      const body = { messages: [{ role: "user", content: "hi" }], max_tokens: 8 };
      expect(http(`${base}/v1/chat/completions`, { method: "POST", key: API_KEY, body }).status).toBe(200);
      expect(http(`${base}/v1/chat/completions`, { method: "POST", body }).status).toBe(401);
      const stored = await stack.outputs();
      const outputs = Object.fromEntries(Object.entries(stored).map(([name, output]) => [name, output.value]));
      expect(stored.apiKey?.secret).toBe(true);
      expect(outputs.endpoint).toBe(`${base}/v1`);
      expect(outputs.measuredDecodeTokensPerSecond).toBeGreaterThan(0);
    },
    ENGINE_STEP_TIMEOUT_MS,
  );

  it(
    "a second up changes nothing",
    async () => {
      await deployedAtBaseline();
      const gets = resolveGets();
      const again = await up(stack, { expectNoChanges: true });
      expect(again.ok, again.error).toBe(true);
      expect(Object.keys(again.resourceChanges)).toEqual(["same"]);
      expect(resolveGets()).toBe(gets);
    },
    ENGINE_STEP_TIMEOUT_MS,
  );

  it(
    "changing one serving flag replaces only the container (and its smoke check); no shard is downloaded again",
    async () => {
      await deployedAtBaseline();
      const gets = resolveGets();
      const shard = join(
        values.deployment ? (values.deployment as { modelDir: string }).modelDir : "",
        JSON.parse(readFileSync((values.deployment as { lockFile: string }).lockFile, "utf8")).shards[0].path,
      );
      const mtime = statSync(shard).mtimeMs;
      await stack.setConfig("kimi-kit:serving.parallelSlots", { value: "2" }, true);
      const run = await up(stack);
      expect(run.ok, run.error).toBe(true);
      expect(namesOf(run, "replace")).toEqual(["kimi-server-container", "kimi-smoke"]);
      expect(run.resourceChanges.replace).toBe(2);
      expect(resolveGets()).toBe(gets);
      expect(statSync(shard).mtimeMs).toBe(mtime);
      const inspect = JSON.parse(host.sshd.exec(`docker inspect kimi-kit-local-${host.servingPort}`))[0];
      expect(inspect.Args.join(" ")).toContain("--ctx-size 512 --parallel 2");
    },
    ENGINE_STEP_TIMEOUT_MS,
  );

  it(
    "destroy removes the container and keeps the shards",
    async () => {
      await deployedAtBaseline();
      const run = await destroy(stack);
      expect(run.ok, run.error).toBe(true);
      expect(
        host.sshd.exec(`docker ps -a --filter name=^kimi-kit-local-${host.servingPort}$ --format '{{.Names}}'`).trim(),
      ).toBe("");
      const lock = JSON.parse(readFileSync((values.deployment as { lockFile: string }).lockFile, "utf8")) as {
        shards: { path: string; size: number }[];
      };
      for (const shard of lock.shards)
        expect(statSync(join((values.deployment as { modelDir: string }).modelDir, shard.path)).size).toBe(shard.size);
    },
    ENGINE_STEP_TIMEOUT_MS,
  );
});
