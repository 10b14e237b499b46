/** planner/gateway.ts: the HAProxy configuration and maps of the gateway, and the input it refuses. */
import { describe, expect, it } from "vitest";
import { ConfigError } from "../../planner/errors";
import { gatewayApplyArgv, haproxyGatewayConfig, keySha256, type GatewayInput } from "../../planner/gateway";
import { configProblems } from "../support/config-errors";

const input = (patch: Partial<GatewayInput> = {}): GatewayInput => ({
  stack: "prod-stack",
  name: "prod",
  configDir: "/etc/kimi-kit/gateway/prod",
  listen: { address: "203.0.113.10", port: 443 },
  backends: [
    { name: "r1", address: "10.0.0.2", port: 8080 },
    { name: "r2", address: "10.0.0.3", port: 8080 },
  ],
  teams: [
    { name: "search", keySha256: keySha256("key-search"), requestsPerMinute: 60 },
    { name: "support", keySha256: keySha256("key-support"), requestsPerMinute: 600 },
  ],
  stats: { address: "127.0.0.1", port: 8404 },
  ...patch,
});

describe("haproxyGatewayConfig", () => {
  it("stores key hashes and limits in the maps, never the keys", () => {
    const files = haproxyGatewayConfig(input());
    expect(files.teamsMap).toBe(`${keySha256("key-search")} search\n${keySha256("key-support")} support\n`);
    expect(files.limitsMap).toBe("search 60\nsupport 600\n");
    expect(files.config + files.teamsMap + files.limitsMap).not.toContain("key-search");
  });

  it("terminates TLS, checks keys at the edge, limits per team, balances with health checks and exports metrics", () => {
    const { config } = haproxyGatewayConfig(input());
    expect(config).toContain("bind 203.0.113.10:443 ssl crt /etc/kimi-kit/gateway/prod/server.pem alpn http/1.1");
    expect(config).toContain("digest(sha256),hex,lower,map(/etc/kimi-kit/gateway/prod/teams.map)");
    expect(config).toMatch(/http-request return status 401 .* if !known_team/);
    expect(config).toContain("http-request track-sc0 var(txn.team) table kimi_kit_gw_prod_teams");
    expect(config).toMatch(/http-request return status 429 .* if over_limit/);
    expect(config).toContain("balance leastconn");
    expect(config).toContain("option httpchk GET /health");
    expect(config).toContain("retry-on conn-failure empty-response");
    expect(config).toContain("server r1 10.0.0.2:8080\n    server r2 10.0.0.3:8080");
    expect(config).toContain(
      'http-request set-header Authorization "Bearer %[str(key),map(/etc/kimi-kit/gateway/prod/backend-key.map)]"',
    );
    expect(config).toContain("bind 127.0.0.1:8404\n    no log\n    http-request use-service prometheus-exporter");
    expect(config).toContain("team=%[var(txn.team)]");
  });

  it("keeps the per-team counters across reloads: the stick table is shared with the local peer on loopback", () => {
    const { config } = haproxyGatewayConfig(input());
    expect(config).toContain("    localpeer kimi_kit_gw_prod\n");
    expect(config).toContain("peers kimi_kit_gw_prod_peers\n    peer kimi_kit_gw_prod 127.0.0.1:8405\n");
    expect(config).toContain(
      "stick-table type string len 64 size 10k expire 2m store http_req_rate(1m) peers kimi_kit_gw_prod_peers",
    );
    expect(haproxyGatewayConfig(input({ peerPort: 9999 })).config).toContain("peer kimi_kit_gw_prod 127.0.0.1:9999\n");
  });

  it("refuses input that would expose the exporter or confuse the maps, with one ConfigError line per problem", () => {
    const bad: [Partial<GatewayInput>, string][] = [
      [
        { stats: { address: "203.0.113.10", port: 8404 } },
        'stats.address: found "203.0.113.10"; allowed: loopback or a private (RFC 1918) address',
      ],
      [
        { teams: [input().teams[0]!, { ...input().teams[0]!, keySha256: keySha256("other") }] },
        'teams[1].name: found "search" again (also teams[0].name); allowed: a team name used once',
      ],
      [
        { teams: [input().teams[0]!, { ...input().teams[1]!, keySha256: input().teams[0]!.keySha256 }] },
        "teams[1].keySha256: found the same key hash as teams[0].keySha256; allowed: one key per team",
      ],
      [
        { teams: [{ ...input().teams[0]!, requestsPerMinute: -1 }] },
        "teams[0].requestsPerMinute: found -1; allowed: a whole number ≥ 1",
      ],
      [
        { teams: [{ ...input().teams[0]!, name: "two words" }] },
        'teams[0].name: found "two words"; allowed: a name of letters, digits, _ . -',
      ],
      [
        { teams: [{ ...input().teams[0]!, keySha256: "key-in-clear" }] },
        "teams[0].keySha256: found 12 characters that are not a sha256 (not shown: it may be a key in clear); allowed: 64 lowercase hex digits",
      ],
      [{ backends: [] }, "backends: found none; allowed: at least 1 backend"],
      [
        { backends: [input().backends[0]!, input().backends[0]!] },
        'backends[1].name: found "r1" again (also backends[0].name); allowed: a backend name used once',
      ],
      [{ listen: { address: "203.0.113.10", port: 70000 } }, "listen.port: found 70000; allowed: a TCP port 1-65535"],
      [{ listen: { address: "somewhere", port: 443 } }, 'listen.address: found "somewhere"; allowed: an IPv4 address'],
      [{ name: "has space" }, 'name: found "has space"; allowed: a name of letters'],
      [{ configDir: "relative" }, 'configDir: found "relative"; allowed: an absolute path without spaces'],
      [{ stats: { address: "203.0.113.10", port: 443 } }, "stats: found 203.0.113.10:443, the same as listen"],
      [{ peerPort: 443 }, "peerPort: found 443, the same as listen.port"],
      [
        { backends: [{ name: "local", address: "127.0.0.1", port: 8405 }] },
        "peerPort: found 8405, the same as backends[0].port on loopback",
      ],
      [
        { stats: { address: "127.0.0.1", port: 65535 } },
        "peerPort: found nothing, and the default stats.port + 1 = 65536 is not a port",
      ],
      [
        { tls: { certificatePath: "server.pem" } },
        'tls.certificatePath: found "server.pem"; allowed: an absolute path without spaces',
      ],
    ];
    for (const [patch, line] of bad) {
      const problems = configProblems(() => haproxyGatewayConfig(input(patch)));
      expect(
        problems.some((problem) => problem.startsWith(line)),
        `${line}\n${problems.join("\n")}`,
      ).toBe(true);
    }
    // Every problem at once, and the key in clear never in the message.
    const error = (() => {
      try {
        haproxyGatewayConfig(
          input({
            name: "has space",
            backends: [],
            teams: [{ name: "t", keySha256: "sk-live-secret", requestsPerMinute: 0 }],
          }),
        );
      } catch (thrown) {
        return thrown;
      }
      return undefined;
    })();
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).stack_).toBe("prod-stack");
    expect((error as ConfigError).problems).toHaveLength(4);
    expect((error as ConfigError).message).toMatch(/^stack prod-stack: the configuration is invalid:\n {2}- name: /);
    expect((error as ConfigError).message).not.toContain("sk-live-secret");
  });
});

describe("gatewayApplyArgv", () => {
  it("passes the TLS source, every SAN and --secrets-stdin, never a secret", () => {
    expect(
      gatewayApplyArgv(input(), "/tmp/stage", {
        tls: "internal-ca",
        sans: ["llm.example.internal", "198.51.100.7"],
        secretsStdin: true,
      }),
    ).toEqual([
      "apply",
      "--name",
      "prod",
      "--config-dir",
      "/etc/kimi-kit/gateway/prod",
      "--from",
      "/tmp/stage",
      "--tls",
      "internal-ca",
      "--san",
      "llm.example.internal",
      "--san",
      "198.51.100.7",
      "--secrets-stdin",
    ]);
    expect(
      gatewayApplyArgv({ name: "g", configDir: "/etc/g" }, "/s", { tls: "secrets", sans: [], secretsStdin: false }),
    ).toEqual(["apply", "--name", "g", "--config-dir", "/etc/g", "--from", "/s", "--tls", "secrets"]);
  });
});
