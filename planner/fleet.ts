/**
 * Replicas behind one endpoint and the teams that share it: what one replica serves with all of its
 * -np slots busy, how many replicas a stack needs (kimi-kit:fleet replicas: auto), what the fleet
 * costs, and each team's chargeback in the plan's own dollars. Pure: no Pulumi, no I/O.
 *
 * Throughput under concurrency is the roofline of planner/speed.ts run for a batch: with N slots
 * decoding, one step reads the weights once for all N (a routed expert unless no slot picked it),
 * every slot's KV, and does N tokens' arithmetic. No fitted curve: the bench (npm run
 * bench:concurrency) checks it against llama-server with -np 1/2/4.
 */
import type { FleetConfig, ReplicaHostConfig, StackConfig, TeamConfig } from "./config";
import { estimateCost, HOURS_PER_MONTH, type CostEstimate } from "./cost";
import type { HostSpec } from "./host";
import { project, type SpeedInputs } from "./speed";

/** The most replicas `auto` may choose (the schema's own ceiling for a stated count). */
export const MAX_REPLICAS = 64;

/**
 * Tokens per second summed over `concurrentSlots` sequences decoding together on one replica, at
 * the inputs' decode depth: the step time is the slowest of streaming that step's bytes and doing its
 * arithmetic (per device, summed over devices as in project()), and each step emits one token per slot.
 */
export function aggregateDecodeTokensPerSecond(inputs: SpeedInputs, concurrentSlots: number): number {
  if (!Number.isInteger(concurrentSlots) || concurrentSlots < 1)
    throw new Error(`concurrentSlots: found ${concurrentSlots}; allowed: an integer ≥ 1`);
  return project({ ...inputs, concurrentSlots }).decodeTokensPerSecond;
}

export interface ReplicaThroughput {
  /** -np: the slots each replica decodes at once. */
  slots: number;
  /** All slots busy. */
  aggregateDecodeTokensPerSecond: number;
  /** What one request sees with all slots busy: aggregate ÷ slots. */
  perSlotDecodeTokensPerSecond: number;
  /** One request alone (project()'s headline figure). */
  singleStreamDecodeTokensPerSecond: number;
  /** Aggregate decode with 1, 2, … slots busy, for the report. */
  bySlots: { slots: number; aggregateDecodeTokensPerSecond: number }[];
  prefillTokensPerSecond: number;
}

export interface FleetCost {
  /** One replica's monthly cost (estimateCost), and the fleet's: replicas × that. */
  replicaMonthlyUsd: number;
  monthlyUsd: number;
  /**
   * Tokens per month (input + output at the stack's mix) one replica serves with all slots busy, at the stated
   * utilization.
   */
  replicaCapacityTokensPerMonth: number;
  capacityTokensPerMonth: number;
  expectedTokensPerMonth: number;
  utilization: number;
  inputShare: number;
}

/**
 * The fleet's own price per token: a replica-second costs monthlyUsd ÷ (replicas × 730 h × 3600 s
 * × utilization); an input token takes 1/prefill of it, an output token 1/aggregate decode of it.
 */
export interface Chargeback {
  usdPerMillionInput: number;
  usdPerMillionOutput: number;
  /** inputShare × input + (1 − inputShare) × output. */
  usdPerMillionAtMix: number;
  apiUsdPerMillionInput: number;
  apiUsdPerMillionOutput: number;
  apiUsdPerMillionAtMix: number;
}

export interface TeamPlan {
  name: string;
  rpm: number;
  tpm: number | undefined;
  monthlyBudgetUsd: number | undefined;
  /** Tokens per month (at the stack's mix) the budget buys at the fleet's chargeback; undefined without a budget. */
  budgetTokensPerMonth: number | undefined;
  /** The same budget spent at the API's prices. */
  apiTokensForBudget: number | undefined;
}

export interface FleetPlan {
  replicas: number;
  sizedBy: "stack" | "auto";
  /** How `auto` chose, or what a stated count meets, in words. */
  basis: string[];
  replica: ReplicaThroughput;
  /** replicas × the replica's aggregate decode. */
  aggregateDecodeTokensPerSecond: number;
  tokensPerAnswer: number;
  peakConcurrentRequests: number | undefined;
  latencyTargetSeconds: number | undefined;
  /** tokensPerAnswer ÷ the per-slot decode with all slots busy. */
  answerSecondsAtFullLoad: number;
  /**
   * The most slots a replica may run at once with an answer still inside the latency target (undefined without a
   * target).
   */
  slotsWithinLatency: number | undefined;
  /** The replicas named in kimi-kit:hosts; empty when `host` + replicas: N describes them. */
  hosts: ReplicaHostConfig[];
  cost: FleetCost | undefined;
  chargeback: Chargeback | undefined;
}

export interface FleetInputs {
  config: Pick<StackConfig, "fleet" | "teams" | "costs">;
  host: HostSpec;
  modelBytes: number;
  /** The plan's projection inputs (placement.estimate.speedInputs). */
  speedInputs: SpeedInputs;
  /** The slots llama-server runs with (estimate settings.slots). */
  slots: number;
  prefillTokensPerSecond: number;
}

export interface FleetResult {
  fleet: FleetPlan | undefined;
  teams: TeamPlan[] | undefined;
  /** Why no number of replicas meets the stack's targets; the plan refuses with it. */
  refusal: string | undefined;
}

/** What sizing the fleet reads: one replica's throughput and cost, and the latency each load gives. */
interface SizingContext {
  fleetConfig: FleetConfig;
  replica: ReplicaThroughput;
  costs: StackConfig["costs"];
  oneCost: CostEstimate | undefined;
  /** Seconds one answer takes with `busy` slots decoding. */
  answerSeconds: (busy: number) => number;
  slotsWithinLatency: number | undefined;
}

interface Sizing {
  replicas: number;
  basis: string[];
  refusal: string | undefined;
}

/** The fleet and teams of a stack; both undefined when it sets neither kimi-kit:fleet nor kimi-kit:teams. */
export function planFleet(inputs: FleetInputs): FleetResult {
  const { config } = inputs;
  if (!config.fleet && !config.teams) return { fleet: undefined, teams: undefined, refusal: undefined };
  const fleetConfig: FleetConfig = config.fleet ?? { replicas: 1, tokensPerAnswer: 500, hosts: [] };
  const replica = replicaThroughput(inputs.speedInputs, inputs.slots, inputs.prefillTokensPerSecond);
  const costs = config.costs;
  const oneCost = costs
    ? estimateCost(costs, inputs.host, inputs.modelBytes, {
        decodeTokensPerSecond: replica.aggregateDecodeTokensPerSecond,
        prefillTokensPerSecond: replica.prefillTokensPerSecond,
      })
    : undefined;

  const { tokensPerAnswer, peakConcurrentRequests: peak, latencyTargetSeconds: target } = fleetConfig;
  // Latency of one answer with k slots busy: its tokens at the per-slot rate, k ÷ aggregate(k) s a token.
  // Prompt processing is left out (TTFT is reported on its own; a server interleaves it with decode).
  const answerSeconds = (busy: number) =>
    (tokensPerAnswer * busy) / replica.bySlots[busy - 1]!.aggregateDecodeTokensPerSecond;
  const slotsWithinLatency = slotsWithin(replica.slots, answerSeconds, target);
  const context: SizingContext = { fleetConfig, replica, costs, oneCost, answerSeconds, slotsWithinLatency };
  const { replicas, basis, refusal } =
    fleetConfig.replicas === "auto" ? autoReplicas(context) : statedReplicas(context, fleetConfig.replicas);

  const cost = fleetCostOf(oneCost, costs, replicas);
  const chargeback = cost && costs ? chargebackOf(cost, replicas, replica, costs.api) : undefined;
  const fleet: FleetPlan = {
    replicas,
    sizedBy: fleetConfig.replicas === "auto" ? "auto" : "stack",
    basis,
    replica,
    aggregateDecodeTokensPerSecond: replicas * replica.aggregateDecodeTokensPerSecond,
    tokensPerAnswer,
    peakConcurrentRequests: peak,
    latencyTargetSeconds: target,
    answerSecondsAtFullLoad: answerSeconds(replica.slots),
    slotsWithinLatency,
    hosts: fleetConfig.hosts,
    cost,
    chargeback,
  };
  const teams = config.teams?.map((team) => teamPlan(team, chargeback));
  return { fleet, teams, refusal };
}

/** The most slots busy at once with an answer still inside the target; undefined without a target. */
function slotsWithin(
  slots: number,
  answerSeconds: (busy: number) => number,
  target: number | undefined,
): number | undefined {
  if (target === undefined) return undefined;
  let slotsWithinLatency = 0;
  for (let busy = 1; busy <= slots; busy++) if (answerSeconds(busy) <= target) slotsWithinLatency = busy;
  return slotsWithinLatency;
}

/** replicas: auto — enough for the monthly volume and for the peak within the latency target, whichever is more. */
function autoReplicas(context: SizingContext): Sizing {
  const { fleetConfig, replica, costs, oneCost, answerSeconds, slotsWithinLatency } = context;
  const { tokensPerAnswer, peakConcurrentRequests: peak, latencyTargetSeconds: target } = fleetConfig;
  const basis: string[] = [];
  let refusal: string | undefined;
  const byVolume =
    oneCost && costs ? Math.max(1, Math.ceil(costs.usage.tokensPerMonth / oneCost.capacityTokensPerMonth)) : 1;
  if (oneCost && costs)
    basis.push(
      `volume: ${fmtM(costs.usage.tokensPerMonth)} tokens/month ÷ ${fmtM(oneCost.capacityTokensPerMonth)} per replica (${replica.slots} slot(s) busy, ${Math.round(costs.usage.utilization * 100)}% utilization) → ${byVolume}`,
    );
  let byPeak = 1;
  if (peak !== undefined && target !== undefined && slotsWithinLatency !== undefined) {
    if (slotsWithinLatency === 0) {
      refusal = `fleet.latencyTargetSeconds: ${target} s cannot be met by any number of replicas: one request alone takes ${answerSeconds(1).toFixed(1)} s for ${tokensPerAnswer} tokens at ${replica.singleStreamDecodeTokensPerSecond.toFixed(1)} tok/s on this host`;
    } else {
      byPeak = Math.ceil(peak / slotsWithinLatency);
      basis.push(
        `peak: ${peak} concurrent request(s) ÷ ${slotsWithinLatency} slot(s) per replica within ${target} s (${tokensPerAnswer} tokens at ${(replica.bySlots[slotsWithinLatency - 1]!.aggregateDecodeTokensPerSecond / slotsWithinLatency).toFixed(2)} tok/s each) → ${byPeak}`,
      );
    }
  }
  const replicas = Math.max(byVolume, byPeak);
  if (replicas > MAX_REPLICAS && refusal === undefined)
    refusal = `fleet.replicas auto: the stack needs ${replicas} replicas (${basis.join("; ")}), above the kit's ${MAX_REPLICAS}`;
  return { replicas, basis, refusal };
}

/** A stated replica count: what it meets of the peak and the monthly volume, in words. */
function statedReplicas(context: SizingContext, replicas: number): Sizing {
  const { fleetConfig, costs, oneCost, slotsWithinLatency } = context;
  const { peakConcurrentRequests: peak, latencyTargetSeconds: target } = fleetConfig;
  const basis: string[] = [];
  if (peak !== undefined && slotsWithinLatency !== undefined) {
    const served = replicas * slotsWithinLatency;
    basis.push(
      `peak: ${replicas} replica(s) × ${slotsWithinLatency} slot(s) within ${target} s = ${served} concurrent request(s) for a peak of ${peak}${served < peak ? " — short: requests beyond it queue or miss the target" : ""}`,
    );
  }
  if (oneCost && costs) {
    const capacity = replicas * oneCost.capacityTokensPerMonth;
    basis.push(
      `volume: ${fmtM(capacity)} tokens/month capacity for ${fmtM(costs.usage.tokensPerMonth)} expected${capacity < costs.usage.tokensPerMonth ? " — short" : ""}`,
    );
  }
  return { replicas, basis, refusal: undefined };
}

function fleetCostOf(
  oneCost: CostEstimate | undefined,
  costs: StackConfig["costs"],
  replicas: number,
): FleetCost | undefined {
  return oneCost && costs
    ? {
        replicaMonthlyUsd: oneCost.monthlyUsd,
        monthlyUsd: replicas * oneCost.monthlyUsd,
        replicaCapacityTokensPerMonth: oneCost.capacityTokensPerMonth,
        capacityTokensPerMonth: replicas * oneCost.capacityTokensPerMonth,
        expectedTokensPerMonth: costs.usage.tokensPerMonth,
        utilization: costs.usage.utilization,
        inputShare: oneCost.inputShare,
      }
    : undefined;
}

export function replicaThroughput(
  speedInputs: SpeedInputs,
  slots: number,
  prefillTokensPerSecond: number,
): ReplicaThroughput {
  const bySlots = Array.from({ length: slots }, (_, index) => ({
    slots: index + 1,
    aggregateDecodeTokensPerSecond: aggregateDecodeTokensPerSecond(speedInputs, index + 1),
  }));
  const aggregate = bySlots[slots - 1]!.aggregateDecodeTokensPerSecond;
  return {
    slots,
    aggregateDecodeTokensPerSecond: aggregate,
    perSlotDecodeTokensPerSecond: aggregate / slots,
    singleStreamDecodeTokensPerSecond: bySlots[0]!.aggregateDecodeTokensPerSecond,
    bySlots,
    prefillTokensPerSecond,
  };
}

export function chargebackOf(
  cost: Pick<FleetCost, "monthlyUsd" | "utilization" | "inputShare">,
  replicas: number,
  replica: Pick<ReplicaThroughput, "aggregateDecodeTokensPerSecond" | "prefillTokensPerSecond">,
  api: { usdPerMillionInput: number; usdPerMillionOutput: number },
): Chargeback {
  const usdPerReplicaSecond = cost.monthlyUsd / (replicas * HOURS_PER_MONTH * 3600 * cost.utilization);
  const usdPerMillionInput = (usdPerReplicaSecond / replica.prefillTokensPerSecond) * 1e6;
  const usdPerMillionOutput = (usdPerReplicaSecond / replica.aggregateDecodeTokensPerSecond) * 1e6;
  const share = cost.inputShare;
  return {
    usdPerMillionInput,
    usdPerMillionOutput,
    usdPerMillionAtMix: share * usdPerMillionInput + (1 - share) * usdPerMillionOutput,
    apiUsdPerMillionInput: api.usdPerMillionInput,
    apiUsdPerMillionOutput: api.usdPerMillionOutput,
    apiUsdPerMillionAtMix: share * api.usdPerMillionInput + (1 - share) * api.usdPerMillionOutput,
  };
}

export function teamPlan(team: TeamConfig, chargeback: Chargeback | undefined): TeamPlan {
  const budget = team.monthlyBudgetUsd;
  const tokensFor = (usdPerMillion: number | undefined) =>
    budget === undefined || usdPerMillion === undefined
      ? undefined
      : usdPerMillion > 0
        ? (budget / usdPerMillion) * 1e6
        : Infinity;
  return {
    name: team.name,
    rpm: team.rpm,
    tpm: team.tpm,
    monthlyBudgetUsd: budget,
    budgetTokensPerMonth: tokensFor(chargeback?.usdPerMillionAtMix),
    apiTokensForBudget: tokensFor(chargeback?.apiUsdPerMillionAtMix),
  };
}

function fmtM(tokens: number): string {
  return `${(tokens / 1e6).toFixed(1)}M`;
}
