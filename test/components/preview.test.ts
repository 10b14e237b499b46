/**
 * `pulumi preview` under mocks (dryRun): the cloud stack registers nothing AWS-specific and still
 * exports the plan; the program (index.ts) runs from `kimi-kit:*` config without any connection.
 */
import { beforeAll, expect, it } from "vitest";
import * as pulumi from "@pulumi/pulumi";
import { readStackValues } from "../../planner/stack-file";
import { parseStackConfig } from "../../planner/config";
import { buildPlan } from "../../planner/plan";
import { deployStack } from "../../components/llm-deployment";
import { HOST_KEY, installMocks, isSecret, promiseOf, registered, settle } from "./mocks";

beforeAll(() => installMocks(true));

it("aws-r7i previews the plan and the AWS resources it would create, before any instance exists", async () => {
  const raw = readStackValues("aws-r7i");
  const plan = buildPlan("aws-r7i", parseStackConfig("aws-r7i", raw));
  const deployment = deployStack("aws-r7i", raw, { apiKey: pulumi.secret("sk-preview") }, "cloud");
  expect(await promiseOf(deployment.planSummary)).toMatchObject({
    mode: plan.placement.mode,
    args: plan.llamaServerArgs,
    image: plan.image,
  });
  expect(await promiseOf(deployment.monthlyCostUsd)).toBe(plan.cost!.monthlyUsd);
  expect(await isSecret(deployment.apiKey)).toBe(true);
  await settle();
  const types = new Set(
    registered.filter((resource) => resource.name.startsWith("cloud")).map((resource) => resource.type),
  );
  for (const type of [
    "kimi-kit:host:CloudHost",
    "aws:ec2/instance:Instance",
    "aws:ec2/securityGroup:SecurityGroup",
    "aws:ebs/volume:Volume",
    "aws:ec2/volumeAttachment:VolumeAttachment",
    "kimi-kit:serving:LlamaServer",
  ]) {
    expect(types).toContain(type);
  }
});

it("index.ts runs a bare-metal stack from config in preview", async () => {
  const raw = structuredClone(readStackValues("cpu-ddr5"));
  (raw.host as { ssh: Record<string, unknown> }).ssh.hostPublicKey = HOST_KEY;
  const config: Record<string, string> = {};
  for (const [key, value] of Object.entries(raw)) config[`kimi-kit:${key}`] = JSON.stringify(value);
  config["kimi-kit:apiKey"] = "sk-from-config-0123456789abcdefghijk";
  pulumi.runtime.setAllConfig(config, ["kimi-kit:apiKey"]);
  const program = (await import("../../index.js")) as typeof import("../../index.js");
  expect(await promiseOf(program.plan)).toMatchObject({ mode: "cpu-only" });
  expect(await promiseOf(program.endpoint)).toBe("http://127.0.0.1:8080/v1");
  expect(await isSecret(program.apiKey)).toBe(true);
  await settle();
  const types = registered.filter((resource) => resource.name.startsWith("kimi")).map((resource) => resource.type);
  expect(types).toContain("kimi-kit:serving:LlamaServer");
  expect(types).toContain("docker:index/container:Container");
  expect(
    JSON.stringify(
      registered.map((resource) =>
        JSON.parse(JSON.stringify(resource.inputs, (key, value: unknown) => (key === "stdin" ? undefined : value))),
      ),
    ),
  ).not.toContain("sk-from-config");
});

it("a bare-metal stack previews before its host key is known (the host may not exist yet)", async () => {
  const raw = structuredClone(readStackValues("rtx3090x4"));
  delete (raw.host as { ssh: Record<string, unknown> }).ssh.hostPublicKey;
  const plan = buildPlan("rtx3090x4", parseStackConfig("rtx3090x4", raw));
  const deployment = deployStack("rtx3090x4", raw, { apiKey: pulumi.secret("sk-preview-2") }, "nohostkey");
  expect(await promiseOf(deployment.projectedDecodeTokensPerSecond)).toBe(plan.projection.decodeTokensPerSecond);
  await settle();
  const types = registered.filter((resource) => resource.name.startsWith("nohostkey")).map((resource) => resource.type);
  expect(types).toContain("kimi-kit:serving:LlamaServer");
  expect(types).toContain("kimi-kit:model:GgufShards");
});

it("a fleet previews its replicas, gateway, teams and the fleet's monthly cost before any host exists", async () => {
  const raw = structuredClone(readStackValues("cpu-ddr5-fleet"));
  const plan = buildPlan("cpu-ddr5-fleet", parseStackConfig("cpu-ddr5-fleet", raw));
  const deployment = deployStack("cpu-ddr5-fleet", raw, {}, "fleetpreview");
  const summary = await promiseOf(deployment.planSummary);
  expect(summary.fleet).toMatchObject({
    replicas: 2,
    hosts: [{ id: "replica-1" }, { id: "replica-2" }],
    monthlyUsd: plan.fleet!.cost!.monthlyUsd,
  });
  expect(summary.teams?.map((team) => team.name)).toEqual(["platform", "research"]);
  expect(await promiseOf(deployment.monthlyCostUsd)).toBe(2 * plan.cost!.monthlyUsd);
  await settle();
  const components = registered
    .filter((resource) => resource.name.startsWith("fleetpreview"))
    .map((resource) => `${resource.type} ${resource.name}`);
  expect(components).toEqual(
    expect.arrayContaining([
      "kimi-kit:fleet:Replica fleetpreview-replica-1",
      "kimi-kit:fleet:Replica fleetpreview-replica-2",
      "kimi-kit:serving:Gateway fleetpreview-gateway",
    ]),
  );
});
