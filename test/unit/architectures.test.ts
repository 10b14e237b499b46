/**
 * The per-layer rules architectureFromMetadata applies where a GGUF leaves a key out, as llama.cpp
 * v0.5.0 applies them (llama-model.cpp load_hparams / set_swa_pattern, models/glm-dsa.cpp), checked on
 * metadata written here; the rules with the key present are checked against the real llama-server in
 * test/scripts/architectures-sizing.test.ts. Also: a stack whose lock holds an architecture the kit
 * does not size is refused naming model.repo.
 */
import { describe, expect, it } from "vitest";
import { loadCatalog } from "../../planner/catalog";
import { ConfigError } from "../../planner/errors";
import { architectureFromMetadata, type ManifestLock } from "../../planner/lock";
import { buildPlan } from "../../planner/plan";
import { renderMemoryTable } from "../../planner/report";
import { loadStackConfig } from "../../planner/stack-file";

/** Metadata every MoE architecture needs, for a model of `layers` layers. */
function metadata(
  arch: string,
  layers: number,
  extra: Record<string, number | number[] | string>,
): ManifestLock["metadata"] {
  const key = (name: string) => `${arch}.${name}`;
  return {
    "general.architecture": arch,
    [key("block_count")]: layers,
    [key("embedding_length")]: 256,
    [key("attention.head_count")]: 2,
    [key("attention.head_count_kv")]: 2,
    [key("attention.key_length")]: 128,
    [key("attention.value_length")]: 128,
    [key("feed_forward_length")]: 512,
    [key("expert_count")]: 4,
    [key("expert_used_count")]: 2,
    [key("expert_feed_forward_length")]: 128,
    [key("vocab_size")]: 128,
    [key("context_length")]: 4096,
    ...Object.fromEntries(Object.entries(extra).map(([name, value]) => [key(name), value])),
  };
}

describe("per-layer rules where the GGUF has no per-layer key", () => {
  it("gpt-oss: without sliding_window_pattern every other layer (the even ones) keeps a window", () => {
    const arch = architectureFromMetadata(metadata("gpt-oss", 6, { "attention.sliding_window": 128 }));
    expect(arch.kvLayout!.swaLayers).toEqual([0, 2, 4]);
    expect(arch.kvLayout!.swaWindow).toBe(128);
  });

  it("llama4: without a pattern three of every four layers are chunked (8192 tokens, whatever the GGUF says); sliding_window 0 turns chunking off", () => {
    const chunked = architectureFromMetadata(metadata("llama4", 8, { "attention.sliding_window": 4096 }));
    expect(chunked.kvLayout!.swaLayers).toEqual([0, 1, 2, 4, 5, 6]);
    expect(chunked.kvLayout!.swaWindow).toBe(8192);
    expect(
      architectureFromMetadata(metadata("llama4", 8, { "attention.sliding_window": 0 })).kvLayout!.swaLayers,
    ).toEqual([]);
  });

  it("qwen3next: without recurrent_layers every full_attention_interval-th layer keeps KV (default 4), the rest are recurrent", () => {
    const ssm = { "ssm.inner_size": 256, "ssm.state_size": 128, "ssm.group_count": 2, "ssm.conv_kernel": 4 };
    expect(architectureFromMetadata(metadata("qwen3next", 8, ssm)).recurrent!.layers).toEqual([0, 1, 2, 4, 5, 6]);
    const everyOther = architectureFromMetadata(metadata("qwen3next", 4, { ...ssm, full_attention_interval: 2 }));
    expect(everyOther.recurrent!.layers).toEqual([0, 2]);
    expect(everyOther.kvLayout!.kElements).toEqual([0, 256, 0, 256]);
  });

  it("glm-dsa: without indexer.types every layer is indexed below a 1M context; at 1M the first two and every fourth after them", () => {
    const dsa = {
      "attention.kv_lora_rank": 512,
      "attention.key_length": 576,
      "attention.key_length_mla": 192,
      "attention.value_length_mla": 128,
      "attention.head_count_kv": 1,
      "rope.dimension_count": 64,
      "attention.indexer.key_length": 128,
    };
    const indexed = (context: number) =>
      architectureFromMetadata(metadata("glm-dsa", 10, { ...dsa, context_length: context })).kvLayout!.indexerK.flatMap(
        (k, layer) => (k > 0 ? [layer] : []),
      );
    expect(indexed(202_752)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect(indexed(1_048_576)).toEqual([0, 1, 2, 6]);
  });

  it("glm4moe: MTP (nextn) layers keep no cache in the main context", () => {
    const arch = architectureFromMetadata(metadata("glm4moe", 4, { nextn_predict_layers: 1 }));
    expect(arch.kvLayout!.kElements).toEqual([256, 256, 256, 0]);
  });
});

describe("a stack whose lock holds an architecture the kit does not size", () => {
  it("is refused naming model.repo, the architecture and what is sized", () => {
    const config = loadStackConfig("cpu-ddr5");
    const lock: ManifestLock = {
      lockVersion: 1,
      repo: "example/rwkv-moe",
      revision: "main",
      tier: "Q4",
      source: "test",
      generatedAt: "test",
      metadata: { "general.architecture": "rwkv7" },
      shards: [
        {
          path: "rwkv-00001-of-00001.gguf",
          size: 1,
          sha256: "0".repeat(64),
          tensors: [{ name: "token_embd.weight", type: "F32", shape: [8, 8], offset: 0 }],
        },
      ],
    };
    let refusal: unknown;
    try {
      buildPlan("rwkv", { ...config, model: { repo: "example/rwkv-moe", tier: "Q4", vision: false } }, { lock });
    } catch (error) {
      refusal = error;
    }
    expect(refusal).toBeInstanceOf(ConfigError);
    expect((refusal as ConfigError).problems).toEqual([
      expect.stringMatching(
        /^model\.repo: found "example\/rwkv-moe", whose lock says: architecture rwkv7 is not sized by this kit .*; allowed: a MoE model of an architecture this kit sizes \(deepseek2, kimi-k3, /,
      ),
    ]);
  });
});

describe("memory table columns", () => {
  it("shows recurrent state and checkpoints only for models that have them", () => {
    const k2 = buildPlan("cpu-ddr5", loadStackConfig("cpu-ddr5"));
    const k3 = buildPlan("k3-dual-epyc", loadStackConfig("k3-dual-epyc"));
    const header = (table: string) => table.split("\n")[0]!.split(/\s{2,}/);
    expect(header(renderMemoryTable(k2.placement.memory))).not.toContain("recurrent");
    expect(header(renderMemoryTable(k2.placement.memory))).not.toContain("checkpoints");
    expect(header(renderMemoryTable(k3.placement.memory))).toEqual([
      "device",
      "capacity",
      "weights",
      "repacked",
      "KV",
      "recurrent",
      "compute",
      "prompt cache",
      "checkpoints",
      "headroom",
      "planned",
      "fits",
    ]);
    expect(loadCatalog().llamaCpp.defaults.ctxCheckpoints).toBe(32);
  });
});
