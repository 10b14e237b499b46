/**
 * The `local` stack with two teams, end to end for real: a fleet of one on the loopback host. The
 * harness carries out every remote command the components registered under Pulumi mocks (as in
 * local-stack.test.ts): the replica (shards, llama-server on loopback, the usage exporter in front
 * of it, the smoke request), the HAProxy gateway with the teams' key hashes, Prometheus and the
 * token limiter. Then: each team's key works through the gateway's TLS, a missing or unknown key is
 * refused at the edge, the usage exporter counts each team, Prometheus scrapes the replica, the
 * counters and the gateway, every panel of the exported Grafana dashboard has series there, and
 * destroy removes it all.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { execFileSync } from "node:child_process";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { installMocks, registered, teamKeyFor } from "../components/mocks";
import { parseStackConfig } from "../../planner/config";
import { buildPlan, type Plan } from "../../planner/plan";
import { applyRecorded, destroyRecorded, registerLocalStack, type StepResult } from "../support/harness";
import { localStackValues, startLocalHost, type LocalHost } from "../support/local-stack";
import { until } from "../support/until";

const BACKEND_KEY = "sk-local-teams-0123456789abcdefghijkl";
let host: LocalHost;
let plan: Plan;
let steps: StepResult[];
let recorded: typeof registered = [];
let caFile: string;

function teamsValues(): Record<string, unknown> {
  const values = localStackValues(host);
  const llamaPort = host.servingPort + 2;
  // The gateway takes serving.port; the usage exporter the port after; llama-server the next one.
  Object.assign(values.deployment as Record<string, unknown>, {
    containerName: `kimi-kit-local-teams-${host.servingPort}`,
    healthCommand: host.image.hasShell ? `wget -q -O /dev/null http://127.0.0.1:${llamaPort}/health` : undefined,
  });
  return {
    ...values,
    teams: [
      { name: "alpha", rpm: 100, tpm: 100000 },
      { name: "beta", rpm: 100 },
    ],
  };
}

const keyOf = (team: string) => teamKeyFor(`local-gateway-key-${team}`);

/** curl through the gateway's TLS (trusting its CA), returning the status. */
function viaGateway(path: string, key?: string): { status: number; body: string } {
  const args = [
    "-s",
    "--cacert",
    caFile,
    "-o",
    "-",
    "-w",
    "\n%{http_code}",
    `https://127.0.0.1:${host.servingPort}${path}`,
  ];
  if (key) args.push("-H", `Authorization: Bearer ${key}`);
  if (path.startsWith("/v1/chat"))
    args.push(
      "-H",
      "Content-Type: application/json",
      "--data-binary",
      JSON.stringify({ messages: [{ role: "user", content: "hi" }], max_tokens: 4 }),
    );
  const out = execFileSync("curl", args).toString();
  const cut = out.lastIndexOf("\n");
  return { status: Number(out.slice(cut + 1)), body: out.slice(0, cut) };
}

beforeAll(async () => {
  host = await startLocalHost();
  const values = teamsValues();
  plan = buildPlan(
    "local",
    parseStackConfig("local", { ...values, apiKey: { secure: "(set)" }, huggingFaceToken: { secure: "(set)" } }),
  );
  await installMocks(false);
  recorded = await registerLocalStack(host, values, BACKEND_KEY);
  steps = await applyRecorded(recorded, (line) => process.stdout.write(`  harness: ${line}\n`));
  const gateway = steps.find((step) => step.name === "local-gateway-haproxy");
  const encoded = /^ca_certificate_base64=(.+)$/m.exec(gateway?.stdout ?? "")?.[1];
  if (!encoded) throw new Error(`the gateway printed no CA: ${gateway?.stderr ?? "(no gateway step)"}`);
  caFile = join(host.dir, "gateway-ca.crt");
  writeFileSync(caFile, Buffer.from(encoded, "base64"));
}, 1_800_000);

afterAll(async () => {
  if (recorded.length > 0 && host) await destroyRecorded(recorded);
  await host?.stop();
}, 180_000);

describe("local stack with teams, carried out for real", () => {
  it("ran the replica, then the gateway, Prometheus and the token limiter, each step succeeding", () => {
    const order = steps.map((step) => step.name);
    for (const step of steps) expect(step.status, `${step.name}: ${step.stderr.slice(-800)}`).toBe(0);
    const at = (name: string) => order.indexOf(`local-${name}`);
    expect(at("host-server-container")).toBeGreaterThan(-1);
    expect(at("host-server-container")).toBeLessThan(at("host-usage"));
    expect(at("host-usage")).toBeLessThan(at("gateway-haproxy"));
    expect(at("gateway-haproxy")).toBeLessThan(at("monitoring-prometheus"));
    expect(at("monitoring-prometheus")).toBeLessThan(at("monitoring-token-limiter"));
  });

  it("serves each team's key through the gateway's TLS and refuses a missing or unknown key at the edge", () => {
    expect(viaGateway("/v1/chat/completions", keyOf("alpha")).status).toBe(200);
    expect(viaGateway("/v1/chat/completions", keyOf("beta")).status).toBe(200);
    expect(viaGateway("/v1/chat/completions").status).toBe(401);
    expect(viaGateway("/v1/chat/completions", "not-a-team-key").status).toBe(401);
    // The replicas' own key is not a team key: valid behind the gateway only.
    expect(viaGateway("/v1/chat/completions", BACKEND_KEY).status).toBe(401);
  });

  it("counts each team at the usage exporter, and Prometheus scrapes the replica, the counters and the gateway", async () => {
    const metricsPort = plan.fleetServing!.replicas[0]!.usage.metrics.port;
    const counters = execFileSync("curl", ["-s", `http://127.0.0.1:${metricsPort}/metrics`]).toString();
    expect(counters).toMatch(/kimi_team_requests_total\{team="alpha"\} [1-9]/);
    expect(counters).toMatch(/kimi_team_requests_total\{team="beta"\} [1-9]/);
    const prometheus = `http://${plan.fleetServing!.monitoring.listen.address}:${plan.fleetServing!.monitoring.listen.port}`;
    const jobs = await until(
      "every target up in Prometheus",
      async () => {
        const body = (await (await fetch(`${prometheus}/api/v1/targets`)).json()) as {
          data: { activeTargets: { labels: { job: string }; health: string }[] };
        };
        const targets = body.data.activeTargets;
        return targets.length === 3 && targets.every((target) => target.health === "up")
          ? targets.map((target) => target.labels.job).sort()
          : undefined;
      },
      { timeoutMs: 90_000, intervalMs: 1000 },
    );
    expect(jobs).toEqual(["gateway", "llama-server", "usage"]);
    // The dashboard the stack exports (its gateway and per-team spend panels too): every query has series here.
    for (const panel of plan.fleetServing!.monitoring.grafanaDashboard.panels) {
      for (const target of panel.targets) {
        await until(
          `a series for panel '${panel.title}'`,
          async () => {
            const body = (await (
              await fetch(`${prometheus}/api/v1/query?query=${encodeURIComponent(target.expr)}`)
            ).json()) as { data: { result: unknown[] } };
            return body.data.result.length > 0 ? true : undefined;
          },
          { timeoutMs: 90_000, intervalMs: 1000 },
        );
      }
    }
  }, 300_000);

  it("keeps the team keys out of every command: only their hashes reach the host", () => {
    const gatewayConfig = host.sshd.exec(`cat ${plan.fleetServing!.gateway.input.configDir}/teams.map`);
    for (const team of ["alpha", "beta"]) {
      expect(JSON.stringify(recorded.map((resource) => resource.inputs))).not.toContain(keyOf(team));
      expect(gatewayConfig).not.toContain(keyOf(team));
    }
    expect(readFileSync(caFile, "utf8")).toMatch(/^-----BEGIN CERTIFICATE-----/);
  });

  it("destroy stops the gateway, Prometheus, the limiter, the exporter and the container", async () => {
    const results = await destroyRecorded(recorded);
    for (const result of results) expect(result.status, `${result.name}: ${result.stderr}`).toBe(0);
    recorded = [];
    expect(() =>
      execFileSync("curl", [
        "-s",
        "--max-time",
        "5",
        "--cacert",
        caFile,
        `https://127.0.0.1:${host.servingPort}/health`,
      ]),
    ).toThrow();
    expect(
      host.sshd
        .exec(`docker ps -a --filter name=^${plan.config.deployment.containerName}$ --format '{{.Names}}'`)
        .trim(),
    ).toBe("");
  });
});
