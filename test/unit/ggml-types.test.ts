/**
 * The planner's one ggml type table and llama-quantize's shape fallback (src/llama-quant.cpp
 * tensor_type_fallback in v0.5.0): the expected types are read off that switch, not from the code.
 */
import { describe, expect, it } from "vitest";
import { GGML_TYPES, quantizedType, rowBytes } from "../../planner/ggml-types";

describe("quantizedType", () => {
  it("keeps a type whose block divides the row", () => {
    expect(quantizedType("Q4_K", 7168)).toBe("Q4_K");
    expect(quantizedType("IQ2_XXS", 2048)).toBe("IQ2_XXS");
  });

  it("falls back as llama-quantize does when the block does not divide the row", () => {
    // 2880 = 11.25 × 256 but 90 × 32 (gpt-oss widths).
    expect(quantizedType("IQ2_XXS", 2880)).toBe("IQ4_NL");
    expect(quantizedType("IQ4_XS", 2880)).toBe("IQ4_NL");
    expect(quantizedType("Q2_K", 2880)).toBe("Q4_0");
    expect(quantizedType("Q4_K", 2880)).toBe("Q5_0");
    expect(quantizedType("Q5_K", 2880)).toBe("Q5_1");
    expect(quantizedType("Q6_K", 2880)).toBe("Q8_0");
    // Q2_0's block is 64: a 96-wide row takes Q4_0's 32.
    expect(quantizedType("Q2_0", 96)).toBe("Q4_0");
  });

  it("writes F16 when not even the fallback's block divides the row", () => {
    expect(quantizedType("Q4_K", 48)).toBe("F16");
    expect(quantizedType("Q8_0", 48)).toBe("F16");
  });

  it("sizes rows from the same table", () => {
    expect(rowBytes("Q4_K", 512)).toBe(2 * GGML_TYPES.Q4_K.blockBytes);
    expect(GGML_TYPES.Q4_K).toEqual({ blockElements: 256, blockBytes: 144 });
  });
});
