/**
 * planner/inputs.ts and the report: which host inputs are assumptions (catalog datasheets, fitted
 * factors, the kit's defaults) and which the stack states or measured.
 */
import { describe, expect, it } from "vitest";
import { hostInputs } from "../../planner/inputs";
import { buildPlan } from "../../planner/plan";
import { planToJson, renderPlan } from "../../planner/report";
import { loadStackConfig } from "../../planner/stack-file";

const bandwidthOf = (plan: ReturnType<typeof buildPlan>) =>
  hostInputs(plan).find((input) => input.what === "achievable memory bandwidth")!;

describe("host inputs: assumptions vs stated and measured", () => {
  it("the catalog's bandwidth is an assumption; a stated measurement is not, and the report says which", () => {
    const config = loadStackConfig("cpu-ddr5");
    const assumed = buildPlan("cpu-ddr5", config);
    expect(bandwidthOf(assumed)).toMatchObject({
      source: "catalog",
      assumption: true,
      key: "host.memory.measuredBandwidthGBps",
    });
    expect(renderPlan(assumed)).toMatch(
      /^ {2}ASSUMED +achievable memory bandwidth: [\d.]+ GB\/s — .*\(set host\.memory\.measuredBandwidthGBps\)$/m,
    );
    if (config.host.kind !== "bare-metal") throw new Error("cpu-ddr5 is bare metal");
    const measured = buildPlan("cpu-ddr5", {
      ...config,
      host: { ...config.host, memory: { ...config.host.memory, measuredBandwidthGBps: 150 } },
    });
    expect(bandwidthOf(measured)).toMatchObject({ source: "measured", assumption: false, value: "150.0 GB/s" });
    expect(renderPlan(measured)).toMatch(
      /^ {2}measured +achievable memory bandwidth: 150\.0 GB\/s — measured 150 GB\/s \(host\.memory\.measuredBandwidthGBps\)$/m,
    );
    // The stack states RAM; the efficiency factors are always a fit, not this host.
    expect(hostInputs(assumed).find((input) => input.what === "RAM")).toMatchObject({
      source: "stated",
      assumption: false,
    });
    expect(hostInputs(assumed).find((input) => input.what === "efficiency factors")).toMatchObject({
      assumption: true,
    });
    expect(planToJson(assumed).hostInputs).toEqual(hostInputs(assumed));
  });

  it("a cloud instance's figures all come from the catalog; GPUs are datasheet figures", () => {
    const cloud = buildPlan("aws-r7i", loadStackConfig("aws-r7i"));
    expect(hostInputs(cloud).every((input) => input.assumption)).toBe(true);
    const gpus = buildPlan("rtx3090x4", loadStackConfig("rtx3090x4"));
    expect(hostInputs(gpus).find((input) => input.key === "catalog/gpus")).toMatchObject({
      value: "4× NVIDIA GeForce RTX 3090",
      assumption: true,
    });
    // rtx3090x4 states its PCIe link (x4 risers).
    expect(hostInputs(gpus).find((input) => input.key === "host.pcie")).toMatchObject({
      source: "stated",
      value: "PCIe 4.0 x4",
    });
  });
});
