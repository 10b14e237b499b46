/**
 * Fits estimate()'s CPU factors to this machine from measured llama-server runs, for the benches
 * that hold estimate() against this machine (bench/accuracy.ts, bench/rpc.ts).
 *
 * Each calibration case is a command line measured here and estimate() of that same command line
 * under UNIT_CPU_FACTORS: its decode time per token is then bytes ÷ bandwidth plus layers × 0, and
 * its prefill rate is the one at efficiency 1, so the fitted factors mean exactly what estimate()
 * multiplies them by. Two models give two equations in the two decode unknowns (1 ÷ efficiency and
 * the per-layer cost); one model, or a fit that comes out negative, keeps the catalog's per-layer
 * cost and fits the efficiency alone.
 */
import type { CpuFactorOverrides, Projection } from "../../planner/speed";

export const UNIT_CPU_FACTORS: CpuFactorOverrides = {
  decodeEfficiency: 1,
  decodeSecondsPerLayer: 0,
  decodeComputeEfficiency: 1,
  prefillEfficiency: 1,
  source: "unit",
};

export interface CalibrationCase {
  label: string;
  /** Layers the decode step runs on the CPU: each pays the per-layer cost. */
  layers: number;
  /** Measured here: tokens per second. */
  measured: { decode: number; prefill: number };
  /** estimate()'s projection of the same command line under UNIT_CPU_FACTORS. */
  unit: Projection;
  /** The prefill rate that projection gives for the measured prompt. */
  unitPrefill: number;
}

export interface FittedCpuFactors {
  factors: CpuFactorOverrides;
  perLayerSeconds: number;
  /** False when the per-layer cost is the catalog's (one case, or the two-case fit was not physical). */
  fitted: boolean;
  /** The cases the factors came from, largest first. */
  calibration: CalibrationCase[];
}

export function median(values: readonly number[]): number {
  return [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;
}

/**
 * Seconds per token the unit projection spends streaming bytes: Σ bytes ÷ bandwidth over its
 * devices. Not 1 ÷ its decode rate, which is the larger of this and the threads' arithmetic (the
 * roofline) and so would not be bytes ÷ bandwidth when a few threads (-t 1) make the unit
 * arithmetic term the larger one.
 */
export function streamSecondsPerToken(unit: Projection): number {
  return unit.decodeTraffic.reduce((sum, traffic) => sum + traffic.bytesPerToken / traffic.effectiveBandwidth, 0);
}

/**
 * Decode efficiency and per-layer cost from `largest` and `smallest` (two equations), prefill
 * efficiency from `largest`. `publishedPerLayer` is the catalog's per-layer cost, kept when the fit
 * cannot be made; `source` names the fit for estimate()'s factor list.
 */
export function fitCpuFactors(
  largest: CalibrationCase,
  smallest: CalibrationCase | undefined,
  publishedPerLayer: number,
  source: (labels: string) => string,
): FittedCpuFactors {
  const secondsA = 1 / largest.measured.decode;
  const streamA = streamSecondsPerToken(largest.unit);
  let inverseEfficiency = (secondsA - largest.layers * publishedPerLayer) / streamA;
  let perLayerSeconds = publishedPerLayer;
  let fitted = false;
  if (smallest && smallest !== largest) {
    const secondsB = 1 / smallest.measured.decode;
    const streamB = streamSecondsPerToken(smallest.unit);
    const determinant = streamA * smallest.layers - streamB * largest.layers;
    if (determinant !== 0) {
      const x = (secondsA * smallest.layers - secondsB * largest.layers) / determinant;
      const c = (streamA * secondsB - streamB * secondsA) / determinant;
      if (x > 0 && c >= 0) {
        inverseEfficiency = x;
        perLayerSeconds = c;
        fitted = true;
      }
    }
  }
  const calibration = fitted && smallest ? [largest, smallest] : [largest];
  return {
    factors: {
      decodeEfficiency: 1 / inverseEfficiency,
      decodeSecondsPerLayer: perLayerSeconds,
      // The fit measures the whole token time as bytes and per-layer cost, so the arithmetic term
      // is left at its peak: it binds only where the streaming term could not have been fitted.
      decodeComputeEfficiency: 1,
      prefillEfficiency: largest.measured.prefill / largest.unitPrefill,
      source: source(calibration.map((entry) => entry.label).join(" and ")),
    },
    perLayerSeconds,
    fitted,
    calibration,
  };
}
