/**
 * The planner's tensor model (planner/tensors.ts tensorsFromArchitecture: what the catalog's models
 * are planned from when no lock exists) checked against llama.cpp itself: the models test-llama-archs
 * saves for deepseek2 (Kimi K2's architecture) and kimi-k3, and the deepseek2 one after llama-quantize
 * with a tier-like mix. The architecture comes from the file's metadata through the planner's one
 * metadata reader (architectureFromMetadata); the file's side is what @huggingface/gguf reads.
 *
 * Three differences are allowed, each because llama.cpp's loader accepts both forms
 * (src/models/deepseek2.cpp, kimi-k3.cpp):
 * - trailing dimensions of 1, which GGUF does not store (attn_k_b with one head);
 * - tensors the loader creates with TENSOR_NOT_REQUIRED and that the planner leaves out: per-tensor
 *   `.scale` / `.input_scale` scalars and kimi-k3's q/k/v biases (a few hidden-widths of bytes);
 * - routed gate and up experts fused into one `ffn_gate_up_exps` (test-llama-archs writes the newer
 *   converter's layout; Unsloth's Kimi K2.6 files keep them apart): compared as the two halves.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gguf } from "@huggingface/gguf";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateArchModel } from "../../lab/models";
import { quantizeMix } from "../../lab/model-mixes";
import type { Tier } from "../../planner/catalog";
import { GGML_TYPE_BY_ID, type GgmlTypeName } from "../../planner/ggml-types";
import { architectureFromMetadata, scalarMetadata } from "../../planner/lock";
import { tensorsFromArchitecture } from "../../planner/tensors";

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "tensor-model-"));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

type Row = { shape: string; type: GgmlTypeName };

async function fileTensors(path: string) {
  const { metadata, tensorInfos } = await gguf(path, { allowLocalFile: true });
  const rows = new Map<string, Row>();
  for (const info of tensorInfos)
    rows.set(info.name, { shape: info.shape.map(Number).join("×"), type: GGML_TYPE_BY_ID[info.dtype]! });
  return { arch: architectureFromMetadata(scalarMetadata(metadata as Record<string, unknown>)), rows };
}

const OPTIONAL = /\.(scale|input_scale)$|\.attn_[qkv]\.bias$/;
const trimmed = (shape: readonly number[]) => {
  const dims = [...shape];
  while (dims.length > 1 && dims.at(-1) === 1) dims.pop();
  return dims.join("×");
};

/** The planner's rows, with gate and up fused where the file fuses them (ne[1] of the two added). */
function predictedRows(arch: ReturnType<typeof architectureFromMetadata>, tier: Tier, fused: boolean) {
  const rows = new Map<string, Row>();
  for (const tensor of tensorsFromArchitecture(arch, tier))
    rows.set(tensor.name, { shape: trimmed(tensor.shape), type: tensor.type });
  if (!fused) return rows;
  for (const [name, gate] of [...rows]) {
    const match = /^(blk\.\d+)\.ffn_gate_exps\.weight$/.exec(name);
    if (!match) continue;
    const up = rows.get(`${match[1]}.ffn_up_exps.weight`)!;
    const [width, gateRows, experts] = gate.shape.split("×").map(Number);
    const upRows = Number(up.shape.split("×")[1]);
    expect(up.type, `${name}: fused gate and up share one type`).toBe(gate.type);
    rows.delete(name);
    rows.delete(`${match[1]}.ffn_up_exps.weight`);
    rows.set(`${match[1]}.ffn_gate_up_exps.weight`, {
      shape: [width, gateRows! + upRows, experts].join("×"),
      type: gate.type,
    });
  }
  return rows;
}

/** A tier of the given types per tensor class (the planner applies llama-quantize's shape fallback). */
function tierOf(types: Partial<Tier["types"]> & { default: GgmlTypeName }): Tier {
  const { default: base, ...rest } = types;
  return {
    name: "test",
    publishedSizeBytes: 0,
    types: {
      embedding: base,
      norms: "F32",
      output: base,
      attention: base,
      denseFfn: base,
      router: "F32",
      routedExperts: base,
      sharedExperts: base,
      ...rest,
    },
    shards: { count: 1, verified: false },
  };
}

function compare(predicted: Map<string, Row>, file: Map<string, Row>) {
  const fileRequired = new Map([...file].filter(([name]) => !OPTIONAL.test(name)));
  const missing = [...fileRequired.keys()].filter((name) => !predicted.has(name));
  const extra = [...predicted.keys()].filter((name) => !fileRequired.has(name));
  expect({ missing, extra }).toEqual({ missing: [], extra: [] });
  for (const [name, row] of fileRequired) expect(predicted.get(name), name).toEqual(row);
  return fileRequired.size;
}

describe("the planner's tensor model against llama.cpp's own files", () => {
  it("deepseek2 (test-llama-archs, F32): every tensor's name and shape", async () => {
    const { arch, rows } = await fileTensors(generateArchModel(join(dir, "deepseek2"), "deepseek2"));
    const fused = rows.has("blk.1.ffn_gate_up_exps.weight");
    const compared = compare(predictedRows(arch, tierOf({ default: "F32" }), fused), rows);
    expect(compared).toBeGreaterThan(20);
  }, 120_000);

  it("deepseek2 after llama-quantize (routed experts Q2_K, the rest Q8_0): the types too, fallbacks included", async () => {
    const source = generateArchModel(join(dir, "deepseek2"), "deepseek2");
    const quantized = await quantizeMix(source, join(dir, "deepseek2-q2-experts.gguf"), "q2-experts");
    const { arch, rows } = await fileTensors(quantized.output);
    const fused = rows.has("blk.1.ffn_gate_up_exps.weight");
    // Rows of 128 and 192 elements are no multiple of 256: Q2_K falls back to Q4_0 in both.
    const predicted = predictedRows(arch, tierOf({ default: "Q8_0", routedExperts: "Q2_K" }), fused);
    compare(predicted, rows);
    expect(new Set([...rows.values()].map((row) => row.type))).toEqual(new Set(["F32", "Q8_0", "Q4_0"]));
  }, 120_000);

  it("kimi-k3 (test-llama-archs): KDA and MLA layers, latent routed experts, attention-residual scores", async () => {
    const { arch, rows } = await fileTensors(generateArchModel(join(dir, "kimi-k3"), "kimi-k3"));
    const compared = compare(predictedRows(arch, tierOf({ default: "F32" }), false), rows);
    expect(compared).toBeGreaterThan(30);
  }, 120_000);
});
