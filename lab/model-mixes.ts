/**
 * Tier-like quantization mixes of generated deepseek2 (Kimi K2-shaped) models, made with the
 * llama-quantize of the tested llama.cpp release, and presets of generated models to feed them:
 *
 * - "q2-experts": routed experts Q2_K, everything else that llama-quantize quantizes Q8_0
 *   (attention, shared experts, dense FFN, token_embd, output); router (ffn_gate_inp), expert
 *   bias and norms stay F32 (llama-quantize never quantizes them) — the shape of the UD-Q2_K_XL tier.
 * - "q4-experts": the same with routed experts Q4_K — the shape of the UD-Q4_K_XL tier.
 *
 * K-quants need rows (ne[0]) that are multiples of 256; llama-quantize falls back for other
 * tensors (Q2_K → Q4_0, Q4_K → Q5_0, then F16 if even 32 does not divide). The generated presets
 * use hidden and expertFfn multiples of 256 so their experts get the real K-quant; the "tiny"
 * test-llama-archs model (hidden 128) shows the fallback.
 */
import { execFile } from "node:child_process";
import { existsSync, renameSync, rmSync, statSync } from "node:fs";
import { availableParallelism } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { gguf, GGMLQuantizationType } from "@huggingface/gguf";
import { GGML_TYPES, quantizedType, type GgmlTypeName } from "../planner/ggml-types";
import type { TensorClass } from "../planner/catalog";
import { architectureFromMetadata, scalarMetadata } from "../planner/lock";
import { classifyTensor } from "../planner/tensors";
import {
  deepseek2DimsOf,
  deepseek2Size,
  deepseek2TensorPlan,
  writeDeepseek2Gguf,
  type Deepseek2Dims,
  type GgufTensorType,
} from "./gguf-writer";
import { llamaTool } from "./llama-cpp";
import { generateDeepseek2Model } from "./models";

const execFileAsync = promisify(execFile);

export type MixName = "q2-experts" | "q4-experts";
export const MIX_NAMES: readonly MixName[] = ["q2-experts", "q4-experts"];

export interface MixDefinition {
  /** llama-quantize's base type argument: every quantizable tensor not named below */
  base: GgmlTypeName;
  /** the type of the routed expert tensors (ffn_{gate,up,down,gate_up}_exps) */
  experts: GgmlTypeName;
}

export const MIXES: Record<MixName, MixDefinition> = {
  "q2-experts": { base: "Q8_0", experts: "Q2_K" },
  "q4-experts": { base: "Q8_0", experts: "Q4_K" },
};

const EXPERT_TENSORS = ["ffn_gate_exps", "ffn_up_exps", "ffn_down_exps", "ffn_gate_up_exps"];

/**
 * llama-quantize's arguments for `mix` (after the program name). `--pure` turns off the mixture
 * heuristics of the base ftype so every tensor not matched by a `--tensor-type` pattern (a regex
 * searched in the tensor name, first match wins) gets the base type; tensors llama-quantize never
 * quantizes (1-D, *_norm.weight, ffn_gate_inp.weight) keep their source type.
 */
export function quantizeArgs(input: string, output: string, mix: MixName, threads = availableParallelism()): string[] {
  const def = MIXES[mix];
  return [
    "--pure",
    ...EXPERT_TENSORS.flatMap((t) => ["--tensor-type", `${t}=${def.experts.toLowerCase()}`]),
    input,
    output,
    def.base,
    String(threads),
  ];
}

export interface QuantizeResult {
  output: string;
  /** the llama-quantize command line (program name first) */
  command: string[];
  seconds: number;
  bytes: number;
  /** true when an earlier call's output was reused */
  reused: boolean;
}

/**
 * Quantizes `input` into `output` with the tier-like `mix` (see MIXES). Writes `output.partial`
 * and renames it, and reuses an existing `output`, so a per-run temp folder works as a cache.
 */
export async function quantizeMix(
  input: string,
  output: string,
  mix: MixName,
  options: { threads?: number; timeoutMs?: number } = {},
): Promise<QuantizeResult> {
  const partial = `${output}.partial`;
  const command = [llamaTool("llama-quantize"), ...quantizeArgs(input, partial, mix, options.threads)];
  if (existsSync(output) && statSync(output).size > 0) {
    return { output, command, seconds: 0, bytes: statSync(output).size, reused: true };
  }
  const started = Date.now();
  try {
    await execFileAsync(command[0] as string, command.slice(1), {
      timeout: options.timeoutMs ?? 5 * 60_000,
      maxBuffer: 64 * 1024 * 1024,
    });
  } catch (error) {
    rmSync(partial, { force: true });
    const e = error as { stderr?: string; stdout?: string };
    const log = `${e.stdout ?? ""}${e.stderr ?? ""}`.split("\n").slice(-40).join("\n");
    throw new Error(`${command.join(" ")} failed:\n${log || String(error)}`, { cause: error });
  }
  renameSync(partial, output);
  return { output, command, seconds: (Date.now() - started) / 1000, bytes: statSync(output).size, reused: false };
}

/** The type llama-quantize targets per tensor class under `mix` (before the shape fallback); "source" = left as is. */
export function mixClassTypes(mix: MixName): Record<TensorClass, GgmlTypeName | "source"> {
  const def = MIXES[mix];
  return {
    embedding: def.base,
    output: def.base,
    attention: def.base,
    denseFfn: def.base,
    sharedExperts: def.base,
    routedExperts: def.experts,
    // llama-quantize never quantizes the router, the expert bias or the norms.
    norms: "source",
    router: "source",
  };
}

/** The type a tensor of `sourceType` and `shape` (ggml order) ends up with after quantizeMix(…, mix). */
export function expectedMixType(
  mix: MixName,
  tensor: { name: string; shape: readonly number[]; type: GgmlTypeName },
): GgmlTypeName {
  const target = mixClassTypes(mix)[classifyTensor(tensor.name, tensor.shape)];
  let nDims = tensor.shape.length;
  while (nDims > 1 && tensor.shape[nDims - 1] === 1) nDims--;
  if (target === "source" || nDims < 2) return tensor.type;
  // llama-quantize's shape fallback, the planner's one table of it.
  return quantizedType(target, tensor.shape[0] as number);
}

export type ModelPreset = "tiny" | "medium" | "large";

const COMMON = {
  qkNopeHeadDim: 128,
  qkRopeHeadDim: 64,
  vHeadDim: 128,
  kvLoraRank: 512,
  sharedExperts: 1,
  denseLeadingLayers: 1,
};

/**
 * Generated presets (the Kimi K2 ratios shrunk: MLA 512/64/128/128, 1 leading dense layer,
 * 1 shared expert; hidden and expertFfn multiples of 256 for K-quants).
 * medium: 232 M params, 465 MB F16 (written in 1–3 s) → 118 MB q2-experts, 159 MB q4-experts
 *         (llama-quantize 6–12 s each on 2 cores).
 * large:  375 M params, 750 MB F16 (written in 2–3 s) → 205 MB q2-experts, 267 MB q4-experts.
 */
export const PRESET_DIMS: Record<Exclude<ModelPreset, "tiny">, Deepseek2Dims> = {
  medium: {
    ...COMMON,
    layers: 8,
    hidden: 1024,
    heads: 8,
    qLoraRank: 512,
    denseFfn: 2816,
    experts: 16,
    activeExperts: 4,
    expertFfn: 512,
    vocab: 2048,
    contextLength: 4096,
  },
  large: {
    ...COMMON,
    layers: 8,
    hidden: 1536,
    heads: 12,
    qLoraRank: 768,
    denseFfn: 4096,
    experts: 16,
    activeExperts: 4,
    expertFfn: 512,
    vocab: 4096,
    contextLength: 8192,
  },
};

export interface CaseTensor {
  name: string;
  /** ggml order (ne[0] first) */
  shape: number[];
  type: GgmlTypeName;
  class: TensorClass;
}

export interface GeneratedModelCase {
  preset: ModelPreset;
  dims: Deepseek2Dims;
  /** the unquantized model */
  source: string;
  sourceType: GgufTensorType;
  sourceBytes: number;
  /** llama-quantize leaves fused ffn_gate_up_exps (test-llama-archs) or separate gate/up experts */
  fusedGateUp: boolean;
  /** the source's tensors as planned (generated) or as read from its header (tiny) */
  tensors: CaseTensor[];
  /** per mix: where quantizeMix should write it, the target type per tensor class, and per tensor after fallbacks */
  mixes: Record<
    MixName,
    {
      path: string;
      classTypes: Record<TensorClass, GgmlTypeName | "source">;
      tensorTypes: Record<string, GgmlTypeName>;
    }
  >;
}

/** A type id as @huggingface/gguf names it (the independent reader), checked against the planner's ggml type table. */
const typeName = (t: number): GgmlTypeName => {
  const name = GGMLQuantizationType[t];
  if (!name || !(name in GGML_TYPES)) throw new Error(`unknown ggml type ${t} (${name ?? "no name"})`);
  return name as GgmlTypeName;
};

/**
 * Reads a deepseek2 GGUF's dimensions from its metadata (through the planner's one metadata reader) and its tensors.
 */
export async function readDeepseek2Dims(path: string): Promise<{ dims: Deepseek2Dims; tensors: CaseTensor[] }> {
  const { metadata, tensorInfos } = await gguf(path, { allowLocalFile: true });
  const dims = deepseek2DimsOf(architectureFromMetadata(scalarMetadata(metadata as Record<string, unknown>)));
  const tensors = tensorInfos.map((t) => {
    const shape = t.shape.map(Number);
    return { name: t.name, shape, type: typeName(t.dtype), class: classifyTensor(t.name, shape) };
  });
  return { dims, tensors };
}

/**
 * A model to quantize and serve: "tiny" is test-llama-archs' 4.4 MB F32 deepseek2 model (fused
 * gate/up experts, hidden 128: K-quants fall back), "medium" and "large" are written by
 * writeDeepseek2Gguf in F16 with PRESET_DIMS. Files are made once per `dir` and reused.
 */
export async function generatedModelCase(dir: string, preset: ModelPreset): Promise<GeneratedModelCase> {
  let source: string;
  let sourceType: GgufTensorType;
  let dims: Deepseek2Dims;
  let tensors: CaseTensor[];
  if (preset === "tiny") {
    source = generateDeepseek2Model(join(dir, "tiny"));
    sourceType = "F32";
    ({ dims, tensors } = await readDeepseek2Dims(source));
  } else {
    dims = PRESET_DIMS[preset];
    sourceType = "F16";
    source = join(dir, `${preset}-f16.gguf`);
    const planned = deepseek2TensorPlan(dims, sourceType);
    if (!(existsSync(source) && statSync(source).size >= deepseek2Size(dims, sourceType).bytes)) {
      writeDeepseek2Gguf(source, dims, { type: sourceType, name: `kimi-kit-test-${preset}` });
    }
    tensors = planned.map((t) => ({ name: t.name, shape: t.shape, type: t.type, class: t.class }));
  }
  const mixes = {} as GeneratedModelCase["mixes"];
  for (const mix of MIX_NAMES) {
    mixes[mix] = {
      path: join(dir, `${preset}-${mix}.gguf`),
      classTypes: mixClassTypes(mix),
      tensorTypes: Object.fromEntries(tensors.map((t) => [t.name, expectedMixType(mix, t)])),
    };
  }
  return {
    preset,
    dims,
    source,
    sourceType,
    sourceBytes: statSync(source).size,
    fusedGateUp: tensors.some((t) => t.name.endsWith("ffn_gate_up_exps.weight")),
    tensors,
    mixes,
  };
}
