/**
 * The plan's projection again, with the host's memory bandwidth as HostPrep measured it
 * (ansible-free-scripts/measure-bandwidth.sh) in place of the catalog's or the stack's figure. It is
 * estimate() — the one estimator — run on the flags the plan chose, with the same tensors,
 * architecture and projection depths; only host.memory.achievableBandwidth differs (the measured
 * figure replaces the datasheet × achievable fraction, and any fabric limit, as a stated
 * memory.measuredBandwidthGBps does in planner/host.ts). Pure: no I/O.
 */
import type { Catalog } from "./catalog";
import { estimate } from "./estimate";
import type { HostSpec } from "./host";
import type { Plan } from "./plan";
import type { Projection } from "./speed";

export interface Reprojection {
  /** The measured read bandwidth the projection used, GB/s (1e9 bytes/s). */
  bandwidthGBps: number;
  decodeTokensPerSecond: number;
  prefillTokensPerSecond: number;
  ttftSeconds: number;
  projection: Projection;
}

/** The plan's host with its achievable memory bandwidth replaced by a measurement. */
export function hostWithMeasuredBandwidth(
  host: HostSpec,
  bandwidthGBps: number,
  source = "measured on the host by HostPrep",
): HostSpec {
  if (!(Number.isFinite(bandwidthGBps) && bandwidthGBps > 0)) {
    throw new RangeError(`internal: a measured bandwidth must be a positive number of GB/s, got ${bandwidthGBps}`);
  }
  return {
    ...host,
    memory: { ...host.memory, achievableBandwidth: bandwidthGBps * 1e9, basis: `${source}: ${bandwidthGBps} GB/s` },
  };
}

/** Projects the plan's chosen flags on its host at `bandwidthGBps`; everything else as the plan had it. */
export function reprojectWithBandwidth(
  plan: Plan,
  bandwidthGBps: number,
  // The catalog the plan was made with, unless a caller asks what another one would say.
  catalog: Catalog = plan.placement.estimate.speedInputs.catalog,
): Reprojection {
  const host = hostWithMeasuredBandwidth(plan.host, bandwidthGBps);
  // The options planner/offload.ts gives estimate() when it chooses (estimateOf), so a bandwidth equal
  // to the plan's own reproduces the plan's projection exactly.
  const result = estimate(plan.tensors, plan.model.architecture, host, plan.placement.flags, {
    catalog,
    decodeDepthTokens: Math.min(plan.config.projection.decodeDepthTokens, plan.config.serving.contextLength),
    ttftPromptTokens: plan.config.projection.ttftPromptTokens,
    // A split: the head's bandwidth is the measured one; the workers keep what the plan said of them.
    ...(plan.cluster ? { rpc: plan.cluster.rpc } : {}),
  });
  return {
    bandwidthGBps,
    decodeTokensPerSecond: result.projection.decodeTokensPerSecond,
    prefillTokensPerSecond: result.projection.prefillTokensPerSecond,
    ttftSeconds: result.projection.ttftSeconds,
    projection: result.projection,
  };
}
