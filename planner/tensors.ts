/**
 * The model's tensors, one entry per GGUF tensor: from the catalog's architecture and a tier's
 * per-class types (the fallback), or from a manifest lock that lists every tensor of every shard
 * (read from the real GGUF headers). Everything downstream — placement, memory, speed — works on
 * this list, so real tensor tables replace catalog estimates without touching the rest.
 */
import type { Architecture, Tier, TensorClass } from "./catalog";
import { tensorBytes, type GgmlTypeName } from "./ggml-types";

export interface TensorInfo {
  name: string;
  /** Layer index for blk.N.* tensors; null for token_embd, output and output_norm. */
  layer: number | null;
  cls: TensorClass;
  type: GgmlTypeName;
  /** GGUF order: shape[0] is the row length. */
  shape: number[];
  elements: number;
  bytes: number;
  /** Shard index and byte offset in its data section, when read from real GGUF headers (a lock). */
  file?: number;
  offset?: number;
}

export function classifyTensor(name: string, shape: readonly number[]): TensorClass {
  if (name.startsWith("token_embd.")) return "embedding";
  if (name.startsWith("output.")) return "output";
  if (/_exps\./.test(name)) return "routedExperts";
  if (/_shexp\./.test(name)) return "sharedExperts";
  if (/ffn_gate_inp|exp_probs_b/.test(name)) return "router";
  if (/norm/.test(name) || shape.length === 1) return "norms";
  if (/^blk\.\d+\.ffn_(gate|up|down|gate_up)\./.test(name)) return "denseFfn";
  return "attention";
}

export function layerOf(name: string): number | null {
  const match = /^blk\.(\d+)\./.exec(name);
  return match ? Number(match[1]) : null;
}

export function makeTensor(name: string, type: GgmlTypeName, shape: number[]): TensorInfo {
  return {
    name,
    layer: layerOf(name),
    cls: classifyTensor(name, shape),
    type,
    shape,
    elements: shape.reduce((product, n) => product * n, 1),
    bytes: tensorBytes(type, shape),
  };
}

/**
 * Types llama-quantize cannot use for a row length fall back to one it can (llama-quant.cpp):
 * K- and I-quants need rows divisible by 256; the 32-element blocks need rows divisible by 32.
 */
const K_QUANT_FALLBACK: Partial<Record<GgmlTypeName, GgmlTypeName>> = {
  Q2_K: "Q4_0", Q3_K: "Q4_0", IQ2_XXS: "Q4_0", IQ2_XS: "Q4_0", IQ2_S: "Q4_0", IQ3_XXS: "Q4_0", IQ3_S: "Q4_0", IQ1_S: "Q4_0", IQ1_M: "Q4_0", TQ1_0: "Q4_0", TQ2_0: "Q4_0",
  IQ4_XS: "IQ4_NL", Q4_K: "Q5_0", Q5_K: "Q5_1", Q6_K: "Q8_0",
};

function fitType(type: GgmlTypeName, rowLength: number): GgmlTypeName {
  const fallback = K_QUANT_FALLBACK[type];
  if (fallback && rowLength % 256 !== 0) return fitType(fallback, rowLength);
  if (/^Q[458]_[01]$|^IQ4_NL$|^MXFP4$/.test(type) && rowLength % 32 !== 0) return "F16";
  return type;
}

/** Tensor list of a deepseek2 (MLA + routed and shared experts) model, as llama.cpp names them. */
export function tensorsFromArchitecture(arch: Architecture, tier: Tier): TensorInfo[] {
  const t = tier.types;
  const tensors: TensorInfo[] = [];
  const add = (name: string, type: GgmlTypeName, shape: number[]) => tensors.push(makeTensor(name, fitType(type, shape[0]!), shape));
  const h = arch.hiddenSize;
  const qkHead = arch.qkNopeHeadDim + arch.qkRopeHeadDim;

  add("token_embd.weight", t.embedding as GgmlTypeName, [h, arch.vocabSize]);
  for (let layer = 0; layer < arch.layers; layer++) {
    const p = `blk.${layer}.`;
    add(`${p}attn_norm.weight`, "F32", [h]);
    add(`${p}attn_q_a_norm.weight`, "F32", [arch.qLoraRank]);
    add(`${p}attn_kv_a_norm.weight`, "F32", [arch.kvLoraRank]);
    const attention = t.attention as GgmlTypeName;
    add(`${p}attn_q_a.weight`, attention, [h, arch.qLoraRank]);
    add(`${p}attn_q_b.weight`, attention, [arch.qLoraRank, arch.attentionHeads * qkHead]);
    add(`${p}attn_kv_a_mqa.weight`, attention, [h, arch.kvLoraRank + arch.qkRopeHeadDim]);
    add(`${p}attn_k_b.weight`, attention, [arch.qkNopeHeadDim, arch.kvLoraRank, arch.attentionHeads]);
    add(`${p}attn_v_b.weight`, attention, [arch.kvLoraRank, arch.vHeadDim, arch.attentionHeads]);
    add(`${p}attn_output.weight`, attention, [arch.attentionHeads * arch.vHeadDim, h]);
    add(`${p}ffn_norm.weight`, "F32", [h]);
    if (layer < arch.denseLeadingLayers) {
      const dense = t.denseFfn as GgmlTypeName;
      add(`${p}ffn_gate.weight`, dense, [h, arch.denseFfnSize]);
      add(`${p}ffn_up.weight`, dense, [h, arch.denseFfnSize]);
      add(`${p}ffn_down.weight`, dense, [arch.denseFfnSize, h]);
      continue;
    }
    add(`${p}ffn_gate_inp.weight`, t.router as GgmlTypeName, [h, arch.routedExperts]);
    add(`${p}exp_probs_b.bias`, "F32", [arch.routedExperts]);
    const experts = t.routedExperts as GgmlTypeName;
    add(`${p}ffn_gate_exps.weight`, experts, [h, arch.expertFfnSize, arch.routedExperts]);
    add(`${p}ffn_up_exps.weight`, experts, [h, arch.expertFfnSize, arch.routedExperts]);
    add(`${p}ffn_down_exps.weight`, experts, [arch.expertFfnSize, h, arch.routedExperts]);
    if (arch.sharedExperts > 0) {
      const shared = t.sharedExperts as GgmlTypeName;
      const width = arch.expertFfnSize * arch.sharedExperts;
      add(`${p}ffn_gate_shexp.weight`, shared, [h, width]);
      add(`${p}ffn_up_shexp.weight`, shared, [h, width]);
      add(`${p}ffn_down_shexp.weight`, shared, [width, h]);
    }
  }
  add("output_norm.weight", "F32", [h]);
  add("output.weight", t.output as GgmlTypeName, [h, arch.vocabSize]);
  return tensors;
}

export function totalBytes(tensors: readonly TensorInfo[]): number {
  return tensors.reduce((sum, tensor) => sum + tensor.bytes, 0);
}

/** Fraction of a tensor that one decoded token reads: a router picks activeExperts of routedExperts. */
export function decodeReadFraction(tensor: TensorInfo, arch: Architecture): number {
  if (tensor.cls === "routedExperts") return arch.activeExperts / arch.routedExperts;
  if (tensor.cls === "embedding") return 1 / arch.vocabSize;
  return 1;
}

/** Multiply-accumulate FLOPs per token through a weight tensor (2 per weight actually used). */
export function matmulFlopsPerToken(tensor: TensorInfo, arch: Architecture): number {
  if (tensor.cls === "norms" || tensor.cls === "embedding" || tensor.name.includes("exp_probs_b")) return 0;
  return 2 * tensor.elements * decodeReadFraction(tensor, arch);
}

/**
 * Attention FLOPs per token per layer at a depth: per head, scores over the key width and a weighted
 * sum over the value width (MLA absorbed as mainline llama.cpp runs it: kv_lora+rope and kv_lora).
 */
export function attentionFlopsPerTokenPerLayer(arch: Architecture, depthTokens: number): number {
  const key = arch.attention?.kind === "gqa" ? arch.attention.keyLength : arch.kvLoraRank + arch.qkRopeHeadDim;
  const value = arch.attention?.kind === "gqa" ? arch.attention.valueLength : arch.kvLoraRank;
  return 2 * arch.attentionHeads * (key + value) * depthTokens;
}
