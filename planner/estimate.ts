/**
 * estimate(tensors, arch, host, flags): what any llama-server v0.5.0 command line costs on a host —
 * per-device bytes by kind (weights, repacked weights, KV, compute, prompt cache, headroom) and the
 * projected decode (by context depth) and prefill (by prompt length). It applies llama.cpp's own
 * rules to the flags (defaults, layer split, -ot/--cpu-moe placement, buffer selection, load mode),
 * so it answers for a command line the kit did not choose. The kit's choice (planner/offload.ts),
 * the plan, the CLI and the bench all call this one function; there is no second model.
 * Pure: no I/O.
 */
import type { Architecture, Catalog } from "./catalog";
import { ConfigError } from "./errors";
import type { FlashAttn, LoadMode, NumaMode, SizingFlags, SplitMode } from "./flags";
import type { KvCacheType } from "./ggml-types";
import type { HostSpec } from "./host";
import {
  computeBufferBytes,
  finishDevice,
  gpuHeadroomBytes,
  hostHeadroomBytes,
  isRepacked,
  checkpointBytes,
  kvBytesOfLayer,
  stateBytesOfLayer,
  promptCacheBytes,
  type CacheSettings,
  type DeviceMemory,
  type DeviceName,
} from "./memory";
import {
  endpointOf,
  isRpcDevice,
  rpcBufferName,
  rpcDeviceName,
  type LinkSpec,
  type RpcDeviceName,
  type RpcWorkerSpec,
} from "./network";
import { project, type CpuFactorOverrides, type Projection, type SpeedInputs } from "./speed";
import type { TensorInfo } from "./tensors";
import { formatGiB, MiB } from "./units";

export type PlacementMode = "cpu-only" | "hybrid" | "all-gpu";

/** What llama-server actually runs with once its defaults fill the flags left unset. */
export interface ResolvedSettings {
  contextTotal: number;
  slots: number;
  /** One KV stream for all slots (-np auto, or -kvu): a slot may use the whole context. */
  kvUnified: boolean;
  contextPerSlot: number;
  kvCells: number;
  batch: number;
  ubatch: number;
  threads: number;
  threadsBatch: number;
  gpuLayers: number;
  splitMode: SplitMode;
  tensorSplit: number[];
  cacheTypeK: KvCacheType;
  cacheTypeV: KvCacheType;
  flashAttn: FlashAttn;
  repack: boolean;
  loadMode: LoadMode;
  cacheRamMiB: number;
  opOffload: boolean;
  numa: NumaMode | "off";
}

export interface EstimatedPlacement {
  mode: PlacementMode;
  deviceOfTensor: Map<string, DeviceName>;
  /** Device of each repeating layer's non-overridden tensors and its KV cache. */
  layerDevice: DeviceName[];
  outputDevice: DeviceName;
  /** Tensors llama.cpp repacks for its CPU kernels (CPU_REPACK buffer). */
  repacked: Set<string>;
}

export interface Estimate {
  settings: ResolvedSettings;
  placement: EstimatedPlacement;
  /** CPU first, then CUDA0, CUDA1, … */
  devices: DeviceMemory[];
  fits: boolean;
  projection: Projection;
  /**
   * What the projection was computed from: project(speedInputs) with other CPU factors re-projects the same placement.
   */
  speedInputs: SpeedInputs;
  /** What the estimate assumed or could not model, in words, for the report. */
  notes: string[];
}

export interface EstimateOptions {
  catalog: Catalog;
  /** Depth the headline decode figure is quoted at; the others follow from decodeDepths. */
  decodeDepthTokens?: number;
  ttftPromptTokens?: number;
  decodeDepths?: number[];
  prefillPrompts?: number[];
  /** Efficiency factors measured on this very host (the bench), in place of the catalog's published ones. */
  cpuFactors?: CpuFactorOverrides;
  /**
   * The hosts behind --rpc, one per endpoint, and the link to them: without them a --rpc flag is
   * refused, since its layers would land on machines the estimate knows nothing about.
   */
  rpc?: { workers: RpcWorkerSpec[]; link: LinkSpec };
}

/** llama-server's -np auto: 4 slots sharing one unified KV cache (tools/server/server.cpp). */
const AUTO_SLOTS = 4;
/** KV cells are allocated in multiples of 256 per stream (src/llama-context.cpp). */
const KV_PAD = 256;
const pad = (cells: number) => Math.ceil(cells / KV_PAD) * KV_PAD;

/** llama.cpp's expert-tensor pattern (common/common.h LLM_FFN_EXPS_REGEX), which --cpu-moe and --n-cpu-moe use. */
export const FFN_EXPS_REGEX = "\\.ffn_(up|down|gate|gate_up)_(ch|)exps";

function resolveSettings(
  arch: Architecture,
  host: HostSpec,
  flags: SizingFlags,
  catalog: Catalog,
  rpcWorkers: readonly RpcWorkerSpec[],
): ResolvedSettings {
  const defaults = catalog.llamaCpp.defaults;
  const contextTotal = flags.ctxSize && flags.ctxSize > 0 ? flags.ctxSize : arch.contextLength;
  const auto = flags.parallel === undefined || flags.parallel === -1;
  const slots = auto ? AUTO_SLOTS : flags.parallel!;
  const kvUnified = flags.kvUnified ?? auto;
  const contextPerSlot = kvUnified ? contextTotal : Math.floor(contextTotal / slots);
  const kvCells = kvUnified ? pad(contextTotal) : slots * pad(contextPerSlot);
  const batch = flags.batch ?? defaults.batch;
  const ubatch = Math.min(flags.ubatch ?? defaults.ubatch, batch); // llama_context clamps n_ubatch to n_batch
  const threads = flags.threads && flags.threads > 0 ? flags.threads : host.cpu.cores;
  const threadsBatch = flags.threadsBatch && flags.threadsBatch > 0 ? flags.threadsBatch : threads;
  // RPC devices count as GPUs for -ngl and -ts, placed before the local ones (src/llama.cpp).
  const gpuCount = rpcWorkers.length + host.gpus.length;
  // -ngl auto (the default) lets --fit choose; with --fit's default margin the kit's hosts offload
  // everything that fits, which this estimate cannot replay, so auto is sized as all (noted).
  const gpuLayers =
    gpuCount === 0
      ? 0
      : flags.gpuLayers === undefined || flags.gpuLayers === "auto" || flags.gpuLayers === "all"
        ? arch.layers + 1
        : Math.min(flags.gpuLayers, arch.layers + 1);
  // Without -ts llama.cpp splits by each device's free memory; a CPU ggml-rpc-server reports all of
  // its RAM as free (ggml-cpu.cpp ggml_backend_cpu_device_get_memory).
  const tensorSplit = flags.tensorSplit ?? [
    ...rpcWorkers.map((worker) => Math.round(worker.host.memory.totalBytes / MiB / 1024)),
    ...host.gpus.map((gpu) => Math.round(gpu.memoryBytes / MiB / 1024)),
  ];
  return {
    contextTotal,
    slots,
    kvUnified,
    contextPerSlot,
    kvCells,
    batch,
    ubatch,
    threads,
    threadsBatch,
    gpuLayers,
    splitMode: flags.splitMode ?? "layer",
    tensorSplit,
    cacheTypeK: flags.cacheTypeK ?? "f16",
    cacheTypeV: flags.cacheTypeV ?? "f16",
    flashAttn: flags.flashAttn ?? "auto",
    repack: flags.repack ?? true,
    loadMode: flags.loadMode ?? "auto",
    cacheRamMiB: flags.cacheRamMiB ?? defaults.cacheRamMiB,
    opOffload: flags.opOffload ?? true,
    numa: flags.numa ?? "off",
  };
}

/**
 * llama.cpp's layer → GPU rule (src/llama-model.cpp load_tensors), in float32 like the original:
 * the last `gpuLayers` of the layerCount + 1 layers (the +1 is the output layer) go to the GPUs,
 * each to the first GPU whose cumulative split share exceeds the layer's position; the rest stay
 * on the CPU (null).
 */
export function assignLayers(layerCount: number, split: readonly number[], gpuLayers: number): (number | null)[] {
  const total = split.reduce((sum, value) => sum + value, 0);
  let running = 0;
  const cumulative = split.map((value) => {
    running = Math.fround(running + Math.fround(value));
    return Math.fround(running / Math.fround(total));
  });
  const start = Math.max(layerCount + 1 - gpuLayers, 0);
  const active = Math.min(gpuLayers, layerCount + 1);
  const devices: (number | null)[] = [];
  for (let layer = 0; layer <= layerCount; layer++) {
    if (layer < start || split.length === 0) {
      devices.push(null);
      continue;
    }
    const position = Math.fround((layer - start) / active);
    let gpu = cumulative.findIndex((point) => point > position);
    if (gpu === -1) gpu = split.length; // upper_bound past the end; never happens for layer < active
    devices.push(Math.min(gpu, split.length - 1));
  }
  return devices; // index layerCount is the output layer
}

function place(
  tensors: readonly TensorInfo[],
  arch: Architecture,
  host: HostSpec,
  flags: SizingFlags,
  settings: ResolvedSettings,
  catalog: Catalog,
  rpcWorkers: readonly RpcWorkerSpec[],
): EstimatedPlacement {
  const gpuCount = host.gpus.length;
  const deviceCount = rpcWorkers.length + gpuCount;
  const layers: (number | null)[] =
    settings.splitMode === "none"
      ? assignLayers(arch.layers, deviceCount > 0 ? [1] : [], settings.gpuLayers) // one device (main GPU 0) takes every offloaded layer
      : assignLayers(arch.layers, settings.tensorSplit.slice(0, deviceCount), settings.gpuLayers);
  const nameOf = (index: number | null): DeviceName =>
    index === null
      ? "CPU"
      : index < rpcWorkers.length
        ? rpcDeviceName(rpcWorkers[index]!.endpoint)
        : `CUDA${index - rpcWorkers.length}`;
  const layerDevice = layers.slice(0, arch.layers).map(nameOf);
  const outputDevice = nameOf(layers[arch.layers] ?? null);
  const rules = overrideRules(flags, host, rpcWorkers);
  const deviceOfTensor = deviceOfEachTensor(tensors, layerDevice, outputDevice, rules);
  const repacked = repackedTensors(tensors, deviceOfTensor, host, settings, catalog);
  const expertsOnCpu = tensors.some(
    (tensor) => tensor.cls === "routedExperts" && deviceOfTensor.get(tensor.name) === "CPU",
  );
  // RPC workers are CPUs too: a split over CPU hosts is still a CPU-only placement.
  const mode: PlacementMode =
    gpuCount === 0 ? "cpu-only" : expertsOnCpu || layerDevice.includes("CPU") ? "hybrid" : "all-gpu";
  return { mode, deviceOfTensor, layerDevice, outputDevice, repacked };
}

interface OverrideRule {
  regex: RegExp;
  device: DeviceName;
}

/**
 * -ot rules in order, then --cpu-moe / --n-cpu-moe (llama.cpp appends those to the same list; a
 * --cpu-moe written before an -ot rule that matches the same tensor would win there, not here).
 */
function overrideRules(flags: SizingFlags, host: HostSpec, rpcWorkers: readonly RpcWorkerSpec[]): OverrideRule[] {
  const gpuCount = host.gpus.length;
  const rules: OverrideRule[] = [];
  const buffers = [
    "CPU",
    ...rpcWorkers.map((worker) => rpcBufferName(worker.endpoint)),
    ...host.gpus.map((gpu) => `CUDA${gpu.index}`),
  ];
  for (const rule of flags.overrideTensor ?? []) {
    const rpcIndex = rpcWorkers.findIndex((worker) => rpcBufferName(worker.endpoint) === rule.device);
    if (rule.device !== "CPU" && rpcIndex === -1) {
      const index = Number(/^CUDA(\d+)$/.exec(rule.device)?.[1] ?? Number.NaN);
      if (!(index < gpuCount)) {
        throw new ConfigError("--args", [
          `-ot: found "${rule.pattern}=${rule.device}"; allowed: buffers of this host's devices (${buffers.join(", ")})`,
        ]);
      }
    }
    rules.push({
      regex: new RegExp(rule.pattern),
      device: rpcIndex >= 0 ? rpcDeviceName(rpcWorkers[rpcIndex]!.endpoint) : (rule.device as DeviceName),
    });
  }
  if (flags.cpuMoe) rules.push({ regex: new RegExp(FFN_EXPS_REGEX), device: "CPU" });
  for (let layer = 0; layer < (flags.nCpuMoe ?? 0); layer++)
    rules.push({ regex: new RegExp(`blk\\.${layer}${FFN_EXPS_REGEX}`), device: "CPU" });
  return rules;
}

/** Each tensor's device: its layer's (the output layer's for non-repeating ones), unless a rule overrides it. */
function deviceOfEachTensor(
  tensors: readonly TensorInfo[],
  layerDevice: readonly DeviceName[],
  outputDevice: DeviceName,
  rules: readonly OverrideRule[],
): Map<string, DeviceName> {
  const deviceOfTensor = new Map<string, DeviceName>();
  for (const tensor of tensors) {
    let device: DeviceName;
    if (tensor.cls === "embedding")
      device = "CPU"; // llama.cpp keeps the input layer on the CPU
    else if (tensor.layer === null) device = outputDevice;
    else device = layerDevice[tensor.layer] ?? "CPU";
    const override = rules.find((rule) => rule.regex.test(tensor.name));
    deviceOfTensor.set(tensor.name, override ? override.device : device);
  }
  return deviceOfTensor;
}

/**
 * CPU buffer choice (make_cpu_buft_list: ACCEL → GPU host → CPU extra → CPU): with a CUDA device
 * its host buffer comes before CPU_REPACK, so repacking happens only on hosts without a GPU.
 */
function repackedTensors(
  tensors: readonly TensorInfo[],
  deviceOfTensor: ReadonlyMap<string, DeviceName>,
  host: HostSpec,
  settings: ResolvedSettings,
  catalog: Catalog,
): Set<string> {
  const repacked = new Set<string>();
  if (settings.repack && host.gpus.length === 0) {
    for (const tensor of tensors)
      if (deviceOfTensor.get(tensor.name) === "CPU" && isRepacked(tensor, host.cpu, catalog.llamaCpp))
        repacked.add(tensor.name);
  }
  return repacked;
}

/**
 * The bytes llama-server maps for CPU weights under mmap (its CPU_Mapped buffer): per shard, from
 * the first to the last tensor left in the plain CPU buffer. Without offsets (catalog tensors) the
 * tensors are taken as one file in list order.
 */
function mappedSpanBytes(tensors: readonly TensorInfo[], placement: EstimatedPlacement): number {
  const spans = new Map<number, { start: number; end: number }>();
  let cursor = 0;
  for (const tensor of tensors) {
    const offset = tensor.offset ?? cursor;
    cursor = offset + tensor.bytes;
    if (placement.deviceOfTensor.get(tensor.name) !== "CPU" || placement.repacked.has(tensor.name)) continue;
    const file = tensor.file ?? 0;
    const span = spans.get(file) ?? { start: offset, end: offset + tensor.bytes };
    spans.set(file, { start: Math.min(span.start, offset), end: Math.max(span.end, offset + tensor.bytes) });
  }
  return [...spans.values()].reduce((sum, span) => sum + span.end - span.start, 0);
}

/** What a CPU-resident weight costs the GPU that multiplies it during a big batch (op offload). */
function largestOffloadedWeight(tensors: readonly TensorInfo[], placement: EstimatedPlacement): number {
  let largest = 0;
  for (const tensor of tensors) {
    if (placement.deviceOfTensor.get(tensor.name) !== "CPU" || placement.repacked.has(tensor.name)) continue; // repacked buffers are never offloaded
    if (tensor.cls === "embedding" || tensor.cls === "norms" || tensor.shape.length < 2) continue; // GET_ROWS and element-wise ops stay
    largest = Math.max(largest, tensor.bytes);
  }
  return largest;
}

export function estimate(
  tensors: readonly TensorInfo[],
  arch: Architecture,
  host: HostSpec,
  flags: SizingFlags,
  options: EstimateOptions,
): Estimate {
  const { catalog } = options;
  const rpcWorkers = rpcWorkersOf(flags, options);
  const settings = resolveSettings(arch, host, flags, catalog, rpcWorkers);
  refuseMlaCacheTypeMismatch(arch, settings);
  const placement = place(tensors, arch, host, flags, settings, catalog, rpcWorkers);
  const mapped = settings.loadMode === "auto" || settings.loadMode === "mmap" || settings.loadMode === "mmap+mlock";
  const context: EstimateContext = { tensors, arch, host, flags, options, settings, placement, rpcWorkers, mapped };
  const devices = deviceMemories(context);
  const notes = [...memoryNotes(context, devices), ...rpcNotes(context, devices), ...flagNotes(context, devices)];
  const speedInputs = speedInputsOf(context);
  const projection = project(speedInputs);
  return { settings, placement, devices, fits: devices.every((device) => device.fits), projection, speedInputs, notes };
}

/** What estimate() has resolved by the time it sizes devices, writes notes and builds the speed inputs. */
interface EstimateContext {
  tensors: readonly TensorInfo[];
  arch: Architecture;
  host: HostSpec;
  flags: SizingFlags;
  options: EstimateOptions;
  settings: ResolvedSettings;
  placement: EstimatedPlacement;
  rpcWorkers: readonly RpcWorkerSpec[];
  /** Load mode auto/mmap/mmap+mlock: the CPU weights stay memory-mapped. */
  mapped: boolean;
}

/**
 * llama-context.cpp (llama_init_from_model): an MLA model whose K and V cache types differ is
 * refused ("model does not support different K and V cache types"), though it stores no V.
 */
function refuseMlaCacheTypeMismatch(arch: Architecture, settings: ResolvedSettings): void {
  if (arch.attention?.kind !== "gqa" && settings.cacheTypeK !== settings.cacheTypeV) {
    throw new ConfigError("--args", [
      `-ctv: found ${settings.cacheTypeV} with -ctk ${settings.cacheTypeK}; allowed: -ctv ${settings.cacheTypeK} (${arch.llamaCppArch} uses MLA, and llama-server refuses different K and V cache types for it)`,
    ]);
  }
}

function cacheSettingsOf(settings: ResolvedSettings, flags: SizingFlags): CacheSettings {
  return {
    cacheTypeK: settings.cacheTypeK,
    cacheTypeV: settings.cacheTypeV,
    kvUnified: settings.kvUnified,
    slots: settings.slots,
    cellsPerStream: settings.kvUnified ? settings.kvCells : pad(settings.contextPerSlot),
    ubatch: settings.ubatch,
    swaFull: flags.swaFull ?? false,
  };
}

/** The compute buffer of each device, as a function of the device. */
function computeBytesOf({
  tensors,
  arch,
  host,
  flags,
  settings,
  placement,
}: EstimateContext): (device: DeviceName) => number {
  // The attention mask spans the cells one sequence can see: all of them when unified.
  const kvCellsPerSequence = settings.kvUnified ? settings.kvCells : pad(settings.contextPerSlot);
  const offloaded =
    host.gpus.length > 0 && settings.opOffload && settings.ubatch >= OP_OFFLOAD_MIN_BATCH
      ? largestOffloadedWeight(tensors, placement)
      : 0;
  return (device: DeviceName) =>
    computeBufferBytes({
      arch,
      ubatch: settings.ubatch,
      contextTotal: settings.contextTotal,
      kvCellsPerSequence,
      slots: settings.slots,
      kvUnified: settings.kvUnified,
      cacheTypeK: settings.cacheTypeK,
      swaFull: flags.swaFull ?? false,
      holdsOutput: placement.outputDevice === device,
      offloadedWeightBytes: device === "CUDA0" ? offloaded : 0,
      flashAttention: settings.flashAttn !== "off",
    });
}

/** What every device holds whatever it is: its weights, its layers' KV and state, its compute buffer. */
type DeviceUsage = Pick<DeviceMemory, "modelBytes" | "repackBytes" | "kvBytes" | "recurrentBytes" | "computeBytes">;

/** Per-device memory: CPU first, then the RPC devices, then CUDA0, CUDA1, … */
function deviceMemories(context: EstimateContext): DeviceMemory[] {
  const { tensors, arch, host, flags, settings, placement, rpcWorkers } = context;
  const cacheSettings = cacheSettingsOf(settings, flags);
  const compute = computeBytesOf(context);
  const deviceNames: DeviceName[] = [
    "CPU",
    ...rpcWorkers.map((worker) => rpcDeviceName(worker.endpoint)),
    ...host.gpus.map((gpu) => `CUDA${gpu.index}` as DeviceName),
  ];
  return deviceNames.map((device) => {
    let modelBytes = 0;
    let repackBytes = 0;
    for (const tensor of tensors) {
      if (placement.deviceOfTensor.get(tensor.name) !== device) continue;
      if (placement.repacked.has(tensor.name)) repackBytes += tensor.bytes;
      else modelBytes += tensor.bytes;
    }
    const layersHere = placement.layerDevice.flatMap((owner, layer) => (owner === device ? [layer] : []));
    const kvBytes = layersHere.reduce((sum, layer) => sum + kvBytesOfLayer(arch, layer, cacheSettings), 0);
    const recurrentBytes = layersHere.reduce((sum, layer) => sum + stateBytesOfLayer(arch, layer, settings.slots), 0);
    const usage: DeviceUsage = { modelBytes, repackBytes, kvBytes, recurrentBytes, computeBytes: compute(device) };
    if (device === "CPU") return hostRamMemory(context, usage, cacheSettings);
    if (isRpcDevice(device)) return rpcWorkerMemory(context, device, usage);
    return gpuMemory(context, device, usage);
  });
}

function hostRamMemory(context: EstimateContext, usage: DeviceUsage, cacheSettings: CacheSettings): DeviceMemory {
  const { tensors, arch, host, flags, options, settings, placement, mapped } = context;
  const { catalog } = options;
  const headroomBytes = hostHeadroomBytes(host.memory.totalBytes, catalog.efficiency);
  return finishDevice({
    device: "CPU",
    label: `system RAM (${host.memory.kind ?? "RAM"})`,
    capacityBytes: host.memory.totalBytes,
    ...usage,
    promptCacheBytes: promptCacheBytes(settings.cacheRamMiB),
    checkpointBytes:
      settings.slots *
      (flags.ctxCheckpoints ?? catalog.llamaCpp.defaults.ctxCheckpoints) *
      checkpointBytes(arch, cacheSettings),
    headroomBytes,
    mappedBytes: mapped ? mappedSpanBytes(tensors, placement) : 0,
  });
}

/**
 * A CPU ggml-rpc-server holds what it is sent in plain buffers of its RAM: no mmap, no repack,
 * no prompt cache (that stays with llama-server on the head).
 */
function rpcWorkerMemory(context: EstimateContext, device: RpcDeviceName, usage: DeviceUsage): DeviceMemory {
  const worker = context.rpcWorkers.find((entry) => entry.endpoint === endpointOf(device))!;
  return finishDevice({
    device,
    label: `${worker.host.label} (ggml-rpc-server)`,
    capacityBytes: worker.host.memory.totalBytes,
    ...usage,
    modelBytes: usage.modelBytes + usage.repackBytes,
    repackBytes: 0,
    promptCacheBytes: 0,
    checkpointBytes: 0,
    headroomBytes: hostHeadroomBytes(worker.host.memory.totalBytes, context.options.catalog.efficiency),
    mappedBytes: 0,
  });
}

function gpuMemory(context: EstimateContext, device: DeviceName, usage: DeviceUsage): DeviceMemory {
  const gpu = context.host.gpus[Number(device.slice(4))]!;
  return finishDevice({
    device,
    label: gpu.name,
    capacityBytes: gpu.memoryBytes,
    ...usage,
    promptCacheBytes: 0,
    checkpointBytes: 0,
    headroomBytes: gpuHeadroomBytes(context.options.catalog.efficiency),
    mappedBytes: 0,
  });
}

/** Notes on load mode, the prompt cache, -ngl auto and pipeline parallelism. */
function memoryNotes(context: EstimateContext, devices: readonly DeviceMemory[]): string[] {
  const { arch, host, flags, settings, rpcWorkers, mapped } = context;
  const notes: string[] = [];
  if (mapped) {
    const cpu = devices[0]!;
    notes.push(
      `Load mode ${settings.loadMode} (memory-mapped): llama-server maps ${formatGiB(cpu.mappedBytes)} of the file for the CPU weights; the ${formatGiB(cpu.modelBytes)} it reads are counted as weights (evicting them makes tokens re-read the file), the rest of the span (tensors copied to ${host.gpus.length > 0 ? "GPUs" : "the repack buffer"}) is page cache the kernel can reclaim, so it is not added.`,
    );
  }
  if (settings.cacheRamMiB === -1)
    notes.push("--cache-ram -1: the prompt cache has no limit and grows into whatever RAM is free; counted as 0 here.");
  if (host.gpus.length + rpcWorkers.length > 0 && (flags.gpuLayers === undefined || flags.gpuLayers === "auto"))
    notes.push("-ngl auto: sized as all layers on the GPUs and RPC devices; llama.cpp's --fit may choose fewer.");
  // llama-context.cpp: several devices, every layer offloaded, -sm layer, no tensor overrides →
  // pipeline parallelism, whose scheduler keeps GGML_SCHED_MAX_COPIES (4) copies of each split's inputs.
  const overridden = (flags.overrideTensor?.length ?? 0) > 0 || flags.cpuMoe === true || (flags.nCpuMoe ?? 0) > 0;
  if (
    rpcWorkers.length + host.gpus.length > 1 &&
    settings.gpuLayers > arch.layers &&
    settings.splitMode === "layer" &&
    !overridden
  ) {
    notes.push(
      "Pipeline parallelism (several devices, every layer offloaded, no -ot): llama.cpp keeps 4 copies of each device's graph inputs, which these compute buffers do not count (measured +15–17 MiB per RPC device on a 1536-wide deepseek2, npm run bench:rpc); the kit's own plans keep layers on the CPU or use -ot, which turns it off.",
    );
  }
  return notes;
}

/** Notes on --rpc: what the estimate leaves out beside GPUs, and what crosses the link. */
function rpcNotes(context: EstimateContext, devices: readonly DeviceMemory[]): string[] {
  const { host, options, rpcWorkers } = context;
  const notes: string[] = [];
  if (rpcWorkers.length > 0 && host.gpus.length > 0) {
    notes.push(
      "--rpc beside local GPUs: memory is sized per device, but prefill is projected on the GPU path alone (the RPC workers' share of a prompt is not added); the kit plans RPC splits of CPU hosts only.",
    );
  }
  if (rpcWorkers.length > 0) {
    const shipped = devices
      .filter((device) => isRpcDevice(device.device))
      .reduce((sum, device) => sum + device.modelBytes, 0);
    notes.push(
      `--rpc: ${formatGiB(shipped)} of weights cross the link to ${rpcWorkers.length} ggml-rpc-server(s) at every model load (${options.rpc!.link.basis}); activations cross it for every token, staged in the head's RAM between workers.`,
    );
  }
  return notes;
}

/** Notes on flags the estimate sizes loosely or that change nothing for this model. */
function flagNotes(context: EstimateContext, devices: readonly DeviceMemory[]): string[] {
  const { arch, flags, options, settings } = context;
  const notes: string[] = [];
  if (settings.splitMode === "row" || settings.splitMode === "tensor")
    notes.push(`-sm ${settings.splitMode}: sized as -sm layer (row and tensor split are not modelled).`);
  if (
    (flags.swaFull !== undefined || flags.ctxCheckpoints !== undefined) &&
    !arch.recurrent &&
    !arch.kvLayout?.swaLayers.length
  ) {
    notes.push(
      `--swa-full and --ctx-checkpoints change only sliding-window and recurrent layers; ${arch.llamaCppArch} has neither, so they cost nothing here.`,
    );
  }
  if (devices[0]!.checkpointBytes > 0) {
    notes.push(
      `Context checkpoints: up to ${flags.ctxCheckpoints ?? options.catalog.llamaCpp.defaults.ctxCheckpoints} per slot (--ctx-checkpoints), each one sequence's ${arch.recurrent ? "recurrent state" : ""}${arch.recurrent && arch.kvLayout?.swaLayers.length ? " and " : ""}${arch.kvLayout?.swaLayers.length ? "sliding-window cells" : ""}, held in host RAM outside --cache-ram while the slot works: ${formatGiB(devices[0]!.checkpointBytes)} at worst, counted; lower --ctx-checkpoints to trade prompt re-use for RAM.`,
    );
  }
  if (settings.flashAttn === "off")
    notes.push(
      `-fa off: the compute buffer adds the f32 attention scores for one ubatch over every KV cell a sequence sees${arch.attention?.kind === "gqa" ? "" : ", and the latent V cache copied out whole"}.`,
    );
  if (settings.cacheTypeV !== "f16" && arch.attention?.kind !== "gqa")
    notes.push(`-ctv ${settings.cacheTypeV}: MLA keeps no V cache, so the V type changes nothing.`);
  return notes;
}

/**
 * What project() reads from the estimate: the placement, the cache types, the threads and the report's depths and
 * prompts.
 */
function speedInputsOf(context: EstimateContext): SpeedInputs {
  const { tensors, arch, host, options, settings, placement, rpcWorkers, mapped } = context;
  return {
    arch,
    tensors,
    host,
    placement: {
      mode: placement.mode,
      deviceOfTensor: placement.deviceOfTensor,
      layerDevice: placement.layerDevice,
      ubatch: settings.ubatch,
    },
    kvCacheType: settings.cacheTypeK,
    kvCacheTypeV: settings.cacheTypeV,
    // --numa isolate spawns threads only on the node llama-server started on (--help).
    threadsBatch:
      settings.numa === "isolate"
        ? Math.min(settings.threadsBatch, Math.ceil(host.cpu.cores / host.cpu.numaNodes))
        : settings.threadsBatch,
    threads:
      settings.numa === "isolate"
        ? Math.min(settings.threads, Math.ceil(host.cpu.cores / host.cpu.numaNodes))
        : settings.threads,
    opOffload: settings.opOffload,
    // llama-model-loader.cpp create_tensor: under mmap the CPU weights stay in plain pageable memory
    // instead of CUDA_Host (mechanics §2), which op offload's copies then pay for.
    hostWeightsPinned: !mapped,
    numaSpread: settings.numa === "distribute" || settings.numa === "numactl",
    decodeDepthTokens: Math.min(options.decodeDepthTokens ?? 0, settings.contextPerSlot),
    ttftPromptTokens: options.ttftPromptTokens ?? PREFILL_DEFAULT_TTFT_TOKENS,
    contextPerSlot: settings.contextPerSlot,
    decodeDepths: options.decodeDepths,
    prefillPrompts: options.prefillPrompts,
    catalog: options.catalog,
    cpuFactors: options.cpuFactors,
    ...(rpcWorkers.length > 0
      ? {
          rpc: {
            workers: rpcWorkers,
            link: options.rpc!.link,
            outputDevice: placement.outputDevice,
            flashAttention: settings.flashAttn !== "off",
          },
        }
      : {}),
  };
}

/** The workers behind --rpc, in its order; each endpoint must be one the options describe. */
function rpcWorkersOf(flags: SizingFlags, options: EstimateOptions): RpcWorkerSpec[] {
  const endpoints = flags.rpc ?? [];
  const known = options.rpc?.workers ?? [];
  const missing = endpoints.filter((endpoint) => !known.some((worker) => worker.endpoint === endpoint));
  if (missing.length > 0) {
    throw new ConfigError("--args", [
      `--rpc: found ${missing.join(",")}; allowed: endpoints of the stack's rpc-workers (${known.length > 0 ? known.map((worker) => worker.endpoint).join(", ") : "the stack has none: list them under kimi-kit:hosts"}), since their memory and speed are what the layers there cost`,
    ]);
  }
  return endpoints.map((endpoint) => known.find((worker) => worker.endpoint === endpoint)!);
}

/** GGML_OP_OFFLOAD_MIN_BATCH's default (ggml-cuda.cu): smaller batches are not offloaded. */
const OP_OFFLOAD_MIN_BATCH = 32;
const PREFILL_DEFAULT_TTFT_TOKENS = 32768;
