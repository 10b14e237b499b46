/**
 * I/O for `npm run plan -- --gguf PATH`: reads a local GGUF (the first shard of a split model, with
 * its sibling shards found beside it, as llama-server does) into the planner's tensor list and
 * architecture, and describes this machine as a host. The bench reads its models the same way.
 * Every failure is a ConfigError naming the file, so the CLI prints one line, never a stack trace.
 */
import { existsSync, openSync, readSync, closeSync, readFileSync, statSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { cpus } from "node:os";
import { gguf } from "@huggingface/gguf";
import type { Architecture } from "../planner/catalog";
import { ConfigError } from "../planner/errors";
import type { HostSpec } from "../planner/host";
import { CPU_ISA_FEATURES, type CpuIsaFeature } from "../planner/config";
import {
  architectureFromMetadata,
  lockSchema,
  lockTensorsOf,
  scalarMetadata,
  SIZED_ARCHITECTURES,
  tensorsFromLock,
  UnsizedArchitectureError,
  type ManifestLock,
} from "../planner/lock";
import type { TensorInfo } from "../planner/tensors";

export interface LocalModel {
  path: string;
  /** Every shard, first first. */
  shards: string[];
  arch: Architecture;
  tensors: TensorInfo[];
  bytes: number;
  lock: ManifestLock;
}

/** llama.cpp's split naming (gguf-split): PREFIX-00001-of-00004.gguf. */
const SPLIT_NAME = /^(.*)-(\d{5})-of-(\d{5})\.gguf$/;

const refuse = (path: string, problem: string): ConfigError =>
  new ConfigError("--gguf", [`--gguf: ${path}: ${problem}`]);

/** GGUF files start with the ASCII magic "GGUF" (ggml/include/gguf.h GGUF_MAGIC). */
function assertGgufFile(path: string): void {
  if (!existsSync(path))
    throw refuse(path, "no such file; allowed: a local .gguf file (the first shard of a split model)");
  if (!statSync(path).isFile()) throw refuse(path, "not a file; allowed: a local .gguf file");
  const magic = Buffer.alloc(4);
  let fd: number | undefined;
  try {
    fd = openSync(path, "r");
    readSync(fd, magic, 0, 4, 0);
  } catch (error) {
    throw refuse(path, `cannot be read (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`);
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
  if (magic.toString("latin1") !== "GGUF")
    throw refuse(path, "not a GGUF file (it does not start with the GGUF magic)");
}

async function header(path: string): Promise<Awaited<ReturnType<typeof gguf>>> {
  assertGgufFile(path);
  try {
    return await gguf(path, { allowLocalFile: true });
  } catch (error) {
    throw refuse(path, `unreadable GGUF header (${(error as Error).message.split("\n")[0]})`);
  }
}

type GgufHeader = Awaited<ReturnType<typeof gguf>>;

/** Refuses a later shard of a split model: llama-server loads a split model from its first shard. */
function assertFirstShard(path: string, splitNo: number, splitCount: number, name: RegExpExecArray | null): void {
  if (splitNo !== 0 || (name && name[2] !== "00001")) {
    const firstName = name ? `${name[1]}-00001-of-${name[3]}.gguf` : "its -00001-of-N shard";
    const index = splitNo > 0 ? splitNo + 1 : Number(name![2]);
    const count = splitCount > 1 ? splitCount : Number(name?.[3] ?? splitCount);
    throw refuse(
      path,
      `shard ${index} of ${count} of a split model; allowed: the first shard (${firstName}), which llama-server loads the rest from`,
    );
  }
}

/** The other shards of a split model, found beside the first by their split names. */
function siblingShards(path: string, splitCount: number, name: RegExpExecArray | null): string[] {
  const others: string[] = [];
  if (splitCount > 1) {
    if (!name)
      throw refuse(
        path,
        `the first of ${splitCount} shards, but not named PREFIX-00001-of-${String(splitCount).padStart(5, "0")}.gguf, so its other shards cannot be found`,
      );
    for (let index = 2; index <= splitCount; index++) {
      const sibling = join(dirname(path), `${name[1]}-${String(index).padStart(5, "0")}-of-${name[3]}.gguf`);
      if (!existsSync(sibling))
        throw refuse(sibling, `missing: shard ${index} of ${splitCount} must sit beside the first`);
      others.push(sibling);
    }
  }
  return others;
}

/** A lock for the local model, as a downloaded one would have (placeholder sizes and hashes). */
function localLock(
  path: string,
  label: string,
  metadata: Record<string, unknown>,
  headers: GgufHeader[],
  shards: string[],
): ManifestLock {
  try {
    return lockSchema.parse({
      lockVersion: 1,
      repo: "local/gguf",
      revision: "local",
      tier: label.replace(/[^A-Za-z0-9_.+-]+/g, "_").replace(/^[^A-Za-z0-9]+/, "") || "local",
      source: path,
      generatedAt: "local",
      metadata: scalarMetadata(metadata),
      shards: headers.map((shard, index) => ({
        path: `shard-${String(index + 1).padStart(5, "0")}.gguf`, // the lock wants plain relative names; `shards` keeps the real paths
        size: 1,
        sha256: "0".repeat(64),
        tensors: lockTensorsOf(shard.tensorInfos, (problem) => refuse(shards[index]!, problem)),
      })),
    });
  } catch (error) {
    if (error instanceof ConfigError) throw error;
    throw refuse(
      path,
      `its header does not describe a model the planner can read (${(error as Error).message.split("\n")[0]})`,
    );
  }
}

function localArchitecture(path: string, lock: ManifestLock): Architecture {
  try {
    return architectureFromMetadata(lock.metadata);
  } catch (error) {
    // An unsized architecture's message already names what is allowed.
    throw refuse(
      path,
      error instanceof UnsizedArchitectureError
        ? error.message
        : `${(error as Error).message}; allowed: a MoE model of an architecture this kit sizes (${SIZED_ARCHITECTURES.join(", ")})`,
    );
  }
}

/**
 * Reads a model the way llama-server loads it: from its first shard, the other shards found beside
 * it by name. `extraShards` overrides that search (the bench names its shards itself).
 */
export async function readLocalModel(
  path: string,
  label = basename(path),
  extraShards?: string[],
): Promise<LocalModel> {
  const first = await header(path);
  const metadata = first.metadata as Record<string, unknown>;
  const splitNo = Number(metadata["split.no"] ?? 0);
  const splitCount = Number(metadata["split.count"] ?? 1);
  const name = SPLIT_NAME.exec(basename(path));
  assertFirstShard(path, splitNo, splitCount, name);
  const others = extraShards ?? siblingShards(path, splitCount, name);
  const rest = await Promise.all(others.map(header));
  const shards = [path, ...others];
  const lock = localLock(path, label, metadata, [first, ...rest], shards);
  const arch = localArchitecture(path, lock);
  const tensors = tensorsFromLock(lock);
  return { path, shards, arch, tensors, bytes: tensors.reduce((sum, tensor) => sum + tensor.bytes, 0), lock };
}

/** Physical cores, clock, AVX-512 and RAM of this machine, read from /proc as probe-host.sh reads them. */
export function thisMachineHost(bandwidthGBps: number): HostSpec {
  const cpuinfo = readFileSync("/proc/cpuinfo", "utf8");
  const pairs = new Set<string>();
  let physical = "0";
  for (const line of cpuinfo.split("\n")) {
    const [key, value] = line.split(":").map((part) => part.trim());
    if (key === "physical id") physical = value ?? "0";
    if (key === "core id") pairs.add(`${physical}:${value}`);
  }
  const cores = Math.max(1, pairs.size);
  const ramBytes = Number(/MemTotal:\s+(\d+)/.exec(readFileSync("/proc/meminfo", "utf8"))?.[1] ?? 0) * 1024;
  // VMs often report 0 MHz to os.cpus(); /proc/cpuinfo's "cpu MHz" or a 2.5 GHz guess then stands in.
  const mhz = cpus()[0]?.speed || Number(/cpu MHz\s*:\s*([\d.]+)/.exec(cpuinfo)?.[1] ?? 0) || 2500;
  const sockets = new Set([...cpuinfo.matchAll(/physical id\s*:\s*(\d+)/g)].map((match) => match[1])).size || 1;
  return {
    kind: "bare-metal",
    label: "this machine",
    cpu: {
      name: /model name\s*:\s*(.*)/.exec(cpuinfo)?.[1]?.trim() ?? `${cores}-core CPU`,
      cores,
      sockets,
      numaNodes: sockets,
      allCoreGHz: mhz / 1000,
      fp32FlopsPerCycle: 32,
      arch: process.arch === "arm64" ? "arm64" : "x86-64",
      isa: isaOf(cpuinfo),
      avx2: / avx2 /.test(cpuinfo),
      avx512: / avx512f /.test(cpuinfo),
      ccds: undefined,
      fabricClockMHz: undefined,
    },
    memory: {
      totalBytes: ramBytes,
      kind: undefined,
      channels: undefined,
      peakBandwidth: undefined,
      achievableBandwidth: bandwidthGBps * 1e9,
      basis: `measured ${bandwidthGBps.toFixed(1)} GB/s on this machine`,
    },
    gpus: [],
    diskFreeBytes: undefined,
    cloud: undefined,
  };
}

/** The kit's ISA feature names from /proc/cpuinfo's flags (x86-64) or Features (arm64) line. */
function isaOf(cpuinfo: string): CpuIsaFeature[] {
  const words = new Set((/^(?:flags|Features)\s*:\s*(.*)$/m.exec(cpuinfo)?.[1] ?? "").split(/\s+/));
  const kernelName: Record<CpuIsaFeature, string> = {
    avx2: "avx2",
    avx512: "avx512f",
    "avx512-vnni": "avx512_vnni",
    "avx512-bf16": "avx512_bf16",
    amx: "amx_tile",
    neon: "asimd",
    sve: "sve",
    i8mm: "i8mm",
    dotprod: "asimddp",
  };
  return CPU_ISA_FEATURES.filter((feature) => words.has(kernelName[feature]));
}
