/**
 * Composes the estimators into one Plan: config → host → tensors → placement → memory → args →
 * projections → cost, plus the verdict and, when the stack does not fit, what would.
 * Pure: no Pulumi, no network, no clock. The CLI prints it; the Pulumi components carry it out.
 */
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { explainArgs, llamaServerArgs, type ExplainedArg } from "./args";
import { findModelByRepo, loadCatalog, TENSOR_CLASSES, type Catalog, type ModelEntry, type Tier } from "./catalog";
import type { GgmlTypeName } from "./ggml-types";
import type { StackConfig } from "./config";
import { ConfigError } from "./errors";
import { resolveHost, type HostSpec } from "./host";
import { architectureFromMetadata, conventionalLockPath, readLock, tensorsFromLock, type ManifestLock } from "./lock";
import { planPlacement, type Placement } from "./offload";
import { cpuDecodeAtBandwidth, project, type Projection, type SpeedInputs } from "./speed";
import { estimateCost, type CostEstimate } from "./cost";
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
  modelBytes: number;
  host: HostSpec;
  placement: Placement;
  fits: boolean;
  refusal: string | undefined;
  alternatives: { tiersThatFit: string[]; maxContextPerSlotThatFits: number | null } | undefined;
  llamaServerArgs: string[];
  explainedArgs: ExplainedArg[];
  image: string;
  shards: ShardPlan;
  projection: Projection;
  cost: CostEstimate;
  seedChecks: SeedCheck[];
}

function shardPaths(model: ModelEntry, tier: Tier): string[] {
  const count = tier.shards.count;
  const pad = (n: number) => String(n).padStart(5, "0");
  return Array.from({ length: count }, (_, i) =>
    model.shardPathPattern.replaceAll("{tier}", tier.name).replace("{index}", pad(i + 1)).replace("{count}", pad(count)),
  );
}

/**
 * The model and tier: from the catalog, or — for a deepseek2 repo the catalog does not list — from
 * its lock alone (architecture from the GGUF metadata, generic serving defaults).
 */
function resolveModel(stack: string, config: StackConfig, catalog: Catalog, lockFor: (repo: string, tier: string) => ManifestLock | undefined): { model: ModelEntry; tier: Tier; lock: ManifestLock | undefined } {
  let model = findModelByRepo(catalog, config.model.repo);
  if (!model) {
    const lock = lockFor(config.model.repo, config.model.tier);
    if (!lock) {
      throw new ConfigError(stack, [`model.repo: found "${config.model.repo}"; allowed: ${catalog.models.map((entry) => entry.repo).join(", ")}, or any deepseek2 GGUF repo with a lock (\`npm run lock -- --stack ${stack}\`)`]);
    }
    model = modelFromLock(lock);
  }
  const tier = model.tiers.find((entry) => entry.name === config.model.tier);
  if (!tier) {
    throw new ConfigError(stack, [`model.tier: found "${config.model.tier}"; allowed: ${model.tiers.map((entry) => entry.name).join(", ")}`]);
  }
  if (config.serving.contextLength > model.architecture.contextLength) {
    throw new ConfigError(stack, [`serving.contextLength: found ${config.serving.contextLength}; allowed: 256 to ${model.architecture.contextLength} (${model.name}'s trained context)`]);
  }
  const lock = lockFor(model.repo, tier.name);
  if (lock && (lock.tier !== tier.name || lock.repo.toLowerCase() !== model.repo.toLowerCase())) {
    throw new ConfigError(stack, [`deployment.lockFile: found a lock for ${lock.repo} ${lock.tier}; allowed: a lock for ${model.repo} ${tier.name}`]);
  }
  return { model, tier, lock };
}

function modelFromLock(lock: ManifestLock): ModelEntry {
  const tensors = tensorsFromLock(lock);
  const commonType = (cls: TensorInfo["cls"], fallback: GgmlTypeName): GgmlTypeName => {
    const counts = new Map<GgmlTypeName, number>();
    for (const tensor of tensors.filter((t) => t.cls === cls)) counts.set(tensor.type, (counts.get(tensor.type) ?? 0) + tensor.bytes);
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
}

export function buildPlan(stack: string, config: StackConfig, options: PlanOptions = {}): Plan {
  const catalog = options.catalog ?? loadCatalog();
  const lockFor = (repo: string, tierName: string): ManifestLock | undefined => {
    if (options.lock !== undefined) return options.lock ?? undefined;
    const lockPath = resolve(REPO_ROOT, config.deployment.lockFile ?? conventionalLockPath(repo, tierName));
    if (config.deployment.lockFile && !existsSync(lockPath)) {
      throw new ConfigError(stack, [`deployment.lockFile: found "${config.deployment.lockFile}", which does not exist; allowed: a lock written by \`npm run lock -- --stack ${stack}\``]);
    }
    return readLock(lockPath);
  };
  const { model, tier, lock } = resolveModel(stack, config, catalog, lockFor);
  const host = resolveHost(stack, config.host, catalog);
  const tensors = lock ? tensorsFromLock(lock) : tensorsFromArchitecture(model.architecture, tier);
  const serving = { contextPerSlot: config.serving.contextLength, slots: config.serving.parallelSlots, kvCacheType: config.serving.kvCacheType };
  const placementFor = (candidateTensors: readonly TensorInfo[], contextPerSlot: number) =>
    planPlacement({ arch: model.architecture, tensors: candidateTensors, host, serving: { ...serving, contextPerSlot }, release: catalog.llamaCpp, efficiency: catalog.efficiency });
  const placement = placementFor(tensors, serving.contextPerSlot);

  const paths = lock ? lock.shards.map((shard) => shard.path) : shardPaths(model, tier);
  const shards: ShardPlan = { count: paths.length, paths, verified: Boolean(lock) || tier.shards.verified, firstShard: paths[0]!, source: lock ? "lock" : "catalog" };
  const argsInputs = {
    model,
    host,
    placement,
    modelPath: `${CONTAINER_MODEL_DIR}/${shards.firstShard}`,
    apiKeyFile: CONTAINER_API_KEY_FILE,
    bindAddress: config.serving.bindAddress,
    port: config.serving.port,
    contextPerSlot: serving.contextPerSlot,
    slots: serving.slots,
    kvCacheType: serving.kvCacheType,
  };
  const speedInputs: SpeedInputs = {
    arch: model.architecture,
    tensors,
    host,
    placement,
    kvCacheType: serving.kvCacheType,
    decodeDepthTokens: Math.min(config.projection.decodeDepthTokens, serving.contextPerSlot),
    ttftPromptTokens: config.projection.ttftPromptTokens,
    contextPerSlot: serving.contextPerSlot,
    catalog,
  };
  const projection = project(speedInputs);
  const modelBytes = totalBytes(tensors);
  const cost = estimateCost(config.costs, host, modelBytes, projection);
  const image = config.deployment.image ?? (host.gpus.length > 0 ? catalog.llamaCpp.images.cuda : catalog.llamaCpp.images.cpu);

  let refusal: string | undefined;
  let alternatives: Plan["alternatives"];
  if (!placement.fits) {
    const tiersThatFit = model.tiers
      .filter((candidate) => placementFor(tensorsFromArchitecture(model.architecture, candidate), serving.contextPerSlot).fits)
      .map((candidate) => candidate.name);
    let maxContext: number | null = null;
    for (let low = 256, high = model.architecture.contextLength; low <= high; ) {
      const middle = Math.floor((low + high) / 2 / 256) * 256 || 256;
      if (placementFor(tensors, middle).fits) {
        maxContext = middle;
        low = middle + 256;
      } else high = middle - 256;
    }
    alternatives = { tiersThatFit, maxContextPerSlotThatFits: maxContext };
    const short = placement.memory.filter((device) => !device.fits);
    refusal =
      `${model.name} ${tier.name} does not fit on ${host.label} at ${serving.contextPerSlot} tokens × ${serving.slots} slot(s): ` +
      short.map((device) => `${device.device} (${device.label}) needs ${formatBytes(device.plannedBytes)}, has ${formatBytes(device.capacityBytes)}, short by ${formatBytes(device.plannedBytes - device.capacityBytes)}`).join("; ") +
      `. Tiers that fit this host at this context: ${tiersThatFit.length > 0 ? tiersThatFit.join(", ") : "none"}. ` +
      (maxContext !== null ? `${tier.name} fits with at most ${maxContext} tokens per slot.` : `${tier.name} does not fit at any context length: its weights alone exceed the host.`);
  }

  return {
    stack,
    config,
    model,
    tier,
    tensorSource: lock ? "lock" : "catalog",
    lock,
    modelBytes,
    host,
    placement,
    fits: placement.fits,
    refusal,
    alternatives,
    llamaServerArgs: llamaServerArgs(argsInputs),
    explainedArgs: explainArgs(argsInputs),
    image,
    shards,
    projection,
    cost,
    seedChecks: seedChecks(catalog, placement, projection, cost, speedInputs),
  };
}

function seedChecks(catalog: Catalog, placement: Placement, projection: Projection, cost: CostEstimate, speedInputs: SpeedInputs): SeedCheck[] {
  const checks: SeedCheck[] = [];
  for (const claim of catalog.claims) {
    if (claim.appliesTo !== "any" && claim.appliesTo !== placement.mode) continue;
    if (claim.decodeTokensPerSecond) {
      const value = projection.decodeTokensPerSecond;
      checks.push({
        claim: claim.text,
        seedFigure: `${claim.decodeTokensPerSecond.low}–${claim.decodeTokensPerSecond.high} tok/s`,
        kitFigure: `${value.toFixed(1)} tok/s at depth ${projection.decodeDepthTokens}`,
        agrees: value >= claim.decodeTokensPerSecond.low && value <= claim.decodeTokensPerSecond.high,
        why: projection.decodeTraffic.map((t) => `${t.device} ${(t.bytesPerToken / 1e9).toFixed(2)} GB/token at ${(t.effectiveBandwidth / 1e9).toFixed(0)} GB/s`).join(" + "),
      });
    }
    if (claim.bandwidthGBps !== undefined) {
      const value = cpuDecodeAtBandwidth(speedInputs, claim.bandwidthGBps * 1e9);
      checks.push({
        claim: claim.text,
        seedFigure: `${claim.bandwidthGBps} GB/s`,
        kitFigure: `${(speedInputs.host.memory.achievableBandwidth / 1e9).toFixed(0)} GB/s achievable here`,
        agrees: false,
        why: `at ${claim.bandwidthGBps} GB/s this tier would decode ${value.toFixed(1)} tok/s, not ~10: two-channel desktop figures; a 12-channel socket peaks at ${((speedInputs.host.memory.peakBandwidth ?? 0) / 1e9).toFixed(0)} GB/s`,
      });
    }
    if (claim.ttftSeconds !== undefined) {
      checks.push({
        claim: claim.text,
        seedFigure: formatDuration(claim.ttftSeconds),
        kitFigure: formatDuration(projection.ttftSeconds),
        agrees: Math.abs(projection.ttftSeconds / claim.ttftSeconds - 1) < 0.25,
        why: projection.prefillBasis,
      });
    }
    if (claim.tokensPerMonth !== undefined) {
      const breakEven = cost.breakEvenTokensPerMonth;
      checks.push({
        claim: claim.text,
        seedFigure: `${(claim.tokensPerMonth / 1e6).toFixed(0)}M tokens/month pays off`,
        kitFigure: breakEven === null ? "no break-even within capacity" : `${(breakEven / 1e6).toFixed(0)}M tokens/month`,
        agrees: breakEven !== null && breakEven <= claim.tokensPerMonth,
        why: `API at this mix: 50M tokens cost $${((claim.tokensPerMonth / 1e6) * cost.apiUsdPerMillionTokensAtMix).toFixed(0)}/month vs the host's $${cost.monthlyUsd.toFixed(0)}/month; ${cost.breakEvenReason}`,
      });
    }
  }
  return checks;
}
