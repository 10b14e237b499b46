/**
 * The `local` stack under the real Pulumi engine: preview, up, a no-change up, a changed serving
 * flag that replaces only the container, and destroy — against the loopback host (sshd on
 * 127.0.0.1, a loopback Hugging Face, the Docker engine the tests start). Remote steps run through
 * the kit's ssh dynamic provider (deployment.remoteExecutor: kimi-dynamic), because the
 * pulumi-command plugin cannot be built here; the container goes through the docker-CLI path.
 */
import { readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { pulumiProject, type PulumiProject } from "../support/pulumi-cli";
import { HF_TOKEN, http, localStackValues, startLocalHost, type LocalHost } from "../support/local-stack";

const API_KEY = "sk-engine-local-0123456789abcdefghij";
let host: LocalHost;
let project: PulumiProject;
let values: Record<string, unknown>;
const run = (args: string[], input?: string) => project.run([...args, "--stack", "local"], input);

function resolveGets(): number {
  return host.hf.requests.filter((request) => request.kind === "resolve" && request.method === "GET").length;
}

beforeAll(async () => {
  host = await startLocalHost();
  project = pulumiProject();
  values = localStackValues(host);
  (values.deployment as Record<string, unknown>).remoteExecutor = "kimi-dynamic";
  project.writeStack("local", values);
  expect((await project.run(["stack", "init", "local"])).status).toBe(0);
  expect((await run(["config", "set", "--secret", "kimi-kit:apiKey", API_KEY])).status).toBe(0);
  expect((await run(["config", "set", "--secret", "kimi-kit:huggingFaceToken", HF_TOKEN])).status).toBe(0);
  const key = await run(["config", "set", "--secret", "kimi-kit:sshPrivateKey"], host.sshd.privateKey);
  expect(key.status, key.output).toBe(0);
}, 1_800_000);

afterAll(async () => {
  if (project) {
    await run(["destroy", "--yes"]);
    project.remove();
  }
  await host?.stop();
}, 600_000);

/** A real `pulumi up` (image, container, health check) takes ~20 s alone; on CI's two cores it shares them with other test files. */
const ENGINE_STEP_TIMEOUT_MS = 180_000;

describe("pulumi on the local stack (real engine)", () => {
  it("preview lists the resources and the projected outputs, connecting to nothing", async () => {
    const before = resolveGets();
    const preview = await run(["preview"]);
    expect(preview.status, preview.output).toBe(0);
    for (const type of [
      "kimi-kit:index:LlmDeployment",
      "kimi-kit:host:HostPrep",
      "kimi-kit:model:GgufShards",
      "kimi-kit:serving:LlamaServer",
    ])
      expect(preview.output).toContain(type);
    expect(preview.output).toMatch(/projectedDecodeTokensPerSecond\s*:\s*[\d.]+/);
    expect(preview.output).not.toContain(API_KEY);
    expect(resolveGets()).toBe(before);
  });

  it(
    "up brings the endpoint up; it answers with the key and refuses without",
    async () => {
      const up = await run(["up", "--yes"]);
      expect(up.status, up.output).toBe(0);
      expect(up.output).not.toContain(API_KEY);
      const base = `http://127.0.0.1:${host.servingPort}`;
      const body = { messages: [{ role: "user", content: "hi" }], max_tokens: 8 };
      expect(http(`${base}/v1/chat/completions`, { method: "POST", key: API_KEY, body }).status).toBe(200);
      expect(http(`${base}/v1/chat/completions`, { method: "POST", body }).status).toBe(401);
      const printed = (await run(["stack", "output", "--json"])).output;
      const outputs = JSON.parse(printed.slice(printed.indexOf("{"), printed.lastIndexOf("}") + 1));
      expect(outputs.endpoint).toBe(`${base}/v1`);
      expect(outputs.apiKey).toBe("[secret]");
      expect(outputs.measuredDecodeTokensPerSecond).toBeGreaterThan(0);
    },
    ENGINE_STEP_TIMEOUT_MS,
  );

  it(
    "a second up changes nothing",
    async () => {
      const gets = resolveGets();
      const again = await run(["up", "--yes", "--expect-no-changes"]);
      expect(again.status, again.output).toBe(0);
      expect(resolveGets()).toBe(gets);
    },
    ENGINE_STEP_TIMEOUT_MS,
  );

  it(
    "changing one serving flag replaces only the container (and its smoke check); no shard is downloaded again",
    async () => {
      const gets = resolveGets();
      const shard = join(
        values.deployment ? (values.deployment as { modelDir: string }).modelDir : "",
        JSON.parse(readFileSync((values.deployment as { lockFile: string }).lockFile, "utf8")).shards[0].path,
      );
      const mtime = statSync(shard).mtimeMs;
      expect((await run(["config", "set", "--path", "kimi-kit:serving.parallelSlots", "2"])).status).toBe(0);
      const up = await run(["up", "--yes", "--diff"]);
      expect(up.status, up.output).toBe(0);
      const replaced = new Set(
        [...up.output.matchAll(/\(replace\)\s*\n\s*\[id=[^\]]*\]\s*\n\s*\[urn=[^\]]*::([^\]:]+)\]/g)].map(
          (match) => match[1]!,
        ),
      );
      expect([...replaced].sort(), up.output).toEqual(["kimi-server-container", "kimi-smoke"]);
      expect(up.output).toMatch(/\+-2 replaced/);
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
      const destroy = await run(["destroy", "--yes"]);
      expect(destroy.status, destroy.output).toBe(0);
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
