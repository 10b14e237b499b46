import { describe, expect, it } from "vitest";
import { parseStackConfig } from "../../planner/config";
import { ConfigError } from "../../planner/errors";
import { buildPlan } from "../../planner/plan";
import { readStackValues } from "../../planner/stack-file";

function problemsOf(raw: Record<string, unknown>, stack = "broken"): string[] {
  try {
    const config = parseStackConfig(stack, raw);
    buildPlan(stack, config);
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return (error as ConfigError).problems;
  }
  throw new Error("expected a ConfigError");
}

const good = () => structuredClone(readStackValues("cpu-ddr5"));

describe("stack config errors", () => {
  it("names the key path, the value found and what is allowed", () => {
    const raw = good();
    (raw.host as { memory: { total: string } }).memory.total = "lots";
    const [problem, ...rest] = problemsOf(raw);
    expect(rest).toEqual([]);
    expect(problem).toContain("host.memory.total");
    expect(problem).toContain('"lots"');
    expect(problem).toMatch(/allowed: .*384GiB/);
  });

  it("reports one line per problem, all at once", () => {
    const raw = good();
    (raw.serving as Record<string, unknown>).kvCacheType = "q3_k";
    (raw.serving as Record<string, unknown>).port = 70000;
    (raw.costs as { usage: { utilization: number } }).usage.utilization = 1.5;
    const problems = problemsOf(raw);
    expect(problems).toHaveLength(3);
    expect(problems.find((line) => line.startsWith("serving.kvCacheType"))).toMatch(/"q3_k".*f16/);
    expect(problems.find((line) => line.startsWith("serving.port"))).toMatch(/70000.*65535/);
    expect(problems.find((line) => line.startsWith("costs.usage.utilization"))).toMatch(/1\.5/);
  });

  it("refuses unknown keys, naming them", () => {
    const raw = good();
    (raw.serving as Record<string, unknown>).contextLenght = 8192;
    const [problem] = problemsOf(raw);
    expect(problem).toMatch(/serving.*contextLenght/);
  });

  it("refuses a plain-text API key and says how to set a secret", () => {
    const raw = { ...good(), apiKey: "sk-plain" };
    const [problem] = problemsOf(raw);
    expect(problem).toContain("apiKey");
    expect(problem).toContain("pulumi config set --secret");
    expect(problem).not.toContain("sk-plain");
  });

  it("names catalog references that do not exist, with the allowed values", () => {
    const raw = good();
    (raw.model as Record<string, unknown>).tier = "UD-Q3_K_XL";
    expect(problemsOf(raw)[0]).toMatch(
      /model\.tier: found "UD-Q3_K_XL"; allowed: UD-Q2_K_XL, UD-Q4_K_XL, UD-Q8_K_XL, BF16/,
    );

    const gpuStack = structuredClone(readStackValues("rtx3090x4"));
    (gpuStack.host as { gpus: { model: string }[] }).gpus[0]!.model = "rtx-3080";
    expect(problemsOf(gpuStack)[0]).toMatch(/host\.gpus\[0\]\.model: found "rtx-3080"; allowed: .*rtx-3090/);

    const cloud = structuredClone(readStackValues("aws-r7i"));
    (cloud.host as Record<string, unknown>).instanceType = "r7i.huge";
    expect(problemsOf(cloud)[0]).toMatch(/host\.instanceType: found "r7i\.huge"; allowed: r7i\.12xlarge/);
  });

  it("refuses a context longer than the model was trained for", () => {
    const raw = good();
    (raw.serving as Record<string, unknown>).contextLength = 524288;
    expect(problemsOf(raw)[0]).toMatch(/serving\.contextLength: found 524288; allowed: 256 to 262144/);
  });

  it("requires hardware costs for an owned host and a discriminating host kind", () => {
    const raw = good();
    delete (raw.costs as Record<string, unknown>).hardware;
    expect(problemsOf(raw)[0]).toMatch(/costs\.hardware/);
    const wrongKind = good();
    (wrongKind.host as Record<string, unknown>).kind = "vm";
    expect(problemsOf(wrongKind)[0]).toMatch(/host\.kind.*"vm"/);
  });

  it("parses sizes with units into bytes", () => {
    const config = parseStackConfig("cpu-ddr5", good());
    expect(config.host.kind === "bare-metal" && config.host.memory.total).toBe(384 * 1024 ** 3);
    expect(config.host.kind === "bare-metal" && config.host.disk.free).toBe(1e12);
  });

  it("every line says what is allowed, and shows the value at fault rather than a whole object", () => {
    const raw = good();
    (raw.host as Record<string, unknown>).kind = "vm";
    (raw.serving as Record<string, unknown>).contextLenght = 1;
    (raw.host as { cpu: Record<string, unknown> }).cpu.allCoreGHz = 0;
    const problems = problemsOf(raw);
    for (const line of problems) expect(line).toMatch(/: found .*; allowed: /);
    expect(problems).toContain(`host.kind: found "vm"; allowed: one of 'bare-metal' | 'cloud'`);
    expect(problems.find((line) => line.startsWith("serving:"))).toMatch(/found "contextLenght"/);
  });
});
