/**
 * Storage of ggml tensor types: elements per block and bytes per block, as in ggml/src/ggml.c
 * (type_traits). A tensor's size is ceil(elements / blockElements) * blockBytes per row.
 */
export const GGML_TYPES = {
  F32: { blockElements: 1, blockBytes: 4 },
  F16: { blockElements: 1, blockBytes: 2 },
  BF16: { blockElements: 1, blockBytes: 2 },
  Q4_0: { blockElements: 32, blockBytes: 18 },
  Q4_1: { blockElements: 32, blockBytes: 20 },
  Q5_0: { blockElements: 32, blockBytes: 22 },
  Q5_1: { blockElements: 32, blockBytes: 24 },
  Q8_0: { blockElements: 32, blockBytes: 34 },
  Q2_K: { blockElements: 256, blockBytes: 84 },
  Q3_K: { blockElements: 256, blockBytes: 110 },
  Q4_K: { blockElements: 256, blockBytes: 144 },
  Q5_K: { blockElements: 256, blockBytes: 176 },
  Q6_K: { blockElements: 256, blockBytes: 210 },
  Q8_K: { blockElements: 256, blockBytes: 292 },
  IQ2_XXS: { blockElements: 256, blockBytes: 66 },
  IQ2_XS: { blockElements: 256, blockBytes: 74 },
  IQ2_S: { blockElements: 256, blockBytes: 82 },
  IQ3_XXS: { blockElements: 256, blockBytes: 98 },
  IQ3_S: { blockElements: 256, blockBytes: 110 },
  IQ1_S: { blockElements: 256, blockBytes: 50 },
  IQ1_M: { blockElements: 256, blockBytes: 56 },
  IQ4_NL: { blockElements: 32, blockBytes: 18 },
  IQ4_XS: { blockElements: 256, blockBytes: 136 },
  TQ1_0: { blockElements: 256, blockBytes: 54 },
  TQ2_0: { blockElements: 256, blockBytes: 66 },
  MXFP4: { blockElements: 32, blockBytes: 17 },
  // ggml-common.h v0.5.0: block_nvfp4 = 4 UE4M3 scales + 32 bytes per 64; block_q1_0 = f16 + 16 bytes
  // per 128; block_q2_0 = f16 + 16 bytes per 64 (Kimi K3's 1- and 2-bit Unsloth tiers).
  NVFP4: { blockElements: 64, blockBytes: 36 },
  Q1_0: { blockElements: 128, blockBytes: 18 },
  Q2_0: { blockElements: 64, blockBytes: 18 },
} as const;

export type GgmlTypeName = keyof typeof GGML_TYPES;
export const GGML_TYPE_NAMES = Object.keys(GGML_TYPES) as GgmlTypeName[];

/**
 * ggml's numeric type ids (enum ggml_type in ggml.h), for reading GGUF tensor tables.
 */
export const GGML_TYPE_BY_ID: Record<number, GgmlTypeName> = {
  0: "F32",
  1: "F16",
  2: "Q4_0",
  3: "Q4_1",
  6: "Q5_0",
  7: "Q5_1",
  8: "Q8_0",
  10: "Q2_K",
  11: "Q3_K",
  12: "Q4_K",
  13: "Q5_K",
  14: "Q6_K",
  15: "Q8_K",
  16: "IQ2_XXS",
  17: "IQ2_XS",
  18: "IQ3_XXS",
  19: "IQ1_S",
  20: "IQ4_NL",
  21: "IQ3_S",
  22: "IQ2_S",
  23: "IQ4_XS",
  29: "IQ1_M",
  30: "BF16",
  34: "TQ1_0",
  35: "TQ2_0",
  39: "MXFP4",
  40: "NVFP4",
  41: "Q1_0",
  42: "Q2_0",
};

export function bitsPerWeight(type: GgmlTypeName): number {
  const { blockElements, blockBytes } = GGML_TYPES[type];
  return (blockBytes * 8) / blockElements;
}

/**
 * llama-quantize's fallback when a tensor's row length is not a multiple of the target type's block
 * (src/llama-quant.cpp tensor_type_fallback, v0.5.0): 256-block i-quants to IQ4_NL, the small K-quants
 * and ternary types to Q4_0, Q4_K/Q5_K/Q6_K to Q5_0/Q5_1/Q8_0; a 32-block type has no smaller block.
 */
const QUANTIZE_FALLBACK: Partial<Record<GgmlTypeName, GgmlTypeName>> = {
  IQ1_S: "IQ4_NL",
  IQ1_M: "IQ4_NL",
  IQ2_XXS: "IQ4_NL",
  IQ2_XS: "IQ4_NL",
  IQ2_S: "IQ4_NL",
  IQ3_XXS: "IQ4_NL",
  IQ3_S: "IQ4_NL",
  IQ4_XS: "IQ4_NL",
  Q2_0: "Q4_0",
  Q2_K: "Q4_0",
  Q3_K: "Q4_0",
  TQ1_0: "Q4_0",
  TQ2_0: "Q4_0",
  Q4_K: "Q5_0",
  Q5_K: "Q5_1",
  Q6_K: "Q8_0",
};

/**
 * The type llama-quantize writes for a tensor of `rowLength` columns asked to be `target`: the target, its fallback, or
 * F16 when neither fits.
 */
export function quantizedType(target: GgmlTypeName, rowLength: number): GgmlTypeName {
  if (rowLength % GGML_TYPES[target].blockElements === 0) return target;
  const fallback = QUANTIZE_FALLBACK[target] ?? target;
  return rowLength % GGML_TYPES[fallback].blockElements === 0 ? fallback : "F16";
}

/** Bytes of one row of `elements` values (ggml_row_size). */
export function rowBytes(type: GgmlTypeName, elements: number): number {
  const { blockElements, blockBytes } = GGML_TYPES[type];
  return Math.ceil(elements / blockElements) * blockBytes;
}

/** Bytes of a tensor whose first dimension is the row length (ggml_nbytes for contiguous tensors). */
export function tensorBytes(type: GgmlTypeName, shape: readonly number[]): number {
  const [rowLength = 1, ...rest] = shape;
  return rowBytes(type, rowLength) * rest.reduce((product, n) => product * n, 1);
}

/** KV cache types llama-server v0.5.0 accepts for -ctk/-ctv (from its --help). */
export const KV_CACHE_TYPES = ["f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1"] as const;
export type KvCacheType = (typeof KV_CACHE_TYPES)[number];

export function kvTypeToGgml(type: KvCacheType): GgmlTypeName {
  return type.toUpperCase() as GgmlTypeName;
}
