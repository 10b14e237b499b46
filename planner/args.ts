/**
 * The llama-server argument list for the pinned release (v0.5.0), as one table of the flags the kit
 * sets — each row with its environment twin and why — in the manner of llama.cpp's common/arg.cpp.
 * A unit test checks every flag and env name against that release's --help.
 * The API key is never an argument: the server reads it from a file mounted into the container.
 */
import type { ModelEntry } from "./catalog";
import type { HostSpec } from "./host";
import type { Placement } from "./offload";
import type { KvCacheType } from "./ggml-types";

export interface ArgsInputs {
  model: ModelEntry;
  host: HostSpec;
  placement: Placement;
  modelPath: string;
  apiKeyFile: string;
  bindAddress: string;
  port: number;
  contextPerSlot: number;
  slots: number;
  kvCacheType: KvCacheType;
}

interface FlagRow {
  flag: string;
  env: string | null;
  /** Values to pass; [] for a bare switch; undefined to leave the flag out. Several values repeat the flag. */
  values: (inputs: ArgsInputs) => string[] | string | undefined;
  why: (inputs: ArgsInputs) => string;
}

const hasGpus = (inputs: ArgsInputs) => inputs.host.gpus.length > 0;

export const FLAG_TABLE: readonly FlagRow[] = [
  { flag: "--model", env: "LLAMA_ARG_MODEL", values: (i) => i.modelPath, why: () => "split GGUFs load from their first shard; llama.cpp finds the rest beside it" },
  { flag: "--alias", env: "LLAMA_ARG_ALIAS", values: (i) => i.model.serving.alias, why: () => "the model name clients send in the OpenAI API" },
  { flag: "--host", env: "LLAMA_ARG_HOST", values: (i) => i.bindAddress, why: (i) => (i.bindAddress === "127.0.0.1" ? "loopback only: the stack does not open the port" : "the stack opens the port; the API key is always required") },
  { flag: "--port", env: "LLAMA_ARG_PORT", values: (i) => String(i.port), why: () => "always explicit: the default port differs between releases" },
  { flag: "--api-key-file", env: "LLAMA_ARG_API_KEY_FILE", values: (i) => i.apiKeyFile, why: () => "the key stays out of the argument list, docker inspect and logs" },
  { flag: "--ctx-size", env: "LLAMA_ARG_CTX_SIZE", values: (i) => String(i.contextPerSlot * i.slots), why: (i) => `${i.slots} slot(s) × ${i.contextPerSlot} tokens each` },
  { flag: "--parallel", env: "LLAMA_ARG_N_PARALLEL", values: (i) => String(i.slots), why: () => "slots are set, not auto, so the KV cache is the size the plan counted" },
  { flag: "--cache-type-k", env: "LLAMA_ARG_CACHE_TYPE_K", values: (i) => i.kvCacheType, why: () => "MLA stores only K (the latent); -ctv would have no effect" },
  { flag: "--flash-attn", env: "LLAMA_ARG_FLASH_ATTN", values: () => "on", why: () => "no materialized attention matrix, so compute buffers stay small at long context" },
  { flag: "--threads", env: "LLAMA_ARG_THREADS", values: (i) => String(i.host.cpu.cores), why: (i) => `one thread per physical core (${i.host.cpu.cores}); hyperthreads only contend for the same memory bandwidth` },
  { flag: "--threads-batch", env: null, values: (i) => String(i.host.cpu.cores), why: () => "prompt processing is compute-bound: all physical cores" },
  { flag: "--numa", env: "LLAMA_ARG_NUMA", values: (i) => (i.host.cpu.numaNodes > 1 ? "distribute" : undefined), why: (i) => `${i.host.cpu.numaNodes} NUMA nodes: spread threads and pages over all of them` },
  { flag: "--load-mode", env: "LLAMA_ARG_LOAD_MODE", values: (i) => i.placement.loadMode, why: () => "weights read once into llama.cpp's buffers; no page-cache double" },
  { flag: "--no-repack", env: "LLAMA_ARG_REPACK", values: (i) => (i.placement.repack ? undefined : []), why: () => "CPU experts must stay copyable to the GPU for big-batch prefill" },
  { flag: "--batch-size", env: "LLAMA_ARG_BATCH", values: (i) => String(i.placement.batch), why: () => "logical batch" },
  { flag: "--ubatch-size", env: "LLAMA_ARG_UBATCH", values: (i) => String(i.placement.ubatch), why: (i) => (i.placement.mode === "hybrid" ? "fewer PCIe passes of the CPU experts per prompt" : "llama.cpp's default physical batch") },
  { flag: "--gpu-layers", env: "LLAMA_ARG_N_GPU_LAYERS", values: (i) => (hasGpus(i) ? "all" : undefined), why: () => "every layer's attention and KV on the GPUs" },
  { flag: "--split-mode", env: "LLAMA_ARG_SPLIT_MODE", values: (i) => (i.host.gpus.length > 1 ? "layer" : undefined), why: () => "whole layers per GPU, pipelined" },
  { flag: "--tensor-split", env: "LLAMA_ARG_TENSOR_SPLIT", values: (i) => (i.host.gpus.length > 1 ? i.placement.tensorSplit?.join(",") : undefined), why: () => "layers split by VRAM, explicitly, so the plan's placement is llama.cpp's" },
  { flag: "--override-tensor", env: "LLAMA_ARG_OVERRIDE_TENSOR", values: (i) => (i.placement.overrideRules.length > 0 ? i.placement.overrideRules : undefined), why: () => "expert layers placed per GPU first, the rest on CPU last (first match wins)" },
  { flag: "--fit", env: "LLAMA_ARG_FIT", values: () => "off", why: () => "the kit has placed everything; llama.cpp must not re-place it" },
  { flag: "--cache-ram", env: "LLAMA_ARG_CACHE_RAM", values: (i) => String(i.placement.cacheRamMiB), why: () => "prompt cache sized to the RAM the plan left over (MiB)" },
  { flag: "--jinja", env: "LLAMA_ARG_JINJA", values: (i) => (i.model.serving.jinja ? [] : undefined), why: () => "the model's own chat template (tool calls, thinking)" },
  { flag: "--temp", env: "LLAMA_ARG_TEMPERATURE", values: (i) => String(i.model.serving.sampling.temperature), why: () => "model card's sampling" },
  { flag: "--top-p", env: "LLAMA_ARG_TOP_P", values: (i) => String(i.model.serving.sampling.topP), why: () => "model card's sampling" },
  { flag: "--min-p", env: "LLAMA_ARG_MIN_P", values: (i) => String(i.model.serving.sampling.minP), why: () => "model card's sampling" },
  { flag: "--metrics", env: "LLAMA_ARG_ENDPOINT_METRICS", values: () => [], why: () => "Prometheus /metrics for dashboards and budgets" },
];

export interface ExplainedArg {
  flag: string;
  env: string | null;
  values: string[];
  why: string;
}

export function explainArgs(inputs: ArgsInputs): ExplainedArg[] {
  const rows: ExplainedArg[] = [];
  for (const row of FLAG_TABLE) {
    const value = row.values(inputs);
    if (value === undefined) continue;
    rows.push({ flag: row.flag, env: row.env, values: typeof value === "string" ? [value] : value, why: row.why(inputs) });
  }
  return rows;
}

export function llamaServerArgs(inputs: ArgsInputs): string[] {
  return explainArgs(inputs).flatMap((row) => (row.values.length === 0 ? [row.flag] : row.values.flatMap((value) => [row.flag, value])));
}
