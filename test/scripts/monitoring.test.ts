/**
 * Usage and metrics for real: a tiny llama-server (the test deepseek2 model, --metrics) behind the
 * usage exporter (tools/usage-exporter.ts), and a real Prometheus (Debian's package; its own data
 * dir, loopback port, 1 s scrape) with the kit's generated config and rules. Two teams send
 * requests (the test sets X-Kimi-Team where the gateway would); Prometheus then holds each team's
 * requests and tokens, which add up to llama-server's own token counters; every Grafana panel's
 * query returns a series; killing llama-server fires ReplicaDown for that replica. A replica with
 * --api-key-file is scraped only with replicaBearerTokenFile (its /metrics wants the key). Last,
 * the whole chain: HAProxy (gateway.sh) → usage exporter → llama-server, where the team comes from
 * the key the gateway checked, never from the client.
 */
import { execFile, spawn, spawnSync, type ChildProcess } from "node:child_process";
import { promisify } from "node:util";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startServer, type RunningServer } from "../../lab/server";
import {
  alertRules,
  grafanaDashboard,
  MONITORING_BEARER_TOKEN_FILE,
  prometheusConfig,
  type TeamPricing,
} from "../../planner/monitoring";
import { startUsageProxy, type UsageProxy } from "../../tools/usage-exporter";
import { adminSocketOf, GATEWAY_FILES, gatewayApplyArgv, haproxyGatewayConfig, keySha256 } from "../../planner/gateway";
import { limitOnce, TOKENS_LAST_MINUTE_QUERY } from "../../tools/token-limiter";
import { hostProgramJavaScript } from "../../components/exec/host-programs";
import { generateDeepseek2Model } from "../../lab/models";
import { freePort } from "../../lab/net";
import { until as untilCondition } from "../support/until";

const hasPrometheus = spawnSync("prometheus", ["--version"]).status === 0;
const execFileAsync = promisify(execFile);
const GATEWAY_SCRIPT = resolve(__dirname, "../../ansible-free-scripts/gateway.sh");
const LIMITER_SCRIPT = resolve(__dirname, "../../ansible-free-scripts/token-limiter.sh");
const teams: TeamPricing[] = [
  { name: "alpha", monthlyBudgetUsd: 100, usdPerInputToken: 1e-6, usdPerOutputToken: 1e-5 },
  { name: "beta", usdPerInputToken: 1e-6, usdPerOutputToken: 1e-5 },
];

let dir: string;
let server: RunningServer;
let keyed: RunningServer | undefined;
let model: string;
let proxy: UsageProxy;
let prometheus: ChildProcess;
let promPort: number;
let promLog = "";

const until = <T>(what: string, check: () => Promise<T | undefined>) =>
  untilCondition(what, check, {
    timeoutMs: 60_000,
    intervalMs: 250,
    context: () => `prometheus log:\n${promLog.slice(-2000)}`,
  });

interface Sample {
  metric: Record<string, string>;
  value: [number, string];
}

async function query(expr: string): Promise<Sample[]> {
  const response = await fetch(`http://127.0.0.1:${promPort}/api/v1/query?query=${encodeURIComponent(expr)}`);
  const body = (await response.json()) as {
    status: string;
    error?: string;
    data?: { resultType: string; result: Sample[] };
  };
  if (body.status !== "success" || !body.data) throw new Error(`query ${expr}: ${body.error ?? response.status}`);
  return body.data.result;
}

const byTeam = (samples: Sample[]) => Object.fromEntries(samples.map((s) => [s.metric.team ?? "", Number(s.value[1])]));

beforeAll(async () => {
  if (!hasPrometheus) return;
  dir = mkdtempSync(join(tmpdir(), "kimi-kit-monitoring-"));
  model = generateDeepseek2Model(join(dir, "model"));
  server = await startServer(model, ["-t", "1", "--metrics", "-c", "512", "-np", "2"]);
  proxy = await startUsageProxy({
    listen: { host: "127.0.0.1", port: 0 },
    upstream: { host: "127.0.0.1", port: server.port },
    metrics: { host: "127.0.0.1", port: 0 },
  });
  // ReplicaDown waits 2 s here, not the production minute, so the test sees it fire quickly.
  writeFileSync(
    join(dir, "rules.yml"),
    alertRules({ projectedDecodeTokensPerSecond: 5, slotsPerReplica: 2, teams, for: { ReplicaDown: "2s" } }),
  );
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
  prometheus = spawn(
    "prometheus",
    [
      `--config.file=${join(dir, "prometheus.yml")}`,
      `--storage.tsdb.path=${join(dir, "data")}`,
      `--web.listen-address=127.0.0.1:${promPort}`,
    ],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  prometheus.stdout?.on("data", (chunk: Buffer) => (promLog += chunk.toString()));
  prometheus.stderr?.on("data", (chunk: Buffer) => (promLog += chunk.toString()));
  await until("prometheus ready", async () =>
    (await fetch(`http://127.0.0.1:${promPort}/-/ready`)).status === 200 ? true : undefined,
  );
}, 300_000);

afterAll(async () => {
  if (prometheus && prometheus.exitCode === null && prometheus.signalCode === null) {
    const exited = new Promise((resolve) => prometheus.once("close", resolve));
    prometheus.kill("SIGTERM");
    await exited;
  }
  await proxy?.close();
  await server?.stop();
  await keyed?.stop();
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
    .map(
      (line) =>
        JSON.parse(line.slice(6)) as {
          usage?: { prompt_tokens: number; completion_tokens: number };
          timings?: { prompt_n: number; cache_n: number };
          choices: { delta?: { content?: string } }[];
        },
    );
  const usage = chunks.find((c) => c.usage)?.usage;
  if (usage) return { prompt: usage.prompt_tokens, completion: usage.completion_tokens };
  const timings = chunks.find((c) => c.timings)?.timings;
  if (!timings) throw new Error(`no timings in ${text}`);
  return {
    prompt: timings.prompt_n + timings.cache_n,
    completion: chunks.filter((c) => c.choices[0]?.delta?.content).length,
  };
}

describe.skipIf(!hasPrometheus)(
  `usage per team and alerts in a real Prometheus${hasPrometheus ? "" : " (skipped: no prometheus; apt-get install prometheus)"}`,
  () => {
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

      const want = (key: "requests" | "prompt" | "completion") =>
        Object.fromEntries(Object.entries(expected).map(([team, e]) => [team, e[key]]));
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
        const body = (await response.json()) as {
          data: { alerts: { labels: Record<string, string>; state: string }[] };
        };
        return body.data.alerts.find((a) => a.labels.alertname === "ReplicaDown" && a.state === "firing");
      });
      expect(alert.labels).toMatchObject({ replica: "r1", job: "llama-server" });
    }, 240_000);

    it("a replica with --api-key-file serves /metrics only with its key: down without replicaBearerTokenFile, up with it", async () => {
      const key = "monitoring-test-key";
      writeFileSync(join(dir, "api-key"), `${key}\n`);
      keyed = await startServer(model, [
        "-t",
        "1",
        "--metrics",
        "-c",
        "512",
        "-np",
        "1",
        "--api-key-file",
        join(dir, "api-key"),
      ]);
      // Prometheus reads the key file next to its config (a relative credentials_file), as monitoring.sh installs it.
      writeFileSync(join(dir, MONITORING_BEARER_TOKEN_FILE), `${key}\n`, { mode: 0o600 });
      const config = (withKey: boolean) =>
        prometheusConfig({
          scrapeIntervalSeconds: 1,
          replicas: [{ name: "r2", address: "127.0.0.1", port: keyed!.port }],
          ruleFiles: [join(dir, "rules.yml")],
          ...(withKey ? { replicaBearerTokenFile: MONITORING_BEARER_TOKEN_FILE } : {}),
        });
      const target = async (health: string) => {
        const body = (await (await fetch(`http://127.0.0.1:${promPort}/api/v1/targets`)).json()) as {
          data: { activeTargets: { labels: Record<string, string>; health: string; lastError: string }[] };
        };
        const r2 = body.data.activeTargets.find((t) => t.labels.replica === "r2");
        return r2?.health === health ? r2 : undefined;
      };
      writeFileSync(join(dir, "prometheus.yml"), config(false));
      prometheus.kill("SIGHUP");
      const refused = await until("r2 down without the key", () => target("down"));
      expect(refused.lastError).toMatch(/401/);
      writeFileSync(join(dir, "prometheus.yml"), config(true));
      prometheus.kill("SIGHUP");
      await until("r2 up with the key", () => target("up"));
      const samples = await until("r2's own counters", async () => {
        const result = await query('llamacpp:requests_processing{replica="r2"}');
        return result.length > 0 ? result : undefined;
      });
      expect(samples[0]!.metric).toMatchObject({ job: "llama-server", replica: "r2" });
    }, 240_000);
  },
);

const canRunGateway =
  process.getuid?.() === 0 &&
  spawnSync("sh", ["-c", "command -v haproxy && command -v curl && command -v openssl"]).status === 0;

describe.skipIf(!canRunGateway || !hasPrometheus)(
  `the gateway names the team for the usage exporter${canRunGateway ? "" : " (skipped: needs root, haproxy, curl, openssl and prometheus)"}`,
  () => {
    it("counts requests made with a team's key through HAProxy for that team (a client's own X-Kimi-Team is overwritten); the token limiter blocks and admits a team", async () => {
      const gatewayDir = mkdtempSync(join(tmpdir(), "kimi-kit-gateway-usage-"));
      const replica = await startServer(model ?? generateDeepseek2Model(join(gatewayDir, "model")), [
        "-t",
        "1",
        "-c",
        "512",
        "-np",
        "1",
      ]);
      const counter = await startUsageProxy({
        listen: { host: "127.0.0.1", port: 0 },
        upstream: { host: "127.0.0.1", port: replica.port },
        metrics: { host: "127.0.0.1", port: 0 },
      });
      const keys = { alpha: "alpha-team-key-0123456789abcdefghij", beta: "beta-team-key-0123456789abcdefghijk" };
      const [listenPort, statsPort, peerPort] = [await freePort(), await freePort(), await freePort()];
      const input = {
        stack: "usage-test",
        name: "usagetest",
        configDir: join(gatewayDir, "etc"),
        listen: { address: "127.0.0.1", port: listenPort },
        backends: [{ name: "r1", address: "127.0.0.1", port: counter.port }],
        teams: Object.entries(keys).map(([team, key]) => ({
          name: team,
          keySha256: keySha256(key),
          requestsPerMinute: 100,
          tokensPerMinute: 1000,
        })),
        stats: { address: "127.0.0.1", port: statsPort },
        peerPort,
      };
      const files = haproxyGatewayConfig(input);
      const from = join(gatewayDir, "from");
      mkdirSync(from);
      writeFileSync(join(from, "haproxy.cfg"), files.config);
      writeFileSync(join(from, "teams.map"), files.teamsMap);
      writeFileSync(join(from, "limits.map"), files.limitsMap);
      writeFileSync(join(from, GATEWAY_FILES.tokenLimitsMap), files.tokenLimitsMap);
      const dirs = ["--run-dir", join(gatewayDir, "run"), "--no-systemd"];
      try {
        const applied = spawnSync(
          "bash",
          [
            GATEWAY_SCRIPT,
            ...gatewayApplyArgv(input, from, { tls: "internal-ca", sans: [], secretsStdin: true }),
            ...dirs,
          ],
          { input: "replica-key-unused-here\n", encoding: "utf8" },
        );
        expect(applied.status, applied.stderr).toBe(0);
        const caFile = join(gatewayDir, "ca.crt");
        writeFileSync(caFile, Buffer.from(/^ca_certificate_base64=(.*)$/m.exec(applied.stdout)![1]!, "base64"));
        const chat = async (key: string, claimedTeam?: string): Promise<string> => {
          const args = [
            "-sS",
            "--max-time",
            "60",
            "--cacert",
            caFile,
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            `Authorization: Bearer ${key}`,
            "-H",
            "Content-Type: application/json",
          ];
          if (claimedTeam) args.push("-H", `X-Kimi-Team: ${claimedTeam}`);
          args.push(
            "-d",
            JSON.stringify({ messages: [{ role: "user", content: "hi" }], max_tokens: 4 }),
            `https://127.0.0.1:${listenPort}/v1/chat/completions`,
          );
          const result = await execFileAsync("curl", args, { encoding: "utf8" }).catch(
            (error: { stdout?: string; stderr?: string }) => ({
              stdout: error.stdout ?? "",
              stderr: error.stderr ?? "",
            }),
          );
          return result.stdout;
        };
        // The usage exporter runs in this process: every call below must leave the event loop free (no spawnSync).
        await until("the gateway's health check to see the replica up", async () => {
          const text = await (await fetch(`http://127.0.0.1:${statsPort}/metrics`)).text();
          return /haproxy_server_status\{[^}]*server="r1",state="UP"\} 1/.test(text) ? true : undefined;
        });
        expect(await chat(keys.alpha)).toBe("200");
        expect(await chat(keys.alpha)).toBe("200");
        // beta claims to be alpha: the gateway's header wins, so beta pays.
        expect(await chat(keys.beta, "alpha")).toBe("200");
        expect(await chat("not-a-team-key", "alpha")).toBe("401");
        const usage = counter.usage();
        expect(usage.alpha?.requests).toBe(2);
        expect(usage.beta?.requests).toBe(1);
        expect(usage.none).toBeUndefined();
        expect(usage.alpha!.completionTokens).toBeGreaterThan(0);

        // Tokens per minute: Prometheus scrapes this exporter; the token limiter blocks alpha (over a
        // 1-token limit) at the gateway through its admin socket, beta goes on, and alpha is admitted
        // again once its limit is above what it used.
        writeFileSync(
          join(dir, "prometheus.yml"),
          prometheusConfig({
            scrapeIntervalSeconds: 1,
            replicas: [{ name: "g1", address: "127.0.0.1", port: counter.port }],
            usageExporters: [{ name: "g1", address: "127.0.0.1", port: counter.metricsPort }],
            ruleFiles: [join(dir, "rules.yml")],
          }),
        );
        prometheus.kill("SIGHUP");
        // increase() counts only what a counter gained while scraped: once alpha's series is in
        // Prometheus, alpha makes one more request, which is what its last minute then holds.
        // This exporter's own series (replica g1): the first test's exporter counted an "alpha" too.
        await until("alpha's counter scraped from this exporter", async () =>
          (await query('kimi_team_requests_total{team="alpha",replica="g1"}')).length > 0 ? true : undefined,
        );
        expect(await chat(keys.alpha)).toBe("200");
        const alphaTokens = counter.usage().alpha!.promptTokens + counter.usage().alpha!.completionTokens;
        await until("alpha's tokens over the last minute in Prometheus", async () => {
          const samples = await query('increase(kimi_team_completion_tokens_total{team="alpha",replica="g1"}[1m])');
          const all = await query(TOKENS_LAST_MINUTE_QUERY);
          return samples.some((sample) => Number(sample.value[1]) > 0) &&
            all.some((sample) => sample.metric.team === "alpha")
            ? true
            : undefined;
        });
        const limits = join(gatewayDir, "token-limits");
        const limiter = {
          prometheusUrl: `http://127.0.0.1:${promPort}`,
          limitsFile: limits,
          socketPath: adminSocketOf(input),
          blockedMapFile: join(input.configDir, GATEWAY_FILES.tokensBlockedMap),
        };
        writeFileSync(limits, `alpha 1\nbeta ${100 * alphaTokens}\n`);
        const blocking = await limitOnce(limiter);
        expect(blocking).toMatchObject({ blocked: ["alpha"], added: ["alpha"], removed: [] });
        expect(readFileSync(limiter.blockedMapFile, "utf8")).toBe("alpha 1\n");
        expect(await chat(keys.alpha)).toBe("429");
        expect(await chat(keys.beta)).toBe("200");
        writeFileSync(limits, `alpha ${100 * alphaTokens}\n`);
        expect(await limitOnce(limiter)).toMatchObject({ blocked: [], added: [], removed: ["alpha"] });
        expect(await chat(keys.alpha)).toBe("200");

        // The same loop as the kit deploys it: token-limiter.sh runs the transpiled program as a daemon
        // (one round at apply, then every second here); lowering alpha's limit blocks it within a round.
        const limiterDirs = [
          "--install-dir",
          join(gatewayDir, "limiter"),
          "--run-dir",
          join(gatewayDir, "run"),
          "--no-systemd",
        ];
        writeFileSync(join(gatewayDir, "token-limiter.js"), hostProgramJavaScript("token-limiter"));
        const limiterArgv = [
          "apply",
          "--name",
          "usagetest",
          "--from",
          join(gatewayDir, "token-limiter.js"),
          "--prometheus",
          limiter.prometheusUrl,
          "--limits",
          limits,
          "--socket",
          limiter.socketPath,
          "--blocked-map",
          limiter.blockedMapFile,
          "--interval",
          "1",
          ...limiterDirs,
        ];
        const started = await execFileAsync("bash", [LIMITER_SCRIPT, ...limiterArgv], { encoding: "utf8" });
        expect(started.stdout).toMatch(/^token_limiter=usagetest\npid=\d+\nchanged=yes\n$/);
        const again = await execFileAsync("bash", [LIMITER_SCRIPT, ...limiterArgv], { encoding: "utf8" });
        expect(again.stdout).toContain("changed=no");
        writeFileSync(limits, "alpha 1\n");
        await until("the daemon to block alpha", async () => ((await chat(keys.alpha)) === "429" ? true : undefined));
        const removed = await execFileAsync("bash", [LIMITER_SCRIPT, "remove", "--name", "usagetest", ...limiterDirs], {
          encoding: "utf8",
        });
        expect(removed.stdout).toBe("token_limiter=removed\n");
      } finally {
        spawnSync("bash", [GATEWAY_SCRIPT, "remove", "--name", input.name, "--config-dir", input.configDir, ...dirs]);
        await counter.close();
        await replica.stop();
        rmSync(gatewayDir, { recursive: true, force: true });
      }
    }, 240_000);
  },
);
