/**
 * The smoke step against the real llama-server: it must fail when the server answers without a
 * key (llama-server serves with no authentication when its key file holds no usable key) and pass,
 * printing timings, when keys are checked.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";
import { startServer, type RunningServer } from "../../lab/server";
import { parseSmokeTimings, smokeScript } from "../../components/serving/smoke";
import { generateDeepseek2Model } from "../../lab/models";

const KEY = "smoke-test-key-0123456789abcdefghijklmnop";
let dir: string;
let model: string;
const servers: RunningServer[] = [];

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "kimi-kit-smoke-"));
  model = generateDeepseek2Model(dir);
}, 600_000);

afterAll(async () => {
  for (const server of servers) await server.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const smoke = (port: number) =>
  spawnSync("bash", ["-c", smokeScript("127.0.0.1", port, "kimi", 60)], {
    input: `${KEY}\n`,
    encoding: "utf8",
    timeout: 120_000,
  });

it("fails, naming the cause, when the server runs without keys", async () => {
  const open = await startServer(model, ["-c", "256"]);
  servers.push(open);
  const run = smoke(open.port);
  expect(run.status).not.toBe(0);
  expect(run.stderr).toMatch(/answered HTTP 200 without an API key/);
}, 300_000);

it("passes and prints timings when the server checks the key", async () => {
  const keyFile = join(dir, "api-key");
  writeFileSync(keyFile, `${KEY}\n`);
  const guarded = await startServer(model, ["-c", "256", "--api-key-file", keyFile]);
  servers.push(guarded);
  const run = smoke(guarded.port);
  expect(run.status, run.stderr).toBe(0);
  expect(parseSmokeTimings(run.stdout).decodeTokensPerSecond).toBeGreaterThan(0);
}, 300_000);
