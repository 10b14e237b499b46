/**
 * The stack configuration a team writes in stacks/Pulumi.<stack>.yaml under the `kimi-kit:` namespace,
 * validated with zod. Every problem becomes one line naming the key path, the value found and what
 * is allowed (see errors.ts); the CLI and the Pulumi program share this schema.
 */
import { z } from "zod";
import { KV_CACHE_TYPES } from "./ggml-types";
import { describeIssues, ConfigError } from "./errors";
import { parseSize } from "./units";

export const CONFIG_NAMESPACE = "kimi-kit";

const size = z.union([z.string(), z.number()]).transform((value, context) => {
  const bytes = parseSize(value);
  if (bytes === undefined || bytes <= 0) {
    context.addIssue({
      code: "custom",
      message: `allowed: a positive size with its unit, like "384GiB", "340GB" or "2TB" (or an integer number of bytes)`,
      input: value,
    });
    return z.NEVER;
  }
  return bytes;
});

const secretRef = z.strictObject({ secure: z.string() });
/** Secrets arrive as `{secure: …}` in the stack file; a plain string would be committed in clear. */
const secretOnly = z.union([secretRef, z.string()]).superRefine((value, context) => {
  if (typeof value === "string") {
    context.addIssue({
      code: "custom",
      message: "allowed: only an encrypted value; set it with `pulumi config set --secret <key> <value>`",
      input: "<plain text hidden>",
    });
  }
});

const cpuSchema = z
  .strictObject({
    platform: z.string().optional().describe("an id from catalog/platforms.yaml cpuPlatforms"),
    model: z.string().optional(),
    cores: z.int().positive().max(1024).optional(),
    sockets: z.int().positive().max(8).optional(),
    numaNodes: z.int().positive().max(64).optional(),
    allCoreGHz: z.number().positive().max(10).optional(),
    fp32FlopsPerCycle: z.int().positive().max(256).optional(),
    avx512: z.boolean().optional(),
    ccds: z.int().positive().max(64).optional(),
  })
  .refine((cpu) => cpu.platform !== undefined || cpu.cores !== undefined, {
    message: "allowed: a catalog platform (cpu.platform) or at least cpu.cores",
  });

const memorySchema = z
  .strictObject({
    total: size,
    kind: z.string().optional().describe("a memory kind from catalog/platforms.yaml, e.g. DDR5-4800"),
    channels: z.int().positive().max(32).optional(),
    measuredBandwidthGBps: z.number().positive().max(20000).optional(),
  });

const gpuSchema = z.strictObject({
  model: z.string(),
  count: z.int().positive().max(16).default(1),
});

const pcieSchema = z.strictObject({
  gen: z.int().min(3).max(6),
  lanes: z.union([z.literal(1), z.literal(2), z.literal(4), z.literal(8), z.literal(16)]),
});

const hostname = z.string().regex(/^[A-Za-z0-9.:-]+$/, "allowed: a host name or IP address");

const bareMetalSchema = z.strictObject({
  kind: z.literal("bare-metal"),
  name: z.string().optional(),
  ssh: z
    .strictObject({
      host: hostname,
      port: z.int().min(1).max(65535).default(22),
      user: z.string().regex(/^[a-z_][a-z0-9_-]*$/, "allowed: a POSIX user name").default("root"),
      hostPublicKey: z
        .string()
        .regex(/^(ssh-ed25519|ecdsa-sha2-nistp256|ssh-rsa) [A-Za-z0-9+/=]+$/, "allowed: the host's public key, e.g. \"ssh-ed25519 AAAA…\" (ssh-keyscan)")
        .optional(),
    })
    .optional(),
  cpu: cpuSchema,
  memory: memorySchema,
  gpus: z.array(gpuSchema).default([]),
  pcie: pcieSchema.optional(),
  disk: z.strictObject({ free: size.optional() }).default({}),
});

const cloudSchema = z.strictObject({
  kind: z.literal("cloud"),
  provider: z.literal("aws"),
  instanceType: z.string(),
  region: z.string().default("us-east-1"),
  ami: z.string().optional(),
  diskSize: size.optional(),
  allowedCidrs: z.array(z.string().regex(/^\d+\.\d+\.\d+\.\d+\/\d+$/, "allowed: an IPv4 CIDR like 203.0.113.0/24")).default([]),
  /** The public half of kimi-kit:sshPrivateKey, installed for root by cloud-init. */
  sshPublicKey: z.string().regex(/^(ssh-ed25519|ecdsa-sha2-nistp256|ssh-rsa) [A-Za-z0-9+/=]+( .*)?$/, "allowed: an OpenSSH public key, e.g. \"ssh-ed25519 AAAA…\"").optional(),
  memory: z.strictObject({ measuredBandwidthGBps: z.number().positive() }).optional(),
});

export const hostSchema = z.discriminatedUnion("kind", [bareMetalSchema, cloudSchema]);

const servingSchema = z.strictObject({
  contextLength: z.int().min(256).max(1_048_576).default(32768),
  parallelSlots: z.int().min(1).max(64).default(1),
  kvCacheType: z.enum(KV_CACHE_TYPES).default("f16"),
  port: z.int().min(1).max(65535).default(8080),
  bindAddress: z.union([z.literal("127.0.0.1"), z.literal("0.0.0.0"), z.ipv4()]).default("127.0.0.1"),
});

const costsSchema = z.strictObject({
  hardware: z
    .strictObject({
      priceUsd: z.number().nonnegative(),
      amortizationMonths: z.int().positive().max(120),
      powerWatts: z.number().nonnegative().max(20000),
      usdPerKwh: z.number().nonnegative().max(5),
    })
    .optional(),
  cloud: z
    .strictObject({
      usdPerHour: z.number().positive().optional(),
      storageUsdPerGbMonth: z.number().nonnegative().default(0.08),
    })
    .optional(),
  api: z.strictObject({
    usdPerMillionInput: z.number().nonnegative().default(0.95),
    usdPerMillionOutput: z.number().nonnegative(),
  }),
  usage: z.strictObject({
    tokensPerMonth: z.number().nonnegative(),
    mix: z.strictObject({ input: z.number().nonnegative(), output: z.number().nonnegative() }).refine((mix) => mix.input + mix.output > 0, {
      message: "allowed: input and output parts that are not both zero",
    }),
    utilization: z.number().gt(0).lte(1).default(0.5),
  }),
});

const projectionSchema = z
  .strictObject({
    decodeDepthTokens: z.int().nonnegative().default(0),
    ttftPromptTokens: z.int().positive().default(32768),
  })
  .default({ decodeDepthTokens: 0, ttftPromptTokens: 32768 });

const deploymentSchema = z
  .strictObject({
    image: z.string().optional(),
    modelDir: z.string().regex(/^\/[\w./-]*$/, "allowed: an absolute path").default("/srv/models"),
    purgeModels: z.boolean().default(false),
    containerEngine: z.enum(["docker-provider", "docker-cli"]).default("docker-provider"),
    /** How remote steps run: @pulumi/command, or the kit's own ssh dynamic provider where that plugin is unavailable. */
    remoteExecutor: z.enum(["command-plugin", "kimi-dynamic"]).default("command-plugin"),
    huggingFaceBaseUrl: z.url().default("https://huggingface.co"),
    lockFile: z.string().optional(),
    containerName: z.string().regex(/^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/).optional(),
    healthCommand: z.string().optional(),
  })
  .default({ modelDir: "/srv/models", purgeModels: false, containerEngine: "docker-provider", remoteExecutor: "command-plugin", huggingFaceBaseUrl: "https://huggingface.co" });

export const stackConfigSchema = z
  .strictObject({
    host: hostSchema,
    model: z.strictObject({ repo: z.string(), tier: z.string() }),
    serving: servingSchema.default({ contextLength: 32768, parallelSlots: 1, kvCacheType: "f16", port: 8080, bindAddress: "127.0.0.1" }),
    costs: costsSchema,
    projection: projectionSchema,
    deployment: deploymentSchema,
    apiKey: secretOnly.optional(),
    sshPrivateKey: secretOnly.optional(),
    huggingFaceToken: secretOnly.optional(),
  })
  .superRefine((config, context) => {
    if (config.host.kind === "bare-metal" && !config.costs.hardware) {
      context.addIssue({ code: "custom", path: ["costs", "hardware"], message: "allowed: required for a bare-metal host (priceUsd, amortizationMonths, powerWatts, usdPerKwh)", input: undefined });
    }
  });

export type StackConfig = z.infer<typeof stackConfigSchema>;
export type HostConfig = StackConfig["host"];

/** Parses the `kimi-kit:*` values of one stack; throws ConfigError with one line per problem. */
export function parseStackConfig(stackName: string, raw: Record<string, unknown>): StackConfig {
  const result = stackConfigSchema.safeParse(raw, { reportInput: true });
  if (!result.success) throw new ConfigError(stackName, describeIssues(result.error.issues));
  return result.data;
}
