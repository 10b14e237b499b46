/**
 * "Here is my llama-server command line — will it fit on this box, and how fast?": parses the
 * user's flags through the one flag table and runs estimate() on them, then renders the answer as
 * text or JSON. Pure: the model's tensors and the host come in resolved (a stack, or a local GGUF
 * and this machine, read by cli/).
 */
import type { Architecture, Catalog } from "./catalog";
import { estimate, type Estimate, type ResolvedSettings } from "./estimate";
import { parseFlags, splitCommandLine, type ParsedFlags } from "./flags";
import type { HostSpec } from "./host";
import { renderMemoryTable } from "./report";
import type { TensorInfo } from "./tensors";
import { formatBytes, formatDuration, formatGiB, formatTokens } from "./units";

export interface CommandLineInputs {
  /** What the model is: a stack's model and tier, or a file path. */
  modelLabel: string;
  /** Where the host came from: "stack NAME" or "this machine". */
  hostSource: string;
  tensors: readonly TensorInfo[];
  arch: Architecture;
  host: HostSpec;
  /** The flags as the user typed them (one string, shell-quoted). */
  argsText: string;
  catalog: Catalog;
}

export interface CommandLineEstimate {
  inputs: Omit<CommandLineInputs, "tensors" | "catalog">;
  argv: string[];
  parsed: ParsedFlags;
  modelBytes: number;
  estimate: Estimate;
}

/** Decode depths and prompt lengths every answer quotes, besides the context's own size. */
const DECODE_DEPTHS = [0, 4096, 32768];
const PREFILL_PROMPTS = [512, 4096, 32768];

export function estimateCommandLine(inputs: CommandLineInputs): CommandLineEstimate {
  const words = splitCommandLine(inputs.argsText);
  // A pasted command line may start with the program itself.
  const argv = words.length > 0 && /(^|\/)llama-server$/.test(words[0]!) ? words.slice(1) : words;
  const parsed = parseFlags(argv);
  const result = estimate(inputs.tensors, inputs.arch, inputs.host, parsed.sizing, {
    catalog: inputs.catalog,
    decodeDepthTokens: 0,
    ttftPromptTokens: 4096,
    decodeDepths: DECODE_DEPTHS,
    prefillPrompts: PREFILL_PROMPTS,
  });
  const { tensors, catalog, ...rest } = inputs;
  void catalog;
  return {
    inputs: rest,
    argv,
    parsed,
    modelBytes: tensors.reduce((sum, tensor) => sum + tensor.bytes, 0),
    estimate: result,
  };
}

function describeSettings(settings: ResolvedSettings): string {
  const slots = settings.kvUnified
    ? `${settings.slots} slot(s) sharing one unified KV cache`
    : `${settings.slots} slot(s) × ${settings.contextPerSlot} tokens`;
  return [
    `context ${settings.contextTotal} (${slots}, ${settings.kvCells} KV cells)`,
    `batch ${settings.batch}/ubatch ${settings.ubatch}`,
    `threads ${settings.threads}/${settings.threadsBatch}`,
    `KV ${settings.cacheTypeK}/${settings.cacheTypeV}`,
    `flash attention ${settings.flashAttn}`,
    `repack ${settings.repack ? "on" : "off"}`,
    `load mode ${settings.loadMode}`,
    `cache-ram ${settings.cacheRamMiB} MiB`,
    `op offload ${settings.opOffload ? "on" : "off"}`,
    `numa ${settings.numa}`,
    ...(settings.gpuLayers > 0
      ? [`GPU layers ${settings.gpuLayers}, split ${settings.splitMode} ${settings.tensorSplit.join(",")}`]
      : []),
  ].join(", ");
}

export function renderCommandLineEstimate(result: CommandLineEstimate): string {
  const { inputs, estimate: est } = result;
  const out: string[] = [];
  out.push(
    `Model: ${inputs.modelLabel} (${formatBytes(result.modelBytes)}, ${inputs.arch.llamaCppArch}, ${inputs.arch.layers} layers)`,
  );
  out.push(
    `Host: ${inputs.host.label} (${inputs.hostSource}): ${inputs.host.cpu.cores} cores, ${formatGiB(inputs.host.memory.totalBytes)} RAM, ${(inputs.host.memory.achievableBandwidth / 1e9).toFixed(1)} GB/s${inputs.host.gpus.length ? `, ${inputs.host.gpus.length}× ${inputs.host.gpus[0]!.name}` : ""}`,
  );
  out.push(`Command line: llama-server ${inputs.argsText}`.trimEnd());
  out.push(`As llama-server runs it: ${describeSettings(est.settings)}`);
  out.push(
    `Ignored for sizing: ${result.parsed.ignoredForSizing.length > 0 ? result.parsed.ignoredForSizing.join(", ") : "none"}`,
  );
  if (result.parsed.notModelled.length > 0)
    out.push(
      `Warning: ${result.parsed.notModelled.join(", ")} change memory or speed in llama-server, but this estimate does not model them: the figures below are without their effect.`,
    );
  const short = est.devices.filter((device) => !device.fits);
  out.push(
    est.fits
      ? `Verdict: FITS (${est.placement.mode})`
      : `Verdict: DOES NOT FIT — ${short.map((device) => `${device.device} needs ${formatBytes(device.plannedBytes)}, has ${formatBytes(device.capacityBytes)}`).join("; ")}`,
  );
  out.push("");
  out.push("Memory (per device, by kind):");
  out.push(renderMemoryTable(est.devices));
  for (const note of est.notes) out.push(`  - ${note}`);
  out.push("");
  const projection = est.projection;
  out.push(`Projection (${est.placement.mode}):`);
  out.push(
    `  decode   by depth: ${projection.decodeByDepth.map((point) => `${formatTokens(point.depthTokens)} → ${point.tokensPerSecond.toFixed(1)}`).join(", ")} tok/s — ${projection.decodeTraffic.map((t) => `${t.device} reads ${(t.bytesPerToken / 1e9).toFixed(3)} GB/token at ${(t.effectiveBandwidth / 1e9).toFixed(0)} GB/s effective`).join(" + ")}`,
  );
  out.push(
    `  prefill  by prompt: ${projection.prefillByPrompt.map((point) => `${formatTokens(point.promptTokens)} → ${point.tokensPerSecond.toFixed(1)} tok/s (${formatDuration(point.seconds)})`).join(", ")} — ${projection.prefillBasis}`,
  );
  out.push(
    `  factors: ${projection.factors.map((factor) => `${factor.name}=${factor.value > 0 && factor.value < 0.01 ? factor.value.toExponential(2) : factor.value.toFixed(3)}`).join(", ")} (sources: catalog/efficiency.yaml)`,
  );
  return out.join("\n");
}

export interface CommandLineJson {
  model: { label: string; bytes: number; architecture: string; layers: number };
  host: { label: string; source: string; ramBytes: number; memoryBandwidthBytesPerSecond: number; gpus: string[] };
  args: string[];
  ignoredForSizing: string[];
  /** Ignored flags that do change memory or speed in llama-server: the estimate is without their effect. */
  notModelled: string[];
  settings: ResolvedSettings;
  mode: string;
  fits: boolean;
  devices: {
    name: string;
    label: string;
    capacityBytes: number;
    plannedBytes: number;
    fits: boolean;
    bytesByKind: {
      weights: number;
      repackedWeights: number;
      kv: number;
      compute: number;
      promptCache: number;
      headroom: number;
    };
    mappedFileSpanBytes: number;
  }[];
  projection: {
    decodeByDepth: { depthTokens: number; tokensPerSecond: number }[];
    prefillByPrompt: { promptTokens: number; seconds: number; tokensPerSecond: number }[];
    factors: { name: string; value: number }[];
  };
  notes: string[];
}

export function commandLineToJson(result: CommandLineEstimate): CommandLineJson {
  const { inputs, estimate: est } = result;
  return {
    model: {
      label: inputs.modelLabel,
      bytes: result.modelBytes,
      architecture: inputs.arch.llamaCppArch,
      layers: inputs.arch.layers,
    },
    host: {
      label: inputs.host.label,
      source: inputs.hostSource,
      ramBytes: inputs.host.memory.totalBytes,
      memoryBandwidthBytesPerSecond: inputs.host.memory.achievableBandwidth,
      gpus: inputs.host.gpus.map((gpu) => gpu.name),
    },
    args: result.argv,
    ignoredForSizing: result.parsed.ignoredForSizing,
    notModelled: result.parsed.notModelled,
    settings: est.settings,
    mode: est.placement.mode,
    fits: est.fits,
    devices: est.devices.map((device) => ({
      name: device.device,
      label: device.label,
      capacityBytes: device.capacityBytes,
      plannedBytes: device.plannedBytes,
      fits: device.fits,
      bytesByKind: {
        weights: device.modelBytes,
        repackedWeights: device.repackBytes,
        kv: device.kvBytes,
        compute: device.computeBytes,
        promptCache: device.promptCacheBytes,
        headroom: device.headroomBytes,
      },
      mappedFileSpanBytes: device.mappedBytes,
    })),
    projection: {
      decodeByDepth: est.projection.decodeByDepth,
      prefillByPrompt: est.projection.prefillByPrompt,
      factors: est.projection.factors.map(({ name, value }) => ({ name, value })),
    },
    notes: est.notes,
  };
}
