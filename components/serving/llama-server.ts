/**
 * The llama-server container, from one ContainerSpec (container-spec.ts), with either engine:
 *  - "docker-cli": a remote command runs `llama-container.sh up …` on the host (the API key on
 *    stdin); the script is idempotent and replaces the container only when the spec changed.
 *  - "docker-provider": @pulumi/docker over SSH (pinned host key) with a docker.Container of the
 *    same spec; the key file is written by a remote command from stdin and bind-mounted read-only.
 * The API key never appears in argv, environment variables or container labels (docker-provider
 * labels the container with its sha256 only, so that a new key replaces the container).
 *
 * Preview: the docker provider is created with disableDockerDaemonCheck, so configuring it does not
 * dial the daemon; creating the container is the first thing that does, and that only happens in
 * `pulumi up`. Remote commands never run during preview.
 */
import { chmodSync, mkdirSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { createHash } from "node:crypto";
import { join } from "node:path";
import * as pulumi from "@pulumi/pulumi";
import { remoteCommand } from "../exec/remote-exec";
import * as docker from "@pulumi/docker";
import type { Plan } from "../../planner/plan";
import {
  imageForHost,
  containerSpecFromPlan,
  dockerContainerArgs,
  llamaContainerDownArgv,
  llamaContainerUpArgv,
  secretHostPath,
  type ContainerSpec,
} from "./container-spec";
import { shellQuote } from "../../planner/shell";
import type { Host } from "../host/host";
import { remoteScript, scriptSha256 } from "../host/host-prep";

export type ContainerEngine = "docker-cli" | "docker-provider";

/** docker-provider: the label that carries the API key's sha256, so a new key replaces the container. */
export const API_KEY_HASH_LABEL = "kimi-kit.api-key-sha256";

export interface LlamaServerArgs {
  plan: Plan;
  host: Host;
  apiKey: pulumi.Input<string>;
  /** Defaults to plan.config.deployment.containerEngine. */
  engine?: ContainerEngine;
  /** probe-host.sh's llama_image_variant (server, server-cuda, server-cuda13): picks the CUDA build for the driver. */
  imageVariant?: pulumi.Input<string | undefined>;
  /** What must be done first (the shards); Pulumi does not pass a component's dependsOn to its children. */
  after?: pulumi.Resource[];
  /**
   * A split: settles once every host has the same image ID and every worker runs; the container is
   * registered only after it, and not at all when it fails (a RunError naming the hosts).
   */
  imageCheck?: pulumi.Input<string>;
  /**
   * docker-provider only: the local folder for the known_hosts file (pinned key) and the SSH key the
   * docker CLI's ssh uses. Default `~/.ssh/kimi-kit/<stack>` (ssh expands the tilde itself).
   */
  sshFilesDir?: string;
}

/** `known_hosts` line for the pinned key ([host]:port form when the port is not 22). */
export function knownHostsLine(address: string, port: number, hostPublicKey: string): string {
  return `${port === 22 ? address : `[${address}]:${port}`} ${hostPublicKey}\n`;
}

function expandHome(path: string): string {
  return path === "~" || path.startsWith("~/") ? join(homedir(), path.slice(1)) : path;
}

/** What both engines' steps share: where they go, what they run and what they wait for. */
interface ContainerContext {
  parent: pulumi.Resource;
  name: string;
  plan: Plan;
  host: Host;
  spec: ContainerSpec;
  connection: NonNullable<Host["connection"]>;
  image: pulumi.Output<string>;
  apiKey: pulumi.Output<string>;
  after: pulumi.Resource[];
  sshFilesDir?: string;
}

/** docker-cli: `llama-container.sh up` over SSH, the API key on stdin. */
function dockerCliContainer(context: ContainerContext): pulumi.Resource {
  const { spec, image } = context;
  return remoteCommand(
    context.plan.config.deployment.remoteExecutor,
    `${context.name}-container`,
    {
      connection: context.connection,
      create: image.apply((chosen) =>
        remoteScript("llama-container.sh", llamaContainerUpArgv({ ...spec, image: chosen })),
      ),
      delete: remoteScript("llama-container.sh", llamaContainerDownArgv(spec)),
      stdin: context.apiKey,
      // A changed spec (args, image, mounts…) re-runs `up`, which replaces the container.
      triggers: [JSON.stringify(spec), image, scriptSha256("llama-container.sh")],
      logging: "stdoutAndStderr",
    },
    { parent: context.parent, dependsOn: context.after },
  ).resource;
}

/** Where the docker CLI's ssh finds the pinned key and the private key, and the options that point it there. */
function dockerSshFiles(plan: Plan, host: Host, sshFilesDir: string | undefined) {
  const filesDir = sshFilesDir ?? `~/.ssh/kimi-kit/${plan.stack}`;
  const knownHosts = `${filesDir}/known_hosts`;
  const identity = `${filesDir}/id`;
  const sshOpts = [
    "-o",
    "StrictHostKeyChecking=yes",
    "-o",
    `UserKnownHostsFile=${knownHosts}`,
    "-o",
    "IdentitiesOnly=yes",
  ];
  if (host.sshPrivateKey) sshOpts.push("-i", identity);
  return { filesDir, knownHosts, identity, sshOpts };
}

/**
 * The docker provider shells out to the system ssh: give it the pinned key and the private key
 * as files (0600, under a 0700 folder). Written on every run, never during preview.
 */
function writeDockerSshFiles(host: Host, files: ReturnType<typeof dockerSshFiles>): pulumi.Output<boolean> {
  const { filesDir, knownHosts, identity } = files;
  return pulumi
    .all([host.sshPrivateKey, host.address, host.hostPublicKey])
    .apply(([privateKey, address, hostPublicKey]) => {
      if (pulumi.runtime.isDryRun()) return false;
      const dir = expandHome(filesDir);
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      writeFileSync(expandHome(knownHosts), knownHostsLine(address!, host.sshPort, hostPublicKey!), {
        mode: 0o600,
      });
      if (privateKey !== undefined) {
        writeFileSync(expandHome(identity), privateKey.endsWith("\n") ? privateKey : `${privateKey}\n`, {
          mode: 0o600,
        });
        chmodSync(expandHome(identity), 0o600);
      }
      return true;
    });
}

/** docker-provider: the API key file, written on the host from stdin (bind-mounted read-only into the container). */
function apiKeyFileStep(context: ContainerContext): pulumi.Resource {
  const keyFile = secretHostPath(context.spec);
  const keyDir = keyFile.replace(/\/[^/]+$/, "");
  return remoteCommand(
    context.plan.config.deployment.remoteExecutor,
    `${context.name}-api-key`,
    {
      connection: context.connection,
      create: `umask 077 && mkdir -p ${shellQuote([keyDir])} && cat > ${shellQuote([`${keyFile}.tmp`])} && mv -f ${shellQuote([`${keyFile}.tmp`, keyFile])}`,
      delete: shellQuote(["rm", "-f", "--", keyFile]),
      stdin: context.apiKey,
    },
    { parent: context.parent, dependsOn: context.after },
  ).resource;
}

/** docker-provider: @pulumi/docker over SSH (pinned host key) with a docker.Container of the spec. */
function dockerProviderContainer(context: ContainerContext): pulumi.Resource {
  const { parent, name, host, spec, after } = context;
  const files = dockerSshFiles(context.plan, host, context.sshFilesDir);
  const written = writeDockerSshFiles(host, files);
  const provider = new docker.Provider(
    `${name}-docker`,
    {
      host: pulumi.interpolate`ssh://${host.sshUser}@${host.address}:${host.sshPort}`,
      sshOpts: files.sshOpts,
      disableDockerDaemonCheck: true,
    },
    { parent },
  );
  const secret = apiKeyFileStep(context);
  const remoteImage = new docker.RemoteImage(
    `${name}-image`,
    { name: context.image, keepLocally: true, triggers: { written: written.apply(() => "ssh-files") } },
    { parent, provider, dependsOn: after },
  );
  // The key file is bind-mounted, so a new key needs a new container: its hash is a label, and
  // the provider replaces a container whose labels change (llama-container.sh folds the same
  // hash into its spec label).
  const containerArgs = dockerContainerArgs(spec);
  const labels = context.apiKey.apply((key) => [
    ...containerArgs.labels,
    { label: API_KEY_HASH_LABEL, value: createHash("sha256").update(key).digest("hex") },
  ]);
  return new docker.Container(
    `${name}-container`,
    { ...containerArgs, labels, image: remoteImage.imageId },
    { parent, provider, dependsOn: [secret, ...after], deleteBeforeReplace: true },
  );
}

export class LlamaServer extends pulumi.ComponentResource {
  readonly spec: ContainerSpec;
  readonly engine: ContainerEngine;
  readonly containerName: string;
  readonly healthUrl: string;
  /** The resource that runs the container: later steps depend on it. */
  readonly server: pulumi.Resource;

  constructor(name: string, args: LlamaServerArgs, opts?: pulumi.ComponentResourceOptions) {
    super("kimi-kit:serving:LlamaServer", name, {}, opts);
    const { plan, host } = args;
    const connection = host.connection;
    if (!connection || !host.address || (!host.hostPublicKey && !pulumi.runtime.isDryRun()))
      throw new pulumi.RunError(`stack ${plan.stack}: LlamaServer needs a reachable host with a pinned key`);
    const spec = containerSpecFromPlan(plan);
    this.spec = spec;
    this.engine = args.engine ?? plan.config.deployment.containerEngine;
    this.containerName = spec.name;
    this.healthUrl = spec.healthUrl;
    const after = args.after ?? [];
    // The check's value is not used: waiting on it is the point (the image name stays the plan's).
    const image = pulumi.all([args.imageVariant, args.imageCheck]).apply(([variant]) => imageForHost(plan, variant));
    const apiKey = pulumi.secret(args.apiKey);
    const context: ContainerContext = {
      parent: this,
      name,
      plan,
      host,
      spec,
      connection,
      image,
      apiKey,
      after,
      sshFilesDir: args.sshFilesDir,
    };
    this.server = this.engine === "docker-cli" ? dockerCliContainer(context) : dockerProviderContainer(context);
    this.registerOutputs({
      containerName: this.containerName,
      engine: this.engine,
      healthUrl: this.healthUrl,
      args: spec.args,
      image: spec.image,
    });
  }
}
