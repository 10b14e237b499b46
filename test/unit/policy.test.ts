/**
 * The policy pack's policies (policy/policies.ts), called as the analyzer calls them: a
 * ResourceValidationArgs of @pulumi/policy's shape (type, name, URN, inputs behind the same
 * unknown-checking proxy the analyzer server puts around them, stack tags, getConfig) and a
 * reportViolation that collects the messages. Then the facts the kit's LlmDeployment really
 * registers (components/guardrail-facts.ts, under Pulumi mocks) judged by the same policies.
 * The real engine running the pack is test/engine/policy-pack.test.ts.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import * as pulumi from "@pulumi/pulumi";
import { unknownCheckingProxy, type ResourceValidationArgs, type ResourceValidationPolicy } from "@pulumi/policy";
import { FACTS_PROPERTY, LLM_DEPLOYMENT_TYPE, readFacts, type GuardrailFacts } from "../../policy/facts";
import {
  costCapFor,
  COST_CAP_DEFAULTS,
  endpointExposurePolicy,
  guardrailFactsPolicy,
  hostKeyPinnedPolicy,
  modelTierVerdictPolicy,
  monthlyCostCapPolicy,
  policies,
  POLICY,
  productionKeepsShardsPolicy,
  rpcPrivateAddressPolicy,
  secretsEncryptedPolicy,
  stackOfUrn,
} from "../../policy/policies";
import { inCidr, isLoopback, isWholeInternet } from "../../policy/net";
import { planFacts } from "../../components/guardrail-facts";
// Importing a component registers nothing; resources are created only after the mocks are in place.
import { LlmDeployment } from "../../components/llm-deployment";
import { readStackValues } from "../../planner/stack-file";
import { parseStackConfig } from "../../planner/config";
import { buildPlan } from "../../planner/plan";
import { HOST_KEY, installMocks, promiseOf, registered, settle } from "../components/mocks";
import { unwrapSecrets } from "../support/rpc-secrets";

/** The sentinel the engine sends for a value not known yet (what @pulumi/policy's proxy checks for). */
const UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9";

interface Call {
  type: string;
  name: string;
  props: Record<string, unknown>;
  stack?: string;
  tags?: Record<string, string>;
  config?: Record<string, unknown>;
}

/** Runs one policy on one resource as the analyzer server does; returns the violation messages. */
async function violations(policy: ResourceValidationPolicy, call: Call): Promise<string[]> {
  const messages: string[] = [];
  const props = unknownCheckingProxy(call.props) as Record<string, unknown>;
  const args: ResourceValidationArgs = {
    type: call.type,
    name: call.name,
    urn: `urn:pulumi:${call.stack ?? "dev"}::kimi-kit::${call.type}::${call.name}`,
    props,
    opts: {
      protect: false,
      ignoreChanges: [],
      aliases: [],
      customTimeouts: { createSeconds: 0, updateSeconds: 0, deleteSeconds: 0 },
      additionalSecretOutputs: [],
    },
    stackTags: new Map(Object.entries(call.tags ?? {})),
    isType: () => false,
    asType: () => undefined,
    getConfig: <T extends object>() => (call.config ?? {}) as T,
    notApplicable: (reason?: string) => {
      throw new Error(`not applicable: ${reason}`);
    },
  };
  const validations =
    policy.validateResource === undefined
      ? []
      : Array.isArray(policy.validateResource)
        ? policy.validateResource
        : [policy.validateResource];
  for (const validate of validations) await validate(args, (message) => messages.push(message));
  return messages;
}

function facts(overrides: Partial<GuardrailFacts> = {}): GuardrailFacts {
  return {
    version: 1,
    stack: "dev",
    model: { repo: "unsloth/Kimi-K2.6-GGUF", tier: "UD-Q2_K_XL" },
    verdict: { fits: true, refusal: null },
    verdictAtKitThresholds: null,
    monthlyCostUsd: 177.21,
    serving: { bindAddress: "127.0.0.1", port: 8080, tls: null, allowedCidrs: [], allowPublic: false },
    rpcWorkers: [],
    deployment: { purgeModels: false },
    secrets: {
      apiKey: "secret",
      sshPrivateKey: "secret",
      huggingFaceToken: "absent",
      tlsCertificate: "absent",
      tlsPrivateKey: "absent",
    },
    ...overrides,
  };
}

const deployment = (value: GuardrailFacts, extra: Omit<Call, "type" | "name" | "props"> = {}): Call => ({
  type: LLM_DEPLOYMENT_TYPE,
  name: "kimi",
  props: { [FACTS_PROPERTY]: value },
  ...extra,
});

describe("the facts' reader", () => {
  it("accepts the facts the kit writes and names the first malformed field", () => {
    expect(readFacts({ [FACTS_PROPERTY]: facts() })).toEqual({ facts: facts() });
    expect(readFacts({})).toEqual({ problem: expect.stringContaining("no guardrails input") });
    expect(readFacts({ [FACTS_PROPERTY]: { ...facts(), version: 2 } })).toEqual({
      problem: "guardrails.version is 2; this pack reads version 1",
    });
    expect(readFacts({ [FACTS_PROPERTY]: { ...facts(), monthlyCostUsd: "177" } })).toEqual({
      problem: "guardrails.monthlyCostUsd is missing or malformed",
    });
    expect(readFacts({ [FACTS_PROPERTY]: { ...facts(), serving: { ...facts().serving, port: 0 } } })).toEqual({
      problem: "guardrails.serving is missing or malformed",
    });
    expect(readFacts({ [FACTS_PROPERTY]: { ...facts(), secrets: { ...facts().secrets, apiKey: "maybe" } } })).toEqual({
      problem: "guardrails.secrets is missing or malformed",
    });
  });

  it("kimi-guardrail-facts fails an LlmDeployment without readable facts, and ignores other resources", async () => {
    const [message] = await violations(guardrailFactsPolicy, { type: LLM_DEPLOYMENT_TYPE, name: "kimi", props: {} });
    expect(message).toMatch(
      /^kimi-guardrail-facts: kimi-kit:index:LlmDeployment kimi: found no guardrails input .*; allowed: /,
    );
    expect(await violations(guardrailFactsPolicy, deployment(facts()))).toEqual([]);
    expect(await violations(guardrailFactsPolicy, { type: "command:remote:Command", name: "x", props: {} })).toEqual(
      [],
    );
  });

  it("every other policy stays quiet on unreadable facts (the facts policy reports them once)", async () => {
    for (const policy of policies.filter((entry) => entry.name !== POLICY.facts)) {
      expect(
        await violations(policy, {
          type: LLM_DEPLOYMENT_TYPE,
          name: "kimi",
          props: { [FACTS_PROPERTY]: { version: 1 } },
          config: { maxMonthlyUsd: 1 },
        }),
      ).toEqual([]);
    }
  });

  it("the example config names only the pack's policies, levels and settings each policy declares", () => {
    const example = JSON.parse(
      readFileSync(join(__dirname, "..", "..", "policy", "policy-config.example.json"), "utf8"),
    ) as Record<string, unknown>;
    expect(Object.keys(example).sort()).toEqual(policies.map((policy) => policy.name).sort());
    for (const policy of policies) {
      const entry = example[policy.name];
      const settings = typeof entry === "string" ? { enforcementLevel: entry } : (entry as Record<string, unknown>);
      expect(["mandatory", "advisory", "disabled"], policy.name).toContain(settings.enforcementLevel);
      const declared = Object.keys(policy.configSchema?.properties ?? {});
      for (const key of Object.keys(settings).filter((name) => name !== "enforcementLevel"))
        expect(declared, `${policy.name}.${key}`).toContain(key);
    }
  });

  it("the pack's policies have unique names and no reserved config keys", () => {
    const names = policies.map((policy) => policy.name);
    expect(new Set(names).size).toBe(names.length);
    expect(names).toEqual(Object.values(POLICY));
    for (const policy of policies)
      expect(Object.keys(policy.configSchema?.properties ?? {})).not.toContain("enforcementLevel");
  });
});

describe("kimi-monthly-cost-cap", () => {
  it("reports a planned cost above the cap with both figures, and passes one at or below it", async () => {
    expect(await violations(monthlyCostCapPolicy, deployment(facts(), { config: { maxMonthlyUsd: 100 } }))).toEqual([
      "kimi-monthly-cost-cap: kimi-kit:index:LlmDeployment kimi: found a planned monthly cost of $177.21 for stack dev; allowed: at most $100.00 a month (maxMonthlyUsd)",
    ]);
    expect(await violations(monthlyCostCapPolicy, deployment(facts(), { config: { maxMonthlyUsd: 177.21 } }))).toEqual(
      [],
    );
    expect(await violations(monthlyCostCapPolicy, deployment(facts()))).toEqual([]);
  });

  it("takes the stack's own cap first, then its team's (stack tag), then the default", async () => {
    const config = { maxMonthlyUsd: 1000, maxMonthlyUsdByStack: { prod: 150 }, maxMonthlyUsdByTeam: { search: 120 } };
    const [byStack] = await violations(
      monthlyCostCapPolicy,
      deployment(facts(), { stack: "prod", tags: { "kimi-kit:team": "search" }, config }),
    );
    expect(byStack).toContain("allowed: at most $150.00 a month (maxMonthlyUsdByStack.prod)");
    const [byTeam] = await violations(
      monthlyCostCapPolicy,
      deployment(facts(), { stack: "staging", tags: { "kimi-kit:team": "search" }, config }),
    );
    expect(byTeam).toContain(
      "allowed: at most $120.00 a month (maxMonthlyUsdByTeam.search (stack tag kimi-kit:team=search))",
    );
    expect(
      await violations(
        monthlyCostCapPolicy,
        deployment(facts(), { stack: "staging", tags: { "kimi-kit:team": "other" }, config }),
      ),
    ).toEqual([]);
    expect(
      costCapFor("x", new Map([["owner", "search"]]), { ...COST_CAP_DEFAULTS, ...config, teamTag: "owner" }),
    ).toEqual({ cap: 120, source: "maxMonthlyUsdByTeam.search (stack tag owner=search)" });
  });

  it("under a cap, a stack without costs is reported: there is no figure to compare", async () => {
    const [message] = await violations(
      monthlyCostCapPolicy,
      deployment(facts({ monthlyCostUsd: null }), { config: { maxMonthlyUsd: 100 } }),
    );
    expect(message).toBe(
      "kimi-monthly-cost-cap: kimi-kit:index:LlmDeployment kimi: found no monthly cost for stack dev (it sets no kimi-kit:costs); allowed: at most $100.00 a month (maxMonthlyUsd), which needs kimi-kit:costs so the plan prices the stack",
    );
  });
});

describe("kimi-endpoint-exposure", () => {
  const exposed = (serving: Partial<GuardrailFacts["serving"]>) =>
    facts({ serving: { ...facts().serving, ...serving } });

  it("passes loopback, and a public listener with TLS and a narrow allow-list", async () => {
    expect(await violations(endpointExposurePolicy, deployment(facts()))).toEqual([]);
    expect(await violations(endpointExposurePolicy, deployment(exposed({ bindAddress: "127.0.0.2" })))).toEqual([]);
    expect(
      await violations(
        endpointExposurePolicy,
        deployment(
          exposed({ bindAddress: "0.0.0.0", port: 8443, tls: "internal-ca", allowedCidrs: ["203.0.113.0/24"] }),
        ),
      ),
    ).toEqual([]);
  });

  it("reports the whole internet unless allowed, a missing allow-list and missing TLS, naming the values", async () => {
    const open = exposed({
      bindAddress: "0.0.0.0",
      port: 8443,
      tls: "internal-ca",
      allowedCidrs: ["0.0.0.0/0"],
      allowPublic: true,
    });
    expect(await violations(endpointExposurePolicy, deployment(open))).toEqual([
      'kimi-endpoint-exposure: kimi-kit:index:LlmDeployment kimi: found an endpoint on 0.0.0.0:8443 (beyond loopback) with an allow-list admitting the whole internet (0.0.0.0/0) [serving.tls internal-ca, serving.allowedCidrs ["0.0.0.0/0"]]; allowed: serving.bindAddress 127.0.0.1, or beyond loopback only with TLS (serving.tls.source internal-ca or secrets) and a serving.allowedCidrs narrower than /0',
    ]);
    expect(
      await violations(endpointExposurePolicy, deployment(open, { config: { allowWholeInternet: true } })),
    ).toEqual([]);
    const [bare] = await violations(
      endpointExposurePolicy,
      deployment(exposed({ bindAddress: "198.51.100.7", tls: null, allowedCidrs: [] })),
    );
    expect(bare).toContain("found an endpoint on 198.51.100.7:8080 (beyond loopback) with no TLS and no allow-list");
  });

  it("holds the TLS source to the platform's list", async () => {
    const [message] = await violations(
      endpointExposurePolicy,
      deployment(exposed({ bindAddress: "0.0.0.0", tls: "internal-ca", allowedCidrs: ["10.0.0.0/8"] }), {
        config: { allowedTlsSources: ["secrets"] },
      }),
    );
    expect(message).toContain("with TLS from internal-ca [serving.tls internal-ca");
    expect(message).toContain(
      "allowed: serving.bindAddress 127.0.0.1, or beyond loopback only with TLS (serving.tls.source secrets)",
    );
  });
});

describe("kimi-host-key-pinned", () => {
  const step = (type: string, connection: unknown): Call => ({
    type,
    name: "kimi-prep-probe",
    props: { connection, create: "true" },
  });
  const pinned = { host: "203.0.113.10", port: 22, user: "root", hostKey: HOST_KEY };

  it("reports each remote step, on either executor, that connects without a pinned host key", async () => {
    const unpinned = { host: "203.0.113.10", port: 2222, user: "root" };
    for (const type of [
      "command:remote:Command",
      "command:remote:CopyToRemote",
      "pulumi-nodejs:dynamic/kimi-kit:SshCommand",
    ]) {
      const [message] = await violations(hostKeyPinnedPolicy, step(type, unpinned));
      expect(message).toMatch(
        new RegExp(
          `^kimi-host-key-pinned: ${type.replace(/[/.]/g, "\\$&")} kimi-prep-probe: found an SSH connection to root@203\\.0\\.113\\.10:2222 with no connection\\.hostKey; allowed: a pinned host key`,
        ),
      );
      expect(await violations(hostKeyPinnedPolicy, step(type, pinned))).toEqual([]);
    }
  });

  it("checks the bastion too", async () => {
    const [message] = await violations(
      hostKeyPinnedPolicy,
      step("command:remote:Command", { ...pinned, proxy: { host: "bastion.example", user: "jump" } }),
    );
    expect(message).toContain("found an SSH connection to bastion jump@bastion.example:22 with no connection.hostKey");
  });

  it("leaves a connection not known yet (a cloud host in preview) to `up`", async () => {
    expect(await violations(hostKeyPinnedPolicy, step("command:remote:Command", UNKNOWN))).toEqual([]);
    expect(
      await violations(hostKeyPinnedPolicy, step("command:remote:Command", { ...pinned, hostKey: UNKNOWN })),
    ).toEqual([]);
  });

  it("reports a docker provider over ssh that does not check the host key", async () => {
    const provider = (sshOpts: unknown, host = "ssh://root@203.0.113.10:22"): Call => ({
      type: "pulumi:providers:docker",
      name: "kimi-server-docker",
      props: { host, sshOpts },
    });
    const kit = [
      "-o",
      "StrictHostKeyChecking=yes",
      "-o",
      "UserKnownHostsFile=/root/.ssh/kimi-kit/dev/known_hosts",
      "-o",
      "IdentitiesOnly=yes",
    ];
    expect(await violations(hostKeyPinnedPolicy, provider(kit))).toEqual([]);
    // Provider inputs may arrive JSON-encoded.
    expect(await violations(hostKeyPinnedPolicy, provider(JSON.stringify(kit)))).toEqual([]);
    const [message] = await violations(
      hostKeyPinnedPolicy,
      provider(["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]),
    );
    expect(message).toContain(
      'kimi-host-key-pinned: pulumi:providers:docker kimi-server-docker: found docker over ssh://root@203.0.113.10:22 with ssh options ["-o","StrictHostKeyChecking=no","-o","UserKnownHostsFile=/dev/null"]',
    );
    expect(await violations(hostKeyPinnedPolicy, provider([], "unix:///var/run/docker.sock"))).toEqual([]);
  });
});

describe("kimi-secrets-encrypted", () => {
  it("reports each kimi-kit secret that reached the deployment as plain text, by key", async () => {
    const plain = facts({ secrets: { ...facts().secrets, apiKey: "plaintext", tlsPrivateKey: "plaintext" } });
    expect(await violations(secretsEncryptedPolicy, deployment(plain))).toEqual([
      "kimi-secrets-encrypted: kimi-kit:index:LlmDeployment kimi: found kimi-kit:apiKey passed to the deployment as plain text; allowed: a Pulumi secret (`pulumi config set --secret kimi-kit:apiKey …`, or pulumi.secret(…) in a program), so it is encrypted in the state",
      "kimi-secrets-encrypted: kimi-kit:index:LlmDeployment kimi: found kimi-kit:tlsPrivateKey passed to the deployment as plain text; allowed: a Pulumi secret (`pulumi config set --secret kimi-kit:tlsPrivateKey …`, or pulumi.secret(…) in a program), so it is encrypted in the state",
    ]);
    expect(await violations(secretsEncryptedPolicy, deployment(facts()))).toEqual([]);
  });
});

describe("kimi-model-tier-verdict", () => {
  it("reports a tier the planner refuses, with the planner's reason", async () => {
    const refused = facts({
      model: { repo: "unsloth/Kimi-K2.6-GGUF", tier: "UD-Q4_K_XL" },
      verdict: { fits: false, refusal: "Kimi K2.6 UD-Q4_K_XL does not fit on … short by 201 GB." },
    });
    const [message] = await violations(modelTierVerdictPolicy, deployment(refused));
    expect(message).toBe(
      "kimi-model-tier-verdict: kimi-kit:index:LlmDeployment kimi: found unsloth/Kimi-K2.6-GGUF UD-Q4_K_XL, which the planner refuses: Kimi K2.6 UD-Q4_K_XL does not fit on … short by 201 GB.; allowed: a tier the planner accepts for these hosts (npm run plan -- --stack NAME lists the tiers that fit)",
    );
  });

  it("reports a split accepted only because the stack lowered the kit's thresholds, unless the platform allows that", async () => {
    const relaxed = facts({
      verdictAtKitThresholds: {
        fits: false,
        refusal: "projects 1.24 tok/s decode, below projection.minDecodeTokensPerSecond (2)",
        relaxed: ["projection.minDecodeTokensPerSecond to 1 (kit: 2)"],
      },
    });
    const [message] = await violations(modelTierVerdictPolicy, deployment(relaxed));
    expect(message).toContain(
      "accepted only because the stack relaxed projection.minDecodeTokensPerSecond to 1 (kit: 2); at the kit's thresholds the planner refuses it: projects 1.24 tok/s",
    );
    expect(
      await violations(modelTierVerdictPolicy, deployment(relaxed, { config: { allowRelaxedThresholds: true } })),
    ).toEqual([]);
    expect(
      await violations(
        modelTierVerdictPolicy,
        deployment(
          facts({
            verdictAtKitThresholds: {
              fits: true,
              refusal: null,
              relaxed: ["projection.compareSplitWithCatalogHosts to false (kit: true)"],
            },
          }),
        ),
      ),
    ).toEqual([]);
  });
});

describe("kimi-rpc-private-address", () => {
  const worker = (listenAddress: string) =>
    facts({ rpcWorkers: [{ id: "worker-1", configPath: "hosts[1]", listenAddress, port: 50052 }] });

  it("passes RFC 1918 by default and reports a public address or every interface", async () => {
    expect(await violations(rpcPrivateAddressPolicy, deployment(worker("10.20.0.2")))).toEqual([]);
    expect(await violations(rpcPrivateAddressPolicy, deployment(worker("203.0.113.11")))).toEqual([
      "kimi-rpc-private-address: kimi-kit:index:LlmDeployment kimi: found RPC worker worker-1 (hosts[1].privateAddress) listening on 203.0.113.11:50052; allowed: an address inside 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16 (privateCidrs); ggml-rpc-server has no authentication",
    ]);
    expect(await violations(rpcPrivateAddressPolicy, deployment(worker("0.0.0.0")))).toHaveLength(1);
  });

  it("holds workers to the platform's own private ranges, and refuses a malformed range", async () => {
    const [message] = await violations(
      rpcPrivateAddressPolicy,
      deployment(worker("10.30.0.2"), { config: { privateCidrs: ["10.20.0.0/16"] } }),
    );
    expect(message).toContain("listening on 10.30.0.2:50052; allowed: an address inside 10.20.0.0/16 (privateCidrs)");
    await expect(
      violations(
        rpcPrivateAddressPolicy,
        deployment(worker("10.30.0.2"), { config: { privateCidrs: ["10.20.0.0/99"] } }),
      ),
    ).rejects.toThrow("privateCidrs holds malformed CIDR blocks: 10.20.0.0/99");
  });
});

describe("kimi-production-keeps-shards", () => {
  const purging = facts({ deployment: { purgeModels: true } });

  it("reports purgeModels in a stack listed as production or tagged so, naming why", async () => {
    expect(
      await violations(
        productionKeepsShardsPolicy,
        deployment(purging, { stack: "prod", config: { productionStacks: ["prod"] } }),
      ),
    ).toEqual([
      "kimi-production-keeps-shards: kimi-kit:index:LlmDeployment kimi: found deployment.purgeModels: true in production stack prod (listed in productionStacks); allowed: deployment.purgeModels: false in a production stack (destroy keeps the shards)",
    ]);
    const [tagged] = await violations(
      productionKeepsShardsPolicy,
      deployment(purging, { stack: "eu-1", tags: { "kimi-kit:production": "true" } }),
    );
    expect(tagged).toContain("in production stack eu-1 (stack tag kimi-kit:production=true)");
  });

  it("lets other stacks purge, and production stacks keep", async () => {
    expect(
      await violations(
        productionKeepsShardsPolicy,
        deployment(purging, { stack: "dev", config: { productionStacks: ["prod"] } }),
      ),
    ).toEqual([]);
    expect(
      await violations(
        productionKeepsShardsPolicy,
        deployment(facts(), { stack: "prod", config: { productionStacks: ["prod"] } }),
      ),
    ).toEqual([]);
  });
});

describe("helpers", () => {
  it("reads the stack from a URN and classifies addresses", () => {
    expect(stackOfUrn("urn:pulumi:prod-eu::kimi-kit::kimi-kit:index:LlmDeployment::kimi")).toBe("prod-eu");
    expect(isLoopback("127.0.0.1")).toBe(true);
    expect(isLoopback("0.0.0.0")).toBe(false);
    expect(isWholeInternet("0.0.0.0/0")).toBe(true);
    expect(isWholeInternet("10.0.0.0/8")).toBe(false);
    expect(inCidr("172.31.255.255", "172.16.0.0/12")).toBe(true);
    expect(inCidr("172.32.0.1", "172.16.0.0/12")).toBe(false);
    expect(inCidr("not-an-ip", "10.0.0.0/8")).toBe(false);
  });
});

// ------------------------------------------------------------------ the facts the kit writes

const planOf = (stack: string, edit: (values: Record<string, unknown>) => void = () => {}) => {
  const values = structuredClone(readStackValues(stack));
  edit(values);
  return buildPlan(stack, parseStackConfig(stack, values));
};

describe("the facts the plan gives (components/guardrail-facts.ts)", () => {
  it("cpu-ddr5: the plan's own monthly cost and serving, nothing relaxed", () => {
    const plan = planOf("cpu-ddr5");
    const written = planFacts(plan);
    expect(written.monthlyCostUsd).toBe(plan.cost!.monthlyUsd);
    expect(written).toMatchObject({
      stack: "cpu-ddr5",
      model: { repo: "unsloth/Kimi-K2.6-GGUF", tier: "UD-Q2_K_XL" },
      verdict: { fits: true, refusal: null },
      verdictAtKitThresholds: null,
      rpcWorkers: [],
      deployment: { purgeModels: false },
    });
    expect(written.serving).toEqual({
      bindAddress: "127.0.0.1",
      port: 8080,
      tls: null,
      allowedCidrs: [],
      allowPublic: false,
    });
  });

  it("a public listener records its front door's TLS source and allow-list", () => {
    const plan = planOf("cpu-ddr5", (values) => {
      values.serving = { bindAddress: "0.0.0.0", port: 8443, allowedCidrs: ["203.0.113.0/24"] };
    });
    expect(planFacts(plan).serving).toEqual({
      bindAddress: "0.0.0.0",
      port: 8443,
      tls: "internal-ca",
      allowedCidrs: ["203.0.113.0/24"],
      allowPublic: false,
    });
  });

  it("a split records where each ggml-rpc-server listens, from its arguments", () => {
    expect(planFacts(planOf("cpu-ddr5-q4-split")).rpcWorkers).toEqual([
      { id: "worker-1", configPath: "hosts[1]", listenAddress: "10.20.0.2", port: 50052 },
    ]);
  });

  it("a split accepted only under the stack's lowered thresholds records the planner's verdict at the kit's", () => {
    const plan = planOf("k3-q2-split", (values) => {
      values.projection = {
        ...(values.projection as object),
        minDecodeTokensPerSecond: 1,
        compareSplitWithCatalogHosts: false,
      };
    });
    expect(plan.fits).toBe(true);
    const strict = planFacts(plan).verdictAtKitThresholds!;
    expect(strict.fits).toBe(false);
    expect(strict.relaxed).toEqual([
      "projection.minDecodeTokensPerSecond to 1 (kit: 2)",
      "projection.compareSplitWithCatalogHosts to false (kit: true)",
    ]);
    expect(strict.refusal).toMatch(
      /projects 1\.\d+ tok\/s decode at depth 4096, below projection\.minDecodeTokensPerSecond \(2\)/,
    );
  });
});

describe("what LlmDeployment registers, judged by the policies (Pulumi mocks, preview)", () => {
  beforeAll(() => installMocks(true));

  async function deploy(
    name: string,
    stack: string,
    options: { pin: boolean; apiKey: pulumi.Input<string> },
  ): Promise<Call[]> {
    const values = structuredClone(readStackValues(stack));
    const host = values.host as { ssh: Record<string, unknown> };
    if (options.pin) host.ssh.hostPublicKey = HOST_KEY;
    values.deployment = {
      ...(values.deployment as object | undefined),
      remoteExecutor: "kimi-dynamic",
      containerEngine: "docker-cli",
    };
    const created = new LlmDeployment(name, { stack, config: parseStackConfig(stack, values), apiKey: options.apiKey });
    await promiseOf(created.urn);
    await settle();
    return registered
      .filter((resource) => resource.name === name || resource.name.startsWith(`${name}-`))
      .map((resource) => ({
        type: resource.type,
        name: resource.name,
        props: unwrapSecrets(resource.inputs) as Record<string, unknown>,
        stack,
      }));
  }

  async function judge(calls: Call[], config: Record<string, Record<string, unknown>> = {}): Promise<string[]> {
    const all: string[] = [];
    for (const policy of policies)
      for (const call of calls) all.push(...(await violations(policy, { ...call, config: config[policy.name] ?? {} })));
    return all;
  }

  it("a pinned cpu-ddr5 with a secret key passes every policy; its facts carry the plan's cost", async () => {
    const calls = await deploy("pinned", "cpu-ddr5", {
      pin: true,
      apiKey: pulumi.secret("sk-policy-0123456789abcdefghijklmnop"),
    });
    const component = calls.find((call) => call.type === LLM_DEPLOYMENT_TYPE)!;
    const reading = readFacts(component.props);
    expect("facts" in reading && reading.facts.monthlyCostUsd).toBe(planOf("cpu-ddr5").cost!.monthlyUsd);
    expect("facts" in reading && reading.facts.secrets.apiKey).toBe("secret");
    expect(calls.filter((call) => call.type === "pulumi-nodejs:dynamic/kimi-kit:SshCommand").length).toBeGreaterThan(5);
    expect(await judge(calls, { [POLICY.cost]: { maxMonthlyUsd: 1000 } })).toEqual([]);
  });

  it("without a pinned key, a plain-text API key and a cap below its cost, the same deployment is reported", async () => {
    const calls = await deploy("unpinned", "cpu-ddr5", { pin: false, apiKey: "sk-policy-0123456789abcdefghijklmnop" });
    const found = await judge(calls, { [POLICY.cost]: { maxMonthlyUsd: 100 } });
    const steps = calls
      .filter((call) => call.type === "pulumi-nodejs:dynamic/kimi-kit:SshCommand")
      .map((call) => call.name);
    expect(found.filter((message) => message.startsWith(`${POLICY.hostKey}:`))).toHaveLength(steps.length);
    expect(found).toContain(
      `${POLICY.secrets}: kimi-kit:index:LlmDeployment unpinned: found kimi-kit:apiKey passed to the deployment as plain text; allowed: a Pulumi secret (\`pulumi config set --secret kimi-kit:apiKey …\`, or pulumi.secret(…) in a program), so it is encrypted in the state`,
    );
    expect(found.find((message) => message.startsWith(`${POLICY.cost}:`))).toMatch(
      /found a planned monthly cost of \$177\.21 for stack cpu-ddr5; allowed: at most \$100\.00/,
    );
  });
});
