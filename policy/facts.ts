/**
 * The facts the kit's LlmDeployment records for this policy pack, as an input property of the
 * component (`guardrails`), and the reader that checks their shape.
 *
 * Why an input of the component: the analyzer sees each resource's inputs when it is registered
 * (resource policies), in preview and in `up` alike, before anything runs on a host. The plan's
 * verdict, the monthly cost and the serving settings exist nowhere else as resource data (the
 * remote steps carry shell commands, not the plan), and the analyzer never sees the stack's
 * configuration. Secrets are unwrapped before a validation policy sees a value (@pulumi/policy
 * deserializes resource properties with secrets unwrapped), so whether each kimi-kit secret reached
 * the deployment as a Pulumi secret is recorded here as a fact too.
 *
 * This file is the contract: components/guardrail-facts.ts writes it (importing these types), the
 * policies read it. It imports nothing, so the pack stays usable outside the kit's repository.
 */

/** The component type that carries the facts, and the input property that holds them. */
export const LLM_DEPLOYMENT_TYPE = "kimi-kit:index:LlmDeployment";
export const FACTS_PROPERTY = "guardrails";
export const FACTS_VERSION = 1;

export const SECRET_KEYS = ["apiKey", "sshPrivateKey", "huggingFaceToken", "tlsCertificate", "tlsPrivateKey"] as const;
export type SecretKey = (typeof SECRET_KEYS)[number];
/** How a kimi-kit secret reached the deployment: as a Pulumi secret, as plain text, or not at all. */
export type SecretArrival = "secret" | "plaintext" | "absent";

export interface Verdict {
  fits: boolean;
  /** The planner's reason when it refuses; null when it accepts. */
  refusal: string | null;
}

export interface GuardrailFacts {
  version: typeof FACTS_VERSION;
  /** The kit's stack name (the Pulumi stack the program runs). */
  stack: string;
  model: { repo: string; tier: string };
  /** The planner's verdict on the stack as written. */
  verdict: Verdict;
  /**
   * Where the stack lowered a threshold the planner judges a split by (projection.*), the verdict
   * with the kit's own thresholds, and which settings were relaxed; null when it kept them.
   */
  verdictAtKitThresholds: (Verdict & { relaxed: string[] }) | null;
  /** The plan's monthly cost (USD, the `monthlyCostUsd` output); null when the stack sets no costs. */
  monthlyCostUsd: number | null;
  serving: {
    bindAddress: string;
    port: number;
    /** The TLS front door's certificate source; null on loopback, where there is no front door. */
    tls: "internal-ca" | "secrets" | null;
    /** What the host firewall admits to the port (serving.allowedCidrs). */
    allowedCidrs: string[];
    allowPublic: boolean;
  };
  /** A split's RPC workers: where each ggml-rpc-server listens (its --host and --port). */
  rpcWorkers: { id: string; configPath: string; listenAddress: string; port: number }[];
  deployment: { purgeModels: boolean };
  secrets: Record<SecretKey, SecretArrival>;
}

/** The facts, or what is wrong with them (a shape this pack does not know). */
export type FactsReading = { facts: GuardrailFacts } | { problem: string };

const isRecord = (value: unknown): value is Record<string, unknown> =>
  typeof value === "object" && value !== null && !Array.isArray(value);
const isString = (value: unknown): value is string => typeof value === "string";
const isStringArray = (value: unknown): value is string[] => Array.isArray(value) && value.every(isString);
const isPort = (value: unknown): value is number =>
  typeof value === "number" && Number.isInteger(value) && value >= 1 && value <= 65535;

function isVerdict(value: unknown): value is Verdict {
  return isRecord(value) && typeof value.fits === "boolean" && (value.refusal === null || isString(value.refusal));
}

/**
 * Reads the `guardrails` input of an LlmDeployment. The policies trust nothing the program wrote:
 * a missing or malformed field is a problem named by its path, so a pack and a kit of different
 * versions fail loudly instead of passing silently.
 */
export function readFacts(props: Record<string, unknown>): FactsReading {
  const raw = props[FACTS_PROPERTY];
  if (raw === undefined)
    return {
      problem: `no ${FACTS_PROPERTY} input (a kit older than this policy pack, or PULUMI_NODEJS_SKIP_COMPONENT_INPUTS set)`,
    };
  if (!isRecord(raw)) return { problem: `${FACTS_PROPERTY} is not an object` };
  if (raw.version !== FACTS_VERSION)
    return {
      problem: `${FACTS_PROPERTY}.version is ${JSON.stringify(raw.version)}; this pack reads version ${FACTS_VERSION}`,
    };
  const bad = (path: string): FactsReading => ({ problem: `${FACTS_PROPERTY}.${path} is missing or malformed` });
  if (!isString(raw.stack)) return bad("stack");
  const model = raw.model;
  if (!isRecord(model) || !isString(model.repo) || !isString(model.tier)) return bad("model");
  if (!isVerdict(raw.verdict)) return bad("verdict");
  const strict = raw.verdictAtKitThresholds;
  if (strict !== null && !(isRecord(strict) && isVerdict(strict) && isStringArray(strict.relaxed)))
    return bad("verdictAtKitThresholds");
  if (raw.monthlyCostUsd !== null && !(typeof raw.monthlyCostUsd === "number" && Number.isFinite(raw.monthlyCostUsd)))
    return bad("monthlyCostUsd");
  const serving = raw.serving;
  if (
    !isRecord(serving) ||
    !isString(serving.bindAddress) ||
    !isPort(serving.port) ||
    !(serving.tls === null || serving.tls === "internal-ca" || serving.tls === "secrets") ||
    !isStringArray(serving.allowedCidrs) ||
    typeof serving.allowPublic !== "boolean"
  ) {
    return bad("serving");
  }
  const workers = raw.rpcWorkers;
  if (
    !Array.isArray(workers) ||
    !workers.every(
      (worker) =>
        isRecord(worker) &&
        isString(worker.id) &&
        isString(worker.configPath) &&
        isString(worker.listenAddress) &&
        isPort(worker.port),
    )
  ) {
    return bad("rpcWorkers");
  }
  const deployment = raw.deployment;
  if (!isRecord(deployment) || typeof deployment.purgeModels !== "boolean") return bad("deployment");
  const secrets = raw.secrets;
  if (
    !isRecord(secrets) ||
    !SECRET_KEYS.every((key) => secrets[key] === "secret" || secrets[key] === "plaintext" || secrets[key] === "absent")
  )
    return bad("secrets");
  // Every field above has been checked against GuardrailFacts.
  return { facts: raw as unknown as GuardrailFacts };
}
