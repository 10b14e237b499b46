/**
 * The model's tensors, one entry per GGUF tensor: from the catalog's architecture and a tier's
 * per-class types (the fallback), or from a manifest lock that lists every tensor of every shard
 * (read from the real GGUF headers). Everything downstream — placement, memory, speed — works on
 * this list, so real tensor tables replace catalog estimates without touching the rest.
 */
import type { Architecture, Tier, TensorClass } from "./catalog";
import { quantizedType, tensorBytes, type GgmlTypeName } from "./ggml-types";

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
/** Tensor list of a deepseek2 (MLA + routed and shared experts) or kimi-k3 model, as llama.cpp names them. */
export function tensorsFromArchitecture(arch: Architecture, tier: Tier): TensorInfo[] {
  if (arch.llamaCppArch === "kimi-k3") return kimiK3Tensors(arch, tier);
  const t = tier.types;
  const tensors: TensorInfo[] = [];
  const add = (name: string, type: GgmlTypeName, shape: number[]) =>
    tensors.push(makeTensor(name, quantizedType(type, shape[0]!), shape));
  const h = arch.hiddenSize;
  const qkHead = arch.qkNopeHeadDim + arch.qkRopeHeadDim;

  add("token_embd.weight", t.embedding as GgmlTypeName, [h, arch.vocabSize]);
  for (let layer = 0; layer < arch.layers; layer++) {
    const p = `blk.${layer}.`;
    // In the order llama.cpp's converter writes them (the generated test models are written from this list).
    const attention = t.attention as GgmlTypeName;
    add(`${p}attn_norm.weight`, "F32", [h]);
    add(`${p}attn_q_a.weight`, attention, [h, arch.qLoraRank]);
    add(`${p}attn_q_a_norm.weight`, "F32", [arch.qLoraRank]);
    add(`${p}attn_q_b.weight`, attention, [arch.qLoraRank, arch.attentionHeads * qkHead]);
    add(`${p}attn_kv_a_mqa.weight`, attention, [h, arch.kvLoraRank + arch.qkRopeHeadDim]);
    add(`${p}attn_kv_a_norm.weight`, "F32", [arch.kvLoraRank]);
    add(`${p}attn_k_b.weight`, attention, [arch.qkNopeHeadDim, arch.kvLoraRank, arch.attentionHeads]);
    add(`${p}attn_v_b.weight`, attention, [arch.kvLoraRank, arch.vHeadDim, arch.attentionHeads]);
    add(`${p}attn_output.weight`, attention, [arch.attentionHeads * arch.vHeadDim, h]);
    addFfn(add, layer, arch, tier);
  }
  add("output_norm.weight", "F32", [h]);
  add("output.weight", t.output as GgmlTypeName, [h, arch.vocabSize]);
  return tensors;
}

/**
 * kimi-k3's tensors (llama.cpp src/models/kimi-k3.cpp; names and shapes as test-llama-archs writes
 * them): KDA layers (q/k/v/o and output gate over heads × headDim, short convolutions, decay
 * low-rank f_a/f_b, beta) or gated MLA layers; the first layer(s) a dense FFN, the rest routed
 * experts in a latent width (ffn_routed_down: hidden → latent, ffn_routed_up: latent → hidden)
 * beside shared experts in the hidden width; attention-residual scores per layer. Per-tensor F32
 * scale scalars the converter may add are left out (bytes, not kilobytes).
 */
function kimiK3Tensors(arch: Architecture, tier: Tier): TensorInfo[] {
  const t = tier.types;
  const tensors: TensorInfo[] = [];
  const add = (name: string, type: GgmlTypeName, shape: number[]) =>
    tensors.push(makeTensor(name, quantizedType(type, shape[0]!), shape));
  const h = arch.hiddenSize;
  const kda = arch.recurrent?.kda;
  if (!kda || arch.expertLatentSize === undefined)
    throw new Error(`internal: kimi-k3 architecture without KDA shapes or expert latent width`);
  const inner = kda.heads * kda.headDim;
  const latent = arch.expertLatentSize;
  const qkHead = arch.qkNopeHeadDim + arch.qkRopeHeadDim;
  const attention = t.attention as GgmlTypeName;
  add("token_embd.weight", t.embedding as GgmlTypeName, [h, arch.vocabSize]);
  for (let layer = 0; layer < arch.layers; layer++) {
    const p = `blk.${layer}.`;
    add(`${p}attn_norm.weight`, "F32", [h]);
    add(`${p}attn_res_score.weight`, "F32", [h]);
    add(`${p}ffn_res_score.weight`, "F32", [h]);
    if (arch.recurrent!.layers.includes(layer)) {
      for (const name of ["attn_q", "attn_k", "attn_v"]) add(`${p}${name}.weight`, attention, [h, inner]);
      add(`${p}attn_output.weight`, attention, [inner, h]);
      for (const name of ["ssm_conv1d_q", "ssm_conv1d_k", "ssm_conv1d_v"])
        add(`${p}${name}.weight`, "F32", [kda.convKernel, 1, inner]);
      add(`${p}ssm_f_a.weight`, attention, [h, kda.headDim]);
      add(`${p}ssm_f_b.weight`, attention, [kda.headDim, inner]);
      add(`${p}ssm_g.weight`, attention, [h, inner]);
      add(`${p}ssm_beta.weight`, "F32", [h, kda.heads]);
      add(`${p}ssm_a`, "F32", [kda.heads]);
      add(`${p}ssm_dt.bias`, "F32", [inner]);
      add(`${p}ssm_norm.weight`, "F32", [kda.headDim]);
    } else {
      add(`${p}attn_q_a_norm.weight`, "F32", [arch.qLoraRank]);
      add(`${p}attn_kv_a_norm.weight`, "F32", [arch.kvLoraRank]);
      add(`${p}attn_q_a.weight`, attention, [h, arch.qLoraRank]);
      add(`${p}attn_q_b.weight`, attention, [arch.qLoraRank, arch.attentionHeads * qkHead]);
      add(`${p}attn_kv_a_mqa.weight`, attention, [h, arch.kvLoraRank + arch.qkRopeHeadDim]);
      add(`${p}attn_k_b.weight`, attention, [arch.qkNopeHeadDim, arch.kvLoraRank, arch.attentionHeads]);
      add(`${p}attn_v_b.weight`, attention, [arch.kvLoraRank, arch.vHeadDim, arch.attentionHeads]);
      add(`${p}attn_gate.weight`, attention, [h, arch.attentionHeads * arch.vHeadDim]);
      add(`${p}attn_output.weight`, attention, [arch.attentionHeads * arch.vHeadDim, h]);
    }
    if (layer >= arch.denseLeadingLayers) {
      // The latent projections around the routed experts (hidden → latent → hidden).
      add(`${p}ffn_routed_down.weight`, attention, [h, latent]);
      add(`${p}ffn_routed_up.weight`, attention, [latent, h]);
      add(`${p}ffn_routed_norm.weight`, "F32", [latent]);
    }
    addFfn(add, layer, arch, tier);
  }
  add("output_norm.weight", "F32", [h]);
  add("output_res_score.weight", "F32", [h]);
  add("output.weight", t.output as GgmlTypeName, [h, arch.vocabSize]);
  return tensors;
}

/**
 * A layer's FFN as deepseek2 and kimi-k3 name it: a dense FFN on the leading layers; otherwise the
 * router, the routed experts (in the expert latent width where the model has one, else the hidden
 * width) and the shared experts (hidden width, expertFfnSize × sharedExperts).
 */
function addFfn(
  add: (name: string, type: GgmlTypeName, shape: number[]) => void,
  layer: number,
  arch: Architecture,
  tier: Tier,
): void {
  const t = tier.types;
  const p = `blk.${layer}.`;
  const h = arch.hiddenSize;
  add(`${p}ffn_norm.weight`, "F32", [h]);
  if (layer < arch.denseLeadingLayers) {
    const dense = t.denseFfn as GgmlTypeName;
    add(`${p}ffn_gate.weight`, dense, [h, arch.denseFfnSize]);
    add(`${p}ffn_up.weight`, dense, [h, arch.denseFfnSize]);
    add(`${p}ffn_down.weight`, dense, [arch.denseFfnSize, h]);
    return;
  }
  add(`${p}ffn_gate_inp.weight`, t.router as GgmlTypeName, [h, arch.routedExperts]);
  add(`${p}exp_probs_b.bias`, "F32", [arch.routedExperts]);
  const width = arch.expertLatentSize ?? h;
  const experts = t.routedExperts as GgmlTypeName;
  add(`${p}ffn_gate_exps.weight`, experts, [width, arch.expertFfnSize, arch.routedExperts]);
  add(`${p}ffn_up_exps.weight`, experts, [width, arch.expertFfnSize, arch.routedExperts]);
  add(`${p}ffn_down_exps.weight`, (tier.routedExpertsDown ?? experts) as GgmlTypeName, [
    arch.expertFfnSize,
    width,
    arch.routedExperts,
  ]);
  if (arch.sharedExperts > 0) {
    const shared = t.sharedExperts as GgmlTypeName;
    const sharedWidth = arch.expertFfnSize * arch.sharedExperts;
    add(`${p}ffn_gate_shexp.weight`, shared, [h, sharedWidth]);
    add(`${p}ffn_up_shexp.weight`, shared, [h, sharedWidth]);
    add(`${p}ffn_down_shexp.weight`, shared, [sharedWidth, h]);
  }
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
