/**
 * index.ts (what `pulumi up` runs) refuses its config before registering anything: secrets Pulumi
 * does not hold encrypted, misspelled keys and namespaces, an API key that is not a key.
 */
import { beforeAll, expect, it, vi } from "vitest";
import * as pulumi from "@pulumi/pulumi";
import { readStackValues } from "../../planner/stack-file";
import { HOST_KEY, installMocks, isSecret, promiseOf, registered, settle } from "./mocks";

beforeAll(() => installMocks(true));

const VALID_KEY = "kimiKitProgramTest_0123456789abcdef-XYZ";

function programConfig(extra: Record<string, string>): Record<string, string> {
  const raw = structuredClone(readStackValues("cpu-ddr5"));
  (raw.host as { ssh: Record<string, unknown> }).ssh.hostPublicKey = HOST_KEY;
  const config: Record<string, string> = {};
  for (const [key, value] of Object.entries(raw)) config[`kimi-kit:${key}`] = JSON.stringify(value);
  return { ...config, ...extra };
}

/** Runs index.ts afresh with this config; the error it stops with, or undefined. */
async function runProgram(config: Record<string, string>, secretKeys: string[]): Promise<Error | undefined> {
  vi.resetModules();
  pulumi.runtime.setAllConfig(config, secretKeys);
  try {
    await import("../../index.js");
    return undefined;
  } catch (error) {
    return error as Error;
  }
}

it.each(["apiKey", "sshPrivateKey", "huggingFaceToken"])(
  "refuses kimi-kit:%s set in plain text, registering nothing",
  async (key) => {
    const before = registered.length;
    const error = await runProgram(programConfig({ [`kimi-kit:${key}`]: VALID_KEY }), []);
    expect(error).toBeInstanceOf(pulumi.RunError);
    expect(error!.message).toContain(
      `${key}: found a plain-text value (hidden); allowed: only an encrypted value; set it with \`pulumi config set --secret kimi-kit:${key} <value>\``,
    );
    expect(error!.message).not.toContain(VALID_KEY);
    expect(error!.stack ?? "").not.toContain(VALID_KEY);
    await settle();
    expect(registered.length).toBe(before);
  },
);

it("refuses a misspelled key and a misspelled namespace, naming both", async () => {
  const config = programConfig({
    "kimi-kit:servng": JSON.stringify({ port: 9090 }),
    "kimi_kit:model": JSON.stringify({ repo: "x/y", tier: "z" }),
  });
  const error = await runProgram(config, []);
  expect(error).toBeInstanceOf(pulumi.RunError);
  expect(error!.message).toMatch(/kimi-kit:servng: found the key "servng"; allowed: only the keys .*kimi-kit:serving/);
  expect(error!.message).toMatch(/kimi_kit:model: found the namespace "kimi_kit"; allowed: "kimi-kit:"/);
});

it("refuses a secret API key that llama-server would not enforce", async () => {
  const error = await runProgram(programConfig({ "kimi-kit:apiKey": "# team key" }), ["kimi-kit:apiKey"]);
  expect(error).toBeInstanceOf(pulumi.RunError);
  expect(error!.message).toMatch(/apiKey: found a value of 10 characters; allowed: one line of 32/);
  expect(error!.message).not.toContain("team key");
});

it("runs with the secrets encrypted, and keeps the key secret", async () => {
  const error = await runProgram(programConfig({ "kimi-kit:apiKey": VALID_KEY }), ["kimi-kit:apiKey"]);
  expect(error).toBeUndefined();
  const program = (await import("../../index.js")) as typeof import("../../index.js");
  expect(await isSecret(program.apiKey)).toBe(true);
  expect(await promiseOf(program.apiKey)).toBe(VALID_KEY);
  await settle();
});
