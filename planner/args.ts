/**
 * The kit's llama-server command line for the pinned release (v0.5.0): a typed FlagSet built from
 * the plan and rendered through the one flag table (planner/flags.ts), each flag with why the kit
 * sets it, in the manner of llama.cpp's common/arg.cpp. The API key is never an argument: the
 * server reads it from a file mounted into the container.
 */
import type { ModelEntry } from "./catalog";
import { overrideRuleOf, renderFlags, type FlagSet } from "./flags";
import type { HostSpec } from "./host";
import { storesV, type Placement } from "./offload";
import type { KvCacheType } from "./ggml-types";

export interface ArgsInputs {
  model: ModelEntry;
  host: HostSpec;
  placement: Placement;
  modelPath: string;
  apiKeyFile: string;
  /** Where llama-server itself listens: behind a front door, loopback at the backend port. */
  bindAddress: string;
  port: number;
  /** serving.webUi: llama-server's web UI is off unless the stack asks for it. */
  webUi: boolean;
  contextPerSlot: number;
  slots: number;
  kvCacheType: KvCacheType;
}

const hasGpus = (inputs: ArgsInputs) => inputs.host.gpus.length > 0;
const threadsOf = (inputs: ArgsInputs) => inputs.placement.flags.threads ?? inputs.host.cpu.cores;

/** The flags the kit sets, typed: what sizing depends on in `sizing`, the rest by name. */
export function kitFlags(inputs: ArgsInputs): FlagSet {
  const { host, placement, model } = inputs;
  const multiGpu = host.gpus.length > 1;
  // Threads, NUMA, V type and op offload as choose() estimated them (stack knobs included), so the
  // command line is the one the plan sized.
  const chosen = placement.flags;
  return {
    sizing: {
      ctxSize: inputs.contextPerSlot * inputs.slots,
      parallel: inputs.slots,
      cacheTypeK: inputs.kvCacheType,
      cacheTypeV: chosen.cacheTypeV,
      flashAttn: "on",
      threads: threadsOf(inputs),
      threadsBatch: chosen.threadsBatch ?? threadsOf(inputs),
      numa: chosen.numa,
      opOffload: chosen.opOffload,
      loadMode: placement.loadMode,
      repack: placement.repack ? undefined : false,
      batch: placement.batch,
      ubatch: placement.ubatch,
      // A split: -ngl counts the layers sent to the RPC devices, so it is a number, not "all".
      gpuLayers: chosen.rpc ? chosen.gpuLayers : hasGpus(inputs) ? "all" : undefined,
      splitMode: multiGpu || chosen.rpc ? "layer" : undefined,
      tensorSplit: multiGpu || chosen.rpc ? placement.tensorSplit : undefined,
      rpc: chosen.rpc,
      overrideTensor: placement.overrideRules.length > 0 ? placement.overrideRules.map(overrideRuleOf) : undefined,
      cacheRamMiB: placement.cacheRamMiB,
    },
    other: [
      { flag: "--model", values: [inputs.modelPath] },
      { flag: "--alias", values: [model.serving.alias] },
      { flag: "--host", values: [inputs.bindAddress] },
      { flag: "--port", values: [String(inputs.port)] },
      { flag: "--api-key-file", values: [inputs.apiKeyFile] },
      { flag: "--fit", values: ["off"] },
      ...(model.serving.jinja ? [{ flag: "--jinja", values: [] }] : []),
      { flag: "--temp", values: [String(model.serving.sampling.temperature)] },
      { flag: "--top-p", values: [String(model.serving.sampling.topP)] },
      { flag: "--min-p", values: [String(model.serving.sampling.minP)] },
      { flag: "--metrics", values: [] },
      ...(inputs.webUi ? [] : [{ flag: "--no-webui", values: [] }]),
    ],
  };
}

/** Why the kit sets each flag, by canonical name, in the order the command line lists them. */
export const KIT_FLAG_REASONS: ReadonlyArray<readonly [string, (inputs: ArgsInputs) => string]> = [
  ["--model", () => "split GGUFs load from their first shard; llama.cpp finds the rest beside it"],
  ["--alias", () => "the model name clients send in the OpenAI API"],
  [
    "--host",
    (i) =>
      i.bindAddress === "127.0.0.1"
        ? "loopback only: reached by SSH tunnel, or through the TLS front door when the stack opens a port"
        : "the stack binds this address itself; the API key is always required",
  ],
  ["--port", () => "always explicit: the default port differs between releases"],
  ["--api-key-file", () => "the key stays out of the argument list, docker inspect and logs"],
  ["--ctx-size", (i) => `${i.slots} slot(s) × ${i.contextPerSlot} tokens each`],
  ["--parallel", () => "slots are set, not auto, so the KV cache is the size the plan counted"],
  [
    "--cache-type-k",
    (i) => (storesV(i.model.architecture) ? "K cache type (serving.kvCacheType)" : "MLA stores only K (the latent)"),
  ],
  [
    "--cache-type-v",
    (i) =>
      storesV(i.model.architecture)
        ? "V cache type, passed because this architecture stores V (serving.vCacheType, else serving.kvCacheType)"
        : "equal to -ctk: MLA stores no V, but llama-server refuses an MLA model whose K and V cache types differ (llama-context.cpp)",
  ],
  ["--flash-attn", () => "no materialized attention matrix, so compute buffers stay small at long context"],
  [
    "--threads",
    (i) =>
      threadsOf(i) === i.host.cpu.cores
        ? `one thread per physical core (${i.host.cpu.cores}); hyperthreads only contend for the same memory bandwidth`
        : `serving.threads: ${threadsOf(i)} (the host has ${i.host.cpu.cores} physical cores)`,
  ],
  [
    "--threads-batch",
    (i) =>
      i.placement.flags.threadsBatch === i.host.cpu.cores
        ? "prompt processing is compute-bound: all physical cores"
        : "serving.threadsBatch (else serving.threads), as the stack set it",
  ],
  [
    "--numa",
    (i) =>
      i.placement.flags.numa === "distribute"
        ? `${i.host.cpu.numaNodes} NUMA nodes: spread threads and pages over all of them`
        : `serving.numa: ${i.placement.flags.numa}`,
  ],
  ["--op-offload", () => "serving.opOffload false: big-batch matmuls of CPU weights stay on the CPU"],
  ["--load-mode", () => "weights read once into llama.cpp's buffers; no page-cache double"],
  ["--repack", () => "CPU experts must stay copyable to the GPU for big-batch prefill"],
  ["--batch-size", () => "logical batch"],
  [
    "--ubatch-size",
    (i) =>
      i.placement.mode === "hybrid"
        ? "fewer PCIe passes of the CPU experts per prompt"
        : "llama.cpp's default physical batch",
  ],
  [
    "--rpc",
    () =>
      "the rpc-workers' ggml-rpc-servers, on their private addresses, in kimi-kit:hosts order (llama.cpp puts RPC devices before local GPUs)",
  ],
  [
    "--gpu-layers",
    (i) =>
      i.placement.flags.rpc
        ? "the last layers and the output go to the RPC workers; the first stay on the head's CPU (the count that balances memory)"
        : "every layer's attention and KV on the GPUs",
  ],
  [
    "--split-mode",
    (i) =>
      i.placement.flags.rpc ? "whole layers per worker, run one after another" : "whole layers per GPU, pipelined",
  ],
  [
    "--tensor-split",
    (i) =>
      i.placement.flags.rpc
        ? "layers split by each worker's usable RAM (GiB), explicitly, so the plan's placement is llama.cpp's"
        : "layers split by VRAM, explicitly, so the plan's placement is llama.cpp's",
  ],
  ["--override-tensor", () => "expert layers placed per GPU first, the rest on CPU last (first match wins)"],
  ["--fit", () => "the kit has placed everything; llama.cpp must not re-place it"],
  ["--cache-ram", () => "prompt cache sized to the RAM the plan left over (MiB)"],
  ["--jinja", () => "the model's own chat template (tool calls, thinking)"],
  ["--temp", () => "model card's sampling"],
  ["--top-p", () => "model card's sampling"],
  ["--min-p", () => "model card's sampling"],
  ["--metrics", () => "Prometheus /metrics for dashboards and budgets"],
  ["--webui", () => "the web UI stays off unless serving.webUi: true (it is one more surface behind the key)"],
];

export interface ExplainedArg {
  flag: string;
  env: string | null;
  values: string[];
  why: string;
}

export function explainArgs(inputs: ArgsInputs): ExplainedArg[] {
  const order = KIT_FLAG_REASONS.map(([flag]) => flag);
  const reasons = new Map(KIT_FLAG_REASONS);
  const positive = (flag: string) => flag.replace(/^--no-/, "--");
  return renderFlags(kitFlags(inputs), order).map((rendered) => {
    const why = reasons.get(positive(rendered.flag)) ?? reasons.get(rendered.flag);
    if (!why) throw new Error(`planner/args.ts: the kit sets ${rendered.flag} without saying why`);
    return { ...rendered, why: why(inputs) };
  });
}

export function llamaServerArgs(inputs: ArgsInputs): string[] {
  return explainArgs(inputs).flatMap((row) =>
    row.values.length === 0 ? [row.flag] : row.values.flatMap((value) => [row.flag, value]),
  );
}
