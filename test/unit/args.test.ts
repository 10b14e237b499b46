import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { KIT_FLAG_REASONS } from "../../planner/args";
import { flagRow } from "../../planner/flags";
import { buildPlan } from "../../planner/plan";
import { listStacks, loadStackConfig } from "../../planner/stack-file";

const help = readFileSync(join(__dirname, "..", "fixtures", "llama-server-help-v0.5.0.txt"), "utf8");

describe("llama-server arguments for the pinned release", () => {
  it("uses only flags and env names that llama-server v0.5.0 --help lists", () => {
    for (const [flag] of KIT_FLAG_REASONS) {
      expect(help, flag).toMatch(new RegExp(`(^|[ ,])${flag.replace(/[-]/g, "\\-")}([ ,]|$)`, "m"));
      const env = flagRow(flag)?.env;
      if (env) expect(help, env).toContain(`(env: ${env})`);
    }
  });

  it.each(listStacks().filter((stack) => stack !== "cpu-ddr5-q4"))(
    "%s: every flag in the plan is in the table, the key is a file",
    (stack) => {
      const plan = buildPlan(stack, loadStackConfig(stack));
      const flags = plan.llamaServerArgs.filter((arg) => arg.startsWith("--"));
      for (const flag of flags) expect(KIT_FLAG_REASONS.map(([name]) => name)).toContain(flag.replace(/^--no-/, "--"));
      expect(flags).not.toContain("--api-key");
      expect(plan.llamaServerArgs[plan.llamaServerArgs.indexOf("--api-key-file") + 1]).toBe("/run/kimi-kit/api-key");
      const { tier } = plan.config.model;
      const prefix = plan.model.id === "kimi-k3" ? "Kimi-K3" : "Kimi-K2.6";
      expect(plan.llamaServerArgs[plan.llamaServerArgs.indexOf("--model") + 1]).toBe(
        `/models/${tier}/${prefix}-${tier}-00001-of-000${String(plan.shards.count).padStart(2, "0")}.gguf`,
      );
      expect(plan.explainedArgs.every((row) => row.why.length > 10)).toBe(true);
    },
  );

  it("CPU build: threads = physical cores, no NUMA flag on one node, repacking on", () => {
    const plan = buildPlan("cpu-ddr5", loadStackConfig("cpu-ddr5"));
    const args = plan.llamaServerArgs.join(" ");
    expect(args).toContain("--threads 16 --threads-batch 16");
    expect(args).not.toContain("--numa");
    expect(args).not.toContain("--no-repack");
    expect(args).toContain("--ctx-size 32768 --parallel 1 --cache-type-k f16");
    expect(args).toContain("--host 127.0.0.1 --port 8080");
    expect(args).toContain("--jinja");
  });

  it("adds --numa distribute when the host has more than one NUMA node", () => {
    const config = loadStackConfig("cpu-ddr5");
    if (config.host.kind !== "bare-metal") throw new Error("bare-metal expected");
    const twoNodes = buildPlan("x", { ...config, host: { ...config.host, cpu: { ...config.host.cpu, numaNodes: 2 } } });
    expect(twoNodes.llamaServerArgs.join(" ")).toContain("--numa distribute");
  });

  it("hybrid: -ngl all, explicit split, -ot rules repeated in order", () => {
    const plan = buildPlan("rtx3090x4", loadStackConfig("rtx3090x4"));
    const args = plan.llamaServerArgs;
    expect(args.join(" ")).toContain("--gpu-layers all --split-mode layer --tensor-split 24,24,24,24");
    const rules = args.flatMap((arg, index) => (arg === "--override-tensor" ? [args[index + 1]!] : []));
    expect(rules).toEqual(plan.placement.overrideRules);
    expect(rules.at(-1)).toMatch(/=CPU$/);
  });
});
