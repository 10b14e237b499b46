/**
 * One replica of a fleet (planner/fleet-serving.ts): a host serving the whole model behind the
 * gateway. Host → HostPrep → the kit's nftables table admitting only the gateway host to the
 * usage exporter's ports (before anything listens on them) → GgufShards → LlamaServer on loopback
 * → the usage exporter on the private address in front of it (usage-exporter.sh) → a smoke request
 * with the replicas' key, whose timings are the replica's measured speed.
 * Every fact comes from the replica's plan (planner/plan.ts replicaPlan); nothing from the catalog.
 */
import * as pulumi from "@pulumi/pulumi";
import { firewallAllowArgv, type ReplicaServing, type UsageExporterServing } from "../../planner/fleet-serving";
import type { Plan } from "../../planner/plan";
import { GgufShards } from "../model/gguf-shards";
import { Host } from "../host/host";
import { HostPrep, remoteScript, scriptSha256 } from "../host/host-prep";
import { LlamaServer, type ContainerEngine } from "../serving/llama-server";
import { REMOTE_KIT_DIR } from "../serving/container-spec";
import { remoteCommand, stagedFilesScript } from "../exec/remote-exec";
import { hostProgramJavaScript, hostProgramJavaScriptSha256 } from "../exec/host-programs";
import { smokeStep, type SmokeTimings } from "../serving/smoke";

/** argv after `usage-exporter.sh`: the per-team counter in front of llama-server, its script staged in `fromFile`. */
export function usageExporterApplyArgv(usage: UsageExporterServing, fromFile: string): string[] {
  const at = (listener: { address: string; port: number }) => `${listener.address}:${listener.port}`;
  return [
    "apply",
    "--name",
    usage.name,
    "--from",
    fromFile,
    "--listen",
    at(usage.listen),
    "--upstream",
    at(usage.upstream),
    "--metrics",
    at(usage.metrics),
  ];
}

export function usageExporterApplyScript(usage: UsageExporterServing): string {
  const staging = `${REMOTE_KIT_DIR}/staged/usage-${usage.name}`;
  return stagedFilesScript(
    staging,
    { "usage-exporter.js": hostProgramJavaScript("usage-exporter") },
    remoteScript("usage-exporter.sh", usageExporterApplyArgv(usage, `${staging}/usage-exporter.js`)),
  );
}

export interface ReplicaArgs {
  /** planner/plan.ts replicaPlan(fleetPlan, replica): the fleet's plan on this replica's host and listener. */
  plan: Plan;
  replica: ReplicaServing;
  /** The replicas' own key (the gateway sends it; teams never see it). */
  apiKey: pulumi.Input<string>;
  sshPrivateKey?: pulumi.Input<string>;
  huggingFaceToken?: pulumi.Input<string>;
  engine?: ContainerEngine;
  sshFilesDir?: string;
}

type Executor = Plan["config"]["deployment"]["remoteExecutor"];
type ReplicaConnection = NonNullable<Host["connection"]>;

/** The kit's nftables table admitting only the gateway host to the usage exporter's ports, after HostPrep. */
function replicaFirewall(
  parent: pulumi.Resource,
  name: string,
  executor: Executor,
  connection: ReplicaConnection,
  firewall: NonNullable<ReplicaServing["firewall"]>,
  prep: HostPrep,
): pulumi.Resource {
  return remoteCommand(
    executor,
    `${name}-firewall`,
    {
      connection,
      create: remoteScript("firewall.sh", firewallAllowArgv(firewall)),
      delete: remoteScript("firewall.sh", ["remove", "--table", firewall.table]),
      triggers: [scriptSha256("firewall.sh"), scriptSha256("lib-common.sh"), firewall.table],
      logging: "stdoutAndStderr",
    },
    { parent, dependsOn: [prep.ready] },
  ).resource;
}

/** The gateway's only way in: the per-team counter, started once llama-server runs behind it. */
function usageExporterStep(
  parent: pulumi.Resource,
  name: string,
  executor: Executor,
  connection: ReplicaConnection,
  usage: UsageExporterServing,
  server: LlamaServer,
): pulumi.Resource {
  return remoteCommand(
    executor,
    `${name}-usage`,
    {
      connection,
      create: usageExporterApplyScript(usage),
      delete: remoteScript("usage-exporter.sh", ["remove", "--name", usage.name]),
      triggers: [
        scriptSha256("usage-exporter.sh"),
        scriptSha256("lib-common.sh"),
        hostProgramJavaScriptSha256("usage-exporter"),
        usage.name,
      ],
      logging: "stdoutAndStderr",
    },
    { parent, dependsOn: [server.server] },
  ).resource;
}

export class Replica extends pulumi.ComponentResource {
  readonly replica: ReplicaServing;
  readonly host: Host;
  readonly prep: HostPrep;
  /** The usage exporter's step (after the container): what the gateway's health checks reach. */
  readonly server: pulumi.Resource;
  readonly smoke: pulumi.Output<SmokeTimings>;

  constructor(name: string, args: ReplicaArgs, opts?: pulumi.ComponentResourceOptions) {
    super("kimi-kit:fleet:Replica", name, {}, opts);
    const { plan, replica } = args;
    this.replica = replica;
    const host = new Host(`${name}-host`, { plan, sshPrivateKey: args.sshPrivateKey }, { parent: this });
    if (!host.connection)
      throw new pulumi.RunError(
        `stack ${plan.stack}: replica ${replica.id} (${replica.configPath}) has no SSH connection`,
      );
    this.host = host;
    const executor = plan.config.deployment.remoteExecutor;
    const prep = new HostPrep(`${name}-prep`, { plan, connection: host.connection }, { parent: this });
    this.prep = prep;
    const ready = replica.firewall
      ? replicaFirewall(this, name, executor, host.connection, replica.firewall, prep)
      : prep.ready;
    const shards = new GgufShards(
      `${name}-shards`,
      { plan, connection: host.connection, huggingFaceToken: args.huggingFaceToken, after: [prep, ready] },
      { parent: this },
    );
    const server = new LlamaServer(
      `${name}-server`,
      {
        plan,
        host,
        apiKey: args.apiKey,
        engine: args.engine,
        after: [shards.fetched, ready],
        sshFilesDir: args.sshFilesDir,
        imageVariant: prep.llamaImageVariant,
      },
      { parent: this },
    );
    this.server = usageExporterStep(this, name, executor, host.connection, replica.usage, server);
    this.smoke = smokeStep(
      executor,
      `${name}-smoke`,
      {
        connection: host.connection,
        listen: plan.listen,
        alias: plan.model.serving.alias,
        waitSeconds: server.spec.waitSeconds,
        apiKey: args.apiKey,
        triggers: [JSON.stringify(server.spec)],
      },
      { parent: this, dependsOn: [server.server] },
    );
    this.registerOutputs({
      id: replica.id,
      listen: replica.listen,
      smoke: this.smoke,
      measuredBandwidthGBps: prep.measuredBandwidthGBps,
    });
  }
}
