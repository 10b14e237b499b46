/**
 * Memory that must stay resident per device (system RAM and each GPU) under the load mode the kit
 * chooses, split by the buffer kinds llama-server itself logs at -lv 4: model weights (and their
 * CPU_REPACK copies), KV cache, compute buffers; plus the prompt cache in RAM and OS/runtime
 * headroom. One estimator per concern, like gguf-parser-go, so each term can be checked on its own.
 */
import type { Architecture, Efficiency, LlamaCppRelease } from "./catalog";
import { kvTypeToGgml, rowBytes, type KvCacheType } from "./ggml-types";
import type { CpuSpec } from "./host";
import type { TensorInfo } from "./tensors";
import { MiB } from "./units";

/** "CPU", "CUDA0", "CUDA1", … or an RPC worker's "RPC0[10.0.0.2:50052]" — the device names llama.cpp's logs use. */
export type DeviceName = "CPU" | `CUDA${number}` | `RPC${number}[${string}]`;

export interface DeviceMemory {
  device: DeviceName;
  label: string;
  capacityBytes: number;
  /** Weights kept in their file layout (CPU or CUDAn model buffer). */
  modelBytes: number;
  /** Weights llama.cpp rearranged for its CPU kernels (CPU_REPACK buffer); they replace, not add to, modelBytes. */
  repackBytes: number;
  kvBytes: number;
  /**
   * Hybrid models: the recurrent state of this device's recurrent layers, one per slot (llama_memory_recurrent "RS"
   * buffer).
   */
  recurrentBytes: number;
  computeBytes: number;
  /** llama-server's host-RAM prompt cache (--cache-ram), CPU only. */
  promptCacheBytes: number;
  /**
   * Context checkpoints at their worst (slots × --ctx-checkpoints × one checkpoint), CPU only; 0 for models that take
   * none.
   */
  checkpointBytes: number;
  headroomBytes: number;
  /**
   * Memory-mapped loading (load mode auto/mmap): the file span llama-server maps for this device's
   * weights, its CPU_Mapped buffer — from the first to the last tensor it uses in each shard, so it
   * also spans tensors copied elsewhere (repacked, GPU). Only modelBytes of it are read after
   * loading; the rest is page cache the kernel may reclaim, so it is reported, not added. 0 when
   * the weights are copied into llama.cpp's own buffers.
   */
  mappedBytes: number;
  plannedBytes: number;
  fits: boolean;
}

/** KV cells llama.cpp allocates: total context over all slots, padded to 256. */
export function kvCells(contextPerSlot: number, slots: number): number {
  return Math.ceil((contextPerSlot * slots) / 256) * 256;
}

/**
 * KV bytes per token per layer. MLA keeps only K: (kv_lora_rank + rope dims) elements
 * (llama.cpp PR #19067), so -ctv changes nothing; grouped-query attention keeps K (-ctk) and V
 * (-ctv, the K type when not given) for each KV head.
 */
export function kvBytesPerTokenPerLayer(arch: Architecture, type: KvCacheType, typeV: KvCacheType = type): number {
  const ggml = kvTypeToGgml(type);
  if (arch.attention?.kind === "gqa") {
    return (
      rowBytes(ggml, arch.attention.headCountKv * arch.attention.keyLength) +
      rowBytes(kvTypeToGgml(typeV), arch.attention.headCountKv * arch.attention.valueLength)
    );
  }
  return rowBytes(ggml, arch.kvLoraRank + arch.qkRopeHeadDim);
}

/**
 * Per head, the elements a query scores against and the elements it reads back: MLA's absorbed latent, or GQA's head
 * dims.
 */
export function attentionHeadWidths(arch: Architecture): { key: number; value: number } {
  if (arch.attention?.kind === "gqa") return { key: arch.attention.keyLength, value: arch.attention.valueLength };
  return { key: arch.kvLoraRank + arch.qkRopeHeadDim, value: arch.kvLoraRank };
}

/** Whether a layer keeps KV cells (every layer but a hybrid model's recurrent ones, or one its layout gives none). */
export function keepsKv(arch: Architecture, layer: number): boolean {
  if (arch.kvLayout) return arch.kvLayout.kElements[layer]! > 0;
  return !arch.recurrent?.layers.includes(layer);
}

/** Layers that keep KV cells. */
export function kvLayerCount(arch: Architecture): number {
  return Array.from({ length: arch.layers }, (_, layer) => layer).filter((layer) => keepsKv(arch, layer)).length;
}

/** What a layer's cache size depends on besides the model: llama_context's streams and cells. */
export interface CacheSettings {
  cacheTypeK: KvCacheType;
  cacheTypeV: KvCacheType;
  kvUnified: boolean;
  slots: number;
  /** Cells of one stream: the whole context when unified, a slot's share (padded to 256) otherwise. */
  cellsPerStream: number;
  ubatch: number;
  /** --swa-full: sliding-window layers keep the whole context. */
  swaFull?: boolean;
}

/**
 * One layer's cache bytes for all slots. Full-context layers: streams × cells per stream. A sliding
 * window or chunk (llama-kv-cache-iswa.cpp): min(cells per stream, window × (unified ? slots : 1) +
 * ubatch), padded to 256, per stream. The indexer cache has the cells of the main cache, K in -ctk's
 * type and V (minimax-m3) in -ctv's.
 */
export function kvBytesOfLayer(arch: Architecture, layer: number, cache: CacheSettings): number {
  const streams = cache.kvUnified ? 1 : cache.slots;
  const k = kvTypeToGgml(cache.cacheTypeK);
  const v = kvTypeToGgml(cache.cacheTypeV);
  if (arch.dsv4) return dsv4KvBytesOfLayer(arch.dsv4, layer, cache);
  const layout = arch.kvLayout;
  if (!layout)
    return keepsKv(arch, layer)
      ? kvBytesPerTokenPerLayer(arch, cache.cacheTypeK, cache.cacheTypeV) * streams * cache.cellsPerStream
      : 0;
  const window =
    layout.swaLayers.includes(layer) && !cache.swaFull
      ? Math.ceil(
          Math.min(cache.cellsPerStream, layout.swaWindow * (cache.kvUnified ? cache.slots : 1) + cache.ubatch) / 256,
        ) * 256
      : cache.cellsPerStream;
  const main = rowBytes(k, layout.kElements[layer]!) + rowBytes(v, layout.vElements[layer]!);
  const indexer = rowBytes(k, layout.indexerK[layer]!) + rowBytes(v, layout.indexerV[layer]!);
  return streams * (window * main + cache.cellsPerStream * indexer);
}

const pad256 = (cells: number) => Math.ceil(cells / 256) * 256;

/**
 * deepseek4's caches of one layer (llama-kv-cache-dsv4.cpp): one stream per slot whatever -kvu says,
 * each of the context one sequence sees; a raw window of min(cells, window + ubatch); compressed caches
 * of ceil(cells / ratio); all K only, in -ctk's type. Cells padded to 256.
 */
function dsv4KvBytesOfLayer(dsv4: NonNullable<Architecture["dsv4"]>, layer: number, cache: CacheSettings): number {
  const k = kvTypeToGgml(cache.cacheTypeK);
  const cells = cache.cellsPerStream;
  const ratio = dsv4.compressRatios[layer] ?? 0;
  const raw =
    (cache.swaFull ? cells : pad256(Math.min(cells, dsv4.window + cache.ubatch))) * rowBytes(k, dsv4.kElements);
  const compressed = ratio > 0 ? pad256(Math.ceil(cells / ratio)) * rowBytes(k, dsv4.kElements) : 0;
  const indexer = ratio === 4 ? pad256(Math.ceil(cells / ratio)) * rowBytes(k, dsv4.indexerKey) : 0;
  return cache.slots * (raw + compressed + indexer);
}

/**
 * Per-slot state of one layer, F32: a recurrent layer's n_embd_r + n_embd_s; a deepseek4 compressed
 * layer's compressor state (llama_dsv4_comp_state: kv and score, CSA 8 × 2·headK, HCA 128 × headK, the
 * CSA layers' lightning indexer 8 × 2·indexerKey).
 */
export function stateBytesOfLayer(arch: Architecture, layer: number, slots: number): number {
  if (arch.dsv4) {
    const { headK, indexerKey } = arch.dsv4;
    const ratio = arch.dsv4.compressRatios[layer] ?? 0;
    const floats = ratio === 4 ? 2 * 8 * 2 * headK + 2 * 8 * 2 * indexerKey : ratio === 128 ? 2 * 128 * headK : 0;
    return Math.max(1, slots) * floats * 4;
  }
  return arch.recurrent?.layers.includes(layer) ? recurrentBytesPerLayer(arch, slots) : 0;
}

/**
 * One context checkpoint (tools/server create_checkpoint: llama_state_seq_get_data_ext PARTIAL_ONLY):
 * one sequence's recurrent state and its sliding-window cells, held in host RAM. A slot keeps up to
 * --ctx-checkpoints of them (default 32), outside --cache-ram while the slot is busy (mechanics §7).
 * Models with neither recurrent nor sliding-window layers take none.
 */
export function checkpointBytes(arch: Architecture, cache: CacheSettings): number {
  const state = (arch.recurrent?.layers.length ?? 0) * recurrentBytesPerLayer(arch, 1);
  if (arch.dsv4) {
    // Assumed like a sliding-window model's: one sequence's raw windows and compressor states (not measured).
    const dsv4 = arch.dsv4;
    const window =
      pad256(Math.min(cache.cellsPerStream, dsv4.window + cache.ubatch)) *
      rowBytes(kvTypeToGgml(cache.cacheTypeK), dsv4.kElements);
    return dsv4.compressRatios.reduce((sum, _ratio, layer) => sum + window + stateBytesOfLayer(arch, layer, 1), 0);
  }
  const layout = arch.kvLayout;
  // With --swa-full the server sets n_swa = 0: window layers keep everything and need no checkpoint.
  if (!layout || cache.swaFull) return state;
  const k = kvTypeToGgml(cache.cacheTypeK);
  const v = kvTypeToGgml(cache.cacheTypeV);
  const cells = Math.ceil(Math.min(cache.cellsPerStream, layout.swaWindow + cache.ubatch) / 256) * 256;
  return (
    state +
    layout.swaLayers.reduce(
      (sum, layer) => sum + cells * (rowBytes(k, layout.kElements[layer]!) + rowBytes(v, layout.vElements[layer]!)),
      0,
    )
  );
}

/** Cache bytes one decoded token reads from a layer at a depth: a window's layer reads at most the window. */
export function kvReadBytesPerToken(
  arch: Architecture,
  layer: number,
  depthTokens: number,
  typeK: KvCacheType,
  typeV: KvCacheType,
): number {
  if (arch.dsv4) {
    const { kElements, window, indexerKey } = arch.dsv4;
    const ratio = arch.dsv4.compressRatios[layer] ?? 0;
    const k = kvTypeToGgml(typeK);
    const compressedCells = ratio > 0 ? Math.ceil(depthTokens / ratio) : 0;
    return (
      Math.min(depthTokens, window) * rowBytes(k, kElements) +
      compressedCells * (rowBytes(k, kElements) + (ratio === 4 ? rowBytes(k, indexerKey) : 0))
    );
  }
  const layout = arch.kvLayout;
  if (!layout) return keepsKv(arch, layer) ? kvBytesPerTokenPerLayer(arch, typeK, typeV) * depthTokens : 0;
  const k = kvTypeToGgml(typeK);
  const v = kvTypeToGgml(typeV);
  const seen = layout.swaLayers.includes(layer) ? Math.min(depthTokens, layout.swaWindow) : depthTokens;
  return (
    seen * (rowBytes(k, layout.kElements[layer]!) + rowBytes(v, layout.vElements[layer]!)) +
    depthTokens * (rowBytes(k, layout.indexerK[layer]!) + rowBytes(v, layout.indexerV[layer]!))
  );
}

/**
 * Recurrent state of one recurrent layer for all slots: llama_memory_recurrent allocates
 * max(1, n_seq_max) rows of n_embd_r + n_embd_s F32 per recurrent layer, whatever the context
 * (mechanics §7; × (1 + n_rs_seq) only with speculative drafting, which the kit does not configure).
 */
export function recurrentBytesPerLayer(arch: Architecture, slots: number): number {
  return arch.recurrent ? Math.max(1, slots) * arch.recurrent.stateFloatsPerLayer * 4 : 0;
}

/** Whether llama.cpp v0.5.0 repacks this tensor for the CPU's kernels (catalog/llama-cpp.yaml). */
export function isRepacked(tensor: TensorInfo, cpu: CpuSpec, release: LlamaCppRelease): boolean {
  if (tensor.shape.length < 2 || tensor.cls === "embedding") return false; // token_embd feeds GET_ROWS, not a matmul
  const rule = release.repack.rules.find((candidate) => candidate.type === tensor.type);
  if (!rule) return false;
  // The CPU's ISA list decides: an arm64 CPU never takes an x86 kernel's layout, and the reverse.
  const hasIsa = (cpu.isa as readonly string[]).includes(rule.requires);
  return hasIsa && (tensor.shape[1] ?? 0) % rule.rowMultiple === 0;
}

export interface ComputeBufferInputs {
  arch: Architecture;
  ubatch: number;
  /** All slots' context: llama.cpp clamps the physical batch to it. */
  contextTotal: number;
  /** KV cells one sequence attends over (slots are not unified when -np is set): the mask's width. */
  kvCellsPerSequence: number;
  /** -np: llama-server reserves one output row per slot (n_outputs_max), and one KV stream per slot unless -kvu. */
  slots: number;
  kvUnified: boolean;
  /** -ctk: without flash attention the V cache (MLA: the latent) is copied out whole in this type. */
  cacheTypeK: KvCacheType;
  /** --swa-full: sliding-window layers attend over the whole context. */
  swaFull?: boolean;
  /** Whether this device computes the output layer (logits for the slots' outputs). */
  holdsOutput: boolean;
  /** Largest CPU-resident weight a GPU must receive when llama.cpp offloads a big-batch matmul to it. */
  offloadedWeightBytes: number;
  /** -fa on/auto (default): no materialized attention scores. */
  flashAttention?: boolean;
}

/** One step of the compute graph where the allocator's peak can fall, and the bytes alive at it. */
export interface ComputeStep {
  step: string;
  bytes: number;
}

const F32 = 4;
const F16 = 2;
const I64 = 8;

/**
 * The candidate peak steps of one ubatch's graph (llama-server's reserve: a prompt ubatch of
 * min(-ub, context) tokens), each the bytes ggml-alloc holds when that step's largest tensor is
 * allocated: the graph inputs still to be used (masks, embeddings), the f32 activations the step
 * reads and writes, and the freed activations it cannot reuse because they are smaller than it
 * (ggml-alloc's best fit places a tensor above every hole too small for it). Traced on each
 * architecture's test-llama-archs model with GGML_ALLOCATOR_DEBUG (test/scripts/architectures-sizing.test.ts).
 */
export function computeSteps(inputs: ComputeBufferInputs): ComputeStep[] {
  const { arch } = inputs;
  const tokens = Math.min(inputs.ubatch, inputs.contextTotal);
  const flash = inputs.flashAttention !== false;
  const cells = inputs.kvCellsPerSequence;
  const streams = inputs.kvUnified ? 1 : Math.max(1, inputs.slots);
  /** f32 activations of `floats` per token for the whole ubatch. */
  const act = (floats: number) => tokens * floats * F32;
  const hidden = act(arch.hiddenSize);
  // The attention mask, one entry per token and visible cell: f16 for flash attention, f32 otherwise
  // (llama-graph.cpp); windowed layers (gpt-oss, llama4) have their own over the window's cells.
  const maskBytes = (width: number) => tokens * width * (flash ? F16 : F32);
  const layout = arch.kvLayout;
  const windowCells =
    layout && layout.swaLayers.length > 0
      ? inputs.swaFull
        ? cells
        : pad256(Math.min(cells, layout.swaWindow * (inputs.kvUnified ? inputs.slots : 1) + tokens))
      : 0;
  // An input is freed after its last use: at a step of layer `layer`, the full mask is alive while a
  // later full-attention layer still needs it, the window's while a later windowed layer does.
  const swaLayers = layout?.swaLayers ?? [];
  const later = (layer: number, windowed: boolean) =>
    Array.from({ length: arch.layers - layer - 1 }, (_, index) => layer + 1 + index).some(
      (next) => keepsKv(arch, next) && swaLayers.includes(next) === windowed,
    );
  const masksAfter = (layer: number) =>
    (later(layer, false) ? maskBytes(cells) : 0) + (windowCells > 0 && later(layer, true) ? maskBytes(windowCells) : 0);
  const firstFull =
    Array.from({ length: arch.layers }, (_, layer) => layer).find(
      (layer) => keepsKv(arch, layer) && !swaLayers.includes(layer),
    ) ?? 0;
  const masks = maskBytes(cells) + (windowCells > 0 && later(firstFull - 1, true) ? maskBytes(windowCells) : 0);
  const steps: ComputeStep[] = [];

  // Feed-forward steps of a layer before the last (the last computes only the slots' output rows):
  // the layer input and residual, two residual-width activations freed just before (attention output,
  // FFN norm) that the larger FFN tensors cannot reuse, and the FFN's own gate, up and activation.
  const lastLayer = arch.layers - 1;
  const firstMoeLayer = arch.denseLeadingLayers;
  if (firstMoeLayer < lastLayer) {
    const experts = act(arch.activeExperts * arch.expertFfnSize);
    steps.push({ step: "moe", bytes: masksAfter(firstMoeLayer) + 4 * hidden + 3 * experts + act(arch.routedExperts) });
  }
  // Dense FFN layers: the leading ones, or llama4's between its interleaved MoE layers.
  if ((arch.denseLeadingLayers > 0 || (arch.moeLayerInterval ?? 1) > 1) && lastLayer > 0)
    steps.push({ step: "dense ffn", bytes: masksAfter(0) + 4 * hidden + 2 * act(arch.denseFfnSize) });

  if (arch.attention?.kind === "gqa")
    steps.push(...gqaAttentionSteps(inputs, { tokens, flash, cells, streams, masks, hidden, act, windowCells }));
  else steps.push(...mlaAttentionSteps(inputs, { tokens, flash, cells, streams, masks, hidden, act, windowCells }));

  // qwen3next's gated delta net: the short convolution's input (its kernel - 1 carried-over rows
  // prepended) and output over every channel, beside the layer's residual-width activations.
  const conv = arch.recurrent?.ssmConv;
  if (conv)
    steps.push({
      step: "ssm convolution",
      bytes: masks + 4 * hidden + (tokens + conv.kernel - 1) * conv.channels * F32 + act(conv.channels),
    });

  // The output layer: logits for the slots' rows (n_outputs_max = -np), beside the final norm.
  if (inputs.holdsOutput)
    steps.push({
      step: "output",
      bytes: 2 * hidden + Math.min(tokens, Math.max(1, inputs.slots)) * arch.vocabSize * F32,
    });
  return steps;
}

/** The attention mask over `width` cells for the ubatch. */
const maskBytesOf = (ctx: StepContext, width: number) => ctx.tokens * width * (ctx.flash ? F16 : F32);

interface StepContext {
  tokens: number;
  flash: boolean;
  cells: number;
  streams: number;
  masks: number;
  hidden: number;
  act: (floats: number) => number;
  windowCells: number;
}

/**
 * Grouped-query attention: with flash attention Q, K, V and the output beside the layer input and
 * residual; without it the f32 scores (heads × visible cells per token) and the V-cache row indices,
 * one I64 per element since V is stored transposed (one index input per cache: full and window).
 * minimax-m3's sparse attention (MSA: flash attention on, and one stream per sequence or a single
 * one) adds the indexer's f32 scores per indexer head and visible cell and their transposed copy.
 */
function gqaAttentionSteps(inputs: ComputeBufferInputs, ctx: StepContext): ComputeStep[] {
  const { arch } = inputs;
  const attention = arch.attention!;
  const { tokens, flash, cells, masks, hidden, act } = ctx;
  const q = act(arch.attentionHeads * attention.keyLength);
  const k = act(attention.headCountKv * attention.keyLength);
  const v = act(attention.headCountKv * attention.valueLength);
  const out = act(arch.attentionHeads * attention.valueLength);
  const steps: ComputeStep[] = [];
  if (flash) {
    steps.push({ step: "attention", bytes: masks + 2 * hidden + q + k + v + out });
  } else {
    const scores = tokens * cells * arch.attentionHeads * F32;
    const vIndexCaches = ctx.masks > maskBytesOf(ctx, cells) ? 2 : 1;
    steps.push({
      step: "attention scores",
      bytes:
        masks +
        2 * hidden +
        q +
        k +
        scores +
        vIndexCaches * tokens * attention.headCountKv * attention.valueLength * I64,
    });
  }
  const indexer = arch.indexer;
  if (indexer && arch.dsv4) steps.push(...dsv4Steps(inputs, ctx));
  else if (indexer && flash && (inputs.slots <= 1 || !inputs.kvUnified)) {
    // MSA scores one stream at a time: a sequence's tokens against its own cells, per indexer head.
    const scores = (tokens / ctx.streams) * cells * indexer.heads * F32;
    // Several streams: the mask is also copied to f32 for the per-stream scoring.
    const maskCopy = ctx.streams > 1 ? tokens * cells * F32 : 0;
    steps.push({ step: "sparse-attention indexer", bytes: masks + maskCopy + 5 * hidden + 2 * scores });
  }
  return steps;
}

/**
 * deepseek4's lightning indexer (a CSA layer after an MoE layer): its per-token queries (heads ×
 * key) twice, roped and not, placed above what the previous layer's MoE step left: the graph inputs
 * (the raw window's mask and the compressed caches' f16 masks, one entry per compressed cell padded
 * to 256), the hyper-connection residual (hyper_connection.count hidden-wide copies) and the experts'
 * gate, up and activation, into whose freed space the next residual is written. Without flash
 * attention the f32 scores (heads × raw window and compressed cells) come on top.
 */
function dsv4Steps(inputs: ComputeBufferInputs, ctx: StepContext): ComputeStep[] {
  const { arch } = inputs;
  const dsv4 = arch.dsv4!;
  const indexer = arch.indexer!;
  const { tokens, cells, hidden, act } = ctx;
  const mask = (width: number) => tokens * width * (ctx.flash ? F16 : F32);
  const rawCells = inputs.swaFull ? cells : pad256(Math.min(cells, dsv4.window + tokens));
  const ratios = new Set(dsv4.compressRatios.filter((ratio) => ratio > 0));
  // CSA (ratio 4) layers: the compressed attention's and its selection's masks (the attention mask's
  // type) and the indexer's (f16 always); HCA layers: one in the attention mask's type.
  const compressed = [...ratios].reduce((sum, ratio) => {
    const width = pad256(Math.ceil(cells / ratio));
    return sum + (ratio === 4 ? 2 * mask(width) + tokens * width * F16 : mask(width));
  }, 0);
  const residual = (arch.hyperConnections ?? 1) * hidden;
  const moe = 3 * act(arch.activeExperts * arch.expertFfnSize);
  const base = mask(rawCells) + compressed + hidden + residual + moe;
  const steps = [{ step: "lightning indexer", bytes: base + 2 * act(indexer.heads * indexer.keyLength) }];
  if (!ctx.flash) {
    const attendedCells = rawCells + (ratios.has(4) ? Math.ceil(cells / 4) : 0);
    steps.push({
      step: "attention scores",
      bytes: base + 2 * act(indexer.heads * indexer.keyLength) + tokens * attendedCells * arch.attentionHeads * F32,
    });
  }
  return steps;
}

/**
 * Multi-head latent attention (deepseek2, deepseek32, glm-dsa, kimi-k3, kimi-linear), absorbed: the
 * query-concat moment holds q (heads × (nope + rope)), its rope part, the nope part absorbed into
 * the latent (heads × kv_lora) and their concat Qcur (heads × (kv_lora + rope)) beside three
 * residual-width activations; the compressed KV row (kv_lora + rope) is placed above them when it
 * does not fit the freed q. The KDA hybrids' builder (kimi-k3, kimi-linear) then builds K as a concat
 * of the normed latent and the roped part while Qcur is alive. Without flash attention: the f32
 * scores (heads × visible cells) and the latent V cache copied out whole (kv_lora per cell, -ctk's
 * type). Sparse attention (deepseek32, glm-dsa) adds the indexer: its inputs (two masks and two f32
 * per-cell indexer masks), its per-token queries (heads × key, twice), then its f32 scores per cell.
 */
function mlaAttentionSteps(inputs: ComputeBufferInputs, ctx: StepContext): ComputeStep[] {
  const { arch } = inputs;
  const { tokens, flash, cells, streams, hidden, act } = ctx;
  const heads = arch.attentionHeads;
  const q = act(heads * (arch.qkNopeHeadDim + arch.qkRopeHeadDim));
  const qPe = act(heads * arch.qkRopeHeadDim);
  const qAbsorbed = act(heads * arch.kvLoraRank);
  const qCur = act(heads * (arch.kvLoraRank + arch.qkRopeHeadDim));
  const kvRow = act(arch.kvLoraRank + arch.qkRopeHeadDim);
  const indexer = arch.indexer;
  // DSA: the MLA mask and its converted copy, and the indexer's two f32 masks over the same cells.
  const masks = indexer
    ? 2 * tokens * cells * F16 + (flash ? 0 : tokens * cells * F16) + 2 * tokens * cells * F32
    : ctx.masks;
  // The query-side tensors freed before Qcur's concat (DSA also keeps the q_lora projection, which its indexer's
  // queries read).
  const queryWork = (indexer ? act(arch.qLoraRank) : 0) + q + qPe + qAbsorbed;
  const steps: ComputeStep[] = [];
  const kvAbove = kvRow > q + qPe ? kvRow : 0;
  const queryStep = masks + 3 * hidden + queryWork + qCur;
  if (!indexer) steps.push({ step: "attention query", bytes: queryStep + kvAbove });
  if (arch.recurrent?.kda)
    steps.push({ step: "attention key", bytes: masks + 4 * hidden + qCur + 2 * kvRow + act(arch.kvLoraRank) });
  const indexerQueries = indexer ? act(indexer.heads * indexer.keyLength) : 0;
  const indexerStep = queryStep + 2 * indexerQueries;
  if (indexer) {
    steps.push({ step: "indexer queries", bytes: indexerStep });
    // The scores and their masked copy, one f32 per token and cell; the second reuses the freed
    // second query copy when it fits there.
    const scores = tokens * cells * F32;
    const reused = scores <= indexerQueries ? scores : 0;
    steps.push({
      step: "indexer scores",
      bytes: masks + hidden + queryWork + qCur + indexerQueries + 2 * scores - reused,
    });
  }
  if (!flash) {
    const kqScores = tokens * cells * heads * F32;
    const latentV = rowBytes(kvTypeToGgml(inputs.cacheTypeK), arch.kvLoraRank) * cells * streams;
    // Sparse attention scores after its indexer, whose queries are still alive; plain MLA from the
    // layer input and residual and the query tensors.
    const base = indexer ? indexerStep : masks + 2 * hidden + queryWork + qCur;
    steps.push({ step: "attention scores", bytes: base + kqScores + latentV });
  }
  return steps;
}

/**
 * Compute buffer: the graph allocator's peak for one ubatch, the largest of computeSteps(); a GPU
 * that receives offloaded CPU experts also holds the largest such weight while it multiplies.
 */
export function computeBufferBytes(inputs: ComputeBufferInputs): number {
  return Math.max(0, ...computeSteps(inputs).map((step) => step.bytes)) + inputs.offloadedWeightBytes;
}

export function hostHeadroomBytes(ramBytes: number, efficiency: Efficiency): number {
  return efficiency.memoryHeadroom.hostOsBytes.value + ramBytes * efficiency.memoryHeadroom.hostFractionOfRam.value;
}

export function gpuHeadroomBytes(efficiency: Efficiency): number {
  return efficiency.memoryHeadroom.gpuRuntimeBytes.value + efficiency.memoryHeadroom.gpuMarginBytes.value;
}

export function promptCacheBytes(cacheRamMiB: number): number {
  return Math.max(0, cacheRamMiB) * MiB;
}

export function finishDevice(partial: Omit<DeviceMemory, "plannedBytes" | "fits">): DeviceMemory {
  const plannedBytes =
    partial.modelBytes +
    partial.repackBytes +
    partial.kvBytes +
    partial.recurrentBytes +
    partial.computeBytes +
    partial.promptCacheBytes +
    partial.checkpointBytes +
    partial.headroomBytes;
  return { ...partial, plannedBytes, fits: plannedBytes <= partial.capacityBytes };
}
