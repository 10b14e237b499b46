/**
 * Throughput projections: the speed half of estimate() (planner/estimate.ts), project()'s only
 * caller. Decode is memory-bound: each device's bytes read per token (weights it holds × the
 * fraction a token touches, plus the KV cache up to the current depth) over that device's
 * effective bandwidth, plus a fixed CPU cost per layer run on the CPU, summed over devices because
 * llama.cpp runs a token's layers one after another. Prefill is compute-bound: FLOPs per token (2
 * per active weight, plus MLA attention growing with position) over effective compute, plus — in
 * hybrid placements — the CPU experts streamed over PCIe to the GPU once per ubatch.
 * Every efficiency factor is named once in catalog/efficiency.yaml with the measurement behind it.
 */
import type { Architecture, Catalog, ModelEntry } from "./catalog";
import type { KvCacheType } from "./ggml-types";
import type { HostSpec } from "./host";
import { keepsKv, kvLayerCount, kvReadBytesPerToken, recurrentBytesPerLayer, type DeviceName } from "./memory";
import {
  endpointOf,
  isRpcDevice,
  visitBytes,
  visitCommands,
  visitSeconds,
  type LinkSpec,
  type RpcWorkerSpec,
} from "./network";
import type { PlacementMode } from "./estimate";
import {
  attentionFlopsPerTokenPerLayer,
  decodeReadFraction,
  matmulFlopsPerToken,
  tensorsFromArchitecture,
  type TensorInfo,
} from "./tensors";

export interface NamedFactor {
  name: string;
  value: number;
  source: string;
}

export interface DeviceDecodeTraffic {
  device: DeviceName;
  bytesPerToken: number;
  effectiveBandwidth: number;
  secondsPerToken: number;
  /** CPU only: the decode threads' arithmetic, not the memory, sets the pace (the roofline's other side). */
  computeBound: boolean;
  /** CPU only: what that arithmetic is, in words, when it binds. */
  computeBasis?: string;
  /**
   * RPC devices: the link's share of secondsPerToken (one round trip, the activations in and out, and each command's
   * host time).
   */
  networkSecondsPerToken?: number;
}

export interface Projection {
  decodeDepthTokens: number;
  decodeTokensPerSecond: number;
  decodeTraffic: DeviceDecodeTraffic[];
  decodeByDepth: { depthTokens: number; tokensPerSecond: number }[];
  prefillByPrompt: { promptTokens: number; seconds: number; tokensPerSecond: number }[];
  prefillPromptTokens: number;
  prefillTokensPerSecond: number;
  ttftPromptTokens: number;
  ttftSeconds: number;
  prefillBasis: string;
  factors: NamedFactor[];
  /** How far published runs of this hardware class landed from their leave-one-source-out projections. */
  errorBands: { decode: ErrorBand | undefined; prefill: ErrorBand | undefined };
}

/**
 * A projection's band: the measured rate lay between `low` and `high` times the projected one for 80%
 * of held-out published runs (projected ÷ measured − 1 between p10 and p90).
 */
export interface ErrorBand {
  hardwareClass: string;
  runs: number;
  low: number;
  high: number;
}

/**
 * The hardware class of catalog/measurements.yaml (planner/measurements.ts hardwareClass) a placement on a host belongs
 * to.
 */
export function projectionClass(mode: PlacementMode, host: Pick<HostSpec, "cpu">): string {
  return mode === "all-gpu" ? "gpu-only" : `${mode}/${host.cpu.arch === "arm64" ? "arm" : "x86"}`;
}

function errorBand(catalog: Catalog, hardwareClass: string, phase: "decode" | "prefill"): ErrorBand | undefined {
  const bands = (catalog.efficiency.cpu.corpusFit?.errorBands ?? []).filter((band) => band.phase === phase);
  const band =
    bands.find((entry) => entry.hardwareClass === hardwareClass) ??
    bands.find((entry) => entry.hardwareClass === "all");
  return (
    band && { hardwareClass: band.hardwareClass, runs: band.runs, low: 1 / (1 + band.p90), high: 1 / (1 + band.p10) }
  );
}

/** Bytes one decoded token reads from every tensor placed on `device`, at a KV depth. */
function decodeBytesOnDevice(
  tensors: readonly TensorInfo[],
  placement: Pick<SpeedPlacement, "deviceOfTensor" | "layerDevice">,
  arch: Architecture,
  device: DeviceName,
  depthTokens: number,
  kvType: KvCacheType,
  kvTypeV: KvCacheType = kvType,
  slots = 1,
): number {
  let bytes = 0;
  for (const tensor of tensors) {
    if (placement.deviceOfTensor.get(tensor.name) === device)
      bytes += tensor.bytes * batchReadFraction(decodeReadFraction(tensor, arch), slots);
  }
  const layersHere = placement.layerDevice.flatMap((owner, layer) => (owner === device ? [layer] : []));
  const kvRead = layersHere.reduce(
    (sum, layer) => sum + kvReadBytesPerToken(arch, layer, depthTokens, kvType, kvTypeV),
    0,
  );
  // A recurrent layer reads and writes its one-slot state once per token instead of reading KV.
  const recurrentLayersHere = layersHere.filter((layer) => arch.recurrent?.layers.includes(layer)).length;
  // Every slot reads its own KV (and recurrent state): those bytes scale with the slots, the weights do not.
  return bytes + slots * (kvRead + recurrentLayersHere * 2 * recurrentBytesPerLayer(arch, 1));
}

/**
 * The share of a tensor one decode step reads when `slots` sequences decode together: a step reads
 * each weight row once for the whole batch, so a dense tensor (fraction 1) is read once, and a routed
 * expert that each token picks with probability f is read unless no slot picks it: 1 − (1 − f)^slots.
 * This assumes independent, uniform routing across the slots (no expert is favoured); skewed routing
 * would read fewer distinct experts, so this errs towards more bytes, that is slower.
 */
export function batchReadFraction(fraction: number, slots: number): number {
  if (slots <= 1) return fraction;
  return 1 - (1 - fraction) ** slots;
}

function matmulFlops(tensors: readonly TensorInfo[], arch: Architecture): number {
  return tensors.reduce((sum, tensor) => sum + matmulFlopsPerToken(tensor, arch), 0);
}

/** FLOPs to prefill tokens [start, start + count): weights once per token, attention per position. */
function prefillFlops(perTokenMatmul: number, arch: Architecture, start: number, count: number): number {
  const positions = count * start + (count * (count - 1)) / 2;
  return count * perTokenMatmul + kvLayerCount(arch) * attentionFlopsPerTokenPerLayer(arch, 1) * positions;
}

export interface CpuFactors {
  /** Fraction of the achievable bandwidth a decode step streams weights at. */
  decodeEfficiency: number;
  /** Fixed CPU time per layer per decoded token: kernel dispatch and thread barriers. */
  decodeSecondsPerLayer: number;
  /**
   * Fraction of the decode threads' FP32 peak a quantized matrix-vector product reaches. Decode is
   * memory-bound on all cores; with few threads (-t 12 on a 96-core socket) the dequantize-and-dot
   * work of the active weights is what sets the pace.
   */
  decodeComputeEfficiency: number;
  prefillEfficiency: number;
  /**
   * What each NUMA node beyond the first adds under --numa distribute/numactl, as a fraction of its
   * own bandwidth: mainline llama.cpp does not place a tensor's rows on the node of the threads that
   * read them, so remote reads cross the socket link.
   */
  numaRemoteGain: number;
  /**
   * Fraction of the first GPU's PCIe link that op offload's weight streaming reaches (hybrid prefill):
   * the CPU experts are copied from host memory once per ubatch.
   */
  pcieStreamFraction: number;
  /**
   * What op offload's stream reaches from pageable host memory (memory-mapped weights), as a
   * fraction of the pinned rate: CUDA stages pageable copies through a pinned buffer.
   */
  pageableStreamFraction: number;
  factors: NamedFactor[];
}

/**
 * The CPU factors a fit can change; a value given here replaces the catalog's (the bench on this machine, or a
 * leave-one-source-out fold).
 */
export const CPU_FACTOR_NAMES = [
  "decodeEfficiency",
  "decodeSecondsPerLayer",
  "decodeComputeEfficiency",
  "prefillEfficiency",
  "numaRemoteGain",
  "pcieStreamFraction",
  "pageableStreamFraction",
] as const;
export type CpuFactorName = (typeof CPU_FACTOR_NAMES)[number];

export type CpuFactorOverrides = Partial<Record<CpuFactorName, number>> & { source: string };

/**
 * The priors: the two published Kimi K2.6 measurements turned into efficiency factors with this
 * planner's own bytes and FLOPs per token for the measured tier (so a factor and the model that
 * applies it agree; the per-layer decode cost is subtracted from the measured token time first),
 * and the sourced values of catalog/efficiency.yaml cpu.priors. The corpus fit starts from these and
 * keeps one wherever its training runs say nothing about it.
 */
export function priorCpuFactors(catalog: Catalog): NamedFactor[] {
  const {
    decodeCalibration: decode,
    prefillCalibration: prefill,
    decodeSecondsPerLayer: perLayer,
    priors,
  } = catalog.efficiency.cpu;
  const factorFor = (modelId: string, tierName: string): { model: ModelEntry; tensors: TensorInfo[] } => {
    const model = catalog.models.find((entry) => entry.id === modelId);
    const tier = model?.tiers.find((entry) => entry.name === tierName);
    if (!model || !tier)
      throw new Error(`catalog/efficiency.yaml calibrates on ${modelId} ${tierName}, which catalog/models.yaml lacks`);
    return { model, tensors: tensorsFromArchitecture(model.architecture, tier) };
  };
  const d = factorFor(decode.model, decode.tier);
  const cpuOnly = {
    deviceOfTensor: new Map(d.tensors.map((t) => [t.name, "CPU" as DeviceName])),
    layerDevice: d.tensors.filter((t) => t.name.endsWith("attn_norm.weight")).map(() => "CPU" as DeviceName),
  };
  const bytesPerToken = decodeBytesOnDevice(d.tensors, cpuOnly, d.model.architecture, "CPU", decode.depthTokens, "f16");
  const streamingSeconds = 1 / decode.decodeTokensPerSecond - d.model.architecture.layers * perLayer.value;
  const decodeEfficiency = bytesPerToken / streamingSeconds / (decode.measuredBandwidthGBps * 1e9);

  const p = factorFor(prefill.model, prefill.tier);
  const flopsPerToken =
    prefillFlops(matmulFlops(p.tensors, p.model.architecture), p.model.architecture, 0, prefill.promptTokens) /
    prefill.promptTokens;
  const peak = prefill.cores * prefill.allCoreGHz * 1e9 * prefill.fp32FlopsPerCycle;
  const prefillEfficiency = (prefill.prefillTokensPerSecond * flopsPerToken) / peak;
  return [
    {
      name: "cpu.decodeEfficiency",
      value: decodeEfficiency,
      source: `${(bytesPerToken / 1e9).toFixed(2)} GB/token (this planner, ${decode.model} ${decode.tier}) ÷ (1/${decode.decodeTokensPerSecond} t/s − ${d.model.architecture.layers} layers × ${(perLayer.value * 1e6).toFixed(0)} µs) ÷ ${decode.measuredBandwidthGBps} GB/s — ${decode.source}`,
    },
    { name: "cpu.decodeSecondsPerLayer", value: perLayer.value, source: perLayer.source },
    {
      name: "cpu.decodeComputeEfficiency",
      value: priors.decodeComputeEfficiency.value,
      source: priors.decodeComputeEfficiency.source,
    },
    {
      name: "cpu.prefillEfficiency",
      value: prefillEfficiency,
      source: `${prefill.prefillTokensPerSecond} t/s × ${(flopsPerToken / 1e9).toFixed(1)} GFLOP/token ÷ (${prefill.cores} cores × ${prefill.allCoreGHz} GHz × ${prefill.fp32FlopsPerCycle} FLOP/cycle) — ${prefill.source}`,
    },
    { name: "cpu.numaRemoteGain", value: priors.numaRemoteGain.value, source: priors.numaRemoteGain.source },
    {
      name: "cpu.pcieStreamFraction",
      value: catalog.efficiency.pcie.effectiveFraction.value,
      source: catalog.efficiency.pcie.effectiveFraction.source,
    },
    {
      name: "cpu.pageableStreamFraction",
      value: priors.pageableStreamFraction.value,
      source: priors.pageableStreamFraction.source,
    },
  ];
}

/**
 * The CPU factors the planner uses: the whole-corpus fit of npm run bench:published
 * (catalog/efficiency.yaml cpu.corpusFit) for every factor it fitted, the prior for the rest, then
 * any overrides (the bench on this machine, or a leave-one-source-out fold).
 */
export function cpuFactors(catalog: Catalog, overrides?: CpuFactorOverrides): CpuFactors {
  const fit = catalog.efficiency.cpu.corpusFit;
  const factors = priorCpuFactors(catalog).map((prior): NamedFactor => {
    const name = prior.name.slice("cpu.".length) as CpuFactorName;
    const override = overrides?.[name];
    if (override !== undefined) return { name: prior.name, value: override, source: overrides!.source };
    const fitted = fit?.factors[name];
    if (fitted !== undefined)
      return {
        name: prior.name,
        value: fitted,
        source: `whole-corpus fit, npm run bench:published -- --write (${fit!.fittedOn})`,
      };
    return prior;
  });
  const value = (name: CpuFactorName) => factors.find((factor) => factor.name === `cpu.${name}`)!.value;
  const bandwidth = catalog.efficiency.cpu.achievableFractionOfPeak;
  return {
    decodeEfficiency: value("decodeEfficiency"),
    decodeSecondsPerLayer: value("decodeSecondsPerLayer"),
    decodeComputeEfficiency: value("decodeComputeEfficiency"),
    prefillEfficiency: value("prefillEfficiency"),
    numaRemoteGain: value("numaRemoteGain"),
    pcieStreamFraction: value("pcieStreamFraction"),
    pageableStreamFraction: value("pageableStreamFraction"),
    factors: [...factors, { name: "cpu.achievableFractionOfPeak", value: bandwidth.value, source: bandwidth.source }],
  };
}

/** What speed depends on in a placement: where each tensor and each layer's KV live, and the ubatch. */
export interface SpeedPlacement {
  mode: PlacementMode;
  deviceOfTensor: ReadonlyMap<string, DeviceName>;
  layerDevice: readonly DeviceName[];
  ubatch: number;
}

export interface SpeedInputs {
  arch: Architecture;
  tensors: readonly TensorInfo[];
  host: HostSpec;
  placement: SpeedPlacement;
  kvCacheType: KvCacheType;
  kvCacheTypeV?: KvCacheType;
  /** -tb: prompt processing uses at most this many of the physical cores. */
  threadsBatch?: number;
  /** --op-offload (default on): big-batch matmuls of CPU weights run on the GPU, streamed over PCIe. */
  opOffload?: boolean;
  /**
   * Whether the CPU weights sit in pinned memory (CUDA_Host: --load-mode none/mlock/dio beside a
   * GPU), so op offload streams them at the pinned rate; memory-mapped weights are pageable.
   * Default: pinned.
   */
  hostWeightsPinned?: boolean;
  /** --numa distribute/numactl: every node's memory serves the threads; otherwise pages sit on one node. */
  numaSpread?: boolean;
  /** -t: the threads a decode step runs on (at most the physical cores). */
  threads?: number;
  decodeDepthTokens: number;
  ttftPromptTokens: number;
  contextPerSlot: number;
  decodeDepths?: number[];
  prefillPrompts?: number[];
  catalog: Catalog;
  cpuFactors?: CpuFactorOverrides;
  /**
   * Sequences decoding together in one step (-np slots all busy); 1 when unset. With N, a step reads
   * the weights once for all N (batchReadFraction), every slot's KV, and does N tokens' arithmetic, so
   * decodeTokensPerSecond is the aggregate over the slots (planner/fleet.ts).
   */
  concurrentSlots?: number;
  /** --rpc: the workers behind the RPC devices, the link to them, and which device computes the logits. */
  rpc?: { workers: readonly RpcWorkerSpec[]; link: LinkSpec; outputDevice: DeviceName; flashAttention: boolean };
}

export const PREFILL_REPORT_PROMPT_TOKENS = 512;

/**
 * CPU bandwidth a decode step reads at. Without --numa distribute/numactl, llama.cpp's loader
 * faults every page in from one thread, so one node's memory serves all threads (mechanics §1,
 * inference). With them, each further node adds only `numaRemoteGain` of its own bandwidth: the
 * pages are spread, but threads read other nodes' pages across the socket link.
 */
function cpuBandwidth(host: HostSpec, numaSpread: boolean, numaRemoteGain: number): number {
  const nodes = host.cpu.numaNodes;
  if (nodes <= 1) return host.memory.achievableBandwidth;
  const perNode = host.memory.achievableBandwidth / nodes;
  return numaSpread ? perNode * (1 + (nodes - 1) * numaRemoteGain) : perNode;
}

/**
 * Layers that run whole on the CPU, each paying the CPU's fixed per-layer cost (dispatch and thread
 * barriers, measured on CPU-only graphs). A GPU layer whose experts sit on the CPU is not charged:
 * its CPU split is a few ops, and no GPU machine has measured what it costs.
 */
function cpuLayers(placement: Pick<SpeedPlacement, "layerDevice">, device: DeviceName = "CPU"): number {
  return placement.layerDevice.filter((owner) => owner === device).length;
}

/** The CPU a device computes on: the head's for CPU, the worker's for an RPC device. */
interface CpuDevice {
  host: HostSpec;
  decodeThreads: number;
  batchThreads: number;
  numaSpread: boolean;
}

export function project(inputs: SpeedInputs): Projection {
  const { host, placement, catalog } = inputs;
  const cpu = cpuFactors(inputs.catalog, inputs.cpuFactors);
  const slots = Math.max(1, Math.floor(inputs.concurrentSlots ?? 1));
  const devices = projectedDevices(inputs);
  const cpuOf = (device: DeviceName): CpuDevice => cpuOfDevice(inputs, device);
  const flopsOnDevice = (device: DeviceName) => matmulFlopsOnDevice(inputs, device);
  // Measured over TCP; RDMA's transport still hands every command over and waits for its completion
  // (ggml-rpc transport.cpp), so a split stated as RDMA is charged the same until one is measured.
  const secondsPerCommand = inputs.rpc?.link ? catalog.efficiency.rpc.tcpSecondsPerCommand.value : 0;
  const decode: DecodeContext = {
    inputs,
    cpu,
    devices,
    slots,
    kvTypeV: inputs.kvCacheTypeV ?? inputs.kvCacheType,
    cpuOf,
    decodeFlops: new Map(devices.filter(isCpuDevice).map((device) => [device, flopsOnDevice(device)])),
    secondsPerCommand,
  };
  // secondsPerToken is per step; a step emits one token for each busy slot.
  const decodeAt = (depth: number) =>
    slots / decodeTraffic(decode, depth).reduce((sum, traffic) => sum + traffic.secondsPerToken, 0);
  const { seconds: prefillSeconds, basis: prefillBasis } = prefillModel({
    inputs,
    cpu,
    devices: devices.filter(isCpuDevice),
    cpuOf,
    flopsOnDevice,
    secondsPerCommand,
  });
  const depths = reportDepths(inputs);
  const prompts = reportPrompts(inputs);
  return {
    decodeDepthTokens: inputs.decodeDepthTokens,
    decodeTokensPerSecond: decodeAt(inputs.decodeDepthTokens),
    decodeTraffic: decodeTraffic(decode, inputs.decodeDepthTokens),
    decodeByDepth: depths.map((depthTokens) => ({ depthTokens, tokensPerSecond: decodeAt(depthTokens) })),
    prefillPromptTokens: PREFILL_REPORT_PROMPT_TOKENS,
    prefillTokensPerSecond: PREFILL_REPORT_PROMPT_TOKENS / prefillSeconds(PREFILL_REPORT_PROMPT_TOKENS),
    prefillByPrompt: prompts.map((promptTokens) => ({
      promptTokens,
      seconds: prefillSeconds(promptTokens),
      tokensPerSecond: promptTokens / prefillSeconds(promptTokens),
    })),
    ttftPromptTokens: inputs.ttftPromptTokens,
    ttftSeconds: prefillSeconds(inputs.ttftPromptTokens),
    prefillBasis,
    factors: projectionFactors(inputs, cpu, secondsPerCommand),
    errorBands: {
      decode: errorBand(catalog, projectionClass(placement.mode, host), "decode"),
      prefill: errorBand(catalog, projectionClass(placement.mode, host), "prefill"),
    },
  };
}

/** The head's CPU or an RPC worker's: a device whose compute is a CPU's. */
function isCpuDevice(device: DeviceName): boolean {
  return device === "CPU" || isRpcDevice(device);
}

/** A device's place in --rpc order, which is the order llama.cpp runs their layers in (-1 when not an RPC device). */
function rpcIndexOf(inputs: SpeedInputs, device: DeviceName): number {
  const rpcWorkers = inputs.rpc?.workers ?? [];
  return rpcWorkers.findIndex((worker) => isRpcDevice(device) && worker.endpoint === endpointOf(device));
}

/** The devices a token visits, in order: the head's CPU, the RPC devices in --rpc order, then the GPUs. */
function projectedDevices(inputs: SpeedInputs): DeviceName[] {
  const { host, placement } = inputs;
  return [
    "CPU",
    ...[...placement.layerDevice, ...placement.deviceOfTensor.values()]
      .filter(isRpcDevice)
      .filter((device, index, all) => all.indexOf(device) === index)
      .sort((a, b) => rpcIndexOf(inputs, a) - rpcIndexOf(inputs, b)),
    ...host.gpus.map((gpu) => `CUDA${gpu.index}` as DeviceName),
  ];
}

// ggml-rpc-server has no --numa: the thread that receives a tensor touches its pages, so one node serves them.
function cpuOfDevice(inputs: SpeedInputs, device: DeviceName): CpuDevice {
  const { host } = inputs;
  if (!isRpcDevice(device)) {
    return {
      host,
      decodeThreads: Math.min(inputs.threads ?? host.cpu.cores, host.cpu.cores),
      batchThreads: Math.min(inputs.threadsBatch ?? host.cpu.cores, host.cpu.cores),
      numaSpread: inputs.numaSpread ?? host.cpu.numaNodes <= 1,
    };
  }
  const worker = (inputs.rpc?.workers ?? [])[rpcIndexOf(inputs, device)]!;
  const threads = Math.min(worker.threads, worker.host.cpu.cores);
  return {
    host: worker.host,
    decodeThreads: threads,
    batchThreads: threads,
    numaSpread: worker.host.cpu.numaNodes <= 1,
  };
}

/** Matmul FLOPs per token of the tensors placed on `device`. */
function matmulFlopsOnDevice(inputs: SpeedInputs, device: DeviceName): number {
  const { tensors, placement, arch } = inputs;
  return tensors
    .filter((tensor) => placement.deviceOfTensor.get(tensor.name) === device)
    .reduce((sum, tensor) => sum + matmulFlopsPerToken(tensor, arch), 0);
}

/** What the decode model reads from project()'s setup. */
interface DecodeContext {
  inputs: SpeedInputs;
  cpu: CpuFactors;
  /** Every device, CPU first, then the RPC devices in --rpc order, then the GPUs. */
  devices: DeviceName[];
  /** Sequences decoding together in one step. */
  slots: number;
  kvTypeV: KvCacheType;
  cpuOf: (device: DeviceName) => CpuDevice;
  /** Matmul FLOPs per token on each CPU device (the head's CPU and the RPC devices). */
  decodeFlops: ReadonlyMap<DeviceName, number>;
  secondsPerCommand: number;
}

/** What one decode step at `depth` reads on each device that holds anything, and how long that takes. */
function decodeTraffic(context: DecodeContext, depth: number): DeviceDecodeTraffic[] {
  return context.devices
    .map((device) => deviceDecodeTraffic(context, device, depth))
    .filter((traffic) => traffic.bytesPerToken > 0);
}

function effectiveDecodeBandwidth({ inputs, cpu, cpuOf }: DecodeContext, device: DeviceName): number {
  const gpuDecode = inputs.catalog.efficiency.gpu.decodeBandwidthFraction;
  if (!isCpuDevice(device)) return inputs.host.gpus[Number(device.slice(4))]!.bandwidth * gpuDecode.value;
  const cpuDevice = cpuOf(device);
  return cpuBandwidth(cpuDevice.host, cpuDevice.numaSpread, cpu.numaRemoteGain) * cpu.decodeEfficiency;
}

function deviceDecodeTraffic(context: DecodeContext, device: DeviceName, depth: number): DeviceDecodeTraffic {
  const { inputs, slots, kvTypeV } = context;
  const { tensors, placement, arch } = inputs;
  const bytesPerToken = decodeBytesOnDevice(
    tensors,
    placement,
    arch,
    device,
    depth,
    inputs.kvCacheType,
    kvTypeV,
    slots,
  );
  const bandwidth = effectiveDecodeBandwidth(context, device);
  if (!isCpuDevice(device))
    return {
      device,
      bytesPerToken,
      effectiveBandwidth: bandwidth,
      secondsPerToken: bytesPerToken / bandwidth,
      computeBound: false,
    };
  return cpuDecodeTraffic(context, device, depth, bytesPerToken, bandwidth);
}

/**
 * A CPU step is bound by whichever is slower, streaming its bytes or its threads' arithmetic
 * (roofline); the per-layer dispatch cost comes on top. An RPC device is a worker's CPU, and
 * each token's visit to it also crosses the link.
 */
function cpuDecodeTraffic(
  context: DecodeContext,
  device: DeviceName,
  depth: number,
  bytesPerToken: number,
  bandwidth: number,
): DeviceDecodeTraffic {
  const { inputs, cpu, slots } = context;
  const compute = decodeCompute(context, device);
  const flops = context.decodeFlops.get(device)! * slots;
  const computeBound = flops / compute.flopsPerSecond > bytesPerToken / bandwidth;
  const networkSecondsPerToken = rpcDecodeVisitSeconds(context, device, depth);
  const seconds =
    Math.max(bytesPerToken / bandwidth, flops / compute.flopsPerSecond) +
    cpuLayers(inputs.placement, device) * cpu.decodeSecondsPerLayer +
    networkSecondsPerToken;
  const computeBasis = computeBound
    ? `compute-bound: ${(flops / 1e9).toFixed(1)} GFLOP/token on ${compute.threads} threads × ${compute.owner.cpu.allCoreGHz} GHz × ${compute.owner.cpu.fp32FlopsPerCycle} FLOP/cycle × ${cpu.decodeComputeEfficiency.toFixed(3)} = ${(compute.flopsPerSecond / 1e12).toFixed(2)} TFLOPS`
    : undefined;
  return {
    device,
    bytesPerToken,
    effectiveBandwidth: bandwidth,
    secondsPerToken: seconds,
    computeBound,
    ...(computeBasis ? { computeBasis } : {}),
    ...(isRpcDevice(device) ? { networkSecondsPerToken } : {}),
  };
}

/** A CPU device's decode arithmetic: its threads × clock × FP32 FLOP/cycle × the decode compute efficiency. */
function decodeCompute({ cpu, cpuOf }: DecodeContext, device: DeviceName) {
  const { host: owner, decodeThreads } = cpuOf(device);
  return {
    threads: decodeThreads,
    owner,
    flopsPerSecond:
      decodeThreads * owner.cpu.allCoreGHz * 1e9 * owner.cpu.fp32FlopsPerCycle * cpu.decodeComputeEfficiency,
  };
}

/** An RPC device's share of a decoded token on the link: one visit with its activations and commands; 0 elsewhere. */
function rpcDecodeVisitSeconds(
  { inputs, secondsPerCommand }: DecodeContext,
  device: DeviceName,
  depth: number,
): number {
  const { arch } = inputs;
  const link = inputs.rpc?.link;
  return isRpcDevice(device) && link
    ? visitSeconds(
        link,
        visitBytes(arch, 1, depth, inputs.rpc!.outputDevice === device, 1),
        visitCommands(arch, inputs.rpc!.outputDevice === device),
        secondsPerCommand,
      )
    : 0;
}

/** The prefill model of the placement: a CPU split over --rpc workers, the head's CPU alone, or with GPUs. */
function prefillModel(context: PrefillContext): PrefillModel {
  const link = context.inputs.rpc?.link;
  const { mode } = context.inputs.placement;
  return mode === "cpu-only" && link
    ? splitPrefill(context, link)
    : mode === "cpu-only"
      ? cpuPrefill(context)
      : hybridPrefill(context);
}

/** The CPU factors, then the link's and the GPUs' where the placement uses them. */
function projectionFactors(inputs: SpeedInputs, cpu: CpuFactors, secondsPerCommand: number): NamedFactor[] {
  const { host, catalog } = inputs;
  const gpuDecode = catalog.efficiency.gpu.decodeBandwidthFraction;
  const gpuPrefill = catalog.efficiency.gpu.prefillComputeFraction;
  const factors: NamedFactor[] = [...cpu.factors];
  if (inputs.rpc?.link)
    factors.push({
      name: "rpc.tcpSecondsPerCommand",
      value: secondsPerCommand,
      source: catalog.efficiency.rpc.tcpSecondsPerCommand.source,
    });
  if (host.gpus.length > 0) {
    factors.push({ name: "gpu.decodeBandwidthFraction", value: gpuDecode.value, source: gpuDecode.source });
    factors.push({ name: "gpu.prefillComputeFraction", value: gpuPrefill.value, source: gpuPrefill.source });
  }
  return factors;
}

/**
 * The context depths decode is reported at: the usual ones, the headline one and any asked for, within a slot's
 * context.
 */
function reportDepths(inputs: SpeedInputs): number[] {
  return [...new Set([0, 4096, 32768, inputs.decodeDepthTokens, inputs.contextPerSlot, ...(inputs.decodeDepths ?? [])])]
    .filter((depth) => depth <= inputs.contextPerSlot)
    .sort((a, b) => a - b);
}

/** The prompt lengths prefill is reported at: the report's, the TTFT one and any asked for. */
function reportPrompts(inputs: SpeedInputs): number[] {
  return [...new Set([PREFILL_REPORT_PROMPT_TOKENS, inputs.ttftPromptTokens, ...(inputs.prefillPrompts ?? [])])]
    .filter((n) => n > 0)
    .sort((a, b) => a - b);
}

/** What a given CPU bandwidth would decode at, for checking a claim like the seed's "~100 GB/s". */
export function cpuDecodeAtBandwidth(inputs: SpeedInputs, bandwidthBytesPerSecond: number): number {
  const host = { ...inputs.host, memory: { ...inputs.host.memory, achievableBandwidth: bandwidthBytesPerSecond } };
  return project({
    ...inputs,
    host,
    numaSpread: true,
    cpuFactors: { numaRemoteGain: 1, ...inputs.cpuFactors, source: inputs.cpuFactors?.source ?? "a stated bandwidth" },
  }).decodeTokensPerSecond;
}

/** What the prefill models read from project()'s setup. */
interface PrefillContext {
  inputs: SpeedInputs;
  cpu: CpuFactors;
  /** The head's CPU and the RPC devices, in --rpc order. */
  devices: DeviceName[];
  cpuOf: (device: DeviceName) => CpuDevice;
  flopsOnDevice: (device: DeviceName) => number;
  secondsPerCommand: number;
}

interface PrefillModel {
  /** Seconds to prefill a prompt of n tokens. */
  seconds: (promptTokens: number) => number;
  basis: string;
}

/** The head's CPU compute for a batch: -tb threads × clock × FP32 FLOP/cycle × the prefill efficiency. */
function headBatchCompute({ inputs, cpu }: PrefillContext): { cores: number; flopsPerSecond: number } {
  const { host } = inputs;
  const cores = Math.min(inputs.threadsBatch ?? host.cpu.cores, host.cpu.cores);
  return {
    cores,
    flopsPerSecond: cores * host.cpu.allCoreGHz * 1e9 * host.cpu.fp32FlopsPerCycle * cpu.prefillEfficiency,
  };
}

/**
 * A split: each host multiplies its own layers' weights and attention at its own compute, one after another, and every
 * ubatch visits each worker once.
 */
function splitPrefill(context: PrefillContext, link: LinkSpec): PrefillModel {
  const { inputs, cpu, cpuOf, flopsOnDevice, secondsPerCommand } = context;
  const { arch, placement } = inputs;
  const share = context.devices.map((device) => {
    const { host: owner, batchThreads } = cpuOf(device);
    const kvLayersHere = placement.layerDevice.filter(
      (owner, layer) => owner === device && keepsKv(arch, layer),
    ).length;
    return {
      device,
      flopsPerSecond: batchThreads * owner.cpu.allCoreGHz * 1e9 * owner.cpu.fp32FlopsPerCycle * cpu.prefillEfficiency,
      matmulPerToken: flopsOnDevice(device),
      attentionPerPosition: kvLayersHere * attentionFlopsPerTokenPerLayer(arch, 1),
    };
  });
  const seconds = (n: number): number => {
    let seconds = 0;
    for (let start = 0; start < n; start += placement.ubatch) {
      const count = Math.min(placement.ubatch, n - start);
      const positions = count * start + (count * (count - 1)) / 2;
      for (const part of share) {
        seconds += (count * part.matmulPerToken + part.attentionPerPosition * positions) / part.flopsPerSecond;
        // The server asks for the last prompt token's logits only.
        if (isRpcDevice(part.device))
          seconds += visitSeconds(
            link,
            visitBytes(arch, count, start + count, inputs.rpc!.outputDevice === part.device, 1),
            visitCommands(arch, inputs.rpc!.outputDevice === part.device),
            secondsPerCommand,
          );
      }
    }
    return seconds;
  };
  const basis =
    `CPU compute on each host in turn: ${share.map((part) => `${part.device} ${(part.matmulPerToken / 1e9).toFixed(1)} GFLOP/token at ${(part.flopsPerSecond / 1e12).toFixed(2)} TFLOPS`).join(", ")}` +
    `; every ${placement.ubatch}-token ubatch visits each worker once over ${link.basis}`;
  return { seconds, basis };
}

/** CPU only: the prompt's matmuls and attention at the head's batch compute. */
function cpuPrefill(context: PrefillContext): PrefillModel {
  const { inputs, cpu } = context;
  const { arch, tensors, host } = inputs;
  const perTokenMatmul = matmulFlops(tensors, arch);
  const { cores: coresBatch, flopsPerSecond: cpuCompute } = headBatchCompute(context);
  const seconds = (n: number): number => prefillFlops(perTokenMatmul, arch, 0, n) / cpuCompute;
  const basis = `CPU compute: ${coresBatch} cores × ${host.cpu.allCoreGHz} GHz × ${host.cpu.fp32FlopsPerCycle} FLOP/cycle × ${cpu.prefillEfficiency.toFixed(3)} = ${(cpuCompute / 1e12).toFixed(2)} TFLOPS effective; ${(perTokenMatmul / 1e9).toFixed(1)} GFLOP/token of weights plus ${((kvLayerCount(arch) * attentionFlopsPerTokenPerLayer(arch, 1)) / 1e6).toFixed(2)} MFLOP per token of context`;
  return { seconds, basis };
}

/**
 * With GPUs: GPU compute for the matmuls; the CPU weights big batches multiply either cross PCIe once
 * per ubatch to the first GPU (op offload; pinned or pageable copies) or run on the CPU cores.
 */
function hybridPrefill(context: PrefillContext): PrefillModel {
  const { inputs, cpu } = context;
  const { arch, tensors, host, placement, catalog } = inputs;
  const gpuPrefill = catalog.efficiency.gpu.prefillComputeFraction;
  const opOffload = inputs.opOffload ?? true;
  const perTokenMatmul = matmulFlops(tensors, arch);
  const { flopsPerSecond: cpuCompute } = headBatchCompute(context);
  const gpu0 = host.gpus[0]!;
  const gpuCompute = gpu0.int8OpsPerSecond * gpuPrefill.value;
  // CPU weights that big batches multiply: with op offload they cross PCIe once per ubatch (to
  // the first GPU) and run there; without it they run on the CPU cores.
  const cpuMatmul = tensors.filter(
    (tensor) => placement.deviceOfTensor.get(tensor.name) === "CPU" && matmulFlopsPerToken(tensor, arch) > 0,
  );
  const offloads = opOffload && placement.ubatch >= 32;
  const streamedBytes = offloads ? cpuMatmul.reduce((sum, tensor) => sum + tensor.bytes, 0) : 0;
  const cpuFlopsPerToken = offloads ? 0 : matmulFlops(cpuMatmul, arch);
  const pinned = inputs.hostWeightsPinned ?? true;
  const pcieBandwidth = gpu0.pcieBandwidth * cpu.pcieStreamFraction * (pinned ? 1 : cpu.pageableStreamFraction);
  const seconds = (n: number): number => {
    let seconds = 0;
    for (let start = 0; start < n; start += placement.ubatch) {
      const count = Math.min(placement.ubatch, n - start);
      seconds +=
        prefillFlops(perTokenMatmul - cpuFlopsPerToken, arch, start, count) / gpuCompute +
        streamedBytes / pcieBandwidth +
        (count * cpuFlopsPerToken) / cpuCompute;
    }
    return seconds;
  };
  const basis =
    `GPU compute ${(gpuCompute / 1e12).toFixed(0)} TOPS effective (${gpu0.name} ${(gpu0.int8OpsPerSecond / 1e12).toFixed(0)} INT8 TOPS × ${gpuPrefill.value})` +
    (streamedBytes > 0
      ? `, plus ${(streamedBytes / 1e9).toFixed(1)} GB of CPU experts streamed over ${gpu0.pcie} at ${(pcieBandwidth / 1e9).toFixed(1)} GB/s${pinned ? "" : " (pageable: memory-mapped weights)"} once per ${placement.ubatch}-token ubatch`
      : "") +
    (cpuFlopsPerToken > 0
      ? `, plus ${(cpuFlopsPerToken / 1e9).toFixed(1)} GFLOP/token of CPU weights on the CPU at ${(cpuCompute / 1e12).toFixed(2)} TFLOPS (no op offload)`
      : "");
  return { seconds, basis };
}
