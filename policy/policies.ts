/**
 * The kit's guardrails as @pulumi/policy resource policies. Each reads what the analyzer is given
 * for one resource at registration (its type, name, URN and inputs, and the stack's tags), in
 * `pulumi preview` and `pulumi up` alike:
 * - the LlmDeployment's `guardrails` input (facts.ts) for the plan's cost, verdict, serving,
 *   RPC workers, purge setting and secrets;
 * - the remote steps' own `connection` (and the docker provider's ssh options) for pinned host keys,
 *   since that is what will actually connect.
 * Every message reads `<policy>: <resource>: found <value>; allowed: <what is allowed>`.
 */
import {
  UnknownValueError,
  type PolicyConfigSchema,
  type ResourceValidationArgs,
  type ResourceValidationPolicy,
} from "@pulumi/policy";
import { FACTS_PROPERTY, LLM_DEPLOYMENT_TYPE, readFacts, SECRET_KEYS, type GuardrailFacts } from "./facts";
import { cidr, inCidr, isLoopback, isWholeInternet, RFC1918 } from "./net";

export const POLICY = {
  facts: "kimi-guardrail-facts",
  cost: "kimi-monthly-cost-cap",
  endpoint: "kimi-endpoint-exposure",
  hostKey: "kimi-host-key-pinned",
  secrets: "kimi-secrets-encrypted",
  tier: "kimi-model-tier-verdict",
  rpc: "kimi-rpc-private-address",
  production: "kimi-production-keeps-shards",
} as const;

/** The remote steps the kit registers, on either executor (components/exec/remote-exec.ts). */
export const REMOTE_STEP_TYPES = [
  "command:remote:Command",
  "command:remote:CopyToRemote",
  "pulumi-nodejs:dynamic/kimi-kit:SshCommand",
] as const;
export const DOCKER_PROVIDER_TYPE = "pulumi:providers:docker";

// ------------------------------------------------------------------ shared pieces

/** The stack's name, from the resource's URN (urn:pulumi:<stack>::<project>::<type>::<name>). */
export function stackOfUrn(urn: string): string {
  const head = urn.split("::")[0] ?? "";
  return head.startsWith("urn:pulumi:") ? head.slice("urn:pulumi:".length) : head;
}

function resourceLabel(args: Pick<ResourceValidationArgs, "type" | "name">): string {
  return `${args.type} ${args.name}`;
}

function message(
  policy: string,
  args: Pick<ResourceValidationArgs, "type" | "name">,
  found: string,
  allowed: string,
): string {
  return `${policy}: ${resourceLabel(args)}: found ${found}; allowed: ${allowed}`;
}

const usd = (value: number) => `$${value.toFixed(2)}`;

/**
 * The facts of an LlmDeployment, or undefined for any other resource and for facts that cannot be
 * read (kimi-guardrail-facts reports those, once, instead of every policy repeating it).
 */
function factsOf(args: ResourceValidationArgs): GuardrailFacts | undefined {
  if (args.type !== LLM_DEPLOYMENT_TYPE) return undefined;
  const reading = readFacts(args.props);
  return "facts" in reading ? reading.facts : undefined;
}

/** A policy's config with the schema's defaults filled in (the CLI fills them too; unit tests call directly). */
function configOf<T extends object>(args: ResourceValidationArgs, defaults: T): T {
  return { ...defaults, ...(args.getConfig<Partial<T>>() ?? {}) };
}

// ------------------------------------------------------------------ kimi-guardrail-facts

export const guardrailFactsPolicy: ResourceValidationPolicy = {
  name: POLICY.facts,
  description: `Every LlmDeployment carries the ${FACTS_PROPERTY} facts the other kimi-kit policies read, in a shape this pack knows.`,
  validateResource: (args, reportViolation) => {
    if (args.type !== LLM_DEPLOYMENT_TYPE) return;
    const reading = readFacts(args.props);
    if ("problem" in reading) {
      reportViolation(
        message(
          POLICY.facts,
          args,
          reading.problem,
          `an LlmDeployment from a kit that records ${FACTS_PROPERTY} (version the pack reads); without them no other kimi-kit policy can check this deployment`,
        ),
      );
    }
  },
};

// ------------------------------------------------------------------ kimi-monthly-cost-cap

export interface CostCapConfig {
  /** The cap for every stack without its own entry. */
  maxMonthlyUsd?: number;
  /** Caps by stack name; they win over maxMonthlyUsd. */
  maxMonthlyUsdByStack: Record<string, number>;
  /** Caps by team, the team named by the stack tag `teamTag`; a stack's own cap wins over its team's. */
  maxMonthlyUsdByTeam: Record<string, number>;
  teamTag: string;
}

export const COST_CAP_DEFAULTS: CostCapConfig = {
  maxMonthlyUsdByStack: {},
  maxMonthlyUsdByTeam: {},
  teamTag: "kimi-kit:team",
};

const usdAmount = { type: "number", minimum: 0 } as const;
const costCapSchema: PolicyConfigSchema = {
  properties: {
    maxMonthlyUsd: { ...usdAmount, description: "the monthly cap (USD) for every stack without its own" },
    maxMonthlyUsdByStack: {
      type: "object",
      additionalProperties: usdAmount,
      default: {},
      description: "caps by stack name",
    },
    maxMonthlyUsdByTeam: {
      type: "object",
      additionalProperties: usdAmount,
      default: {},
      description: "caps by team (the stack tag teamTag names the team)",
    },
    teamTag: { type: "string", default: COST_CAP_DEFAULTS.teamTag, description: "the stack tag naming a stack's team" },
  },
};

/** The cap that applies to a stack and where it comes from, or undefined when none does. */
export function costCapFor(
  stack: string,
  tags: ReadonlyMap<string, string>,
  config: CostCapConfig,
): { cap: number; source: string } | undefined {
  const own = config.maxMonthlyUsdByStack[stack];
  if (own !== undefined) return { cap: own, source: `maxMonthlyUsdByStack.${stack}` };
  const team = tags.get(config.teamTag);
  const teamCap = team === undefined ? undefined : config.maxMonthlyUsdByTeam[team];
  if (team !== undefined && teamCap !== undefined)
    return { cap: teamCap, source: `maxMonthlyUsdByTeam.${team} (stack tag ${config.teamTag}=${team})` };
  if (config.maxMonthlyUsd !== undefined) return { cap: config.maxMonthlyUsd, source: "maxMonthlyUsd" };
  return undefined;
}

export const monthlyCostCapPolicy: ResourceValidationPolicy = {
  name: POLICY.cost,
  description:
    "A deployment's planned monthly cost (the plan's monthlyCostUsd) stays within the cap set for its stack or team.",
  configSchema: costCapSchema,
  validateResource: (args, reportViolation) => {
    const facts = factsOf(args);
    if (!facts) return;
    const stack = stackOfUrn(args.urn);
    const limit = costCapFor(stack, args.stackTags, configOf(args, COST_CAP_DEFAULTS));
    if (!limit) return;
    const allowed = `at most ${usd(limit.cap)} a month (${limit.source})`;
    if (facts.monthlyCostUsd === null) {
      reportViolation(
        message(
          POLICY.cost,
          args,
          `no monthly cost for stack ${stack} (it sets no kimi-kit:costs)`,
          `${allowed}, which needs kimi-kit:costs so the plan prices the stack`,
        ),
      );
    } else if (facts.monthlyCostUsd > limit.cap) {
      reportViolation(
        message(
          POLICY.cost,
          args,
          `a planned monthly cost of ${usd(facts.monthlyCostUsd)} for stack ${stack}`,
          allowed,
        ),
      );
    }
  },
};

// ------------------------------------------------------------------ kimi-endpoint-exposure

export interface EndpointConfig {
  /** Whether an allow-list may admit every address (0.0.0.0/0), which the kit allows with serving.allowPublic. */
  allowWholeInternet: boolean;
  /** The certificate sources the platform accepts for the TLS front door. */
  allowedTlsSources: ("internal-ca" | "secrets")[];
}

export const ENDPOINT_DEFAULTS: EndpointConfig = {
  allowWholeInternet: false,
  allowedTlsSources: ["internal-ca", "secrets"],
};

export const endpointExposurePolicy: ResourceValidationPolicy = {
  name: POLICY.endpoint,
  description:
    "An endpoint reachable beyond loopback has TLS and an allow-list (serving.allowedCidrs) narrower than the whole internet.",
  configSchema: {
    properties: {
      allowWholeInternet: {
        type: "boolean",
        default: false,
        description: "accept an allow-list with 0.0.0.0/0 (serving.allowPublic)",
      },
      allowedTlsSources: {
        type: "array",
        items: { type: "string", enum: ["internal-ca", "secrets"] },
        default: ENDPOINT_DEFAULTS.allowedTlsSources,
        description: "accepted serving.tls.source values",
      },
    },
  },
  validateResource: (args, reportViolation) => {
    const facts = factsOf(args);
    if (!facts) return;
    const { serving } = facts;
    if (isLoopback(serving.bindAddress)) return;
    const config = configOf(args, ENDPOINT_DEFAULTS);
    const where = `${serving.bindAddress}:${serving.port}`;
    const problems: string[] = [];
    if (serving.tls === null) problems.push("no TLS");
    else if (!config.allowedTlsSources.includes(serving.tls)) problems.push(`TLS from ${serving.tls}`);
    if (serving.allowedCidrs.length === 0) problems.push("no allow-list");
    const open = serving.allowedCidrs.filter(isWholeInternet);
    if (open.length > 0 && !config.allowWholeInternet)
      problems.push(`an allow-list admitting the whole internet (${open.join(", ")})`);
    if (problems.length === 0) return;
    const tls =
      config.allowedTlsSources.length > 0 ? `TLS (serving.tls.source ${config.allowedTlsSources.join(" or ")})` : "TLS";
    const list = config.allowWholeInternet
      ? "a non-empty serving.allowedCidrs"
      : "a serving.allowedCidrs narrower than /0";
    reportViolation(
      message(
        POLICY.endpoint,
        args,
        `an endpoint on ${where} (beyond loopback) with ${problems.join(" and ")} [serving.tls ${serving.tls ?? "none"}, serving.allowedCidrs ${JSON.stringify(serving.allowedCidrs)}]`,
        `serving.bindAddress 127.0.0.1, or beyond loopback only with ${tls} and ${list}`,
      ),
    );
  },
};

// ------------------------------------------------------------------ kimi-host-key-pinned

interface SshEndpointProps {
  host?: unknown;
  port?: unknown;
  user?: unknown;
  hostKey?: unknown;
  proxy?: unknown;
}

function describeEndpoint(connection: SshEndpointProps): string {
  const user = typeof connection.user === "string" ? connection.user : "root";
  const port = typeof connection.port === "number" ? connection.port : 22;
  return `${user}@${String(connection.host)}:${port}`;
}

/** Every hop of a connection (the target and its bastions) that has no pinned host key. */
function unpinnedHops(connection: SshEndpointProps): string[] {
  const hops: string[] = [];
  for (let hop: unknown = connection, depth = 0; hop && typeof hop === "object" && depth < 8; depth++) {
    const current = hop as SshEndpointProps;
    if (typeof current.hostKey !== "string" || current.hostKey.trim() === "")
      hops.push(depth === 0 ? describeEndpoint(current) : `bastion ${describeEndpoint(current)}`);
    hop = current.proxy;
  }
  return hops;
}

/** The docker provider's ssh options as a list (providers may receive arrays JSON-encoded). */
function sshOptionsOf(value: unknown): string[] {
  if (Array.isArray(value)) return value.filter((item): item is string => typeof item === "string");
  if (typeof value === "string") {
    try {
      const parsed: unknown = JSON.parse(value);
      return Array.isArray(parsed) ? parsed.filter((item): item is string => typeof item === "string") : [value];
    } catch {
      return value.split(/\s+/);
    }
  }
  return [];
}

/** Whether the options check the host key against a known_hosts file (what the kit pins the key into). */
function checksHostKey(options: string[]): boolean {
  const settings = options.join(" ");
  return (
    /StrictHostKeyChecking=yes\b/.test(settings) &&
    /UserKnownHostsFile=\S+/.test(settings) &&
    !/UserKnownHostsFile=\/dev\/null\b/.test(settings)
  );
}

const PIN_ADVICE =
  "a pinned host key in connection.hostKey (the kit sets it from kimi-kit:host.ssh.hostPublicKey, or hosts[i].ssh.hostPublicKey in a split)";

export const hostKeyPinnedPolicy: ResourceValidationPolicy = {
  name: POLICY.hostKey,
  description:
    "Every SSH connection the deployment makes (remote steps, the docker provider) checks a pinned host key.",
  validateResource: (args, reportViolation) => {
    try {
      if ((REMOTE_STEP_TYPES as readonly string[]).includes(args.type)) {
        const connection = args.props.connection as unknown;
        if (!connection || typeof connection !== "object") {
          reportViolation(message(POLICY.hostKey, args, "a remote step with no connection", PIN_ADVICE));
          return;
        }
        const hops = unpinnedHops(connection as SshEndpointProps);
        if (hops.length > 0)
          reportViolation(
            message(
              POLICY.hostKey,
              args,
              `an SSH connection to ${hops.join(" via ")} with no connection.hostKey`,
              PIN_ADVICE,
            ),
          );
      } else if (args.type === DOCKER_PROVIDER_TYPE) {
        const host = args.props.host;
        if (typeof host !== "string" || !host.startsWith("ssh://")) return;
        const options = sshOptionsOf(args.props.sshOpts);
        if (!checksHostKey(options)) {
          reportViolation(
            message(
              POLICY.hostKey,
              args,
              `docker over ${host} with ssh options ${JSON.stringify(options)}`,
              "ssh options with StrictHostKeyChecking=yes and a UserKnownHostsFile holding the pinned key (what the kit's LlamaServer sets)",
            ),
          );
        }
      }
    } catch (error) {
      // A connection that depends on a resource not created yet (a cloud host's address in
      // preview) is unknown here; `up` registers the step with it known and checks it then.
      if (error instanceof UnknownValueError) return;
      throw error;
    }
  },
};

// ------------------------------------------------------------------ kimi-secrets-encrypted

export const secretsEncryptedPolicy: ResourceValidationPolicy = {
  name: POLICY.secrets,
  description:
    "Every kimi-kit secret (API key, SSH key, Hugging Face token, TLS certificate and key) reaches the deployment as a Pulumi secret, never plain text.",
  validateResource: (args, reportViolation) => {
    const facts = factsOf(args);
    if (!facts) return;
    const plain = SECRET_KEYS.filter((key) => facts.secrets[key] === "plaintext");
    for (const key of plain) {
      reportViolation(
        message(
          POLICY.secrets,
          args,
          `kimi-kit:${key} passed to the deployment as plain text`,
          `a Pulumi secret (\`pulumi config set --secret kimi-kit:${key} …\`, or pulumi.secret(…) in a program), so it is encrypted in the state`,
        ),
      );
    }
  },
};

// ------------------------------------------------------------------ kimi-model-tier-verdict

export interface TierConfig {
  /** Whether a stack may deploy a split the planner accepts only because the stack lowered its thresholds. */
  allowRelaxedThresholds: boolean;
}

export const TIER_DEFAULTS: TierConfig = { allowRelaxedThresholds: false };

export const modelTierVerdictPolicy: ResourceValidationPolicy = {
  name: POLICY.tier,
  description: "The model tier is one the planner accepts for the stack's hosts, judged by the kit's own thresholds.",
  configSchema: {
    properties: {
      allowRelaxedThresholds: {
        type: "boolean",
        default: false,
        description:
          "accept a split the planner refuses at the kit's thresholds (projection.minDecodeTokensPerSecond, compareSplitWithCatalogHosts) but accepts at the stack's own",
      },
    },
  },
  validateResource: (args, reportViolation) => {
    const facts = factsOf(args);
    if (!facts) return;
    const what = `${facts.model.repo} ${facts.model.tier}`;
    if (!facts.verdict.fits) {
      reportViolation(
        message(
          POLICY.tier,
          args,
          `${what}, which the planner refuses: ${facts.verdict.refusal ?? "(no reason recorded)"}`,
          "a tier the planner accepts for these hosts (npm run plan -- --stack NAME lists the tiers that fit)",
        ),
      );
      return;
    }
    const strict = facts.verdictAtKitThresholds;
    if (strict && !strict.fits && !configOf(args, TIER_DEFAULTS).allowRelaxedThresholds) {
      reportViolation(
        message(
          POLICY.tier,
          args,
          `${what}, accepted only because the stack relaxed ${strict.relaxed.join(" and ")}; at the kit's thresholds the planner refuses it: ${strict.refusal ?? "(no reason recorded)"}`,
          "a tier the planner accepts at the kit's thresholds (or allowRelaxedThresholds: true in this policy's config)",
        ),
      );
    }
  },
};

// ------------------------------------------------------------------ kimi-rpc-private-address

export interface RpcConfig {
  /** Where ggml-rpc-server may listen (it has no authentication). */
  privateCidrs: string[];
}

export const RPC_DEFAULTS: RpcConfig = { privateCidrs: [...RFC1918] };

export const rpcPrivateAddressPolicy: ResourceValidationPolicy = {
  name: POLICY.rpc,
  description:
    "RPC workers (ggml-rpc-server, no authentication) listen only on a private address inside the platform's private ranges, never on a public one or on all interfaces.",
  configSchema: {
    properties: {
      privateCidrs: {
        type: "array",
        items: { type: "string" },
        minItems: 1,
        default: RPC_DEFAULTS.privateCidrs,
        description: "CIDR blocks an RPC worker may listen in",
      },
    },
  },
  validateResource: (args, reportViolation) => {
    const facts = factsOf(args);
    if (!facts) return;
    const { privateCidrs } = configOf(args, RPC_DEFAULTS);
    const malformed = privateCidrs.filter((block) => cidr(block) === undefined);
    if (malformed.length > 0)
      throw new Error(`${POLICY.rpc}: privateCidrs holds malformed CIDR blocks: ${malformed.join(", ")}`);
    for (const worker of facts.rpcWorkers) {
      const inside =
        worker.listenAddress !== "0.0.0.0" && privateCidrs.some((block) => inCidr(worker.listenAddress, block));
      if (!inside) {
        reportViolation(
          message(
            POLICY.rpc,
            args,
            `RPC worker ${worker.id} (${worker.configPath}.privateAddress) listening on ${worker.listenAddress}:${worker.port}`,
            `an address inside ${privateCidrs.join(", ")} (privateCidrs); ggml-rpc-server has no authentication`,
          ),
        );
      }
    }
  },
};

// ------------------------------------------------------------------ kimi-production-keeps-shards

export interface ProductionConfig {
  /** Stack names that are production. */
  productionStacks: string[];
  /** A stack tag that marks a stack production when its value is "true". */
  productionTag: string;
}

export const PRODUCTION_DEFAULTS: ProductionConfig = { productionStacks: [], productionTag: "kimi-kit:production" };

/** Why a stack counts as production, or undefined when it does not. */
export function productionReason(
  stack: string,
  tags: ReadonlyMap<string, string>,
  config: ProductionConfig,
): string | undefined {
  if (config.productionStacks.includes(stack)) return `listed in productionStacks`;
  if (tags.get(config.productionTag)?.toLowerCase() === "true") return `stack tag ${config.productionTag}=true`;
  return undefined;
}

export const productionKeepsShardsPolicy: ResourceValidationPolicy = {
  name: POLICY.production,
  description:
    "A production stack keeps its model shards on destroy (deployment.purgeModels: false): re-downloading hundreds of GB is an outage.",
  configSchema: {
    properties: {
      productionStacks: {
        type: "array",
        items: { type: "string" },
        default: [],
        description: "stack names that are production",
      },
      productionTag: {
        type: "string",
        default: PRODUCTION_DEFAULTS.productionTag,
        description: 'a stack tag whose value "true" marks the stack production',
      },
    },
  },
  validateResource: (args, reportViolation) => {
    const facts = factsOf(args);
    if (!facts || !facts.deployment.purgeModels) return;
    const stack = stackOfUrn(args.urn);
    const why = productionReason(stack, args.stackTags, configOf(args, PRODUCTION_DEFAULTS));
    if (why) {
      reportViolation(
        message(
          POLICY.production,
          args,
          `deployment.purgeModels: true in production stack ${stack} (${why})`,
          "deployment.purgeModels: false in a production stack (destroy keeps the shards)",
        ),
      );
    }
  },
};

export const policies: ResourceValidationPolicy[] = [
  guardrailFactsPolicy,
  monthlyCostCapPolicy,
  endpointExposurePolicy,
  hostKeyPinnedPolicy,
  secretsEncryptedPolicy,
  modelTierVerdictPolicy,
  rpcPrivateAddressPolicy,
  productionKeepsShardsPolicy,
];
