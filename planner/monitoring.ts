/**
 * Monitoring for a fleet of llama-server replicas behind the gateway: the Prometheus scrape config,
 * the alert rules and a Grafana dashboard, all generated from the plan (pure functions, text out).
 *
 * Series used (checked against llama-server's real /metrics with --metrics, and
 * tools/usage-exporter.ts):
 * - `up{job="llama-server",replica}`: Prometheus' own scrape health per replica.
 * - `llamacpp:requests_processing`, `llamacpp:requests_deferred`: gauges (busy slots, queued requests).
 * - `llamacpp:tokens_predicted_total` and `llamacpp:tokens_predicted_seconds_total`: counters whose
 *   rates divide into the decode speed per busy slot, the same quantity as the plan's projected
 *   decodeTokensPerSecond (one stream's decode rate).
 * - `kimi_team_requests_total`, `kimi_team_prompt_tokens_total`, `kimi_team_completion_tokens_total`:
 *   the usage exporter's per-team counters, month-to-date by construction (they restart at each UTC
 *   month), so the budget alerts need no month arithmetic in PromQL, which has no calendar ranges.
 */
import { stringify } from "yaml";

export const JOB_REPLICAS = "llama-server";
export const JOB_GATEWAY = "gateway";
export const JOB_USAGE = "usage";

export interface ScrapeTarget {
  address: string;
  port: number;
}

export interface NamedTarget extends ScrapeTarget {
  /** Becomes the `replica` label, which the alerts and panels name. */
  name: string;
}

export interface PrometheusConfigInput {
  scrapeIntervalSeconds: number;
  replicas: readonly NamedTarget[];
  /** HAProxy's native Prometheus exporter (its stats port, path /metrics). */
  gateway?: ScrapeTarget;
  /**
   * The usage exporters: one accounting proxy per replica (see tools/usage-exporter.ts for why),
   * each with its own metrics listener; `name` is the replica it sits in front of.
   */
  usageExporters?: readonly NamedTarget[];
  /** Rule files, as paths Prometheus reads (relative to its config file or absolute). */
  ruleFiles: readonly string[];
  /**
   * A file holding the replicas' API key, for llama-server started with --api-key-file: its
   * /metrics then wants `Authorization: Bearer KEY` (only /health and /models are public). When set,
   * the llama-server job sends the key read from this file (Prometheus re-reads it on each scrape).
   * A relative path is resolved against the config file's folder. ansible-free-scripts/monitoring.sh
   * `apply --bearer-stdin` writes the key (0600) to exactly this file, which must be directly in its
   * --config-dir: MONITORING_BEARER_TOKEN_FILE (relative, any --config-dir) or CONFIG-DIR/FILE.
   */
  replicaBearerTokenFile?: string;
}

/**
 * A key-file name for replicaBearerTokenFile, relative to the installed prometheus.yml (so monitoring.sh's --config-dir
 * is free).
 */
export const MONITORING_BEARER_TOKEN_FILE = "bearer-token";

const hostPort = (t: ScrapeTarget) => (t.address.includes(":") ? `[${t.address}]:${t.port}` : `${t.address}:${t.port}`);

function checkPort(what: string, port: number): void {
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`${what}: port ${port} is not 1-65535`);
}

function uniqueNames(what: string, targets: readonly NamedTarget[]): void {
  const seen = new Set<string>();
  for (const t of targets) {
    if (seen.has(t.name)) throw new Error(`${what}: the name '${t.name}' appears twice`);
    seen.add(t.name);
    checkPort(`${what} '${t.name}'`, t.port);
  }
}

/** prometheus.yml: one job for the replicas (a `replica` label each), one for the gateway, one for usage. */
export function prometheusConfig(input: PrometheusConfigInput): string {
  if (!(input.scrapeIntervalSeconds > 0))
    throw new Error(`scrapeIntervalSeconds must be positive, got ${input.scrapeIntervalSeconds}`);
  if (input.replicas.length === 0) throw new Error("prometheusConfig needs at least one replica");
  uniqueNames("replica", input.replicas);
  uniqueNames("usage exporter", input.usageExporters ?? []);
  const interval = `${input.scrapeIntervalSeconds}s`;
  const named = (targets: readonly NamedTarget[]) =>
    targets.map((t) => ({ targets: [hostPort(t)], labels: { replica: t.name } }));
  const replicaJob: Record<string, unknown> = {
    job_name: JOB_REPLICAS,
    metrics_path: "/metrics",
    static_configs: named(input.replicas),
  };
  if (input.replicaBearerTokenFile !== undefined) {
    if (input.replicaBearerTokenFile.trim() === "" || /[\n\r]/.test(input.replicaBearerTokenFile))
      throw new Error("replicaBearerTokenFile must be a file path");
    replicaJob.authorization = { type: "Bearer", credentials_file: input.replicaBearerTokenFile };
  }
  const scrapeConfigs: Record<string, unknown>[] = [replicaJob];
  if (input.gateway) {
    checkPort("gateway", input.gateway.port);
    scrapeConfigs.push({
      job_name: JOB_GATEWAY,
      metrics_path: "/metrics",
      static_configs: [{ targets: [hostPort(input.gateway)] }],
    });
  }
  if (input.usageExporters && input.usageExporters.length > 0) {
    scrapeConfigs.push({ job_name: JOB_USAGE, metrics_path: "/metrics", static_configs: named(input.usageExporters) });
  }
  return stringify({
    global: { scrape_interval: interval, evaluation_interval: interval },
    rule_files: [...input.ruleFiles],
    scrape_configs: scrapeConfigs,
  });
}

export interface TeamPricing {
  name: string;
  monthlyBudgetUsd?: number;
  usdPerInputToken: number;
  usdPerOutputToken: number;
}

export interface AlertRulesInput {
  /** The plan's projected decode rate of one stream (projection.decodeTokensPerSecond). */
  projectedDecodeTokensPerSecond: number;
  /** llama-server's -np on each replica. */
  slotsPerReplica: number;
  teams: readonly TeamPricing[];
  /** How long each condition must hold before it fires; tests shorten them. Defaults in DEFAULT_FOR. */
  for?: Partial<Record<AlertName, string>>;
}

export type AlertName =
  | "ReplicaDown"
  | "SlotsSaturated"
  | "DeferredRequestsGrowing"
  | "DecodeBelowProjection"
  | "TeamBudget80"
  | "TeamBudget100";

export const DEFAULT_FOR: Record<AlertName, string> = {
  ReplicaDown: "1m",
  SlotsSaturated: "5m",
  DeferredRequestsGrowing: "10m",
  DecodeBelowProjection: "15m",
  TeamBudget80: "0s",
  TeamBudget100: "0s",
};

/** The fraction of the projected decode rate below which DecodeBelowProjection fires. */
export const DECODE_FLOOR = 0.7;

/** Shared PromQL, so the rules and the dashboard query exactly the same series. */
export const QUERIES = {
  replicaUp: `up{job="${JOB_REPLICAS}"}`,
  requestsProcessing: `llamacpp:requests_processing{job="${JOB_REPLICAS}"}`,
  requestsDeferred: `llamacpp:requests_deferred{job="${JOB_REPLICAS}"}`,
  // Tokens per second of generation time: the speed one busy slot decodes at, comparable with the
  // projection. Idle replicas give 0/0 = NaN, which no comparison matches, so idle never alerts.
  decodeRate: `rate(llamacpp:tokens_predicted_total{job="${JOB_REPLICAS}"}[5m]) / rate(llamacpp:tokens_predicted_seconds_total{job="${JOB_REPLICAS}"}[5m])`,
  teamRequests: `sum by (team) (kimi_team_requests_total)`,
  teamPromptTokens: `sum by (team) (kimi_team_prompt_tokens_total)`,
  teamCompletionTokens: `sum by (team) (kimi_team_completion_tokens_total)`,
  gatewayUp: `up{job="${JOB_GATEWAY}"}`,
} as const;

/** PromQL label values are double-quoted strings; team names are config, so escape them anyway. */
const quote = (value: string) => JSON.stringify(value);

/** A team's month-to-date spend in USD: its token counters (summed over replicas) times its prices. */
export function teamSpendQuery(team: TeamPricing): string {
  const t = quote(team.name);
  return (
    `(sum(kimi_team_prompt_tokens_total{team=${t}}) or vector(0)) * ${team.usdPerInputToken}` +
    ` + (sum(kimi_team_completion_tokens_total{team=${t}}) or vector(0)) * ${team.usdPerOutputToken}`
  );
}

function checkTeams(teams: readonly TeamPricing[]): void {
  const seen = new Set<string>();
  for (const team of teams) {
    if (seen.has(team.name)) throw new Error(`team '${team.name}' appears twice`);
    seen.add(team.name);
    if (!(team.usdPerInputToken >= 0) || !(team.usdPerOutputToken >= 0))
      throw new Error(`team '${team.name}': token prices must be non-negative`);
    if (team.monthlyBudgetUsd !== undefined && !(team.monthlyBudgetUsd > 0))
      throw new Error(`team '${team.name}': monthlyBudgetUsd must be positive`);
  }
}

/** How long an alert's condition must hold: the input's override, else the default. */
type ForOf = (name: AlertName) => string;

/** The four per-replica alerts: down, saturated, queueing, decoding below the plan. */
function replicaAlertRules(input: AlertRulesInput, forOf: ForOf) {
  const floor = input.projectedDecodeTokensPerSecond * DECODE_FLOOR;
  return [
    {
      alert: "ReplicaDown",
      expr: `${QUERIES.replicaUp} == 0`,
      for: forOf("ReplicaDown"),
      labels: { severity: "critical" },
      annotations: {
        summary: "Replica {{ $labels.replica }} is down",
        description:
          "Prometheus cannot scrape llama-server on {{ $labels.replica }} ({{ $labels.instance }}); the gateway sends its traffic to the other replicas.",
      },
    },
    {
      alert: "SlotsSaturated",
      expr: `${QUERIES.requestsProcessing} >= ${input.slotsPerReplica}`,
      for: forOf("SlotsSaturated"),
      labels: { severity: "warning" },
      annotations: {
        summary: "Replica {{ $labels.replica }} has all its slots busy",
        description: `{{ $labels.replica }} has processed {{ $value }} requests at once (of ${input.slotsPerReplica} slots) for ${forOf("SlotsSaturated")}: add a replica or slots.`,
      },
    },
    {
      alert: "DeferredRequestsGrowing",
      // requests_deferred is a gauge (the queue length), so its growth is deriv, not increase.
      expr: `deriv(${QUERIES.requestsDeferred}[10m]) > 0 and ${QUERIES.requestsDeferred} > 0`,
      for: forOf("DeferredRequestsGrowing"),
      labels: { severity: "warning" },
      annotations: {
        summary: "Requests queue up on replica {{ $labels.replica }}",
        description:
          "The deferred-request queue on {{ $labels.replica }} has grown over 10 minutes: the fleet is short of slots.",
      },
    },
    {
      alert: "DecodeBelowProjection",
      expr: `${QUERIES.decodeRate} < ${floor}`,
      for: forOf("DecodeBelowProjection"),
      labels: { severity: "warning" },
      annotations: {
        summary: "Replica {{ $labels.replica }} decodes below the plan",
        description: `{{ $labels.replica }} decodes at {{ $value }} tok/s per slot, under ${DECODE_FLOOR * 100}% of the plan's ${input.projectedDecodeTokensPerSecond} tok/s.`,
      },
    },
  ];
}

/** The two budget alerts (80% and 100%) of each team that has a monthly budget. */
function budgetAlertRules(teams: readonly TeamPricing[], forOf: ForOf) {
  return teams.flatMap((team) => {
    if (team.monthlyBudgetUsd === undefined) return [];
    const budget = team.monthlyBudgetUsd;
    return (
      [
        ["TeamBudget80", 0.8, "warning"],
        ["TeamBudget100", 1, "critical"],
      ] as const
    ).map(([alert, share, severity]) => ({
      alert,
      expr: `${teamSpendQuery(team)} >= ${share * budget}`,
      for: forOf(alert),
      labels: { severity, team: team.name },
      annotations: {
        summary: `Team ${team.name} has spent ${share * 100}% of its monthly budget`,
        description: `Team ${team.name}: {{ $value }} USD this month of ${budget} USD.`,
      },
    }));
  });
}

/** The rules file (YAML) with the six alerts; budget alerts exist only for teams with a budget. */
export function alertRules(input: AlertRulesInput): string {
  if (!(input.projectedDecodeTokensPerSecond > 0)) throw new Error("projectedDecodeTokensPerSecond must be positive");
  if (!Number.isInteger(input.slotsPerReplica) || input.slotsPerReplica < 1)
    throw new Error("slotsPerReplica must be a positive integer");
  checkTeams(input.teams);
  const forOf: ForOf = (name) => input.for?.[name] ?? DEFAULT_FOR[name];
  const replicaRules = replicaAlertRules(input, forOf);
  const budgetRules = budgetAlertRules(input.teams, forOf);
  return stringify({
    groups: [
      { name: "kimi-replicas", rules: replicaRules },
      ...(budgetRules.length > 0 ? [{ name: "kimi-teams", rules: budgetRules }] : []),
    ],
  });
}

export interface DashboardInput {
  title?: string;
  /** Whether the gateway is scraped (adds its panel). */
  gateway: boolean;
  /** Teams with prices add a spend panel per team. */
  teams: readonly TeamPricing[];
}

export interface DashboardPanel {
  id: number;
  type: "timeseries";
  title: string;
  datasource: { type: "prometheus"; uid: string };
  gridPos: { x: number; y: number; w: number; h: number };
  targets: { refId: string; expr: string; legendFormat: string; datasource: { type: "prometheus"; uid: string } }[];
}

export interface Dashboard {
  title: string;
  uid: string;
  schemaVersion: number;
  time: { from: string; to: string };
  refresh: string;
  templating: { list: { name: string; type: "datasource"; query: "prometheus"; label: string }[] };
  panels: DashboardPanel[];
}

/** A Grafana dashboard whose panels query the series the alerts use, through a `datasource` variable. */
export function grafanaDashboard(input: DashboardInput): Dashboard {
  checkTeams(input.teams);
  const datasource = { type: "prometheus" as const, uid: "${datasource}" };
  const rows: [string, string, string][] = [
    ["Replica up", QUERIES.replicaUp, "{{replica}}"],
    ["Busy slots", QUERIES.requestsProcessing, "{{replica}}"],
    ["Deferred requests", QUERIES.requestsDeferred, "{{replica}}"],
    ["Decode tok/s per slot", QUERIES.decodeRate, "{{replica}}"],
    ["Requests per team", QUERIES.teamRequests, "{{team}}"],
    ["Prompt tokens per team", QUERIES.teamPromptTokens, "{{team}}"],
    ["Completion tokens per team", QUERIES.teamCompletionTokens, "{{team}}"],
    ...input.teams.map((team): [string, string, string] => [
      `Spend this month: ${team.name} (USD)`,
      teamSpendQuery(team),
      team.name,
    ]),
    ...(input.gateway ? [["Gateway up", QUERIES.gatewayUp, "{{instance}}"] as [string, string, string]] : []),
  ];
  return {
    title: input.title ?? "Kimi kit fleet",
    uid: "kimi-kit-fleet",
    schemaVersion: 39,
    time: { from: "now-6h", to: "now" },
    refresh: "30s",
    templating: { list: [{ name: "datasource", type: "datasource", query: "prometheus", label: "Prometheus" }] },
    panels: rows.map(([title, expr, legendFormat], i) => ({
      id: i + 1,
      type: "timeseries",
      title,
      datasource,
      gridPos: { x: (i % 2) * 12, y: Math.floor(i / 2) * 8, w: 12, h: 8 },
      targets: [{ refId: "A", expr, legendFormat, datasource }],
    })),
  };
}
