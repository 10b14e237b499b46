/**
 * Kimi K3 in the catalog. Expected figures come from ../shared/reference/models-2026.md (Moonshot's
 * and Unsloth's published numbers), not from the planner: 2779.9B parameters, ~48.6B routed and
 * ~56B non-expert weights read per token, K-only MLA cache of (512 + 64) f16 per token on 24
 * layers = 27,648 B/token, a KDA state of ≈ 443 MiB per slot, and Unsloth's tier sizes.
 */
import { describe, expect, it } from "vitest";
import { loadCatalog } from "../../planner/catalog";
import { parseStackConfig } from "../../planner/config";
import { ConfigError } from "../../planner/errors";
import { kvBytesPerTokenPerLayer, kvLayerCount, recurrentBytesPerLayer } from "../../planner/memory";
import { buildPlan } from "../../planner/plan";
import { loadStackConfig, readStackValues } from "../../planner/stack-file";
import { tensorsFromArchitecture, totalBytes } from "../../planner/tensors";

const MiB = 1024 * 1024;
const catalog = loadCatalog();
const k3 = catalog.models.find((model) => model.id === "kimi-k3")!;
const tensors = tensorsFromArchitecture(
  k3.architecture,
  k3.tiers.find((tier) => tier.name === "UD-Q2_K_XL")!,
);

describe("Kimi K3 in the catalog", () => {
  it("builds 2.78T parameters: ~48.6B routed and ~56B other weights read per token", () => {
    const params = tensors.reduce((sum, tensor) => sum + tensor.elements, 0);
    expect(params / 2779.9e9).toBeGreaterThan(0.995);
    expect(params / 2779.9e9).toBeLessThan(1.005);
    const arch = k3.architecture;
    const routedActive = tensors
      .filter((tensor) => tensor.cls === "routedExperts")
      .reduce((sum, tensor) => sum + (tensor.elements * arch.activeExperts) / arch.routedExperts, 0);
    const other = tensors
      .filter((tensor) => tensor.cls !== "routedExperts" && tensor.cls !== "embedding")
      .reduce((sum, tensor) => sum + tensor.elements, 0);
    expect(routedActive / 1e9).toBeCloseTo(48.6, 0);
    expect(other / 1e9).toBeGreaterThan(54);
    expect(other / 1e9).toBeLessThan(58);
  });

  it("has Unsloth's nine tiers, within 5% of their listed sizes (all but UD-Q1_0 within 3%), shards unverified", () => {
    expect(k3.tiers.map((tier) => tier.name)).toEqual([
      "UD-Q1_0",
      "UD-TQ1_0",
      "UD-TQ2_0",
      "UD-IQ1_S",
      "UD-IQ1_M",
      "UD-IQ2_XXS",
      "UD-Q2_K_XL",
      "UD-Q4_K_XL",
      "UD-Q8_K_XL",
    ]);
    for (const tier of k3.tiers) {
      const off = Math.abs(totalBytes(tensorsFromArchitecture(k3.architecture, tier)) / tier.publishedSizeBytes - 1);
      expect(off, tier.name).toBeLessThan(tier.name === "UD-Q1_0" ? 0.05 : 0.03);
      expect(tier.shards.verified).toBe(false);
    }
  });

  it("caches K only on its 24 MLA layers (27,648 B/token at f16) and ≈ 443 MiB of KDA state per slot", () => {
    expect(kvLayerCount(k3.architecture)).toBe(24);
    expect(kvLayerCount(k3.architecture) * kvBytesPerTokenPerLayer(k3.architecture, "f16")).toBe(27_648);
    expect(k3.architecture.recurrent!.layers).toHaveLength(69);
    expect((k3.architecture.recurrent!.layers.length * recurrentBytesPerLayer(k3.architecture, 1)) / MiB).toBeCloseTo(
      443,
      0,
    );
  });

  it("serves with its template and Moonshot's sampling: --jinja, temperature 1.0, top-p 0.95", () => {
    const plan = buildPlan("k3-dual-epyc", loadStackConfig("k3-dual-epyc"));
    const args = plan.llamaServerArgs.join(" ");
    expect(args).toContain("--jinja");
    expect(args).toContain("--temp 1 --top-p 0.95");
  });
});

describe("Kimi K3 stacks", () => {
  it("the seed's 384 GB box is refused for every tier, naming the smallest tier and the smallest catalog host that holds it", () => {
    const plan = buildPlan("k3-cpu-ddr5", loadStackConfig("k3-cpu-ddr5"));
    expect(plan.refusal).toBeDefined();
    expect(plan.alternatives!.tiersThatFit).toEqual([]);
    const smallest = [...k3.tiers].sort(
      (a, b) =>
        totalBytes(tensorsFromArchitecture(k3.architecture, a)) -
        totalBytes(tensorsFromArchitecture(k3.architecture, b)),
    )[0]!;
    expect(plan.refusal).toContain(`The smallest tier, ${smallest.name},`);
    // The holder is a catalog instance whose memory is more than that tier's weights.
    const holder = /the smallest catalog host that holds it is aws (\S+) /.exec(plan.refusal!)?.[1];
    const instance = catalog.instances.find((entry) => entry.id === holder);
    expect(instance, plan.refusal).toBeDefined();
    const gpuBytes = instance!.gpus
      ? instance!.gpus.count * catalog.gpus.find((gpu) => gpu.id === instance!.gpus!.model)!.memory
      : 0;
    expect(instance!.memory + gpuBytes).toBeGreaterThan(totalBytes(tensorsFromArchitecture(k3.architecture, smallest)));
  });

  it("UD-Q2_K_XL fits the two-socket 1.5 TB server, with its decode, prefill and cost against the API", () => {
    const plan = buildPlan("k3-dual-epyc", loadStackConfig("k3-dual-epyc"));
    expect(plan.placement.fits).toBe(true);
    expect(plan.placement.memory[0]!.recurrentBytes).toBe(
      69 * recurrentBytesPerLayer(k3.architecture, plan.config.serving.parallelSlots),
    );
    expect(plan.projection.decodeTokensPerSecond).toBeGreaterThan(0);
    expect(plan.projection.errorBands.decode).toBeDefined();
    expect(plan.cost!.apiUsdPerMillionTokensAtMix).toBeGreaterThan(0);
  });

  it("counts context checkpoints in RAM: slots × --ctx-checkpoints (default 32) × one slot's KDA state, fewer with -ctxcp", () => {
    const plan = buildPlan("k3-dual-epyc", loadStackConfig("k3-dual-epyc"));
    const oneState = 69 * 1_683_456 * 4;
    expect(plan.placement.memory[0]!.checkpointBytes).toBe(plan.config.serving.parallelSlots * 32 * oneState);
    const values = structuredClone(readStackValues("k3-dual-epyc"));
    (values.serving as Record<string, unknown>).parallelSlots = 2;
    const two = buildPlan("k3-dual-epyc", parseStackConfig("k3-dual-epyc", values));
    expect(two.placement.memory[0]!.checkpointBytes).toBe(2 * 32 * oneState);
  });

  it("with one 96 GB GPU, the GPU holds every layer's attention (MLA and KDA), the shared experts, KV and state; routed experts stay in RAM", () => {
    const plan = buildPlan("k3-dual-epyc-pro6000", loadStackConfig("k3-dual-epyc-pro6000"));
    expect(plan.placement.fits).toBe(true);
    const onGpu = (pattern: RegExp) =>
      plan.tensors
        .filter((tensor) => pattern.test(tensor.name))
        .every((tensor) => plan.placement.deviceOfTensor.get(tensor.name) === "CUDA0");
    expect(onGpu(/\.(attn_q|attn_k|attn_v|attn_output|ssm_g|attn_q_a|attn_q_b|attn_kv_a_mqa)\.weight$/)).toBe(true);
    expect(onGpu(/_shexp\.weight$/)).toBe(true);
    expect(plan.placement.memory[1]!.kvBytes).toBeGreaterThan(0);
    expect(plan.placement.memory[1]!.recurrentBytes).toBeGreaterThan(0);
    const routedInRam = plan.tensors.filter(
      (tensor) => tensor.cls === "routedExperts" && plan.placement.deviceOfTensor.get(tensor.name) === "CPU",
    );
    expect(routedInRam.length).toBeGreaterThan(0);
  });

  it("a stack asking for vision is refused: mainline cannot load the kimik3 projector", () => {
    const values = structuredClone(readStackValues("k3-dual-epyc"));
    (values.model as Record<string, unknown>).vision = true;
    const refusal = (() => {
      try {
        buildPlan("k3-dual-epyc", parseStackConfig("k3-dual-epyc", values));
      } catch (error) {
        return error;
      }
      return undefined;
    })();
    expect(refusal).toBeInstanceOf(ConfigError);
    expect((refusal as ConfigError).problems.join("\n")).toMatch(
      /model\.vision: found true; allowed: false — the kimik3 vision projector \(mmproj\) is not loadable by mainline llama\.cpp v0\.5\.0 \(ggml-org\/llama\.cpp issue #28264\)/,
    );
  });
});
