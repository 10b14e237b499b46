/**
 * Resolves a stack's host (bare-metal description or cloud instance type) against the catalog into
 * the numbers the planner needs: CPU, RAM and its bandwidth, GPUs, and where each number came from.
 */
import type { Catalog, CpuPlatformEntry, Efficiency } from "./catalog";
import { memoryKindMegaTransfers } from "./catalog";
import type { BareMetalHostConfig, CpuArch, CpuIsaFeature, HostConfig } from "./config";
import { ConfigError } from "./errors";

export interface CpuSpec {
  name: string;
  cores: number;
  sockets: number;
  numaNodes: number;
  allCoreGHz: number;
  fp32FlopsPerCycle: number;
  arch: CpuArch;
  /** ISA features llama.cpp's CPU kernels select on (repacking needs avx2/avx512 on x86-64). */
  isa: CpuIsaFeature[];
  avx2: boolean;
  avx512: boolean;
  ccds: number | undefined;
  fabricClockMHz: number | undefined;
}

export interface MemorySpec {
  totalBytes: number;
  kind: string | undefined;
  channels: number | undefined;
  /** Datasheet peak in bytes/s: channels × MT/s × 8 bytes; undefined when only a measurement was given. */
  peakBandwidth: number | undefined;
  /** What the cores can actually stream, bytes/s, before llama.cpp's own efficiency. */
  achievableBandwidth: number;
  basis: string;
}

export interface GpuDevice {
  index: number;
  catalogId: string;
  name: string;
  memoryBytes: number;
  bandwidth: number;
  int8OpsPerSecond: number;
  /** Host link, bytes/s, before efficiency. */
  pcieBandwidth: number;
  pcie: string;
}

export interface HostSpec {
  kind: "bare-metal" | "cloud";
  label: string;
  cpu: CpuSpec;
  memory: MemorySpec;
  gpus: GpuDevice[];
  diskFreeBytes: number | undefined;
  cloud: { provider: "aws"; instanceType: string; usdPerHour: number; region: string } | undefined;
}

type CloudHostConfig = Extract<HostConfig, { kind: "cloud" }>;
type CatalogInstance = Catalog["instances"][number];

export function resolveHost(stack: string, host: HostConfig, catalog: Catalog): HostSpec {
  if (host.kind === "cloud") return resolveCloudHost(stack, host, catalog);
  return resolveBareMetalHost(stack, host, catalog);
}

function resolveCloudHost(stack: string, host: CloudHostConfig, catalog: Catalog): HostSpec {
  const problems: string[] = [];
  const instance = catalog.instances.find((entry) => entry.id === host.instanceType);
  if (!instance) {
    throw new ConfigError(stack, [
      `host.instanceType: found "${host.instanceType}"; allowed: ${catalog.instances.map((entry) => entry.id).join(", ")}`,
    ]);
  }
  const platform = instance.cpuPlatform
    ? catalog.cpuPlatforms.find((entry) => entry.id === instance.cpuPlatform)
    : undefined;
  const memoryPlatform = platform?.memory ?? instance.memoryPlatform!;
  const cpu = cloudCpu(instance, platform);
  const memory = resolveBandwidth(catalog, catalog.efficiency, cpu, {
    totalBytes: instance.memory,
    kind: memoryPlatform.kind,
    channels: memoryPlatform.channels,
    measuredGBps: host.memory?.measuredBandwidthGBps,
  });
  const gpus = instance.gpus
    ? expandGpus(stack, catalog, [{ model: instance.gpus.model, count: instance.gpus.count }], undefined, problems)
    : [];
  if (problems.length > 0) throw new ConfigError(stack, problems);
  return {
    kind: "cloud",
    label: `AWS ${instance.id}`,
    cpu,
    memory,
    gpus,
    diskFreeBytes: host.diskSize,
    cloud: { provider: "aws", instanceType: instance.id, usdPerHour: instance.usdPerHour, region: host.region },
  };
}

/** A cloud instance's CPU: its catalog platform where it names one, else the instance's own CPU entry. */
function cloudCpu(instance: CatalogInstance, platform: CpuPlatformEntry | undefined): CpuSpec {
  const cpuSource = platform ?? instance.cpu!;
  return {
    name: platform?.name ?? `${instance.id} CPU`,
    cores: Math.floor(instance.vcpus / 2),
    sockets: platform?.sockets ?? 1,
    numaNodes: instance.numaNodes ?? platform?.numaNodes ?? 1,
    allCoreGHz: cpuSource.allCoreGHz,
    fp32FlopsPerCycle: cpuSource.fp32FlopsPerCycle,
    arch: cpuSource.isa.includes("neon") ? "arm64" : "x86-64",
    isa: [...cpuSource.isa],
    avx2: cpuSource.isa.includes("avx2"),
    avx512: cpuSource.isa.includes("avx512"),
    ccds: platform?.ccds,
    fabricClockMHz: platform?.fabricClockMHz,
  };
}

/** What a bare-metal stack states or its cpu.platform implies, scaled to the stack's socket count. */
interface BareMetalLayout {
  platform: CpuPlatformEntry | undefined;
  kind: string | undefined;
  sockets: number;
  /** How many catalog platforms' worth of sockets the stack has (1 without a platform). */
  perPlatform: number;
  channels: number | undefined;
  cores: number;
  allCoreGHz: number | undefined;
}

function resolveBareMetalHost(stack: string, host: BareMetalHostConfig, catalog: Catalog): HostSpec {
  const problems: string[] = [];
  const layout = bareMetalLayout(host, catalog, problems);
  const gpus = expandGpus(stack, catalog, host.gpus, host.pcie, problems);
  if (problems.length > 0) throw new ConfigError(stack, problems);

  const cpu = bareMetalCpu(stack, host, layout);
  const memory = resolveBandwidth(catalog, catalog.efficiency, cpu, {
    totalBytes: host.memory.total,
    kind: layout.kind,
    channels: layout.channels,
    measuredGBps: host.memory.measuredBandwidthGBps,
  });
  return {
    kind: "bare-metal",
    label:
      host.name ?? `${cpu.name}, ${gpus.length > 0 ? `${gpus.length}× ${gpus[0]!.name}, ` : ""}${layout.kind ?? "RAM"}`,
    cpu,
    memory,
    gpus,
    diskFreeBytes: host.disk.free,
    cloud: undefined,
  };
}

function bareMetalLayout(host: BareMetalHostConfig, catalog: Catalog, problems: string[]): BareMetalLayout {
  const platform = host.cpu.platform ? catalog.cpuPlatforms.find((entry) => entry.id === host.cpu.platform) : undefined;
  if (host.cpu.platform && !platform) {
    problems.push(
      `host.cpu.platform: found "${host.cpu.platform}"; allowed: ${catalog.cpuPlatforms.map((entry) => entry.id).join(", ")}`,
    );
  }
  const kind = host.memory.kind ?? platform?.memory.kind;
  if (kind !== undefined && memoryKindMegaTransfers(catalog, kind) === undefined) {
    problems.push(
      `host.memory.kind: found "${kind}"; allowed: ${catalog.memoryKinds.map((entry) => entry.id).join(", ")}`,
    );
  }
  // A catalog platform describes platform.sockets socket(s); a stack with more sockets has that many
  // times the cores, channels and NUMA nodes unless it says otherwise.
  const sockets = host.cpu.sockets ?? platform?.sockets ?? 1;
  const perPlatform = platform ? sockets / platform.sockets : 1;
  const channels = memoryChannels(host, platform, sockets, problems);
  if (host.memory.measuredBandwidthGBps === undefined && (kind === undefined || channels === undefined)) {
    problems.push(
      `host.memory: found no bandwidth; allowed: memory.kind and memory.channels (or a cpu.platform that has them), or memory.measuredBandwidthGBps`,
    );
  }
  const cores = host.cpu.cores ?? (platform ? platform.cores * perPlatform : 0);
  const allCoreGHz = host.cpu.allCoreGHz ?? platform?.allCoreGHz;
  if (allCoreGHz === undefined)
    problems.push(`host.cpu.allCoreGHz: missing; allowed: the all-core clock in GHz (or a cpu.platform)`);
  return { platform, kind, sockets, perPlatform, channels, cores, allCoreGHz };
}

/** The stack's channels, or channelsPerSocket (its own or the platform's) × sockets; both given must agree. */
function memoryChannels(
  host: BareMetalHostConfig,
  platform: CpuPlatformEntry | undefined,
  sockets: number,
  problems: string[],
): number | undefined {
  const channelsPerSocket =
    host.memory.channelsPerSocket ?? (platform ? platform.memory.channels / platform.sockets : undefined);
  const channelsFromSockets = channelsPerSocket !== undefined ? channelsPerSocket * sockets : undefined;
  if (
    host.memory.channels !== undefined &&
    host.memory.channelsPerSocket !== undefined &&
    host.memory.channels !== channelsFromSockets
  ) {
    problems.push(
      `host.memory.channels: found ${host.memory.channels}; allowed: memory.channelsPerSocket × cpu.sockets = ${host.memory.channelsPerSocket} × ${sockets} = ${channelsFromSockets} (or give only one of channels and channelsPerSocket)`,
    );
  }
  return host.memory.channels ?? channelsFromSockets;
}

function bareMetalCpu(stack: string, host: BareMetalHostConfig, layout: BareMetalLayout): CpuSpec {
  const { platform, cores, sockets, perPlatform } = layout;
  const { arch, isa } = bareMetalIsa(stack, host, platform);
  return {
    name: host.cpu.model ?? platform?.name ?? `${cores}-core CPU`,
    cores,
    sockets,
    numaNodes: host.cpu.numaNodes ?? (platform ? platform.numaNodes * perPlatform : sockets),
    allCoreGHz: layout.allCoreGHz!,
    fp32FlopsPerCycle: host.cpu.fp32FlopsPerCycle ?? platform?.fp32FlopsPerCycle ?? 32,
    arch,
    isa,
    avx2: isa.includes("avx2"),
    avx512: isa.includes("avx512"),
    ccds: host.cpu.ccds ?? (platform?.ccds !== undefined ? platform.ccds * perPlatform : undefined),
    fabricClockMHz: platform?.fabricClockMHz,
  };
}

function bareMetalIsa(
  stack: string,
  host: BareMetalHostConfig,
  platform: CpuPlatformEntry | undefined,
): { arch: CpuArch; isa: CpuIsaFeature[] } {
  const platformArch: CpuArch | undefined = platform ? (platform.isa.includes("neon") ? "arm64" : "x86-64") : undefined;
  if (host.cpu.arch !== undefined && platformArch !== undefined && host.cpu.arch !== platformArch) {
    throw new ConfigError(stack, [
      `host.cpu.arch: found "${host.cpu.arch}"; allowed: "${platformArch}" for cpu.platform ${platform!.id} (or leave arch out)`,
    ]);
  }
  const arch: CpuArch = host.cpu.arch ?? platformArch ?? "x86-64";
  // The stack's isa list wins; else the platform's; else what every x86-64 server CPU the kit sizes has
  // (AVX2), with the legacy avx512 switch still honoured.
  const isa: CpuIsaFeature[] = host.cpu.isa
    ? [...host.cpu.isa]
    : platform
      ? platform.isa.filter((feature) => feature !== "avx512" || host.cpu.avx512 !== false)
      : arch === "x86-64"
        ? ["avx2"]
        : ["neon"];
  if (host.cpu.isa === undefined && host.cpu.avx512 === true && !isa.includes("avx512")) isa.push("avx512");
  return { arch, isa };
}

function resolveBandwidth(
  catalog: Catalog,
  efficiency: Efficiency,
  cpu: CpuSpec,
  memory: {
    totalBytes: number;
    kind: string | undefined;
    channels: number | undefined;
    measuredGBps: number | undefined;
  },
): MemorySpec {
  const megaTransfers = memory.kind ? memoryKindMegaTransfers(catalog, memory.kind) : undefined;
  const peak =
    megaTransfers !== undefined && memory.channels !== undefined
      ? memory.channels * megaTransfers * 1e6 * 8
      : undefined;
  if (memory.measuredGBps !== undefined) {
    return {
      totalBytes: memory.totalBytes,
      kind: memory.kind,
      channels: memory.channels,
      peakBandwidth: peak,
      achievableBandwidth: memory.measuredGBps * 1e9,
      basis: `measured ${memory.measuredGBps} GB/s (host.memory.measuredBandwidthGBps)`,
    };
  }
  const ramSide = peak! * efficiency.cpu.achievableFractionOfPeak.value;
  const fabricSide =
    cpu.ccds !== undefined && cpu.fabricClockMHz !== undefined
      ? cpu.ccds * efficiency.cpu.fabricBytesPerClockPerCcd.value * cpu.fabricClockMHz * 1e6
      : undefined;
  const ramText = `${memory.channels} × ${memory.kind} = ${(peak! / 1e9).toFixed(1)} GB/s peak × ${efficiency.cpu.achievableFractionOfPeak.value} achievable = ${(ramSide / 1e9).toFixed(1)} GB/s`;
  if (fabricSide !== undefined && fabricSide < ramSide) {
    return {
      totalBytes: memory.totalBytes,
      kind: memory.kind,
      channels: memory.channels,
      peakBandwidth: peak,
      achievableBandwidth: fabricSide,
      basis: `${ramText}, but the CPU's ${cpu.ccds} CCDs read at most ${cpu.ccds} × ${efficiency.cpu.fabricBytesPerClockPerCcd.value} B × ${cpu.fabricClockMHz} MHz = ${(fabricSide / 1e9).toFixed(1)} GB/s, which binds`,
    };
  }
  return {
    totalBytes: memory.totalBytes,
    kind: memory.kind,
    channels: memory.channels,
    peakBandwidth: peak,
    achievableBandwidth: ramSide,
    basis: ramText,
  };
}

function expandGpus(
  stack: string,
  catalog: Catalog,
  gpus: ReadonlyArray<{ model: string; count: number }>,
  pcie: { gen: number; lanes: number } | undefined,
  problems: string[],
): GpuDevice[] {
  const devices: GpuDevice[] = [];
  gpus.forEach((request, position) => {
    const entry = catalog.gpus.find((gpu) => gpu.id === request.model);
    if (!entry) {
      problems.push(
        `host.gpus[${position}].model: found "${request.model}"; allowed: ${catalog.gpus.map((gpu) => gpu.id).join(", ")}`,
      );
      return;
    }
    const gen = Math.min(pcie?.gen ?? entry.pcieGen, entry.pcieGen);
    const lanes = Math.min(pcie?.lanes ?? entry.pcieLanes, entry.pcieLanes);
    const perLane = catalog.efficiency.pcie.gigabytesPerSecondPerLane.value[String(gen)] ?? 1.969;
    for (let i = 0; i < request.count; i++) {
      devices.push({
        index: devices.length,
        catalogId: entry.id,
        name: entry.name,
        memoryBytes: entry.memory,
        bandwidth: entry.bandwidthGBps * 1e9,
        int8OpsPerSecond: entry.int8Tops * 1e12,
        pcieBandwidth: perLane * lanes * 1e9,
        pcie: `PCIe ${gen}.0 x${lanes}`,
      });
    }
  });
  void stack;
  return devices;
}
