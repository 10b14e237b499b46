/**
 * Composes the estimators into one Plan: config → host → tensors → placement → memory → args →
 * projections → cost, plus the verdict and, when the stack does not fit, what would.
 * Pure: no Pulumi, no network, no clock. The CLI prints it; the Pulumi components carry it out.
 */
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { llamaServerListen } from "./front-door";
import { planFleetServing, type FleetServing, type Listener, type ReplicaServing } from "./fleet-serving";
import { explainArgs, llamaServerArgs, type ArgsInputs, type ExplainedArg } from "./args";
import {
  findModelByRepo,
  loadCatalog,
  memoryKindMegaTransfers,
  TENSOR_CLASSES,
  type Catalog,
  type ModelEntry,
  type SeedHardware,
  type Tier,
} from "./catalog";
import type { GgmlTypeName } from "./ggml-types";
import { assertDeployable, hostSchema, type StackConfig } from "./config";
import { ConfigError } from "./errors";
import { resolveHost, type HostSpec } from "./host";
import {
  architectureFromMetadata,
  conventionalLockPath,
  readLock,
  SIZED_ARCHITECTURES,
  tensorsFromLock,
  type ManifestLock,
} from "./lock";
import { choose, type Placement, type PlacementInputs } from "./offload";
import { planCluster, splitVerdict, type ClusterInputs, type ClusterPlan } from "./cluster";
import { cpuDecodeAtBandwidth, type Projection, type SpeedInputs } from "./speed";
import { planFleet, type FleetPlan, type FleetResult, type TeamPlan } from "./fleet";
import { estimateCost, HOURS_PER_MONTH, type CostEstimate } from "./cost";
import { tensorsFromArchitecture, totalBytes, type TensorInfo } from "./tensors";
import { formatBytes, formatDuration } from "./units";

export const CONTAINER_MODEL_DIR = "/models";
export const CONTAINER_API_KEY_FILE = "/run/kimi-kit/api-key";
export const REPO_ROOT = join(__dirname, "..");

export interface ShardPlan {
  count: number;
  paths: string[];
  verified: boolean;
  firstShard: string;
  source: "catalog" | "lock";
}

export interface SeedCheck {
  claim: string;
  /** The build the claim describes, which this stack's host matches. */
  hardware: string;
  seedFigure: string;
  kitFigure: string;
  agrees: boolean;
  why: string;
}

export interface Plan {
  stack: string;
  config: StackConfig;
  model: ModelEntry;
  tier: Tier;
  tensorSource: "catalog" | "lock";
  /** The manifest lock the plan used, when the stack has one: GgufShards downloads exactly its files. */
  lock: ManifestLock | undefined;
  /** Every tensor of the model (from the lock, else from the catalog's architecture and tier). */
  tensors: TensorInfo[];
  modelBytes: number;
  host: HostSpec;
  placement: Placement;
  fits: boolean;
  refusal: string | undefined;
  alternatives: { tiersThatFit: string[]; maxContextPerSlotThatFits: number | null } | undefined;
  llamaServerArgs: string[];
  explainedArgs: ExplainedArg[];
  image: string;
  /**
   * The image for each driver probe-host.sh may find on a GPU host the stack leaves to the kit:
   * the CUDA 13 build needs an R580+ driver (llama_image_variant server-cuda13), the CUDA 12 build
   * otherwise. Undefined where the image does not depend on the driver (CPU, a split, a stack's own image).
   */
  imageByDriver: { cuda: string; cuda13: string } | undefined;
  shards: ShardPlan;
  projection: Projection;
  /** Undefined when the stack sets no `costs`: everything else is planned, the cost section is omitted. */
  cost: CostEstimate | undefined;
  costOmitted: string | undefined;
  seedChecks: SeedCheck[];
  /** A split over several hosts (kimi-kit:hosts): the workers, what each holds, the link's cost. */
  cluster: ClusterPlan | undefined;
  /**
   * Replicas behind one endpoint (kimi-kit:fleet, or hosts of role replica); also present, as one replica, when only
   * teams are set.
   */
  fleet: FleetPlan | undefined;
  /** kimi-kit:teams with their limits and, with costs, what each budget buys. */
  teams: TeamPlan[] | undefined;
  /**
   * Where llama-server listens (its --host and --port): loopback behind a front door or gateway; a replica's private
   * address.
   */
  listen: Listener;
  /** The stack key that describes this plan's host: "host", or "hosts[i]" for a split's head or a replica. */
  hostConfigPath: string;
  /** With fleet or teams: the gateway, each replica's listener and firewall, Prometheus (planner/fleet-serving.ts). */
  fleetServing: FleetServing | undefined;
}

export const COST_OMITTED_REASON =
  "the stack sets no kimi-kit:costs, so there is no monthly cost or break-even (add costs to get them)";

function shardPaths(model: ModelEntry, tier: Tier): string[] {
  const count = tier.shards.count;
  const pad = (n: number) => String(n).padStart(5, "0");
  return Array.from({ length: count }, (_, i) =>
    model.shardPathPattern
      .replaceAll("{tier}", tier.name)
      .replace("{index}", pad(i + 1))
      .replace("{count}", pad(count)),
  );
}

/**
 * The model and tier: from the catalog, or — for a deepseek2 repo the catalog does not list — from
 * its lock alone (architecture from the GGUF metadata, generic serving defaults).
 */
function resolveModel(
  stack: string,
  config: StackConfig,
  catalog: Catalog,
  lockFor: (repo: string, tier: string) => ManifestLock | undefined,
): { model: ModelEntry; tier: Tier; lock: ManifestLock | undefined } {
  let model = findModelByRepo(catalog, config.model.repo);
  if (!model) {
    const lock = lockFor(config.model.repo, config.model.tier);
    if (!lock) {
      throw new ConfigError(stack, [
        `model.repo: found "${config.model.repo}"; allowed: ${catalog.models.map((entry) => entry.repo).join(", ")}, or any deepseek2 GGUF repo with a lock (\`npm run lock -- --stack ${stack}\`)`,
      ]);
    }
    try {
      model = modelFromLock(lock);
    } catch (error) {
      // An architecture this kit does not size, or per-layer metadata of the wrong length: the lock's problem, named by
      // the stack's key.
      throw new ConfigError(stack, [
        `model.repo: found "${config.model.repo}", whose lock says: ${(error as Error).message}; allowed: a MoE model of an architecture this kit sizes (${SIZED_ARCHITECTURES.join(", ")})`,
      ]);
    }
  }
  const tier = model.tiers.find((entry) => entry.name === config.model.tier);
  if (!tier) {
    throw new ConfigError(stack, [
      `model.tier: found "${config.model.tier}"; allowed: ${model.tiers.map((entry) => entry.name).join(", ")}`,
    ]);
  }
  if (config.serving.contextLength > model.architecture.contextLength) {
    throw new ConfigError(stack, [
      `serving.contextLength: found ${config.serving.contextLength}; allowed: 256 to ${model.architecture.contextLength} (${model.name}'s trained context)`,
    ]);
  }
  if (config.model.vision) {
    // Only a projector the pinned release loads would be fetched; no catalog model has one today.
    const why = model.vision
      ? model.vision.notLoadableBecause
      : `${model.name} has no vision projector the kit can load`;
    throw new ConfigError(stack, [`model.vision: found true; allowed: false — ${why}`]);
  }
  const lock = lockFor(model.repo, tier.name);
  if (lock && (lock.tier !== tier.name || lock.repo.toLowerCase() !== model.repo.toLowerCase())) {
    throw new ConfigError(stack, [
      `deployment.lockFile: found a lock for ${lock.repo} ${lock.tier}; allowed: a lock for ${model.repo} ${tier.name}`,
    ]);
  }
  return { model, tier, lock };
}

function modelFromLock(lock: ManifestLock): ModelEntry {
  const tensors = tensorsFromLock(lock);
  const commonType = (cls: TensorInfo["cls"], fallback: GgmlTypeName): GgmlTypeName => {
    const counts = new Map<GgmlTypeName, number>();
    for (const tensor of tensors.filter((t) => t.cls === cls))
      counts.set(tensor.type, (counts.get(tensor.type) ?? 0) + tensor.bytes);
    return [...counts.entries()].sort((a, b) => b[1] - a[1])[0]?.[0] ?? fallback;
  };
  const name = lock.repo.split("/").pop()!;
  return {
    id: lock.repo,
    name,
    repo: lock.repo,
    architecture: architectureFromMetadata(lock.metadata),
    serving: { alias: name.toLowerCase(), jinja: true, sampling: { temperature: 0.8, topP: 0.95, minP: 0.05 } },
    tiers: [
      {
        name: lock.tier,
        publishedSizeBytes: lock.shards.reduce((sum, shard) => sum + shard.size, 0),
        types: Object.fromEntries(TENSOR_CLASSES.map((cls) => [cls, commonType(cls, "F32")])) as Tier["types"],
        shards: { count: lock.shards.length, verified: true },
      },
    ],
    shardPathPattern: "{tier}/{index}-of-{count}.gguf",
  };
}

export interface PlanOptions {
  catalog?: Catalog;
  /** Overrides deployment.lockFile; pass null to ignore any lock. */
  lock?: ManifestLock | null;
  /**
   * false: a stack that does not fit is refused without searching the tiers and context lengths that
   * would (plan.alternatives stays undefined). The recommender plans hundreds of candidate hosts and
   * reports its own near misses; that search would multiply its time several-fold.
   */
  alternatives?: boolean;
}

/** What every step of a plan reads once the model, host and tensors are resolved. */
interface PlanContext {
  stack: string;
  config: StackConfig;
  catalog: Catalog;
  model: ModelEntry;
  tier: Tier;
  lock: ManifestLock | undefined;
  host: HostSpec;
  split: ClusterInputs | undefined;
  tensors: TensorInfo[];
  serving: PlacementInputs["serving"];
  decodeDepthTokens: number;
  /** choose() for these tensors at this context per slot, everything else as the stack says. */
  placementFor: (candidateTensors: readonly TensorInfo[], contextPerSlot: number) => Placement;
}

export function buildPlan(stack: string, config: StackConfig, options: PlanOptions = {}): Plan {
  const catalog = options.catalog ?? loadCatalog();
  const { model, tier, lock } = resolveModel(stack, config, catalog, lockReader(stack, config, options));
  // Refuse what `up` would trip on (a disk smaller than the shards) here, so plan and up agree.
  assertDeployable(
    stack,
    config,
    lock ? lock.shards.reduce((sum, shard) => sum + shard.size, 0) : tier.publishedSizeBytes,
  );
  const context = planContext(stack, config, catalog, model, tier, lock);
  const { host, split, tensors } = context;
  const placement = context.placementFor(tensors, context.serving.contextPerSlot);
  const shards = shardPlan(model, tier, lock);
  const argsInputs = argsInputsFor(context, placement, shards);
  // The projection is estimate()'s, for the flags the kit chose; the seed checks reuse its inputs.
  const projection = placement.estimate.projection;
  const speedInputs = placement.estimate.speedInputs;
  const modelBytes = totalBytes(tensors);
  const cost = config.costs ? estimateCost(config.costs, host, modelBytes, projection) : undefined;
  const image = imageFor(context);
  const { refusal: placementRefusal, alternatives, cluster } = judgePlacement(context, placement, cost, options);
  const { fleetResult, fleetServing } = planFleetOf(context, placement, modelBytes, argsInputs);
  const refusal = placementRefusal ?? fleetResult.refusal;

  return {
    stack,
    config,
    model,
    tier,
    tensorSource: lock ? "lock" : "catalog",
    lock,
    tensors,
    modelBytes,
    host,
    placement,
    fits: placement.fits && refusal === undefined,
    refusal,
    alternatives,
    llamaServerArgs: llamaServerArgs(argsInputs),
    explainedArgs: explainArgs(argsInputs),
    image,
    imageByDriver:
      config.deployment.image === undefined && !split && host.gpus.length > 0
        ? { cuda: catalog.llamaCpp.images.cuda, cuda13: catalog.llamaCpp.images.cuda13 }
        : undefined,
    shards,
    projection,
    cost,
    costOmitted: cost ? undefined : COST_OMITTED_REASON,
    seedChecks: cluster ? [] : seedChecks(catalog, placement, projection, cost, speedInputs),
    cluster,
    fleet: fleetResult.fleet,
    teams: fleetResult.teams,
    listen: { address: argsInputs.bindAddress, port: argsInputs.port },
    hostConfigPath: hostConfigPathOf(cluster, fleetResult.fleet),
    fleetServing,
  };
}

/** The stack's lock for a repo and tier: options.lock when given, else deployment.lockFile or the conventional path. */
function lockReader(
  stack: string,
  config: StackConfig,
  options: PlanOptions,
): (repo: string, tierName: string) => ManifestLock | undefined {
  return (repo, tierName) => {
    if (options.lock !== undefined) return options.lock ?? undefined;
    const lockPath = resolve(REPO_ROOT, config.deployment.lockFile ?? conventionalLockPath(repo, tierName));
    if (config.deployment.lockFile && !existsSync(lockPath)) {
      throw new ConfigError(stack, [
        `deployment.lockFile: found "${config.deployment.lockFile}", which does not exist; allowed: a lock written by \`npm run lock -- --stack ${stack}\``,
      ]);
    }
    return readLock(lockPath, { stack, field: config.deployment.lockFile ? "deployment.lockFile" : "lock" });
  };
}

function planContext(
  stack: string,
  config: StackConfig,
  catalog: Catalog,
  model: ModelEntry,
  tier: Tier,
  lock: ManifestLock | undefined,
): PlanContext {
  const host = resolveHost(stack, config.host, catalog);
  const split = config.cluster ? planCluster(stack, config, host, catalog) : undefined;
  const tensors = lock ? tensorsFromLock(lock) : tensorsFromArchitecture(model.architecture, tier);
  const serving = servingShape(config);
  const decodeDepthTokens = Math.min(config.projection.decodeDepthTokens, serving.contextPerSlot);
  const placementFor = (candidateTensors: readonly TensorInfo[], contextPerSlot: number) =>
    choose({
      arch: model.architecture,
      tensors: candidateTensors,
      host,
      serving: { ...serving, contextPerSlot },
      catalog,
      decodeDepthTokens,
      ttftPromptTokens: config.projection.ttftPromptTokens,
      ...(split ? { rpc: split.rpc } : {}),
    });
  return { stack, config, catalog, model, tier, lock, host, split, tensors, serving, decodeDepthTokens, placementFor };
}

/** The serving shape choose() sizes: context per slot, slots, KV cache type and the stack's llama-server knobs. */
function servingShape(config: StackConfig): PlacementInputs["serving"] {
  const knobs = config.serving;
  return {
    contextPerSlot: config.serving.contextLength,
    slots: config.serving.parallelSlots,
    kvCacheType: config.serving.kvCacheType,
    knobs: {
      batch: knobs.batch,
      ubatch: knobs.ubatch,
      threads: knobs.threads,
      threadsBatch: knobs.threadsBatch,
      opOffload: knobs.opOffload,
      numa: knobs.numa,
      cacheTypeV: knobs.vCacheType,
    },
  };
}

function shardPlan(model: ModelEntry, tier: Tier, lock: ManifestLock | undefined): ShardPlan {
  const paths = lock ? lock.shards.map((shard) => shard.path) : shardPaths(model, tier);
  return {
    count: paths.length,
    paths,
    verified: Boolean(lock) || tier.shards.verified,
    firstShard: paths.find((path) => /-00001-of-\d{5}\.gguf$/.test(path)) ?? paths[0]!,
    source: lock ? "lock" : "catalog",
  };
}

function argsInputsFor(context: PlanContext, placement: Placement, shards: ShardPlan): ArgsInputs {
  const { config, model, host, serving } = context;
  return {
    model,
    host,
    placement,
    modelPath: `${CONTAINER_MODEL_DIR}/${shards.firstShard}`,
    apiKeyFile: CONTAINER_API_KEY_FILE,
    // Behind the TLS front door (any non-loopback bindAddress) llama-server listens on loopback.
    bindAddress: llamaServerListen(config.serving).address,
    port: llamaServerListen(config.serving).port,
    webUi: config.serving.webUi,
    contextPerSlot: serving.contextPerSlot,
    slots: serving.slots,
    kvCacheType: serving.kvCacheType,
  };
}

/** The stack's own image, else the RPC build for a split, the CUDA build with GPUs, the CPU build otherwise. */
function imageFor(context: PlanContext): string {
  const { config, catalog, host, split } = context;
  return (
    config.deployment.image ??
    (split
      ? catalog.llamaCpp.images.rpc
      : host.gpus.length > 0
        ? catalog.llamaCpp.images.cuda
        : catalog.llamaCpp.images.cpu)
  );
}

/** Why the placement is refused (it does not fit, or a split that fits is the wrong answer), and the split's plan. */
function judgePlacement(
  context: PlanContext,
  placement: Placement,
  cost: CostEstimate | undefined,
  options: PlanOptions,
): { refusal: string | undefined; alternatives: Plan["alternatives"]; cluster: ClusterPlan | undefined } {
  const { refusal, alternatives } = misfit(context, placement, options);
  const cluster = context.split?.finish(placement);
  if (cluster && refusal === undefined) {
    // A split that fits can still be the wrong answer: one host would do, or it is too slow.
    return { refusal: splitRefusal(context, cluster, placement.estimate.projection, cost), alternatives, cluster };
  }
  return { refusal, alternatives, cluster };
}

/**
 * A placement that does not fit: the refusal, and (unless options.alternatives is false) the tiers and context that
 * would.
 */
function misfit(
  context: PlanContext,
  placement: Placement,
  options: PlanOptions,
): { refusal: string | undefined; alternatives: Plan["alternatives"] } {
  const { stack, config, catalog, model, tier, host, tensors, serving, decodeDepthTokens, placementFor } = context;
  if (placement.fits) return { refusal: undefined, alternatives: undefined };
  if (options.alternatives === false) {
    return {
      refusal: `${model.name} ${tier.name} does not fit on ${host.label} at ${serving.contextPerSlot} tokens × ${serving.slots} slot(s): ${shortDevices(placement)}.`,
      alternatives: undefined,
    };
  }
  const tiersThatFit = model.tiers
    .filter(
      (candidate) => placementFor(tensorsFromArchitecture(model.architecture, candidate), serving.contextPerSlot).fits,
    )
    .map((candidate) => candidate.name);
  const maxContext = maxContextThatFits(model, tensors, placementFor);
  let refusal =
    `${model.name} ${tier.name} does not fit on ${host.label} at ${serving.contextPerSlot} tokens × ${serving.slots} slot(s): ` +
    shortDevices(placement) +
    `. Tiers that fit this host at this context: ${tiersThatFit.length > 0 ? tiersThatFit.join(", ") : "none"}. ` +
    (maxContext !== null
      ? `${tier.name} fits with at most ${maxContext} tokens per slot.`
      : `${tier.name} does not fit at any context length: its weights alone exceed the host.`);
  if (tiersThatFit.length === 0)
    refusal += ` ${smallestFit(model, serving, decodeDepthTokens, config.projection.ttftPromptTokens, catalog, stack)}`;
  return { refusal, alternatives: { tiersThatFit, maxContextPerSlotThatFits: maxContext } };
}

/**
 * The largest context per slot (a multiple of 256) at which the stack's tier fits, by binary search; null when none
 * does.
 */
function maxContextThatFits(
  model: ModelEntry,
  tensors: readonly TensorInfo[],
  placementFor: PlanContext["placementFor"],
): number | null {
  let maxContext: number | null = null;
  for (let low = 256, high = model.architecture.contextLength; low <= high;) {
    const middle = Math.floor((low + high) / 2 / 256) * 256 || 256;
    if (placementFor(tensors, middle).fits) {
      maxContext = middle;
      low = middle + 256;
    } else high = middle - 256;
  }
  return maxContext;
}

function splitRefusal(
  context: PlanContext,
  cluster: ClusterPlan,
  projection: Projection,
  cost: CostEstimate | undefined,
): string | undefined {
  const { stack, config, catalog, model, tier, host, tensors, serving, decodeDepthTokens } = context;
  return splitVerdict({
    stack,
    config,
    model,
    tier,
    cluster,
    projection,
    onHeadAlone: () =>
      choose({
        arch: model.architecture,
        tensors,
        host,
        serving,
        catalog,
        decodeDepthTokens,
        ttftPromptTokens: config.projection.ttftPromptTokens,
      }),
    catalogHosts: () =>
      catalogHostsHolding(
        model,
        tensors,
        serving,
        decodeDepthTokens,
        config.projection.ttftPromptTokens,
        catalog,
        stack,
        config.costs,
      ),
    splitMonthlyUsd: cost?.monthlyUsd,
  });
}

/** The fleet and teams (planFleet) and, with a fleet, where its gateway, replicas and monitoring run. */
function planFleetOf(
  context: PlanContext,
  placement: Placement,
  modelBytes: number,
  argsInputs: ArgsInputs,
): { fleetResult: FleetResult; fleetServing: FleetServing | undefined } {
  const { stack, config, host } = context;
  const projection = placement.estimate.projection;
  const fleetResult = planFleet({
    config,
    host,
    modelBytes,
    speedInputs: placement.estimate.speedInputs,
    slots: placement.estimate.settings.slots,
    prefillTokensPerSecond: projection.prefillTokensPerSecond,
  });
  const fleetServing = fleetResult.fleet
    ? planFleetServing({
        stack,
        config,
        fleet: fleetResult.fleet,
        teams: fleetResult.teams,
        argsFor: (listen) => llamaServerArgs({ ...argsInputs, bindAddress: listen.address, port: listen.port }),
        projectedDecodeTokensPerSecond: projection.decodeTokensPerSecond,
        slotsPerReplica: placement.estimate.settings.slots,
      })
    : undefined;
  return { fleetResult, fleetServing };
}

/** The stack key that describes the plan's host: the split's head, the first replica, or "host". */
function hostConfigPathOf(cluster: ClusterPlan | undefined, fleet: FleetPlan | undefined): string {
  return cluster ? `hosts[${cluster.head.index}]` : fleet?.hosts[0] ? `hosts[${fleet.hosts[0].index}]` : "host";
}

/**
 * One replica of a fleet as a plan of its own: the fleet's plan (same model, placement, flags and
 * projection: every replica is one spec) on that replica's host and listener. What the replica's
 * components (HostPrep, GgufShards, LlamaServer) read; no fleet, teams or gateway of its own.
 */
export function replicaPlan(plan: Plan, replica: ReplicaServing): Plan {
  const host = plan.config.host;
  if (host.kind !== "bare-metal")
    throw new Error(`internal: stack ${plan.stack}: replica ${replica.id} of a fleet on a ${host.kind} host`);
  return {
    ...plan,
    config: { ...plan.config, host: { ...host, ssh: replica.ssh }, fleet: undefined, teams: undefined },
    llamaServerArgs: [...replica.llamaServerArgs],
    listen: { ...replica.listen },
    hostConfigPath: replica.configPath,
    fleet: undefined,
    teams: undefined,
    fleetServing: undefined,
  };
}

/** Each device that does not hold what is placed on it: what it needs, what it has, by how much it is short. */
export function shortDevices(placement: Pick<Placement, "memory">): string {
  return placement.memory
    .filter((device) => !device.fits)
    .map(
      (device) =>
        `${device.device} (${device.label}) needs ${formatBytes(device.plannedBytes)}, has ${formatBytes(device.capacityBytes)}, short by ${formatBytes(device.plannedBytes - device.capacityBytes)}`,
    )
    .join("; ");
}

/** A catalog cloud instance as a host, as a stack naming only its type would get it. */
function catalogCloudHost(stack: string, instance: Catalog["instances"][number], catalog: Catalog): HostSpec {
  return resolveHost(
    stack,
    hostSchema.parse({ kind: "cloud", provider: instance.provider, instanceType: instance.id }),
    catalog,
  );
}

/**
 * Every catalog cloud instance that holds the tier alone at the stack's context and slots, with its projected decode.
 */
function catalogHostsHolding(
  model: ModelEntry,
  tensors: readonly TensorInfo[],
  serving: PlacementInputs["serving"],
  decodeDepthTokens: number,
  ttftPromptTokens: number,
  catalog: Catalog,
  stack: string,
  costs: StackConfig["costs"],
): { name: string; decodeTokensPerSecond: number; monthlyUsd: number }[] {
  return catalog.instances.flatMap((instance) => {
    const host = catalogCloudHost(stack, instance, catalog);
    const placement = choose({
      arch: model.architecture,
      tensors,
      host,
      serving,
      catalog,
      decodeDepthTokens,
      ttftPromptTokens,
    });
    if (!placement.fits) return [];
    // With costs stated, the instance is priced as a stack of its own would be (estimateCost: hours
    // and the model volume; the stack's own cloud price override is not the instance's); without,
    // its on-demand hours alone.
    const monthlyUsd = costs
      ? estimateCost({ ...costs, cloud: undefined }, host, totalBytes(tensors), placement.estimate.projection)
          .monthlyUsd
      : instance.usdPerHour * HOURS_PER_MONTH;
    return [
      {
        name: `${instance.provider} ${instance.id}`,
        decodeTokensPerSecond: placement.estimate.projection.decodeTokensPerSecond,
        monthlyUsd,
      },
    ];
  });
}

/** Whether a host is the build a seed claim describes: GPUs, memory family, RAM and cores. */
export function matchesSeedHardware(hardware: SeedHardware, host: HostSpec): boolean {
  const within = (value: number, range: { min: number; max: number }) => value >= range.min && value <= range.max;
  if (host.gpus.length !== hardware.gpus.count) return false;
  if (hardware.gpus.model !== undefined && host.gpus.some((gpu) => gpu.catalogId !== hardware.gpus.model)) return false;
  if (hardware.memoryFamily !== undefined && !(host.memory.kind ?? "").startsWith(hardware.memoryFamily)) return false;
  if (!within(host.memory.totalBytes / 1e9, hardware.ramGB)) return false;
  return hardware.cores === undefined || within(host.cpu.cores, hardware.cores);
}

function seedChecks(
  catalog: Catalog,
  placement: Placement,
  projection: Projection,
  cost: CostEstimate | undefined,
  speedInputs: SpeedInputs,
): SeedCheck[] {
  const checks: SeedCheck[] = [];
  const host = speedInputs.host;
  for (const claim of catalog.claims) {
    if (claim.appliesTo !== "any" && claim.appliesTo !== placement.mode) continue;
    // Only a host that is the build the claim describes is compared with it.
    const hardware = claim.hardware
      .map((id) => catalog.seedHardware.find((entry) => entry.id === id)!)
      .find((entry) => matchesSeedHardware(entry, host));
    if (!hardware) continue;
    const base = { claim: claim.text, hardware: hardware.description };
    if (claim.decodeTokensPerSecond) {
      const value = projection.decodeTokensPerSecond;
      checks.push({
        ...base,
        seedFigure: `${claim.decodeTokensPerSecond.low}–${claim.decodeTokensPerSecond.high} tok/s`,
        kitFigure: `${value.toFixed(1)} tok/s at depth ${projection.decodeDepthTokens}`,
        agrees: value >= claim.decodeTokensPerSecond.low && value <= claim.decodeTokensPerSecond.high,
        why: projection.decodeTraffic
          .map(
            (t) =>
              `${t.device} ${(t.bytesPerToken / 1e9).toFixed(2)} GB/token at ${(t.effectiveBandwidth / 1e9).toFixed(0)} GB/s`,
          )
          .join(" + "),
      });
    }
    if (claim.bandwidthGBps !== undefined) {
      checks.push({ ...base, ...bandwidthCheck(catalog, claim.bandwidthGBps, speedInputs) });
    }
    if (claim.ttftSeconds !== undefined) {
      checks.push({
        ...base,
        seedFigure: formatDuration(claim.ttftSeconds),
        kitFigure: formatDuration(projection.ttftSeconds),
        agrees: Math.abs(projection.ttftSeconds / claim.ttftSeconds - 1) < 0.25,
        why: projection.prefillBasis,
      });
    }
    // Without costs there is no break-even to compare.
    if (claim.tokensPerMonth !== undefined && cost) {
      const breakEven = cost.breakEvenTokensPerMonth;
      checks.push({
        ...base,
        seedFigure: `${(claim.tokensPerMonth / 1e6).toFixed(0)}M tokens/month pays off`,
        kitFigure:
          breakEven === null ? "no break-even within capacity" : `${(breakEven / 1e6).toFixed(0)}M tokens/month`,
        agrees: breakEven !== null && breakEven <= claim.tokensPerMonth,
        why: `API at this mix: ${(claim.tokensPerMonth / 1e6).toFixed(0)}M tokens cost $${((claim.tokensPerMonth / 1e6) * cost.apiUsdPerMillionTokensAtMix).toFixed(0)}/month vs the host's $${cost.monthlyUsd.toFixed(0)}/month; ${cost.breakEvenReason}`,
      });
    }
  }
  return checks;
}

/** The seed's RAM bandwidth figure beside this host's own: its channels, memory kind, peak and what is achievable. */
function bandwidthCheck(
  catalog: Catalog,
  claimGBps: number,
  speedInputs: SpeedInputs,
): Pick<SeedCheck, "seedFigure" | "kitFigure" | "agrees" | "why"> {
  const memory = speedInputs.host.memory;
  const achievableGBps = memory.achievableBandwidth / 1e9;
  const decodeAtClaim = cpuDecodeAtBandwidth(speedInputs, claimGBps * 1e9);
  const megaTransfers = memory.kind ? memoryKindMegaTransfers(catalog, memory.kind) : undefined;
  const fraction = catalog.efficiency.cpu.achievableFractionOfPeak.value;
  const hostText =
    memory.peakBandwidth !== undefined && memory.channels !== undefined && megaTransfers !== undefined
      ? `this host has ${memory.channels} channel(s) of ${memory.kind} = ${memory.channels} × ${megaTransfers} MT/s × 8 B = ${(memory.peakBandwidth / 1e9).toFixed(1)} GB/s peak, ${achievableGBps.toFixed(0)} GB/s achievable; ${claimGBps} GB/s is what about ${(claimGBps / ((megaTransfers * 8) / 1000) / fraction).toFixed(1)} channel(s) of ${memory.kind} deliver at the ${fraction} achievable fraction`
      : `this host: ${memory.basis}`;
  return {
    seedFigure: `${claimGBps} GB/s`,
    kitFigure: `${achievableGBps.toFixed(0)} GB/s achievable here`,
    // Within a quarter, as the TTFT check: both are figures about the same quantity.
    agrees: Math.abs(achievableGBps / claimGBps - 1) < 0.25,
    why: `at ${claimGBps} GB/s this tier would decode ${decodeAtClaim.toFixed(1)} tok/s here; ${hostText}`,
  };
}

/**
 * Where no tier fits: the smallest tier, and the catalog's smallest cloud instance (by memory, then
 * price) that holds it at the stack's context and slots, planned by the same choose().
 */
function smallestFit(
  model: ModelEntry,
  serving: PlacementInputs["serving"],
  decodeDepthTokens: number,
  ttftPromptTokens: number,
  catalog: Catalog,
  stack: string,
): string {
  const bySize = [...model.tiers]
    .map((tier) => ({ tier, tensors: tensorsFromArchitecture(model.architecture, tier) }))
    .sort((a, b) => totalBytes(a.tensors) - totalBytes(b.tensors));
  const smallest = bySize[0]!;
  const instances = [...catalog.instances].sort((a, b) => a.memory - b.memory || a.usdPerHour - b.usdPerHour);
  const holder = instances.find((instance) => {
    const host = catalogCloudHost(stack, instance, catalog);
    return choose({
      arch: model.architecture,
      tensors: smallest.tensors,
      host,
      serving,
      catalog,
      decodeDepthTokens,
      ttftPromptTokens,
    }).fits;
  });
  return (
    `The smallest tier, ${smallest.tier.name}, is ${formatBytes(totalBytes(smallest.tensors))}; ` +
    (holder
      ? `the smallest catalog host that holds it is ${holder.provider} ${holder.id} (${formatBytes(holder.memory)} RAM${holder.gpus ? `, ${holder.gpus.count} × ${holder.gpus.model}` : ""}).`
      : "no catalog host holds it (catalog/cloud-instances.yaml).")
  );
}
