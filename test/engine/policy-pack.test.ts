/**
 * The kit's policy pack under the real Pulumi engine: a preview with the pack and a config file
 * (`pulumi preview --policy-pack ./policy --policy-pack-config FILE`, driven through the Automation
 * API, violations read from the engine's typed policy events) on local stacks (file backend, no
 * host: remote steps through the kit's ssh executor, which connects to nothing in preview). The CLI starts the pack
 * through the
 * Node.js language host's RunPlugin (tools/install-pulumi.sh gives the host it builds one), and
 * the pack's analyzer judges every resource as it is registered.
 * - a stack breaking several rules fails its preview, each violation naming its policy and the
 *   value found; a policy set to advisory in the config is reported without failing it;
 * - a split accepted only under lowered thresholds, with workers outside the platform's private
 *   range, fails naming the planner's verdict and the worker's address; a disabled policy is silent;
 * - a stack within every rule passes under the example config (policy/policy-config.example.json).
 */
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse } from "yaml";
import type { PolicyEvent } from "@pulumi/pulumi/automation";
import { preview, pulumiProject, type EngineRun, type PulumiProject } from "../support/pulumi-cli";
import { buildPlan } from "../../planner/plan";
import { loadStackConfig } from "../../planner/stack-file";

const API_KEY = "sk-engine-policy-0123456789abcdefghij";
const HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKimiKitTestHostKeyOnlyForUnitTests000000000";
let project: PulumiProject;

/** The kimi-kit:* values of a committed stack file, to derive the test's stacks from. */
function stackValues(stack: string): Record<string, unknown> {
  const file = parse(readFileSync(join(__dirname, "..", "..", "stacks", `Pulumi.${stack}.yaml`), "utf8")) as {
    config: Record<string, unknown>;
  };
  return Object.fromEntries(
    Object.entries(file.config).map(([key, value]) => [key.replace(/^kimi-kit:/, ""), structuredClone(value)]),
  );
}

/** A stack that previews with no host and no resource plugin: the kit's ssh executor and the docker CLI. */
function offline(values: Record<string, unknown>): Record<string, unknown> {
  return {
    ...values,
    deployment: {
      ...(values.deployment as object | undefined),
      remoteExecutor: "kimi-dynamic",
      containerEngine: "docker-cli",
    },
  };
}

async function initStack(
  stack: string,
  values: Record<string, unknown>,
  tags: Record<string, string> = {},
): Promise<void> {
  project.writeStack(stack, values);
  const handle = await project.stack(stack);
  await handle.setConfig("kimi-kit:apiKey", { value: API_KEY, secret: true });
  for (const [tag, value] of Object.entries(tags)) await handle.setTag(tag, value);
}

/** A preview with the pack and a policy config file written for this run. */
async function previewWithPolicies(stack: string, config: Record<string, unknown>): Promise<EngineRun> {
  const file = join(project.dir, `policy-config.${stack}.json`);
  writeFileSync(file, JSON.stringify(config));
  return preview(await project.stack(stack), { policyPacks: ["./policy"], policyPackConfigs: [file] });
}

/** A violation as [level, policy, "type: name"] ("warning" is how the engine reports an advisory policy). */
function reported(run: EngineRun): string[][] {
  return run.policies.map((event: PolicyEvent) => {
    const urn = event.resourceUrn ?? "";
    const type = urn.split("::")[2]?.split("$").pop() ?? "";
    return [
      event.enforcementLevel === "warning" ? "advisory" : event.enforcementLevel,
      event.policyName,
      `${type}: ${urn.split("::").pop()}`,
    ];
  });
}

/** Every policy message, for the wording checks. */
const messages = (run: EngineRun) => run.policies.map((event) => event.message).join("\n");

beforeAll(() => {
  project = pulumiProject();
}, 1_500_000);

afterAll(() => project?.remove());

/** A preview runs the program (~5 s) and starts the pack (ts-node type-checks it, ~5 s cold). */
const PREVIEW_TIMEOUT_MS = 120_000;

describe("pulumi preview --policy-pack ./policy (real engine)", () => {
  it(
    "fails a stack that breaks the rules, naming each policy, the resource and the value; an advisory one only warns",
    async () => {
      const base = stackValues("cpu-ddr5");
      const values = offline({
        ...base,
        serving: {
          ...(base.serving as object),
          bindAddress: "0.0.0.0",
          port: 8443,
          allowedCidrs: ["0.0.0.0/0"],
          allowPublic: true,
        },
        deployment: { purgeModels: true },
      });
      await initStack("policy-violating", values, { "kimi-kit:production": "true" });
      const cost = buildPlan("cpu-ddr5", loadStackConfig("cpu-ddr5")).cost!.monthlyUsd;
      const preview = await previewWithPolicies("policy-violating", {
        "kimi-monthly-cost-cap": { maxMonthlyUsd: 100 },
        "kimi-endpoint-exposure": { enforcementLevel: "advisory" },
      });
      expect(preview.ok, preview.error).toBe(false);
      const lines = reported(preview);
      expect(lines).toContainEqual(["mandatory", "kimi-monthly-cost-cap", "kimi-kit:index:LlmDeployment: kimi"]);
      expect(messages(preview)).toContain(
        `kimi-monthly-cost-cap: kimi-kit:index:LlmDeployment kimi: found a planned monthly cost of $${cost.toFixed(2)} for stack policy-violating; allowed: at most $100.00 a month (maxMonthlyUsd)`,
      );
      expect(lines).toContainEqual(["mandatory", "kimi-production-keeps-shards", "kimi-kit:index:LlmDeployment: kimi"]);
      expect(messages(preview)).toContain(
        "found deployment.purgeModels: true in production stack policy-violating (stack tag kimi-kit:production=true)",
      );
      // The committed cpu-ddr5 pins no host key: every remote step is reported, by name and endpoint.
      expect(lines).toContainEqual([
        "mandatory",
        "kimi-host-key-pinned",
        "pulumi-nodejs:dynamic/kimi-kit:SshCommand: kimi-prep-probe",
      ]);
      expect(messages(preview)).toContain(
        "kimi-host-key-pinned: pulumi-nodejs:dynamic/kimi-kit:SshCommand kimi-prep-probe: found an SSH connection to root@203.0.113.10:22 with no connection.hostKey",
      );
      expect(lines).toContainEqual(["advisory", "kimi-endpoint-exposure", "kimi-kit:index:LlmDeployment: kimi"]);
      expect(messages(preview)).toContain(
        "found an endpoint on 0.0.0.0:8443 (beyond loopback) with an allow-list admitting the whole internet (0.0.0.0/0)",
      );
      expect(preview.eventsJson).not.toContain(API_KEY);
    },
    PREVIEW_TIMEOUT_MS,
  );

  it(
    "fails a split the planner accepts only under the stack's lowered thresholds, with workers outside the platform's range",
    async () => {
      const base = stackValues("k3-q2-split");
      const values = offline({
        ...base,
        projection: {
          ...(base.projection as object),
          minDecodeTokensPerSecond: 1,
          compareSplitWithCatalogHosts: false,
        },
      });
      await initStack("policy-split", values);
      const preview = await previewWithPolicies("policy-split", {
        "kimi-rpc-private-address": { privateCidrs: ["10.20.0.0/16"] },
        "kimi-host-key-pinned": "disabled",
      });
      expect(preview.ok, preview.error).toBe(false);
      const lines = reported(preview);
      expect(lines).toContainEqual(["mandatory", "kimi-model-tier-verdict", "kimi-kit:index:LlmDeployment: kimi"]);
      expect(messages(preview)).toMatch(
        /kimi-model-tier-verdict: kimi-kit:index:LlmDeployment kimi: found unsloth\/Kimi-K3-GGUF UD-Q2_K_XL, accepted only because the stack relaxed projection\.minDecodeTokensPerSecond to 1 \(kit: 2\) and projection\.compareSplitWithCatalogHosts to false \(kit: true\); at the kit's thresholds the planner refuses it: .*projects 1\.\d+ tok\/s decode/,
      );
      expect(messages(preview)).toContain(
        "kimi-rpc-private-address: kimi-kit:index:LlmDeployment kimi: found RPC worker worker-1 (hosts[1].privateAddress) listening on 10.30.0.2:50052; allowed: an address inside 10.20.0.0/16 (privateCidrs)",
      );
      expect(lines.filter(([, policy]) => policy === "kimi-host-key-pinned")).toEqual([]);
    },
    PREVIEW_TIMEOUT_MS,
  );

  it(
    "passes a stack within every rule",
    async () => {
      const base = stackValues("cpu-ddr5");
      const host = base.host as { ssh: Record<string, unknown> };
      const values = offline({ ...base, host: { ...host, ssh: { ...host.ssh, hostPublicKey: HOST_KEY } } });
      await initStack("policy-clean", values, { "kimi-kit:production": "true" });
      // The example config platform teams start from: every policy mandatory, a $2,500 cap.
      const example = JSON.parse(
        readFileSync(join(__dirname, "..", "..", "policy", "policy-config.example.json"), "utf8"),
      ) as Record<string, unknown>;
      const preview = await previewWithPolicies("policy-clean", example);
      expect(preview.ok, preview.error).toBe(true);
      expect(reported(preview)).toEqual([]);
      // The engine's summary names the packs it ran ("name|kind|path" → version).
      const packs = Object.entries(preview.policyPacks).filter(
        ([name]) => name.split("|")[0] === "kimi-kit-guardrails",
      );
      expect(packs.map(([, version]) => version)).toEqual([expect.stringMatching(/0\.1\.0$/)]);
      expect(preview.steps.map((step) => step.type)).toContain("kimi-kit:index:LlmDeployment");
    },
    PREVIEW_TIMEOUT_MS,
  );
});
