/**
 * The real Pulumi engine (CLI and Node.js language host built from Go modules by
 * tools/install-pulumi.sh, cached outside the clone) running this program with the file backend,
 * driven through the Automation API (LocalWorkspace): steps, diagnostics and stack outputs are read
 * from the engine's typed events, not from the CLI's text.
 * Resource plugins come only from that bin dir: automatic plugin acquisition is off.
 * What runs depends on which plugins could be built here (the README lists them):
 * - a refused stack fails its preview before creating anything, with the planner's reason;
 * - the cloud stack's program runs; its preview needs the aws plugin (not buildable here) and names it;
 * - a bare-metal stack previews when the command and docker plugins exist, and otherwise fails naming the missing one.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { preview, pulumiProject, type PulumiProject } from "../support/pulumi-cli";
import { buildPlan } from "../../planner/plan";
import { loadStackConfig } from "../../planner/stack-file";

let project: PulumiProject;
let bin: string;
const KEY = "sk-engine-preview-0123456789abcdefghij";
const typesOf = (run: { steps: { type: string }[] }) => run.steps.map((step) => step.type);
const namesOf = (run: { steps: { urn: string }[] }) => run.steps.map((step) => step.urn.split("::").pop()!);

beforeAll(() => {
  project = pulumiProject();
  bin = project.bin;
}, 1_500_000);

afterAll(() => project?.remove());

describe("the Pulumi engine on this program (Automation API, file backend, no plugin downloads)", () => {
  it("previews a refused stack as a failure with the planner's reason, before creating anything", async () => {
    const stack = await project.stack("cpu-ddr5-q4");
    const run = await preview(stack);
    expect(run.ok).toBe(false);
    expect(run.diagnostics.join("\n")).toMatch(/UD-Q4_K_XL does not fit on .*short by/);
    expect(run.diagnostics.join("\n")).not.toMatch(/^\s+at .*\.(ts|js):\d+/m);
    expect(typesOf(run)).not.toContain("kimi-kit:index:LlmDeployment");
    const state = await stack.exportStack();
    expect(JSON.stringify(state.deployment)).not.toContain("kimi-kit:index:LlmDeployment");
  });

  it("runs the cloud stack's program: its preview needs the aws plugin, and names it when missing", async () => {
    const stack = await project.stack("aws-r7i");
    await stack.setConfig("kimi-kit:apiKey", { value: KEY, secret: true });
    await stack.setConfig("kimi-kit:deployment.remoteExecutor", { value: "kimi-dynamic" }, true);
    const run = await preview(stack);
    expect(typesOf(run)).toContain("kimi-kit:host:CloudHost");
    expect(run.eventsJson).not.toContain("sk-engine-preview");
    if (existsSync(join(bin, "pulumi-resource-aws"))) {
      expect(run.ok, run.error).toBe(true);
      expect(typesOf(run)).toContain("aws:ec2/instance:Instance");
    } else {
      expect(run.ok).toBe(false);
      expect(`${run.error}\n${run.diagnostics.join("\n")}`).toMatch(/no resource plugin 'pulumi-resource-aws' found/);
    }
  });

  it("previews a bare-metal stack: with the default executors when their plugins exist, otherwise naming the missing one", async () => {
    const stack = await project.stack("cpu-ddr5");
    await stack.setConfig("kimi-kit:apiKey", { value: KEY, secret: true });
    // The defaults, stated: another test of this stack switches them.
    await stack.setConfig("kimi-kit:deployment.remoteExecutor", { value: "command-plugin" }, true);
    await stack.setConfig("kimi-kit:deployment.containerEngine", { value: "docker-provider" }, true);
    const run = await preview(stack);
    if (existsSync(join(bin, "pulumi-resource-command")) && existsSync(join(bin, "pulumi-resource-docker"))) {
      expect(run.ok, run.error).toBe(true);
      expect(typesOf(run)).toContain("command:remote:Command");
    } else {
      expect(run.ok).toBe(false);
      expect(`${run.error}\n${run.diagnostics.join("\n")}`).toMatch(
        /no resource plugin 'pulumi-resource-(command|docker)' found/,
      );
      // The program itself ran: the planner's components were registered before the engine needed a plugin.
      expect(typesOf(run)).toContain("kimi-kit:index:LlmDeployment");
    }
  });

  it("previews cpu-ddr5 with no host at all through the kit's own ssh executor and the docker-CLI path", async () => {
    // Its own settings, whatever the test before left in the stack (the tests are independent).
    const stack = await project.stack("cpu-ddr5");
    await stack.setConfig("kimi-kit:apiKey", { value: KEY, secret: true });
    await stack.setConfig("kimi-kit:deployment.remoteExecutor", { value: "kimi-dynamic" }, true);
    await stack.setConfig("kimi-kit:deployment.containerEngine", { value: "docker-cli" }, true);
    const run = await preview(stack);
    expect(run.ok, run.error).toBe(true);
    for (const name of ["kimi-prep-probe", "kimi-shards-fetch", "kimi-server-container", "kimi-smoke"])
      expect(namesOf(run)).toContain(name);
    // Every step is a create: nothing exists yet (the summary's typed counts, and each step's op).
    expect(new Set(run.steps.map((step) => step.op))).toEqual(new Set(["create"]));
    expect(Object.keys(run.resourceChanges)).toEqual(["create"]);
    // The summary counts the program's resources; the stack itself is a step but not a change.
    expect(run.resourceChanges.create).toBe(run.steps.filter((step) => step.type !== "pulumi:pulumi:Stack").length);
    // The stack output is the plan's own projection (index.ts exports what buildPlan projects).
    expect(run.outputs.projectedDecodeTokensPerSecond).toBeCloseTo(
      buildPlan("cpu-ddr5", loadStackConfig("cpu-ddr5")).projection.decodeTokensPerSecond,
      6,
    );
    expect(run.diagnostics.join("\n")).toMatch(/host\.ssh\.hostPublicKey is not set/);
    expect(run.eventsJson).not.toContain("sk-engine-preview");
  });

  it("previews the fleet stack with no host at all: replicas, gateway, Prometheus, the fleet's cost and the teams", async () => {
    const stack = await project.stack("cpu-ddr5-fleet");
    await stack.setConfig("kimi-kit:deployment.remoteExecutor", { value: "kimi-dynamic" }, true);
    await stack.setConfig("kimi-kit:deployment.containerEngine", { value: "docker-cli" }, true);
    const run = await preview(stack);
    expect(run.ok, run.error).toBe(true);
    for (const name of [
      "kimi-replica-1-server-container",
      "kimi-replica-2-usage",
      "kimi-gateway-key-platform",
      "kimi-gateway-haproxy",
      "kimi-monitoring-prometheus",
    ])
      expect(namesOf(run)).toContain(name);
    const plan = buildPlan("cpu-ddr5-fleet", loadStackConfig("cpu-ddr5-fleet"));
    expect(run.outputs.monthlyCostUsd).toBeCloseTo(plan.fleet!.cost!.monthlyUsd, 6);
    expect(run.diagnostics.join("\n")).toMatch(/hosts\[0\]\.ssh\.hostPublicKey is not set/);
  });
});
