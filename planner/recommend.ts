/**
 * `npm run plan -- --recommend`: which hardware to buy or rent for a model and tier. Enumerates the
 * catalog's cloud instances and the bare-metal builds its platforms, DIMM sizes and GPUs make (priced
 * by catalog/prices.yaml only), turns each into a StackConfig and plans it with buildPlan — the same
 * planner `npm run plan -- --stack` runs, so a recommended build written as a stack plans unchanged.
 * Pure apart from reading the catalog: no network, no clock except the search's own timing.
 */
import { Document, isMap, isScalar, type Node as YamlNode } from "yaml";
import {
  findModelByRepo,
  loadCatalog,
  loadPrices,
  type Catalog,
  type CpuPlatformEntry,
  type ModelEntry,
  type Prices,
  type Tier,
} from "./catalog";
import { parseStackConfig, type StackConfig } from "./config";
import { estimateCost } from "./cost";
import { resolveHost } from "./host";
import { buildPlan, shortDevices, type Plan } from "./plan";
import { tensorsFromArchitecture, totalBytes } from "./tensors";
import { formatGiB, formatTokens, formatUsd, GiB } from "./units";

export type HostKind = "bare-metal" | "cloud";

/**
 * The seed's API prices as every stack's costs.api states them, and the seed's "fifty million tokens
 * monthly" at the 3:1 input:output mix and 50% utilization of stacks/Pulumi.cpu-ddr5.yaml: the break-even
 * and cost per 1M tokens of every candidate are computed against the same usage.
 */
export const RECOMMEND_API = { usdPerMillionInput: 0.95, usdPerMillionOutput: 4.0 } as const;
export const RECOMMEND_USAGE = { tokensPerMonth: 50_000_000, mix: { input: 3, output: 1 }, utilization: 0.5 } as const;
/**
 * Decode is quoted with 4K tokens in context, as stacks/Pulumi.cpu-ddr5.yaml: a coding-assistant turn, not an empty
 * context.
 */
export const RECOMMEND_DECODE_DEPTH = 4096;
/** The cloud volume price every cloud stack uses (costs.cloud.storageUsdPerGbMonth's default). */
const STORAGE_USD_PER_GB_MONTH = 0.08;
/** GPU counts tried per catalog GPU: powers of two, so each card gets an equal share of the lanes (x16, x8, x4). */
const GPU_COUNTS = [1, 2, 4, 8] as const;
/**
 * The narrowest link a card is given: x4 is what stacks/Pulumi.rtx3090x4.yaml runs; below it the search does not go.
 */
const MIN_LANES_PER_GPU = 4;
/** Documentation addresses (RFC 5737): a written cloud stack must name its own networks before `up`. */
const PLACEHOLDER_CIDRS = ["203.0.113.0/24"];
/** Where a recommended cloud stack runs: catalog/cloud-instances.yaml's prices are us-east-1's. */
const CLOUD_REGION = "us-east-1";
/**
 * Stack names a written stack may have: Pulumi's characters, starting with a letter or digit, so it never reads as an
 * option or a hidden file.
 */
export const WRITABLE_STACK_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$/;

export interface RecommendRequest {
  /** A catalog model's repo (or id). */
  model: string;
  /** A tier name, or "any": every tier of the model. */
  tier: string;
  minDecode: number | undefined;
  contextLength: number;
  slots: number;
  maxMonthlyUsd: number | undefined;
  kind: HostKind | "any";
  usdPerKwh: number;
  /** How many recommendations to print. */
  top: number;
}

/** The kimi-kit:host value of a bare-metal candidate, as the written stack carries it. */
export interface BareMetalHostValue {
  kind: "bare-metal";
  name: string;
  cpu: { platform: string; sockets: number };
  memory: { total: string };
  gpus?: { model: string; count: number }[];
  pcie?: { gen: number; lanes: number };
}

export interface CloudHostValue {
  kind: "cloud";
  provider: "aws";
  instanceType: string;
  region: string;
  allowedCidrs: string[];
}

export interface PricedPart {
  item: string;
  count: number;
  usdEach: number;
  wattsEach: number;
  source: string;
}

export interface Candidate {
  kind: HostKind;
  label: string;
  host: BareMetalHostValue | CloudHostValue;
  /** Bare metal: what it is made of, its price and nameplate power; undefined for a cloud instance. */
  build: { priceUsd: number; powerWatts: number; parts: PricedPart[] } | undefined;
  /**
   * Builds that differ only in DIMM size: the same CPU, channels and GPUs, so the same bandwidth and
   * speed. Once one fits a tier, a larger DIMM size of it only costs more, and is not planned.
   */
  group: string;
  dimmGiB: number | undefined;
  ramBytes: number;
  vramBytes: number;
}

export interface Skipped {
  component: string;
  why: string;
}

export type Status = "recommended" | "does-not-fit" | "too-slow" | "over-budget";

/** One candidate host planned for one tier. */
export interface Evaluation {
  candidate: Candidate;
  tier: Tier;
  status: Status;
  /** For a near miss: the constraint it fails, in words. */
  why: string | undefined;
  plan: Plan;
  monthlyUsd: number;
}

export interface Recommendation {
  request: RecommendRequest;
  model: ModelEntry;
  tiers: Tier[];
  recommended: Evaluation[];
  nearMisses: Evaluation[];
  skipped: Skipped[];
  counts: {
    hosts: number;
    pairs: number;
    planned: number;
    /** Ruled out before planning: the weights alone exceed RAM + VRAM. */
    tooSmall: number;
    /** Not planned: the same build with smaller DIMMs already fits that tier. */
    largerDimms: number;
    /** Not planned because enough cheaper ones were found. */
    notNeeded: number;
  };
  seconds: number;
  /** One line when nothing qualifies: which constraint no catalog host meets, and what would. */
  problem: string | undefined;
  prices: Prices;
}

/** A bad flag value: one line naming the flag, what was found and what is allowed. */
export class RecommendInputError extends Error {}

// ---- the request -------------------------------------------------------------------------------

/** The raw option values of cli/plan.ts that --recommend reads. */
export interface RecommendOptions {
  model?: string;
  tier?: string;
  "min-decode"?: string;
  context?: string;
  slots?: string;
  "max-monthly-usd"?: string;
  kind?: string;
  "usd-per-kwh"?: string;
  top?: string;
}

function numberOption(
  flag: string,
  text: string | undefined,
  allowed: string,
  check: (value: number) => boolean,
): number | undefined {
  if (text === undefined) return undefined;
  // Number("") is 0 and Number("1e3") is 1000: only plain decimals are read as numbers.
  const value = /^\s*\d+(\.\d+)?\s*$/.test(text) ? Number(text) : Number.NaN;
  if (!Number.isFinite(value) || !check(value))
    throw new RecommendInputError(`${flag}: found ${JSON.stringify(text)}; allowed: ${allowed}`);
  return value;
}

/** --model, --tier and --kind: checked first, in that order, as the request names them. */
function requestedModelTierKind(
  options: RecommendOptions,
  catalog: Catalog,
): { model: ModelEntry; tier: string; kind: RecommendRequest["kind"] } {
  if (options.model === undefined)
    throw new RecommendInputError(
      `--model: found nothing; allowed: a catalog model repo (${catalog.models.map((entry) => entry.repo).join(", ")})`,
    );
  const model = findModelByRepo(catalog, options.model);
  if (!model)
    throw new RecommendInputError(
      `--model: found ${JSON.stringify(options.model)}; allowed: a catalog model repo (${catalog.models.map((entry) => entry.repo).join(", ")})`,
    );
  const tier = options.tier ?? "any";
  if (tier !== "any" && !model.tiers.some((entry) => entry.name === tier)) {
    throw new RecommendInputError(
      `--tier: found ${JSON.stringify(tier)}; allowed: any, ${model.tiers.map((entry) => entry.name).join(", ")} (${model.name})`,
    );
  }
  const kind = options.kind ?? "any";
  if (kind !== "any" && kind !== "bare-metal" && kind !== "cloud")
    throw new RecommendInputError(`--kind: found ${JSON.stringify(kind)}; allowed: bare-metal, cloud or any`);
  return { model, tier, kind };
}

/** Checks every --recommend option against the catalog; the first bad one is thrown as one line. */
export function recommendRequest(options: RecommendOptions, catalog: Catalog, prices: Prices): RecommendRequest {
  const { model, tier, kind } = requestedModelTierKind(options, catalog);
  const maxContext = model.architecture.contextLength;
  return {
    model: model.repo,
    tier,
    minDecode: numberOption(
      "--min-decode",
      options["min-decode"],
      "a positive number of tokens per second, like 5 or 7.5",
      (value) => value > 0,
    ),
    contextLength:
      numberOption(
        "--context",
        options.context,
        `a whole number of tokens per slot from 256 to ${maxContext} (${model.name}'s trained context)`,
        (value) => Number.isInteger(value) && value >= 256 && value <= maxContext,
      ) ?? 32768,
    slots:
      numberOption(
        "--slots",
        options.slots,
        "a whole number of parallel slots from 1 to 64",
        (value) => Number.isInteger(value) && value >= 1 && value <= 64,
      ) ?? 1,
    maxMonthlyUsd: numberOption(
      "--max-monthly-usd",
      options["max-monthly-usd"],
      "a positive number of US dollars per month, like 500",
      (value) => value > 0,
    ),
    kind,
    usdPerKwh:
      numberOption(
        "--usd-per-kwh",
        options["usd-per-kwh"],
        "a number of US dollars per kWh from 0 to 5, like 0.15",
        (value) => value <= 5,
      ) ?? prices.electricity.usdPerKwh,
    top:
      numberOption(
        "--top",
        options.top,
        "a whole number of recommendations from 1 to 50",
        (value) => Number.isInteger(value) && value >= 1 && value <= 50,
      ) ?? 5,
  };
}

// ---- the candidates ----------------------------------------------------------------------------

const gpuLabel = (catalog: Catalog, id: string) =>
  catalog.gpus.find((gpu) => gpu.id === id)?.name.replace(/^NVIDIA (GeForce )?/, "") ?? id;
const platformLabel = (platform: CpuPlatformEntry) =>
  platform.name.replace(/ \(.*\)$/, "").replace(/^(AMD|Intel) /, "");

function unpricedWhy(prices: Prices, component: string, fallback: string): string {
  return prices.unpriced.find((entry) => entry.component === component)?.why ?? fallback;
}

/** What the enumeration collects as it goes: the candidates, and what it leaves out for want of a price. */
interface Enumeration {
  catalog: Catalog;
  prices: Prices;
  candidates: Candidate[];
  /** Records the first reason a component is left out; later ones for the same component are dropped. */
  skip: (component: string, why: string) => void;
  unpricedDimms: Map<string, Set<number>>;
}

type PricedGpu = { gpu: Catalog["gpus"][number]; price: Prices["gpus"][number] };
type PlatformBuild = Prices["platforms"][number];

/** One GPU option of a build: none, or `count` of one GPU, each at its share of the lanes. */
interface GpuOption {
  gpus: { model: string; count: number }[];
  lanes: number;
  parts: PricedPart[];
  vramBytes: number;
  label: string;
}

/**
 * Every host the search plans: each catalog cloud instance, and each bare-metal build of a priced
 * platform × socket count (with a priced board) × DIMM size (one per slot, every channel) × GPU option
 * (none, or 1/2/4/8 of one priced catalog GPU where the platform's lanes give each card at least x4).
 * Bounded: mixed GPU models and partly populated channels are not built. What is left out for want
 * of a price is returned in `skipped`.
 */
export function enumerateCandidates(
  catalog: Catalog,
  prices: Prices,
  kind: RecommendRequest["kind"],
): { candidates: Candidate[]; skipped: Skipped[] } {
  const skipped = new Map<string, string>();
  const enumeration: Enumeration = {
    catalog,
    prices,
    candidates: [],
    skip: (component, why) => skipped.has(component) || skipped.set(component, why),
    unpricedDimms: new Map<string, Set<number>>(),
  };
  if (kind !== "cloud") addBareMetalCandidates(enumeration);
  if (kind !== "bare-metal") enumeration.candidates.push(...cloudCandidates(catalog));
  // One line per DIMM kind: the sizes tried that have no price.
  for (const [kind, sizes] of enumeration.unpricedDimms)
    enumeration.skip(
      `${kind} ${[...sizes].sort((x, y) => x - y).join(", ")} GiB`,
      `no price for these DIMM sizes in catalog/prices.yaml dimms`,
    );
  return {
    candidates: enumeration.candidates,
    skipped: [...skipped.entries()].map(([component, why]) => ({ component, why })),
  };
}

/** Every bare-metal build of every priced platform and socket count; an unpriced platform is skipped. */
function addBareMetalCandidates(enumeration: Enumeration): void {
  const { catalog, prices, skip } = enumeration;
  const pricedGpus = catalog.gpus.flatMap((gpu) => {
    const price = prices.gpus.find((entry) => entry.gpu === gpu.id);
    if (!price) skip(`gpu ${gpu.id}`, unpricedWhy(prices, `gpu ${gpu.id}`, "no price in catalog/prices.yaml gpus"));
    return price ? [{ gpu, price }] : [];
  });
  for (const platform of catalog.cpuPlatforms) {
    const build = prices.platforms.find((entry) => entry.platform === platform.id);
    if (!build?.price || !build.power) {
      skip(
        `platform ${platform.id}`,
        unpricedWhy(prices, `platform ${platform.id}`, "no price in catalog/prices.yaml platforms"),
      );
      continue;
    }
    for (const sockets of build.sockets) addSocketCandidates(enumeration, platform, build, sockets, pricedGpus);
  }
}

/** The builds of one platform at one socket count: every priced DIMM size × every GPU option. */
function addSocketCandidates(
  enumeration: Enumeration,
  platform: CpuPlatformEntry,
  build: PlatformBuild,
  sockets: number,
  pricedGpus: PricedGpu[],
): void {
  const { prices, skip, unpricedDimms } = enumeration;
  const board = prices.boards.find((entry) => entry.socket === build.socket && entry.sockets === sockets);
  const base = prices.base.find((entry) => entry.socket === build.socket);
  if (!board) {
    skip(
      `${sockets}-socket ${platform.id}`,
      `no sourced price for a ${sockets}-socket ${build.socket} board in catalog/prices.yaml boards`,
    );
    return;
  }
  if (!base) {
    skip(`${build.socket} builds`, `no chassis/PSU/NVMe price for ${build.socket} in catalog/prices.yaml base`);
    return;
  }
  const channels = (platform.memory.channels / platform.sockets) * sockets;
  const dimmCount = channels * build.dimmsPerChannel;
  const gpuOptions = gpuOptionsFor(enumeration.catalog, build, pricedGpus);
  for (const sizeGiB of prices.dimmSizesGiB) {
    const dimm = prices.dimms.find((entry) => entry.kind === build.dimm && entry.sizeGiB === sizeGiB);
    if (!dimm) {
      unpricedDimms.set(build.dimm, new Set([...(unpricedDimms.get(build.dimm) ?? []), sizeGiB]));
      continue;
    }
    const memory = { sizeGiB, dimmCount, dimm };
    for (const option of gpuOptions)
      enumeration.candidates.push(
        bareMetalCandidate(enumeration, { platform, build, sockets, board, base, memory, option }),
      );
  }
}

/** No GPU, then 1/2/4/8 of each priced GPU where the platform's lanes give each card at least x4. */
function gpuOptionsFor(catalog: Catalog, build: PlatformBuild, pricedGpus: PricedGpu[]): GpuOption[] {
  const gpuOptions: GpuOption[] = [{ gpus: [], lanes: 0, parts: [], vramBytes: 0, label: "" }];
  for (const { gpu, price } of pricedGpus) {
    for (const count of GPU_COUNTS) {
      // Each card's share of the lanes, as a width a slot or bifurcation gives (x16, x8, x4).
      const share = Math.min(16, 2 ** Math.floor(Math.log2(build.pcie.gpuLanes / count)));
      if (share < MIN_LANES_PER_GPU) continue;
      gpuOptions.push({
        gpus: [{ model: gpu.id, count }],
        lanes: share,
        parts: [
          {
            item: `${gpu.name} (${price.condition})`,
            count,
            usdEach: price.usd,
            wattsEach: price.power.watts,
            source: `${price.source}; power: ${price.power.source}`,
          },
        ],
        vramBytes: gpu.memory * count,
        label: `, ${count} × ${gpuLabel(catalog, gpu.id)}${share < 16 ? ` at x${share}` : ""}`,
      });
    }
  }
  return gpuOptions;
}

/** The priced parts one bare-metal candidate is made of. */
interface BuildChoice {
  platform: CpuPlatformEntry;
  build: PlatformBuild;
  sockets: number;
  board: Prices["boards"][number];
  base: Prices["base"][number];
  memory: { sizeGiB: number; dimmCount: number; dimm: Prices["dimms"][number] };
  option: GpuOption;
}

/** Its parts list: CPUs, board, DIMMs, GPUs and the base, each with its price, power and source. */
function buildParts(prices: Prices, choice: BuildChoice): PricedPart[] {
  const { platform, build, sockets, board, base, memory, option } = choice;
  // Only priced platforms are built (addBareMetalCandidates skips the others): both are there.
  const cpuPrice = build.price!;
  const cpuPower = build.power!;
  const dimmPower = prices.power.dimm;
  return [
    {
      item: platform.name,
      count: sockets,
      usdEach: cpuPrice.usd,
      wattsEach: cpuPower.watts,
      source: `${cpuPrice.source}; power: ${cpuPower.source}`,
    },
    {
      item: `${sockets}-socket ${build.socket} board`,
      count: 1,
      usdEach: board.usd,
      wattsEach: 0,
      source: board.source,
    },
    {
      item: `${memory.sizeGiB} GiB ${build.dimm} ${platform.memory.kind}`,
      count: memory.dimmCount,
      usdEach: memory.dimm.usd / memory.dimm.modules,
      wattsEach: dimmPower.watts,
      source: `${memory.dimm.source}; power: ${dimmPower.source}`,
    },
    ...option.parts,
    {
      item: `base: ${base.what}`,
      count: 1,
      usdEach: base.usd,
      wattsEach: prices.power.base.watts,
      source: `${base.source}; power: ${prices.power.base.source}`,
    },
  ];
}

function bareMetalCandidate(enumeration: Enumeration, choice: BuildChoice): Candidate {
  const { platform, build, sockets, memory, option } = choice;
  const { sizeGiB, dimmCount } = memory;
  const ramGiB = sizeGiB * dimmCount;
  const parts = buildParts(enumeration.prices, choice);
  const label = `${sockets > 1 ? `${sockets} × ` : ""}${platformLabel(platform)}, ${dimmCount} × ${sizeGiB} GiB ${build.dimm}${option.label}`;
  return {
    kind: "bare-metal",
    label,
    host: {
      kind: "bare-metal",
      name: label,
      cpu: { platform: platform.id, sockets },
      memory: { total: `${ramGiB}GiB` },
      ...(option.gpus.length > 0 ? { gpus: option.gpus, pcie: { gen: build.pcie.gen, lanes: option.lanes } } : {}),
    },
    build: {
      priceUsd: round2(parts.reduce((sum, part) => sum + part.count * part.usdEach, 0)),
      powerWatts: round2(parts.reduce((sum, part) => sum + part.count * part.wattsEach, 0)),
      parts,
    },
    group: `${platform.id}×${sockets}${option.label}`,
    dimmGiB: sizeGiB,
    ramBytes: ramGiB * GiB,
    vramBytes: option.vramBytes,
  };
}

/** Each catalog cloud instance, in the us-east-1 the catalog prices, open only to placeholder networks. */
function cloudCandidates(catalog: Catalog): Candidate[] {
  return catalog.instances.map((instance) => {
    const gpu = instance.gpus ? catalog.gpus.find((entry) => entry.id === instance.gpus!.model) : undefined;
    return {
      kind: "cloud",
      label: `AWS ${instance.id}${instance.gpus ? ` (${instance.gpus.count} × ${gpuLabel(catalog, instance.gpus.model)})` : ""}`,
      host: {
        kind: "cloud",
        provider: instance.provider,
        instanceType: instance.id,
        region: CLOUD_REGION,
        allowedCidrs: [...PLACEHOLDER_CIDRS],
      },
      build: undefined,
      group: instance.id,
      dimmGiB: undefined,
      ramBytes: instance.memory,
      vramBytes: gpu && instance.gpus ? gpu.memory * instance.gpus.count : 0,
    };
  });
}

const round2 = (value: number) => Math.round(value * 100) / 100;

/** The kimi-kit:* values of a candidate serving a tier: the stack `--write-stack` writes, before comments. */
export function stackValues(
  candidate: Candidate,
  model: ModelEntry,
  tier: Tier,
  request: Pick<RecommendRequest, "contextLength" | "slots" | "usdPerKwh">,
  prices: Prices,
): Record<string, unknown> {
  const costs = candidate.build
    ? {
        hardware: {
          priceUsd: candidate.build.priceUsd,
          amortizationMonths: prices.amortizationMonths.value,
          powerWatts: candidate.build.powerWatts,
          usdPerKwh: request.usdPerKwh,
        },
      }
    : { cloud: { storageUsdPerGbMonth: STORAGE_USD_PER_GB_MONTH } };
  return {
    host: candidate.host,
    model: { repo: model.repo, tier: tier.name },
    serving: { contextLength: request.contextLength, parallelSlots: request.slots },
    projection: { decodeDepthTokens: RECOMMEND_DECODE_DEPTH },
    costs: {
      ...costs,
      api: { ...RECOMMEND_API },
      usage: {
        tokensPerMonth: RECOMMEND_USAGE.tokensPerMonth,
        mix: { ...RECOMMEND_USAGE.mix },
        utilization: RECOMMEND_USAGE.utilization,
      },
    },
  };
}

// ---- the search --------------------------------------------------------------------------------

interface Pair {
  candidate: Candidate;
  tier: Tier;
  config: StackConfig;
  monthlyUsd: number;
  weightsBytes: number;
}

/**
 * Plans candidates cheapest first (the monthly cost is known before planning), so the search can
 * stop once it has `top` that qualify, and knows that every one it skipped costs at least as much.
 * When nothing qualifies it plans everything left, to say which constraint fails and what would pass.
 */
export function recommend(
  request: RecommendRequest,
  options: { catalog?: Catalog; prices?: Prices; explain?: boolean } = {},
): Recommendation {
  const started = performance.now();
  const catalog = options.catalog ?? loadCatalog();
  const prices = options.prices ?? loadPrices(catalog);
  const { model, tiers } = requestedModelTiers(request, catalog);
  const { candidates, skipped } = enumerateCandidates(catalog, prices, request.kind);
  const pairs = pricedPairs(candidates, tiers, model, request, prices, catalog);
  const { evaluations, recommended, counts: searched } = search(pairs, request, catalog);
  const counts = { hosts: candidates.length, ...searched };
  recommended.sort(
    (a, b) =>
      a.monthlyUsd - b.monthlyUsd || b.plan.projection.decodeTokensPerSecond - a.plan.projection.decodeTokensPerSecond,
  );
  const nearMisses = evaluations.filter((evaluation) => evaluation.status !== "recommended").slice(0, request.top);
  const result: Recommendation = {
    request,
    model,
    tiers,
    recommended,
    nearMisses,
    skipped,
    counts,
    seconds: 0,
    problem: undefined,
    prices,
  };
  if (recommended.length === 0) {
    // A search run to explain another (explain: false) only needs its picks; explaining it in turn could recurse.
    result.problem =
      options.explain === false
        ? `no catalog ${kindText(request.kind)} qualifies`
        : explainNone(result, evaluations, pairs, catalog, prices);
  }
  result.seconds = (performance.now() - started) / 1000;
  return result;
}

/** The request's model and the tiers it asks for; either unknown is thrown as one line. */
function requestedModelTiers(request: RecommendRequest, catalog: Catalog): { model: ModelEntry; tiers: Tier[] } {
  const model = findModelByRepo(catalog, request.model);
  if (!model)
    throw new RecommendInputError(
      `--model: found ${JSON.stringify(request.model)}; allowed: ${catalog.models.map((entry) => entry.repo).join(", ")}`,
    );
  const tiers = request.tier === "any" ? model.tiers : model.tiers.filter((entry) => entry.name === request.tier);
  if (tiers.length === 0)
    throw new RecommendInputError(
      `--tier: found ${JSON.stringify(request.tier)}; allowed: any, ${model.tiers.map((entry) => entry.name).join(", ")}`,
    );
  return { model, tiers };
}

/** Every candidate × tier as a stack config with its monthly cost, cheapest first. */
function pricedPairs(
  candidates: Candidate[],
  tiers: Tier[],
  model: ModelEntry,
  request: RecommendRequest,
  prices: Prices,
  catalog: Catalog,
): Pair[] {
  const pairs: Pair[] = [];
  for (const tier of tiers) {
    const catalogBytes = totalBytes(tensorsFromArchitecture(model.architecture, tier));
    // The weights must be resident somewhere: RAM + VRAM below the smaller of the listed and the
    // computed size cannot hold the tier, whatever the placement.
    const weightsBytes = Math.min(catalogBytes, tier.publishedSizeBytes);
    for (const candidate of candidates) {
      const config = parseStackConfig("recommend", stackValues(candidate, model, tier, request, prices));
      const host = resolveHost("recommend", config.host, catalog);
      // estimateCost's own monthly figure (amortization + power, or hours + volume): speeds do not enter it.
      const monthlyUsd = estimateCost(config.costs!, host, catalogBytes, {
        decodeTokensPerSecond: 1,
        prefillTokensPerSecond: 1,
      }).monthlyUsd;
      pairs.push({ candidate, tier, config, monthlyUsd, weightsBytes });
    }
  }
  pairs.sort((a, b) => a.monthlyUsd - b.monthlyUsd);
  return pairs;
}

/**
 * Walks the pairs cheapest first, planning those that could qualify, until `top` qualify (or, past
 * --max-monthly-usd, one over budget names the cheapest). Counts all but `hosts`, which it never sees.
 */
function search(
  pairs: Pair[],
  request: RecommendRequest,
  catalog: Catalog,
): { evaluations: Evaluation[]; recommended: Evaluation[]; counts: Omit<Recommendation["counts"], "hosts"> } {
  const counts = { pairs: pairs.length, planned: 0, tooSmall: 0, largerDimms: 0, notNeeded: 0 };
  const evaluations: Evaluation[] = [];
  const recommended: Evaluation[] = [];
  const fitsWithDimm = new Map<string, number>();
  let overBudget: Evaluation | undefined;
  let index = 0;
  for (; index < pairs.length; index++) {
    const pair = pairs[index]!;
    if (recommended.length >= request.top) break;
    // Past the cap, only the cheapest host that would otherwise qualify is still wanted (to name it).
    if (
      request.maxMonthlyUsd !== undefined &&
      pair.monthlyUsd > request.maxMonthlyUsd &&
      (recommended.length > 0 || overBudget)
    )
      break;
    if (pair.candidate.ramBytes + pair.candidate.vramBytes < pair.weightsBytes) {
      counts.tooSmall++;
      continue;
    }
    const groupKey = `${pair.candidate.group}|${pair.tier.name}`;
    const fittingDimm = fitsWithDimm.get(groupKey);
    if (fittingDimm !== undefined && pair.candidate.dimmGiB !== undefined && pair.candidate.dimmGiB > fittingDimm) {
      counts.largerDimms++;
      continue;
    }
    const evaluation = evaluate(pair, request, catalog);
    counts.planned++;
    if (evaluation.plan.fits && pair.candidate.dimmGiB !== undefined && fittingDimm === undefined)
      fitsWithDimm.set(groupKey, pair.candidate.dimmGiB);
    evaluations.push(evaluation);
    if (evaluation.status === "recommended") recommended.push(evaluation);
    if (evaluation.status === "over-budget" && !overBudget) overBudget = evaluation;
  }
  counts.notNeeded = pairs.length - index;
  return { evaluations, recommended, counts };
}

/** Plans one pair and judges it: does it fit, then is it fast enough, then within the budget. */
function evaluate(pair: Pair, request: RecommendRequest, catalog: Catalog): Evaluation {
  const plan = buildPlan("recommend", pair.config, { catalog, alternatives: false });
  const monthlyUsd = plan.cost?.monthlyUsd ?? pair.monthlyUsd;
  const decode = plan.projection.decodeTokensPerSecond;
  let status: Status = "recommended";
  let why: string | undefined;
  if (!plan.fits) {
    status = "does-not-fit";
    why = `does not fit: ${plan.placement.fits ? (plan.refusal ?? "refused") : shortDevices(plan.placement)}`;
  } else if (request.minDecode !== undefined && decode < request.minDecode) {
    status = "too-slow";
    why = `decode ${decode.toFixed(1)} tok/s is below --min-decode ${request.minDecode}`;
  } else if (request.maxMonthlyUsd !== undefined && monthlyUsd > request.maxMonthlyUsd) {
    status = "over-budget";
    why = `${formatUsd(monthlyUsd)}/month is over --max-monthly-usd ${request.maxMonthlyUsd}`;
  }
  return { candidate: pair.candidate, tier: pair.tier, status, why, plan, monthlyUsd };
}

function tierText(result: Pick<Recommendation, "model" | "tiers" | "request">): string {
  return result.request.tier === "any"
    ? `any tier of ${result.model.name}`
    : `${result.model.name} ${result.tiers[0]!.name}`;
}

const kindText = (kind: RecommendRequest["kind"]) =>
  kind === "cloud" ? "cloud instance" : kind === "bare-metal" ? "bare-metal build" : "host";

/**
 * The one line for an empty result, constraint by constraint in the order a host fails them: holding
 * the tier, then --min-decode, then --max-monthly-usd; each says what would pass.
 */
function explainNone(
  result: Recommendation,
  evaluations: Evaluation[],
  pairs: Pair[],
  catalog: Catalog,
  prices: Prices,
): string {
  const { request } = result;
  const shape = `${request.contextLength} tokens × ${request.slots} slot(s)`;
  const fitting = evaluations.filter((evaluation) => evaluation.status !== "does-not-fit");
  if (fitting.length === 0) {
    const noneHolds = `${request.kind === "any" ? "" : `--kind ${request.kind}: `}no catalog ${kindText(request.kind)} holds ${tierText(result)} at ${shape}`;
    const closest = closestMiss(evaluations, pairs);
    // What would: the other kind of host, else another tier, else a shorter context.
    if (request.kind !== "any") {
      const other = recommend(
        {
          ...request,
          kind: request.kind === "cloud" ? "bare-metal" : "cloud",
          minDecode: undefined,
          maxMonthlyUsd: undefined,
          top: 1,
        },
        { catalog, prices, explain: false },
      );
      const first = other.recommended[0];
      if (first)
        return `${noneHolds} (${closest}); --kind ${first.candidate.kind} does: the cheapest is ${first.candidate.label} at ${formatUsd(first.monthlyUsd)}/month`;
    }
    if (request.tier !== "any") {
      const other = recommend(
        { ...request, tier: "any", kind: "any", minDecode: undefined, maxMonthlyUsd: undefined, top: 1 },
        { catalog, prices, explain: false },
      );
      const first = other.recommended[0];
      if (first)
        return `${noneHolds} (${closest}); ${first.tier.name} fits: the cheapest host is ${first.candidate.label} at ${formatUsd(first.monthlyUsd)}/month`;
    }
    if (request.contextLength > 4096 || request.slots > 1)
      return `${noneHolds} (${closest}); a shorter --context or fewer --slots may: 4096 × 1 is the least the search would try`;
    return `${noneHolds} (${closest}); nothing in the catalog would: a host with more RAM + VRAM is needed`;
  }
  if (request.minDecode !== undefined) {
    const fast = fitting.filter((evaluation) => evaluation.plan.projection.decodeTokensPerSecond >= request.minDecode!);
    if (fast.length === 0) {
      const fastest = [...fitting].sort(
        (a, b) => b.plan.projection.decodeTokensPerSecond - a.plan.projection.decodeTokensPerSecond,
      )[0]!;
      const rate = fastest.plan.projection.decodeTokensPerSecond;
      return `no catalog ${kindText(request.kind)} meets --min-decode ${request.minDecode} for ${tierText(result)} at ${shape}; the fastest is ${fastest.candidate.label} (${fastest.tier.name}, ${formatUsd(fastest.monthlyUsd)}/month) at ${rate.toFixed(1)} tok/s: --min-decode ${Math.floor(rate * 10) / 10} or less would find it`;
    }
  }
  const cheapest = evaluations.find((evaluation) => evaluation.status === "over-budget");
  if (cheapest && request.maxMonthlyUsd !== undefined) {
    return `--max-monthly-usd ${request.maxMonthlyUsd} is below the cheapest ${kindText(request.kind)} that holds ${tierText(result)}${request.minDecode !== undefined ? ` at --min-decode ${request.minDecode}` : ""}: ${cheapest.candidate.label}${request.tier === "any" ? ` (${cheapest.tier.name})` : ""} at ${formatUsd(cheapest.monthlyUsd)}/month`;
  }
  return `no catalog ${kindText(request.kind)} meets every constraint for ${tierText(result)}`;
}

/** What a plan is short of, in one clause: the device itself when one is short, else the total and the worst. */
function shortSummary(plan: Plan): string {
  const short = plan.placement.memory.filter((device) => !device.fits);
  if (short.length <= 1) return shortDevices(plan.placement) || (plan.refusal ?? "refused");
  const by = (device: (typeof short)[number]) => device.plannedBytes - device.capacityBytes;
  const worst = [...short].sort((a, b) => by(b) - by(a))[0]!;
  return `${short.length} devices short by ${formatGiB(short.reduce((sum, device) => sum + by(device), 0))} in all, ${worst.device} (${worst.label}) by ${formatGiB(by(worst))}`;
}

/**
 * The host that came closest to holding the tier: the least short among those planned, else the largest ruled out
 * unplanned.
 */
function closestMiss(evaluations: Evaluation[], pairs: Pair[]): string {
  const shortBy = (evaluation: Evaluation) =>
    evaluation.plan.placement.memory.reduce(
      (sum, device) => sum + Math.max(0, device.plannedBytes - device.capacityBytes),
      0,
    );
  const planned = evaluations
    .filter((evaluation) => evaluation.status === "does-not-fit")
    .sort((a, b) => shortBy(a) - shortBy(b))[0];
  if (planned) return `the closest, ${planned.candidate.label}, ${planned.tier.name}: ${shortSummary(planned.plan)}`;
  const largest = [...pairs].sort(
    (a, b) => b.candidate.ramBytes + b.candidate.vramBytes - (a.candidate.ramBytes + a.candidate.vramBytes),
  )[0];
  if (!largest) return "no candidate at all";
  return `the largest, ${largest.candidate.label}, has ${formatGiB(largest.candidate.ramBytes + largest.candidate.vramBytes)} of RAM + VRAM for ${formatGiB(largest.weightsBytes)} of ${largest.tier.name} weights`;
}

// ---- output ------------------------------------------------------------------------------------

export interface EvaluationJson {
  kind: HostKind;
  label: string;
  tier: string;
  status: Status;
  why?: string;
  mode: string;
  fits: boolean;
  decodeTokensPerSecond: number;
  decodeDepthTokens: number;
  /** The projection's error band (published runs' p10–p90), tok/s; null while uncalibrated. */
  decodeBand: { low: number; high: number } | null;
  prefillTokensPerSecond: number;
  prefillBand: { low: number; high: number } | null;
  monthlyUsd: number;
  costLines: { item: string; monthlyUsd: number; basis: string }[];
  usdPerMillionOutputTokens: number | null;
  breakEvenTokensPerMonth: number | null;
  breakEvenReason: string | null;
  hardware: { priceUsd: number; powerWatts: number; parts: PricedPart[] } | null;
  host: BareMetalHostValue | CloudHostValue;
}

export interface RecommendationJson {
  request: RecommendRequest;
  model: { repo: string; name: string; tiers: string[] };
  assumptions: {
    amortizationMonths: number;
    usdPerKwh: number;
    api: typeof RECOMMEND_API;
    usage: typeof RECOMMEND_USAGE;
    decodeDepthTokens: number;
    prices: string;
  };
  search: Recommendation["counts"] & { seconds: number };
  recommendations: EvaluationJson[];
  nearMisses: EvaluationJson[];
  skipped: Skipped[];
  problem: string | null;
}

function band(rate: number, value: { low: number; high: number } | undefined): { low: number; high: number } | null {
  return value ? { low: rate * value.low, high: rate * value.high } : null;
}

function evaluationJson(evaluation: Evaluation): EvaluationJson {
  const { plan } = evaluation;
  const projection = plan.projection;
  return {
    kind: evaluation.candidate.kind,
    label: evaluation.candidate.label,
    tier: evaluation.tier.name,
    status: evaluation.status,
    ...(evaluation.why ? { why: evaluation.why } : {}),
    mode: plan.placement.mode,
    fits: plan.fits,
    decodeTokensPerSecond: projection.decodeTokensPerSecond,
    decodeDepthTokens: projection.decodeDepthTokens,
    decodeBand: band(projection.decodeTokensPerSecond, projection.errorBands.decode),
    prefillTokensPerSecond: projection.prefillTokensPerSecond,
    prefillBand: band(projection.prefillTokensPerSecond, projection.errorBands.prefill),
    monthlyUsd: evaluation.monthlyUsd,
    costLines: plan.cost?.lines ?? [],
    usdPerMillionOutputTokens:
      plan.cost && Number.isFinite(plan.cost.usdPerMillionOutputTokens) ? plan.cost.usdPerMillionOutputTokens : null,
    breakEvenTokensPerMonth: plan.cost?.breakEvenTokensPerMonth ?? null,
    breakEvenReason: plan.cost?.breakEvenReason ?? null,
    hardware: evaluation.candidate.build ?? null,
    host: evaluation.candidate.host,
  };
}

export function recommendationToJson(result: Recommendation): RecommendationJson {
  return {
    request: result.request,
    model: { repo: result.model.repo, name: result.model.name, tiers: result.tiers.map((tier) => tier.name) },
    assumptions: {
      amortizationMonths: result.prices.amortizationMonths.value,
      usdPerKwh: result.request.usdPerKwh,
      api: RECOMMEND_API,
      usage: RECOMMEND_USAGE,
      decodeDepthTokens: RECOMMEND_DECODE_DEPTH,
      prices: "catalog/prices.yaml",
    },
    search: { ...result.counts, seconds: result.seconds },
    recommendations: result.recommended.map(evaluationJson),
    nearMisses: result.nearMisses.map(evaluationJson),
    skipped: result.skipped,
    problem: result.problem ?? null,
  };
}

function rateText(rate: number, value: { low: number; high: number } | undefined): string {
  return `${rate.toFixed(1)} tok/s${value ? ` (band ${(rate * value.low).toFixed(1)}–${(rate * value.high).toFixed(1)})` : " (uncalibrated)"}`;
}

/** One recommendation, numbered from 1: host, speeds, cost, break-even and (bare metal) its parts. */
function recommendedLines(evaluation: Evaluation, position: number): string[] {
  const { plan, candidate } = evaluation;
  const projection = plan.projection;
  const cost = plan.cost!;
  const out = [
    `${position + 1}. ${formatUsd(evaluation.monthlyUsd)}/month — ${candidate.kind === "cloud" ? "cloud" : "bare metal"}: ${candidate.label} — ${evaluation.tier.name}, ${plan.placement.mode}`,
    `   decode ${rateText(projection.decodeTokensPerSecond, projection.errorBands.decode)} at depth ${projection.decodeDepthTokens}; prefill ${rateText(projection.prefillTokensPerSecond, projection.errorBands.prefill)}`,
    `   cost: ${cost.lines.map((line) => `${line.item} ${formatUsd(line.monthlyUsd)} (${line.basis})`).join(" + ")}; ${formatUsd(cost.usdPerMillionOutputTokens)} per 1M output tokens`,
    `   break-even vs API: ${cost.breakEvenTokensPerMonth === null ? "none" : `${formatTokens(cost.breakEvenTokensPerMonth)} tokens/month`} — ${cost.breakEvenReason}`,
  ];
  if (candidate.build)
    out.push(
      `   parts: ${candidate.build.parts.map((part) => `${part.count > 1 ? `${part.count} × ` : ""}${part.item} ${formatUsd(part.usdEach)}${part.wattsEach > 0 ? ` ${part.wattsEach} W` : ""}`).join("; ")} = ${formatUsd(candidate.build.priceUsd)}, ${candidate.build.powerWatts} W`,
    );
  return out;
}

export function renderRecommendation(result: Recommendation): string {
  const { request, counts } = result;
  const out: string[] = [];
  const constraints = [
    request.minDecode !== undefined ? `--min-decode ${request.minDecode}` : "",
    request.maxMonthlyUsd !== undefined ? `--max-monthly-usd ${request.maxMonthlyUsd}` : "",
  ].filter(Boolean);
  out.push(
    `Recommend: ${result.model.name} ${request.tier === "any" ? `any tier (${result.tiers.map((tier) => tier.name).join(", ")})` : request.tier}, ${request.contextLength} tokens × ${request.slots} slot(s), kind ${request.kind}${constraints.length > 0 ? `, ${constraints.join(", ")}` : ""}`,
  );
  out.push(
    `Searched ${counts.hosts} hosts × ${result.tiers.length} tier(s) = ${counts.pairs} candidates in ${result.seconds.toFixed(1)} s, cheapest first: ${counts.planned} planned, ${counts.tooSmall} ruled out before planning (weights larger than RAM + VRAM), ${counts.largerDimms} not planned (the same build with smaller DIMMs fits), ${counts.notNeeded} not needed (they cost at least as much as the picks).`,
  );
  out.push(
    `Costs: bare metal = catalog/prices.yaml parts ÷ ${result.prices.amortizationMonths.value} months + nameplate power at $${request.usdPerKwh}/kWh; cloud = on-demand hours + model volume. API: ${formatUsd(RECOMMEND_API.usdPerMillionInput)}/1M input, ${formatUsd(RECOMMEND_API.usdPerMillionOutput)}/1M output (the seed's); ${formatTokens(RECOMMEND_USAGE.tokensPerMonth)} tokens/month at ${RECOMMEND_USAGE.mix.input}:${RECOMMEND_USAGE.mix.output} input:output, ${RECOMMEND_USAGE.utilization * 100}% utilization. Decode at depth ${RECOMMEND_DECODE_DEPTH}.`,
  );
  out.push("");
  if (result.recommended.length === 0) out.push(`No recommendation: ${result.problem}`);
  else out.push(`Cheapest that fit${constraints.length > 0 ? " and meet the targets" : ""}:`);
  result.recommended.forEach((evaluation, position) => out.push(...recommendedLines(evaluation, position)));
  if (result.nearMisses.length > 0) {
    out.push("");
    out.push("Near misses (cheapest first, and why each was not picked):");
    for (const evaluation of result.nearMisses)
      out.push(
        `  - ${formatUsd(evaluation.monthlyUsd)}/month ${evaluation.candidate.label} — ${evaluation.tier.name}: ${evaluation.why}`,
      );
  }
  if (result.skipped.length > 0) {
    out.push("");
    out.push("Not enumerated, for want of a sourced price in catalog/prices.yaml:");
    for (const entry of result.skipped) out.push(`  - ${entry.component}: ${entry.why}`);
  }
  if (result.recommended.length > 0) {
    out.push("");
    out.push(
      `Write the first as a stack that plans unchanged: add --write-stack NAME (then npm run plan -- --stack NAME).`,
    );
  }
  return out.join("\n");
}

// ---- --write-stack -----------------------------------------------------------------------------

/** A stack file's key for a kimi-kit:* value. */
const configKey = (key: string) => `kimi-kit:${key}`;

function keyComment(doc: Document, path: readonly string[], text: string): void {
  const parent = doc.getIn(path.slice(0, -1), true) as YamlNode | undefined;
  if (!parent || !isMap(parent)) return;
  const pair = parent.items.find((item) => isScalar(item.key) && item.key.value === path.at(-1));
  if (pair && isScalar(pair.key))
    pair.key.commentBefore = text
      .split("\n")
      .map((line) => ` ${line}`)
      .join("\n");
}

/** The stack file for a recommendation: its values (stackValues) with comments saying where each came from. */
export function renderStackFile(
  evaluation: Evaluation,
  result: Pick<Recommendation, "request" | "model" | "prices">,
  name: string,
  commandLine: string,
): string {
  const values = stackValues(evaluation.candidate, result.model, evaluation.tier, result.request, result.prices);
  const config = Object.fromEntries(Object.entries(values).map(([key, value]) => [`kimi-kit:${key}`, value]));
  const doc = new Document({ config });
  const projection = evaluation.plan.projection;
  doc.commentBefore = [
    ` Written by ${commandLine}`,
    ` The cheapest catalog ${evaluation.candidate.kind === "cloud" ? "cloud instance" : "bare-metal build"} that holds ${result.model.name} ${evaluation.tier.name} at ${result.request.contextLength} tokens × ${result.request.slots} slot(s)${result.request.minDecode !== undefined ? `,\n decoding at least ${result.request.minDecode} tok/s` : ""}${result.request.maxMonthlyUsd !== undefined ? `, within $${result.request.maxMonthlyUsd}/month` : ""}. Planned: ${evaluation.plan.placement.mode},`,
    ` decode ${projection.decodeTokensPerSecond.toFixed(1)} tok/s at depth ${projection.decodeDepthTokens}, ${formatUsd(evaluation.monthlyUsd)}/month; \`npm run plan -- --stack ${name}\` plans the same.`,
  ].join("\n");
  hostComments(doc, evaluation.candidate);
  keyComment(
    doc,
    ["config", configKey("projection"), "decodeDepthTokens"],
    `Decode quoted with 4K tokens in context, a coding-assistant turn.`,
  );
  const build = evaluation.candidate.build;
  if (build) buildComments(doc, build);
  keyComment(doc, ["config", configKey("costs"), "api"], `The seed's API prices, as every stack states them.`);
  keyComment(
    doc,
    ["config", configKey("costs"), "usage"],
    `The seed's fifty million tokens a month, at 3:1 input:output and 50% utilization.`,
  );
  const mix = doc.getIn(["config", configKey("costs"), "usage", "mix"], true) as YamlNode | undefined;
  if (mix && isMap(mix)) mix.flow = true;
  return doc.toString({ lineWidth: 0 });
}

/** The host's comments: what it is, and what a bare-metal host or a cloud stack still needs before `up`. */
function hostComments(doc: Document, candidate: Candidate): void {
  const host = candidate.host;
  if (host.kind === "bare-metal") {
    keyComment(
      doc,
      ["config", configKey("host")],
      `${candidate.label}. Before \`pulumi up\`, add ssh: { host, hostPublicKey } and disk.free;\nthe plan does not need them.`,
    );
    keyComment(
      doc,
      ["config", configKey("host"), "memory"],
      `One DIMM size in every slot of every channel: the planner sizes bandwidth from the platform's channels.`,
    );
    if (host.pcie)
      keyComment(
        doc,
        ["config", configKey("host"), "pcie"],
        `Each card's share of the platform's GPU lanes (catalog/prices.yaml platforms pcie).`,
      );
  } else {
    keyComment(
      doc,
      ["config", configKey("host")],
      `${candidate.label}, on-demand in ${host.region} (catalog/cloud-instances.yaml).`,
    );
    keyComment(
      doc,
      ["config", configKey("host"), "allowedCidrs"],
      `Only these networks reach SSH and the API port: a documentation range (RFC 5737); put your team's here.`,
    );
  }
}

/** A bare-metal build's price and power, part by part, as comments on the two costs. */
function buildComments(doc: Document, build: NonNullable<Candidate["build"]>): void {
  keyComment(
    doc,
    ["config", configKey("costs"), "hardware", "priceUsd"],
    `catalog/prices.yaml: ${build.parts.map((part) => `${part.count > 1 ? `${part.count} × ` : ""}${part.item} ${formatUsd(part.usdEach)}`).join(", ")}.`,
  );
  keyComment(
    doc,
    ["config", configKey("costs"), "hardware", "powerWatts"],
    `Nameplate: ${build.parts
      .filter((part) => part.wattsEach > 0)
      .map((part) => `${part.count > 1 ? `${part.count} × ` : ""}${part.wattsEach} W ${part.item}`)
      .join(", ")}.`,
  );
}

/** Refuses a name the stack files cannot have, in one line. */
export function stackNameProblem(name: string): string | undefined {
  if (!WRITABLE_STACK_NAME.test(name))
    return `--write-stack: found ${JSON.stringify(name)}; allowed: a stack name of letters, digits, _ . - (starting with a letter or digit, at most 100 characters)`;
  return undefined;
}
