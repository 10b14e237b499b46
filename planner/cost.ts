/**
 * Monthly cost and the break-even against the API. Owned hardware: price ÷ amortization months +
 * power × 730 h × $/kWh. Cloud: $/h × 730 + the model volume. Capacity: the tokens the host can
 * serve in a month at the projected speeds, a stated utilization and the stack's input:output mix.
 */
import { modelVolumeBytes, type StackConfig } from "./config";
import type { HostSpec } from "./host";

export const HOURS_PER_MONTH = 730;

export interface CostLine {
  item: string;
  monthlyUsd: number;
  basis: string;
}

export interface CostEstimate {
  monthlyUsd: number;
  lines: CostLine[];
  utilization: number;
  inputShare: number;
  /** Output tokens per month at full utilization × utilization, with no input. */
  outputTokensPerMonthCapacity: number;
  /** Tokens per month (input + output, at the stack's mix) the host can serve at that utilization. */
  capacityTokensPerMonth: number;
  usdPerMillionOutputTokens: number;
  usdPerMillionTokensAtMix: number;
  apiUsdPerMillionTokensAtMix: number;
  expectedTokensPerMonth: number;
  apiMonthlyUsdAtExpected: number;
  /** Monthly volume at which self-hosting costs what the API costs; null when the host cannot serve it. */
  breakEvenTokensPerMonth: number | null;
  breakEvenReason: string;
}

/** The monthly cost lines: the cloud instance and its model volume, or owned hardware's amortization and power. */
function costLines(costs: NonNullable<StackConfig["costs"]>, host: HostSpec, modelBytes: number): CostLine[] {
  const lines: CostLine[] = [];
  if (host.cloud) {
    const hourly = costs.cloud?.usdPerHour ?? host.cloud.usdPerHour;
    lines.push({
      item: `${host.cloud.instanceType} on-demand`,
      monthlyUsd: hourly * HOURS_PER_MONTH,
      basis: `$${hourly}/h × ${HOURS_PER_MONTH} h`,
    });
    const storageGb = Math.ceil(modelVolumeBytes(host.diskFreeBytes, modelBytes) / 1e9);
    const perGb = costs.cloud?.storageUsdPerGbMonth ?? 0.08;
    lines.push({ item: "model volume", monthlyUsd: storageGb * perGb, basis: `${storageGb} GB × $${perGb}/GB-month` });
  } else if (costs.hardware) {
    const hardware = costs.hardware;
    lines.push({
      item: "hardware amortization",
      monthlyUsd: hardware.priceUsd / hardware.amortizationMonths,
      basis: `$${hardware.priceUsd} ÷ ${hardware.amortizationMonths} months`,
    });
    const kwh = (hardware.powerWatts / 1000) * HOURS_PER_MONTH;
    lines.push({
      item: "power",
      monthlyUsd: kwh * hardware.usdPerKwh,
      basis: `${hardware.powerWatts} W × ${HOURS_PER_MONTH} h = ${kwh.toFixed(0)} kWh × $${hardware.usdPerKwh}/kWh`,
    });
  }
  return lines;
}

/** The monthly volume at which self-hosting costs what the API costs, or null with the reason it never does. */
function breakEven(
  usage: NonNullable<StackConfig["costs"]>["usage"],
  monthlyUsd: number,
  inputShare: number,
  capacityTokensPerMonth: number,
  apiUsdPerMillionTokensAtMix: number,
): { breakEvenTokensPerMonth: number | null; breakEvenReason: string } {
  const { mix, utilization } = usage;
  const volume = apiUsdPerMillionTokensAtMix > 0 ? (monthlyUsd / apiUsdPerMillionTokensAtMix) * 1e6 : Infinity;
  if (!Number.isFinite(volume)) {
    return {
      breakEvenTokensPerMonth: null,
      breakEvenReason: "the API costs nothing at this mix, so self-hosting never breaks even",
    };
  }
  if (volume > capacityTokensPerMonth) {
    return {
      breakEvenTokensPerMonth: null,
      breakEvenReason: `the API would cost this host's $${monthlyUsd.toFixed(0)}/month only at ${(volume / 1e6).toFixed(0)}M tokens/month, but the host serves at most ${(capacityTokensPerMonth / 1e6).toFixed(1)}M tokens/month at ${Math.round(utilization * 100)}% utilization and this mix: the API is cheaper at every volume this host can serve`,
    };
  }
  return {
    breakEvenTokensPerMonth: volume,
    breakEvenReason: `above ${(volume / 1e6).toFixed(1)}M tokens/month (${inputShare * 100 < 100 ? `${mix.input}:${mix.output} input:output` : "input only"}) self-hosting is cheaper than the API; the host serves up to ${(capacityTokensPerMonth / 1e6).toFixed(1)}M`,
  };
}

export function estimateCost(
  costs: NonNullable<StackConfig["costs"]>,
  host: HostSpec,
  modelBytes: number,
  speeds: { decodeTokensPerSecond: number; prefillTokensPerSecond: number },
): CostEstimate {
  const lines = costLines(costs, host, modelBytes);
  const monthlyUsd = lines.reduce((sum, line) => sum + line.monthlyUsd, 0);
  const { mix, utilization, tokensPerMonth } = costs.usage;
  const inputShare = mix.input / (mix.input + mix.output);
  const secondsPerMonth = HOURS_PER_MONTH * 3600 * utilization;
  const secondsPerMixedToken =
    inputShare / speeds.prefillTokensPerSecond + (1 - inputShare) / speeds.decodeTokensPerSecond;
  const capacityTokensPerMonth = secondsPerMonth / secondsPerMixedToken;
  const outputTokensPerMonthCapacity = secondsPerMonth * speeds.decodeTokensPerSecond;
  const apiUsdPerMillionTokensAtMix =
    inputShare * costs.api.usdPerMillionInput + (1 - inputShare) * costs.api.usdPerMillionOutput;
  const usdPerMillionTokensAtMix = capacityTokensPerMonth > 0 ? (monthlyUsd / capacityTokensPerMonth) * 1e6 : Infinity;
  const { breakEvenTokensPerMonth, breakEvenReason } = breakEven(
    costs.usage,
    monthlyUsd,
    inputShare,
    capacityTokensPerMonth,
    apiUsdPerMillionTokensAtMix,
  );
  return {
    monthlyUsd,
    lines,
    utilization,
    inputShare,
    outputTokensPerMonthCapacity,
    capacityTokensPerMonth,
    usdPerMillionOutputTokens:
      outputTokensPerMonthCapacity > 0 ? (monthlyUsd / outputTokensPerMonthCapacity) * 1e6 : Infinity,
    usdPerMillionTokensAtMix,
    apiUsdPerMillionTokensAtMix,
    expectedTokensPerMonth: tokensPerMonth,
    apiMonthlyUsdAtExpected: (tokensPerMonth / 1e6) * apiUsdPerMillionTokensAtMix,
    breakEvenTokensPerMonth,
    breakEvenReason,
  };
}
