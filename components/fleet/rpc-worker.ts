/**
 * One RPC worker of a split (planner/cluster.ts, kimi-kit:hosts role rpc-worker): a host running
 * ggml-rpc-server from the same image as the head, for the layers the plan sends it. In order:
 * the kit's scripts copied, the host probed against the worker's RAM and cores, Docker, the
 * firewall (the kit's own nftables table admitting only the head to the RPC port: ggml-rpc-server
 * has no authentication), the ggml-rpc-server container (llama-container.sh up --entrypoint
 * /app/ggml-rpc-server), and the ID of the image on the host, which LlmDeployment compares across
 * hosts before the head starts. Every fact comes from the Plan; nothing is read from the catalog.
 * Destroy runs the other way round: the container goes, then the table.
 */
import * as pulumi from "@pulumi/pulumi";
import type * as command from "@pulumi/command";
import type { RpcWorkerPlan } from "../../planner/cluster";
import type { Plan } from "../../planner/plan";
import { shellQuote } from "../../planner/shell";
import {
  copyKitScripts,
  parseKeyValues,
  probeRequirements,
  remoteScript,
  scriptSha256,
  scriptStep,
} from "../host/host-prep";
import { pinnedConnection, requirePinnedHostKey } from "../host/host";
import {
  remoteCommand,
  runRemoteNow,
  type Connection,
  type RemoteExecutor,
  type RemoteStep,
} from "../exec/remote-exec";

/** Where ggml-rpc-server lies in the kit's rpc image, beside llama-server (the image's own entrypoint). */
export const RPC_SERVER_ENTRYPOINT = "/app/ggml-rpc-server";

/** argv after `llama-container.sh`: ggml-rpc-server from the split's image, on the worker's private address only. */
export function rpcServerUpArgv(plan: Plan, worker: RpcWorkerPlan): string[] {
  const image = clusterOf(plan).image;
  return [
    "up",
    "--name",
    worker.containerName,
    "--image",
    image,
    "--entrypoint",
    RPC_SERVER_ENTRYPOINT,
    "--restart",
    "unless-stopped",
    ...Object.entries(clusterOf(plan).environment).flatMap(([key, value]) => ["--env", `${key}=${value}`]),
    "--label",
    `kimi-kit.stack=${plan.stack}`,
    "--label",
    "kimi-kit.role=rpc-worker",
    "--",
    ...worker.rpcServerArgs,
  ];
}

export function rpcServerDownArgv(worker: RpcWorkerPlan): string[] {
  return ["down", "--name", worker.containerName];
}

/** argv after `firewall.sh`: only the head may reach the RPC port. */
export function rpcFirewallApplyArgv(worker: RpcWorkerPlan): string[] {
  return [
    "apply",
    "--table",
    worker.firewall.table,
    "--allow",
    `${worker.firewall.port}=${worker.firewall.allowFrom.join(",")}`,
  ];
}

export function rpcFirewallRemoveArgv(worker: RpcWorkerPlan): string[] {
  return ["remove", "--table", worker.firewall.table];
}

/**
 * Prints the ID (sha256:…) `image` resolves to on this host, pulling it first when it is missing
 * (the kit's rpc image is loaded by hand; pulling it then fails, and the message says what to do).
 */
export function imageIdScript(image: string): string {
  const name = shellQuote([image]);
  const inspect = `docker image inspect --format '{{.Id}}' ${name}`;
  const missing = `image ${image} is neither on this host nor pullable: load the same image on every host of the split (docker save ${image} | ssh HOST docker load)`;
  return `set -e; if ! ${inspect} 2>/dev/null; then docker pull ${name} >&2 || { echo ${shellQuote([missing])} >&2; exit 1; }; ${inspect}; fi`;
}

/** The image ID in imageIdScript's stdout (its last line), or undefined. */
export function parseImageId(stdout: string | undefined): string | undefined {
  const last = (stdout ?? "").trim().split("\n").pop()?.trim() ?? "";
  return /^sha256:[0-9a-f]{64}$/.test(last) ? last : undefined;
}

/** A step whose stdout is the ID `image` resolves to on the host; re-run when the image name changes. */
export function imageIdStep(
  executor: RemoteExecutor,
  name: string,
  connection: pulumi.Input<command.types.input.remote.ConnectionArgs>,
  image: string,
  opts: pulumi.CustomResourceOptions,
): RemoteStep {
  return remoteCommand(executor, name, { connection, create: imageIdScript(image), logging: "stderr" }, opts);
}

/**
 * What `llama-container.sh status` says about the worker's container, as the error `up` stops
 * with when it is not running (undefined when it is): the worker, the state, and how to bring it
 * back (the step that made it runs again only when its inputs change).
 */
export function workerDownMessage(
  worker: Pick<RpcWorkerPlan, "id" | "endpoint" | "containerName">,
  statusStdout: string,
  upCommand: string,
): string | undefined {
  const status = parseKeyValues(statusStdout);
  if (status.state === "running") return undefined;
  const detail =
    status.state === "absent" || status.state === undefined
      ? "absent"
      : `${status.state}, exit code ${status.exit_code || "?"}, ${status.restart_count || "0"} restart(s)`;
  return (
    `worker ${worker.id} (${worker.endpoint}): ggml-rpc-server container not running (container ${worker.containerName}: ${detail}). ` +
    `Start it again on that host with \`${upCommand}\` (what the kit ran), then run \`pulumi up\` again; the head's llama-server lost the worker's layers and may need a restart too.`
  );
}

function clusterOf(plan: Plan): NonNullable<Plan["cluster"]> {
  if (!plan.cluster) throw new Error(`internal: stack ${plan.stack} is no split; there is no RPC worker to run`);
  return plan.cluster;
}

export interface RpcWorkerArgs {
  plan: Plan;
  worker: RpcWorkerPlan;
  /** The `kimi-kit:sshPrivateKey` secret, as for the head; without it the SSH agent is used. */
  sshPrivateKey?: pulumi.Input<string>;
}

/** What every step of one worker shares: its component, names, executor and pinned connection. */
interface WorkerContext {
  parent: pulumi.Resource;
  name: string;
  executor: RemoteExecutor;
  connection: pulumi.Output<command.types.input.remote.ConnectionArgs>;
}

/** The worker's pinned SSH connection; a RunError when its config names no SSH endpoint. */
function workerConnection(
  parent: pulumi.Resource,
  plan: Plan,
  worker: RpcWorkerPlan,
  sshPrivateKey: pulumi.Input<string> | undefined,
): pulumi.Output<command.types.input.remote.ConnectionArgs> {
  const configPath = `hosts[${worker.index}]`;
  if (!worker.ssh)
    throw new pulumi.RunError(
      `stack ${plan.stack}: ${configPath}.ssh is missing: set ${configPath}.ssh.host (and port/user) so the kit can reach worker ${worker.id}.`,
    );
  requirePinnedHostKey(plan.stack, worker.ssh, `${configPath}.ssh.hostPublicKey`, parent);
  return pinnedConnection(worker.ssh, sshPrivateKey === undefined ? undefined : pulumi.secret(sshPrivateKey));
}

/** The kit's scripts copied, the host probed, Docker installed: returns the last step. */
function prepareWorkerHost(context: WorkerContext, worker: RpcWorkerPlan): pulumi.Resource {
  const { parent, name, executor, connection } = context;
  const step = scriptStep(executor, name, connection, parent);

  const scripts = copyKitScripts(executor, name, connection, parent);
  // No model on a worker: only its RAM and cores are the plan's to check.
  const probe = step("probe", "probe-host.sh", probeRequirements(worker.host), scripts);
  const docker = step("docker", "install-docker.sh", [], probe.resource);
  return docker.resource;
}

/** The kit's nftables table admitting only the head to the RPC port. */
function rpcFirewallStep(context: WorkerContext, worker: RpcWorkerPlan, after: pulumi.Resource): RemoteStep {
  return remoteCommand(
    context.executor,
    `${context.name}-firewall`,
    {
      connection: context.connection,
      create: remoteScript("firewall.sh", rpcFirewallApplyArgv(worker)),
      delete: remoteScript("firewall.sh", rpcFirewallRemoveArgv(worker)),
      triggers: [scriptSha256("firewall.sh"), scriptSha256("lib-common.sh"), worker.firewall.table],
      logging: "stdoutAndStderr",
    },
    { parent: context.parent, dependsOn: [after] },
  );
}

/** The ggml-rpc-server container (`llama-container.sh up` with `upArgv`). */
function rpcContainerStep(
  context: WorkerContext,
  worker: RpcWorkerPlan,
  upArgv: string[],
  after: pulumi.Resource,
): RemoteStep {
  return remoteCommand(
    context.executor,
    `${context.name}-container`,
    {
      connection: context.connection,
      create: remoteScript("llama-container.sh", upArgv),
      delete: remoteScript("llama-container.sh", rpcServerDownArgv(worker)),
      // A changed image or argument list re-runs `up`, which replaces the container.
      triggers: [JSON.stringify(upArgv), scriptSha256("llama-container.sh")],
      logging: "stdoutAndStderr",
    },
    { parent: context.parent, dependsOn: [after] },
  );
}

/** The ID the split's image resolves to on the worker, read once the container step is done. */
function workerImageId(
  context: WorkerContext,
  worker: RpcWorkerPlan,
  image: string,
  container: RemoteStep,
): pulumi.Output<string> {
  const step = imageIdStep(context.executor, `${context.name}-image`, context.connection, image, {
    parent: context.parent,
    dependsOn: [container.resource],
  });
  return step.stdout.apply((stdout) => {
    const id = parseImageId(stdout);
    if (!id)
      throw new pulumi.RunError(
        `worker ${worker.id} (${worker.endpoint}): no image ID for ${image} in the step's output: ${JSON.stringify((stdout ?? "").slice(-500))}`,
      );
    return id;
  });
}

/**
 * A worker that went down since the last `up` (crashed, host rebooted, removed by hand): the
 * container step runs again only when its inputs change, and a step made to change on
 * every run would show as an update in every preview. @pulumi/command's Read runs nothing on
 * `pulumi refresh` (pulumi-command#432) and refresh does not run this program, so neither can
 * notice. An apply runs every time the program does and shows in no diff: here it asks
 * `llama-container.sh status` over the same pinned SSH once the container step is done
 * (created, updated or unchanged), on every `up`, never in preview, and fails the update with
 * workerDownMessage. The head's llama-server waits on it (LlmDeployment's image check). It
 * needs the system ssh client where Pulumi runs, as the kimi-dynamic executor and the
 * docker-provider engine already do, and blocks the program for the second the status takes.
 */
function workerContainerState(
  connection: WorkerContext["connection"],
  worker: RpcWorkerPlan,
  upArgv: string[],
  container: RemoteStep,
): pulumi.Output<string> {
  const statusScript = remoteScript("llama-container.sh", ["status", "--name", worker.containerName]);
  const upCommand = remoteScript("llama-container.sh", upArgv);
  // Unsecret: the state is no secret, and the head's container command waits on it (a secret
  // there would hide the whole command from diffs).
  const state = pulumi.all([connection, container.stdout]).apply(([reach]) => {
    if (pulumi.runtime.isDryRun()) return "not checked in preview";
    let stdout: string;
    try {
      stdout = runRemoteNow(reach as Connection, statusScript);
    } catch (error) {
      throw new pulumi.RunError(
        `worker ${worker.id} (${worker.endpoint}): could not ask whether ggml-rpc-server runs (${String(error instanceof Error ? error.message : error).trim()})`,
      );
    }
    const down = workerDownMessage(worker, stdout, upCommand);
    if (down) throw new pulumi.RunError(down);
    return "running";
  });
  return pulumi.unsecret(state);
}

export class RpcWorker extends pulumi.ComponentResource {
  readonly worker: RpcWorkerPlan;
  readonly connection: pulumi.Output<command.types.input.remote.ConnectionArgs>;
  /** The ID (sha256:…) plan.cluster.image resolves to on this host. */
  readonly imageId: pulumi.Output<string>;
  /**
   * "running" once `up` saw ggml-rpc-server running; fails the update with workerDownMessage when
   * it is not. Not checked in preview (nothing connects then).
   */
  readonly containerState: pulumi.Output<string>;
  /** The container step: the head's llama-server starts after it. */
  readonly server: pulumi.Resource;

  constructor(name: string, args: RpcWorkerArgs, opts?: pulumi.ComponentResourceOptions) {
    const { plan, worker } = args;
    const cluster = clusterOf(plan);
    super("kimi-kit:fleet:RpcWorker", name, {}, opts);
    this.worker = worker;
    const connection = workerConnection(this, plan, worker, args.sshPrivateKey);
    this.connection = connection;
    const context: WorkerContext = { parent: this, name, executor: plan.config.deployment.remoteExecutor, connection };
    const docker = prepareWorkerHost(context, worker);
    // The port is filtered before anything listens on it.
    const firewall = rpcFirewallStep(context, worker, docker);
    const upArgv = rpcServerUpArgv(plan, worker);
    const container = rpcContainerStep(context, worker, upArgv, firewall.resource);
    this.server = container.resource;
    this.imageId = workerImageId(context, worker, cluster.image, container);
    this.containerState = workerContainerState(connection, worker, upArgv, container);
    this.registerOutputs({
      endpoint: worker.endpoint,
      containerName: worker.containerName,
      imageId: this.imageId,
      containerState: this.containerState,
    });
  }
}
