/**
 * choose: the kit's flags for a host. CPU only when there is no GPU; all on GPU when everything
 * fits there; otherwise hybrid: attention, shared experts, dense layers, router and KV on the GPUs
 * (layers split the way llama.cpp splits them for -ts), routed experts on the CPU, and the VRAM left
 * over filled with whole expert layers, each on the GPU that already holds that layer, written as
 * anchored -ot rules with the specific ones before the generic one (llama.cpp: first match wins).
 * Every fit test is a call to estimate() on the candidate flags: choosing never sizes anything itself.
 */
import type { Architecture, Catalog, LlamaCppRelease } from "./catalog";
import { assignLayers, estimate, type Estimate, type PlacementMode } from "./estimate";
import { overrideRuleOf, type NumaMode, type SizingFlags } from "./flags";
import type { KvCacheType } from "./ggml-types";
import type { HostSpec } from "./host";
import type { LinkSpec, RpcWorkerSpec } from "./network";
import { hostHeadroomBytes, isRepacked, type DeviceMemory, type DeviceName } from "./memory";
import type { TensorInfo } from "./tensors";
import { formatDuration, formatGiB, MiB } from "./units";

export type { PlacementMode } from "./estimate";

/**
 * What a stack may set instead of the planner's choice (serving.* in planner/config.ts); unset =
 * the planner decides. They go into the flags `choose` estimates, so memory and projections follow.
 */
export interface ServingKnobs {
  batch?: number;
  ubatch?: number;
  threads?: number;
  threadsBatch?: number;
  opOffload?: boolean;
  /** "off": no --numa even where the planner would spread over NUMA nodes. */
  numa?: NumaMode | "off";
  /** V cache type for architectures that store V (not MLA); the K type when unset. */
  cacheTypeV?: KvCacheType;
}

export interface ServingShape {
  contextPerSlot: number;
  slots: number;
  kvCacheType: KvCacheType;
  knobs?: ServingKnobs;
}

/** Whether llama.cpp stores a V cache for this architecture: MLA keeps only the K latent. */
export function storesV(arch: Architecture): boolean {
  return arch.attention?.kind === "gqa";
}

export interface Placement {
  mode: PlacementMode;
  deviceOfTensor: Map<string, DeviceName>;
  /** Device of each repeating layer's non-overridden tensors and its KV cache. */
  layerDevice: DeviceName[];
  outputDevice: DeviceName;
  tensorSplit: number[] | undefined;
  expertLayersByGpu: number[][];
  overrideRules: string[];
  repack: boolean;
  loadMode: "none" | "mmap";
  batch: number;
  ubatch: number;
  cacheRamMiB: number;
  kvCells: number;
  memory: DeviceMemory[];
  fits: boolean;
  reasons: string[];
  /** The sizing flags chosen, as estimate() read them. */
  flags: SizingFlags;
  /** estimate() of those flags: the memory above and the projection come from it. */
  estimate: Estimate;
}

export interface PlacementInputs {
  arch: Architecture;
  tensors: readonly TensorInfo[];
  host: HostSpec;
  serving: ServingShape;
  catalog: Catalog;
  /** Where the projection quotes decode and time to first token. */
  decodeDepthTokens?: number;
  ttftPromptTokens?: number;
  /** A split over several hosts: the workers (in --rpc order) and the link to them. */
  rpc?: { workers: RpcWorkerSpec[]; link: LinkSpec };
}

const EXPERT_PATTERN = "ffn_(up|down|gate|gate_up)_exps\\.";

/** llama.cpp's layer → GPU rule for -ngl all (llama-model.cpp load_tensors), in float32 like the original. */
export function assignLayersToGpus(layerCount: number, split: readonly number[]): number[] {
  return assignLayers(layerCount, split, layerCount + 1).map((gpu) => gpu ?? 0);
}

export function choose(inputs: PlacementInputs): Placement {
  if (inputs.rpc) return acrossHosts(inputs, inputs.rpc);
  if (inputs.host.gpus.length === 0) return cpuOnly(inputs);
  return withGpus(inputs);
}

/** Flags the kit sets on every host: explicit slots, context, KV type, flash attention, threads, load mode. */
function baseFlags(inputs: PlacementInputs): SizingFlags {
  const { serving, host, arch } = inputs;
  const knobs = serving.knobs ?? {};
  const threads = knobs.threads ?? host.cpu.cores;
  return {
    ctxSize: serving.contextPerSlot * serving.slots,
    parallel: serving.slots,
    cacheTypeK: serving.kvCacheType,
    // Passed whenever V is sized, so llama-server's own default (f16) never differs from the plan; on
    // MLA (no V stored) it must equal -ctk, or llama-server refuses to create the context.
    cacheTypeV: storesV(arch)
      ? (knobs.cacheTypeV ?? serving.kvCacheType)
      : serving.kvCacheType === "f16"
        ? undefined
        : serving.kvCacheType,
    flashAttn: "on",
    threads,
    // llama-server's -tb follows -t when unset; so does the kit.
    threadsBatch: knobs.threadsBatch ?? threads,
    numa: knobs.numa === "off" ? undefined : (knobs.numa ?? (host.cpu.numaNodes > 1 ? "distribute" : undefined)),
    opOffload: knobs.opOffload === false ? false : undefined,
    loadMode: "none",
  };
}

/**
 * The stack's batch sizes over the planner's; a batch set alone caps the planner's ubatch (llama.cpp would clamp it).
 */
function batchesFor(
  inputs: PlacementInputs,
  planned: { batch: number; ubatch: number },
): { batch: number; ubatch: number } {
  const knobs = inputs.serving.knobs ?? {};
  const ubatch = knobs.ubatch ?? Math.min(planned.ubatch, knobs.batch ?? planned.ubatch);
  return { batch: knobs.batch ?? Math.max(planned.batch, ubatch), ubatch };
}

/** One line naming what the stack set instead of the planner, and what a V type does on MLA. */
function knobReasons(inputs: PlacementInputs, est: Estimate): string[] {
  const knobs = inputs.serving.knobs ?? {};
  const reasons: string[] = [];
  const set: string[] = [];
  if (knobs.batch !== undefined) set.push(`-b ${est.settings.batch} (serving.batch)`);
  if (knobs.ubatch !== undefined) set.push(`-ub ${est.settings.ubatch} (serving.ubatch)`);
  if (knobs.threads !== undefined) set.push(`-t ${est.settings.threads} (serving.threads)`);
  if (knobs.threadsBatch !== undefined) set.push(`-tb ${est.settings.threadsBatch} (serving.threadsBatch)`);
  if (knobs.opOffload === false)
    set.push(
      inputs.host.gpus.length > 0
        ? "--no-op-offload (serving.opOffload): CPU weights are multiplied on the CPU during prefill, not streamed to the GPU"
        : "--no-op-offload (serving.opOffload): no GPU here, so it changes nothing",
    );
  if (knobs.numa !== undefined)
    set.push(knobs.numa === "off" ? "no --numa (serving.numa off)" : `--numa ${knobs.numa} (serving.numa)`);
  if (knobs.cacheTypeV !== undefined && storesV(inputs.arch)) set.push(`-ctv ${knobs.cacheTypeV} (serving.vCacheType)`);
  if (set.length > 0) reasons.push(`Set by the stack instead of chosen, and sized as set: ${set.join("; ")}.`);
  if (knobs.cacheTypeV !== undefined && !storesV(inputs.arch)) {
    reasons.push(
      `serving.vCacheType ${knobs.cacheTypeV} is not passed: ${inputs.arch.llamaCppArch} uses MLA, which stores no V cache (only the K latent), and llama-server refuses an MLA model whose -ctv differs from -ctk${inputs.serving.kvCacheType === "f16" ? "" : `, so -ctv ${inputs.serving.kvCacheType} follows serving.kvCacheType`}.`,
    );
  }
  return reasons;
}

function estimateOf(inputs: PlacementInputs, flags: SizingFlags): Estimate {
  return estimate(inputs.tensors, inputs.arch, inputs.host, flags, {
    catalog: inputs.catalog,
    decodeDepthTokens: inputs.decodeDepthTokens,
    ttftPromptTokens: inputs.ttftPromptTokens,
    ...(inputs.rpc ? { rpc: inputs.rpc } : {}),
  });
}

/** The prompt cache gets what RAM is left, up to llama-server's default, so it never causes a refusal. */
function promptCacheFor(leftoverBytes: number, release: LlamaCppRelease): number {
  return Math.max(0, Math.min(release.defaults.cacheRamMiB, Math.floor(leftoverBytes / MiB / 1024) * 1024));
}

/** Estimates `flags` without a prompt cache, gives the cache the RAM left over, and estimates again. */
/** A flag set and its estimate. */
type PlacedEstimate = { flags: SizingFlags; estimate: Estimate };

function withPromptCache(inputs: PlacementInputs, flags: SizingFlags): PlacedEstimate {
  const bare = estimateOf(inputs, { ...flags, cacheRamMiB: 0 });
  const cpu = bare.devices[0]!;
  const cacheRamMiB = promptCacheFor(cpu.capacityBytes - cpu.plannedBytes, inputs.catalog.llamaCpp);
  const final = { ...flags, cacheRamMiB };
  return { flags: final, estimate: estimateOf(inputs, final) };
}

function fromEstimate(
  result: { flags: SizingFlags; estimate: Estimate },
  rest: Pick<Placement, "tensorSplit" | "expertLayersByGpu" | "overrideRules" | "reasons">,
): Placement {
  const { flags, estimate: est } = result;
  return {
    mode: est.placement.mode,
    deviceOfTensor: est.placement.deviceOfTensor,
    layerDevice: est.placement.layerDevice,
    outputDevice: est.placement.outputDevice,
    repack: est.settings.repack,
    loadMode: est.settings.loadMode === "mmap" ? "mmap" : "none",
    batch: est.settings.batch,
    ubatch: est.settings.ubatch,
    cacheRamMiB: est.settings.cacheRamMiB,
    kvCells: est.settings.kvCells,
    memory: est.devices,
    fits: est.fits,
    flags,
    estimate: est,
    ...rest,
  };
}

function cpuOnly(inputs: PlacementInputs): Placement {
  const { tensors, host, catalog } = inputs;
  const release = catalog.llamaCpp;
  const result = withPromptCache(inputs, { ...baseFlags(inputs), ...batchesFor(inputs, release.defaults) });
  const cpu = result.estimate.devices[0]!;
  const reasons = [
    `No GPU: every tensor and the whole KV cache live in system RAM; decode speed is set by its bandwidth.`,
    cpu.repackBytes > 0
      ? `Repacking stays on: ${formatGiB(cpu.repackBytes)} of ${[...new Set(tensors.filter((t) => isRepacked(t, host.cpu, release)).map((t) => t.type))].join("/")} weights get llama.cpp's interleaved CPU layout, which its AVX kernels multiply faster; the repacked copy replaces the original in RAM.`
      : `No tensor of this tier has a repacked layout on this CPU, so repacking changes nothing.`,
    `Load mode none (no mmap): the weights are read once into llama.cpp's own buffers, so RAM holds one copy and the page cache is not also holding ${formatGiB(cpu.modelBytes + cpu.repackBytes)} of file pages.`,
    ...knobReasons(inputs, result.estimate),
  ];
  return fromEstimate(result, { tensorSplit: undefined, expertLayersByGpu: [], overrideRules: [], reasons });
}

/**
 * A split over CPU hosts: the first layers stay on the head's CPU (with the token embeddings, which
 * llama.cpp never offloads, the prompt cache and llama-server's own buffers), the rest go to the
 * workers in --rpc order by -ts, the output layer to the last. Every count of head layers is
 * estimated; the one that leaves the fullest device least full wins, so memory is balanced by
 * what each host holds, not by layer count. -ts is each worker's RAM less its headroom, in GiB.
 */
function acrossHosts(inputs: PlacementInputs, rpc: NonNullable<PlacementInputs["rpc"]>): Placement {
  const { arch, catalog } = inputs;
  const release = catalog.llamaCpp;
  const split = rpc.workers.map((worker) =>
    Math.max(
      1,
      Math.floor(
        (worker.host.memory.totalBytes - hostHeadroomBytes(worker.host.memory.totalBytes, catalog.efficiency)) /
          MiB /
          1024,
      ),
    ),
  );
  const base: SizingFlags = {
    ...baseFlags(inputs),
    ...batchesFor(inputs, release.defaults),
    rpc: rpc.workers.map((worker) => worker.endpoint),
    splitMode: "layer",
    tensorSplit: split,
  };
  let best: { flags: SizingFlags; estimate: Estimate; fullest: number } | undefined;
  for (let headLayers = 0; headLayers <= arch.layers; headLayers++) {
    const flags: SizingFlags = { ...base, gpuLayers: arch.layers + 1 - headLayers, cacheRamMiB: 0 };
    const candidate = estimateOf(inputs, flags);
    const fullest = Math.max(...candidate.devices.map((device) => device.plannedBytes / device.capacityBytes));
    const better =
      !best ||
      (candidate.fits && !best.estimate.fits) ||
      (candidate.fits === best.estimate.fits && fullest < best.fullest);
    if (better) best = { flags, estimate: candidate, fullest };
  }
  const result = withPromptCache(inputs, best!.flags);
  const headLayers = arch.layers + 1 - (result.flags.gpuLayers as number);
  const reasons = [
    `Split over ${rpc.workers.length + 1} hosts with llama.cpp's RPC backend: the head keeps the token embeddings and its first ${headLayers} layer(s) in RAM; -ngl ${result.flags.gpuLayers} sends the other layers to ${rpc.workers.length} ggml-rpc-server(s), -ts ${split.join(",")} (each worker's RAM less its headroom, GiB); this head layer count leaves the fullest host least full.`,
    `The output layer runs on the last worker: each token crosses the link once per worker, and the logits come back from the last (${rpc.link.basis}).`,
    `Load mode none on the head; the workers hold what they are sent in their own RAM (no mmap, no repacking there).`,
    ...knobReasons(inputs, result.estimate),
  ];
  return fromEstimate(result, { tensorSplit: split, expertLayersByGpu: [], overrideRules: [], reasons });
}

function withGpus(inputs: PlacementInputs): Placement {
  const split = inputs.host.gpus.map((gpu) => Math.round(gpu.memoryBytes / MiB / 1024));
  const gpuFlags: SizingFlags = { ...baseFlags(inputs), gpuLayers: "all", splitMode: "layer", tensorSplit: split };
  return allOnGpus(inputs, gpuFlags, split) ?? hybrid(inputs, gpuFlags, split);
}

/** Everything on the GPUs with llama.cpp's default batch sizes, when every GPU holds its share. */
function allOnGpus(inputs: PlacementInputs, gpuFlags: SizingFlags, split: number[]): Placement | undefined {
  const allGpuFlags: SizingFlags = { ...gpuFlags, ...batchesFor(inputs, inputs.catalog.llamaCpp.defaults) };
  if (
    !estimateOf(inputs, allGpuFlags)
      .devices.slice(1)
      .every((device) => device.fits)
  )
    return undefined;
  const result = withPromptCache(inputs, allGpuFlags);
  const reasons = [
    `All ${inputs.arch.layers} layers, experts included, fit in ${inputs.host.gpus.length} GPU(s): -ngl all with no CPU experts, so every byte read per token comes from VRAM.`,
    ...knobReasons(inputs, result.estimate),
  ];
  const expertLayersByGpu = expertLayersOf(result.estimate, inputs.tensors, inputs.host.gpus.length);
  return fromEstimate(result, { tensorSplit: split, expertLayersByGpu, overrideRules: [], reasons });
}

/**
 * Hybrid: routed experts in RAM except whole expert layers the VRAM left over holds, each on the GPU
 * that already runs that layer; prefill streams the CPU experts through the GPU one ubatch at a time
 * (so a large ubatch streams them fewer times) or multiplies them on the CPU, whichever is faster.
 * No repacking, so the CPU experts stay copyable to the GPU.
 */
function hybrid(inputs: PlacementInputs, gpuFlags: SizingFlags, split: number[]): Placement {
  const hybridUbatch = 2048;
  const defaults = inputs.catalog.llamaCpp.defaults;
  const hybridFlags: SizingFlags = {
    ...gpuFlags,
    ...batchesFor(inputs, { batch: Math.max(defaults.batch, hybridUbatch), ubatch: hybridUbatch }),
    repack: false,
  };
  const packing = packExpertLayers(inputs, hybridFlags);
  const overrideTensor = packing.overrideRules.map(overrideRuleOf);
  const streamed = withPromptCache(inputs, { ...hybridFlags, overrideTensor });
  const cpuFlags: SizingFlags = {
    ...gpuFlags,
    ...batchesFor(inputs, defaults),
    repack: false,
    opOffload: false,
    overrideTensor,
  };
  const prefill = choosePrefill(inputs, streamed, cpuFlags);
  const result = prefill.result;
  const kvOnGpus = result.estimate.devices.slice(1).reduce((sum, device) => sum + device.kvBytes, 0);
  const { arch } = inputs;
  const reasons = [
    `Hybrid: attention, shared experts, the dense layer, routers, the output layer and the KV cache (${formatGiB(kvOnGpus)}) go to the GPUs, because they are read for every token; routed experts (${formatGiB(packing.totalExpertBytes)}) do not fit and go to system RAM, where each token reads only ${arch.activeExperts} of ${arch.routedExperts}.`,
    `The VRAM left over holds ${packing.expertLayersByGpu.flat().length} of ${packing.expertLayerCount} expert layers as whole layers, each on the GPU that already runs that layer (no extra hop): ${packing.expertLayersByGpu.map((layers, i) => `CUDA${i} ${layers.length}`).join(", ")}; the -ot rules list those layers first and the generic CPU rule last, because llama.cpp takes the first pattern that matches.`,
    `Layers split over the GPUs by VRAM (-ts ${split.join(",")}) and set explicitly, so the placement above is exactly what llama.cpp does; --fit off keeps it from re-placing.`,
    `No repacking (--no-repack): repacked CPU weights cannot be copied to a GPU, and llama.cpp copies CPU experts to the GPU for batches of 32+ tokens when op offload is on.`,
    prefill.reason,
    `Load mode none (no mmap): llama.cpp warns that CPU overrides with mmap keep a second copy in the page cache.`,
    ...knobReasons(inputs, result.estimate),
  ];
  return fromEstimate(result, {
    tensorSplit: split,
    expertLayersByGpu: packing.expertLayersByGpu,
    overrideRules: packing.overrideRules,
    reasons,
  });
}

/**
 * Whole expert layers into each GPU's VRAM left over with every expert on the CPU, lowest layers
 * first, each on the GPU that runs that layer; the -ot rules name them before the generic CPU rule.
 */
function packExpertLayers(
  inputs: PlacementInputs,
  hybridFlags: SizingFlags,
): { expertLayersByGpu: number[][]; overrideRules: string[]; totalExpertBytes: number; expertLayerCount: number } {
  const genericRule = `${EXPERT_PATTERN}=CPU`;
  const expertsOnCpu = estimateOf(inputs, { ...hybridFlags, overrideTensor: [overrideRuleOf(genericRule)] });
  const expertBytesByLayer = new Map<number, number>();
  for (const tensor of inputs.tensors.filter((tensor) => tensor.cls === "routedExperts"))
    expertBytesByLayer.set(tensor.layer!, (expertBytesByLayer.get(tensor.layer!) ?? 0) + tensor.bytes);
  const layersInOrder = [...expertBytesByLayer.entries()].sort(([a], [b]) => a - b);
  const expertLayersByGpu: number[][] = inputs.host.gpus.map((_, index) => {
    const device = expertsOnCpu.devices[index + 1]!;
    let free = device.capacityBytes - device.plannedBytes;
    const layers: number[] = [];
    for (const [layer, bytes] of layersInOrder) {
      if (expertsOnCpu.placement.layerDevice[layer] !== `CUDA${index}` || bytes > free) continue;
      layers.push(layer);
      free -= bytes;
    }
    return layers;
  });
  const overrideRules = expertLayersByGpu.flatMap((layers, index) =>
    layers.length > 0 ? [`^blk\\.(${layers.join("|")})\\.${EXPERT_PATTERN}=CUDA${index}`] : [],
  );
  overrideRules.push(genericRule);
  const totalExpertBytes = [...expertBytesByLayer.values()].reduce((sum, bytes) => sum + bytes, 0);
  return { expertLayersByGpu, overrideRules, totalExpertBytes, expertLayerCount: expertBytesByLayer.size };
}

/**
 * The other way to prefill with CPU experts: multiply them on the CPU (--no-op-offload), which moves
 * nothing over PCIe. On narrow links (x4) that can beat streaming every expert once per ubatch; the
 * kit takes whichever estimate() says reaches the first token sooner, unless the stack decided
 * (serving.opOffload).
 */
function choosePrefill(
  inputs: PlacementInputs,
  streamed: PlacedEstimate,
  cpuFlags: SizingFlags,
): { result: PlacedEstimate; reason: string } {
  const onCpu = inputs.serving.knobs?.opOffload === undefined ? withPromptCache(inputs, cpuFlags) : undefined;
  const useCpuExperts =
    onCpu !== undefined &&
    onCpu.estimate.fits &&
    onCpu.estimate.projection.ttftSeconds < streamed.estimate.projection.ttftSeconds;
  const result = useCpuExperts ? onCpu : streamed;
  const ttftPrompt = result.estimate.projection.ttftPromptTokens;
  const streamedTtft = formatDuration(streamed.estimate.projection.ttftSeconds);
  const reason = useCpuExperts
    ? `Prefill on the CPU (--no-op-offload, batch ${result.estimate.settings.batch}/ubatch ${result.estimate.settings.ubatch}): for a ${ttftPrompt}-token prompt that reaches the first token in ${formatDuration(onCpu.estimate.projection.ttftSeconds)}, against ${streamedTtft} streaming the CPU experts over PCIe once per ubatch of ${streamed.estimate.settings.ubatch}.`
    : `Batch ${result.estimate.settings.batch}/ubatch ${result.estimate.settings.ubatch}: every ubatch streams the CPU experts over PCIe once, so a larger ubatch streams them fewer times per prompt; the compute buffers grow accordingly (counted above).${onCpu ? ` Multiplying them on the CPU instead (--no-op-offload) would take ${formatDuration(onCpu.estimate.projection.ttftSeconds)} to the first token of a ${ttftPrompt}-token prompt, against ${streamedTtft}.` : ""}`;
  return { result, reason };
}

/** Expert layers on each GPU, as the estimate placed them. */
function expertLayersOf(est: Estimate, tensors: readonly TensorInfo[], gpuCount: number): number[][] {
  const byGpu: number[][] = Array.from({ length: gpuCount }, () => []);
  for (const tensor of tensors) {
    if (tensor.cls !== "routedExperts" || tensor.layer === null) continue;
    const device = est.placement.deviceOfTensor.get(tensor.name);
    if (device && device !== "CPU") {
      const list = byGpu[Number(device.slice(4))]!;
      if (!list.includes(tensor.layer)) list.push(tensor.layer);
    }
  }
  return byGpu;
}
