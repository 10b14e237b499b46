/** planner/gateway.ts: the HAProxy configuration and maps of the gateway, and the input it refuses. */
import { describe, expect, it } from "vitest";
import { GatewayInputError, haproxyGatewayConfig, keySha256, type GatewayInput } from "../../planner/gateway";

const input = (patch: Partial<GatewayInput> = {}): GatewayInput => ({
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
    expect(config).toContain('http-request set-header Authorization "Bearer %[str(key),map(/etc/kimi-kit/gateway/prod/backend-key.map)]"');
    expect(config).toContain("bind 127.0.0.1:8404\n    no log\n    http-request use-service prometheus-exporter");
    expect(config).toContain("team=%[var(txn.team)]");
  });

  it("refuses input that would expose the exporter or confuse the maps", () => {
    const bad: [Partial<GatewayInput>, RegExp][] = [
      [{ stats: { address: "203.0.113.10", port: 8404 } }, /neither loopback nor private/],
      [{ teams: [input().teams[0]!, { ...input().teams[0]!, keySha256: keySha256("other") }] }, /duplicate team 'search'/],
      [{ teams: [{ ...input().teams[0]!, requestsPerMinute: -1 }] }, /requestsPerMinute/],
      [{ teams: [{ ...input().teams[0]!, name: "two words" }] }, /team name/],
      [{ teams: [{ ...input().teams[0]!, keySha256: "key-in-clear" }] }, /64 lowercase hex/],
      [{ backends: [] }, /at least one backend/],
      [{ backends: [input().backends[0]!, input().backends[0]!] }, /duplicate backend 'r1'/],
      [{ listen: { address: "203.0.113.10", port: 70000 } }, /port 70000/],
    ];
    for (const [patch, message] of bad) expect(() => haproxyGatewayConfig(input(patch)), message.source).toThrow(message);
    expect(() => haproxyGatewayConfig(input({ stats: { address: "203.0.113.10", port: 1 } }))).toThrow(GatewayInputError);
  });
});
