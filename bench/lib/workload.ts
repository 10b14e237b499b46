/**
 * The speed workload the benches time (bench/accuracy.ts, bench/rpc.ts), so that their figures and
 * fitted factors are of the same thing: a prompt of PROMPT_TOKENS token ids, then GENERATED_TOKENS
 * decoded, with llama-server's own timings; and where the generated bench models are cached.
 */
import { join } from "node:path";

/** The prompt and generation the speed cases time: decode then runs at depths 256–383, prefill over 256 tokens. */
export const PROMPT_TOKENS = 256;
export const GENERATED_TOKENS = 128; // long enough that one slow scheduling slice on this shared VM moves the median little
export const DECODE_DEPTH = PROMPT_TOKENS + GENERATED_TOKENS / 2;

/** Where the generated and quantized bench models are cached between runs. */
export function benchModelsDir(): string {
  return join(process.env.KIMI_KIT_CACHE ?? join(process.env.HOME ?? "/tmp", ".cache", "kimi-kit"), "bench-models");
}

/** Run `run`'s prompt: token ids spread over the vocabulary (never 0), different per run. */
export function benchPrompt(vocabSize: number, run: number, tokens = PROMPT_TOKENS): number[] {
  return Array.from({ length: tokens }, (_, i) => ((i * 7919 + run * 104729) % (vocabSize - 2)) + 1);
}
