/**
 * The model's GGUF shards on the host, downloaded and sha256-verified by fetch-gguf.sh. With a
 * manifest lock the exact files (and hashes) of planner/lock.ts's manifestTsv are fetched;
 * without one fetch-gguf.sh resolves the tier folder from the Hub's tree API. Destroying the stack
 * keeps the shards unless deployment.purgeModels is true; then exactly this tier's files go.
 */
import { posix } from "node:path";
import * as pulumi from "@pulumi/pulumi";
import type * as command from "@pulumi/command";
import { manifestTsv } from "../../planner/lock";
import type { Plan } from "../../planner/plan";
import { REMOTE_MANIFESTS_DIR } from "../serving/container-spec";
import { shellQuote } from "../../planner/shell";
import { remoteScript, scriptSha256 } from "../host/host-prep";
import { remoteCommand, remoteCopy } from "../exec/remote-exec";

export interface GgufShardsArgs {
  plan: Plan;
  connection: pulumi.Input<command.types.input.remote.ConnectionArgs>;
  /** The `kimi-kit:huggingFaceToken` secret, given to fetch-gguf.sh on stdin. */
  huggingFaceToken?: pulumi.Input<string>;
  /** What must be done first (HostPrep); Pulumi does not pass a component's dependsOn to its children. */
  after?: pulumi.Resource[];
}

/** The tier's folder in the repo (the first shard's directory), what --resolve takes. */
export function tierFolder(plan: Plan): string {
  return posix.dirname(plan.shards.firstShard);
}

export function fetchArgs(plan: Plan, manifestPath: string | undefined, withToken: boolean): string[] {
  const deployment = plan.config.deployment;
  return [
    "--dest",
    deployment.modelDir,
    "--base-url",
    deployment.huggingFaceBaseUrl,
    "--repo",
    plan.model.repo,
    ...(manifestPath ? ["--manifest", manifestPath] : ["--resolve", tierFolder(plan)]),
    ...(withToken ? ["--token-stdin"] : []),
  ];
}

/** `delete`: remove exactly this tier's files when purging, otherwise keep them and say so. */
export function deleteCommand(plan: Plan): string {
  const dir = plan.config.deployment.modelDir;
  if (!plan.config.deployment.purgeModels) {
    return `echo ${shellQuote([`kimi-kit: keeping ${plan.shards.count} shard(s) of ${plan.tier.name} in ${dir} (set deployment.purgeModels: true to remove them)`])}`;
  }
  const files = plan.shards.paths.flatMap((path) => [`${dir}/${path}`, `${dir}/${path}.verified`]);
  return shellQuote(["rm", "-f", "--", ...files]);
}

export interface GgufShardsOptions extends pulumi.ComponentResourceOptions {
  /** For tests: the lock's manifest text; by default the plan's lock, when it has one. */
  manifest?: string | null;
}

export class GgufShards extends pulumi.ComponentResource {
  readonly modelDir: pulumi.Output<string>;
  readonly firstShardPath: pulumi.Output<string>;
  /** The fetch command: the container depends on it. */
  readonly fetched: pulumi.Resource;
  readonly fetchLog: pulumi.Output<string>;

  constructor(name: string, args: GgufShardsArgs, opts: GgufShardsOptions = {}) {
    const { manifest: manifestOverride, ...componentOpts } = opts;
    super("kimi-kit:model:GgufShards", name, {}, componentOpts);
    const { plan, connection } = args;
    const deployment = plan.config.deployment;

    let manifest: string | undefined;
    if (manifestOverride !== undefined) manifest = manifestOverride ?? undefined;
    else if (plan.lock) manifest = manifestTsv(plan.lock);

    const executor = deployment.remoteExecutor;
    const dependsOn: pulumi.Resource[] = [...(args.after ?? [])];
    let manifestPath: string | undefined;
    if (manifest !== undefined) {
      manifestPath = `${REMOTE_MANIFESTS_DIR}/${plan.tier.name}.tsv`;
      dependsOn.push(
        remoteCopy(
          executor,
          `${name}-manifest`,
          { connection, source: { text: manifest }, remotePath: manifestPath, triggers: [manifest] },
          { parent: this, dependsOn: [...dependsOn] },
        ),
      );
    }

    const withToken = args.huggingFaceToken !== undefined;
    const fetch = remoteCommand(
      executor,
      `${name}-fetch`,
      {
        connection,
        create: remoteScript("fetch-gguf.sh", fetchArgs(plan, manifestPath, withToken)),
        delete: deleteCommand(plan),
        ...(withToken ? { stdin: pulumi.secret(args.huggingFaceToken!) } : {}),
        triggers: [scriptSha256("fetch-gguf.sh"), manifest ?? tierFolder(plan)],
        logging: "stdoutAndStderr",
      },
      { parent: this, dependsOn },
    );

    this.fetched = fetch.resource;
    this.fetchLog = fetch.stdout;
    this.modelDir = pulumi.output(deployment.modelDir);
    this.firstShardPath = fetch.stdout.apply(() => `${deployment.modelDir}/${plan.shards.firstShard}`);
    this.registerOutputs({ modelDir: this.modelDir, firstShardPath: this.firstShardPath });
  }
}
