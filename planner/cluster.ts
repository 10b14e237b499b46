/**
 * A model split over several hosts with llama.cpp's RPC backend (kimi-kit:hosts): the workers as
 * the estimator sees them, what each ends up holding, the link's cost at load and per token, and
 * the verdict on whether a split is the right answer at all. Published two-node runs gained
 * 1.30–1.91× throughput from two replicas and 1.08× from splitting one model
 * (shared/reference/models-2026.md), so a split is refused whenever one host would do.
 * Pure: no Pulumi, no I/O.
 */
import type { Catalog, ModelEntry, Tier } from "./catalog";
import type { ClusterConfig, LinkConfig, StackConfig } from "./config";
import { ConfigError } from "./errors";
import { resolveHost, type HostSpec } from "./host";
import type { DeviceMemory, DeviceName } from "./memory";
import { isRpcDevice, linkSpec, rpcDeviceName, type LinkSpec, type RpcWorkerSpec } from "./network";
import type { Placement } from "./offload";
import type { Projection } from "./speed";
import { formatBytes, formatDuration } from "./units";

/** The nftables table a worker's firewall rule lives in (ansible-free-scripts/firewall.sh --table). */
export const RPC_FIREWALL_TABLE = "kimi_kit_rpc";

export interface RpcWorkerPlan {
  id: string;
  /** Its place in kimi-kit:hosts. */
  index: number;
  privateAddress: string;
  rpcPort: number;
  /** host:port as the head's --rpc lists it. */
  endpoint: string;
  /** llama.cpp's name for its device: RPC0[10.0.0.2:50052]. */
  device: DeviceName;
  host: HostSpec;
  ssh: { host: string; port: number; user: string; hostPublicKey: string | undefined } | undefined;
  /** What the worker holds (weights, KV and compute buffer of its layers) against its RAM. */
  memory: DeviceMemory;
  /** The repeating layers it computes; the output layer too when holdsOutput. */
  layers: number[];
  holdsOutput: boolean;
  /** ggml-rpc-server's arguments: bound to the private address only, one thread per core. */
  rpcServerArgs: string[];
  /** Only the head may connect: firewall.sh apply --table kimi_kit_rpc --allow PORT=HEAD/32. */
  firewall: { table: string; port: number; allowFrom: string[] };
  containerName: string;
}

export interface ClusterPlan {
  head: { id: string; index: number; privateAddress: string; layers: number[] };
  link: LinkConfig & { spec: LinkSpec };
  workers: RpcWorkerPlan[];
  /** Weights the head sends the workers at every model load (RPC has no local copy without its cache). */
  shippedBytes: number;
  /** shippedBytes over the link: the least a model load takes. */
  loadSeconds: number;
  /** The link's share of one decoded token at the quoted depth, summed over the workers. */
  networkSecondsPerToken: number;
  /**
   * Environment for llama-server on the head and ggml-rpc-server on every worker: with a TCP link,
   * GGML_RPC_NO_RDMA=1 keeps a build that found libibverbs from negotiating RDMA on a NIC the stack
   * did not describe (either peer setting it forces TCP, ggml-rpc transport.cpp).
   */
  environment: Record<string, string>;
  /**
   * What estimate() needs to size and project this split again (options.rpc): the plan, bench and tests pass the same.
   */
  rpc: { workers: RpcWorkerSpec[]; link: LinkSpec };
  /**
   * Same image (and so the same llama.cpp build) on every host: ggml-rpc refuses another protocol major, and mixed
   * builds drift.
   */
  image: string;
}

export interface ClusterInputs {
  rpc: { workers: RpcWorkerSpec[]; link: LinkSpec };
  finish: (placement: Placement) => ClusterPlan;
}

type ClusterWorker = ClusterConfig["workers"][number];

/** The kit sizes splits of CPU hosts only: a GPU on the head or any worker is refused up front. */
function refuseGpusInSplit(stack: string, cluster: ClusterConfig, head: HostSpec): void {
  const gpuProblems = [
    ...(head.gpus.length > 0
      ? [
          `hosts[${cluster.head.index}].gpus: found ${head.gpus.length} GPU(s); allowed: none in a split — the kit sizes RPC splits of CPU hosts only (v0.5.0's RPC devices take no op offload, and a GPU beside RPC devices is not measured here)`,
        ]
      : []),
    ...cluster.workers.flatMap((worker) =>
      worker.host.gpus.length > 0
        ? [
            `hosts[${worker.index}].gpus: found ${worker.host.gpus.length} GPU model(s); allowed: none — the kit runs CPU ggml-rpc-servers only`,
          ]
        : [],
    ),
  ];
  if (gpuProblems.length > 0) throw new ConfigError(stack, gpuProblems);
}

function resolveWorker(stack: string, worker: ClusterWorker, catalog: Catalog): RpcWorkerSpec {
  let host: HostSpec;
  try {
    host = resolveHost(stack, worker.host, catalog);
  } catch (error) {
    // resolveHost names the head's keys (host.cpu…); a worker's live under hosts[i].
    if (error instanceof ConfigError)
      throw new ConfigError(
        stack,
        error.problems.map((problem) => problem.replace(/^host\./, `hosts[${worker.index}].`)),
      );
    throw error;
  }
  return { endpoint: `${worker.privateAddress}:${worker.rpcPort}`, host, threads: host.cpu.cores };
}

function layersOn(placement: Placement, device: DeviceName): number[] {
  return placement.layerDevice.flatMap((owner, layer) => (owner === device ? [layer] : []));
}

function workerPlan(
  cluster: ClusterConfig,
  worker: ClusterWorker,
  spec: RpcWorkerSpec,
  placement: Placement,
): RpcWorkerPlan {
  const device = rpcDeviceName(spec.endpoint);
  return {
    id: worker.id,
    index: worker.index,
    privateAddress: worker.privateAddress,
    rpcPort: worker.rpcPort,
    endpoint: spec.endpoint,
    device,
    host: spec.host,
    ssh: worker.host.ssh && {
      host: worker.host.ssh.host,
      port: worker.host.ssh.port,
      user: worker.host.ssh.user,
      hostPublicKey: worker.host.ssh.hostPublicKey,
    },
    memory: placement.memory.find((entry) => entry.device === device)!,
    layers: layersOn(placement, device),
    holdsOutput: placement.outputDevice === device,
    rpcServerArgs: [
      "--host",
      worker.privateAddress,
      "--port",
      String(worker.rpcPort),
      "--threads",
      String(spec.threads),
    ],
    firewall: { table: RPC_FIREWALL_TABLE, port: worker.rpcPort, allowFrom: [`${cluster.head.privateAddress}/32`] },
    containerName: `kimi-kit-rpc-${worker.id}`,
  };
}

function finishCluster(
  config: StackConfig,
  catalog: Catalog,
  workers: RpcWorkerSpec[],
  spec: LinkSpec,
  placement: Placement,
): ClusterPlan {
  const cluster = config.cluster as ClusterConfig;
  const workerPlans = cluster.workers.map((worker, index) => workerPlan(cluster, worker, workers[index]!, placement));
  const shippedBytes = placement.memory
    .filter((device) => isRpcDevice(device.device))
    .reduce((sum, device) => sum + device.modelBytes, 0);
  const traffic = placement.estimate.projection.decodeTraffic;
  return {
    head: { ...cluster.head, layers: layersOn(placement, "CPU") },
    link: { ...cluster.link, spec },
    workers: workerPlans,
    shippedBytes,
    loadSeconds: shippedBytes / spec.bytesPerSecond,
    networkSecondsPerToken: traffic.reduce((sum, entry) => sum + (entry.networkSecondsPerToken ?? 0), 0),
    image: config.deployment.image ?? catalog.llamaCpp.images.rpc,
    rpc: { workers, link: spec },
    environment: cluster.link.transport === "tcp" ? { GGML_RPC_NO_RDMA: "1" } : {},
  };
}

/** Resolves the workers' hardware and the link; `finish` reads what the chosen placement put where. */
export function planCluster(stack: string, config: StackConfig, head: HostSpec, catalog: Catalog): ClusterInputs {
  const cluster = config.cluster as ClusterConfig;
  refuseGpusInSplit(stack, cluster, head);
  const workers = cluster.workers.map((worker) => resolveWorker(stack, worker, catalog));
  const spec = linkSpec(cluster.link.gbitPerSecond, cluster.link.roundTripMicroseconds, cluster.link.transport);
  const finish = (placement: Placement): ClusterPlan => finishCluster(config, catalog, workers, spec, placement);
  return { rpc: { workers, link: spec }, finish };
}

export interface SplitVerdictInputs {
  stack: string;
  config: StackConfig;
  model: ModelEntry;
  tier: Tier;
  cluster: ClusterPlan;
  projection: Projection;
  /** The same tier planned on the head alone. */
  onHeadAlone: () => Placement;
  /** Catalog hosts that hold the tier alone, with their projected decode and on-demand monthly price. */
  catalogHosts: () => { name: string; decodeTokensPerSecond: number; monthlyUsd: number }[];
  /** The split's own monthly cost, when the stack states costs: only catalog hosts at or under it are compared. */
  splitMonthlyUsd: number | undefined;
}

/**
 * Why a split that fits is still refused, or undefined: the tier fits on the head alone (replicas
 * are the way to more throughput), its decode is below projection.minDecodeTokensPerSecond, or a
 * single catalog host holding the same tier decodes faster (unless
 * projection.compareSplitWithCatalogHosts is false).
 */
export function splitVerdict(inputs: SplitVerdictInputs): string | undefined {
  const { config, model, tier, cluster, projection } = inputs;
  const what = `${model.name} ${tier.name} split over ${cluster.workers.length + 1} hosts`;
  const decode = projection.decodeTokensPerSecond;
  const alone = inputs.onHeadAlone();
  if (alone.fits) {
    return (
      `${what} is the wrong answer: it fits on the head alone (${alone.memory[0]!.label}: ${formatBytes(alone.memory[0]!.plannedBytes)} of ${formatBytes(alone.memory[0]!.capacityBytes)}), ` +
      `where it projects ${alone.estimate.projection.decodeTokensPerSecond.toFixed(1)} tok/s against the split's ${decode.toFixed(1)}. ` +
      `Run it on one host (kimi-kit:host) and add replicas for throughput: published two-node runs gained 1.30–1.91× from replicas and 1.08× from a split.`
    );
  }
  const floor = config.projection.minDecodeTokensPerSecond;
  const network = `the link costs ${(cluster.networkSecondsPerToken * 1e3).toFixed(2)} ms per token (${cluster.link.spec.basis})`;
  if (decode < floor) {
    return `${what} projects ${decode.toFixed(2)} tok/s decode at depth ${projection.decodeDepthTokens}, below projection.minDecodeTokensPerSecond (${floor}); ${network}. A smaller tier on one host, or faster hosts, would be needed.`;
  }
  if (config.projection.compareSplitWithCatalogHosts) {
    // An 8-GPU instance at a hundred dollars an hour is not the alternative to two owned boxes: with
    // costs stated, only catalog hosts that cost no more a month are compared.
    const budget = inputs.splitMonthlyUsd;
    const affordable = inputs
      .catalogHosts()
      .filter((candidate) => budget === undefined || candidate.monthlyUsd <= budget);
    const best = affordable.sort((a, b) => b.decodeTokensPerSecond - a.decodeTokensPerSecond)[0];
    if (best && best.decodeTokensPerSecond > decode) {
      return (
        `${what} projects ${decode.toFixed(1)} tok/s decode, below one ${best.name} holding the same tier alone (${best.decodeTokensPerSecond.toFixed(1)} tok/s, $${best.monthlyUsd.toFixed(0)}/month${budget === undefined ? "; the stack states no costs, so every catalog host is compared" : ` against the split's $${budget.toFixed(0)}`}); ${network}. ` +
        `Set projection.compareSplitWithCatalogHosts: false if these hosts are already yours and renting is not an option.`
      );
    }
  }
  return undefined;
}

/** One line for reports: what a model load pushes through the link. */
export function loadLine(cluster: ClusterPlan): string {
  return `${formatBytes(cluster.shippedBytes)} of weights to ${cluster.workers.length} worker(s) at every load: at least ${formatDuration(cluster.loadSeconds)} over ${cluster.link.spec.basis}`;
}
