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
import { localCommand, remoteCommand } from "./remote-exec";
import { parseStackConfig, type StackConfig } from "../planner/config";
import { ConfigError } from "../planner/errors";
import { fleetToJson, type FleetJson, type TeamJson } from "../planner/report";
import { buildPlan, type Plan, type PlanOptions } from "../planner/plan";
import { loadCatalog } from "../planner/catalog";
import { reprojectWithBandwidth } from "../planner/reproject";
import { hostLocalAddress } from "./container-spec";
import { shellQuote } from "../planner/shell";
import { GgufShards } from "./gguf-shards";
import { Host } from "./host";
import { HostPrep } from "./host-prep";
import { LlamaServer, type ContainerEngine } from "./llama-server";
import { FrontDoor } from "./front-door";
import { imageIdStep, parseImageId, RpcWorker } from "./rpc-worker";
import { endpointScheme, isPublicListener, llamaServerListen } from "../planner/front-door";
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
  /** Replicas, their throughput and the fleet's cost (planner/fleet.ts): only when the stack sets kimi-kit:fleet or kimi-kit:teams. */
  fleet?: FleetJson;
  /** Each team's limits and what its budget buys; team keys are not here (they are secrets). */
  teams?: TeamJson[];
}

/** Speed three ways, side by side: projected from the plan's host, re-projected with the measured bandwidth, measured. */
export interface SpeedSideBySide {
  bandwidthGBps: { plan: number; planBasis: string; measured: number | null };
  decodeTokensPerSecond: { projectedFromPlan: number; projectedFromMeasuredBandwidth: number | null; measured: number | null };
  prefillTokensPerSecond: { projectedFromPlan: number; projectedFromMeasuredBandwidth: number | null; measured: number | null };
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
    workers: cluster.workers.map((worker) => ({ id: worker.id, endpoint: worker.endpoint, layers: worker.layers.length, holdsOutput: worker.holdsOutput, plannedBytes: worker.memory.plannedBytes })),
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

export interface SmokeTimings {
  decodeTokensPerSecond: number | null;
  prefillTokensPerSecond: number | null;
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
  // Replicas and teams are planned (npm run plan, preview's plan output) but not yet deployed: the
  // gateway, per-team keys and the replicas' firewall exist as scripts (gateway.sh, firewall.sh)
  // without Pulumi wiring. Deploying only the first replica, with one shared key, would look like
  // success while serving none of what the stack asks for.
  // A preview still shows them (the plan output carries the fleet and the teams), with a warning.
  if ((plan.fleet && plan.fleet.replicas > 1) || (plan.teams && plan.teams.length > 0)) {
    const message = `stack ${stack}: kimi-kit:fleet replicas (${plan.fleet?.replicas ?? 1}) and kimi-kit:teams (${plan.teams?.length ?? 0}) are planned but not deployed yet: the preview's plan output and \`npm run plan -- --stack ${stack}\` show the fleet, its cost and each team's chargeback; \`pulumi up\` refuses until the gateway and replicas are wired (for one host with one key, remove kimi-kit:fleet and kimi-kit:teams).`;
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

/** Reads the `{"timings":{…}}` line the smoke command prints. */
export function parseSmokeTimings(stdout: string | undefined): SmokeTimings {
  for (const line of (stdout ?? "").split("\n").reverse()) {
    const start = line.indexOf("{");
    if (start < 0 || !line.includes('"timings"')) continue;
    try {
      const timings = (JSON.parse(line.slice(start)) as { timings?: Record<string, unknown> }).timings ?? {};
      const number = (value: unknown) => (typeof value === "number" && Number.isFinite(value) ? value : null);
      return { decodeTokensPerSecond: number(timings.predicted_per_second), prefillTokensPerSecond: number(timings.prompt_per_second) };
    } catch {
      continue;
    }
  }
  return { decodeTokensPerSecond: null, prefillTokensPerSecond: null };
}

/**
 * The smoke script: waits for /health, checks that a request without the key is refused (401:
 * llama-server runs with no authentication at all when its key file holds no usable key), sends
 * one short chat request (the key from stdin, via a header file), prints timings.
 */
export function smokeScript(address: string, port: number, alias: string, waitSeconds: number): string {
  const base = `http://${address}:${port}`;
  const body = JSON.stringify({ model: alias, messages: [{ role: "user", content: "Reply with one short sentence: what is 2+2?" }], max_tokens: 16 });
  return [
    "set -eu",
    'umask 077; headers=$(mktemp); response=$(mktemp); trap \'rm -f "$headers" "$response"\' EXIT',
    `{ printf 'Authorization: Bearer '; head -n1 | tr -d '\\r\\n'; printf '\\n'; } > "$headers"`,
    `i=0; until curl -fsS -o /dev/null ${shellQuote([`${base}/health`])}; do i=$((i+5)); [ "$i" -ge ${waitSeconds} ] && { echo "smoke: ${base}/health did not answer in ${waitSeconds}s" >&2; exit 1; }; sleep 5; done`,
    `code=$(curl -sS -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' -d ${shellQuote([body])} ${shellQuote([`${base}/v1/chat/completions`])})`,
    `[ "$code" = 401 ] || { echo "smoke: ${base}/v1/chat/completions answered HTTP $code without an API key (expected 401): the server is not checking keys" >&2; exit 1; }`,
    `curl -fsS -H @"$headers" -H 'Content-Type: application/json' -d ${shellQuote([body])} ${shellQuote([`${base}/v1/chat/completions`])} > "$response"`,
    `printf '{%s}\\n' "$(grep -o '"timings":{[^}]*}' "$response" | head -n1)"`,
  ].join("\n");
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

  constructor(name: string, args: LlmDeploymentArgs, opts?: pulumi.ComponentResourceOptions) {
    // Plan before registering anything: a refused or invalid stack leaves no resource behind.
    const plan = planOrRunError(args.stack, args.config, args.planOptions);
    // The plan's facts as the component's input: what the kit's policy pack (policy/) judges.
    const secretInputs = { apiKey: args.apiKey, sshPrivateKey: args.sshPrivateKey, huggingFaceToken: args.huggingFaceToken, tlsCertificate: args.tlsCertificate, tlsPrivateKey: args.tlsPrivateKey };
    super("kimi-kit:index:LlmDeployment", name, { [FACTS_PROPERTY]: guardrailFacts(plan, secretInputs, args.planOptions) }, opts);
    this.plan = plan;
    const serving = plan.config.serving;

    this.planSummary = pulumi.output(planSummary(plan));
    this.projectedDecodeTokensPerSecond = pulumi.output(plan.projection.decodeTokensPerSecond);
    this.projectedPrefillTokensPerSecond = pulumi.output(plan.projection.prefillTokensPerSecond);
    this.projectedTtft32kSeconds = pulumi.output(plan.projection.ttftSeconds);
    this.monthlyCostUsd = pulumi.output(plan.cost?.monthlyUsd ?? null);
    this.breakEvenTokensPerMonth = pulumi.output(plan.cost?.breakEvenTokensPerMonth ?? null);

    const host = new Host(`${name}-host`, { plan, sshPrivateKey: args.sshPrivateKey }, { parent: this });

    if (!host.connection || !host.address) {
      // Every Host kind ends with a connection (bare metal from host.ssh, AWS from its instance).
      throw new pulumi.RunError(`stack ${plan.stack}: the host has no SSH connection to run the deployment over`);
    }

    const executor = plan.config.deployment.remoteExecutor;
    const apiKey =
      args.apiKey !== undefined
        ? pulumi.secret(args.apiKey)
        : pulumi.secret(localCommand(executor, `${name}-api-key`, "head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n'", { parent: this }));
    this.apiKey = apiKey;

    const prep = new HostPrep(`${name}-prep`, { plan, connection: host.connection }, { parent: this });
    this.measuredBandwidthGBps = prep.measuredBandwidthGBps;
    const catalog = args.planOptions?.catalog ?? loadCatalog();
    // A split is re-projected with the head's measured bandwidth; HostPrep runs on the head only, so
    // the workers' share of each token keeps its catalog figure (speedSideBySide says so).
    const reprojected = prep.measuredBandwidthGBps.apply((gbps) => (gbps === null ? null : reprojectWithBandwidth(plan, gbps, catalog)));
    this.projectedFromMeasuredBandwidthDecodeTokensPerSecond = reprojected.apply((r) => r?.decodeTokensPerSecond ?? null);
    this.projectedFromMeasuredBandwidthPrefillTokensPerSecond = reprojected.apply((r) => r?.prefillTokensPerSecond ?? null);
    // A public listener gets the firewall and the TLS front door; llama-server stays on loopback.
    const frontDoor = isPublicListener(serving)
      ? new FrontDoor(
          `${name}-front-door`,
          { plan, connection: host.connection, hostAddress: host.address, tlsCertificate: args.tlsCertificate, tlsPrivateKey: args.tlsPrivateKey, after: [prep.ready] },
          { parent: this },
        )
      : undefined;
    this.caCertificate = frontDoor ? frontDoor.caCertificate : pulumi.output(undefined);
    // A split: the workers come up beside the head's preparation (they need nothing from it).
    const cluster = plan.cluster;
    this.workers = (cluster?.workers ?? []).map((worker) => new RpcWorker(`${name}-rpc-${worker.id}`, { plan, worker, sshPrivateKey: args.sshPrivateKey }, { parent: this }));
    this.cluster = pulumi.output(clusterSummary(plan));
    // The head's image ID, read the same way as each worker's; the head's container is registered
    // only once every ID agrees and every worker's ggml-rpc-server runs (RpcWorker.containerState).
    const imageCheck = cluster
      ? pulumi
          .all([
            imageIdStep(executor, `${name}-head-image`, host.connection, cluster.image, { parent: this, dependsOn: [prep.ready] }).stdout,
            pulumi.all(this.workers.map((worker) => worker.imageId)),
            pulumi.all(this.workers.map((worker) => worker.containerState)),
          ])
          .apply(([headStdout, workerIds]) =>
            sameImageOrRunError(plan.stack, cluster.image, [
              { host: `head ${cluster.head.id}`, imageId: parseImageId(headStdout) ?? `no image ID (${JSON.stringify((headStdout ?? "").slice(-200))})` },
              ...cluster.workers.map((worker, index) => ({ host: `worker ${worker.id} (${worker.endpoint})`, imageId: workerIds[index]! })),
            ]),
          )
      : undefined;
    const shards = new GgufShards(`${name}-shards`, { plan, connection: host.connection, huggingFaceToken: args.huggingFaceToken, after: [prep] }, { parent: this });
    const server = new LlamaServer(
      `${name}-server`,
      { plan, host, apiKey, engine: args.engine, after: [shards.fetched, ...this.workers], sshFilesDir: args.sshFilesDir, imageVariant: prep.llamaImageVariant, imageCheck },
      { parent: this },
    );
    const smoke = remoteCommand(
      executor,
      `${name}-smoke`,
      {
        connection: host.connection,
        create: smokeScript(hostLocalAddress(llamaServerListen(serving).address), llamaServerListen(serving).port, plan.model.serving.alias, server.spec.waitSeconds),
        stdin: apiKey,
        triggers: [JSON.stringify(server.spec)],
        logging: "stdoutAndStderr",
      },
      { parent: this, dependsOn: [server.server, ...(frontDoor ? [frontDoor.ready] : [])] },
    );
    const timings = smoke.stdout.apply(parseSmokeTimings);
    this.measuredDecodeTokensPerSecond = timings.apply((t) => t.decodeTokensPerSecond);
    this.measuredPrefillTokensPerSecond = timings.apply((t) => t.prefillTokensPerSecond);
    this.speedSideBySide = pulumi.all([prep.measuredBandwidthGBps, reprojected, timings]).apply(([measuredGBps, again, smokeTimings]) => speedSideBySide(plan, measuredGBps, again, smokeTimings));

    // The bind address decides who can reach it: loopback → only through an SSH tunnel to the host.
    const publicAddress = serving.bindAddress === "0.0.0.0" ? host.address : pulumi.output(serving.bindAddress);
    this.endpoint = pulumi.interpolate`${endpointScheme(serving)}://${publicAddress}:${serving.port}/v1`;
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
    });
  }
}

export function speedSideBySide(
  plan: Plan,
  measuredGBps: number | null,
  reprojected: { decodeTokensPerSecond: number; prefillTokensPerSecond: number } | null,
  smoke: SmokeTimings,
): SpeedSideBySide {
  const projection = plan.projection;
  return {
    bandwidthGBps: { plan: plan.host.memory.achievableBandwidth / 1e9, planBasis: plan.host.memory.basis, measured: measuredGBps },
    decodeTokensPerSecond: { projectedFromPlan: projection.decodeTokensPerSecond, projectedFromMeasuredBandwidth: reprojected?.decodeTokensPerSecond ?? null, measured: smoke.decodeTokensPerSecond },
    prefillTokensPerSecond: { projectedFromPlan: projection.prefillTokensPerSecond, projectedFromMeasuredBandwidth: reprojected?.prefillTokensPerSecond ?? null, measured: smoke.prefillTokensPerSecond },
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
  secrets: Pick<LlmDeploymentArgs, "apiKey" | "sshPrivateKey" | "huggingFaceToken" | "tlsCertificate" | "tlsPrivateKey"> & Omit<Partial<LlmDeploymentArgs>, "stack" | "config"> = {},
  name = "kimi",
): LlmDeployment {
  const config = parseConfigOrRunError(stack, raw);
  return new LlmDeployment(name, { ...secrets, stack, config });
}
