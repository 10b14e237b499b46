/**
 * What LlmDeployment records for the kit's policy pack (policy/facts.ts holds the contract): the
 * plan's facts, as an input of the component, so `pulumi preview --policy-pack ./policy` can judge
 * a deployment by the same figures `npm run plan` prints. Nothing here is a secret: the secrets
 * are described only by whether they arrived as Pulumi secrets.
 */
import * as pulumi from "@pulumi/pulumi";
import { DEFAULTS } from "../planner/config";
import { ConfigError } from "../planner/errors";
import { buildPlan, type Plan, type PlanOptions } from "../planner/plan";
import { frontDoorPlan } from "../planner/front-door";
import {
  FACTS_VERSION,
  SECRET_KEYS,
  type GuardrailFacts,
  type SecretArrival,
  type SecretKey,
  type Verdict,
} from "../policy/facts";

/** The value after `flag` in an argument list (ggml-rpc-server's --host, --port). */
function argAfter(args: readonly string[], flag: string): string | undefined {
  const index = args.indexOf(flag);
  return index >= 0 ? args[index + 1] : undefined;
}

const verdictOf = (plan: Pick<Plan, "fits" | "refusal">): Verdict => ({
  fits: plan.fits,
  refusal: plan.refusal ?? null,
});

/**
 * The planner's verdict with the kit's own thresholds, where the stack lowered one: a split's
 * projection.minDecodeTokensPerSecond below the kit's floor, or compareSplitWithCatalogHosts off.
 * Those two only judge splits, so a single host never needs the second plan.
 */
export function verdictAtKitThresholds(plan: Plan, options?: PlanOptions): GuardrailFacts["verdictAtKitThresholds"] {
  const projection = plan.config.projection;
  if (!plan.cluster) return null;
  const relaxed: string[] = [];
  if (projection.minDecodeTokensPerSecond < DEFAULTS.minDecodeTokensPerSecond) {
    relaxed.push(
      `projection.minDecodeTokensPerSecond to ${projection.minDecodeTokensPerSecond} (kit: ${DEFAULTS.minDecodeTokensPerSecond})`,
    );
  }
  if (!projection.compareSplitWithCatalogHosts)
    relaxed.push("projection.compareSplitWithCatalogHosts to false (kit: true)");
  if (relaxed.length === 0) return null;
  const config = {
    ...plan.config,
    projection: {
      ...projection,
      minDecodeTokensPerSecond: Math.max(projection.minDecodeTokensPerSecond, DEFAULTS.minDecodeTokensPerSecond),
      compareSplitWithCatalogHosts: true,
    },
  };
  try {
    return { ...verdictOf(buildPlan(plan.stack, config, options)), relaxed };
  } catch (error) {
    // Only the thresholds differ from a plan that just succeeded, so this is not expected; if the
    // planner still refuses the stricter stack outright, that is its verdict, recorded as a refusal.
    if (error instanceof ConfigError) return { fits: false, refusal: error.message, relaxed };
    throw error;
  }
}

/** Everything but the secrets: known from the plan alone. */
export function planFacts(plan: Plan, options?: PlanOptions): Omit<GuardrailFacts, "secrets"> {
  const { serving, deployment } = plan.config;
  const door = frontDoorPlan(plan.stack, serving);
  return {
    version: FACTS_VERSION,
    stack: plan.stack,
    model: { repo: plan.config.model.repo, tier: plan.config.model.tier },
    verdict: verdictOf(plan),
    verdictAtKitThresholds: verdictAtKitThresholds(plan, options),
    monthlyCostUsd: plan.cost?.monthlyUsd ?? null,
    serving: {
      bindAddress: serving.bindAddress,
      port: serving.port,
      tls: door?.tlsSource ?? null,
      allowedCidrs: [...serving.allowedCidrs],
      allowPublic: serving.allowPublic,
    },
    // What each worker's ggml-rpc-server is actually started with, not what the stack asked for.
    rpcWorkers: (plan.cluster?.workers ?? []).map((worker) => ({
      id: worker.id,
      configPath: `hosts[${worker.index}]`,
      listenAddress: argAfter(worker.rpcServerArgs, "--host") ?? "0.0.0.0",
      port: Number(argAfter(worker.rpcServerArgs, "--port") ?? worker.rpcPort),
    })),
    deployment: { purgeModels: deployment.purgeModels },
  };
}

/** How one secret input arrived: the Output's own secret flag, known in preview too. */
async function arrival(value: pulumi.Input<string> | undefined): Promise<SecretArrival> {
  if (value === undefined) return "absent";
  return (await pulumi.isSecret(pulumi.output(value))) ? "secret" : "plaintext";
}

/** The facts, as the component's input: resolved once every secret's flag is known (never its value). */
export function guardrailFacts(
  plan: Plan,
  secrets: Partial<Record<SecretKey, pulumi.Input<string>>>,
  options?: PlanOptions,
): pulumi.Output<GuardrailFacts> {
  const flags = Promise.all(SECRET_KEYS.map(async (key) => [key, await arrival(secrets[key])] as const)).then(
    (entries) => Object.fromEntries(entries) as Record<SecretKey, SecretArrival>,
  );
  const facts = planFacts(plan, options);
  return pulumi.output(flags).apply((arrived) => ({ ...facts, secrets: arrived }));
}
