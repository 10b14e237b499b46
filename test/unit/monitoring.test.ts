/**
 * The monitoring generators (planner/monitoring.ts) checked by the real promtool: the config and
 * rules pass `promtool check`, and `promtool test rules` feeds synthetic series through the
 * generated rules, showing each alert fire for the replica or team it names and stay silent for
 * the healthy one beside it. Also the usage exporter's token parsing (tools/usage-exporter.ts).
 */
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { parse, stringify } from "yaml";
import {
  alertRules,
  grafanaDashboard,
  MONITORING_BEARER_TOKEN_FILE,
  prometheusConfig,
  QUERIES,
  type TeamPricing,
} from "../../planner/monitoring";
import { renderMetrics, tokensOf, tokensOfStream } from "../../tools/usage-exporter";

const dir = mkdtempSync(join(tmpdir(), "kimi-kit-monitoring-unit-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function promtool(...args: string[]): { status: number | null; output: string } {
  const r = spawnSync("promtool", args, { encoding: "utf8", timeout: 60_000 });
  if (r.error) throw r.error;
  return { status: r.status, output: `${r.stdout}${r.stderr}` };
}

const teams: TeamPricing[] = [
  { name: "alpha", monthlyBudgetUsd: 100, usdPerInputToken: 1e-6, usdPerOutputToken: 1e-5 },
  { name: "beta", monthlyBudgetUsd: 1000, usdPerInputToken: 1e-6, usdPerOutputToken: 1e-5 },
  { name: "gamma", usdPerInputToken: 1e-6, usdPerOutputToken: 1e-5 },
];
const rulesText = alertRules({ projectedDecodeTokensPerSecond: 10, slotsPerReplica: 2, teams });

describe("prometheusConfig and alertRules pass promtool check", () => {
  it("check config, with the rules file it names", () => {
    writeFileSync(join(dir, "rules.yml"), rulesText);
    const config = prometheusConfig({
      scrapeIntervalSeconds: 15,
      replicas: [
        { name: "r1", address: "10.0.0.11", port: 8080 },
        { name: "r2", address: "10.0.0.12", port: 8080 },
      ],
      gateway: { address: "10.0.0.10", port: 8405 },
      usageExporters: [
        { name: "r1", address: "10.0.0.11", port: 9101 },
        { name: "r2", address: "10.0.0.12", port: 9101 },
      ],
      ruleFiles: ["rules.yml"],
    });
    writeFileSync(join(dir, "prometheus.yml"), config);
    const r = promtool("check", "config", join(dir, "prometheus.yml"));
    expect(r.output).toContain("SUCCESS");
    expect(r.status).toBe(0);
    const parsed = parse(config) as {
      scrape_configs: { job_name: string; static_configs: { targets: string[]; labels?: { replica: string } }[] }[];
    };
    expect(parsed.scrape_configs.map((c) => c.job_name)).toEqual(["llama-server", "gateway", "usage"]);
    expect(parsed.scrape_configs[0]!.static_configs).toEqual([
      { targets: ["10.0.0.11:8080"], labels: { replica: "r1" } },
      { targets: ["10.0.0.12:8080"], labels: { replica: "r2" } },
    ]);
  });

  it("replicaBearerTokenFile: the llama-server job alone sends the key file as a Bearer token, and promtool accepts it", () => {
    const input = {
      scrapeIntervalSeconds: 15,
      replicas: [{ name: "r1", address: "10.0.0.11", port: 8080 }],
      gateway: { address: "10.0.0.10", port: 8405 },
      usageExporters: [{ name: "r1", address: "10.0.0.11", port: 9101 }],
      ruleFiles: ["rules.yml"],
    };
    type Parsed = {
      scrape_configs: { job_name: string; authorization?: { type: string; credentials_file: string } }[];
    };
    const plain = parse(prometheusConfig(input)) as Parsed;
    expect(plain.scrape_configs.every((c) => c.authorization === undefined)).toBe(true);

    const withKey = prometheusConfig({ ...input, replicaBearerTokenFile: MONITORING_BEARER_TOKEN_FILE });
    const parsed = parse(withKey) as Parsed;
    expect(parsed.scrape_configs.map((c) => [c.job_name, c.authorization])).toEqual([
      ["llama-server", { type: "Bearer", credentials_file: "bearer-token" }],
      ["gateway", undefined],
      ["usage", undefined],
    ]);
    // The relative path is resolved against the config file's folder, as monitoring.sh installs it.
    const withToken = join(dir, "with-token");
    mkdirSync(withToken, { recursive: true });
    writeFileSync(join(withToken, "rules.yml"), rulesText);
    writeFileSync(join(withToken, "bearer-token"), "secret-key\n", { mode: 0o600 });
    writeFileSync(join(withToken, "prometheus.yml"), withKey);
    const ok = promtool("check", "config", join(withToken, "prometheus.yml"));
    expect(ok.output).toContain("SUCCESS");
    expect(ok.status, ok.output).toBe(0);

    // The check can fail: promtool refuses the config when the key file it names is missing.
    const withoutToken = join(dir, "without-token");
    mkdirSync(withoutToken, { recursive: true });
    writeFileSync(join(withoutToken, "rules.yml"), rulesText);
    writeFileSync(join(withoutToken, "prometheus.yml"), withKey);
    const refused = promtool("check", "config", join(withoutToken, "prometheus.yml"));
    expect(refused.status, refused.output).not.toBe(0);
    expect(refused.output).toContain("bearer-token");

    // An absolute path passes through unchanged; an empty one is refused before any file.
    expect(
      parse(prometheusConfig({ ...input, replicaBearerTokenFile: "/etc/kimi-kit/monitoring/m/bearer-token" })),
    ).toMatchObject({
      scrape_configs: [
        {
          job_name: "llama-server",
          authorization: { type: "Bearer", credentials_file: "/etc/kimi-kit/monitoring/m/bearer-token" },
        },
        {},
        {},
      ],
    });
    expect(() => prometheusConfig({ ...input, replicaBearerTokenFile: " " })).toThrow(/file path/);
  });

  it("check rules: six alerts, budget ones only for teams with a budget", () => {
    writeFileSync(join(dir, "rules-check.yml"), rulesText);
    const r = promtool("check", "rules", join(dir, "rules-check.yml"));
    expect(r.status, r.output).toBe(0);
    expect(r.output).toContain("SUCCESS: 8 rules found");
    const alerts = (
      parse(rulesText) as { groups: { rules: { alert: string; labels: Record<string, string> }[] }[] }
    ).groups.flatMap((g) => g.rules);
    expect(alerts.map((a) => `${a.alert}${a.labels.team ? `:${a.labels.team}` : ""}`)).toEqual([
      "ReplicaDown",
      "SlotsSaturated",
      "DeferredRequestsGrowing",
      "DecodeBelowProjection",
      "TeamBudget80:alpha",
      "TeamBudget100:alpha",
      "TeamBudget80:beta",
      "TeamBudget100:beta",
    ]);
  });

  it("a broken rule is refused by promtool (the check can fail)", () => {
    writeFileSync(join(dir, "broken.yml"), rulesText.replace("== 0", "== == 0"));
    expect(promtool("check", "rules", join(dir, "broken.yml")).status).not.toBe(0);
  });

  it("bad input is refused before any file", () => {
    expect(() =>
      alertRules({ projectedDecodeTokensPerSecond: 10, slotsPerReplica: 2, teams: [teams[0]!, teams[0]!] }),
    ).toThrow(/twice/);
    expect(() => alertRules({ projectedDecodeTokensPerSecond: 0, slotsPerReplica: 2, teams })).toThrow(/positive/);
    expect(() => prometheusConfig({ scrapeIntervalSeconds: 1, replicas: [], ruleFiles: [] })).toThrow(/at least one/);
  });
});

describe("promtool test rules: each alert fires for its replica or team and stays silent for the healthy one", () => {
  it("runs the synthetic series through the generated rules", () => {
    // Annotations are templates over $value; promtool compares them verbatim, so the unit test
    // drops them and checks expressions, `for:` and labels (check rules above validated the templates).
    const doc = parse(rulesText) as { groups: { rules: Record<string, unknown>[] }[] };
    for (const group of doc.groups) for (const rule of group.rules) delete rule.annotations;
    writeFileSync(join(dir, "rules-test.yml"), stringify(doc));
    const job = { job: "llama-server" };
    const replica = (name: string) => ({ ...job, replica: name, instance: `${name}:8080` });
    const series = (metric: string, labels: Record<string, string>, values: string) => ({
      series: `${metric}{${Object.entries(labels)
        .map(([k, v]) => `${k}="${v}"`)
        .join(",")}}`,
      values,
    });
    const tests = {
      rule_files: ["rules-test.yml"],
      evaluation_interval: "1m",
      tests: [
        {
          interval: "1m",
          input_series: [series("up", replica("r1"), "1 1 0 0 0 0 0 0"), series("up", replica("r2"), "1x7")],
          alert_rule_test: [
            { eval_time: "2m", alertname: "ReplicaDown", exp_alerts: [] },
            {
              eval_time: "5m",
              alertname: "ReplicaDown",
              exp_alerts: [{ exp_labels: { severity: "critical", ...replica("r1") } }],
            },
          ],
        },
        {
          interval: "1m",
          input_series: [
            series("llamacpp:requests_processing", replica("r1"), "2x10"),
            series("llamacpp:requests_processing", replica("r2"), "1x10"),
          ],
          alert_rule_test: [
            { eval_time: "3m", alertname: "SlotsSaturated", exp_alerts: [] },
            {
              eval_time: "8m",
              alertname: "SlotsSaturated",
              exp_alerts: [{ exp_labels: { severity: "warning", ...replica("r1") } }],
            },
          ],
        },
        {
          interval: "1m",
          input_series: [
            series("llamacpp:requests_deferred", replica("r1"), "0+1x30"),
            series("llamacpp:requests_deferred", replica("r2"), "3x30"),
          ],
          alert_rule_test: [
            { eval_time: "5m", alertname: "DeferredRequestsGrowing", exp_alerts: [] },
            {
              eval_time: "20m",
              alertname: "DeferredRequestsGrowing",
              exp_alerts: [{ exp_labels: { severity: "warning", ...replica("r1") } }],
            },
          ],
        },
        {
          interval: "1m",
          // r1 decodes 300 tokens per 60 s of generation (5 tok/s, under 70% of 10); r2 600 per 60 s (10 tok/s).
          input_series: [
            series("llamacpp:tokens_predicted_total", replica("r1"), "0+300x40"),
            series("llamacpp:tokens_predicted_seconds_total", replica("r1"), "0+60x40"),
            series("llamacpp:tokens_predicted_total", replica("r2"), "0+600x40"),
            series("llamacpp:tokens_predicted_seconds_total", replica("r2"), "0+60x40"),
          ],
          alert_rule_test: [
            { eval_time: "10m", alertname: "DecodeBelowProjection", exp_alerts: [] },
            {
              eval_time: "30m",
              alertname: "DecodeBelowProjection",
              exp_alerts: [{ exp_labels: { severity: "warning", ...replica("r1") } }],
            },
          ],
        },
        {
          interval: "1m",
          // alpha and beta each spend $10 a minute in completion tokens, across two replicas' exporters.
          input_series: [
            series("kimi_team_completion_tokens_total", { job: "usage", replica: "r1", team: "alpha" }, "0+600000x12"),
            series("kimi_team_completion_tokens_total", { job: "usage", replica: "r2", team: "alpha" }, "0+400000x12"),
            series("kimi_team_prompt_tokens_total", { job: "usage", replica: "r1", team: "alpha" }, "0x12"),
            series("kimi_team_completion_tokens_total", { job: "usage", replica: "r1", team: "beta" }, "0+1000000x12"),
          ],
          alert_rule_test: [
            { eval_time: "7m", alertname: "TeamBudget80", exp_alerts: [] },
            {
              eval_time: "8m",
              alertname: "TeamBudget80",
              exp_alerts: [{ exp_labels: { severity: "warning", team: "alpha" } }],
            },
            { eval_time: "9m", alertname: "TeamBudget100", exp_alerts: [] },
            {
              eval_time: "10m",
              alertname: "TeamBudget100",
              exp_alerts: [{ exp_labels: { severity: "critical", team: "alpha" } }],
            },
          ],
        },
      ],
    };
    writeFileSync(join(dir, "tests.yml"), stringify(tests));
    const r = promtool("test", "rules", join(dir, "tests.yml"));
    expect(r.output).toContain("SUCCESS");
    expect(r.status).toBe(0);
  });

  it("the same test fails when a healthy replica is expected to alert (the test can fail)", () => {
    const tests = {
      rule_files: ["rules-test.yml"],
      evaluation_interval: "1m",
      tests: [
        {
          interval: "1m",
          input_series: [{ series: 'up{job="llama-server",replica="r2",instance="r2:8080"}', values: "1x7" }],
          alert_rule_test: [
            {
              eval_time: "5m",
              alertname: "ReplicaDown",
              exp_alerts: [
                { exp_labels: { severity: "critical", job: "llama-server", replica: "r2", instance: "r2:8080" } },
              ],
            },
          ],
        },
      ],
    };
    writeFileSync(join(dir, "tests-wrong.yml"), stringify(tests));
    expect(promtool("test", "rules", join(dir, "tests-wrong.yml")).status).not.toBe(0);
  });
});

describe("grafanaDashboard", () => {
  it("queries exactly the alert series, through a datasource variable", () => {
    const dashboard = grafanaDashboard({ gateway: true, teams });
    expect(dashboard.schemaVersion).toBe(39);
    expect(dashboard.templating.list[0]).toMatchObject({ name: "datasource", type: "datasource", query: "prometheus" });
    const exprs = dashboard.panels.flatMap((p) => p.targets.map((t) => t.expr));
    for (const query of Object.values(QUERIES)) expect(exprs).toContain(query);
    expect(new Set(dashboard.panels.map((p) => p.id)).size).toBe(dashboard.panels.length);
    expect(dashboard.panels.every((p) => p.datasource.uid === "${datasource}")).toBe(true);
  });
});

describe("usage exporter parsing", () => {
  it("takes usage from a JSON body, and timings when usage is absent", () => {
    expect(
      tokensOf({
        usage: { prompt_tokens: 11, completion_tokens: 5 },
        timings: { prompt_n: 1, cache_n: 10, predicted_n: 5 },
      }),
    ).toEqual({ prompt: 11, completion: 5 });
    expect(tokensOf({ timings: { prompt_n: 1, cache_n: 10, predicted_n: 5 } })).toEqual({ prompt: 11, completion: 5 });
    expect(tokensOf({ choices: [] })).toBeUndefined();
  });

  it("takes the usage chunk of a stream over an earlier timings chunk", () => {
    const stream = [
      'data: {"choices":[{"delta":{"content":"a"}}]}',
      'data: {"choices":[],"timings":{"prompt_n":1,"cache_n":2,"predicted_n":4}}',
      'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4}}',
      "data: [DONE]",
    ].join("\n\n");
    expect(tokensOfStream(stream)).toEqual({ prompt: 3, completion: 4 });
    expect(tokensOfStream('data: {"timings":{"prompt_n":7,"predicted_n":2}}\n\ndata: [DONE]')).toEqual({
      prompt: 7,
      completion: 2,
    });
  });

  it("renders counters with escaped team labels", () => {
    const text = renderMetrics({ 'a"b': { requests: 2, promptTokens: 3, completionTokens: 4 } });
    expect(text).toContain('kimi_team_requests_total{team="a\\"b"} 2');
    expect(text).toContain("# TYPE kimi_team_completion_tokens_total counter");
  });
});
