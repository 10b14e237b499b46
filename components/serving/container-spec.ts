/**
 * One llama-server container, described once, rendered two ways: the argv of
 * `llama-container.sh up` (engine "docker-cli") and the arguments of a @pulumi/docker Container
 * (engine "docker-provider"). Pure: no Pulumi resources, no I/O. The spec carries every runtime
 * fact (health check and its timing, network mode, environment, labels); `viewOfCliArgv` and
 * `viewOfDockerArgs` read each rendering back into one comparable shape, so a test can prove both
 * engines run the same container field by field.
 */
import { createHash } from "node:crypto";
import { posix } from "node:path";
import { CONTAINER_API_KEY_FILE, CONTAINER_MODEL_DIR, type Plan } from "../../planner/plan";

/** Where llama-container.sh keeps secrets (its KIMI_KIT_STATE_DIR default); the provider path writes the same file. */
export const HOST_STATE_DIR = "/var/lib/kimi-kit";
/** The kit's folder on the host; HostPrep creates it and the folders below. */
export const REMOTE_KIT_DIR = "/opt/kimi-kit";
/**
 * Where ansible-free-scripts/ lands. Both executors copy a folder source *as a folder* into the
 * remote path (CopyToRemote's rule for a source without a trailing slash): copying the repo's
 * ansible-free-scripts/ to REMOTE_KIT_DIR yields REMOTE_KIT_DIR/ansible-free-scripts.
 */
export const REMOTE_SCRIPTS_DIR = `${REMOTE_KIT_DIR}/ansible-free-scripts`;
export const REMOTE_MANIFESTS_DIR = `${REMOTE_KIT_DIR}/manifests`;

/**
 * A whole number of seconds in Go's canonical time.Duration form ("30s", "30m0s", "1h0m0s"): the
 * Docker provider reads a container's health check back in that form, so sending anything else
 * ("1800s") shows a diff on every `pulumi up`.
 */
export function goDurationOfSeconds(totalSeconds: number): string {
  if (!Number.isInteger(totalSeconds) || totalSeconds < 0)
    throw new RangeError(`goDurationOfSeconds: ${totalSeconds} is not a whole, non-negative number of seconds`);
  const hours = Math.floor(totalSeconds / 3600);
  const minutes = Math.floor((totalSeconds % 3600) / 60);
  const seconds = totalSeconds % 60;
  if (hours > 0) return `${hours}h${minutes}m${seconds}s`;
  if (minutes > 0) return `${minutes}m${seconds}s`;
  return `${seconds}s`;
}

export interface VolumeSpec {
  hostPath: string;
  containerPath: string;
  readOnly: boolean;
}

export type RestartPolicy = "no" | "always" | "unless-stopped" | "on-failure";

export interface ContainerSpec {
  name: string;
  image: string;
  /** llama-server's arguments, exactly plan.llamaServerArgs. */
  args: string[];
  volumes: VolumeSpec[];
  gpus: "all" | undefined;
  restart: RestartPolicy;
  /** Both engines put the container on the host's network: llama-server binds the planned address itself. */
  networkMode: "host";
  /** Polled from the host until it answers (llama-container.sh --health-url; the smoke step). */
  healthUrl: string;
  /** Docker's health check inside the container; its start period is waitSeconds. */
  health: { cmd: string; intervalSeconds: number; timeoutSeconds: number; retries: number };
  /** Seconds to wait for the health URL / the health check's start period (model load). */
  waitSeconds: number;
  /** Path inside the container where the API key file is mounted read-only. */
  secretPath: string;
  labels: Record<string, string>;
  /** Environment variables (a split's plan.cluster.environment, e.g. GGML_RPC_NO_RDMA=1 on a TCP link). */
  env: Record<string, string>;
}

/** Docker's health-check timing, the same on both engines (llama-container.sh's defaults). */
export const HEALTH_TIMING = { intervalSeconds: 30, timeoutSeconds: 10, retries: 3 } as const;

/** The address a process on the host itself reaches llama-server at: loopback unless it binds one specific IP. */
export function hostLocalAddress(bindAddress: string): string {
  return bindAddress === "0.0.0.0" || bindAddress === "127.0.0.1" ? "127.0.0.1" : bindAddress;
}

export function defaultContainerName(stack: string): string {
  return `kimi-kit-${stack}`.replace(/[^a-zA-Z0-9_.-]/g, "-");
}

/** The container the plan asks for. Every value comes from the plan or the stack config. */
export function containerSpecFromPlan(plan: Plan): ContainerSpec {
  const { deployment } = plan.config;
  // Behind the TLS front door llama-server listens on loopback at its backend port, a replica on its
  // private address; the checks go there.
  const listen = plan.listen;
  const port = listen.port;
  return {
    name: deployment.containerName ?? defaultContainerName(plan.stack),
    image: plan.image,
    args: [...plan.llamaServerArgs],
    volumes: [{ hostPath: deployment.modelDir, containerPath: CONTAINER_MODEL_DIR, readOnly: true }],
    gpus: plan.host.gpus.length > 0 ? "all" : undefined,
    restart: "unless-stopped",
    networkMode: "host",
    healthUrl: `http://${hostLocalAddress(listen.address)}:${port}/health`,
    health: { cmd: deployment.healthCommand ?? `curl -fsS http://localhost:${port}/health`, ...HEALTH_TIMING },
    waitSeconds: deployment.containerWaitSeconds,
    secretPath: CONTAINER_API_KEY_FILE,
    labels: {
      "kimi-kit.stack": plan.stack,
      "kimi-kit.model": plan.model.repo,
      "kimi-kit.tier": plan.tier.name,
      ...(plan.cluster ? { [RPC_WORKERS_LABEL]: rpcWorkersSha256(plan.cluster) } : {}),
    },
    env: { ...(plan.cluster?.environment ?? {}) },
  };
}

/**
 * A split's head carries a hash of its workers' ggml-rpc-servers: a worker started anew holds none
 * of the layers the head sent it at load, so a changed worker must restart the head too, and a
 * changed label is what replaces the head's container (both engines).
 */
export const RPC_WORKERS_LABEL = "kimi-kit.rpc-workers-sha256";

function rpcWorkersSha256(cluster: NonNullable<Plan["cluster"]>): string {
  const workers = cluster.workers.map((worker) => ({
    name: worker.containerName,
    endpoint: worker.endpoint,
    args: worker.rpcServerArgs,
  }));
  return createHash("sha256")
    .update(JSON.stringify({ image: cluster.image, workers }))
    .digest("hex");
}

/**
 * The image for the host the probe found: with GPUs, the CUDA 13 build when the driver supports it
 * (R580+, probe-host.sh's llama_image_variant), the CUDA 12 build otherwise (plan.imageByDriver);
 * everywhere else, and before the probe has run (preview), the plan's image.
 */
export function imageForHost(plan: Plan, variant: string | undefined): string {
  if (!plan.imageByDriver) return plan.image;
  if (variant === "server-cuda13") return plan.imageByDriver.cuda13;
  if (variant === "server-cuda") return plan.imageByDriver.cuda;
  return plan.image;
}

/** The host file holding the API key, where llama-container.sh --secret-stdin stores it. */
export function secretHostPath(spec: ContainerSpec): string {
  return `${HOST_STATE_DIR}/secrets/${spec.name}/${posix.basename(spec.secretPath)}`;
}

/** argv after `llama-container.sh`: the `up` command for this spec (the key arrives on stdin). */
export function llamaContainerUpArgv(spec: ContainerSpec): string[] {
  const argv = ["up", "--name", spec.name, "--image", spec.image];
  for (const volume of spec.volumes)
    argv.push("--volume", `${volume.hostPath}:${volume.containerPath}:${volume.readOnly ? "ro" : "rw"}`);
  if (spec.gpus) argv.push("--gpus", spec.gpus);
  argv.push(
    "--network",
    spec.networkMode,
    "--restart",
    spec.restart,
    "--health-cmd",
    spec.health.cmd,
    "--health-interval",
    String(spec.health.intervalSeconds),
    "--health-timeout",
    String(spec.health.timeoutSeconds),
    "--health-retries",
    String(spec.health.retries),
    "--health-url",
    spec.healthUrl,
    "--wait-seconds",
    String(spec.waitSeconds),
  );
  argv.push("--secret-stdin", spec.secretPath);
  for (const [key, value] of Object.entries(spec.env)) argv.push("--env", `${key}=${value}`);
  for (const [key, value] of Object.entries(spec.labels)) argv.push("--label", `${key}=${value}`);
  argv.push("--", ...spec.args);
  return argv;
}

export function llamaContainerDownArgv(spec: ContainerSpec): string[] {
  return ["down", "--name", spec.name];
}

/** The plain (Input-free) subset of docker.ContainerArgs this kit sets. */
export interface DockerContainerSpecArgs {
  name: string;
  image: string;
  command: string[];
  networkMode: ContainerSpec["networkMode"];
  volumes: VolumeSpec[];
  gpus: string | undefined;
  restart: RestartPolicy;
  healthcheck: { tests: string[]; interval: string; timeout: string; startPeriod: string; retries: number };
  labels: { label: string; value: string }[];
  /** Undefined without variables, so a stack that sets none has the same container arguments as before. */
  envs: string[] | undefined;
  mustRun: boolean;
}

/** docker.Container arguments for this spec; the API key file is a read-only bind of secretHostPath(spec). */
export function dockerContainerArgs(spec: ContainerSpec): DockerContainerSpecArgs {
  return {
    name: spec.name,
    image: spec.image,
    command: [...spec.args],
    networkMode: spec.networkMode,
    volumes: [
      ...spec.volumes.map((volume) => ({ ...volume })),
      { hostPath: secretHostPath(spec), containerPath: spec.secretPath, readOnly: true },
    ],
    gpus: spec.gpus,
    restart: spec.restart,
    healthcheck: {
      tests: ["CMD-SHELL", spec.health.cmd],
      interval: goDurationOfSeconds(spec.health.intervalSeconds),
      timeout: goDurationOfSeconds(spec.health.timeoutSeconds),
      startPeriod: goDurationOfSeconds(spec.waitSeconds),
      retries: spec.health.retries,
    },
    labels: Object.entries(spec.labels).map(([label, value]) => ({ label, value })),
    envs:
      Object.keys(spec.env).length > 0 ? Object.entries(spec.env).map(([key, value]) => `${key}=${value}`) : undefined,
    mustRun: true,
  };
}

/** What both engines must agree on: every runtime fact of the spec, read back from each rendering. */
export interface ContainerView {
  name: string;
  image: string;
  args: string[];
  mounts: string[];
  gpus: string | undefined;
  restart: string;
  networkMode: string;
  healthCmd: string;
  /** Seconds, each: interval, timeout, start period; and the retries. */
  healthTiming: { interval: number; timeout: number; startPeriod: number; retries: number };
  env: string[];
  labels: string[];
}

const mountKey = (hostPath: string, containerPath: string, readOnly: boolean) =>
  `${hostPath}:${containerPath}:${readOnly ? "ro" : "rw"}`;

/** Seconds of a Go duration as goDurationOfSeconds writes it ("1h30m5s"). */
function secondsOfGoDuration(duration: string): number {
  const match = /^(?:(\d+)h)?(?:(\d+)m)?(\d+)s$/.exec(duration);
  if (!match) throw new Error(`internal: ${JSON.stringify(duration)} is not a whole-seconds Go duration`);
  return Number(match[1] ?? 0) * 3600 + Number(match[2] ?? 0) * 60 + Number(match[3]);
}

/**
 * Reads a `llama-container.sh up` argv back (the secret mount is the one the script creates; absent flags take the
 * script's defaults).
 */
export function viewOfCliArgv(argv: readonly string[]): ContainerView {
  const separator = argv.indexOf("--");
  const flags = argv.slice(1, separator);
  const values = (flag: string) =>
    flags.flatMap((word, index) => (word === flag && index + 1 < flags.length ? [flags[index + 1]!] : []));
  const number = (flag: string, scriptDefault: number) => Number(values(flag)[0] ?? scriptDefault);
  const name = values("--name")[0] ?? "";
  const secretPath = values("--secret-stdin")[0];
  const mounts = values("--volume").map((volume) => (/:(ro|rw)$/.test(volume) ? volume : `${volume}:rw`));
  if (secretPath)
    mounts.push(mountKey(`${HOST_STATE_DIR}/secrets/${name}/${posix.basename(secretPath)}`, secretPath, true));
  return {
    name,
    image: values("--image")[0] ?? "",
    args: argv.slice(separator + 1),
    mounts: mounts.sort(),
    gpus: values("--gpus")[0],
    restart: values("--restart")[0] ?? "unless-stopped",
    networkMode: values("--network")[0] ?? "host",
    healthCmd: values("--health-cmd")[0] ?? "",
    healthTiming: {
      interval: number("--health-interval", 30),
      timeout: number("--health-timeout", 10),
      startPeriod: number("--wait-seconds", 1800),
      retries: number("--health-retries", 3),
    },
    env: values("--env").sort(),
    labels: values("--label").sort(),
  };
}

export function viewOfDockerArgs(args: DockerContainerSpecArgs): ContainerView {
  return {
    name: args.name,
    image: args.image,
    args: [...args.command],
    mounts: args.volumes.map((volume) => mountKey(volume.hostPath, volume.containerPath, volume.readOnly)).sort(),
    gpus: args.gpus,
    restart: args.restart,
    networkMode: args.networkMode,
    healthCmd: args.healthcheck.tests[1] ?? "",
    healthTiming: {
      interval: secondsOfGoDuration(args.healthcheck.interval),
      timeout: secondsOfGoDuration(args.healthcheck.timeout),
      startPeriod: secondsOfGoDuration(args.healthcheck.startPeriod),
      retries: args.healthcheck.retries,
    },
    env: [...(args.envs ?? [])].sort(),
    labels: args.labels.map(({ label, value }) => `${label}=${value}`).sort(),
  };
}
