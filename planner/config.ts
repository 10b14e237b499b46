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

/** CPU architectures llama.cpp's CPU backend builds for that the kit sizes. */
export const CPU_ARCHES = ["x86-64", "arm64"] as const;
export type CpuArch = (typeof CPU_ARCHES)[number];
/** ISA features that select llama.cpp CPU kernels (ggml-cpu: repack and matmul paths), per architecture. */
export const ISA_FEATURES_OF = {
  "x86-64": ["avx2", "avx512", "avx512-vnni", "avx512-bf16", "amx"],
  arm64: ["neon", "sve", "i8mm", "dotprod"],
} as const satisfies Record<CpuArch, readonly string[]>;
export const CPU_ISA_FEATURES = [...ISA_FEATURES_OF["x86-64"], ...ISA_FEATURES_OF.arm64] as const;
export type CpuIsaFeature = (typeof CPU_ISA_FEATURES)[number];
/** llama-server v0.5.0's -b default (--help); a ubatch above it needs an explicit serving.batch. */
const LLAMA_DEFAULT_BATCH = 2048;

/**
 * Every default a component or script relies on, stated once: the schema fills them into the
 * StackConfig the Plan carries (plan.config), and components read them from there. The scripts in
 * ansible-free-scripts/ repeat two of them as their own stand-alone defaults; a test
 * (test/unit/hardening.test.ts) fails when those drift from these.
 */
export const DEFAULTS = {
  /** Where shards live on the host (bare metal) or where the model volume is mounted (AWS). */
  modelDir: "/srv/models",
  /** How long the container may take to load the model before its health check counts, and the smoke step waits. */
  containerWaitSeconds: 1800,
  /** The AWS model volume, when host.diskSize is not given: the shards plus room for a partial download. */
  modelVolumeHeadroomRatio: 1.15,
  huggingFaceBaseUrl: "https://huggingface.co",
  /** ggml-rpc-server's own default port (tools/rpc/rpc-server.cpp). */
  rpcPort: 50052,
  /**
   * The slowest link the kit splits a model over. A decode step crosses every host boundary once
   * per token and a model load pushes every worker's share of the weights through it: below
   * 10 Gbit/s a K2.6-class load takes over an hour and activations start to show in decode.
   */
  minimumLinkGbitPerSecond: 10,
  /**
   * Interactive use needs at least this; a split projected below it is refused (projection.minDecodeTokensPerSecond).
   */
  minDecodeTokensPerSecond: 2,
} as const;

/** The model volume (AWS) or the disk a plan costs: host.diskSize when set, else the shards × the headroom. */
export function modelVolumeBytes(diskSizeBytes: number | undefined, modelBytes: number): number {
  return diskSizeBytes ?? Math.ceil(modelBytes * DEFAULTS.modelVolumeHeadroomRatio);
}

/**
 * A size always carries its unit: a bare `1000000000000` could mean bytes, GB or GiB depending on who
 * wrote it, and reading it silently as bytes lets a typo pass as a plausible disk.
 */
const size = z.union([z.string(), z.number()]).transform((value, context) => {
  const bytes = typeof value === "string" ? parseSize(value, { requireUnit: true }) : undefined;
  if (bytes === undefined || bytes <= 0) {
    context.addIssue({
      code: "custom",
      message: `allowed: a positive size with its unit, like "384GiB", "340GB" or "2TB" (a bare number is refused: bytes, GB or GiB?)`,
      input: value,
    });
    return z.NEVER;
  }
  return bytes;
});

/** No control characters (newlines, escapes) in any text that reaches a label, a file or a command line. */
export function hasControlCharacter(text: string): boolean {
  return [...text].some((char) => char.charCodeAt(0) < 0x20 || char.charCodeAt(0) === 0x7f);
}
const plainText = (maxChars: number) =>
  z
    .string()
    .min(1, "allowed: a non-empty text")
    .max(maxChars)
    .refine((text) => !hasControlCharacter(text), {
      message: "allowed: text without control characters (newlines, tabs, escapes)",
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

/** The keys whose values are secrets: `pulumi up` refuses them unless Pulumi holds them encrypted. */
export const SECRET_CONFIG_KEYS = [
  "apiKey",
  "sshPrivateKey",
  "huggingFaceToken",
  "tlsCertificate",
  "tlsPrivateKey",
] as const;
export type SecretConfigKey = (typeof SECRET_CONFIG_KEYS)[number];

export const API_KEY_MIN_CHARS = 32;
/** Long enough to stop a bearer-token check from being the weak link; the key file holds one line. */
const API_KEY_MAX_CHARS = 512;

/**
 * Why an API key is refused, or undefined when it is one. llama-server skips empty and `#` lines of
 * its key file and runs with NO authentication when none remain, so a key must be exactly one line
 * of URL-safe characters. The key itself is never part of the message.
 */
export function apiKeyProblem(key: string): string | undefined {
  const allowed = `allowed: one line of ${API_KEY_MIN_CHARS} to ${API_KEY_MAX_CHARS} characters from A-Z a-z 0-9 _ - (e.g. \`openssl rand -hex 32\`)`;
  if (/[\r\n]/.test(key)) return `apiKey: found a value with ${key.split(/\r?\n|\r/).length} lines; ${allowed}`;
  if (key.length < API_KEY_MIN_CHARS) return `apiKey: found a value of ${key.length} characters; ${allowed}`;
  if (key.length > API_KEY_MAX_CHARS) return `apiKey: found a value of ${key.length} characters; ${allowed}`;
  const bad = [...new Set([...key].filter((char) => !/[A-Za-z0-9_-]/.test(char)))];
  if (bad.length > 0) {
    // Naming the kind of character, not the character, keeps the key's content out of logs.
    const kinds = [
      ...new Set(
        bad.map((char) =>
          /\s/.test(char)
            ? "white space"
            : hasControlCharacter(char)
              ? "control characters"
              : "other punctuation or non-ASCII characters",
        ),
      ),
    ];
    return `apiKey: found a value containing ${kinds.join(" and ")}; ${allowed}`;
  }
  return undefined;
}

const cpuSchema = z
  .strictObject({
    platform: plainText(100).optional().describe("an id from catalog/platforms.yaml cpuPlatforms"),
    model: plainText(200).optional(),
    cores: z.int().positive().max(1024).optional(),
    sockets: z.int().positive().max(8).optional(),
    numaNodes: z.int().positive().max(64).optional(),
    allCoreGHz: z.number().positive().max(10).optional(),
    fp32FlopsPerCycle: z.int().positive().max(256).optional(),
    /** Kept for stacks written before cpu.isa; `avx512: true` means isa includes avx512. */
    avx512: z.boolean().optional(),
    ccds: z.int().positive().max(64).optional(),
    /** Which of llama.cpp's CPU kernels apply (repacking is per ISA); x86-64 unless said. */
    arch: z.enum(CPU_ARCHES).optional(),
    /** The ISA features the CPU has; replaces the platform's list when given. */
    isa: z.array(z.enum(CPU_ISA_FEATURES)).max(CPU_ISA_FEATURES.length).optional(),
  })
  .refine((cpu) => cpu.platform !== undefined || cpu.cores !== undefined, {
    message: "allowed: a catalog platform (cpu.platform) or at least cpu.cores",
  })
  .superRefine((cpu, context) => {
    // An x86 feature on an ARM CPU (or the reverse) is a typo that would turn repacking on or off wrongly.
    const arch = cpu.arch ?? "x86-64";
    (cpu.isa ?? []).forEach((feature, index) => {
      if (!(ISA_FEATURES_OF[arch] as readonly string[]).includes(feature)) {
        context.addIssue({
          code: "custom",
          path: ["isa", index],
          message: `allowed: for arch ${arch}, one of ${ISA_FEATURES_OF[arch].join(", ")} (set host.cpu.arch for the other architecture)`,
          input: feature,
        });
      }
    });
    if (cpu.avx512 !== undefined && cpu.isa !== undefined && cpu.avx512 !== cpu.isa.includes("avx512")) {
      context.addIssue({
        code: "custom",
        path: ["avx512"],
        message: `allowed: a value that agrees with host.cpu.isa (${cpu.isa.includes("avx512") ? "true" : "false"}), or leave avx512 out and list the features in isa`,
        input: cpu.avx512,
      });
    }
    if (cpu.avx512 === true && arch === "arm64") {
      context.addIssue({
        code: "custom",
        path: ["avx512"],
        message: "allowed: false or nothing for arch arm64 (AVX-512 is an x86-64 feature)",
        input: cpu.avx512,
      });
    }
  });

const memorySchema = z.strictObject({
  total: size,
  kind: plainText(100).optional().describe("a memory kind from catalog/platforms.yaml, e.g. DDR5-4800"),
  /** Channels in all sockets together. */
  channels: z.int().positive().max(32).optional(),
  /** Populated channels on each socket; × host.cpu.sockets gives the channels. */
  channelsPerSocket: z.int().positive().max(24).optional(),
  measuredBandwidthGBps: z.number().positive().max(20000).optional(),
});

const gpuSchema = z.strictObject({
  model: plainText(100),
  count: z.int().positive().max(16).default(1),
});

const pcieSchema = z.strictObject({
  gen: z.int().min(3).max(6),
  lanes: z.union([z.literal(1), z.literal(2), z.literal(4), z.literal(8), z.literal(16)]),
});

/** A leading `-` would turn a host name into an ssh option (`-oProxyCommand=…`). */
const hostname = z
  .string()
  .max(253)
  .regex(
    /^[A-Za-z0-9][A-Za-z0-9.:-]*$/,
    "allowed: a host name or IP address (letters, digits, `.`, `:`, `-`; not starting with `-`)",
  );

const sshPublicKeyPattern = /^(ssh-ed25519|ecdsa-sha2-nistp256|ssh-rsa) [A-Za-z0-9+/=]+( [\x20-\x7e]*)?$/;

const bareMetalSchema = z.strictObject({
  kind: z.literal("bare-metal"),
  name: plainText(200).optional(),
  ssh: z
    .strictObject({
      host: hostname,
      port: z.int().min(1).max(65535).default(22),
      user: z
        .string()
        .max(32)
        .regex(/^[a-z_][a-z0-9_-]*$/, "allowed: a POSIX user name")
        .default("root"),
      hostPublicKey: z
        .string()
        .regex(
          /^(ssh-ed25519|ecdsa-sha2-nistp256|ssh-rsa) [A-Za-z0-9+/=]+$/,
          'allowed: the host\'s public key, e.g. "ssh-ed25519 AAAA…" (ssh-keyscan)',
        )
        .optional(),
    })
    .optional(),
  cpu: cpuSchema,
  memory: memorySchema,
  gpus: z.array(gpuSchema).max(16).default([]),
  pcie: pcieSchema.optional(),
  disk: z.strictObject({ free: size.optional() }).default({}),
});

/** Why a CIDR is refused, or undefined. AWS refuses host bits set ("is malformed"), so the kit does first. */
export function cidrProblem(cidr: string): string | undefined {
  // No leading zeros: "0.0.0.0/00" would otherwise pass as a /0 without allowPublic, and "010" reads as octal to some
  // tools.
  const match = /^(0|[1-9]\d{0,2})\.(0|[1-9]\d{0,2})\.(0|[1-9]\d{0,2})\.(0|[1-9]\d{0,2})\/(0|[1-9]\d?)$/.exec(cidr);
  if (!match) return "allowed: an IPv4 CIDR like 203.0.113.0/24 (no leading zeros)";
  const octets = match.slice(1, 5).map(Number);
  const prefix = Number(match[5]);
  if (octets.some((octet) => octet > 255) || prefix > 32)
    return "allowed: an IPv4 CIDR like 203.0.113.0/24 (octets 0-255, prefix 0-32)";
  const address = octets.reduce((sum, octet) => sum * 256 + octet, 0);
  const hostBits = 2 ** (32 - prefix);
  if (address % hostBits !== 0) {
    const network = address - (address % hostBits);
    const text = [24, 16, 8, 0].map((shift) => Math.floor(network / 2 ** shift) % 256).join(".");
    return `allowed: the network address of the block, here ${text}/${prefix}`;
  }
  return undefined;
}

const cidr = z.string().superRefine((value, context) => {
  const problem = cidrProblem(value);
  if (problem) context.addIssue({ code: "custom", message: problem, input: value });
});

/** The AWS partitions' region names: us-east-1, eu-central-2, ap-southeast-4, us-gov-west-1, cn-north-1, … */
const awsRegion = z
  .string()
  .regex(
    /^(us|eu|ap|sa|ca|me|af|il|mx|cn)(-gov|-iso|-isob)?-(north|south|east|west|central|northeast|northwest|southeast|southwest)-\d{1,2}$/,
    "allowed: an AWS region name like us-east-1 or eu-central-1",
  );

const cloudSchema = z.strictObject({
  kind: z.literal("cloud"),
  provider: z.literal("aws"),
  instanceType: z
    .string()
    .max(64)
    .regex(/^[a-z0-9][a-z0-9.-]*$/, "allowed: an EC2 instance type like r7i.12xlarge"),
  region: awsRegion.default("us-east-1"),
  ami: z
    .string()
    .regex(/^ami-[0-9a-f]{8,17}$/, "allowed: an AMI id like ami-0123456789abcdef0")
    .optional(),
  diskSize: size.optional(),
  /** Who reaches SSH and the API port. Never empty: an instance nobody can reach cannot be deployed to. */
  allowedCidrs: z.array(cidr).max(50).default([]),
  /** Must be set, and true, for a CIDR that admits the whole internet (0.0.0.0/0 or any /0). */
  allowPublic: z.boolean().default(false),
  /** The public half of kimi-kit:sshPrivateKey, installed for root by cloud-init. */
  sshPublicKey: z
    .string()
    .max(16384)
    .regex(sshPublicKeyPattern, 'allowed: an OpenSSH public key, e.g. "ssh-ed25519 AAAA…"')
    .optional(),
  memory: z.strictObject({ measuredBandwidthGBps: z.number().positive() }).optional(),
});

export const hostSchema = z.discriminatedUnion("kind", [bareMetalSchema, cloudSchema]);

/**
 * Whether an IPv4 address is private (RFC 1918). ggml-rpc-server has no authentication and its
 * README says never to run it on an open network, so a worker listens only on such an address.
 */
export function privateAddressProblem(address: string): string | undefined {
  const octets = address.split(".").map(Number);
  const [a, b] = octets as [number, number];
  if (a === 10 || (a === 172 && b >= 16 && b <= 31) || (a === 192 && b === 168)) return undefined;
  return "allowed: a private IPv4 address (10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16): ggml-rpc-server has no authentication and must never listen on a public network";
}

/** One machine of a multi-host stack: a bare-metal host with its role and its address on the private link. */
const clusterHostSchema = bareMetalSchema.extend({
  /**
   * head + rpc-workers: one model split over the hosts; replica: each host serves the whole model (planner/fleet.ts).
   */
  role: z.enum(["head", "rpc-worker", "replica"]),
  /** Names its resources (`<id>-rpc-server`, …): short and stable. */
  id: z
    .string()
    .regex(
      /^[a-z][a-z0-9-]{0,30}$/,
      "allowed: a short id like worker-1 (lower-case letters, digits, -; starting with a letter)",
    ),
  /** Where the host listens on the private link; a worker's ggml-rpc-server binds only here. */
  privateAddress: z.ipv4(),
  rpcPort: z.int().min(1024).max(65535).default(DEFAULTS.rpcPort),
});

/** The link between the hosts of a split: what the projection charges the network for. */
const linkSchema = z.strictObject({
  gbitPerSecond: z.number().positive().max(3200),
  /** `ping` between two hosts on the link; 25 GbE through one switch reads tens of microseconds. */
  roundTripMicroseconds: z.number().positive().max(1_000_000).default(100),
  /**
   * rdma: ggml-rpc's RoCE transport (negotiated; needs a RoCE GID on the private address); tcp forces TCP
   * (GGML_RPC_NO_RDMA).
   */
  transport: z.enum(["tcp", "rdma"]).default("tcp"),
  /** The slowest link this stack accepts; never below the kit's own floor. */
  minimumGbitPerSecond: z
    .number()
    .min(
      DEFAULTS.minimumLinkGbitPerSecond,
      `allowed: at least the kit's floor of ${DEFAULTS.minimumLinkGbitPerSecond} Gbit/s`,
    )
    .max(3200)
    .default(DEFAULTS.minimumLinkGbitPerSecond),
});

/**
 * More than one copy of the model behind one endpoint. On a single `host` stack, `replicas` is how
 * many hosts of that spec to run (or "auto": the planner sizes it); with `hosts` of role replica the
 * count is the list's and `replicas` may be left out. The peak pair sizes `auto` for latency.
 */
const fleetSchema = z
  .strictObject({
    /** 1 when left out on a `host` stack; the list's length with `hosts` of role replica. */
    replicas: z.union([z.int().min(1).max(64), z.literal("auto")]).optional(),
    /** Requests in flight at the busiest moment, each wanting its answer within latencyTargetSeconds. */
    peakConcurrentRequests: z.int().min(1).max(100_000).optional(),
    latencyTargetSeconds: z.number().positive().max(86_400).optional(),
    /** Output tokens of a typical answer: latency = tokensPerAnswer × the time per token of one slot. */
    tokensPerAnswer: z.int().min(1).max(1_048_576).default(500),
  })
  .refine((fleet) => (fleet.peakConcurrentRequests === undefined) === (fleet.latencyTargetSeconds === undefined), {
    message:
      "allowed: peakConcurrentRequests and latencyTargetSeconds together (a peak is only sized against a latency target), or neither",
  });

/** A team sharing the endpoint: its limits at the gateway and, with costs, what its budget buys. */
const teamSchema = z.strictObject({
  /** Names its key and its rate-limit entries. */
  name: z.string().regex(/^[a-z0-9-]{1,40}$/, "allowed: a team name of 1 to 40 characters from a-z 0-9 -"),
  /** Requests per minute; 0 admits none (a team kept but paused). */
  rpm: z.int().nonnegative().max(1_000_000),
  /** Tokens per minute (prompt + completion). */
  tpm: z.int().nonnegative().max(1_000_000_000).optional(),
  monthlyBudgetUsd: z.number().nonnegative().max(1e9).optional(),
});

const servingSchema = z.strictObject({
  contextLength: z.int().min(256).max(1_048_576).default(32768),
  parallelSlots: z.int().min(1).max(64).default(1),
  kvCacheType: z.enum(KV_CACHE_TYPES).default("f16"),
  /**
   * Knobs that override what the planner would choose; unset = the planner's choice. Ranges are
   * llama-server v0.5.0's (test/fixtures/llama-server-help-v0.5.0.txt). V type: for non-MLA
   * models (-ctv, kvCacheType when unset); MLA models store no V, so it is not passed there.
   */
  vCacheType: z.enum(KV_CACHE_TYPES).optional(),
  batch: z
    .int()
    .min(1, "allowed: an integer ≥ 1 (llama-server -b N, logical batch; default 2048)")
    .max(1_048_576)
    .optional(),
  ubatch: z
    .int()
    .min(1, "allowed: an integer ≥ 1 (llama-server -ub N, physical batch; default 512)")
    .max(1_048_576)
    .optional(),
  threads: z
    .int()
    .min(1, "allowed: an integer ≥ 1 (llama-server -t N; leave it out for one per physical core)")
    .max(1024)
    .optional(),
  threadsBatch: z
    .int()
    .min(1, "allowed: an integer ≥ 1 (llama-server -tb N; leave it out for serving.threads)")
    .max(1024)
    .optional(),
  /** false → --no-op-offload: big-batch matmuls of CPU weights stay on the CPU instead of streaming to the GPU. */
  opOffload: z.boolean().optional(),
  /** llama-server --numa TYPE; "off" passes none (the planner passes distribute on multi-node hosts). */
  numa: z.enum(["distribute", "isolate", "numactl", "off"]).optional(),
  port: z.int().min(1).max(65535).default(8080),
  bindAddress: z.union([z.literal("127.0.0.1"), z.literal("0.0.0.0"), z.ipv4()]).default("127.0.0.1"),
  /**
   * A bindAddress other than 127.0.0.1 is a public listener: HAProxy terminates TLS on
   * bindAddress:port, llama-server moves to 127.0.0.1:backendPort, and the host firewall admits
   * only allowedCidrs to the port (planner/front-door.ts).
   */
  allowedCidrs: z.array(cidr).max(50).default([]),
  /** Must be set, and true, for a CIDR that admits the whole internet (0.0.0.0/0 or any /0). */
  allowPublic: z.boolean().default(false),
  /**
   * internal-ca: the kit makes a CA and a certificate on the host; secrets: kimi-kit:tlsCertificate and
   * kimi-kit:tlsPrivateKey.
   */
  tls: z
    .strictObject({ source: z.enum(["internal-ca", "secrets"]).default("internal-ca") })
    .default({ source: "internal-ca" }),
  /** llama-server's loopback port behind the front door; default port + 1 (port - 1 for 65535). */
  backendPort: z.int().min(1).max(65535).optional(),
  /** llama-server's built-in web UI; off unless asked (--no-webui). */
  webUi: z.boolean().default(false),
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
    mix: z
      .strictObject({ input: z.number().nonnegative(), output: z.number().nonnegative() })
      .refine((mix) => mix.input + mix.output > 0, {
        message: "allowed: input and output parts that are not both zero",
      }),
    utilization: z.number().gt(0).lte(1).default(0.5),
  }),
});

const projectionSchema = z
  .strictObject({
    decodeDepthTokens: z.int().nonnegative().default(0),
    ttftPromptTokens: z.int().positive().default(32768),
    /** A split over several hosts projected below this decode rate is refused. */
    minDecodeTokensPerSecond: z.number().positive().max(10_000).default(DEFAULTS.minDecodeTokensPerSecond),
    /**
     * A split is refused when one catalog host holding the same tier would decode faster; false when
     * the hosts are already owned and renting one is not an option.
     */
    compareSplitWithCatalogHosts: z.boolean().default(true),
  })
  .default({
    decodeDepthTokens: 0,
    ttftPromptTokens: 32768,
    minDecodeTokensPerSecond: DEFAULTS.minDecodeTokensPerSecond,
    compareSplitWithCatalogHosts: true,
  });

/**
 * A Hugging Face repo id (owner/name) and a tier name end up in host paths and command lines: only
 * the characters Hugging Face itself allows, no `..`, nothing that starts like an option.
 */
const noDotDot = (text: string) => !text.includes("..");
export const modelRepo = z
  .string()
  .max(200)
  .regex(
    /^[A-Za-z0-9][A-Za-z0-9_.-]*\/[A-Za-z0-9][A-Za-z0-9_.-]*$/,
    "allowed: a Hugging Face repo id like unsloth/Kimi-K2.6-GGUF",
  )
  .refine(noDotDot, { message: "allowed: a Hugging Face repo id without `..`" });
export const modelTier = z
  .string()
  .max(100)
  .regex(
    /^[A-Za-z0-9][A-Za-z0-9_.+-]*$/,
    "allowed: a tier name like UD-Q2_K_XL (letters, digits, _ . + -; not starting with - or .)",
  )
  .refine(noDotDot, { message: "allowed: a tier name without `..`" });

/**
 * Folders the model directory may never be: the system's own trees (purgeModels deletes inside the
 * model directory, a volume is mounted on it, the container reads all of it).
 */
export const FORBIDDEN_MODEL_DIRS = [
  "/",
  "/bin",
  "/boot",
  "/dev",
  "/etc",
  "/home",
  "/lib",
  "/lib64",
  "/opt",
  "/proc",
  "/root",
  "/run",
  "/sbin",
  "/srv",
  "/sys",
  "/tmp",
  "/usr",
  "/var",
] as const;
/** Trees no model belongs in, at any depth: pseudo-filesystems, boot and system configuration. */
const FORBIDDEN_MODEL_TREES = ["/boot", "/dev", "/etc", "/proc", "/sys"] as const;

export function modelDirProblem(dir: string): string | undefined {
  const allowed = `allowed: an absolute path of plain folder names (letters, digits, _ . -; none starting with - or being . or ..), not ${FORBIDDEN_MODEL_DIRS.join(", ")} themselves nor inside ${FORBIDDEN_MODEL_TREES.join(", ")}`;
  if (dir.length > 1024 || !dir.startsWith("/")) return allowed;
  const parts = dir === "/" ? [] : dir.slice(1).replace(/\/$/, "").split("/");
  if (parts.some((part) => !/^[A-Za-z0-9_][A-Za-z0-9_.-]*$/.test(part) || part === "." || part === ".."))
    return allowed;
  const normal = `/${parts.join("/")}`;
  if ((FORBIDDEN_MODEL_DIRS as readonly string[]).includes(normal)) return allowed;
  if (FORBIDDEN_MODEL_TREES.some((tree) => normal.startsWith(`${tree}/`))) return allowed;
  return undefined;
}

const modelDir = z.string().superRefine((value, context) => {
  const problem = modelDirProblem(value);
  if (problem) context.addIssue({ code: "custom", message: problem, input: value });
});

/**
 * A container image reference as Docker parses it ([registry[:port]/]path[:tag][@sha256:digest]); an
 * empty name or one starting with `-` would reach `docker run` as an option.
 */
const imageComponent = "[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*";
// Docker reads the first part as a registry only with a dot, a port or as localhost; else it is a lower-case path.
const domainLabel = "[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?";
const imageRegistry = `(?:localhost(?::\\d{1,5})?|${domainLabel}(?:\\.${domainLabel})+(?::\\d{1,5})?|${domainLabel}:\\d{1,5})`;
const IMAGE_REFERENCE = new RegExp(
  `^(?:${imageRegistry}/)?${imageComponent}(?:/${imageComponent})*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?$`,
);
export const imageReference = z
  .string()
  .max(512)
  .regex(
    IMAGE_REFERENCE,
    "allowed: an image reference like ghcr.io/ggml-org/llama.cpp:server-v0.5.0 (lower-case path, optional :tag and @sha256:digest)",
  );

/** Only http(s) mirrors: `file:`, `javascript:` and friends would make curl read or run something else. */
const httpUrl = z
  .string()
  .max(2048)
  .regex(
    /^https?:\/\/[A-Za-z0-9.-]+(?::\d{1,5})?(?:\/[A-Za-z0-9._~%/-]*)?$/,
    "allowed: an http:// or https:// URL like https://huggingface.co (no credentials, query or fragment)",
  );

const deploymentSchema = z
  .strictObject({
    image: imageReference.optional(),
    modelDir: modelDir.default(DEFAULTS.modelDir),
    purgeModels: z.boolean().default(false),
    containerEngine: z.enum(["docker-provider", "docker-cli"]).default("docker-provider"),
    /**
     * How remote steps run: @pulumi/command, or the kit's own ssh dynamic provider where that plugin is unavailable.
     */
    remoteExecutor: z.enum(["command-plugin", "kimi-dynamic"]).default("command-plugin"),
    huggingFaceBaseUrl: httpUrl.default(DEFAULTS.huggingFaceBaseUrl),
    /** A lock written by `npm run lock`, relative to the repository or absolute. */
    lockFile: z
      .string()
      .max(1024)
      .regex(
        /^[A-Za-z0-9_./][A-Za-z0-9_./-]*\.json$/,
        "allowed: the path of a .json lock written by `npm run lock` (letters, digits, _ . / -)",
      )
      .optional(),
    containerName: z
      .string()
      .max(128)
      .regex(
        /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/,
        "allowed: a container name (letters, digits, _ . -; not starting with _ . -)",
      )
      .optional(),
    healthCommand: plainText(1000).optional(),
    /** Model load can take many minutes from a cold disk; the health check's start period and the smoke step's wait. */
    containerWaitSeconds: z.int().min(30).max(86_400).default(DEFAULTS.containerWaitSeconds),
  })
  .default({
    modelDir: DEFAULTS.modelDir,
    purgeModels: false,
    containerEngine: "docker-provider",
    remoteExecutor: "command-plugin",
    huggingFaceBaseUrl: DEFAULTS.huggingFaceBaseUrl,
    containerWaitSeconds: DEFAULTS.containerWaitSeconds,
  });

const stackShape = {
  /** One host. A stack sets either this or `hosts`. */
  host: hostSchema.optional(),
  /** Several hosts serving one model over llama.cpp's RPC backend: one head, one or more rpc-workers. */
  hosts: z.array(clusterHostSchema).min(2).max(16).optional(),
  /** The private link between `hosts`. */
  link: linkSchema.optional(),
  /** Replicas of the one model behind one endpoint (planner/fleet.ts). */
  fleet: fleetSchema.optional(),
  /** Teams sharing the endpoint; needs `costs` (their chargeback is priced from it). */
  teams: z.array(teamSchema).min(1).max(200).optional(),
  /** vision: also fetch and load the model's vision projector (mmproj), where the pinned release can load it. */
  model: z.strictObject({ repo: modelRepo, tier: modelTier, vision: z.boolean().default(false) }),
  serving: servingSchema.default({
    contextLength: 32768,
    parallelSlots: 1,
    kvCacheType: "f16",
    port: 8080,
    bindAddress: "127.0.0.1",
    allowedCidrs: [],
    allowPublic: false,
    tls: { source: "internal-ca" },
    webUi: false,
  }),
  /** Optional: without it the plan sizes and projects everything and omits the cost section. */
  costs: costsSchema.optional(),
  projection: projectionSchema,
  deployment: deploymentSchema,
  apiKey: secretOnly.optional(),
  sshPrivateKey: secretOnly.optional(),
  huggingFaceToken: secretOnly.optional(),
  /** serving.tls.source "secrets": the certificate (chain, PEM) and its private key (PEM) for the front door. */
  tlsCertificate: secretOnly.optional(),
  tlsPrivateKey: secretOnly.optional(),
};

/** The `kimi-kit:*` keys a stack may set; anything else is a typo and refused. */
export const STACK_CONFIG_KEYS = Object.keys(stackShape) as (keyof typeof stackShape)[];

/**
 * The deployability refinement: what `pulumi up` would trip on, checked by the schema itself so that
 * `npm run plan` refuses it too, before any resource is registered.
 */
export const stackConfigSchema = z
  .strictObject(stackShape)
  .superRefine((config, context) => {
    clusterIssues(config).forEach((issue) => context.addIssue({ code: "custom", ...issue }));
    fleetIssues(config).forEach((issue) => context.addIssue({ code: "custom", ...issue }));
    if ((config.hosts || config.host?.kind === "bare-metal") && config.costs && !config.costs.hardware) {
      context.addIssue({
        code: "custom",
        path: ["costs", "hardware"],
        message:
          "allowed: required for a bare-metal host when costs is set (priceUsd, amortizationMonths, powerWatts, usdPerKwh); or leave costs out to plan without a cost section",
        input: undefined,
      });
    }
    const { batch, ubatch } = config.serving;
    // llama.cpp silently clamps -ub to -b: a larger ubatch would be sized for memory it never uses.
    if (ubatch !== undefined && ubatch > (batch ?? Math.max(ubatch, LLAMA_DEFAULT_BATCH))) {
      context.addIssue({
        code: "custom",
        path: ["serving", "ubatch"],
        message: `allowed: at most serving.batch (${batch}); llama-server clamps the physical batch to the logical one`,
        input: ubatch,
      });
    }
    servingExposureIssues(config).forEach((issue) => context.addIssue({ code: "custom", ...issue }));
    if (config.host?.kind === "cloud") {
      const { allowedCidrs, allowPublic } = config.host;
      if (allowedCidrs.length === 0) {
        context.addIssue({
          code: "custom",
          path: ["host", "allowedCidrs"],
          message: `allowed: the CIDRs that may reach SSH and port ${config.serving.port}, like ["203.0.113.0/24"] (nothing is opened by default; the whole internet only as ["0.0.0.0/0"] with allowPublic: true)`,
          input: allowedCidrs,
        });
      }
      allowedCidrs.forEach((block, index) => {
        if (block.endsWith("/0") && !allowPublic) {
          context.addIssue({
            code: "custom",
            path: ["host", "allowedCidrs", index],
            message:
              "allowed: a CIDR narrower than /0; admitting the whole internet needs host.allowPublic: true as well",
            input: block,
          });
        }
      });
    }
  })
  .transform(({ host, hosts, link, fleet, ...rest }) => {
    // Everything downstream reads `host` as the machine llama-server runs on (the head, or the first
    // replica: all replicas are one spec); the workers and the link travel beside it in `cluster`,
    // the replicas in `fleet`.
    const replicaHosts = hosts?.filter((entry) => entry.role === "replica") ?? [];
    const head = hosts?.find((entry) => entry.role === "head") ?? replicaHosts[0];
    // The bare-metal keys only: role, id, privateAddress and rpcPort are the cluster's.
    const asHost = (entry: ClusterHostEntry): BareMetalHostConfig => ({
      kind: entry.kind,
      name: entry.name,
      ssh: entry.ssh,
      cpu: entry.cpu,
      memory: entry.memory,
      gpus: entry.gpus,
      pcie: entry.pcie,
      disk: entry.disk,
    });
    const fleetConfig: FleetConfig | undefined =
      replicaHosts.length > 0
        ? {
            ...(fleet ?? { tokensPerAnswer: 500 }),
            replicas: replicaHosts.length,
            hosts: replicaHosts.map((entry) => ({
              id: entry.id,
              index: hosts!.indexOf(entry),
              privateAddress: entry.privateAddress,
              ssh: entry.ssh,
            })),
          }
        : fleet && { ...fleet, replicas: fleet.replicas ?? 1, hosts: [] };
    const cluster: ClusterConfig | undefined =
      hosts && head && link && replicaHosts.length === 0
        ? {
            head: { id: head.id, privateAddress: head.privateAddress, index: hosts.indexOf(head) },
            workers: hosts.flatMap((entry, index) =>
              entry.role === "rpc-worker"
                ? [
                    {
                      id: entry.id,
                      index,
                      privateAddress: entry.privateAddress,
                      rpcPort: entry.rpcPort,
                      host: asHost(entry),
                    },
                  ]
                : [],
            ),
            link,
          }
        : undefined;
    return { ...rest, host: (head ? asHost(head) : host)!, cluster, fleet: fleetConfig };
  });

/** One replica named in kimi-kit:hosts: where the gateway reaches it. */
export interface ReplicaHostConfig {
  id: string;
  index: number;
  privateAddress: string;
  ssh: BareMetalHostConfig["ssh"];
}
/** kimi-kit:fleet after parsing; `hosts` lists the replicas of a `hosts` stack, empty for `host` + replicas. */
export type FleetConfig = Omit<z.infer<typeof fleetSchema>, "replicas"> & {
  replicas: number | "auto";
  hosts: ReplicaHostConfig[];
};
export type TeamConfig = z.infer<typeof teamSchema>;

/** An issue found in the raw stack configuration: where, what is allowed, what was found. */
type ConfigIssue = { path: PropertyKey[]; message: string; input: unknown };

/** Every replica has the first one's spec, and fleet.replicas (when set) counts the listed replicas. */
function replicaSpecIssues(
  config: RawStackConfig,
  replicas: { entry: ClusterHostEntry; index: number }[],
  first: { entry: ClusterHostEntry; index: number },
): ConfigIssue[] {
  const issues: ConfigIssue[] = [];
  // The CPU, memory and GPUs decide what one replica holds and how fast it runs; ssh, name and disk may differ.
  const specOf = (entry: ClusterHostEntry) => ({ cpu: entry.cpu, memory: entry.memory, gpus: entry.gpus });
  for (const { entry, index } of replicas.slice(1)) {
    for (const key of ["cpu", "memory", "gpus"] as const) {
      if (JSON.stringify(specOf(entry)[key]) !== JSON.stringify(specOf(first.entry)[key])) {
        issues.push({
          path: ["hosts", index, key],
          message: `allowed: the same ${key} as the first replica ${first.entry.id} (hosts[${first.index}]); replica ${entry.id} differs — the plan sizes one spec for every replica`,
          input: entry[key],
        });
      }
    }
  }
  if (config.fleet?.replicas !== undefined && config.fleet.replicas !== replicas.length) {
    issues.push({
      path: ["fleet", "replicas"],
      message: `allowed: ${replicas.length} (the replicas listed in hosts) or leave it out`,
      input: config.fleet.replicas,
    });
  }
  return issues;
}

/** Team names are unique, and teams come with costs. */
function teamIssues(config: RawStackConfig): ConfigIssue[] {
  const issues: ConfigIssue[] = [];
  const seen = new Map<string, number>();
  (config.teams ?? []).forEach((team, index) => {
    const earlier = seen.get(team.name);
    if (earlier !== undefined)
      issues.push({
        path: ["teams", index, "name"],
        message: `allowed: a name no other team has (teams[${earlier}] is ${team.name} too)`,
        input: team.name,
      });
    else seen.set(team.name, index);
  });
  if (config.teams && !config.costs) {
    issues.push({
      path: ["costs"],
      message:
        "allowed: required with teams (their chargeback is the fleet's monthly cost per token); add costs (hardware or cloud, api, usage) or leave teams out",
      input: undefined,
    });
  }
  return issues;
}

/**
 * Replicas and teams: replicas of one spec (the plan sizes one host for all), the count agreeing with
 * the list, one multi-host shape at a time, unique team names, teams only with costs.
 */
function fleetIssues(config: RawStackConfig): { path: PropertyKey[]; message: string; input: unknown }[] {
  const issues: { path: PropertyKey[]; message: string; input: unknown }[] = [];
  const replicas = (config.hosts ?? []).flatMap((entry, index) => (entry.role === "replica" ? [{ entry, index }] : []));
  const first = replicas[0];
  if (first) issues.push(...replicaSpecIssues(config, replicas, first));
  const split = (config.hosts ?? []).some((entry) => entry.role !== "replica");
  if (split && (first || (config.fleet?.replicas !== undefined && config.fleet.replicas !== 1))) {
    issues.push({
      path: ["hosts"],
      message:
        "allowed: a split (head + rpc-workers) or replicas, one at a time: replicas of a split are not planned yet",
      input: (config.hosts ?? []).map((entry) => entry.role),
    });
  }
  if (config.fleet?.replicas === "auto" && !config.costs && config.fleet.peakConcurrentRequests === undefined) {
    issues.push({
      path: ["fleet", "replicas"],
      message:
        "allowed: auto only with something to size from — costs.usage.tokensPerMonth, or fleet.peakConcurrentRequests with fleet.latencyTargetSeconds; or a number",
      input: "auto",
    });
  }
  issues.push(...teamIssues(config));
  return issues;
}

type ClusterHostEntry = z.infer<typeof clusterHostSchema>;
export type BareMetalHostConfig = z.infer<typeof bareMetalSchema>;
export type LinkConfig = z.infer<typeof linkSchema>;
export interface RpcWorkerConfig {
  id: string;
  /** Its place in kimi-kit:hosts, for messages (hosts[2].memory.total). */
  index: number;
  privateAddress: string;
  rpcPort: number;
  host: BareMetalHostConfig;
}
/** A multi-host stack: the head (kimi-kit:host after parsing) and its RPC workers on one private link. */
export interface ClusterConfig {
  head: { id: string; privateAddress: string; index: number };
  workers: RpcWorkerConfig[];
  link: LinkConfig;
}

export type StackConfig = z.infer<typeof stackConfigSchema>;

type RawStackConfig = z.infer<z.ZodObject<typeof stackShape>>;

/**
 * The roles and link of `hosts`: replicas want no link; a split wants exactly one head, at least one
 * rpc-worker and a link at least as fast as its stated minimum.
 */
function hostsShapeIssues(config: RawStackConfig, hosts: ClusterHostEntry[]): ConfigIssue[] {
  const issues: ConfigIssue[] = [];
  // Replicas (fleetIssues checks them) need no head, workers nor link; a mix with a split is refused there.
  if (hosts.some((entry) => entry.role === "replica")) {
    if (config.link)
      issues.push({
        path: ["link"],
        message:
          "allowed: only with a split (head + rpc-workers); replicas each serve the whole model and share no link",
        input: config.link,
      });
  } else {
    const heads = hosts.filter((entry) => entry.role === "head").length;
    if (heads !== 1)
      issues.push({
        path: ["hosts"],
        message: `allowed: exactly one host with role head (found ${heads})`,
        input: hosts.map((entry) => entry.role),
      });
    if (!hosts.some((entry) => entry.role === "rpc-worker"))
      issues.push({
        path: ["hosts"],
        message: "allowed: at least one host with role rpc-worker",
        input: hosts.map((entry) => entry.role),
      });
    if (!config.link)
      issues.push({
        path: ["link"],
        message: "allowed: the link between the hosts, e.g. { gbitPerSecond: 25, roundTripMicroseconds: 50 }",
        input: undefined,
      });
    else if (config.link.gbitPerSecond < config.link.minimumGbitPerSecond) {
      issues.push({
        path: ["link", "gbitPerSecond"],
        message: `allowed: at least link.minimumGbitPerSecond (${config.link.minimumGbitPerSecond} Gbit/s)`,
        input: config.link.gbitPerSecond,
      });
    }
  }
  return issues;
}

/** Private addresses only, and no two hosts with the same id, private address or SSH address. */
function hostUniquenessIssues(hosts: ClusterHostEntry[]): ConfigIssue[] {
  const issues: ConfigIssue[] = [];
  const seen = {
    id: new Map<string, number>(),
    privateAddress: new Map<string, number>(),
    ssh: new Map<string, number>(),
  };
  hosts.forEach((entry, index) => {
    const problem = privateAddressProblem(entry.privateAddress);
    if (problem)
      issues.push({ path: ["hosts", index, "privateAddress"], message: problem, input: entry.privateAddress });
    const keys: [keyof typeof seen, string | undefined, PropertyKey[]][] = [
      ["id", entry.id, ["id"]],
      ["privateAddress", entry.privateAddress, ["privateAddress"]],
      ["ssh", entry.ssh ? `${entry.ssh.host}:${entry.ssh.port}` : undefined, ["ssh", "host"]],
    ];
    for (const [key, value, path] of keys) {
      if (value === undefined) continue;
      const first = seen[key].get(value);
      if (first !== undefined)
        issues.push({
          path: ["hosts", index, ...path],
          message: `allowed: a value no other host has (hosts[${first}] has it too)`,
          input: value,
        });
      else seen[key].set(value, index);
    }
  });
  return issues;
}

/**
 * A multi-host stack: `host` or `hosts`, never both; one head and at least one rpc-worker; a link;
 * no two hosts on the same private or SSH address; private addresses only; a link at least as fast
 * as the stated minimum.
 */
function clusterIssues(config: RawStackConfig): { path: PropertyKey[]; message: string; input: unknown }[] {
  const issues: { path: PropertyKey[]; message: string; input: unknown }[] = [];
  if (config.host && config.hosts)
    return [
      {
        path: ["hosts"],
        message: "allowed: either host (one machine) or hosts (a head and its rpc-workers), not both",
        input: "both set",
      },
    ];
  if (!config.host && !config.hosts)
    return [
      {
        path: ["host"],
        message: "allowed: a host (kind bare-metal or cloud), or hosts: a head and its rpc-workers",
        input: undefined,
      },
    ];
  if (!config.hosts) {
    if (config.link)
      issues.push({
        path: ["link"],
        message: "allowed: only with hosts (a link joins several hosts)",
        input: config.link,
      });
    return issues;
  }
  issues.push(...hostsShapeIssues(config, config.hosts), ...hostUniquenessIssues(config.hosts));
  return issues;
}

/**
 * A public listener (bindAddress not 127.0.0.1) needs the CIDRs its firewall admits, a /0 only
 * with allowPublic, both TLS secrets when the certificate comes from secrets, and a backend port
 * that is not the public one.
 */
function servingExposureIssues(
  config: z.infer<z.ZodObject<typeof stackShape>>,
): { path: PropertyKey[]; message: string; input: unknown }[] {
  const { serving } = config;
  if (serving.bindAddress === "127.0.0.1") return [];
  const issues: { path: PropertyKey[]; message: string; input: unknown }[] = [];
  if (serving.allowedCidrs.length === 0) {
    issues.push({
      path: ["serving", "allowedCidrs"],
      message: `allowed: with bindAddress ${serving.bindAddress}, the CIDRs the host firewall admits to port ${serving.port}, like ["203.0.113.0/24"] (the whole internet only as ["0.0.0.0/0"] with serving.allowPublic: true)`,
      input: serving.allowedCidrs,
    });
  }
  serving.allowedCidrs.forEach((block, index) => {
    if (block.endsWith("/0") && !serving.allowPublic) {
      issues.push({
        path: ["serving", "allowedCidrs", index],
        message:
          "allowed: a CIDR narrower than /0; admitting the whole internet needs serving.allowPublic: true as well",
        input: block,
      });
    }
  });
  if (serving.tls.source === "secrets") {
    for (const key of ["tlsCertificate", "tlsPrivateKey"] as const) {
      if (config[key] === undefined) {
        issues.push({
          path: [key],
          message: `allowed: required with serving.tls.source "secrets"; set it with \`pulumi config set --secret kimi-kit:${key} < file.pem\``,
          input: undefined,
        });
      }
    }
  }
  if (serving.backendPort !== undefined && serving.backendPort === serving.port) {
    issues.push({
      path: ["serving", "backendPort"],
      message: `allowed: a port other than serving.port (${serving.port}); llama-server listens there on loopback, behind the TLS front door`,
      input: serving.backendPort,
    });
  }
  return issues;
}
export type HostConfig = StackConfig["host"];

/**
 * What `up` would refuse once the shard sizes are known (the plan knows them, the schema does not):
 * a disk or volume smaller than the files it must hold. One line per problem, in the schema's form.
 */
export function deployabilityProblems(config: StackConfig, shardBytes: number): string[] {
  const problems: string[] = [];
  const needed = `${(shardBytes / 1e9).toFixed(1)} GB (${(shardBytes / 1024 ** 3).toFixed(1)} GiB)`;
  if (config.host.kind === "bare-metal" && config.host.disk.free !== undefined && config.host.disk.free < shardBytes) {
    problems.push(
      `host.disk.free: found ${formatSize(config.host.disk.free)}; allowed: at least the shards' ${needed}`,
    );
  }
  if (config.host.kind === "cloud" && config.host.diskSize !== undefined && config.host.diskSize < shardBytes) {
    problems.push(
      `host.diskSize: found ${formatSize(config.host.diskSize)}; allowed: at least the shards' ${needed} (leave it out for ${DEFAULTS.modelVolumeHeadroomRatio}× the shards)`,
    );
  }
  return problems;
}

function formatSize(bytes: number): string {
  return `${(bytes / 1e9).toFixed(1)} GB (${(bytes / 1024 ** 3).toFixed(1)} GiB)`;
}

/** Throws ConfigError when deployabilityProblems finds any; buildPlan calls it, so plan and up agree. */
export function assertDeployable(stack: string, config: StackConfig, shardBytes: number): void {
  const problems = deployabilityProblems(config, shardBytes);
  if (problems.length > 0) throw new ConfigError(stack, problems);
}

/** Parses the `kimi-kit:*` values of one stack; throws ConfigError with one line per problem. */
export function parseStackConfig(stackName: string, raw: Record<string, unknown>): StackConfig {
  const result = stackConfigSchema.safeParse(raw, { reportInput: true });
  if (!result.success)
    throw new ConfigError(
      stackName,
      describeIssues(result.error.issues, () => "", allowedKeysAt(raw)),
    );
  return result.data;
}

/**
 * The keys allowed at a path of the raw config, for "unknown key" lines: walks the schema along the
 * path, picking a discriminated union's option by the raw value's `kind`.
 */
function allowedKeysAt(raw: Record<string, unknown>): (path: readonly PropertyKey[]) => string[] | undefined {
  return (path) => {
    let schema: SchemaNode | undefined = stackConfigSchema as unknown as SchemaNode;
    let value: unknown = raw;
    for (const part of [...path, undefined]) {
      schema = unwrap(schema, value);
      if (!schema) return undefined;
      if (part === undefined) break;
      const def: SchemaDef = schema._zod.def;
      if (def.type === "object" && typeof part === "string") schema = def.shape?.[part];
      else if (def.type === "array" && typeof part === "number") schema = def.element;
      else return undefined;
      value = value !== null && typeof value === "object" ? (value as Record<PropertyKey, unknown>)[part] : undefined;
    }
    const shape = schema?._zod.def.type === "object" ? schema._zod.def.shape : undefined;
    return shape ? Object.keys(shape) : undefined;
  };
}

/** The slice of zod's internal definition the walk above reads. */
interface SchemaDef {
  type: string;
  shape?: Record<string, SchemaNode>;
  element?: SchemaNode;
  innerType?: SchemaNode;
  in?: SchemaNode;
  options?: SchemaNode[];
  discriminator?: string;
}
interface SchemaNode {
  _zod: { def: SchemaDef };
}

function unwrap(schema: SchemaNode | undefined, value: unknown): SchemaNode | undefined {
  for (let depth = 0; schema && depth < 16; depth++) {
    const def: SchemaDef = schema._zod.def;
    if (
      (def.type === "default" || def.type === "optional" || def.type === "nullable" || def.type === "prefault") &&
      def.innerType
    )
      schema = def.innerType;
    else if (def.type === "pipe" && def.in) schema = def.in;
    else if (def.type === "union" && def.options) {
      const kind = value !== null && typeof value === "object" ? (value as Record<string, unknown>).kind : undefined;
      schema = def.options.find((option) => {
        const literal = option._zod.def.shape?.kind?._zod.def as { values?: unknown[] } | undefined;
        return literal?.values?.includes(kind) ?? false;
      });
    } else return schema;
  }
  return schema;
}
