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
  /** Hybrid models: the recurrent state of this device's recurrent layers, one per slot (llama_memory_recurrent "RS" buffer). */
  recurrentBytes: number;
  computeBytes: number;
  /** llama-server's host-RAM prompt cache (--cache-ram), CPU only. */
  promptCacheBytes: number;
  /** Context checkpoints at their worst (slots × --ctx-checkpoints × one checkpoint), CPU only; 0 for models that take none. */
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
    return rowBytes(ggml, arch.attention.headCountKv * arch.attention.keyLength) + rowBytes(kvTypeToGgml(typeV), arch.attention.headCountKv * arch.attention.valueLength);
  }
  return rowBytes(ggml, arch.kvLoraRank + arch.qkRopeHeadDim);
}

/** Per head, the elements a query scores against and the elements it reads back: MLA's absorbed latent, or GQA's head dims. */
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
  if (!layout) return keepsKv(arch, layer) ? kvBytesPerTokenPerLayer(arch, cache.cacheTypeK, cache.cacheTypeV) * streams * cache.cellsPerStream : 0;
  const window = layout.swaLayers.includes(layer) && !cache.swaFull ? Math.ceil(Math.min(cache.cellsPerStream, layout.swaWindow * (cache.kvUnified ? cache.slots : 1) + cache.ubatch) / 256) * 256 : cache.cellsPerStream;
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
  const raw = (cache.swaFull ? cells : pad256(Math.min(cells, dsv4.window + cache.ubatch))) * rowBytes(k, dsv4.kElements);
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
    const window = pad256(Math.min(cache.cellsPerStream, dsv4.window + cache.ubatch)) * rowBytes(kvTypeToGgml(cache.cacheTypeK), dsv4.kElements);
    return dsv4.compressRatios.reduce((sum, _ratio, layer) => sum + window + stateBytesOfLayer(arch, layer, 1), 0);
  }
  const layout = arch.kvLayout;
  // With --swa-full the server sets n_swa = 0: window layers keep everything and need no checkpoint.
  if (!layout || cache.swaFull) return state;
  const k = kvTypeToGgml(cache.cacheTypeK);
  const v = kvTypeToGgml(cache.cacheTypeV);
  const cells = Math.ceil(Math.min(cache.cellsPerStream, layout.swaWindow + cache.ubatch) / 256) * 256;
  return state + layout.swaLayers.reduce((sum, layer) => sum + cells * (rowBytes(k, layout.kElements[layer]!) + rowBytes(v, layout.vElements[layer]!)), 0);
}

/** Cache bytes one decoded token reads from a layer at a depth: a window's layer reads at most the window. */
export function kvReadBytesPerToken(arch: Architecture, layer: number, depthTokens: number, typeK: KvCacheType, typeV: KvCacheType): number {
  if (arch.dsv4) {
    const { kElements, window, indexerKey } = arch.dsv4;
    const ratio = arch.dsv4.compressRatios[layer] ?? 0;
    const k = kvTypeToGgml(typeK);
    const compressedCells = ratio > 0 ? Math.ceil(depthTokens / ratio) : 0;
    return Math.min(depthTokens, window) * rowBytes(k, kElements) + compressedCells * (rowBytes(k, kElements) + (ratio === 4 ? rowBytes(k, indexerKey) : 0));
  }
  const layout = arch.kvLayout;
  if (!layout) return keepsKv(arch, layer) ? kvBytesPerTokenPerLayer(arch, typeK, typeV) * depthTokens : 0;
  const k = kvTypeToGgml(typeK);
  const v = kvTypeToGgml(typeV);
  const seen = layout.swaLayers.includes(layer) ? Math.min(depthTokens, layout.swaWindow) : depthTokens;
  return seen * (rowBytes(k, layout.kElements[layer]!) + rowBytes(v, layout.vElements[layer]!)) + depthTokens * (rowBytes(k, layout.indexerK[layer]!) + rowBytes(v, layout.indexerV[layer]!));
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
  /** Whether this device computes the output layer (logits for a whole ubatch). */
  holdsOutput: boolean;
  /** Largest CPU-resident weight a GPU must receive when llama.cpp offloads a big-batch matmul to it. */
  offloadedWeightBytes: number;
  /** -fa on/auto (default): no materialized attention scores. */
  flashAttention?: boolean;
}

/**
 * Compute buffer: the graph allocator's peak for one ubatch, measured against llama-server's
 * `sched_reserve: … compute buffer size` on generated deepseek2 models (bench/accuracy.ts). The
 * peak is the MLA attention step: per token, f32 logits (vocab) on the output device, the absorbed
 * queries and attention output per head (kv_lora + rope + kv_lora), three residual-width
 * activations, plus the f16 attention mask (one entry per KV cell). A GPU that receives offloaded
 * CPU experts also holds the largest such weight while it multiplies.
 */
export function computeBufferBytes(inputs: ComputeBufferInputs): number {
  const { arch } = inputs;
  const ubatch = Math.min(inputs.ubatch, inputs.contextTotal);
  const widths = attentionHeadWidths(arch);
  const floatsPerToken = (inputs.holdsOutput ? arch.vocabSize : 0) + arch.attentionHeads * (widths.key + widths.value) + 3 * arch.hiddenSize;
  const maskBytesPerToken = 2 * inputs.kvCellsPerSequence;
  // Without flash attention the f32 scores (one per head per visible KV cell) exist for the whole
  // ubatch, and the mask is f32, not f16 (llama-graph.cpp: F16 only for flash attention).
  const withoutFlash = inputs.flashAttention === false;
  const scoresBytesPerToken = withoutFlash ? 4 * arch.attentionHeads * inputs.kvCellsPerSequence : 0;
  return ubatch * (4 * floatsPerToken + maskBytesPerToken * (withoutFlash ? 2 : 1) + scoresBytesPerToken) + inputs.offloadedWeightBytes;
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
    partial.modelBytes + partial.repackBytes + partial.kvBytes + partial.recurrentBytes + partial.computeBytes + partial.promptCacheBytes + partial.checkpointBytes + partial.headroomBytes;
  return { ...partial, plannedBytes, fits: plannedBytes <= partial.capacityBytes };
}
