import { describe, expect, it } from "vitest";
import { assignLayersToGpus } from "../../planner/offload";
import { buildPlan } from "../../planner/plan";
import { loadStackConfig } from "../../planner/stack-file";
import { loadCatalog } from "../../planner/catalog";
import { tensorsFromArchitecture } from "../../planner/tensors";

/** std::regex_search on a tensor name, first pattern wins — as llama.cpp applies -ot. */
function firstMatch(rules: string[], name: string): string | undefined {
  for (const rule of rules) {
    const [pattern, buffer] = rule.split("=");
    if (new RegExp(pattern!).test(name)) return buffer;
  }
  return undefined;
}

describe("layer split (llama.cpp load_tensors rule)", () => {
  it("splits 61 layers + output over 4 equal GPUs as llama.cpp does", () => {
    const devices = assignLayersToGpus(61, [24, 24, 24, 24]);
    const counts = [0, 1, 2, 3].map((gpu) => devices.slice(0, 61).filter((d) => d === gpu).length);
    expect(counts).toEqual([16, 15, 16, 14]);
    expect(devices[61]).toBe(3);
  });
});

describe("hybrid offload plan", () => {
  const plan = buildPlan("rtx3090x4", loadStackConfig("rtx3090x4"));
  const kimi = loadCatalog().models[0]!;
  const tensors = tensorsFromArchitecture(kimi.architecture, kimi.tiers[0]!);

  it("puts every non-expert tensor on a GPU and the token embedding on the CPU", () => {
    for (const tensor of tensors) {
      const device = plan.placement.deviceOfTensor.get(tensor.name);
      if (tensor.cls === "embedding") expect(device).toBe("CPU");
      else if (tensor.cls !== "routedExperts") expect(device, tensor.name).toMatch(/^CUDA\d$/);
    }
  });

  it("writes anchored -ot rules, specific first, the generic CPU rule last, that reproduce the placement", () => {
    const rules = plan.placement.overrideRules;
    expect(rules.at(-1)).toBe("ffn_(up|down|gate|gate_up)_exps\\.=CPU");
    for (const rule of rules.slice(0, -1)) expect(rule).toMatch(/^\^blk\\\.\((\d+\|)*\d+\)\\\.ffn_.*=CUDA\d$/);
    for (const tensor of tensors) {
      const planned = plan.placement.deviceOfTensor.get(tensor.name);
      const matched = firstMatch(rules, tensor.name);
      if (tensor.cls === "routedExperts") expect(matched, tensor.name).toBe(planned);
      else expect(matched, tensor.name).toBeUndefined();
    }
    // blk.1. must not catch blk.10. or blk.11.
    expect(
      firstMatch(["^blk\\.(1)\\.ffn_(up|down|gate|gate_up)_exps\\.=CUDA0"], "blk.11.ffn_up_exps.weight"),
    ).toBeUndefined();
  });

  it("fills spare VRAM with whole expert layers that each GPU already runs", () => {
    const layersOnGpu = plan.placement.expertLayersByGpu;
    expect(layersOnGpu.flat().length).toBeGreaterThan(0);
    layersOnGpu.forEach((layers, gpu) => {
      for (const layer of layers) expect(plan.placement.layerDevice[layer]).toBe(`CUDA${gpu}`);
    });
  });

  it("turns repacking off and uses no mmap when experts sit on the CPU beside a GPU", () => {
    expect(plan.placement.repack).toBe(false);
    expect(plan.llamaServerArgs).toContain("--no-repack");
    expect(plan.llamaServerArgs.join(" ")).toContain("--load-mode none");
  });

  it("puts everything on the GPUs when it fits there", () => {
    const config = loadStackConfig("rtx3090x4");
    const big = buildPlan("h200x4", {
      ...config,
      host: {
        ...config.host,
        kind: "bare-metal",
        gpus: [{ model: "h200", count: 4 }],
        memory: { ...(config.host.kind === "bare-metal" ? config.host.memory : { total: 0 }), total: 512 * 1024 ** 3 },
      } as typeof config.host,
    });
    expect(big.placement.mode).toBe("all-gpu");
    expect(big.placement.overrideRules).toEqual([]);
    expect(big.llamaServerArgs).not.toContain("--override-tensor");
    for (const tensor of tensors.filter((t) => t.cls === "routedExperts"))
      expect(big.placement.deviceOfTensor.get(tensor.name)).toMatch(/^CUDA/);
  });
});
