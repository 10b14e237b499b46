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
import { kvBytesPerTokenPerLayer, type DeviceName } from "./memory";
import type { PlacementMode } from "./estimate";
import { attentionFlopsPerTokenPerLayer, decodeReadFraction, matmulFlopsPerToken, tensorsFromArchitecture, type TensorInfo } from "./tensors";

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
): number {
  let bytes = 0;
  for (const tensor of tensors) {
    if (placement.deviceOfTensor.get(tensor.name) === device) bytes += tensor.bytes * decodeReadFraction(tensor, arch);
  }
  const layersHere = placement.layerDevice.filter((owner) => owner === device).length;
  return bytes + layersHere * depthTokens * kvBytesPerTokenPerLayer(arch, kvType, kvTypeV);
}

function matmulFlops(tensors: readonly TensorInfo[], arch: Architecture): number {
  return tensors.reduce((sum, tensor) => sum + matmulFlopsPerToken(tensor, arch), 0);
}

/** FLOPs to prefill tokens [start, start + count): weights once per token, attention per position. */
function prefillFlops(perTokenMatmul: number, arch: Architecture, start: number, count: number): number {
  const positions = count * start + (count * (count - 1)) / 2;
  return count * perTokenMatmul + arch.layers * attentionFlopsPerTokenPerLayer(arch, 1) * positions;
}

export interface CpuFactors {
  decodeEfficiency: number;
  /** Fixed CPU time per layer per decoded token: kernel dispatch and thread barriers. */
  decodeSecondsPerLayer: number;
  prefillEfficiency: number;
  factors: NamedFactor[];
}

/** Factors measured on the very host being estimated (the bench on this machine), replacing the published ones. */
export interface CpuFactorOverrides {
  decodeEfficiency?: number;
  decodeSecondsPerLayer?: number;
  prefillEfficiency?: number;
  source: string;
}

/**
 * Turns the two published Kimi K2.6 measurements into efficiency factors, using this planner's own
 * bytes and FLOPs per token for the measured tier, so a factor and the model that applies it agree.
 * The per-layer decode cost is subtracted from the measured token time before the bandwidth
 * efficiency is derived, so the calibration case is reproduced exactly with both terms.
 */
export function cpuFactors(catalog: Catalog): CpuFactors {
  const { decodeCalibration: decode, prefillCalibration: prefill, decodeSecondsPerLayer: perLayer } = catalog.efficiency.cpu;
  const factorFor = (modelId: string, tierName: string): { model: ModelEntry; tensors: TensorInfo[] } => {
    const model = catalog.models.find((entry) => entry.id === modelId);
    const tier = model?.tiers.find((entry) => entry.name === tierName);
    if (!model || !tier) throw new Error(`catalog/efficiency.yaml calibrates on ${modelId} ${tierName}, which catalog/models.yaml lacks`);
    return { model, tensors: tensorsFromArchitecture(model.architecture, tier) };
  };
  const d = factorFor(decode.model, decode.tier);
  const cpuOnly = { deviceOfTensor: new Map(d.tensors.map((t) => [t.name, "CPU" as DeviceName])), layerDevice: d.tensors.filter((t) => t.name.endsWith("attn_norm.weight")).map(() => "CPU" as DeviceName) };
  const bytesPerToken = decodeBytesOnDevice(d.tensors, cpuOnly, d.model.architecture, "CPU", decode.depthTokens, "f16");
  const streamingSeconds = 1 / decode.decodeTokensPerSecond - d.model.architecture.layers * perLayer.value;
  const decodeEfficiency = bytesPerToken / streamingSeconds / (decode.measuredBandwidthGBps * 1e9);

  const p = factorFor(prefill.model, prefill.tier);
  const flopsPerToken = prefillFlops(matmulFlops(p.tensors, p.model.architecture), p.model.architecture, 0, prefill.promptTokens) / prefill.promptTokens;
  const peak = prefill.cores * prefill.allCoreGHz * 1e9 * prefill.fp32FlopsPerCycle;
  const prefillEfficiency = (prefill.prefillTokensPerSecond * flopsPerToken) / peak;
  return {
    decodeEfficiency,
    decodeSecondsPerLayer: perLayer.value,
    prefillEfficiency,
    factors: [
      {
        name: "cpu.decodeEfficiency",
        value: decodeEfficiency,
        source: `${(bytesPerToken / 1e9).toFixed(2)} GB/token (this planner, ${decode.model} ${decode.tier}) ÷ (1/${decode.decodeTokensPerSecond} t/s − ${d.model.architecture.layers} layers × ${(perLayer.value * 1e6).toFixed(0)} µs) ÷ ${decode.measuredBandwidthGBps} GB/s — ${decode.source}`,
      },
      { name: "cpu.decodeSecondsPerLayer", value: perLayer.value, source: perLayer.source },
      {
        name: "cpu.prefillEfficiency",
        value: prefillEfficiency,
        source: `${prefill.prefillTokensPerSecond} t/s × ${(flopsPerToken / 1e9).toFixed(1)} GFLOP/token ÷ (${prefill.cores} cores × ${prefill.allCoreGHz} GHz × ${prefill.fp32FlopsPerCycle} FLOP/cycle) — ${prefill.source}`,
      },
      { name: "cpu.achievableFractionOfPeak", value: catalog.efficiency.cpu.achievableFractionOfPeak.value, source: catalog.efficiency.cpu.achievableFractionOfPeak.source },
    ],
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
  /** --numa distribute/numactl: every node's memory serves the threads; otherwise pages sit on one node. */
  numaSpread?: boolean;
  decodeDepthTokens: number;
  ttftPromptTokens: number;
  contextPerSlot: number;
  decodeDepths?: number[];
  prefillPrompts?: number[];
  catalog: Catalog;
  cpuFactors?: CpuFactorOverrides;
}

export const PREFILL_REPORT_PROMPT_TOKENS = 512;

function resolvedCpuFactors(inputs: Pick<SpeedInputs, "catalog" | "cpuFactors">): CpuFactors {
  const published = cpuFactors(inputs.catalog);
  const local = inputs.cpuFactors;
  if (!local) return published;
  const decodeEfficiency = local.decodeEfficiency ?? published.decodeEfficiency;
  const decodeSecondsPerLayer = local.decodeSecondsPerLayer ?? published.decodeSecondsPerLayer;
  const prefillEfficiency = local.prefillEfficiency ?? published.prefillEfficiency;
  return {
    decodeEfficiency,
    decodeSecondsPerLayer,
    prefillEfficiency,
    factors: [
      { name: "cpu.decodeEfficiency", value: decodeEfficiency, source: local.decodeEfficiency === undefined ? "published" : local.source },
      { name: "cpu.decodeSecondsPerLayer", value: decodeSecondsPerLayer, source: local.decodeSecondsPerLayer === undefined ? "published" : local.source },
      { name: "cpu.prefillEfficiency", value: prefillEfficiency, source: local.prefillEfficiency === undefined ? "published" : local.source },
    ],
  };
}

/**
 * Node-local bandwidth: without --numa distribute/numactl, llama.cpp's loader faults every page in
 * from one thread, so one node's memory serves all threads (mechanics §1, inference).
 */
function cpuBandwidth(host: HostSpec, numaSpread: boolean): number {
  return numaSpread || host.cpu.numaNodes <= 1 ? host.memory.achievableBandwidth : host.memory.achievableBandwidth / host.cpu.numaNodes;
}

/**
 * Layers that run whole on the CPU, each paying the CPU's fixed per-layer cost (dispatch and thread
 * barriers, measured on CPU-only graphs). A GPU layer whose experts sit on the CPU is not charged:
 * its CPU split is a few ops, and no GPU machine has measured what it costs.
 */
function cpuLayers(placement: Pick<SpeedPlacement, "layerDevice">): number {
  return placement.layerDevice.filter((device) => device === "CPU").length;
}

export function project(inputs: SpeedInputs): Projection {
  const { arch, tensors, host, placement, catalog } = inputs;
  const cpu = resolvedCpuFactors(inputs);
  const gpuDecode = catalog.efficiency.gpu.decodeBandwidthFraction;
  const gpuPrefill = catalog.efficiency.gpu.prefillComputeFraction;
  const pcie = catalog.efficiency.pcie.effectiveFraction;
  const kvTypeV = inputs.kvCacheTypeV ?? inputs.kvCacheType;
  const opOffload = inputs.opOffload ?? true;

  const devices: DeviceName[] = ["CPU", ...host.gpus.map((gpu) => `CUDA${gpu.index}` as DeviceName)];
  const effectiveBandwidth = (device: DeviceName): number =>
    device === "CPU" ? cpuBandwidth(host, inputs.numaSpread ?? host.cpu.numaNodes <= 1) * cpu.decodeEfficiency : host.gpus[Number(device.slice(4))]!.bandwidth * gpuDecode.value;
  const cpuLayerSeconds = cpuLayers(placement) * cpu.decodeSecondsPerLayer;
  const trafficAt = (depth: number): DeviceDecodeTraffic[] =>
    devices
      .map((device) => {
        const bytesPerToken = decodeBytesOnDevice(tensors, placement, arch, device, depth, inputs.kvCacheType, kvTypeV);
        const bandwidth = effectiveBandwidth(device);
        return { device, bytesPerToken, effectiveBandwidth: bandwidth, secondsPerToken: bytesPerToken / bandwidth + (device === "CPU" ? cpuLayerSeconds : 0) };
      })
      .filter((traffic) => traffic.bytesPerToken > 0);
  const decodeAt = (depth: number) => 1 / trafficAt(depth).reduce((sum, traffic) => sum + traffic.secondsPerToken, 0);

  const perTokenMatmul = matmulFlops(tensors, arch);
  const coresBatch = Math.min(inputs.threadsBatch ?? host.cpu.cores, host.cpu.cores);
  const cpuCompute = coresBatch * host.cpu.allCoreGHz * 1e9 * host.cpu.fp32FlopsPerCycle * cpu.prefillEfficiency;
  let prefillSeconds: (promptTokens: number) => number;
  let prefillBasis: string;
  if (placement.mode === "cpu-only") {
    prefillSeconds = (n) => prefillFlops(perTokenMatmul, arch, 0, n) / cpuCompute;
    prefillBasis = `CPU compute: ${coresBatch} cores × ${host.cpu.allCoreGHz} GHz × ${host.cpu.fp32FlopsPerCycle} FLOP/cycle × ${cpu.prefillEfficiency.toFixed(3)} = ${(cpuCompute / 1e12).toFixed(2)} TFLOPS effective; ${(perTokenMatmul / 1e9).toFixed(1)} GFLOP/token of weights plus ${(arch.layers * attentionFlopsPerTokenPerLayer(arch, 1) / 1e6).toFixed(2)} MFLOP per token of context`;
  } else {
    const gpu0 = host.gpus[0]!;
    const gpuCompute = gpu0.int8OpsPerSecond * gpuPrefill.value;
    // CPU weights that big batches multiply: with op offload they cross PCIe once per ubatch (to
    // the first GPU) and run there; without it they run on the CPU cores.
    const cpuMatmul = tensors.filter((tensor) => placement.deviceOfTensor.get(tensor.name) === "CPU" && matmulFlopsPerToken(tensor, arch) > 0);
    const offloads = opOffload && placement.ubatch >= 32;
    const streamedBytes = offloads ? cpuMatmul.reduce((sum, tensor) => sum + tensor.bytes, 0) : 0;
    const cpuFlopsPerToken = offloads ? 0 : matmulFlops(cpuMatmul, arch);
    const pcieBandwidth = gpu0.pcieBandwidth * pcie.value;
    prefillSeconds = (n) => {
      let seconds = 0;
      for (let start = 0; start < n; start += placement.ubatch) {
        const count = Math.min(placement.ubatch, n - start);
        seconds += (prefillFlops(perTokenMatmul - cpuFlopsPerToken, arch, start, count)) / gpuCompute + streamedBytes / pcieBandwidth + (count * cpuFlopsPerToken) / cpuCompute;
      }
      return seconds;
    };
    prefillBasis =
      `GPU compute ${(gpuCompute / 1e12).toFixed(0)} TOPS effective (${gpu0.name} ${(gpu0.int8OpsPerSecond / 1e12).toFixed(0)} INT8 TOPS × ${gpuPrefill.value})` +
      (streamedBytes > 0 ? `, plus ${(streamedBytes / 1e9).toFixed(1)} GB of CPU experts streamed over ${gpu0.pcie} at ${(pcieBandwidth / 1e9).toFixed(1)} GB/s once per ${placement.ubatch}-token ubatch` : "") +
      (cpuFlopsPerToken > 0 ? `, plus ${(cpuFlopsPerToken / 1e9).toFixed(1)} GFLOP/token of CPU weights on the CPU at ${(cpuCompute / 1e12).toFixed(2)} TFLOPS (no op offload)` : "");
  }

  const factors: NamedFactor[] = [...cpu.factors];
  if (host.gpus.length > 0) {
    factors.push({ name: "gpu.decodeBandwidthFraction", value: gpuDecode.value, source: gpuDecode.source });
    factors.push({ name: "gpu.prefillComputeFraction", value: gpuPrefill.value, source: gpuPrefill.source });
    factors.push({ name: "pcie.effectiveFraction", value: pcie.value, source: pcie.source });
  }

  const depths = [...new Set([0, 4096, 32768, inputs.decodeDepthTokens, inputs.contextPerSlot, ...(inputs.decodeDepths ?? [])])].filter((depth) => depth <= inputs.contextPerSlot).sort((a, b) => a - b);
  const prompts = [...new Set([PREFILL_REPORT_PROMPT_TOKENS, inputs.ttftPromptTokens, ...(inputs.prefillPrompts ?? [])])].filter((n) => n > 0).sort((a, b) => a - b);
  return {
    decodeDepthTokens: inputs.decodeDepthTokens,
    decodeTokensPerSecond: decodeAt(inputs.decodeDepthTokens),
    decodeTraffic: trafficAt(inputs.decodeDepthTokens),
    decodeByDepth: depths.map((depthTokens) => ({ depthTokens, tokensPerSecond: decodeAt(depthTokens) })),
    prefillPromptTokens: PREFILL_REPORT_PROMPT_TOKENS,
    prefillTokensPerSecond: PREFILL_REPORT_PROMPT_TOKENS / prefillSeconds(PREFILL_REPORT_PROMPT_TOKENS),
    prefillByPrompt: prompts.map((promptTokens) => ({ promptTokens, seconds: prefillSeconds(promptTokens), tokensPerSecond: promptTokens / prefillSeconds(promptTokens) })),
    ttftPromptTokens: inputs.ttftPromptTokens,
    ttftSeconds: prefillSeconds(inputs.ttftPromptTokens),
    prefillBasis,
    factors,
  };
}

/** What a given CPU bandwidth would decode at, for checking a claim like the seed's "~100 GB/s". */
export function cpuDecodeAtBandwidth(inputs: SpeedInputs, bandwidthBytesPerSecond: number): number {
  const { arch, tensors, placement } = inputs;
  const cpu = resolvedCpuFactors(inputs);
  const bytes = decodeBytesOnDevice(tensors, placement, arch, "CPU", inputs.decodeDepthTokens, inputs.kvCacheType, inputs.kvCacheTypeV);
  return 1 / (bytes / (bandwidthBytesPerSecond * cpu.decodeEfficiency) + cpuLayers(placement) * cpu.decodeSecondsPerLayer);
}
