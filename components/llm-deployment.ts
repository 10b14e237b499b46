/**
 * The whole deployment: plan first, then Host → HostPrep (probe → docker → nvidia → tune) →
 * GgufShards → LlamaServer → a smoke request whose llama-server timings become outputs next to
 * the plan's projections: from the plan's host (catalog datasheets, or what the stack states), and
 * re-projected with the memory bandwidth HostPrep measured on the host (planner/reproject.ts).
 * A split (kimi-kit:hosts) adds one RpcWorker per worker; the head's llama-server starts only once
 * they run and every host has the same image ID. A stack the plan refuses throws before any
 * resource is registered.
 */
import * as pulumi from "@pulumi/pulumi";
import { localCommand } from "./exec/remote-exec";
import { parseStackConfig, type StackConfig } from "../planner/config";
import { ConfigError } from "../planner/errors";
import { fleetToJson, type FleetJson, type TeamJson } from "../planner/report";
import { buildPlan, replicaPlan, type Plan, type PlanOptions } from "../planner/plan";
import type { FleetServing } from "../planner/fleet-serving";
import { Gateway, GENERATE_KEY_COMMAND } from "./serving/gateway";
import { Monitoring } from "./serving/monitoring";
import { Replica } from "./fleet/replica";
import { reprojectWithBandwidth } from "../planner/reproject";
import { smokeStep, type SmokeTimings } from "./serving/smoke";
import { GgufShards } from "./model/gguf-shards";
import { Host } from "./host/host";
import { HostPrep } from "./host/host-prep";
import { LlamaServer, type ContainerEngine } from "./serving/llama-server";
import { FrontDoor } from "./serving/front-door";
import { imageIdStep, parseImageId, RpcWorker } from "./fleet/rpc-worker";
import { endpointScheme, isPublicListener } from "../planner/front-door";
import { guardrailFacts } from "./guardrail-facts";
import { FACTS_PROPERTY } from "../policy/facts";

export interface LlmDeploymentArgs {
  /** The Pulumi stack name (plans and refusals name it). */
  stack: string;
  config: StackConfig;
  /** `kimi-kit:apiKey`; without it one is generated once and kept in the state as a secret. */
  apiKey?: pulumi.Input<string>;
  sshPrivateKey?: pulumi.Input<string>;
  huggingFaceToken?: pulumi.Input<string>;
  /** serving.tls.source "secrets": the front door's certificate (chain) and private key, PEM. */
  tlsCertificate?: pulumi.Input<string>;
  tlsPrivateKey?: pulumi.Input<string>;
  engine?: ContainerEngine;
  planOptions?: PlanOptions;
  /** docker-provider: local folder for the pinned known_hosts and SSH key files. */
  sshFilesDir?: string;
}

export interface PlanSummary {
  mode: string;
  image: string;
  args: string[];
  devices: { device: string; label: string; plannedBytes: number; capacityBytes: number; fits: boolean }[];
  shards: { count: number; firstShard: string; source: string };
  /**
   * Replicas, their throughput and the fleet's cost (planner/fleet.ts): only when the stack sets kimi-kit:fleet or
   * kimi-kit:teams.
   */
  fleet?: FleetJson;
  /** Each team's limits and what its budget buys; team keys are not here (they are secrets). */
  teams?: TeamJson[];
}

/**
 * Speed three ways, side by side: projected from the plan's host, re-projected with the measured bandwidth, measured.
 */
export interface SpeedSideBySide {
  bandwidthGBps: { plan: number; planBasis: string; measured: number | null };
  decodeTokensPerSecond: {
    projectedFromPlan: number;
    projectedFromMeasuredBandwidth: number | null;
    measured: number | null;
  };
  prefillTokensPerSecond: {
    projectedFromPlan: number;
    projectedFromMeasuredBandwidth: number | null;
    measured: number | null;
  };
  /** Where each figure comes from; the smoke request's figures are for a short prompt and 16 tokens. */
  notes: string[];
}

/** A split's stack output: who holds what (the plan's figures). */
export interface ClusterSummary {
  /** The image every host runs. */
  image: string;
  head: { id: string; privateAddress: string; layers: number };
  workers: { id: string; endpoint: string; layers: number; holdsOutput: boolean; plannedBytes: number }[];
}

export function clusterSummary(plan: Plan): ClusterSummary | null {
  const cluster = plan.cluster;
  if (!cluster) return null;
  return {
    image: cluster.image,
    head: { id: cluster.head.id, privateAddress: cluster.head.privateAddress, layers: cluster.head.layers.length },
    workers: cluster.workers.map((worker) => ({
      id: worker.id,
      endpoint: worker.endpoint,
      layers: worker.layers.length,
      holdsOutput: worker.holdsOutput,
      plannedBytes: worker.memory.plannedBytes,
    })),
  };
}

/** One host of a split and the ID its image resolves to there. */
export interface HostImageId {
  /** How messages name it: "head head", "worker worker-1 (10.0.0.2:50052)". */
  host: string;
  imageId: string;
}

/**
 * The image ID every host of a split has, or a RunError naming each host and its ID: ggml-rpc
 * refuses a server of another protocol major, and two builds of one release can still place or
 * compute differently.
 */
export function sameImageOrRunError(stack: string, image: string, hosts: readonly HostImageId[]): string {
  const ids = new Set(hosts.map((entry) => entry.imageId));
  if (ids.size === 1) return hosts[0]!.imageId;
  throw new pulumi.RunError(
    `stack ${stack}: the hosts of the split hold different images for ${image}: ${hosts.map((entry) => `${entry.host}: ${entry.imageId}`).join("; ")}. ` +
      `Every host must run the same llama.cpp build (ggml-rpc refuses another protocol major, and mixed builds drift): load one image on all of them (docker save ${image} | ssh HOST docker load) and run \`pulumi up\` again.`,
  );
}

/** A ConfigError (or any planner refusal) as the RunError Pulumi prints without a stack trace. */
function asRunError(error: unknown): never {
  if (error instanceof ConfigError) throw new pulumi.RunError(error.message);
  throw error;
}

/** Parses the raw `kimi-kit:*` values; a bad config becomes a RunError listing every problem. */
export function parseConfigOrRunError(stack: string, raw: Record<string, unknown>): StackConfig {
  try {
    return parseStackConfig(stack, raw);
  } catch (error) {
    return asRunError(error);
  }
}

/** The plan, or a RunError: invalid config, or a stack that does not fit its host. */
export function planOrRunError(stack: string, config: StackConfig, options?: PlanOptions): Plan {
  let plan: Plan;
  try {
    plan = buildPlan(stack, config, options);
  } catch (error) {
    return asRunError(error);
  }
  if (!plan.fits) throw new pulumi.RunError(plan.refusal ?? `stack ${stack}: the model does not fit this host`);
  // A fleet the gateway cannot reach (replicas: N on one `host`, teams on a cloud host) is planned
  // but not deployed: deploying one replica with one key would look like success while serving none
  // of what the stack asks for. A preview still shows the plan (fleet, teams, cost), with a warning.
  const notDeployable = plan.fleetServing?.notDeployable;
  if (notDeployable) {
    const message = `stack ${stack}: ${notDeployable}; \`npm run plan -- --stack ${stack}\` shows the fleet, its cost and each team's chargeback.`;
    if (!pulumi.runtime.isDryRun()) throw new pulumi.RunError(message);
    void pulumi.log.warn(message);
  }
  return plan;
}

export function planSummary(plan: Plan): PlanSummary {
  return {
    mode: plan.placement.mode,
    image: plan.image,
    args: plan.llamaServerArgs,
    devices: plan.placement.memory.map((device) => ({
      device: device.device,
      label: device.label,
      plannedBytes: device.plannedBytes,
      capacityBytes: device.capacityBytes,
      fits: device.fits,
    })),
    shards: { count: plan.shards.count, firstShard: plan.shards.firstShard, source: plan.shards.source },
    ...fleetToJson(plan),
  };
}

/**
 * The measured figures and the plan re-projected with the measured bandwidth (LlmDeployment's outputs of the same
 * names).
 */
interface MeasuredSpeed {
  measuredBandwidthGBps: pulumi.Output<number | null>;
  projectedFromMeasuredBandwidthDecodeTokensPerSecond: pulumi.Output<number | null>;
  projectedFromMeasuredBandwidthPrefillTokensPerSecond: pulumi.Output<number | null>;
  measuredDecodeTokensPerSecond: pulumi.Output<number | null>;
  measuredPrefillTokensPerSecond: pulumi.Output<number | null>;
  speedSideBySide: pulumi.Output<SpeedSideBySide>;
}

/** What one host or a fleet gives LlmDeployment's outputs (the plan's own projections aside). */
interface DeploymentOutputs {
  endpoint: pulumi.Output<string | undefined>;
  caCertificate: pulumi.Output<string | undefined>;
  apiKey: pulumi.Output<string | undefined>;
  teamApiKeys: pulumi.Output<Record<string, string> | undefined>;
  speed: MeasuredSpeed;
  workers: RpcWorker[];
  cluster: pulumi.Output<ClusterSummary | null>;
  replicas: pulumi.Output<ReplicaStatus[] | null>;
  monitoringUrl: pulumi.Output<string | null>;
  grafanaDashboard: pulumi.Output<string | null>;
}

/** The bandwidth HostPrep measured, the plan re-projected with it, and the smoke request's timings. */
function measuredSpeed(
  plan: Plan,
  measuredBandwidthGBps: pulumi.Output<number | null>,
  smoke: pulumi.Output<SmokeTimings>,
): MeasuredSpeed {
  const reprojected = measuredBandwidthGBps.apply((gbps) =>
    gbps === null ? null : reprojectWithBandwidth(plan, gbps),
  );
  return {
    measuredBandwidthGBps,
    projectedFromMeasuredBandwidthDecodeTokensPerSecond: reprojected.apply((r) => r?.decodeTokensPerSecond ?? null),
    projectedFromMeasuredBandwidthPrefillTokensPerSecond: reprojected.apply((r) => r?.prefillTokensPerSecond ?? null),
    measuredDecodeTokensPerSecond: smoke.apply((t) => t.decodeTokensPerSecond),
    measuredPrefillTokensPerSecond: smoke.apply((t) => t.prefillTokensPerSecond),
    speedSideBySide: pulumi
      .all([measuredBandwidthGBps, reprojected, smoke])
      .apply(([measuredGBps, again, smokeTimings]) => speedSideBySide(plan, measuredGBps, again, smokeTimings)),
  };
}

/** `kimi-kit:apiKey` as a secret; without it one is generated once and kept in the state as a secret. */
function deploymentApiKey(
  parent: pulumi.Resource,
  name: string,
  plan: Plan,
  apiKey: pulumi.Input<string> | undefined,
): pulumi.Output<string> {
  const executor = plan.config.deployment.remoteExecutor;
  return apiKey !== undefined
    ? pulumi.secret(apiKey)
    : pulumi.secret(localCommand(executor, `${name}-api-key`, GENERATE_KEY_COMMAND, { parent }));
}

/** A fleet: its replicas, gateway and monitoring (deployFleet) as the deployment's outputs. */
function fleetDeployment(
  parent: pulumi.Resource,
  name: string,
  plan: Plan,
  fleetServing: FleetServing,
  args: LlmDeploymentArgs,
): DeploymentOutputs {
  const fleet = deployFleet(parent, name, plan, fleetServing, args);
  return {
    endpoint: fleet.endpoint,
    caCertificate: fleet.caCertificate,
    apiKey: fleet.backendKey,
    teamApiKeys: fleet.teamKeys,
    speed: measuredSpeed(plan, fleet.measuredBandwidthGBps, fleet.firstSmoke),
    workers: [],
    cluster: pulumi.output(null),
    replicas: fleet.replicas,
    monitoringUrl: pulumi.output(fleet.monitoringUrl),
    grafanaDashboard: pulumi.output(JSON.stringify(fleetServing.monitoring.grafanaDashboard)),
  };
}

type HostConnection = NonNullable<Host["connection"]>;

/** The Host, with the SSH connection and address every later step runs over. */
function connectedHost(
  parent: pulumi.Resource,
  name: string,
  plan: Plan,
  args: LlmDeploymentArgs,
): { host: Host; connection: HostConnection; address: pulumi.Output<string> } {
  const host = new Host(`${name}-host`, { plan, sshPrivateKey: args.sshPrivateKey }, { parent });

  if (!host.connection || !host.address) {
    // Every Host kind ends with a connection (bare metal from host.ssh, AWS from its instance).
    throw new pulumi.RunError(`stack ${plan.stack}: the host has no SSH connection to run the deployment over`);
  }
  return { host, connection: host.connection, address: host.address };
}

/** A public listener gets the firewall and the TLS front door; llama-server stays on loopback. */
function publicFrontDoor(
  parent: pulumi.Resource,
  name: string,
  plan: Plan,
  args: LlmDeploymentArgs,
  reach: { connection: HostConnection; address: pulumi.Output<string> },
  prep: HostPrep,
): FrontDoor | undefined {
  return isPublicListener(plan.config.serving)
    ? new FrontDoor(
        `${name}-front-door`,
        {
          plan,
          connection: reach.connection,
          hostAddress: reach.address,
          tlsCertificate: args.tlsCertificate,
          tlsPrivateKey: args.tlsPrivateKey,
          after: [prep.ready],
        },
        { parent },
      )
    : undefined;
}

/** A split: the workers come up beside the head's preparation (they need nothing from it). */
function rpcWorkers(parent: pulumi.Resource, name: string, plan: Plan, args: LlmDeploymentArgs): RpcWorker[] {
  return (plan.cluster?.workers ?? []).map(
    (worker) =>
      new RpcWorker(`${name}-rpc-${worker.id}`, { plan, worker, sshPrivateKey: args.sshPrivateKey }, { parent }),
  );
}

/**
 * The head's image ID, read the same way as each worker's; the head's container is registered
 * only once every ID agrees and every worker's ggml-rpc-server runs (RpcWorker.containerState).
 */
function splitImageCheck(
  parent: pulumi.Resource,
  name: string,
  plan: Plan,
  connection: HostConnection,
  prep: HostPrep,
  workers: readonly RpcWorker[],
): pulumi.Output<string> | undefined {
  const cluster = plan.cluster;
  if (!cluster) return undefined;
  return pulumi
    .all([
      imageIdStep(plan.config.deployment.remoteExecutor, `${name}-head-image`, connection, cluster.image, {
        parent,
        dependsOn: [prep.ready],
      }).stdout,
      pulumi.all(workers.map((worker) => worker.imageId)),
      pulumi.all(workers.map((worker) => worker.containerState)),
    ])
    .apply(([headStdout, workerIds]) =>
      sameImageOrRunError(plan.stack, cluster.image, [
        {
          host: `head ${cluster.head.id}`,
          imageId: parseImageId(headStdout) ?? `no image ID (${JSON.stringify((headStdout ?? "").slice(-200))})`,
        },
        ...cluster.workers.map((worker, index) => ({
          host: `worker ${worker.id} (${worker.endpoint})`,
          imageId: workerIds[index]!,
        })),
      ]),
    );
}

/** What the head's shards and llama-server wait for and run with. */
interface HeadServerInputs {
  host: Host;
  connection: HostConnection;
  apiKey: pulumi.Output<string>;
  prep: HostPrep;
  workers: RpcWorker[];
  imageCheck: pulumi.Output<string> | undefined;
}

/** The head's shards, then its llama-server once the shards are fetched and every worker runs. */
function headServer(
  parent: pulumi.Resource,
  name: string,
  plan: Plan,
  args: LlmDeploymentArgs,
  inputs: HeadServerInputs,
): LlamaServer {
  const { host, prep } = inputs;
  const shards = new GgufShards(
    `${name}-shards`,
    { plan, connection: inputs.connection, huggingFaceToken: args.huggingFaceToken, after: [prep] },
    { parent },
  );
  return new LlamaServer(
    `${name}-server`,
    {
      plan,
      host,
      apiKey: inputs.apiKey,
      engine: args.engine,
      after: [shards.fetched, ...inputs.workers],
      sshFilesDir: args.sshFilesDir,
      imageVariant: prep.llamaImageVariant,
      imageCheck: inputs.imageCheck,
    },
    { parent },
  );
}

/** The smoke request against the head's llama-server (through the front door once it is ready). */
function headSmoke(
  parent: pulumi.Resource,
  name: string,
  plan: Plan,
  connection: HostConnection,
  apiKey: pulumi.Output<string>,
  server: LlamaServer,
  frontDoor: FrontDoor | undefined,
): pulumi.Output<SmokeTimings> {
  return smokeStep(
    plan.config.deployment.remoteExecutor,
    `${name}-smoke`,
    {
      connection,
      listen: plan.listen,
      alias: plan.model.serving.alias,
      waitSeconds: server.spec.waitSeconds,
      apiKey,
      triggers: [JSON.stringify(server.spec)],
    },
    { parent, dependsOn: [server.server, ...(frontDoor ? [frontDoor.ready] : [])] },
  );
}

/**
 * One host (or a split's head and its workers): Host → HostPrep → front door → workers → shards →
 * llama-server → smoke request.
 */
function singleHostDeployment(
  parent: pulumi.Resource,
  name: string,
  plan: Plan,
  args: LlmDeploymentArgs,
): DeploymentOutputs {
  const serving = plan.config.serving;
  const { host, connection, address } = connectedHost(parent, name, plan, args);
  const apiKey = deploymentApiKey(parent, name, plan, args.apiKey);
  const prep = new HostPrep(`${name}-prep`, { plan, connection }, { parent });
  const frontDoor = publicFrontDoor(parent, name, plan, args, { connection, address }, prep);
  const workers = rpcWorkers(parent, name, plan, args);
  const imageCheck = splitImageCheck(parent, name, plan, connection, prep, workers);
  const server = headServer(parent, name, plan, args, { host, connection, apiKey, prep, workers, imageCheck });
  const timings = headSmoke(parent, name, plan, connection, apiKey, server, frontDoor);
  // The bind address decides who can reach it: loopback → only through an SSH tunnel to the host.
  const publicAddress = serving.bindAddress === "0.0.0.0" ? address : pulumi.output(serving.bindAddress);
  return {
    endpoint: pulumi.interpolate`${endpointScheme(serving)}://${publicAddress}:${serving.port}/v1`,
    caCertificate: frontDoor ? frontDoor.caCertificate : pulumi.output(undefined),
    apiKey,
    teamApiKeys: pulumi.output(undefined),
    // A split is re-projected with the head's measured bandwidth; HostPrep runs on the head only, so
    // the workers' share of each token keeps its catalog figure (speedSideBySide says so).
    speed: measuredSpeed(plan, prep.measuredBandwidthGBps, timings),
    workers,
    cluster: pulumi.output(clusterSummary(plan)),
    replicas: pulumi.output(null),
    monitoringUrl: pulumi.output(null),
    grafanaDashboard: pulumi.output(null),
  };
}

export class LlmDeployment extends pulumi.ComponentResource {
  readonly plan: Plan;
  readonly endpoint: pulumi.Output<string | undefined>;
  /** The front door's CA certificate (PEM) for clients to trust: a public listener with the internal CA only. */
  readonly caCertificate: pulumi.Output<string | undefined>;
  readonly apiKey: pulumi.Output<string | undefined>;
  readonly planSummary: pulumi.Output<PlanSummary>;
  readonly projectedDecodeTokensPerSecond: pulumi.Output<number>;
  readonly projectedPrefillTokensPerSecond: pulumi.Output<number>;
  readonly projectedTtft32kSeconds: pulumi.Output<number>;
  /** The host's memory read bandwidth as HostPrep measured it (GB/s); null when it measured nothing. */
  readonly measuredBandwidthGBps: pulumi.Output<number | null>;
  /** The plan's flags re-projected by estimate() with the measured bandwidth; null without a measurement. */
  readonly projectedFromMeasuredBandwidthDecodeTokensPerSecond: pulumi.Output<number | null>;
  readonly projectedFromMeasuredBandwidthPrefillTokensPerSecond: pulumi.Output<number | null>;
  readonly speedSideBySide: pulumi.Output<SpeedSideBySide>;
  readonly measuredDecodeTokensPerSecond: pulumi.Output<number | null>;
  readonly measuredPrefillTokensPerSecond: pulumi.Output<number | null>;
  /** null when the stack sets no costs. */
  readonly monthlyCostUsd: pulumi.Output<number | null>;
  readonly breakEvenTokensPerMonth: pulumi.Output<number | null>;
  /** A split's workers, created before the head's llama-server; empty for one host. */
  readonly workers: RpcWorker[];
  /** A split's hosts and what each holds; null for one host. */
  readonly cluster: pulumi.Output<ClusterSummary | null>;
  /** With kimi-kit:teams: each team's key at the gateway, by team (secret); undefined otherwise. */
  readonly teamApiKeys: pulumi.Output<Record<string, string> | undefined>;
  /** A fleet's replicas: where each listens and its smoke request's timings; null without a fleet. */
  readonly replicas: pulumi.Output<ReplicaStatus[] | null>;
  /**
   * A fleet's Prometheus on the gateway host (loopback there: reach it through an SSH tunnel); null without a fleet.
   */
  readonly monitoringUrl: pulumi.Output<string | null>;
  /** A fleet's Grafana dashboard (JSON) over that Prometheus; null without a fleet. */
  readonly grafanaDashboard: pulumi.Output<string | null>;

  constructor(name: string, args: LlmDeploymentArgs, opts?: pulumi.ComponentResourceOptions) {
    // Plan before registering anything: a refused or invalid stack leaves no resource behind.
    const plan = planOrRunError(args.stack, args.config, args.planOptions);
    // The plan's facts as the component's input: what the kit's policy pack (policy/) judges.
    const secretInputs = {
      apiKey: args.apiKey,
      sshPrivateKey: args.sshPrivateKey,
      huggingFaceToken: args.huggingFaceToken,
      tlsCertificate: args.tlsCertificate,
      tlsPrivateKey: args.tlsPrivateKey,
    };
    super(
      "kimi-kit:index:LlmDeployment",
      name,
      { [FACTS_PROPERTY]: guardrailFacts(plan, secretInputs, args.planOptions) },
      opts,
    );
    this.plan = plan;

    this.planSummary = pulumi.output(planSummary(plan));
    this.projectedDecodeTokensPerSecond = pulumi.output(plan.projection.decodeTokensPerSecond);
    this.projectedPrefillTokensPerSecond = pulumi.output(plan.projection.prefillTokensPerSecond);
    this.projectedTtft32kSeconds = pulumi.output(plan.projection.ttftSeconds);
    // A fleet costs its replicas together (planner/fleet.ts); one host its own cost.
    this.monthlyCostUsd = pulumi.output(plan.fleet?.cost?.monthlyUsd ?? plan.cost?.monthlyUsd ?? null);
    this.breakEvenTokensPerMonth = pulumi.output(plan.cost?.breakEvenTokensPerMonth ?? null);

    const deployed = plan.fleetServing
      ? fleetDeployment(this, name, plan, plan.fleetServing, args)
      : singleHostDeployment(this, name, plan, args);
    this.endpoint = deployed.endpoint;
    this.caCertificate = deployed.caCertificate;
    this.apiKey = deployed.apiKey;
    this.teamApiKeys = deployed.teamApiKeys;
    this.measuredBandwidthGBps = deployed.speed.measuredBandwidthGBps;
    this.projectedFromMeasuredBandwidthDecodeTokensPerSecond =
      deployed.speed.projectedFromMeasuredBandwidthDecodeTokensPerSecond;
    this.projectedFromMeasuredBandwidthPrefillTokensPerSecond =
      deployed.speed.projectedFromMeasuredBandwidthPrefillTokensPerSecond;
    this.measuredDecodeTokensPerSecond = deployed.speed.measuredDecodeTokensPerSecond;
    this.measuredPrefillTokensPerSecond = deployed.speed.measuredPrefillTokensPerSecond;
    this.speedSideBySide = deployed.speed.speedSideBySide;
    this.workers = deployed.workers;
    this.cluster = deployed.cluster;
    this.replicas = deployed.replicas;
    this.monitoringUrl = deployed.monitoringUrl;
    this.grafanaDashboard = deployed.grafanaDashboard;
    this.registerAll();
  }

  private registerAll(): void {
    this.registerOutputs({
      endpoint: this.endpoint,
      caCertificate: this.caCertificate,
      apiKey: this.apiKey,
      planSummary: this.planSummary,
      projectedDecodeTokensPerSecond: this.projectedDecodeTokensPerSecond,
      projectedPrefillTokensPerSecond: this.projectedPrefillTokensPerSecond,
      projectedTtft32kSeconds: this.projectedTtft32kSeconds,
      measuredDecodeTokensPerSecond: this.measuredDecodeTokensPerSecond,
      measuredPrefillTokensPerSecond: this.measuredPrefillTokensPerSecond,
      measuredBandwidthGBps: this.measuredBandwidthGBps,
      projectedFromMeasuredBandwidthDecodeTokensPerSecond: this.projectedFromMeasuredBandwidthDecodeTokensPerSecond,
      projectedFromMeasuredBandwidthPrefillTokensPerSecond: this.projectedFromMeasuredBandwidthPrefillTokensPerSecond,
      speedSideBySide: this.speedSideBySide,
      monthlyCostUsd: this.monthlyCostUsd,
      breakEvenTokensPerMonth: this.breakEvenTokensPerMonth,
      cluster: this.cluster,
      teamApiKeys: this.teamApiKeys,
      replicas: this.replicas,
      monitoringUrl: this.monitoringUrl,
      grafanaDashboard: this.grafanaDashboard,
    });
  }
}

/** One replica of a fleet as the stack output shows it. */
export interface ReplicaStatus {
  id: string;
  listen: string;
  measuredDecodeTokensPerSecond: number | null;
  measuredPrefillTokensPerSecond: number | null;
  measuredBandwidthGBps: number | null;
}

interface FleetOutputs {
  endpoint: pulumi.Output<string | undefined>;
  caCertificate: pulumi.Output<string | undefined>;
  backendKey: pulumi.Output<string | undefined>;
  teamKeys: pulumi.Output<Record<string, string> | undefined>;
  measuredBandwidthGBps: pulumi.Output<number | null>;
  firstSmoke: pulumi.Output<SmokeTimings>;
  replicas: pulumi.Output<ReplicaStatus[]>;
  monitoringUrl: string;
}

/** Every replica of the fleet, each on its own host with the replicas' key. */
function createReplicas(
  parent: pulumi.Resource,
  name: string,
  plan: Plan,
  fleet: FleetServing,
  args: LlmDeploymentArgs,
  backendKey: pulumi.Output<string>,
): Replica[] {
  return fleet.replicas.map(
    (replica) =>
      new Replica(
        `${name}-${replica.id}`,
        {
          plan: replicaPlan(plan, replica),
          replica,
          apiKey: backendKey,
          sshPrivateKey: args.sshPrivateKey,
          huggingFaceToken: args.huggingFaceToken,
          engine: args.engine,
          sshFilesDir: args.sshFilesDir,
        },
        { parent },
      ),
  );
}

/** Each replica's listener and measured figures, in the fleet's order. */
function replicaStatuses(fleet: FleetServing, replicas: readonly Replica[]): pulumi.Output<ReplicaStatus[]> {
  return pulumi
    .all(replicas.map((replica) => pulumi.all([replica.smoke, replica.prep.measuredBandwidthGBps])))
    .apply((measured) =>
      measured.map(([smoke, gbps], index) => ({
        id: fleet.replicas[index]!.id,
        listen: `${fleet.replicas[index]!.listen.address}:${fleet.replicas[index]!.listen.port}`,
        measuredDecodeTokensPerSecond: smoke.decodeTokensPerSecond,
        measuredPrefillTokensPerSecond: smoke.prefillTokensPerSecond,
        measuredBandwidthGBps: gbps,
      })),
    );
}

/**
 * A fleet: every replica (its own host, firewall, shards, llama-server, smoke request), then the
 * gateway and Prometheus on the first replica's host once every replica serves.
 */
function deployFleet(
  parent: pulumi.Resource,
  name: string,
  plan: Plan,
  fleet: FleetServing,
  args: LlmDeploymentArgs,
): FleetOutputs {
  // The replicas' own key: the gateway sends it; teams get keys of their own.
  const backendKey = deploymentApiKey(parent, name, plan, args.apiKey);
  const replicas = createReplicas(parent, name, plan, fleet, args, backendKey);
  const gatewayReplica = replicas.find((replica) => replica.replica.id === fleet.gateway.hostId)!;
  const connection = gatewayReplica.host.connection!;
  const hostAddress = gatewayReplica.host.address!;
  const gateway = new Gateway(
    `${name}-gateway`,
    {
      plan,
      gateway: fleet.gateway,
      connection,
      hostAddress,
      backendKey,
      tlsCertificate: args.tlsCertificate,
      tlsPrivateKey: args.tlsPrivateKey,
      after: [gatewayReplica.prep.ready, ...replicas.map((replica) => replica.server)],
    },
    { parent },
  );
  const monitoring = new Monitoring(
    `${name}-monitoring`,
    {
      plan,
      monitoring: fleet.monitoring,
      tokenLimiter: fleet.tokenLimiter,
      connection,
      backendKey,
      after: [gateway.ready],
    },
    { parent },
  );
  const serving = plan.config.serving;
  const listenAddress = serving.bindAddress === "0.0.0.0" ? hostAddress : pulumi.output(serving.bindAddress);
  return {
    endpoint: pulumi.interpolate`${fleet.gateway.endpointScheme}://${listenAddress}:${serving.port}/v1`,
    caCertificate: gateway.caCertificate,
    backendKey,
    teamKeys: plan.teams && plan.teams.length > 0 ? gateway.teamKeys : pulumi.output(undefined),
    measuredBandwidthGBps: replicas[0]!.prep.measuredBandwidthGBps,
    firstSmoke: replicas[0]!.smoke,
    replicas: replicaStatuses(fleet, replicas),
    monitoringUrl: `${monitoring.url} on ${fleet.gateway.hostId} (loopback: ssh -L ${fleet.monitoring.listen.port}:${fleet.monitoring.listen.address}:${fleet.monitoring.listen.port})`,
  };
}

export function speedSideBySide(
  plan: Plan,
  measuredGBps: number | null,
  reprojected: { decodeTokensPerSecond: number; prefillTokensPerSecond: number } | null,
  smoke: SmokeTimings,
): SpeedSideBySide {
  const projection = plan.projection;
  return {
    bandwidthGBps: {
      plan: plan.host.memory.achievableBandwidth / 1e9,
      planBasis: plan.host.memory.basis,
      measured: measuredGBps,
    },
    decodeTokensPerSecond: {
      projectedFromPlan: projection.decodeTokensPerSecond,
      projectedFromMeasuredBandwidth: reprojected?.decodeTokensPerSecond ?? null,
      measured: smoke.decodeTokensPerSecond,
    },
    prefillTokensPerSecond: {
      projectedFromPlan: projection.prefillTokensPerSecond,
      projectedFromMeasuredBandwidth: reprojected?.prefillTokensPerSecond ?? null,
      measured: smoke.prefillTokensPerSecond,
    },
    notes: [
      `projectedFromPlan: the plan's host inputs (memory bandwidth: ${plan.host.memory.basis}); decode at depth ${projection.decodeDepthTokens}, prefill for a ${projection.prefillPromptTokens}-token prompt.`,
      measuredGBps === null
        ? "projectedFromMeasuredBandwidth: none — HostPrep measured no bandwidth (see its bandwidth step's log)."
        : plan.cluster
          ? `projectedFromMeasuredBandwidth: the same flags and depths with the head's memory read bandwidth as HostPrep measured it (${measuredGBps} GB/s); the workers' layers keep the plan's figure for their hosts (HostPrep does not run on workers).`
          : `projectedFromMeasuredBandwidth: the same flags and depths, with the host's memory read bandwidth as HostPrep measured it (sysbench, all physical cores): ${measuredGBps} GB/s.`,
      "measured: llama-server's own timings for the smoke request (a one-line prompt, 16 tokens at depth ~0): a sanity figure, not the projection's depth or prompt length.",
    ],
  };
}

/** Raw `kimi-kit:*` values + secrets → one LlmDeployment (what index.ts does, callable from tests). */
export function deployStack(
  stack: string,
  raw: Record<string, unknown>,
  secrets: Pick<
    LlmDeploymentArgs,
    "apiKey" | "sshPrivateKey" | "huggingFaceToken" | "tlsCertificate" | "tlsPrivateKey"
  > &
    Omit<Partial<LlmDeploymentArgs>, "stack" | "config"> = {},
  name = "kimi",
): LlmDeployment {
  const config = parseConfigOrRunError(stack, raw);
  return new LlmDeployment(name, { ...secrets, stack, config });
}
