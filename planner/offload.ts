/**
 * Which tensor goes where. CPU only when there is no GPU; all on GPU when everything fits there;
 * otherwise hybrid: attention, shared experts, dense layers, router and KV on the GPUs (layers
 * split the way llama.cpp splits them for -ts), routed experts on the CPU, and the VRAM left over
 * filled with whole expert layers, each on the GPU that already holds that layer, written as
 * anchored -ot rules with the specific ones before the generic one (llama.cpp: first match wins).
 */
import type { Architecture, Efficiency, LlamaCppRelease } from "./catalog";
import type { KvCacheType } from "./ggml-types";
import type { HostSpec } from "./host";
import {
  computeBufferBytes,
  finishDevice,
  gpuHeadroomBytes,
  hostHeadroomBytes,
  isRepacked,
  kvBytesPerLayer,
  kvCells,
  promptCacheBytes,
  type DeviceMemory,
  type DeviceName,
} from "./memory";
import type { TensorInfo } from "./tensors";
import { formatGiB, MiB } from "./units";

export type PlacementMode = "cpu-only" | "hybrid" | "all-gpu";

export interface ServingShape {
  contextPerSlot: number;
  slots: number;
  kvCacheType: KvCacheType;
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
}

export interface PlacementInputs {
  arch: Architecture;
  tensors: readonly TensorInfo[];
  host: HostSpec;
  serving: ServingShape;
  release: LlamaCppRelease;
  efficiency: Efficiency;
}

const EXPERT_PATTERN = "ffn_(up|down|gate|gate_up)_exps\\.";

/** llama.cpp's layer → GPU rule for -ngl all (llama-model.cpp load_tensors), in float32 like the original. */
export function assignLayersToGpus(layerCount: number, split: readonly number[]): number[] {
  const total = split.reduce((sum, value) => sum + value, 0);
  let running = 0;
  const cumulative = split.map((value) => {
    running = Math.fround(running + Math.fround(value));
    return Math.fround(running / Math.fround(total));
  });
  const active = layerCount + 1; // repeating layers + the output layer
  const devices: number[] = [];
  for (let layer = 0; layer <= layerCount; layer++) {
    const position = Math.fround(layer / active);
    let gpu = cumulative.findIndex((point) => point > position);
    if (gpu === -1) gpu = split.length; // upper_bound past the end: llama.cpp would index out of range; never happens for layer < active
    devices.push(Math.min(gpu, split.length - 1));
  }
  return devices; // index layerCount is the output layer
}

export function planPlacement(inputs: PlacementInputs): Placement {
  if (inputs.host.gpus.length === 0) return cpuOnly(inputs);
  return withGpus(inputs);
}

function cpuOnly(inputs: PlacementInputs): Placement {
  const { arch, tensors, host, serving, release, efficiency } = inputs;
  const cells = kvCells(serving.contextPerSlot, serving.slots);
  const ubatch = release.defaults.ubatch;
  const deviceOfTensor = new Map<string, DeviceName>(tensors.map((tensor) => [tensor.name, "CPU"]));
  let modelBytes = 0;
  let repackBytes = 0;
  for (const tensor of tensors) {
    if (isRepacked(tensor, host.cpu, release)) repackBytes += tensor.bytes;
    else modelBytes += tensor.bytes;
  }
  const kvBytes = kvBytesPerLayer(arch, serving.kvCacheType, cells) * arch.layers;
  const shape = computeShape(serving);
  const computeBytes = computeBufferBytes({ arch, ubatch, ...shape, holdsOutput: true, offloadedWeightBytes: 0 });
  const headroomBytes = hostHeadroomBytes(host.memory.totalBytes, efficiency);
  const cacheRamMiB = promptCacheFor(host.memory.totalBytes - (modelBytes + repackBytes + kvBytes + computeBytes + headroomBytes), release);
  const cpu = finishDevice({
    device: "CPU",
    label: `system RAM (${host.memory.kind ?? "RAM"})`,
    capacityBytes: host.memory.totalBytes,
    modelBytes,
    repackBytes,
    kvBytes,
    computeBytes,
    promptCacheBytes: promptCacheBytes(cacheRamMiB),
    headroomBytes,
  });
  const reasons = [
    `No GPU: every tensor and the whole KV cache live in system RAM; decode speed is set by its bandwidth.`,
    repackBytes > 0
      ? `Repacking stays on: ${formatGiB(repackBytes)} of ${[...new Set(tensors.filter((t) => isRepacked(t, host.cpu, release)).map((t) => t.type))].join("/")} weights get llama.cpp's interleaved CPU layout, which its AVX kernels multiply faster; the repacked copy replaces the original in RAM.`
      : `No tensor of this tier has a repacked layout on this CPU, so repacking changes nothing.`,
    `Load mode none (no mmap): the weights are read once into llama.cpp's own buffers, so RAM holds one copy and the page cache is not also holding ${formatGiB(modelBytes + repackBytes)} of file pages.`,
  ];
  return {
    mode: "cpu-only",
    deviceOfTensor,
    layerDevice: Array.from({ length: arch.layers }, () => "CPU" as const),
    outputDevice: "CPU",
    tensorSplit: undefined,
    expertLayersByGpu: [],
    overrideRules: [],
    repack: true,
    loadMode: "none",
    batch: release.defaults.batch,
    ubatch,
    cacheRamMiB,
    kvCells: cells,
    memory: [cpu],
    fits: cpu.fits,
    reasons,
  };
}

/** What the compute buffer depends on besides the model: the context all slots share and one slot's KV width. */
function computeShape(serving: ServingShape): { contextTotal: number; kvCellsPerSequence: number } {
  return { contextTotal: serving.contextPerSlot * serving.slots, kvCellsPerSequence: kvCells(serving.contextPerSlot, 1) };
}

/** The prompt cache gets what RAM is left, up to llama-server's default, so it never causes a refusal. */
function promptCacheFor(leftoverBytes: number, release: LlamaCppRelease): number {
  return Math.max(0, Math.min(release.defaults.cacheRamMiB, Math.floor(leftoverBytes / MiB / 1024) * 1024));
}

function withGpus(inputs: PlacementInputs): Placement {
  const { arch, tensors, host, serving, release, efficiency } = inputs;
  const gpus = host.gpus;
  const cells = kvCells(serving.contextPerSlot, serving.slots);
  const split = gpus.map((gpu) => Math.round(gpu.memoryBytes / MiB / 1024));
  const layerGpu = assignLayersToGpus(arch.layers, split);
  const outputGpu = layerGpu[arch.layers]!;
  const kvPerLayer = kvBytesPerLayer(arch, serving.kvCacheType, cells);
  const isExpert = (tensor: TensorInfo) => tensor.cls === "routedExperts";
  const largestExpertTensor = Math.max(0, ...tensors.filter(isExpert).map((tensor) => tensor.bytes));

  // Hybrid prefill streams CPU experts through the GPU one ubatch at a time, so a large ubatch
  // streams them fewer times; all-GPU keeps llama.cpp's default.
  const hybridUbatch = 2048;
  const gpuOf = (tensor: TensorInfo): number | null => {
    if (tensor.cls === "embedding") return null; // llama.cpp keeps the input layer on the CPU
    if (tensor.layer === null) return outputGpu;
    return layerGpu[tensor.layer]!;
  };

  const baseBytes = gpus.map(() => 0);
  for (const tensor of tensors) {
    const gpu = gpuOf(tensor);
    if (gpu !== null && !isExpert(tensor)) baseBytes[gpu]! += tensor.bytes;
  }
  const kvByGpu = gpus.map((_, gpu) => layerGpu.slice(0, arch.layers).filter((g) => g === gpu).length * kvPerLayer);
  const expertBytesByLayer = new Map<number, number>();
  for (const tensor of tensors.filter(isExpert)) {
    expertBytesByLayer.set(tensor.layer!, (expertBytesByLayer.get(tensor.layer!) ?? 0) + tensor.bytes);
  }
  const totalExpertBytes = [...expertBytesByLayer.values()].reduce((sum, bytes) => sum + bytes, 0);

  // First try everything on the GPUs.
  const shape = computeShape(serving);
  const allGpuCompute = gpus.map((_, gpu) => computeBufferBytes({ arch, ubatch: release.defaults.ubatch, ...shape, holdsOutput: gpu === outputGpu, offloadedWeightBytes: 0 }));
  const allGpuFits = gpus.every((gpu, index) => {
    const experts = [...expertBytesByLayer.entries()].filter(([layer]) => layerGpu[layer] === index).reduce((sum, [, bytes]) => sum + bytes, 0);
    return baseBytes[index]! + experts + kvByGpu[index]! + allGpuCompute[index]! + gpuHeadroomBytes(efficiency) <= gpu.memoryBytes;
  });

  const mode: PlacementMode = allGpuFits ? "all-gpu" : "hybrid";
  const ubatch = mode === "hybrid" ? hybridUbatch : release.defaults.ubatch;
  const batch = Math.max(release.defaults.batch, ubatch);
  const expertLayersByGpu: number[][] = gpus.map(() => []);
  const computeByGpu = gpus.map((_, gpu) =>
    mode === "all-gpu"
      ? allGpuCompute[gpu]!
      : computeBufferBytes({ arch, ubatch, ...shape, holdsOutput: gpu === outputGpu, offloadedWeightBytes: gpu === 0 ? largestExpertTensor : 0 }),
  );
  if (mode === "all-gpu") {
    for (const layer of expertBytesByLayer.keys()) expertLayersByGpu[layerGpu[layer]!]!.push(layer);
  } else {
    gpus.forEach((gpu, index) => {
      let free = gpu.memoryBytes - baseBytes[index]! - kvByGpu[index]! - computeByGpu[index]! - gpuHeadroomBytes(efficiency);
      for (const [layer, bytes] of [...expertBytesByLayer.entries()].sort(([a], [b]) => a - b)) {
        if (layerGpu[layer] !== index || bytes > free) continue;
        expertLayersByGpu[index]!.push(layer);
        free -= bytes;
      }
    });
  }

  const deviceOfTensor = new Map<string, DeviceName>();
  for (const tensor of tensors) {
    const gpu = gpuOf(tensor);
    if (gpu === null) deviceOfTensor.set(tensor.name, "CPU");
    else if (isExpert(tensor)) {
      const owner = expertLayersByGpu.findIndex((layers) => layers.includes(tensor.layer!));
      deviceOfTensor.set(tensor.name, owner >= 0 ? `CUDA${owner}` : "CPU");
    } else deviceOfTensor.set(tensor.name, `CUDA${gpu}`);
  }

  const repack = mode !== "hybrid";
  const memory: DeviceMemory[] = [];
  const cpuTensors = tensors.filter((tensor) => deviceOfTensor.get(tensor.name) === "CPU");
  let cpuModel = 0;
  let cpuRepack = 0;
  for (const tensor of cpuTensors) {
    if (repack && isRepacked(tensor, host.cpu, release)) cpuRepack += tensor.bytes;
    else cpuModel += tensor.bytes;
  }
  const cpuCompute = computeBufferBytes({ arch, ubatch, ...shape, holdsOutput: false, offloadedWeightBytes: 0 });
  const cpuHeadroom = hostHeadroomBytes(host.memory.totalBytes, efficiency);
  const cacheRamMiB = promptCacheFor(host.memory.totalBytes - (cpuModel + cpuRepack + cpuCompute + cpuHeadroom), release);
  memory.push(
    finishDevice({
      device: "CPU",
      label: `system RAM (${host.memory.kind ?? "RAM"})`,
      capacityBytes: host.memory.totalBytes,
      modelBytes: cpuModel,
      repackBytes: cpuRepack,
      kvBytes: 0,
      computeBytes: cpuCompute,
      promptCacheBytes: promptCacheBytes(cacheRamMiB),
      headroomBytes: cpuHeadroom,
    }),
  );
  gpus.forEach((gpu, index) => {
    const device: DeviceName = `CUDA${index}`;
    const modelBytes = tensors.filter((tensor) => deviceOfTensor.get(tensor.name) === device).reduce((sum, tensor) => sum + tensor.bytes, 0);
    memory.push(
      finishDevice({
        device,
        label: gpu.name,
        capacityBytes: gpu.memoryBytes,
        modelBytes,
        repackBytes: 0,
        kvBytes: kvByGpu[index]!,
        computeBytes: computeByGpu[index]!,
        promptCacheBytes: 0,
        headroomBytes: gpuHeadroomBytes(efficiency),
      }),
    );
  });

  const overrideRules: string[] = [];
  if (mode === "hybrid") {
    expertLayersByGpu.forEach((layers, index) => {
      if (layers.length > 0) overrideRules.push(`^blk\\.(${layers.join("|")})\\.${EXPERT_PATTERN}=CUDA${index}`);
    });
    overrideRules.push(`${EXPERT_PATTERN}=CPU`);
  }

  const onGpuExperts = expertLayersByGpu.flat().length;
  const moeLayers = expertBytesByLayer.size;
  const reasons: string[] = [];
  if (mode === "all-gpu") {
    reasons.push(`All ${arch.layers} layers, experts included, fit in ${gpus.length} GPU(s): -ngl all with no CPU experts, so every byte read per token comes from VRAM.`);
  } else {
    reasons.push(
      `Hybrid: attention, shared experts, the dense layer, routers, the output layer and the KV cache (${formatGiB(kvByGpu.reduce((a, b) => a + b, 0))}) go to the GPUs, because they are read for every token; routed experts (${formatGiB(totalExpertBytes)}) do not fit and go to system RAM, where each token reads only ${arch.activeExperts} of ${arch.routedExperts}.`,
      `The VRAM left over holds ${onGpuExperts} of ${moeLayers} expert layers as whole layers, each on the GPU that already runs that layer (no extra hop): ${expertLayersByGpu.map((layers, i) => `CUDA${i} ${layers.length}`).join(", ")}; the -ot rules list those layers first and the generic CPU rule last, because llama.cpp takes the first pattern that matches.`,
      `Layers split over the GPUs by VRAM (-ts ${split.join(",")}) and set explicitly, so the placement above is exactly what llama.cpp does; --fit off keeps it from re-placing.`,
      `No repacking (--no-repack): repacked CPU weights cannot be copied to a GPU, and llama.cpp copies CPU experts to the GPU for batches of 32+ tokens, which is what makes prefill fast here.`,
      `Batch ${batch}/ubatch ${ubatch}: every ubatch streams the CPU experts over PCIe once, so a larger ubatch streams them fewer times per prompt; the compute buffers grow accordingly (counted above).`,
      `Load mode none (no mmap): llama.cpp warns that CPU overrides with mmap keep a second copy in the page cache.`,
    );
  }
  return {
    mode,
    deviceOfTensor,
    layerDevice: layerGpu.slice(0, arch.layers).map((gpu) => `CUDA${gpu}` as DeviceName),
    outputDevice: `CUDA${outputGpu}`,
    tensorSplit: split,
    expertLayersByGpu,
    overrideRules,
    repack,
    loadMode: "none",
    batch,
    ubatch,
    cacheRamMiB,
    kvCells: cells,
    memory,
    fits: memory.every((device) => device.fits),
    reasons,
  };
}
