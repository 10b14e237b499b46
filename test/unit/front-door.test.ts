/**
 * The front door's config (planner/config.ts serving.*) and plan (planner/front-door.ts): a public
 * listener is refused without the CIDRs its firewall admits, with a /0 unless allowPublic, with TLS
 * from secrets that are not set, and with a backend port equal to the public one.
 */
import { describe, expect, it } from "vitest";
import { parseStackConfig } from "../../planner/config";
import { ConfigError } from "../../planner/errors";
import { readStackValues } from "../../planner/stack-file";
import {
  backendPortOf,
  endpointScheme,
  firewallApplyArgv,
  frontDoorPlan,
  frontDoorUpArgv,
  isPublicListener,
  llamaServerListen,
} from "../../planner/front-door";

function raw(serving: Record<string, unknown>, extra: Record<string, unknown> = {}): Record<string, unknown> {
  const values = structuredClone(readStackValues("cpu-ddr5"));
  return { ...values, serving: { ...(values.serving as Record<string, unknown>), ...serving }, ...extra };
}

function problems(serving: Record<string, unknown>, extra: Record<string, unknown> = {}): string[] {
  try {
    parseStackConfig("fd", raw(serving, extra));
    return [];
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    return error.message
      .split("\n")
      .slice(1)
      .map((line) => line.trim());
  }
}

describe("serving config for a public listener", () => {
  it("defaults: loopback, no CIDRs, internal CA, web UI off", () => {
    const config = parseStackConfig("fd", raw({}));
    expect(config.serving).toMatchObject({
      bindAddress: "127.0.0.1",
      allowedCidrs: [],
      allowPublic: false,
      tls: { source: "internal-ca" },
      webUi: false,
    });
    expect(config.serving.backendPort).toBeUndefined();
    const omitted = structuredClone(readStackValues("cpu-ddr5"));
    delete omitted.serving;
    expect(parseStackConfig("fd", omitted).serving).toMatchObject({
      allowedCidrs: [],
      tls: { source: "internal-ca" },
      webUi: false,
    });
  });

  it("refuses a public bind address without allowedCidrs", () => {
    for (const bindAddress of ["0.0.0.0", "192.0.2.10"]) {
      const found = problems({ bindAddress });
      expect(found).toHaveLength(1);
      expect(found[0]).toMatch(/serving\.allowedCidrs/);
      expect(found[0]).toMatch(/allowed: with bindAddress/);
    }
  });

  it("refuses a /0 unless allowPublic is true, and malformed CIDRs always", () => {
    expect(problems({ bindAddress: "0.0.0.0", allowedCidrs: ["0.0.0.0/0"] }).join("\n")).toMatch(
      /serving\.allowedCidrs\[0\].*narrower than \/0.*serving\.allowPublic: true/,
    );
    expect(problems({ bindAddress: "0.0.0.0", allowedCidrs: ["0.0.0.0/0"], allowPublic: true })).toEqual([]);
    expect(problems({ bindAddress: "0.0.0.0", allowedCidrs: ["10.0.0.1/8"] }).join("\n")).toMatch(
      /the network address of the block, here 10\.0\.0\.0\/8/,
    );
    expect(problems({ bindAddress: "0.0.0.0", allowedCidrs: ["10.0.0.0/33"] })).toHaveLength(1);
    expect(problems({ allowedCidrs: ["nope"] })).toHaveLength(1);
  });

  it("refuses TLS from secrets when the secrets are not set", () => {
    const found = problems({ bindAddress: "0.0.0.0", allowedCidrs: ["10.0.0.0/8"], tls: { source: "secrets" } }).join(
      "\n",
    );
    expect(found).toMatch(/tlsCertificate.*serving\.tls\.source "secrets"/);
    expect(found).toMatch(/tlsPrivateKey.*serving\.tls\.source "secrets"/);
    expect(
      problems(
        { bindAddress: "0.0.0.0", allowedCidrs: ["10.0.0.0/8"], tls: { source: "secrets" } },
        { tlsCertificate: { secure: "x" }, tlsPrivateKey: { secure: "y" } },
      ),
    ).toEqual([]);
    expect(problems({}, { tlsPrivateKey: "-----BEGIN PRIVATE KEY-----" }).join("\n")).toMatch(
      /tlsPrivateKey.*only an encrypted value/,
    );
    expect(problems({ tls: { source: "self-signed" } })).toHaveLength(1);
  });

  it("refuses a backend port equal to the public one", () => {
    expect(
      problems({ bindAddress: "0.0.0.0", allowedCidrs: ["10.0.0.0/8"], port: 8443, backendPort: 8443 }).join("\n"),
    ).toMatch(/serving\.backendPort.*other than serving\.port/);
  });
});

describe("the front door plan", () => {
  const serving = (values: Record<string, unknown>) => parseStackConfig("fd", raw(values)).serving;

  it("has none for a loopback listener: llama-server keeps its address and port, http", () => {
    const loopback = serving({ port: 8080 });
    expect(isPublicListener(loopback)).toBe(false);
    expect(frontDoorPlan("fd", loopback)).toBeUndefined();
    expect(llamaServerListen(loopback)).toEqual({ address: "127.0.0.1", port: 8080 });
    expect(endpointScheme(loopback)).toBe("http");
  });

  it("moves llama-server to loopback behind a public listener, next to the public port unless set", () => {
    const open = serving({ bindAddress: "0.0.0.0", port: 8080, allowedCidrs: ["10.0.0.0/8"] });
    expect(llamaServerListen(open)).toEqual({ address: "127.0.0.1", port: 8081 });
    expect(backendPortOf({ port: 65535 })).toBe(65534);
    expect(
      llamaServerListen(
        serving({ bindAddress: "192.0.2.5", port: 443, backendPort: 9000, allowedCidrs: ["10.0.0.0/8"] }),
      ),
    ).toEqual({ address: "127.0.0.1", port: 9000 });
    expect(endpointScheme(open)).toBe("https");
  });

  it("renders the scripts' arguments", () => {
    const door = frontDoorPlan(
      "team/prod",
      serving({ bindAddress: "0.0.0.0", port: 8443, allowedCidrs: ["10.0.0.0/8", "192.0.2.0/24"], webUi: true }),
    )!;
    expect(door).toMatchObject({
      name: "kimi-kit-team-prod",
      firewallTable: "kimi_kit_team_prod",
      backendPort: 8444,
      tlsSource: "internal-ca",
    });
    expect(firewallApplyArgv(door)).toEqual([
      "apply",
      "--table",
      "kimi_kit_team_prod",
      "--allow",
      "8443=10.0.0.0/8,192.0.2.0/24",
    ]);
    expect(frontDoorUpArgv(door, ["llm.example.com", "2001:db8::1", "llm.example.com"])).toEqual([
      "up",
      "--name",
      "kimi-kit-team-prod",
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
      "llm.example.com",
      "--web-ui",
    ]);
  });
});
