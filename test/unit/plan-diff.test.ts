/**
 * diffPlans on plans of the repo's stacks with one controlled change each: expected figures are
 * worked out from the change (the model's KV per token, the stack's cost inputs, the thresholds),
 * not read back from the diff.
 */
import { describe, expect, it } from "vitest";
import { parseStackConfig } from "../../planner/config";
import {
  DEVICE_BYTES_MATERIAL_FRACTION,
  diffPlans,
  diffToJson,
  flagOccurrences,
  isMaterial,
  materialChanges,
  MONTHLY_COST_MATERIAL_USD,
  PROJECTION_MATERIAL_FRACTION,
  renderDiffMarkdown,
  renderDiffText,
  type PlanSide,
} from "../../planner/diff";
import { buildPlan } from "../../planner/plan";
import { planToJson, type PlanJson } from "../../planner/report";
import { readStackValues } from "../../planner/stack-file";
import { formatDuration } from "../../planner/units";

type Raw = Record<string, Record<string, unknown>>;
const GiB = 1024 ** 3;

/** The stack's plan, after `change` edits its raw config values. */
function planOf(stack: string, change: (values: Raw) => void = () => {}): PlanJson {
  const values = structuredClone(readStackValues(stack)) as Raw;
  change(values);
  return planToJson(buildPlan(stack, parseStackConfig(stack, values), { lock: null }));
}

const side = (label: string, plan: PlanJson | Record<string, unknown>): PlanSide => ({ label, plan });
const base = planOf("cpu-ddr5");

describe("diffPlans", () => {
  it("the same plan on both sides: nothing changed, nothing material", () => {
    const diff = diffPlans(side("HEAD~1", base), side("working tree", planOf("cpu-ddr5")));
    expect(diff.kind).toBe("compared");
    expect(diff.flags).toEqual([]);
    expect(diff.devices.map((device) => device.status)).toEqual(["unchanged"]);
    expect(diff.notCompared).toEqual([]);
    expect(isMaterial(diff)).toBe(false);
    expect(renderDiffText(diff)).toContain("Material: no");
    expect(renderDiffText(diff)).toContain("Verdict: FITS (cpu-only) (unchanged)");
  });

  it("a bigger tier on the same 384 GiB box: FITS → refused is named first and is material", () => {
    const bigger = planOf("cpu-ddr5", (values) => {
      values.model!.tier = "UD-Q4_K_XL";
    });
    expect(bigger.fits).toBe(false);
    const diff = diffPlans(side("HEAD~1", base), side("working tree", bigger));
    expect(diff.verdict.before?.fits).toBe(true);
    expect(diff.verdict.after?.fits).toBe(false);
    const cpu = diff.devices.find((device) => device.name === "CPU")!;
    expect(cpu.deltaBytes).toBe(bigger.devices[0]!.plannedBytes - base.devices[0]!.plannedBytes);
    // UD-Q4_K_XL is ~585 GB against UD-Q2_K_XL's ~345 GB: far more than 1% of 384 GiB.
    expect(cpu.deltaBytes!).toBeGreaterThan(200 * GiB);
    expect(materialChanges(diff)[0]).toBe("verdict: NOW REFUSED");
    expect(diff.flags.map((flag) => flag.flag)).toContain("--model");
    const text = renderDiffText(diff).split("\n");
    expect(text[1]).toMatch(/^VERDICT CHANGED: FITS \(cpu-only\) → DOES NOT FIT — NOW REFUSED: .*does not fit/);
    const markdown = renderDiffMarkdown(diff).split("\n");
    expect(markdown[0]).toBe("<!-- kimi-kit-plan-diff:cpu-ddr5 -->");
    // The verdict comes before anything else: the caution block, then the table's first row.
    expect(markdown.findIndex((line) => line.includes("Verdict changed: FITS (cpu-only) → DOES NOT FIT"))).toBeLessThan(
      markdown.findIndex((line) => line.startsWith("|")),
    );
    expect(markdown.find((line) => line.startsWith("| **verdict**"))).toBe(
      "| **verdict** | FITS (cpu-only) | DOES NOT FIT | **NOW REFUSED** |",
    );
  });

  it("twice the context: KV doubles (61 layers × (512 + 64) × 2 bytes per token), --ctx-size changes; the bytes alone stay under 1%", () => {
    const longer = planOf("cpu-ddr5", (values) => {
      values.serving!.contextLength = 65536;
    });
    const diff = diffPlans(side("HEAD~1", base), side("working tree", longer));
    // Kimi K2.6 is deepseek2 with MLA: one f16 latent of kv_lora_rank 512 + rope 64 per layer and token.
    const kvPerToken = 61 * (512 + 64) * 2;
    const kv = diff.devices[0]!.kinds.find((kind) => kind.kind === "KV")!;
    expect(kv.before).toBe(kvPerToken * 32768);
    expect(kv.after).toBe(kvPerToken * 65536);
    expect(diff.flags).toContainEqual({ flag: "--ctx-size", before: ["32768"], after: ["65536"] });
    const cpu = diff.devices[0]!;
    // 2.1 GiB of KV more on a 384 GiB host is 0.56% of it: under the 1% threshold by itself.
    expect(cpu.deltaBytes! / cpu.referenceCapacity!).toBeLessThan(DEVICE_BYTES_MATERIAL_FRACTION);
    expect(cpu.deltaBytes!).toBeGreaterThanOrEqual(kvPerToken * 32768);
    expect(materialChanges(diff)).toEqual(["llama-server flags: --ctx-size"]);
    expect(renderDiffText(diff)).toContain("changed  --ctx-size: 32768 → 65536");
    expect(renderDiffText(diff)).toMatch(/KV 2\.14 GiB → 4\.29 GiB \(\+2\.1 GiB\)/);
    expect(renderDiffMarkdown(diff)).toContain("```diff\n- --ctx-size 32768\n+ --ctx-size 65536\n```");
  });

  it("the host price up by $18 over 36 months is $0.50 a month: shown, not material; $72 is $2.00: material", () => {
    const priced = (priceUsd: number) =>
      planOf("cpu-ddr5", (values) => {
        ((values.costs!.hardware as Record<string, unknown>).priceUsd as number) = priceUsd;
      });
    const half = diffPlans(side("HEAD~1", base), side("working tree", priced(5000 + 18)));
    expect(half.cost.after).toMatchObject({ state: "priced" });
    const monthlyDelta = (diff: typeof half) =>
      (diff.cost.after as { monthlyUsd: number }).monthlyUsd - (diff.cost.before as { monthlyUsd: number }).monthlyUsd;
    expect(monthlyDelta(half)).toBeCloseTo(18 / 36, 9);
    expect(isMaterial(half)).toBe(false);
    expect(renderDiffText(half)).toMatch(/monthly cost: \$177\.21 → \$177\.71 \(\+\$0\.50\)/);
    const two = diffPlans(side("HEAD~1", base), side("working tree", priced(5000 + 72)));
    expect(monthlyDelta(two)).toBeCloseTo(72 / 36, 9);
    expect(materialChanges(two)).toEqual(["monthly cost +$2.00"]);
    expect(MONTHLY_COST_MATERIAL_USD).toBe(1);
  });

  it("thresholds at their edges: a device's bytes at 0.99% and 1% of capacity, a projection at 4.9% and 5%", () => {
    const capacity = base.devices[0]!.capacityBytes;
    const shifted = (bytes: number, decodeFactor: number): PlanJson => ({
      ...base,
      devices: [{ ...base.devices[0]!, plannedBytes: base.devices[0]!.plannedBytes + bytes }],
      projection: { ...base.projection, decodeTokensPerSecond: base.projection.decodeTokensPerSecond * decodeFactor },
    });
    const material = (after: PlanJson) => isMaterial(diffPlans(side("a", base), side("b", after)));
    expect(material(shifted(0.0099 * capacity, 1))).toBe(false);
    expect(material(shifted(DEVICE_BYTES_MATERIAL_FRACTION * capacity, 1))).toBe(true);
    expect(material(shifted(-DEVICE_BYTES_MATERIAL_FRACTION * capacity, 1))).toBe(true);
    expect(material(shifted(0, 1.049))).toBe(false);
    expect(material(shifted(0, 1 + PROJECTION_MATERIAL_FRACTION))).toBe(true);
    expect(material(shifted(0, 1 - PROJECTION_MATERIAL_FRACTION))).toBe(true);
    expect(materialChanges(diffPlans(side("a", base), side("b", shifted(0, 1.06))))).toEqual(["decode +6.0%"]);
  });

  it("an older kit's JSON without costs, flags or TTFT: those are unknown and listed, never read as zero", () => {
    const old: Record<string, unknown> = { ...base, projection: { ...base.projection } };
    delete old.cost;
    delete old.llamaServerArgs;
    delete (old.projection as Record<string, unknown>).ttft32kSeconds;
    const diff = diffPlans(side("v0.1", old), side("working tree", base));
    expect(diff.cost.before).toEqual({ state: "unknown" });
    expect(diff.flags).toEqual([]);
    expect(diff.notCompared).toEqual([
      "llama-server flags: v0.1's plan JSON has no such field (an older kit?)",
      "TTFT: v0.1's plan JSON has no such field (an older kit?)",
      "costs: v0.1's plan JSON has no such field (an older kit?)",
    ]);
    // Unknown is not a change: absent costs would otherwise read as "$177 a month more".
    expect(isMaterial(diff)).toBe(false);
    const text = renderDiffText(diff);
    expect(text).toContain("monthly cost: unknown → $177.21");
    expect(text).toContain("llama-server flags: not compared");
    // The new side's TTFT as the plan states it (the diff shows it; the projection is not under test here).
    expect(text).toContain(`TTFT @32.8K prompt: unknown → ${formatDuration(base.projection.ttft32kSeconds!)}`);
  });

  it("a JSON that is not a plan at all still diffs: every field unknown", () => {
    const diff = diffPlans(side("v0", { hello: "world" }), side("working tree", base));
    expect(diff.kind).toBe("compared");
    expect(diff.notCompared.length).toBeGreaterThanOrEqual(5);
    expect(isMaterial(diff)).toBe(false);
  });

  it("a side that could not be planned is 'unreadable at REF: reason', material, and the other side is still shown", () => {
    const diff = diffPlans(
      {
        label: "HEAD~1 (abc1234)",
        stack: "cpu-ddr5",
        unreadable: "serving.contextLength: found -1; allowed: at least 1",
      },
      side("working tree", base),
    );
    expect(diff.kind).toBe("unreadable");
    expect(materialChanges(diff)).toEqual(["unreadable at HEAD~1 (abc1234)"]);
    const text = renderDiffText(diff);
    expect(text).toContain("unreadable at HEAD~1 (abc1234): serving.contextLength: found -1; allowed: at least 1");
    expect(text).toContain("Verdict: FITS (cpu-only)");
    // The readable side's memory line is still rendered (its figure is the estimator's, checked elsewhere).
    expect(text).toMatch(/CPU system RAM \(DDR5-4800\): \d+\.\d GiB of 384\.0 GiB\n/);
    expect(renderDiffMarkdown(diff)).toContain(
      "**unreadable at HEAD~1 (abc1234)**: serving.contextLength: found -1; allowed: at least 1",
    );
  });

  it("a stack absent at the ref is a new stack, one absent now a removed one", () => {
    const added = diffPlans({ label: "HEAD~1", stack: "cpu-ddr5", missing: true }, side("working tree", base));
    expect(added.kind).toBe("new stack");
    expect(added.devices.map((device) => device.status)).toEqual(["added"]);
    expect(renderDiffText(added)).toContain("new stack: stacks/Pulumi.cpu-ddr5.yaml does not exist at HEAD~1");
    expect(isMaterial(added)).toBe(true);
    const removed = diffPlans(side("HEAD~1", base), { label: "working tree", stack: "cpu-ddr5", missing: true });
    expect(removed.kind).toBe("removed stack");
    expect(renderDiffMarkdown(removed)).toContain(
      "**removed stack**: stacks/Pulumi.cpu-ddr5.yaml does not exist at working tree",
    );
  });

  it("two stacks: keyed X..Y, headed by the stack names", () => {
    const diff = diffPlans(
      { label: "cpu-ddr5", stack: "cpu-ddr5", plan: base },
      { label: "rtx3090x4", stack: "rtx3090x4", plan: planOf("rtx3090x4") },
    );
    expect(diff.key).toBe("cpu-ddr5..rtx3090x4");
    // The GPUs exist on one side only: added devices, each material.
    expect(diff.devices.filter((device) => device.status === "added").map((device) => device.name)).toEqual([
      "CUDA0",
      "CUDA1",
      "CUDA2",
      "CUDA3",
    ]);
    expect(materialChanges(diff)).toEqual(expect.arrayContaining(["device CUDA0 added"]));
    const markdown = renderDiffMarkdown(diff);
    expect(markdown.split("\n")[0]).toBe("<!-- kimi-kit-plan-diff:cpu-ddr5..rtx3090x4 -->");
    expect(markdown).toContain("| | cpu-ddr5 | rtx3090x4 | change |");
    expect(diffToJson(diff)).toMatchObject({
      key: "cpu-ddr5..rtx3090x4",
      material: true,
      thresholds: { deviceBytesFractionOfCapacity: 0.01, projectionFraction: 0.05, monthlyCostUsd: 1 },
    });
  });

  it("workers of a split stack count as devices, by the name the head gives them", () => {
    const worker = {
      id: "worker-1",
      endpoint: "10.0.0.2:50052",
      device: "RPC0[10.0.0.2:50052]",
      layers: 30,
      holdsOutput: true,
      capacityBytes: 100 * GiB,
      fits: true,
    };
    const split = (plannedGiB: number) => ({
      ...base,
      cluster: { workers: [{ ...worker, plannedBytes: plannedGiB * GiB }] },
    });
    const diff = diffPlans(side("a", split(50)), side("b", split(52)));
    const rpc = diff.devices.find((device) => device.name === "RPC0[10.0.0.2:50052]")!;
    expect(rpc.deltaBytes).toBe(2 * GiB);
    expect(materialChanges(diff)).toEqual(["RPC0[10.0.0.2:50052] planned bytes +2.0 GiB (+2.0% of 100.0 GiB)"]);
  });

  it("markdown table cells escape pipes, so an -ot regex or a label cannot break a row", () => {
    const piped: PlanJson = { ...base, devices: [{ ...base.devices[0]!, name: "CPU|x" }] };
    const markdown = renderDiffMarkdown(diffPlans(side("a", piped), side("b", piped)));
    expect(markdown).toContain("| CPU\\|x planned |");
  });
});

describe("flagOccurrences", () => {
  it("groups values under their flag, keeps repeats in order, and reads -1 as a value", () => {
    const flags = flagOccurrences(["--model", "/m.gguf", "--jinja", "-ngl", "-1", "-ot", "a=CPU", "-ot", "b=CUDA0"]);
    expect([...flags.entries()]).toEqual([
      ["--model", ["/m.gguf"]],
      ["--jinja", [""]],
      ["-ngl", ["-1"]],
      ["-ot", ["a=CPU", "b=CUDA0"]],
    ]);
  });

  it("repeated rules in another order are a change (llama.cpp applies the first that matches)", () => {
    const before = { ...base, llamaServerArgs: ["-ot", "a=CPU", "-ot", "b=CUDA0"] };
    const after = { ...base, llamaServerArgs: ["-ot", "b=CUDA0", "-ot", "a=CPU"] };
    const diff = diffPlans(side("a", before), side("b", after));
    expect(diff.flags).toEqual([{ flag: "-ot", before: ["a=CPU", "b=CUDA0"], after: ["b=CUDA0", "a=CPU"] }]);
    expect(isMaterial(diff)).toBe(true);
  });
});
