/**
 * Hybrid prefill: the kit streams CPU experts through the GPU (op offload) or multiplies them on
 * the CPU (--no-op-offload), whichever estimate() says reaches the first token sooner. Checked by
 * estimating the plan's own command line and the other choice side by side.
 */
import { describe, expect, it } from "vitest";
import { loadCatalog } from "../../planner/catalog";
import { parseStackConfig } from "../../planner/config";
import { estimate } from "../../planner/estimate";
import { parseFlags, type SizingFlags } from "../../planner/flags";
import { buildPlan, type Plan } from "../../planner/plan";
import { project } from "../../planner/speed";
import { readStackValues } from "../../planner/stack-file";

const catalog = loadCatalog();

function planWithPcie(pcie: { gen: number; lanes: number }): Plan {
  const values = structuredClone(readStackValues("rtx3090x4"));
  (values.host as Record<string, unknown>).pcie = pcie;
  return buildPlan("rtx3090x4", parseStackConfig("rtx3090x4", values));
}

/** TTFT of a flag set on the plan's model and host, for the plan's TTFT prompt. */
function ttftOf(plan: Plan, flags: SizingFlags): number {
  const result = estimate(plan.tensors, plan.model.architecture, plan.host, flags, {
    catalog,
    ttftPromptTokens: plan.projection.ttftPromptTokens,
  });
  return result.projection.ttftSeconds;
}

function chosenAndOther(plan: Plan): { chosen: number; other: number; cpuExperts: boolean } {
  const chosen = parseFlags(plan.llamaServerArgs, "plan").sizing;
  const cpuExperts = chosen.opOffload === false;
  // The other choice, as the planner would have written it: streaming wants the big ubatch, CPU experts llama.cpp's
  // default.
  const other: SizingFlags = cpuExperts
    ? { ...chosen, opOffload: undefined, batch: 2048, ubatch: 2048 }
    : { ...chosen, opOffload: false, batch: 2048, ubatch: 512 };
  return { chosen: ttftOf(plan, chosen), other: ttftOf(plan, other), cpuExperts };
}

describe("hybrid prefill follows the estimate", () => {
  it("on PCIe 4.0 x16 links a 32K prompt streams the experts, the faster way by the kit's own numbers", () => {
    const plan = planWithPcie({ gen: 4, lanes: 16 });
    const { chosen, other, cpuExperts } = chosenAndOther(plan);
    expect(cpuExperts).toBe(false);
    expect(chosen).toBeLessThan(other);
  });

  it("on PCIe 3.0 x1 links streaming ~300 GB of experts per ubatch loses: the kit passes --no-op-offload", () => {
    const plan = planWithPcie({ gen: 3, lanes: 1 });
    const { chosen, other, cpuExperts } = chosenAndOther(plan);
    expect(plan.llamaServerArgs).toContain("--no-op-offload");
    expect(cpuExperts).toBe(true);
    expect(chosen).toBeLessThan(other);
    expect(plan.placement.reasons.join("\n")).toMatch(/Prefill on the CPU \(--no-op-offload/);
  });
});

describe("op offload copies from pinned or pageable memory", () => {
  // llama.cpp v0.5.0 keeps CPU weights in CUDA_Host (pinned) unless they are memory-mapped; a mapped
  // model's CPU experts are pageable, and CUDA stages those copies.
  const plan = planWithPcie({ gen: 4, lanes: 16 });
  const streaming: SizingFlags = {
    ...parseFlags(plan.llamaServerArgs, "plan").sizing,
    opOffload: undefined,
    batch: 2048,
    ubatch: 2048,
  };
  const run = (flags: SizingFlags) =>
    estimate(plan.tensors, plan.model.architecture, plan.host, flags, {
      catalog,
      ttftPromptTokens: plan.projection.ttftPromptTokens,
    }).projection;
  const projectWith = (flags: SizingFlags, pageableStreamFraction: number) =>
    project({
      ...estimate(plan.tensors, plan.model.architecture, plan.host, flags, {
        catalog,
        ttftPromptTokens: plan.projection.ttftPromptTokens,
      }).speedInputs,
      cpuFactors: { pageableStreamFraction, source: "test" },
    });

  it("a memory-mapped model streams slower, and says so; decode does not stream and is unchanged", () => {
    const pinned = run({ ...streaming, loadMode: "none" });
    const mapped = run({ ...streaming, loadMode: "mmap" });
    expect(mapped.ttftSeconds).toBeGreaterThan(pinned.ttftSeconds * 1.2);
    expect(mapped.prefillBasis).toContain("pageable");
    expect(pinned.prefillBasis).not.toContain("pageable");
    expect(mapped.decodeTokensPerSecond).toBeCloseTo(pinned.decodeTokensPerSecond, 9);
  });

  it("pageable copies at the pinned rate would cost exactly what pinned ones do", () => {
    const pinned = projectWith({ ...streaming, loadMode: "none" }, 0.3);
    const mappedAtFullRate = projectWith({ ...streaming, loadMode: "mmap" }, 1);
    expect(mappedAtFullRate.ttftSeconds).toBeCloseTo(pinned.ttftSeconds, 6);
  });
});
