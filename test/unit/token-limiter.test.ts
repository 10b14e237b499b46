/**
 * The token limiter's pure parts (tools/token-limiter.ts): the limits file, Prometheus' answer, the
 * teams over their limit, HAProxy's `show map` answer; and the gateway configuration it acts on
 * (the blocked map checked at the edge, the admin socket, the token limits file). The loop itself
 * runs against real HAProxy, Prometheus and llama-server in test/scripts/monitoring.test.ts.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { GATEWAY_FILES, haproxyGatewayConfig, keySha256, type GatewayInput } from "../../planner/gateway";
import { ConfigError } from "../../planner/errors";
import { parseShowMap, parseTeamNumbers, teamsOverLimit, usedByTeam } from "../../tools/token-limiter";

describe("token limiter arithmetic", () => {
  it("reads `<team> <number>` lines, skipping blanks and comments, and refuses anything else", () => {
    expect([...parseTeamNumbers("# limits\nalpha 60000\n\nbeta 1500\n")]).toEqual([
      ["alpha", 60000],
      ["beta", 1500],
    ]);
    expect(() => parseTeamNumbers("alpha sixty\n")).toThrow(/not a '<team> <number>' line/);
  });

  it("blocks a team at or over its limit; a team with no series has used nothing", () => {
    const limits = new Map([
      ["alpha", 100],
      ["beta", 100],
      ["gamma", 100],
    ]);
    expect(
      teamsOverLimit(
        limits,
        new Map([
          ["alpha", 100],
          ["beta", 99.5],
        ]),
      ),
    ).toEqual(["alpha"]);
    // A team without a limit is never blocked, whatever it used.
    expect(teamsOverLimit(new Map([["beta", 10]]), new Map([["alpha", 1e9]]))).toEqual([]);
  });

  it("reads Prometheus' vector answer by team and refuses an error answer", () => {
    const body = {
      status: "success",
      data: {
        resultType: "vector",
        result: [
          { metric: { team: "alpha" }, value: [1, "1234.5"] },
          { metric: {}, value: [1, "7"] },
        ],
      },
    };
    expect([...usedByTeam(body)]).toEqual([["alpha", 1234.5]]);
    expect(() => usedByTeam({ status: "error", error: "bad query" })).toThrow(/Prometheus answered/);
  });

  it("reads HAProxy's `show map` lines (`<id> <key> <value>`)", () => {
    expect([...parseShowMap("0x55d0c1f0 alpha 1\n0x55d0c2a0 beta 1\n\n")]).toEqual(["alpha", "beta"]);
    expect(parseShowMap("").size).toBe(0);
  });
});

const base: GatewayInput = {
  stack: "limits",
  name: "limits",
  configDir: "/etc/kimi-kit/gateway/limits",
  listen: { address: "0.0.0.0", port: 8443 },
  backends: [{ name: "r1", address: "10.0.0.11", port: 8081 }],
  teams: [
    { name: "alpha", keySha256: keySha256("a"), requestsPerMinute: 30, tokensPerMinute: 60000 },
    { name: "beta", keySha256: keySha256("b"), requestsPerMinute: 10 },
  ],
  stats: { address: "10.0.0.11", port: 8405 },
};

describe("the gateway's side of token limits", () => {
  it("writes token limits only for the teams that have one, refuses 429 from the blocked map, and opens the admin socket in the config folder", () => {
    const files = haproxyGatewayConfig(base);
    expect(files.tokenLimitsMap).toBe("alpha 60000\n");
    expect(files.config).toContain(
      `acl over_tokens var(txn.team),map(/etc/kimi-kit/gateway/limits/${GATEWAY_FILES.tokensBlockedMap}) -m found`,
    );
    expect(files.config).toContain("stats socket /etc/kimi-kit/gateway/limits/admin.sock mode 600 level admin");
  });

  const hasHaproxy = spawnSync("haproxy", ["-v"]).status === 0;
  it.skipIf(!hasHaproxy)(
    `HAProxy accepts the configuration (haproxy -c) with the maps in place${hasHaproxy ? "" : " (skipped: no haproxy)"}`,
    () => {
      const dir = mkdtempSync(join(tmpdir(), "kimi-kit-limits-"));
      try {
        const files = haproxyGatewayConfig({
          ...base,
          configDir: dir,
          listen: { address: "127.0.0.1", port: 18443 },
          stats: { address: "127.0.0.1", port: 18405 },
        });
        writeFileSync(join(dir, "haproxy.cfg"), files.config);
        for (const [name, text] of [
          [GATEWAY_FILES.teamsMap, files.teamsMap],
          [GATEWAY_FILES.limitsMap, files.limitsMap],
          [GATEWAY_FILES.tokensBlockedMap, ""],
          [GATEWAY_FILES.backendKeyMap, "key k\n"],
        ] as const)
          writeFileSync(join(dir, name), text);
        spawnSync("openssl", [
          "req",
          "-x509",
          "-newkey",
          "ec",
          "-pkeyopt",
          "ec_paramgen_curve:P-256",
          "-nodes",
          "-subj",
          "/CN=t",
          "-keyout",
          join(dir, "k.pem"),
          "-out",
          join(dir, "c.pem"),
        ]);
        writeFileSync(
          join(dir, GATEWAY_FILES.pem),
          spawnSync("cat", [join(dir, "c.pem"), join(dir, "k.pem")], { encoding: "utf8" }).stdout,
        );
        const check = spawnSync("haproxy", ["-c", "-f", join(dir, "haproxy.cfg")], { encoding: "utf8" });
        expect(check.status, check.stderr).toBe(0);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  );

  it("refuses a tokens-per-minute limit that is not a whole number ≥ 1, naming the team's field", () => {
    const bad = { ...base, teams: [{ ...base.teams[0]!, tokensPerMinute: 0 }] };
    expect(() => haproxyGatewayConfig(bad)).toThrow(ConfigError);
    expect(() => haproxyGatewayConfig(bad)).toThrow(
      /teams\[0\]\.tokensPerMinute: found 0; allowed: a whole number ≥ 1, or none/,
    );
  });
});
