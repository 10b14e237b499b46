/**
 * The front door's wiring against Pulumi mocks (an update): a public listener gets the firewall
 * step, then HAProxy, before the smoke step; llama-server's smoke request goes to its loopback
 * backend port; the endpoint is https and the internal CA's certificate is an output; with TLS
 * from secrets the key travels only on stdin, as a secret. A loopback stack gets none of it.
 */
import { beforeAll, describe, expect, it } from "vitest";
import * as pulumi from "@pulumi/pulumi";
import { readStackValues } from "../../planner/stack-file";
import { parseStackConfig, type StackConfig } from "../../planner/config";
import { buildPlan } from "../../planner/plan";
import { edgeRecorder, HOST_KEY, promiseOf, settle, type Edge } from "./mocks";
import { LlmDeployment } from "../../components/llm-deployment";
import { caCertificateOf, tlsSecretsPem } from "../../components/serving/front-door";
import { remoteScript } from "../../components/host/host-prep";

const CA_PEM = "-----BEGIN CERTIFICATE-----\nMIIBfakeCAcertificateForMockTests0000\n-----END CERTIFICATE-----\n";
const FRONT_DOOR_STDOUT = `front_door=0.0.0.0:8443\ntls_source=internal-ca\ncertificate_sha256=AB\nca_certificate_base64=${Buffer.from(CA_PEM).toString("base64")}\nchanged=yes\n`;
const SMOKE_STDOUT = '{"timings":{"prompt_per_second":41.5,"predicted_per_second":9.25}}\n';
const TLS_CERT = "-----BEGIN CERTIFICATE-----\nMIIBteamCertificate\n-----END CERTIFICATE-----\n";
const TLS_KEY = "-----BEGIN PRIVATE KEY-----\nMIGHteamPrivateKeyNeverInArgs\n-----END PRIVATE KEY-----\n";
const API_KEY = "sk-front-door-test-key-0123456789abcdef";

interface Registered {
  type: string;
  name: string;
  inputs: Record<string, unknown>;
}
const registered: Registered[] = [];

beforeAll(() =>
  pulumi.runtime.setMocks(
    {
      newResource(args) {
        registered.push({ type: args.type, name: args.name, inputs: args.inputs });
        const state: Record<string, unknown> = { ...args.inputs };
        if (args.type === "command:remote:Command") {
          // front-door.sh prints the CA certificate only for the internal CA.
          const proxyStdout = String(args.inputs.create).includes("--tls secrets")
            ? "tls_source=secrets\nchanged=yes\n"
            : FRONT_DOOR_STDOUT;
          state.stdout = args.name.endsWith("-front-door-proxy")
            ? proxyStdout
            : args.name.endsWith("-smoke")
              ? SMOKE_STDOUT
              : "ok\n";
        }
        if (args.type === "docker:index/remoteImage:RemoteImage") state.imageId = args.inputs.name;
        return { id: `${args.name}-id`, state };
      },
      call: (args) => args.inputs,
    },
    "kimi-kit",
    "test",
    false,
  ),
);

function stackConfig(serving: Record<string, unknown>, extra: Record<string, unknown> = {}): StackConfig {
  const raw = structuredClone(readStackValues("cpu-ddr5"));
  (raw.host as { ssh: Record<string, unknown> }).ssh.hostPublicKey = HOST_KEY;
  raw.serving = { ...(raw.serving as Record<string, unknown>), ...serving };
  return parseStackConfig("cpu-ddr5", { ...raw, ...extra });
}

async function deploy(
  name: string,
  config: StackConfig,
  secrets: { tlsCertificate?: string; tlsPrivateKey?: string } = {},
) {
  const { transformation, edges } = edgeRecorder();
  const deployment = new LlmDeployment(
    name,
    {
      stack: "cpu-ddr5",
      config,
      engine: "docker-cli",
      apiKey: pulumi.secret(API_KEY),
      tlsCertificate: secrets.tlsCertificate === undefined ? undefined : pulumi.secret(secrets.tlsCertificate),
      tlsPrivateKey: secrets.tlsPrivateKey === undefined ? undefined : pulumi.secret(secrets.tlsPrivateKey),
    },
    { transformations: [transformation] },
  );
  await promiseOf(pulumi.all([deployment.urn, deployment.measuredDecodeTokensPerSecond, deployment.caCertificate]));
  await settle();
  const mine = registered.filter((resource) => resource.name === name || resource.name.startsWith(`${name}-`));
  const input = (suffix: string) => {
    const found = mine.find((resource) => resource.name === `${name}-${suffix}`);
    if (!found) throw new Error(`no resource ${name}-${suffix}; have ${mine.map((r) => r.name).join(", ")}`);
    return found.inputs;
  };
  const edge = (suffix: string): Edge => edges.find((candidate) => candidate.name === `${name}-${suffix}`)!;
  return { deployment, mine, input, edge };
}

describe("a public listener with the internal CA", () => {
  const name = "fd-ca";
  const config = stackConfig({
    bindAddress: "0.0.0.0",
    port: 8443,
    allowedCidrs: ["203.0.113.0/24", "198.51.100.0/24"],
  });
  let d: Awaited<ReturnType<typeof deploy>>;
  beforeAll(async () => {
    d = await deploy(name, config);
  });

  it("registers the FrontDoor component with a firewall step and a proxy step under it", () => {
    expect(
      d.mine
        .filter((r) => r.name.startsWith(`${name}-front-door`))
        .map((r) => `${r.type} ${r.name}`)
        .sort(),
    ).toEqual(
      [
        `kimi-kit:serving:FrontDoor ${name}-front-door`,
        `command:remote:Command ${name}-front-door-firewall`,
        `command:remote:Command ${name}-front-door-proxy`,
      ].sort(),
    );
    expect(d.edge("front-door").parent).toBe(name);
    expect(d.edge("front-door-firewall").parent).toBe(`${name}-front-door`);
    expect(d.edge("front-door-proxy").parent).toBe(`${name}-front-door`);
  });

  it("orders prep → firewall → proxy → smoke", () => {
    expect(d.edge("front-door-firewall").dependsOn).toEqual([`${name}-prep-tune`]);
    expect(d.edge("front-door-proxy").dependsOn).toEqual([`${name}-front-door-firewall`]);
    expect(d.edge("smoke").dependsOn).toEqual([`${name}-server-container`, `${name}-front-door-proxy`]);
  });

  it("admits only the allowed CIDRs in the kit's own table, and removes that table on destroy", () => {
    const firewall = d.input("front-door-firewall");
    expect(String(firewall.create)).toContain(
      remoteScript("firewall.sh", [
        "apply",
        "--table",
        "kimi_kit_cpu_ddr5",
        "--allow",
        "8443=203.0.113.0/24,198.51.100.0/24",
      ]),
    );
    expect(String(firewall.delete)).toContain(remoteScript("firewall.sh", ["remove", "--table", "kimi_kit_cpu_ddr5"]));
  });

  it("runs HAProxy on the public port in front of llama-server's loopback port, with the host's address on the certificate", () => {
    const proxy = d.input("front-door-proxy");
    expect(String(proxy.create)).toContain(
      remoteScript("front-door.sh", [
        "up",
        "--name",
        "kimi-kit-cpu-ddr5",
        "--listen",
        "0.0.0.0",
        "--port",
        "8443",
        "--backend-address",
        "127.0.0.1",
        "--backend-port",
        "8444",
        "--tls",
        "internal-ca",
        "--san",
        "203.0.113.10",
      ]),
    );
    expect(String(proxy.create)).not.toContain("--web-ui");
    expect(String(proxy.delete)).toContain(remoteScript("front-door.sh", ["down", "--name", "kimi-kit-cpu-ddr5"]));
    expect(proxy.stdin).toBeUndefined();
  });

  it("smoke-tests llama-server on its loopback backend port", () => {
    const smoke = String(d.input("smoke").create);
    expect(smoke).toContain("http://127.0.0.1:8444/health");
    expect(smoke).not.toContain(":8443/");
  });

  it("exports an https endpoint and the CA certificate", async () => {
    expect(await promiseOf(d.deployment.endpoint)).toBe("https://203.0.113.10:8443/v1");
    expect(await promiseOf(d.deployment.caCertificate)).toBe(CA_PEM);
  });
});

describe("a public listener with TLS from secrets", () => {
  const name = "fd-secrets";
  let d: Awaited<ReturnType<typeof deploy>>;
  beforeAll(async () => {
    const config = stackConfig(
      {
        bindAddress: "198.51.100.7",
        port: 443,
        backendPort: 18080,
        allowedCidrs: ["10.0.0.0/8"],
        tls: { source: "secrets" },
        webUi: true,
      },
      { tlsCertificate: { secure: "(set)" }, tlsPrivateKey: { secure: "(set)" } },
    );
    d = await deploy(name, config, { tlsCertificate: TLS_CERT, tlsPrivateKey: TLS_KEY });
  });

  it("hands the certificate and key to front-door.sh on stdin only, as a secret", async () => {
    const proxy = d.input("front-door-proxy");
    expect(String(proxy.create)).toContain("--tls secrets");
    expect(String(proxy.create)).toContain(
      "--listen 198.51.100.7 --port 443 --backend-address 127.0.0.1 --backend-port 18080",
    );
    expect(String(proxy.create)).toContain("--web-ui");
    // The mock monitor sees a secret as Pulumi's secret envelope around the value.
    expect(proxy.stdin).toEqual({
      [pulumi.runtime.specialSigKey]: pulumi.runtime.specialSecretSig,
      value: tlsSecretsPem(TLS_CERT, TLS_KEY),
    });
    const withoutStdin = d.mine.map((resource) => ({ ...resource.inputs, stdin: undefined }));
    expect(JSON.stringify(withoutStdin)).not.toContain("teamPrivateKey");
  });

  it("exports an https endpoint on the bind address and no CA certificate", async () => {
    expect(await promiseOf(d.deployment.endpoint)).toBe("https://198.51.100.7:443/v1");
    expect(await promiseOf(d.deployment.caCertificate)).toBeUndefined();
    expect(String(d.input("smoke").create)).toContain("http://127.0.0.1:18080/health");
  });
});

describe("a loopback listener", () => {
  it("has no front door, no firewall, an http endpoint and no CA certificate", async () => {
    const d = await deploy("fd-loop", stackConfig({}));
    expect(d.mine.some((resource) => resource.name.includes("front-door"))).toBe(false);
    expect(await promiseOf(d.deployment.endpoint)).toBe("http://127.0.0.1:8080/v1");
    expect(await promiseOf(d.deployment.caCertificate)).toBeUndefined();
    expect(d.edge("smoke").dependsOn).toEqual(["fd-loop-server-container"]);
  });
});

describe("caCertificateOf", () => {
  it("reads the CA certificate from front-door.sh's stdout, and nothing that is not one", () => {
    expect(caCertificateOf(FRONT_DOOR_STDOUT)).toBe(CA_PEM);
    expect(caCertificateOf("tls_source=secrets\n")).toBeUndefined();
    expect(
      caCertificateOf(`ca_certificate_base64=${Buffer.from("not a certificate").toString("base64")}\n`),
    ).toBeUndefined();
    expect(caCertificateOf(undefined)).toBeUndefined();
  });
});

it("the plan the tests deploy fits (so the refusal path is not what they exercise)", () => {
  expect(buildPlan("cpu-ddr5", stackConfig({ bindAddress: "0.0.0.0", allowedCidrs: ["10.0.0.0/8"] })).fits).toBe(true);
});
