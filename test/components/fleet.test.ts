/**
 * A fleet (stacks/Pulumi.cpu-ddr5-fleet.yaml: two replicas, two teams) deployed against Pulumi
 * mocks (an update): each replica's steps in order, llama-server on loopback behind the usage
 * exporter, the replicas' firewall admitting only the gateway host, the gateway and Prometheus on
 * the first replica, where the keys may and may not appear, and what removing a team changes (the
 * gateway's maps only: no replica resource). The gateway's HAProxy itself is proved for real in
 * test/scripts/gateway-netns.test.ts.
 */
import { createHash } from "node:crypto";
import { beforeAll, describe, expect, it } from "vitest";
import * as pulumi from "@pulumi/pulumi";
import { readStackValues } from "../../planner/stack-file";
import { parseStackConfig } from "../../planner/config";
import { buildPlan } from "../../planner/plan";
import {
  edgeRecorder,
  GENERATED_KEY,
  HOST_KEY,
  installMocks,
  isSecret,
  promiseOf,
  registered,
  settle,
  teamKeyFor,
  type Edge,
} from "./mocks";
import { deployStack, LlmDeployment } from "../../components/llm-deployment";

beforeAll(() => installMocks(false));

/** A secret input as the mock monitor holds it ({ <secret signature>: …, value }), unwrapped. */
const plain = (value: unknown): unknown =>
  value !== null && typeof value === "object" && "value" in value ? (value as { value: unknown }).value : value;

const STACK = "cpu-ddr5-fleet";

function fleetValues(teams?: unknown[]): Record<string, unknown> {
  const raw = structuredClone(readStackValues(STACK));
  for (const host of raw.hosts as { ssh: Record<string, unknown> }[]) host.ssh.hostPublicKey = HOST_KEY;
  if (teams) raw.teams = teams;
  return raw;
}

/** Deploys the fleet under `name`; the resources it registered, by name suffix, and their edges. */
async function deployFleet(name: string, raw: Record<string, unknown>) {
  const { transformation, edges } = edgeRecorder();
  const config = parseStackConfig(STACK, raw);
  const deployment = new LlmDeployment(name, { stack: STACK, config }, { transformations: [transformation] });
  await promiseOf(deployment.replicas);
  await settle();
  const mine = registered.filter((resource) => resource.name.startsWith(`${name}-`));
  const input = (suffix: string) => {
    const found = mine.find((resource) => resource.name === `${name}-${suffix}`);
    if (!found)
      throw new Error(`no resource ${name}-${suffix}; have ${mine.map((resource) => resource.name).join(", ")}`);
    return found.inputs;
  };
  const edge = (suffix: string): Edge => {
    const found = edges.find((candidate) => candidate.name === `${name}-${suffix}`);
    if (!found) throw new Error(`no edge ${name}-${suffix}`);
    return found;
  };
  return { deployment, mine, input, edge, plan: buildPlan(STACK, config) };
}

describe(`${STACK}: two replicas and two teams behind one gateway`, () => {
  let d: Awaited<ReturnType<typeof deployFleet>>;
  beforeAll(async () => {
    d = await deployFleet("fl", fleetValues());
  });

  it("registers one Replica per host, one Gateway and one Monitoring", () => {
    const components = d.mine
      .filter((resource) => resource.type.startsWith("kimi-kit:"))
      .map((resource) => `${resource.type} ${resource.name}`);
    expect(components).toEqual(
      expect.arrayContaining([
        "kimi-kit:fleet:Replica fl-replica-1",
        "kimi-kit:fleet:Replica fl-replica-2",
        "kimi-kit:serving:Gateway fl-gateway",
        "kimi-kit:serving:Monitoring fl-monitoring",
        "kimi-kit:serving:LlamaServer fl-replica-1-server",
        "kimi-kit:serving:LlamaServer fl-replica-2-server",
      ]),
    );
    // No front door: the gateway is the only public listener.
    expect(d.mine.some((resource) => resource.type === "kimi-kit:serving:FrontDoor")).toBe(false);
  });

  it("runs each replica's steps on its own host, llama-server on loopback behind the usage exporter on the private address", () => {
    for (const [id, ssh, address] of [
      ["replica-1", "203.0.113.11", "10.0.0.11"],
      ["replica-2", "203.0.113.12", "10.0.0.12"],
    ] as const) {
      const connection = plain(d.input(`${id}-usage`).connection) as { host: string };
      expect(connection.host).toBe(ssh);
      // docker-cli renders llama-server's args into a command line, docker-provider into `command`.
      const container = JSON.stringify(d.input(`${id}-server-container`));
      expect(
        container.includes("--host 127.0.0.1 --port 8082") ||
          container.includes('"--host","127.0.0.1","--port","8082"'),
      ).toBe(true);
      const usage = String(d.input(`${id}-usage`).create);
      expect(usage).toContain(`--listen ${address}:8081 --upstream 127.0.0.1:8082 --metrics ${address}:9101`);
      // The firewall admits only the gateway host (replica-1's private address) to both exporter ports.
      const firewall = String(d.input(`${id}-firewall`).create);
      expect(firewall).toContain("--allow 8081=10.0.0.11/32 --allow 9101=10.0.0.11/32");
    }
  });

  it("orders each replica: prep → firewall → shards → server → usage exporter → smoke; the gateway after every replica", () => {
    expect(d.edge("replica-2-firewall").dependsOn).toContain("fl-replica-2-prep-tune");
    expect(d.edge("replica-2-shards-fetch").dependsOn).toEqual(expect.arrayContaining(["fl-replica-2-firewall"]));
    expect(d.edge("replica-2-usage").dependsOn).toEqual(["fl-replica-2-server-container"]);
    expect(d.edge("gateway-firewall").dependsOn).toEqual(
      expect.arrayContaining(["fl-replica-1-usage", "fl-replica-2-usage"]),
    );
    expect(d.edge("gateway-haproxy").dependsOn).toEqual(["fl-gateway-firewall"]);
    expect(d.edge("monitoring-prometheus").dependsOn).toEqual(["fl-gateway-haproxy"]);
  });

  it("configures HAProxy on replica-1 with both replicas' exporters, each team's key hash and limit", () => {
    const step = d.input("gateway-haproxy");
    expect((plain(step.connection) as { host: string }).host).toBe("203.0.113.11");
    const create = String(step.create);
    expect(create).toContain("server replica-1 10.0.0.11:8081");
    expect(create).toContain("server replica-2 10.0.0.12:8081");
    expect(create).toContain("bind 0.0.0.0:8080 ssl");
    for (const team of ["platform", "research"]) {
      const hash = createHash("sha256")
        .update(teamKeyFor(`fl-gateway-key-${team}`))
        .digest("hex");
      expect(create).toContain(`${hash} ${team}`);
    }
    expect(create).toMatch(/platform 30\b/);
    expect(create).toMatch(/research 10\b/);
    expect(create).toContain("--tls internal-ca --san 203.0.113.11");
    // The public port for the stack's CIDRs, the exporter for the gateway host alone.
    expect(String(d.input("gateway-firewall").create)).toContain(
      "--allow 8080=198.51.100.0/24 --allow 8405=10.0.0.11/32",
    );
  });

  it("keeps every key out of commands: team keys only as hashes, the replicas' key only on stdin", async () => {
    const teamKeys = await promiseOf(d.deployment.teamApiKeys);
    expect(Object.keys(teamKeys ?? {}).sort()).toEqual(["platform", "research"]);
    expect(await isSecret(d.deployment.teamApiKeys)).toBe(true);
    expect(await isSecret(d.deployment.apiKey)).toBe(true);
    const everything = JSON.stringify(d.mine.map((resource) => resource.inputs));
    for (const key of Object.values(teamKeys!)) expect(everything).not.toContain(key);
    const withoutStdin = JSON.stringify(d.mine.map((resource) => ({ ...resource.inputs, stdin: undefined })));
    expect(withoutStdin).not.toContain(GENERATED_KEY);
    expect(String(plain(d.input("gateway-haproxy").stdin))).toMatch(new RegExp(`^${GENERATED_KEY}\\n`));
    expect(String(plain(d.input("monitoring-prometheus").stdin))).toBe(`${GENERATED_KEY}\n`);
  });

  it("exports the gateway's https endpoint, the fleet's cost and each replica's smoke timings", async () => {
    expect(await promiseOf(d.deployment.endpoint)).toBe("https://203.0.113.11:8080/v1");
    expect(await promiseOf(d.deployment.monthlyCostUsd)).toBe(d.plan.fleet!.cost!.monthlyUsd);
    const replicas = await promiseOf(d.deployment.replicas);
    expect(replicas?.map((replica) => [replica.id, replica.listen, replica.measuredDecodeTokensPerSecond])).toEqual([
      ["replica-1", "127.0.0.1:8082", 9.25],
      ["replica-2", "127.0.0.1:8082", 9.25],
    ]);
  });

  it("Prometheus scrapes both replicas through their exporters with the replicas' key file, and both exporters", () => {
    const create = String(d.input("monitoring-prometheus").create);
    for (const target of ["10.0.0.11:8081", "10.0.0.12:8081", "10.0.0.11:9101", "10.0.0.12:9101", "10.0.0.11:8405"])
      expect(create).toContain(target);
    expect(create).toContain("credentials_file: /etc/kimi-kit/monitoring/kimi-kit-cpu-ddr5-fleet/bearer-token");
  });

  it("runs the token limiter beside Prometheus for the team with a tpm, on the gateway's own files", () => {
    const gatewayDir = "/etc/kimi-kit/gateway/kimi-kit-cpu-ddr5-fleet";
    // Only platform has a tokens-per-minute limit in the stack.
    expect(String(d.input("gateway-haproxy").create)).toMatch(
      /printf '%s' 'platform 60000\n' > \S+\/token-limits\.map/,
    );
    const create = String(d.input("monitoring-token-limiter").create);
    expect(create).toContain(
      `--prometheus http://127.0.0.1:9190 --limits ${gatewayDir}/token-limits.map --socket ${gatewayDir}/admin.sock --blocked-map ${gatewayDir}/tokens-blocked.map --interval 10`,
    );
    expect(d.edge("monitoring-token-limiter").dependsOn).toEqual(["fl-monitoring-prometheus"]);
  });

  it("exports a Grafana dashboard with a spend panel per team", async () => {
    const dashboard = JSON.parse((await promiseOf(d.deployment.grafanaDashboard))!) as { panels: { title: string }[] };
    for (const team of ["platform", "research"])
      expect(dashboard.panels.some((panel) => panel.title.includes(team))).toBe(true);
  });
});

it("removing a team changes only the gateway's maps: no replica resource changes, the gateway is updated in place", async () => {
  const both = await deployFleet("rv2", fleetValues());
  const one = await deployFleet("rv1", fleetValues([{ name: "platform", rpm: 30, monthlyBudgetUsd: 150 }]));
  const replicaInputs = (deployment: typeof both, prefix: string) =>
    deployment.mine
      .filter((resource) => resource.name.startsWith(`${prefix}-replica-`))
      .map((resource) =>
        JSON.stringify({ name: resource.name.slice(prefix.length), type: resource.type, inputs: resource.inputs })
          .replaceAll(`${prefix}-`, "X-")
          // ownedStepCommands' owner token is derived from the step's name, which carries the prefix.
          .replace(/\b[0-9a-f]{32}\b/g, "OWNER"),
      )
      .sort();
  expect(replicaInputs(one, "rv1")).toEqual(replicaInputs(both, "rv2"));
  expect(replicaInputs(one, "rv1").length).toBeGreaterThan(10);
  // Same triggers (no replacement: a reload), other maps; research's key resource is gone.
  expect(one.input("gateway-haproxy").triggers).toEqual(both.input("gateway-haproxy").triggers);
  expect(String(one.input("gateway-haproxy").create)).not.toContain(" research");
  expect(String(both.input("gateway-haproxy").create)).toContain(" research");
  expect(one.mine.some((resource) => resource.name === "rv1-gateway-key-research")).toBe(false);
});

it("replicas: 2 on one `host` is refused by an update (the gateway cannot reach them), before any resource", async () => {
  const raw = structuredClone(readStackValues("cpu-ddr5")) as Record<string, { ssh?: Record<string, unknown> }>;
  raw.host!.ssh!.hostPublicKey = HOST_KEY;
  const values = { ...raw, fleet: { replicas: 2, tokensPerAnswer: 400 } };
  await settle();
  const before = registered.length;
  expect(() => deployStack("cpu-ddr5", values, { apiKey: pulumi.secret("sk-x-0123456789") }, "one-host")).toThrow(
    /replicas 2 on one `host` is planned, not deployable: list the replicas under kimi-kit:hosts/,
  );
  await settle();
  expect(registered.length).toBe(before);
});
