/**
 * Where each host input of a projection comes from: what the stack states, what was measured, and
 * what is an assumption (a catalog datasheet figure, a fitted efficiency, or the kit's default). The
 * report lists them so a reader knows which numbers to check — the achievable memory bandwidth above
 * all, which decode follows almost proportionally; HostPrep measures it on the host at deploy time
 * and the deployment re-projects with it (planner/reproject.ts). Pure: no I/O.
 */
import type { Plan } from "./plan";

export type InputSource = "measured" | "stated" | "catalog" | "default";

export interface HostInput {
  /** The stack key a user sets to replace an assumption (or the one that set it). */
  key: string;
  what: string;
  value: string;
  source: InputSource;
  /** catalog and default figures are assumptions; stated and measured ones are not. */
  assumption: boolean;
  basis: string;
}

const entry = (key: string, what: string, value: string, source: InputSource, basis: string): HostInput => ({
  key,
  what,
  value,
  source,
  assumption: source === "catalog" || source === "default",
  basis,
});

type HostConfig = Plan["config"]["host"];

export function hostInputs(plan: Plan): HostInput[] {
  const { host } = plan;
  const config = plan.config.host;
  const inputs: HostInput[] = config.kind === "cloud" ? cloudInputs(plan, config) : bareMetalInputs(plan, config);
  if (host.gpus.length > 0) inputs.push(...gpuInputs(plan));
  inputs.push(
    entry(
      "catalog/efficiency.yaml",
      "efficiency factors",
      host.gpus.length > 0 ? "CPU and GPU" : "CPU",
      "catalog",
      "fitted to published and bench runs, not to this host",
    ),
  );
  return inputs;
}

/** The achievable memory bandwidth: measured when the stack gives a measurement, else derived from the catalog. */
function bandwidthInput(plan: Plan, measured: boolean, catalogBasis: string): HostInput {
  const { host } = plan;
  const bandwidth = `${(host.memory.achievableBandwidth / 1e9).toFixed(1)} GB/s`;
  return measured
    ? entry(
        "host.memory.measuredBandwidthGBps",
        "achievable memory bandwidth",
        bandwidth,
        "measured",
        host.memory.basis,
      )
    : entry("host.memory.measuredBandwidthGBps", "achievable memory bandwidth", bandwidth, "catalog", catalogBasis);
}

function cloudInputs(plan: Plan, config: Extract<HostConfig, { kind: "cloud" }>): HostInput[] {
  const { host } = plan;
  const instance = `catalog instance ${config.instanceType}`;
  return [
    bandwidthInput(
      plan,
      config.memory?.measuredBandwidthGBps !== undefined,
      `${instance}'s memory: datasheet peak × the achievable fraction of catalog/efficiency.yaml`,
    ),
    entry(
      "host.instanceType",
      "CPU cores, clock, FLOP/cycle, ISA",
      `${host.cpu.cores} cores at ${host.cpu.allCoreGHz} GHz`,
      "catalog",
      instance,
    ),
    entry("host.instanceType", "RAM", `${(host.memory.totalBytes / 2 ** 30).toFixed(0)} GiB`, "catalog", instance),
  ];
}

function bareMetalInputs(plan: Plan, config: Extract<HostConfig, { kind: "bare-metal" }>): HostInput[] {
  const { host } = plan;
  const platform = config.cpu.platform ? `catalog platform ${config.cpu.platform}` : undefined;
  // Each CPU figure is the stack's when it states it, else its platform's, else the kit's fallback.
  const cpuField = (
    key: "cores" | "allCoreGHz" | "fp32FlopsPerCycle" | "numaNodes",
    what: string,
    value: string,
    fallback: [InputSource, string],
  ) =>
    config.cpu[key] !== undefined
      ? entry(`host.cpu.${key}`, what, value, "stated", "the stack")
      : platform
        ? entry(`host.cpu.${key}`, what, value, "catalog", platform)
        : entry(`host.cpu.${key}`, what, value, fallback[0], fallback[1]);
  const memoryStated =
    config.memory.kind !== undefined &&
    (config.memory.channels !== undefined || config.memory.channelsPerSocket !== undefined);
  return [
    bandwidthInput(
      plan,
      config.memory.measuredBandwidthGBps !== undefined,
      `${memoryStated ? "the stack's channels and memory kind" : `${platform ?? "the catalog"}'s memory`}: datasheet peak × the achievable fraction of catalog/efficiency.yaml${host.cpu.ccds !== undefined && host.cpu.fabricClockMHz !== undefined ? ", or the CPU fabric's limit where lower" : ""}`,
    ),
    entry("host.memory.total", "RAM", `${(host.memory.totalBytes / 2 ** 30).toFixed(0)} GiB`, "stated", "the stack"),
    cpuField("cores", "CPU cores", String(host.cpu.cores), ["stated", "the stack"]),
    cpuField("allCoreGHz", "all-core clock", `${host.cpu.allCoreGHz} GHz`, ["stated", "the stack"]),
    cpuField("fp32FlopsPerCycle", "FP32 FLOP per cycle per core", String(host.cpu.fp32FlopsPerCycle), [
      "default",
      "the kit's default (32)",
    ]),
    cpuField("numaNodes", "NUMA nodes", String(host.cpu.numaNodes), ["default", "one per socket"]),
  ];
}

function gpuInputs(plan: Plan): HostInput[] {
  const { host } = plan;
  const config = plan.config.host;
  const pcieStated = config.kind === "bare-metal" && config.pcie !== undefined;
  return [
    entry(
      "catalog/gpus",
      "GPU memory, bandwidth and INT8 throughput",
      [...new Set(host.gpus.map((gpu) => gpu.name))]
        .map((name) => `${host.gpus.filter((gpu) => gpu.name === name).length}× ${name}`)
        .join(", "),
      "catalog",
      "catalog datasheet figures",
    ),
    entry(
      "host.pcie",
      "GPU host link",
      host.gpus[0]!.pcie,
      pcieStated ? "stated" : "catalog",
      pcieStated ? "the stack" : "the GPU's own link, assumed fully wired",
    ),
  ];
}
