/**
 * The `local` stack end to end, for real: sshd on 127.0.0.1 plays the bare-metal host, a loopback
 * server plays Hugging Face with sharded deepseek2 GGUFs, the kit locks the manifest from it, and
 * the harness carries out — over SSH, in component order — every remote command the components
 * registered under Pulumi mocks: scripts copied, host probed and prepared, shards fetched and
 * verified, the llama-server container started through the Docker engine, the smoke request made.
 */
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { installMocks, registered } from "../components/mocks";
import { parseStackConfig } from "../../planner/config";
import { buildPlan, type Plan } from "../../planner/plan";
import { applyRecorded, destroyRecorded, registerLocalStack, type StepResult } from "../support/harness";
import { http, localStackValues, startLocalHost, type LocalHost } from "../support/local-stack";
import { parseSmokeTimings } from "../../components/serving/smoke";

const API_KEY = "sk-local-e2e-0123456789abcdefghijklmn";
let host: LocalHost;
let plan: Plan;
let steps: StepResult[];
let recorded: typeof registered;

beforeAll(async () => {
  host = await startLocalHost();
  const values = localStackValues(host);
  plan = buildPlan(
    "local",
    parseStackConfig("local", { ...values, apiKey: { secure: "(set)" }, huggingFaceToken: { secure: "(set)" } }),
  );
  await installMocks(false);
  recorded = await registerLocalStack(host, values, API_KEY);
  steps = await applyRecorded(recorded, (line) => process.stdout.write(`  harness: ${line}\n`));
}, 1_800_000);

afterAll(async () => {
  if (recorded && host) await destroyRecorded(recorded);
  await host?.stop();
}, 120_000);

describe("local stack, carried out for real", () => {
  it("ran every step in component order: scripts → probe → docker → tune → manifest → fetch → container → smoke", () => {
    const order = steps.map((step) => step.name.replace(/^local-?/, ""));
    const at = (suffix: string) => order.findIndex((name) => name.endsWith(suffix));
    expect(at("scripts")).toBeLessThan(at("probe"));
    expect(at("probe")).toBeLessThan(at("docker"));
    expect(at("docker")).toBeLessThan(at("tune"));
    expect(at("tune")).toBeLessThan(at("fetch"));
    expect(at("fetch")).toBeLessThan(at("container"));
    expect(at("container")).toBeLessThan(at("smoke"));
  });

  it("probed the real host and fetched every locked shard, verified", () => {
    const probe = steps.find((step) => step.name.endsWith("probe"))!;
    expect(probe.stdout).toMatch(/^ram_bytes=\d+$/m);
    const fetch = steps.find((step) => step.name.endsWith("fetch"))!;
    expect(fetch.stdout).toContain(`FETCH_GGUF_RESULT verified=${plan.shards.count}`);
    for (const shard of plan.lock!.shards) {
      const sidecar = readFileSync(join(host.modelDir, `${shard.path}.verified`), "utf8");
      expect(sidecar.split(" ")[0]).toBe(shard.sha256);
    }
  });

  it("serves an OpenAI-compatible endpoint that needs the key", () => {
    const base = `http://127.0.0.1:${host.servingPort}`;
    expect(http(`${base}/health`).status).toBe(200);
    const body = { model: "x", messages: [{ role: "user", content: "hi" }], max_tokens: 8 };
    const ok = http(`${base}/v1/chat/completions`, { method: "POST", key: API_KEY, body });
    expect(ok.status).toBe(200);
    expect(JSON.parse(ok.body)).toHaveProperty("timings");
    expect(http(`${base}/v1/chat/completions`, { method: "POST", body }).status).toBe(401);
    expect(http(`${base}/v1/chat/completions`, { method: "POST", key: "wrong", body }).status).toBe(401);
  });

  it("runs the container with exactly the planned arguments, the key only in a mounted file", () => {
    const container = steps.find((step) => step.name.endsWith("container"))!;
    expect(container.stdout).toMatch(/CONTAINER_RESULT action=(created|replaced|unchanged)/);
    const name = plan.config.deployment.containerName!;
    const inspect = JSON.parse(host.sshd.exec(`docker inspect ${name}`))[0];
    expect(inspect.Args).toEqual(plan.llamaServerArgs);
    expect(JSON.stringify(inspect)).not.toContain(API_KEY);
    const mounts = inspect.Mounts as { Destination: string; RW: boolean }[];
    expect(mounts.find((mount) => mount.Destination === "/models")!.RW).toBe(false);
    expect(mounts.find((mount) => mount.Destination === "/run/kimi-kit/api-key")!.RW).toBe(false);
  });

  it("prints the projections next to the measured timings of the smoke request", () => {
    const smoke = steps.find((step) => step.name.endsWith("smoke"))!;
    const timings = parseSmokeTimings(smoke.stdout);
    expect(timings.decodeTokensPerSecond).toBeGreaterThan(0);
    process.stdout.write(
      `  local stack: projected decode ${plan.projection.decodeTokensPerSecond.toFixed(1)} tok/s, measured ${timings.decodeTokensPerSecond?.toFixed(1)} tok/s; ` +
        `projected prefill ${plan.projection.prefillTokensPerSecond.toFixed(1)} tok/s, measured ${timings.prefillTokensPerSecond?.toFixed(1)} tok/s ` +
        `(a 4 MB model: fixed per-token overheads dominate, see bench/ for the accuracy runs)\n`,
    );
  });

  it("replacements keep serving and never purge the shards the new step verified (create new, then delete old)", async () => {
    const name = plan.config.deployment.containerName!;
    /** One generation of the stack, as the next `up` would register it. */
    const generation = (overrides: { parallelSlots: number; purgeModels: boolean; lockFile: string }) => {
      const values = localStackValues(host);
      (values.serving as Record<string, unknown>).parallelSlots = overrides.parallelSlots;
      Object.assign(values.deployment as Record<string, unknown>, {
        purgeModels: overrides.purgeModels,
        lockFile: overrides.lockFile,
      });
      return registerLocalStack(host, values, API_KEY);
    };
    /**
     * What the engine does for a step whose triggers changed: the new one is created first, the old one's delete runs
     * after.
     */
    const replace = async (olds: typeof registered, news: typeof registered) => {
      await applyRecorded(news);
      const replaced = olds.filter((old) => {
        const next = news.find((candidate) => candidate.name === old.name);
        return next !== undefined && JSON.stringify(next.inputs.triggers) !== JSON.stringify(old.inputs.triggers);
      });
      const deletes = await destroyRecorded(replaced);
      for (const result of deletes) expect(result.status, `${result.name}: ${result.stderr}`).toBe(0);
      return replaced.map((step) => step.name.replace(/^local-?/, ""));
    };
    const serving = () => {
      const inspect = JSON.parse(host.sshd.exec(`docker inspect ${name}`))[0];
      return {
        running: inspect.State.Running as boolean,
        args: inspect.Args as string[],
        health: http(`http://127.0.0.1:${host.servingPort}/health`).status,
      };
    };
    const shardsPresent = () =>
      plan.lock!.shards.every(
        (shard) =>
          existsSync(join(host.modelDir, shard.path)) && existsSync(join(host.modelDir, `${shard.path}.verified`)),
      );

    // A new lock with the same files, the later shards listed in another order, changes the fetch
    // step's trigger (its manifest) but not a byte on disk.
    const reordered = join(host.dir, "local-reordered.lock.json");
    const lock = JSON.parse(readFileSync(host.lockFile, "utf8")) as { shards: unknown[] };
    writeFileSync(reordered, JSON.stringify({ ...lock, shards: [lock.shards[0], ...lock.shards.slice(1).reverse()] }));

    // Generation 2: two slots (a new container spec), purging on, a new lock.
    const second = await generation({ parallelSlots: 2, purgeModels: true, lockFile: reordered });
    expect(await replace(recorded, second)).toEqual(expect.arrayContaining(["shards-fetch", "server-container"]));
    expect(serving()).toMatchObject({ running: true, health: 200 });
    expect(serving().args).not.toEqual(plan.llamaServerArgs);
    expect(serving().args).toContain("2");
    expect(shardsPresent()).toBe(true);

    // Generation 3, back to the original: the old steps' deletes now purge — and must not.
    const third = await generation({ parallelSlots: 1, purgeModels: false, lockFile: host.lockFile });
    expect(await replace(second, third)).toEqual(expect.arrayContaining(["shards-fetch", "server-container"]));
    expect(serving()).toMatchObject({ running: true, args: plan.llamaServerArgs, health: 200 });
    expect(shardsPresent()).toBe(true);
    recorded = third;
  }, 900_000);

  it("destroy removes the container and keeps the shards", async () => {
    const results = await destroyRecorded(recorded);
    for (const result of results) expect(result.status, `${result.name}: ${result.stderr}`).toBe(0);
    expect(
      host.sshd
        .exec(`docker ps -a --filter name=^${plan.config.deployment.containerName}$ --format '{{.Names}}'`)
        .trim(),
    ).toBe("");
    for (const shard of plan.lock!.shards)
      expect(readFileSync(join(host.modelDir, shard.path)).length).toBe(shard.size);
    recorded = [];
  });
});
