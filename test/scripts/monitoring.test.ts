/**
 * Usage and metrics for real: a tiny llama-server (the test deepseek2 model, --metrics) behind the
 * usage exporter (tools/usage-exporter.ts), and a real Prometheus (Debian's package; its own data
 * dir, loopback port, 1 s scrape) with the kit's generated config and rules. Two teams send
 * requests (the test sets X-Kimi-Team where the gateway would); Prometheus then holds each team's
 * requests and tokens, which add up to llama-server's own token counters; every Grafana panel's
 * query returns a series; killing llama-server fires ReplicaDown for that replica.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startServer, type RunningServer } from "../../bench/lib/server";
import { alertRules, grafanaDashboard, prometheusConfig, type TeamPricing } from "../../planner/monitoring";
import { startUsageProxy, type UsageProxy } from "../../tools/usage-exporter";
import { generateDeepseek2Model } from "../support/models";
import { freePort } from "../support/net";

const hasPrometheus = spawnSync("prometheus", ["--version"]).status === 0;
const teams: TeamPricing[] = [
  { name: "alpha", monthlyBudgetUsd: 100, usdPerInputToken: 1e-6, usdPerOutputToken: 1e-5 },
  { name: "beta", usdPerInputToken: 1e-6, usdPerOutputToken: 1e-5 },
];

let dir: string;
let server: RunningServer;
let proxy: UsageProxy;
let prometheus: ChildProcess;
let promPort: number;
let promLog = "";

interface Sample {
  metric: Record<string, string>;
  value: [number, string];
}

async function query(expr: string): Promise<Sample[]> {
  const response = await fetch(`http://127.0.0.1:${promPort}/api/v1/query?query=${encodeURIComponent(expr)}`);
  const body = (await response.json()) as { status: string; error?: string; data?: { resultType: string; result: Sample[] } };
  if (body.status !== "success" || !body.data) throw new Error(`query ${expr}: ${body.error ?? response.status}`);
  return body.data.result;
}

/** Polls until `check` returns a value (not undefined), or fails with the last thing seen. */
async function until<T>(what: string, check: () => Promise<T | undefined>, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined) return value;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} (last error: ${String(last)})\nprometheus log:\n${promLog.slice(-2000)}`);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

const byTeam = (samples: Sample[]) => Object.fromEntries(samples.map((s) => [s.metric.team ?? "", Number(s.value[1])]));

beforeAll(async () => {
  if (!hasPrometheus) return;
  dir = mkdtempSync(join(tmpdir(), "kimi-kit-monitoring-"));
  const model = generateDeepseek2Model(join(dir, "model"));
  server = await startServer(model, ["-t", "1", "--metrics", "-c", "512", "-np", "2"]);
  proxy = await startUsageProxy({ listen: { host: "127.0.0.1", port: 0 }, upstream: { host: "127.0.0.1", port: server.port }, metrics: { host: "127.0.0.1", port: 0 } });
  // ReplicaDown waits 2 s here, not the production minute, so the test sees it fire quickly.
  writeFileSync(join(dir, "rules.yml"), alertRules({ projectedDecodeTokensPerSecond: 5, slotsPerReplica: 2, teams, for: { ReplicaDown: "2s" } }));
  writeFileSync(
    join(dir, "prometheus.yml"),
    prometheusConfig({
      scrapeIntervalSeconds: 1,
      replicas: [{ name: "r1", address: "127.0.0.1", port: server.port }],
      usageExporters: [{ name: "r1", address: "127.0.0.1", port: proxy.metricsPort }],
      ruleFiles: [join(dir, "rules.yml")],
    }),
  );
  promPort = await freePort();
  prometheus = spawn("prometheus", [`--config.file=${join(dir, "prometheus.yml")}`, `--storage.tsdb.path=${join(dir, "data")}`, `--web.listen-address=127.0.0.1:${promPort}`], { stdio: ["ignore", "pipe", "pipe"] });
  prometheus.stdout?.on("data", (chunk: Buffer) => (promLog += chunk.toString()));
  prometheus.stderr?.on("data", (chunk: Buffer) => (promLog += chunk.toString()));
  await until("prometheus ready", async () => ((await fetch(`http://127.0.0.1:${promPort}/-/ready`)).status === 200 ? true : undefined));
}, 300_000);

afterAll(async () => {
  if (prometheus && prometheus.exitCode === null && prometheus.signalCode === null) {
    const exited = new Promise((resolve) => prometheus.once("close", resolve));
    prometheus.kill("SIGTERM");
    await exited;
  }
  await proxy?.close();
  await server?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function chat(team: string, body: Record<string, unknown>): Promise<{ prompt: number; completion: number }> {
  const response = await fetch(`http://127.0.0.1:${proxy.port}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json", "x-kimi-team": team },
    body: JSON.stringify({ messages: [{ role: "user", content: `hello from ${team}` }], max_tokens: 6, ...body }),
  });
  const text = await response.text();
  expect(response.status, text).toBe(200);
  if (!body.stream) {
    const usage = (JSON.parse(text) as { usage: { prompt_tokens: number; completion_tokens: number } }).usage;
    return { prompt: usage.prompt_tokens, completion: usage.completion_tokens };
  }
  // What the client saw: the usage chunk when asked for, else the streamed content chunks' count
  // (one token each in llama-server's stream) and the prompt from the final timings.
  const chunks = text
    .split("\n")
    .filter((line) => line.startsWith("data: {"))
    .map((line) => JSON.parse(line.slice(6)) as { usage?: { prompt_tokens: number; completion_tokens: number }; timings?: { prompt_n: number; cache_n: number }; choices: { delta?: { content?: string } }[] });
  const usage = chunks.find((c) => c.usage)?.usage;
  if (usage) return { prompt: usage.prompt_tokens, completion: usage.completion_tokens };
  const timings = chunks.find((c) => c.timings)?.timings;
  if (!timings) throw new Error(`no timings in ${text}`);
  return { prompt: timings.prompt_n + timings.cache_n, completion: chunks.filter((c) => c.choices[0]?.delta?.content).length };
}

describe.skipIf(!hasPrometheus)(`usage per team and alerts in a real Prometheus${hasPrometheus ? "" : " (skipped: no prometheus; apt-get install prometheus)"}`, () => {
  it("counts two teams' requests and tokens, every panel has data, and a killed replica fires ReplicaDown", async () => {
    const sent = [
      ["alpha", await chat("alpha", {})],
      ["alpha", await chat("alpha", { stream: true, stream_options: { include_usage: true } })],
      ["alpha", await chat("alpha", { max_tokens: 3 })],
      ["beta", await chat("beta", { stream: true })],
    ] as const;
    const expected: Record<string, { requests: number; prompt: number; completion: number }> = {};
    for (const [team, tokens] of sent) {
      const e = (expected[team] ??= { requests: 0, prompt: 0, completion: 0 });
      e.requests += 1;
      e.prompt += tokens.prompt;
      e.completion += tokens.completion;
    }
    expect(expected.alpha!.completion).toBeGreaterThan(0);

    const want = (key: "requests" | "prompt" | "completion") => Object.fromEntries(Object.entries(expected).map(([team, e]) => [team, e[key]]));
    const seen = await until("per-team counters in Prometheus", async () => {
      const [requests, prompt, completion] = await Promise.all([
        query("sum by (team) (kimi_team_requests_total)"),
        query("sum by (team) (kimi_team_prompt_tokens_total)"),
        query("sum by (team) (kimi_team_completion_tokens_total)"),
      ]);
      const got = { requests: byTeam(requests), prompt: byTeam(prompt), completion: byTeam(completion) };
      return JSON.stringify(got.requests) === JSON.stringify(want("requests")) ? got : undefined;
    });
    expect(seen).toEqual({ requests: want("requests"), prompt: want("prompt"), completion: want("completion") });

    // An independent check: the teams' completion tokens add up to what llama-server itself counted.
    const total = Object.values(expected).reduce((sum, e) => sum + e.completion, 0);
    await until("llama-server's own token counter", async () => {
      const samples = await query('llamacpp:tokens_predicted_total{replica="r1"}');
      return samples.length === 1 && Number(samples[0]!.value[1]) === total ? true : undefined;
    });

    for (const panel of grafanaDashboard({ gateway: false, teams }).panels) {
      for (const target of panel.targets) {
        const samples = await until(`a series for panel '${panel.title}'`, async () => {
          const result = await query(target.expr);
          return result.length > 0 ? result : undefined;
        });
        expect(samples.length, panel.title).toBeGreaterThan(0);
      }
    }

    await server.stop();
    const alert = await until("ReplicaDown firing", async () => {
      const response = await fetch(`http://127.0.0.1:${promPort}/api/v1/alerts`);
      const body = (await response.json()) as { data: { alerts: { labels: Record<string, string>; state: string }[] } };
      return body.data.alerts.find((a) => a.labels.alertname === "ReplicaDown" && a.state === "firing");
    });
    expect(alert.labels).toMatchObject({ replica: "r1", job: "llama-server" });
  }, 240_000);
});
