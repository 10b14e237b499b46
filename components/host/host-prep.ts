/**
 * Gets a host ready to serve: copies ansible-free-scripts/ to the host, then runs in order
 * probe-host.sh (refuses a host smaller than the plan), measure-bandwidth.sh (the host's memory read
 * bandwidth, which the deployment re-projects speed with), install-docker.sh,
 * install-nvidia-container-toolkit.sh (only when the plan has GPUs) and tune-host.sh.
 * Each command's triggers hold the sha256 of its script, so editing a script re-runs it.
 */
import { createHash } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import * as pulumi from "@pulumi/pulumi";
import { remoteCommand, remoteCopy, type RemoteExecutor } from "../exec/remote-exec";
import type * as command from "@pulumi/command";
import { REPO_ROOT, type Plan } from "../../planner/plan";
import type { HostSpec } from "../../planner/host";
import { REMOTE_KIT_DIR, REMOTE_MANIFESTS_DIR, REMOTE_SCRIPTS_DIR } from "../serving/container-spec";
import { shellQuote } from "../../planner/shell";

export const SCRIPTS_DIR = join(REPO_ROOT, "ansible-free-scripts");

/** The shared helper file most scripts source: part of what they run, so part of their hash. */
const LIBRARY = "lib-common.sh";

/**
 * sha256 of what a script runs: its own text, and the shared helper file when it sources it, so a
 * step re-runs when either changes.
 */
export function scriptSha256(script: string): string {
  const text = readFileSync(join(SCRIPTS_DIR, script));
  const hash = createHash("sha256").update(text);
  if (script !== LIBRARY && text.includes(LIBRARY)) hash.update("\0").update(readFileSync(join(SCRIPTS_DIR, LIBRARY)));
  return hash.digest("hex");
}

/** sha256 over every script's name and contents: changes when any script changes. */
export function scriptsFolderSha256(): string {
  const hash = createHash("sha256");
  for (const file of readdirSync(SCRIPTS_DIR).sort())
    hash
      .update(`${file}\0`)
      .update(readFileSync(join(SCRIPTS_DIR, file)))
      .update("\0");
  return hash.digest("hex");
}

/**
 * Makes the kit's folders and removes from the host's script folder whatever the repo no longer
 * ships, but never a current script: remote.Command re-runs this on any change of connection, while
 * CopyToRemote copies again only when the files change, so removing the whole folder here could
 * leave the host with no scripts at all.
 */
export function scriptsFolderPrepCommand(currentScripts: readonly string[]): string {
  const keep = currentScripts.flatMap((file) => ["!", "-name", file]);
  return [
    shellQuote(["mkdir", "-p", "--", REMOTE_KIT_DIR, REMOTE_MANIFESTS_DIR]),
    `if [ -d ${shellQuote([REMOTE_SCRIPTS_DIR])} ]; then ${shellQuote(["find", REMOTE_SCRIPTS_DIR, "-mindepth", "1", "-maxdepth", "1", ...keep, "-exec", "rm", "-rf", "--", "{}", "+"])}; fi`,
  ].join(" && ");
}

/** The command line that runs one of the copied scripts on the host. */
export function remoteScript(script: string, args: readonly string[] = []): string {
  return shellQuote(["bash", `${REMOTE_SCRIPTS_DIR}/${script}`, ...args]);
}

/** probe-host.sh's key=value stdout as a record. */
export function parseKeyValues(stdout: string): Record<string, string> {
  const values: Record<string, string> = {};
  for (const line of stdout.split("\n")) {
    const match = /^([A-Za-z0-9_]+)=(.*)$/.exec(line.trim());
    if (match) values[match[1]!] = match[2]!;
  }
  return values;
}

/** The --min-* requirements the plan puts on the host. */
export function probeArgs(plan: Plan): string[] {
  // No disk minimum here: fetch-gguf.sh checks free space against the bytes still missing, before
  // its first byte — a fixed minimum would fail every re-probe once the shards are on disk.
  return ["--model-dir", plan.config.deployment.modelDir, ...probeRequirements(plan.host)];
}

/** probe-host.sh's --min-* flags for a machine the plan sized (the head, or a split's worker). */
export function probeRequirements(host: HostSpec): string[] {
  // 3% slack: the kernel and firmware keep part of the installed RAM (and VRAM) from what the OS reports.
  const args = [
    "--min-ram-bytes",
    String(Math.round(host.memory.totalBytes * 0.97)),
    "--min-physical-cores",
    String(host.cpu.cores),
    "--min-gpus",
    String(host.gpus.length),
  ];
  if (host.gpus.length > 0)
    args.push("--min-gpu-vram-bytes", String(Math.round(Math.min(...host.gpus.map((gpu) => gpu.memoryBytes)) * 0.97)));
  return args;
}

/**
 * The kit's scripts on a host: its folders made and stale scripts removed (`<name>-scripts-dir`),
 * then ansible-free-scripts/ copied (`<name>-scripts`); both re-run when any script changes.
 * Returns the copy, which every step running a script depends on.
 */
export function copyKitScripts(
  executor: RemoteExecutor,
  name: string,
  connection: pulumi.Input<command.types.input.remote.ConnectionArgs>,
  parent: pulumi.Resource,
  after: pulumi.Resource[] = [],
): pulumi.Resource {
  const folderHash = scriptsFolderSha256();
  // The copy creates neither parents nor a text file's folder (CopyToRemote makes only the last
  // element of a path), so the kit's folders are made here, and scripts the repo no longer ships
  // are removed (same trigger as the copy: both are replaced when a script changes).
  const clear = remoteCommand(
    executor,
    `${name}-scripts-dir`,
    {
      connection,
      create: scriptsFolderPrepCommand(readdirSync(SCRIPTS_DIR)),
      triggers: [folderHash],
    },
    { parent, dependsOn: after },
  ).resource;
  return remoteCopy(
    executor,
    `${name}-scripts`,
    { connection, source: { folder: SCRIPTS_DIR }, remotePath: REMOTE_KIT_DIR, triggers: [folderHash] },
    { parent, dependsOn: [clear] },
  );
}

/** How long measure-bandwidth.sh reads memory (its own bound on the whole run is 2 × this + 60 s). */
/**
 * A step that runs one of the kit's scripts with its arguments after `after`, re-run when the script
 * (or the library it sources) changes: HostPrep's and RpcWorker's steps alike.
 */
export function scriptStep(
  executor: RemoteExecutor,
  name: string,
  connection: pulumi.Input<command.types.input.remote.ConnectionArgs>,
  parent: pulumi.Resource,
) {
  return (stepName: string, script: string, scriptArgs: string[], after: pulumi.Resource) =>
    remoteCommand(
      executor,
      `${name}-${stepName}`,
      {
        connection,
        create: remoteScript(script, scriptArgs),
        triggers: [scriptSha256(script)],
        logging: "stdoutAndStderr",
      },
      { parent, dependsOn: [after] },
    );
}

export const BANDWIDTH_SECONDS = 10;

/** measure-bandwidth.sh's arguments: every physical core the plan counts on reads, as llama-server's -t does. */
export function bandwidthArgs(plan: Plan): string[] {
  // --best-effort: a host where sysbench cannot be installed still deploys, with no measured figure.
  return ["--threads", String(plan.host.cpu.cores), "--seconds", String(BANDWIDTH_SECONDS), "--best-effort"];
}

/** measure-bandwidth.sh's read_bandwidth_gbps, or null when it measured nothing. */
export function parseMeasuredBandwidth(stdout: string | undefined): number | null {
  const value = parseKeyValues(stdout ?? "").read_bandwidth_gbps;
  if (value === undefined || !/^\d+(\.\d+)?$/.test(value)) return null;
  const gbps = Number(value);
  return gbps > 0 ? gbps : null;
}

export interface HostPrepArgs {
  plan: Plan;
  connection: pulumi.Input<command.types.input.remote.ConnectionArgs>;
}

export class HostPrep extends pulumi.ComponentResource {
  /** probe-host.sh's report (ram_bytes, gpu_count, llama_image_variant, …). */
  readonly facts: pulumi.Output<Record<string, string>>;
  readonly llamaImageVariant: pulumi.Output<string | undefined>;
  /**
   * The host's multi-threaded memory read bandwidth, GB/s, from measure-bandwidth.sh; null when it measured nothing.
   */
  readonly measuredBandwidthGBps: pulumi.Output<number | null>;
  /** The last command; later steps depend on it. */
  readonly ready: pulumi.Resource;

  constructor(name: string, args: HostPrepArgs, opts?: pulumi.ComponentResourceOptions) {
    super("kimi-kit:host:HostPrep", name, {}, opts);
    const { plan, connection } = args;
    const executor = plan.config.deployment.remoteExecutor;
    const copy = copyKitScripts(executor, name, connection, this);

    const step = scriptStep(executor, name, connection, this);

    const probe = step("probe", "probe-host.sh", probeArgs(plan), copy);
    // Measured before docker and the tuning run: on a first deployment nothing of the kit runs yet (re-run only
    // when the script changes; a llama-server already serving then shares the memory bus and lowers the figure).
    const bandwidth = step("bandwidth", "measure-bandwidth.sh", bandwidthArgs(plan), probe.resource);
    const docker = step("docker", "install-docker.sh", [], bandwidth.resource);
    const nvidia =
      plan.host.gpus.length > 0
        ? step("nvidia", "install-nvidia-container-toolkit.sh", [], docker.resource)
        : undefined;
    const tune = step(
      "tune",
      "tune-host.sh",
      ["--numa-nodes", String(plan.host.cpu.numaNodes)],
      (nvidia ?? docker).resource,
    );

    this.facts = probe.stdout.apply((stdout) => parseKeyValues(stdout ?? ""));
    this.llamaImageVariant = this.facts.apply((facts) => facts.llama_image_variant);
    this.measuredBandwidthGBps = bandwidth.stdout.apply(parseMeasuredBandwidth);
    this.ready = tune.resource;
    this.registerOutputs({
      facts: this.facts,
      llamaImageVariant: this.llamaImageVariant,
      measuredBandwidthGBps: this.measuredBandwidthGBps,
    });
  }
}
