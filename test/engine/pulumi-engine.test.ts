/**
 * The real Pulumi engine (CLI and Node.js language host built from Go modules by
 * tools/install-pulumi.sh, cached outside the clone) running this program with the file backend.
 * Resource plugins come only from that bin dir: automatic plugin acquisition is off.
 * What runs depends on which plugins could be built here (the README lists them):
 * - a refused stack fails its preview before creating anything, with the planner's reason;
 * - the cloud stack's program runs; its preview needs the aws plugin (not buildable here) and names it;
 * - a bare-metal stack previews when the command and docker plugins exist, and otherwise fails naming the missing one.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { pulumiProject, type PulumiProject } from "../support/pulumi-cli";
import { buildPlan } from "../../planner/plan";
import { loadStackConfig } from "../../planner/stack-file";

let project: PulumiProject;
let bin: string;
const pulumi = (args: string[], input?: string) => project.run(args, input);

beforeAll(() => {
  project = pulumiProject();
  bin = project.bin;
}, 1_500_000);

afterAll(() => project?.remove());

describe("pulumi CLI on this program (file backend, no plugin downloads)", () => {
  it("previews a refused stack as a failure with the planner's reason, before creating anything", async () => {
    expect((await pulumi(["stack", "init", "cpu-ddr5-q4"])).status).toBe(0);
    const preview = await pulumi(["preview", "--stack", "cpu-ddr5-q4"]);
    expect(preview.status).not.toBe(0);
    expect(preview.output).toMatch(/UD-Q4_K_XL does not fit on .*short by/);
    expect(preview.output).not.toMatch(/^\s+at .*\.(ts|js):\d+/m);
    const state = await pulumi(["stack", "export", "--stack", "cpu-ddr5-q4"]);
    expect(state.output).not.toContain("kimi-kit:index:LlmDeployment");
  });

  it("runs the cloud stack's program: its preview needs the aws plugin, and names it when missing", async () => {
    expect((await pulumi(["stack", "init", "aws-r7i"])).status).toBe(0);
    expect(
      (
        await pulumi([
          "config",
          "set",
          "--secret",
          "--stack",
          "aws-r7i",
          "kimi-kit:apiKey",
          "sk-engine-preview-0123456789abcdefghij",
        ])
      ).status,
    ).toBe(0);
    expect(
      (
        await pulumi([
          "config",
          "set",
          "--path",
          "--stack",
          "aws-r7i",
          "kimi-kit:deployment.remoteExecutor",
          "kimi-dynamic",
        ])
      ).status,
    ).toBe(0);
    const preview = await pulumi(["preview", "--stack", "aws-r7i"]);
    expect(preview.output).toContain("kimi-kit:host:CloudHost");
    expect(preview.output).not.toContain("sk-engine-preview");
    if (existsSync(join(bin, "pulumi-resource-aws"))) {
      expect(preview.status, preview.output).toBe(0);
      expect(preview.output).toContain("aws:ec2/instance:Instance");
    } else {
      expect(preview.status).not.toBe(0);
      expect(preview.output).toMatch(/no resource plugin 'pulumi-resource-aws' found/);
    }
  });

  it("previews a bare-metal stack: with the default executors when their plugins exist, otherwise naming the missing one", async () => {
    expect((await pulumi(["stack", "init", "cpu-ddr5"])).status).toBe(0);
    expect(
      (
        await pulumi([
          "config",
          "set",
          "--secret",
          "--stack",
          "cpu-ddr5",
          "kimi-kit:apiKey",
          "sk-engine-preview-0123456789abcdefghij",
        ])
      ).status,
    ).toBe(0);
    const preview = await pulumi(["preview", "--stack", "cpu-ddr5"]);
    if (existsSync(join(bin, "pulumi-resource-command")) && existsSync(join(bin, "pulumi-resource-docker"))) {
      expect(preview.status, preview.output).toBe(0);
      expect(preview.output).toContain("command:remote:Command");
    } else {
      expect(preview.status).not.toBe(0);
      expect(preview.output).toMatch(/no resource plugin 'pulumi-resource-(command|docker)' found/);
      // The program itself ran: the planner's components were registered before the engine needed a plugin.
      expect(preview.output).toContain("kimi-kit:index:LlmDeployment");
    }
  });

  it("previews cpu-ddr5 with no host at all through the kit's own ssh executor and the docker-CLI path", async () => {
    expect(
      (
        await pulumi([
          "config",
          "set",
          "--path",
          "--stack",
          "cpu-ddr5",
          "kimi-kit:deployment.remoteExecutor",
          "kimi-dynamic",
        ])
      ).status,
    ).toBe(0);
    expect(
      (
        await pulumi([
          "config",
          "set",
          "--path",
          "--stack",
          "cpu-ddr5",
          "kimi-kit:deployment.containerEngine",
          "docker-cli",
        ])
      ).status,
    ).toBe(0);
    const preview = await pulumi(["preview", "--stack", "cpu-ddr5"]);
    expect(preview.status, preview.output).toBe(0);
    for (const name of ["kimi-prep-probe", "kimi-shards-fetch", "kimi-server-container", "kimi-smoke"])
      expect(preview.output).toContain(name);
    // The stack output is the plan's own projection (index.ts exports what buildPlan projects).
    const exported = /projectedDecodeTokensPerSecond\s*:\s*(\d+\.\d+)/.exec(preview.output);
    expect(exported, preview.output).not.toBeNull();
    expect(Number(exported![1])).toBeCloseTo(
      buildPlan("cpu-ddr5", loadStackConfig("cpu-ddr5")).projection.decodeTokensPerSecond,
      6,
    );
    expect(preview.output).toMatch(/host\.ssh\.hostPublicKey is not set/);
    expect(preview.output).not.toContain("sk-engine-preview");
  });
  it("previews the fleet stack with no host at all: replicas, gateway, Prometheus, the fleet's cost and the teams", async () => {
    expect((await pulumi(["stack", "init", "cpu-ddr5-fleet"])).status).toBe(0);
    for (const [key, value] of [
      ["kimi-kit:deployment.remoteExecutor", "kimi-dynamic"],
      ["kimi-kit:deployment.containerEngine", "docker-cli"],
    ]) {
      expect((await pulumi(["config", "set", "--path", "--stack", "cpu-ddr5-fleet", key!, value!])).status).toBe(0);
    }
    const preview = await pulumi(["preview", "--stack", "cpu-ddr5-fleet"]);
    expect(preview.status, preview.output).toBe(0);
    for (const name of [
      "kimi-replica-1-server-container",
      "kimi-replica-2-usage",
      "kimi-gateway-key-platform",
      "kimi-gateway-haproxy",
      "kimi-monitoring-prometheus",
    ])
      expect(preview.output).toContain(name);
    const plan = buildPlan("cpu-ddr5-fleet", loadStackConfig("cpu-ddr5-fleet"));
    const cost = /monthlyCostUsd\s*:\s*(\d+\.\d+)/.exec(preview.output);
    expect(cost, preview.output).not.toBeNull();
    expect(Number(cost![1])).toBeCloseTo(plan.fleet!.cost!.monthlyUsd, 6);
    expect(preview.output).toMatch(/hosts\[0\]\.ssh\.hostPublicKey is not set/);
  });
});
