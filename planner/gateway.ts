/**
 * The gateway in front of a fleet of llama-server replicas, planned (pure): one HAProxy (the
 * Debian package, 2.6) that is the only public listener. It terminates TLS, checks each request's
 * API key at the edge against a map of key hashes (the map holds sha256 of the keys, never the
 * keys), limits each team's requests per minute with a stick table keyed by the team, balances
 * across the replicas with HTTP health checks and retries failed connects on another replica,
 * replaces the team's key by the replicas' own key (llama-server keeps checking a key too), and
 * serves its native Prometheus exporter on a loopback or private port.
 *
 * Teams live only in the two map files, not in the configuration: adding or removing a team
 * rewrites the maps and reloads HAProxy hitlessly (ansible-free-scripts/gateway.sh apply: a new
 * process takes over the listener, `-sf`/systemd reload); the replicas are never touched.
 * A reload resets the per-team request counters (the stick table is not carried over).
 *
 * This is the HAProxy implementation of the kit's gateway; another gateway would be another
 * function taking the same GatewayInput.
 */
import { createHash } from "node:crypto";
import { join } from "node:path";

export interface GatewayBackend {
  /** The server's name in HAProxy (stats, metrics, logs): e.g. the replica's host name. */
  name: string;
  /** The replica's private address and llama-server port. */
  address: string;
  port: number;
}

export interface GatewayTeam {
  name: string;
  /** sha256 of the team's API key, 64 lowercase hex digits (ansible-free-scripts never sees the key). */
  keySha256: string;
  /** Requests per minute admitted for the whole team (a sliding one-minute window); more get 429. */
  requestsPerMinute: number;
}

export interface GatewayInput {
  /** gateway.sh --name: the folder <configDir> and the systemd unit kimi-kit-gateway-<name>. */
  name: string;
  /** Where gateway.sh keeps the configuration, maps, certificate and backend key: /etc/kimi-kit/gateway/<name> in production. */
  configDir: string;
  /** The public TLS listener. */
  listen: { address: string; port: number };
  /** The certificate chain and private key, one PEM file (HAProxy's crt layout); default <configDir>/server.pem. */
  tls?: { certificatePath: string };
  backends: GatewayBackend[];
  teams: GatewayTeam[];
  /** The Prometheus exporter's listener: loopback or a private (RFC 1918) address only. */
  stats: { address: string; port: number };
  /** leastconn (default) suits long generations of unequal length; roundrobin is the alternative. */
  balance?: "leastconn" | "roundrobin";
  /** The syslog target of the access log (HAProxy `log` syntax); default /dev/log. */
  logTarget?: string;
}

export interface GatewayFiles {
  /** haproxy.cfg. */
  config: string;
  /** teams.map: `<sha256 of key> <team>` per line. */
  teamsMap: string;
  /** limits.map: `<team> <requests per minute>` per line. */
  limitsMap: string;
}

/** File names inside configDir, shared with gateway.sh. */
export const GATEWAY_FILES = { config: "haproxy.cfg", teamsMap: "teams.map", limitsMap: "limits.map", backendKeyMap: "backend-key.map", pem: "server.pem" } as const;

export class GatewayInputError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "GatewayInputError";
  }
}

/** The hash the teams map stores for an API key. */
export function keySha256(key: string): string {
  return createHash("sha256").update(key, "utf8").digest("hex");
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;
const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

function isPrivateOrLoopback(address: string): boolean {
  const [a, b] = address.split(".").map(Number) as [number, number];
  return a === 127 || a === 10 || (a === 172 && b >= 16 && b <= 31) || (a === 192 && b === 168);
}

function checkListener(what: string, listener: { address: string; port: number }): void {
  if (!IPV4.test(listener.address)) throw new GatewayInputError(`${what}: '${listener.address}' is not an IPv4 address`);
  if (!Number.isInteger(listener.port) || listener.port < 1 || listener.port > 65535) throw new GatewayInputError(`${what}: port ${listener.port} is not 1-65535`);
}

function checkUnique(what: string, names: readonly string[]): void {
  const seen = new Set<string>();
  for (const name of names) {
    if (seen.has(name)) throw new GatewayInputError(`duplicate ${what} '${name}'`);
    seen.add(name);
  }
}

/** Rejects input HAProxy would misread (names with spaces would split a map line) or that would expose the exporter. */
export function validateGatewayInput(input: GatewayInput): void {
  if (!NAME.test(input.name)) throw new GatewayInputError(`gateway name '${input.name}' wants letters, digits, _ . -`);
  if (!input.configDir.startsWith("/") || /\s/.test(input.configDir)) throw new GatewayInputError(`configDir '${input.configDir}' must be an absolute path without spaces`);
  checkListener("listen", input.listen);
  checkListener("stats", input.stats);
  // The exporter has no authentication: it must never be reachable from outside.
  if (!isPrivateOrLoopback(input.stats.address)) throw new GatewayInputError(`stats: ${input.stats.address} is neither loopback nor private; the Prometheus exporter has no authentication`);
  if (input.stats.address === input.listen.address && input.stats.port === input.listen.port) throw new GatewayInputError("stats and listen use the same address and port");
  if (input.backends.length === 0) throw new GatewayInputError("the gateway needs at least one backend");
  for (const backend of input.backends) {
    if (!NAME.test(backend.name)) throw new GatewayInputError(`backend name '${backend.name}' wants letters, digits, _ . -`);
    checkListener(`backend ${backend.name}`, backend);
  }
  checkUnique("backend", input.backends.map((backend) => backend.name));
  for (const team of input.teams) {
    if (!NAME.test(team.name)) throw new GatewayInputError(`team name '${team.name}' wants letters, digits, _ . -`);
    if (!/^[0-9a-f]{64}$/.test(team.keySha256)) throw new GatewayInputError(`team ${team.name}: keySha256 must be 64 lowercase hex digits`);
    if (!Number.isInteger(team.requestsPerMinute) || team.requestsPerMinute < 1) throw new GatewayInputError(`team ${team.name}: requestsPerMinute must be a whole number ≥ 1, got ${team.requestsPerMinute}`);
  }
  checkUnique("team", input.teams.map((team) => team.name));
  checkUnique("team key", input.teams.map((team) => team.keySha256));
  const certificatePath = input.tls?.certificatePath;
  if (certificatePath !== undefined && (!certificatePath.startsWith("/") || /\s/.test(certificatePath))) throw new GatewayInputError(`tls.certificatePath '${certificatePath}' must be an absolute path without spaces`);
}

/** JSON error bodies shaped like llama-server's (and OpenAI's), so clients parse them the same way. */
function errorBody(code: number, type: string, message: string): string {
  // The body goes inside '…' in the configuration, where HAProxy has no escape for a quote.
  if (message.includes("'")) throw new Error("an error body must not contain a single quote");
  return JSON.stringify({ error: { code, type, message } });
}

export function haproxyGatewayConfig(input: GatewayInput): GatewayFiles {
  validateGatewayInput(input);
  const file = (name: string) => join(input.configDir, name);
  const pem = input.tls?.certificatePath ?? file(GATEWAY_FILES.pem);
  const proxy = `kimi_kit_gw_${input.name.replace(/[^A-Za-z0-9_]/g, "_")}`;
  const teamsMap = file(GATEWAY_FILES.teamsMap);
  const limitsMap = file(GATEWAY_FILES.limitsMap);
  const backendKeyMap = file(GATEWAY_FILES.backendKeyMap);
  const unauthorized = errorBody(401, "authentication_error", "invalid or missing API key");
  const limited = errorBody(429, "rate_limit_error", "the team is over its requests per minute; retry later");
  const servers = input.backends.map((backend) => `    server ${backend.name} ${backend.address}:${backend.port}`);

  const config = `# Written by kimi-kit (planner/gateway.ts) for gateway ${input.name}; apply with gateway.sh.
global
    maxconn 4096
    log ${input.logTarget ?? "/dev/log"} local0
    ssl-default-bind-options ssl-min-ver TLSv1.2 no-tls-tickets
    ssl-default-bind-ciphers ECDHE+AESGCM:ECDHE+CHACHA20
    ssl-default-bind-ciphersuites TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256

defaults
    mode http
    log global
    option forwardfor
    timeout connect 2s
    timeout http-request 30s
    timeout client 15m
    timeout server 60m
    timeout check 2s

frontend ${proxy}
    bind ${input.listen.address}:${input.listen.port} ssl crt ${pem} alpn http/1.1
    # The team is part of every access-log line (usage per team can be read from the logs).
    log-format "%ci:%cp [%tr] %ft %b/%s %TR/%Tw/%Tc/%Tr/%Ta %ST %B %U team=%[var(txn.team)] %{+Q}r"
    http-request set-header X-Forwarded-Proto https
    # The key's hash names the team; the key itself is never written anywhere (req.fhdr: the whole header, not split at commas).
    http-request set-var(txn.team) req.fhdr(authorization),regsub("^[Bb]earer +",""),digest(sha256),hex,lower,map(${teamsMap})
    acl known_team var(txn.team) -m found
    http-request return status 401 content-type application/json string '${unauthorized}' hdr WWW-Authenticate Bearer if !known_team
    # One counter per team (all of its keys and clients together), a sliding one-minute window.
    http-request track-sc0 var(txn.team) table ${proxy}_teams
    http-request set-var(txn.rpm) var(txn.team),map(${limitsMap},0)
    http-request set-var(txn.rate) sc_http_req_rate(0)
    acl over_limit var(txn.rate),sub(txn.rpm) gt 0
    http-request return status 429 content-type application/json string '${limited}' hdr Retry-After 60 if over_limit
    default_backend ${proxy}_replicas

backend ${proxy}_teams
    stick-table type string len 64 size 10k expire 2m store http_req_rate(1m)

backend ${proxy}_replicas
    balance ${input.balance ?? "leastconn"}
    # The replicas get their own key, not the team's: a team key is valid only at the gateway.
    http-request del-header x-api-key
    http-request set-header Authorization "Bearer %[str(key),map(${backendKeyMap})]"
    # llama-server answers /health without a key: 200 once the model is loaded, 503 while loading.
    option httpchk GET /health
    http-check expect status 200
    default-server check inter 1s fall 2 rise 2
    # A connect that fails (a replica just died, before the check notices) is tried again on another replica;
    # a request that reached a replica is not repeated (a generation is not idempotent in cost).
    retries 2
    option redispatch 1
    retry-on conn-failure empty-response
${servers.join("\n")}

frontend ${proxy}_metrics
    bind ${input.stats.address}:${input.stats.port}
    no log
    http-request use-service prometheus-exporter if { path /metrics }
    http-request return status 404
`;
  const teamsMapText = input.teams.map((team) => `${team.keySha256} ${team.name}\n`).join("");
  const limitsMapText = input.teams.map((team) => `${team.name} ${team.requestsPerMinute}\n`).join("");
  return { config, teamsMap: teamsMapText, limitsMap: limitsMapText };
}

/** argv after `gateway.sh`: `apply` of the files haproxyGatewayConfig made, staged in fromDir. */
export function gatewayApplyArgv(input: Pick<GatewayInput, "name" | "configDir">, fromDir: string): string[] {
  return ["apply", "--name", input.name, "--config-dir", input.configDir, "--from", fromDir];
}
