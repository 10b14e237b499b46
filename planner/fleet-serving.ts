/**
 * Where a fleet runs (pure): the gateway (HAProxy, planner/gateway.ts) on the first replica, the
 * only public listener; on each replica the usage exporter (tools/usage-exporter.ts: the per-team
 * token counter) on the private address at the backend port, in front of llama-server on loopback,
 * behind the kit's own nftables table that admits only the gateway host; Prometheus on the gateway
 * host scraping every replica (through its usage exporter), the exporters' counters and the
 * gateway's exporter. A stack with teams but no replicas is a fleet of one: the gateway takes the
 * front door's place on that host and everything else stays on loopback.
 *
 * Team keys are not here: they are secrets the components generate; the components add them
 * (hashed) to `gateway.input` and call haproxyGatewayConfig.
 */
import type { BareMetalHostConfig, StackConfig } from "./config";
import type { FleetPlan, TeamPlan } from "./fleet";
import { ConfigError } from "./errors";
import { backendPortOf, isPublicListener, LOOPBACK } from "./front-door";
import { adminSocketOf, GATEWAY_FILES, type GatewayInput } from "./gateway";
import { join } from "node:path";
import {
  alertRules,
  grafanaDashboard,
  MONITORING_BEARER_TOKEN_FILE,
  prometheusConfig,
  type Dashboard,
  type TeamPricing,
} from "./monitoring";

/** HAProxy's Prometheus exporter port on the gateway host (its private address, never public). */
export const GATEWAY_STATS_PORT = 8405;
/** The usage exporter's /metrics port on each replica (its private address; loopback on one host). */
export const USAGE_METRICS_PORT = 9101;
/**
 * Prometheus' own listener on the gateway host: loopback (an SSH tunnel reaches it); not 9090, where the distribution's
 * own prometheus.service listens once the package is installed.
 */
export const MONITORING_LISTEN = { address: LOOPBACK, port: 9190 } as const;
export const MONITORING_SCRAPE_SECONDS = 15;
/** How often the token limiter asks Prometheus; a block lands within one scrape plus this. */
export const TOKEN_LIMITER_INTERVAL_SECONDS = 10;

export interface Listener {
  address: string;
  port: number;
}

/** The kit's nftables table on a host: each port admits only its CIDRs (firewall.sh apply). */
export interface FirewallPlan {
  table: string;
  allow: { port: number; cidrs: string[] }[];
}

/** argv after `firewall.sh`. */
export function firewallAllowArgv(firewall: FirewallPlan): string[] {
  return [
    "apply",
    "--table",
    firewall.table,
    ...firewall.allow.flatMap((rule) => ["--allow", `${rule.port}=${rule.cidrs.join(",")}`]),
  ];
}

/** The per-team token counter in front of one replica's llama-server (usage-exporter.sh apply). */
export interface UsageExporterServing {
  /** usage-exporter.sh --name. */
  name: string;
  /** What the gateway reaches: the replica's private address at the backend port. */
  listen: Listener;
  /** llama-server on loopback. */
  upstream: Listener;
  metrics: Listener;
}

export interface ReplicaServing {
  /** hosts[i].id, or "host" for a stack of one host. */
  id: string;
  /** The stack key that describes it: "hosts[2]" or "host" (messages name it). */
  configPath: string;
  ssh: BareMetalHostConfig["ssh"];
  /** Where llama-server listens: loopback, behind the usage exporter. */
  listen: Listener;
  /** plan.llamaServerArgs with this --host and --port. */
  llamaServerArgs: string[];
  usage: UsageExporterServing;
  /**
   * The kit's nftables table on the replica admitting only the gateway host to the exporter's ports; none on one host
   * (loopback).
   */
  firewall: FirewallPlan | undefined;
}

export interface GatewayServing {
  /** The replica whose host runs HAProxy and Prometheus. */
  hostId: string;
  /** What haproxyGatewayConfig needs, teams aside (the components add the hashed keys). */
  input: Omit<GatewayInput, "teams">;
  tlsSource: "internal-ca" | "secrets";
  /** Firewall on the gateway host: the public port for serving.allowedCidrs, the exporter for the host alone. */
  firewall: FirewallPlan | undefined;
  /** The endpoint clients use. */
  endpointScheme: "https";
}

export interface MonitoringServing {
  /** monitoring.sh --name, and its folder /etc/kimi-kit/monitoring/<name>. */
  name: string;
  configDir: string;
  listen: Listener;
  prometheusYml: string;
  rulesYml: string;
  /** Where monitoring.sh --bearer-stdin writes the replicas' key (prometheus.yml points at it). */
  bearerTokenFile: string;
  /** A Grafana dashboard over the same series (import it into a Grafana that reads this Prometheus). */
  grafanaDashboard: Dashboard;
}

/** The gateway's tokens-per-minute loop (tools/token-limiter.ts, token-limiter.sh) on the gateway host. */
export interface TokenLimiterServing {
  /** token-limiter.sh --name. */
  name: string;
  prometheusUrl: string;
  /** The gateway's token-limits.map (written by its apply), its blocked map and admin socket. */
  limitsFile: string;
  blockedMapFile: string;
  socket: string;
  intervalSeconds: number;
}

export interface FleetServing {
  gateway: GatewayServing;
  replicas: ReplicaServing[];
  monitoring: MonitoringServing;
  /** Only when a team has a tokens-per-minute limit (tpm). */
  tokenLimiter: TokenLimiterServing | undefined;
  /** Why `pulumi up` cannot deploy this fleet (preview still shows it); undefined when it can. */
  notDeployable: string | undefined;
}

export interface FleetServingInputs {
  stack: string;
  config: Pick<StackConfig, "serving" | "host">;
  fleet: FleetPlan;
  teams: readonly TeamPlan[] | undefined;
  /** The plan's llama-server arguments for another listener (plan.ts: the same ArgsInputs, this --host and --port). */
  argsFor: (listen: Listener) => string[];
  projectedDecodeTokensPerSecond: number;
  slotsPerReplica: number;
}

/** A stack name as gateway.sh, monitoring.sh and nftables accept it (as the front door's). */
export function fleetName(stack: string): string {
  return `kimi-kit-${stack}`.replace(/[^A-Za-z0-9_.-]/g, "-").slice(0, 63);
}

function tableName(stack: string, suffix: string): string {
  return `kimi_kit_${stack.toLowerCase().replace(/[^a-z0-9_]/g, "_")}`.slice(0, 40) + `_${suffix}`;
}

type Serving = StackConfig["serving"];

// The fleet's own listeners on the gateway host and every replica: serving's ports must keep clear of them.
const FLEET_FIXED_PORTS: [number, string][] = [
  [GATEWAY_STATS_PORT, "the gateway's exporter"],
  [GATEWAY_STATS_PORT + 1, "the gateway's local peer"],
  [USAGE_METRICS_PORT, "the usage exporter's /metrics"],
  [MONITORING_LISTEN.port, "Prometheus"],
];

/** What every replica's serving is built from: the fleet's name, its ports and the plan's llama-server arguments. */
interface ReplicaContext {
  stack: string;
  name: string;
  backendPort: number;
  llamaPort: number;
  argsFor: (listen: Listener) => string[];
}

export function planFleetServing(inputs: FleetServingInputs): FleetServing {
  const { stack, config } = inputs;
  const serving = config.serving;
  const name = fleetName(stack);
  const backendPort = backendPortOf(serving);
  refusePortClashes(stack, serving, backendPort);
  const llamaPort = llamaPortOf(serving, backendPort);
  const context: ReplicaContext = { stack, name, backendPort, llamaPort, argsFor: inputs.argsFor };
  const { replicas, gatewayPrivate, notDeployable } = placeReplicas(inputs, context);
  const stats = { address: gatewayPrivate, port: GATEWAY_STATS_PORT };
  const gateway = gatewayServing(stack, name, serving, replicas, stats);
  const monitoring = monitoringServing(inputs, name, replicas, stats);
  const tokenLimiter: TokenLimiterServing | undefined = (inputs.teams ?? []).some((team) => team.tpm !== undefined)
    ? {
        name,
        prometheusUrl: `http://${monitoring.listen.address}:${monitoring.listen.port}`,
        limitsFile: join(gateway.input.configDir, GATEWAY_FILES.tokenLimitsMap),
        blockedMapFile: join(gateway.input.configDir, GATEWAY_FILES.tokensBlockedMap),
        socket: adminSocketOf(gateway.input),
        intervalSeconds: TOKEN_LIMITER_INTERVAL_SECONDS,
      }
    : undefined;
  return { gateway, replicas, monitoring, tokenLimiter, notDeployable };
}

function refusePortClashes(stack: string, serving: Serving, backendPort: number): void {
  const fixed = FLEET_FIXED_PORTS;
  const clashes = (["port", "backendPort"] as const).flatMap((key) => {
    const port = key === "port" ? serving.port : backendPort;
    const taken = fixed.find(([fixedPort]) => fixedPort === port);
    return taken
      ? [
          `serving.${key}: found ${port}, which ${taken[1]} uses on a fleet's hosts; allowed: a port other than ${fixed.map(([fixedPort]) => fixedPort).join(", ")}`,
        ]
      : [];
  });
  if (clashes.length > 0) throw new ConfigError(stack, clashes);
}

// llama-server moves one port up, behind the usage exporter; never onto the public port.
function llamaPortOf(serving: Serving, backendPort: number): number {
  return [backendPort + 1, backendPort + 2, backendPort - 1].find(
    (port) => port <= 65535 && port !== serving.port && !FLEET_FIXED_PORTS.some(([fixedPort]) => fixedPort === port),
  )!;
}

function replicaOn(
  context: ReplicaContext,
  id: string,
  configPath: string,
  ssh: BareMetalHostConfig["ssh"],
  address: string,
  gatewayAddress: string,
): ReplicaServing {
  const { stack, name, backendPort, llamaPort } = context;
  const listen = { address: LOOPBACK, port: llamaPort };
  const usage = {
    name: `${name}-${id}`.slice(0, 63),
    listen: { address, port: backendPort },
    upstream: listen,
    metrics: { address, port: USAGE_METRICS_PORT },
  };
  const firewall =
    address === LOOPBACK
      ? undefined
      : {
          table: tableName(stack, "replica"),
          allow: [backendPort, USAGE_METRICS_PORT].map((port) => ({ port, cidrs: [`${gatewayAddress}/32`] })),
        };
  return { id, configPath, ssh, listen, llamaServerArgs: context.argsFor(listen), usage, firewall };
}

/** The replicas the gateway fronts, the gateway host's private address, and why one host cannot deploy them. */
function placeReplicas(
  inputs: FleetServingInputs,
  context: ReplicaContext,
): { replicas: ReplicaServing[]; gatewayPrivate: string; notDeployable: string | undefined } {
  const { config, fleet } = inputs;
  if (fleet.hosts.length > 0) {
    const gatewayPrivate = fleet.hosts[0]!.privateAddress;
    const replicas = fleet.hosts.map((host) =>
      replicaOn(context, host.id, `hosts[${host.index}]`, host.ssh, host.privateAddress, gatewayPrivate),
    );
    return { replicas, gatewayPrivate, notDeployable: undefined };
  }
  // One host (teams without replicas, or `host` + replicas: N): the gateway fronts everything on loopback.
  const replicas = [
    replicaOn(
      context,
      "host",
      "host",
      config.host.kind === "bare-metal" ? config.host.ssh : undefined,
      LOOPBACK,
      LOOPBACK,
    ),
  ];
  let notDeployable: string | undefined;
  if (fleet.replicas > 1) {
    notDeployable =
      `kimi-kit:fleet replicas ${fleet.replicas} on one \`host\` is planned, not deployable: list the replicas under kimi-kit:hosts ` +
      `(role: replica, each with ssh and privateAddress) so the gateway can reach them`;
  } else if (config.host.kind !== "bare-metal") {
    notDeployable =
      "kimi-kit:teams on a cloud host is planned, not deployable yet: the gateway runs on bare-metal hosts (kimi-kit:host kind bare-metal, or kimi-kit:hosts of role replica)";
  }
  return { replicas, gatewayPrivate: LOOPBACK, notDeployable };
}

function gatewayServing(
  stack: string,
  name: string,
  serving: Serving,
  replicas: ReplicaServing[],
  stats: Listener,
): GatewayServing {
  const publicListener = isPublicListener(serving);
  return {
    hostId: replicas[0]!.id,
    input: {
      stack,
      name,
      configDir: `/etc/kimi-kit/gateway/${name}`,
      listen: { address: serving.bindAddress, port: serving.port },
      backends: replicas.map((replica) => ({ name: replica.id, ...replica.usage.listen })),
      stats,
    },
    tlsSource: serving.tls.source,
    firewall: publicListener
      ? {
          table: tableName(stack, "gateway"),
          allow: [
            { port: serving.port, cidrs: [...serving.allowedCidrs] },
            { port: GATEWAY_STATS_PORT, cidrs: [`${stats.address}/32`] },
          ],
        }
      : undefined,
    endpointScheme: "https",
  };
}

function monitoringServing(
  inputs: FleetServingInputs,
  name: string,
  replicas: ReplicaServing[],
  stats: Listener,
): MonitoringServing {
  const { stack, fleet } = inputs;
  const configDir = `/etc/kimi-kit/monitoring/${name}`;
  const bearerTokenFile = `${configDir}/${MONITORING_BEARER_TOKEN_FILE}`;
  const teamsPricing: TeamPricing[] = (inputs.teams ?? []).map((team) => ({
    name: team.name,
    ...(team.monthlyBudgetUsd !== undefined ? { monthlyBudgetUsd: team.monthlyBudgetUsd } : {}),
    usdPerInputToken: (fleet.chargeback?.usdPerMillionInput ?? 0) / 1e6,
    usdPerOutputToken: (fleet.chargeback?.usdPerMillionOutput ?? 0) / 1e6,
  }));
  return {
    name,
    configDir,
    listen: { ...MONITORING_LISTEN },
    prometheusYml: prometheusConfig({
      scrapeIntervalSeconds: MONITORING_SCRAPE_SECONDS,
      // llama-server's /metrics through each usage exporter (it passes every path on), with the replicas' key.
      replicas: replicas.map((replica) => ({ name: replica.id, ...replica.usage.listen })),
      gateway: stats,
      usageExporters: replicas.map((replica) => ({ name: replica.id, ...replica.usage.metrics })),
      ruleFiles: [`${configDir}/rules.yml`],
      replicaBearerTokenFile: bearerTokenFile,
    }),
    rulesYml: alertRules({
      projectedDecodeTokensPerSecond: inputs.projectedDecodeTokensPerSecond,
      slotsPerReplica: inputs.slotsPerReplica,
      teams: teamsPricing,
    }),
    bearerTokenFile,
    grafanaDashboard: grafanaDashboard({ title: `kimi-kit ${stack}`, gateway: true, teams: teamsPricing }),
  };
}
