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
 * The per-team request counters survive a reload: a `peers` section with the local peer only (on
 * loopback) lets the old process hand its stick table to the new one, so a team at its limit stays
 * refused across an apply.
 *
 * This is the HAProxy implementation of the kit's gateway; another gateway would be another
 * function taking the same GatewayInput.
 */
import { createHash } from "node:crypto";
import { join } from "node:path";
import { ConfigError } from "./errors";

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
  /**
   * Tokens (prompt + completion) per minute for the whole team: enforced after the fact by
   * tools/token-limiter.ts from Prometheus' per-team counters (HAProxy never sees token counts).
   */
  tokensPerMinute?: number;
}

export interface GatewayInput {
  /** The Pulumi stack the gateway belongs to: named in every ConfigError. */
  stack: string;
  /** gateway.sh --name: the folder <configDir> and the systemd unit kimi-kit-gateway-<name>. */
  name: string;
  /**
   * Where gateway.sh keeps the configuration, maps, certificate and backend key: /etc/kimi-kit/gateway/<name> in
   * production.
   */
  configDir: string;
  /** The public TLS listener. */
  listen: { address: string; port: number };
  /** The certificate chain and private key, one PEM file (HAProxy's crt layout); default <configDir>/server.pem. */
  tls?: { certificatePath: string };
  backends: GatewayBackend[];
  teams: GatewayTeam[];
  /** The Prometheus exporter's listener: loopback or a private (RFC 1918) address only. */
  stats: { address: string; port: number };
  /**
   * The TCP port of HAProxy's local peer on 127.0.0.1, through which a reloading process hands its
   * stick table (the per-team request counters) to the new one; default stats.port + 1.
   */
  peerPort?: number;
  /** leastconn (default) suits long generations of unequal length; roundrobin is the alternative. */
  balance?: "leastconn" | "roundrobin";
  /** The syslog target of the access log (HAProxy `log` syntax); default /dev/log. */
  logTarget?: string;
  /**
   * HAProxy's admin socket (the token limiter's way in); default <configDir>/admin.sock (a folder only root may enter).
   */
  adminSocket?: string;
}

export interface GatewayFiles {
  /** haproxy.cfg. */
  config: string;
  /** teams.map: `<sha256 of key> <team>` per line. */
  teamsMap: string;
  /** limits.map: `<team> <requests per minute>` per line. */
  limitsMap: string;
  /**
   * token-limits.map: `<team> <tokens per minute>` per line, for the teams that have one (the token limiter reads it).
   */
  tokenLimitsMap: string;
}

/**
 * File names inside configDir, shared with gateway.sh. tokens-blocked.map is the token limiter's
 * (`<team> 1` per team over its tokens per minute): gateway.sh only creates it empty.
 */
export const GATEWAY_FILES = {
  config: "haproxy.cfg",
  teamsMap: "teams.map",
  limitsMap: "limits.map",
  tokenLimitsMap: "token-limits.map",
  tokensBlockedMap: "tokens-blocked.map",
  backendKeyMap: "backend-key.map",
  pem: "server.pem",
} as const;

/** HAProxy's admin socket for a gateway: adminSocket, else in its config folder (0700, root's). */
export function adminSocketOf(input: Pick<GatewayInput, "configDir" | "adminSocket">): string {
  return input.adminSocket ?? join(input.configDir, "admin.sock");
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

const NAME_ALLOWED = "a name of letters, digits, _ . - (1-63 characters, not starting with _ . -)";

function checkListener(problems: string[], field: string, listener: { address: string; port: number }): void {
  if (!IPV4.test(listener.address))
    problems.push(
      `${field}.address: found ${JSON.stringify(listener.address)}; allowed: an IPv4 address like 192.0.2.10`,
    );
  checkPort(problems, `${field}.port`, listener.port);
}

function checkPort(problems: string[], field: string, port: number): void {
  if (!Number.isInteger(port) || port < 1 || port > 65535)
    problems.push(`${field}: found ${JSON.stringify(port)}; allowed: a TCP port 1-65535`);
}

function checkUnique(
  problems: string[],
  field: (index: number) => string,
  what: string,
  values: readonly string[],
): void {
  const first = new Map<string, number>();
  values.forEach((value, index) => {
    const earlier = first.get(value);
    if (earlier === undefined) first.set(value, index);
    else
      problems.push(
        `${field(index)}: found ${JSON.stringify(value)} again (also ${field(earlier)}); allowed: a ${what} used once`,
      );
  });
}

/** The local peer's port: peerPort, else the one after the exporter's. */
function peerPortOf(input: GatewayInput): number {
  return input.peerPort ?? input.stats.port + 1;
}

/** The gateway's own name and config folder. */
function checkIdentity(problems: string[], input: GatewayInput): void {
  if (!NAME.test(input.name)) problems.push(`name: found ${JSON.stringify(input.name)}; allowed: ${NAME_ALLOWED}`);
  if (!input.configDir.startsWith("/") || /\s/.test(input.configDir))
    problems.push(`configDir: found ${JSON.stringify(input.configDir)}; allowed: an absolute path without spaces`);
}

/** The public listener and the exporter's, which must stay private and apart from it. */
function checkListeners(problems: string[], input: GatewayInput): void {
  checkListener(problems, "listen", input.listen);
  checkListener(problems, "stats", input.stats);
  // The exporter has no authentication: it must never be reachable from outside.
  if (IPV4.test(input.stats.address) && !isPrivateOrLoopback(input.stats.address)) {
    problems.push(
      `stats.address: found ${JSON.stringify(input.stats.address)}; allowed: loopback or a private (RFC 1918) address (the Prometheus exporter has no authentication)`,
    );
  }
  if (input.stats.address === input.listen.address && input.stats.port === input.listen.port) {
    problems.push(
      `stats: found ${input.stats.address}:${input.stats.port}, the same as listen; allowed: another address or port than listen's`,
    );
  }
}

/** The local peer's port: a port, and not one the listeners already use. */
function checkPeerPort(problems: string[], input: GatewayInput, peerPort: number): void {
  if (input.peerPort !== undefined) checkPort(problems, "peerPort", input.peerPort);
  else if (Number.isInteger(input.stats.port) && peerPort > 65535)
    problems.push(
      `peerPort: found nothing, and the default stats.port + 1 = ${peerPort} is not a port; allowed: a TCP port 1-65535 (set peerPort)`,
    );
  for (const [field, port] of [
    ["listen.port", input.listen.port],
    ["stats.port", input.stats.port],
  ] as const) {
    if (port === peerPort)
      problems.push(
        `peerPort: found ${peerPort}, the same as ${field}; allowed: a port of its own (HAProxy's local peer listens on 127.0.0.1:${peerPort})`,
      );
  }
}

/** At least one backend, each well named and addressed, none on the local peer's port, names unique. */
function checkBackends(problems: string[], input: GatewayInput, peerPort: number): void {
  if (input.backends.length === 0) problems.push("backends: found none; allowed: at least 1 backend");
  input.backends.forEach((backend, index) => {
    if (!NAME.test(backend.name))
      problems.push(`backends[${index}].name: found ${JSON.stringify(backend.name)}; allowed: ${NAME_ALLOWED}`);
    checkListener(problems, `backends[${index}]`, backend);
    if (backend.address.startsWith("127.") && backend.port === peerPort)
      problems.push(
        `peerPort: found ${peerPort}, the same as backends[${index}].port on loopback; allowed: a port of its own (HAProxy's local peer listens on 127.0.0.1:${peerPort})`,
      );
  });
  checkUnique(
    problems,
    (index) => `backends[${index}].name`,
    "backend name",
    input.backends.map((backend) => backend.name),
  );
}

/** Each team on its own: name, key hash and limits. */
function checkEachTeam(problems: string[], input: GatewayInput): void {
  input.teams.forEach((team, index) => {
    if (!NAME.test(team.name))
      problems.push(`teams[${index}].name: found ${JSON.stringify(team.name)}; allowed: ${NAME_ALLOWED}`);
    // Never echoed: a value that is not a hash may be a key in clear.
    if (!/^[0-9a-f]{64}$/.test(team.keySha256))
      problems.push(
        `teams[${index}].keySha256: found ${team.keySha256.length} characters that are not a sha256 (not shown: it may be a key in clear); allowed: 64 lowercase hex digits`,
      );
    if (!Number.isInteger(team.requestsPerMinute) || team.requestsPerMinute < 1)
      problems.push(
        `teams[${index}].requestsPerMinute: found ${JSON.stringify(team.requestsPerMinute)}; allowed: a whole number ≥ 1`,
      );
    if (team.tokensPerMinute !== undefined && (!Number.isInteger(team.tokensPerMinute) || team.tokensPerMinute < 1)) {
      problems.push(
        `teams[${index}].tokensPerMinute: found ${JSON.stringify(team.tokensPerMinute)}; allowed: a whole number ≥ 1, or none`,
      );
    }
  });
}

function checkAdminSocket(problems: string[], input: GatewayInput): void {
  const socket = adminSocketOf(input);
  // A Unix socket's path must fit sockaddr_un's 108 bytes.
  if (!socket.startsWith("/") || /\s/.test(socket) || Buffer.byteLength(socket) > 100) {
    problems.push(
      `adminSocket: found ${JSON.stringify(socket)}; allowed: an absolute path without spaces, at most 100 bytes (set adminSocket, or a shorter configDir)`,
    );
  }
}

/** No two teams share a name or a key. */
function checkTeamsUnique(problems: string[], input: GatewayInput): void {
  checkUnique(
    problems,
    (index) => `teams[${index}].name`,
    "team name",
    input.teams.map((team) => team.name),
  );
  // The hash is not echoed either (it names a key).
  const hashes = new Map<string, number>();
  input.teams.forEach((team, index) => {
    const earlier = hashes.get(team.keySha256);
    if (earlier === undefined) hashes.set(team.keySha256, index);
    else
      problems.push(
        `teams[${index}].keySha256: found the same key hash as teams[${earlier}].keySha256; allowed: one key per team (a key names one team)`,
      );
  });
}

function checkCertificatePath(problems: string[], input: GatewayInput): void {
  const certificatePath = input.tls?.certificatePath;
  if (certificatePath !== undefined && (!certificatePath.startsWith("/") || /\s/.test(certificatePath))) {
    problems.push(
      `tls.certificatePath: found ${JSON.stringify(certificatePath)}; allowed: an absolute path without spaces`,
    );
  }
}

/**
 * Rejects input HAProxy would misread (names with spaces would split a map line) or that would
 * expose the exporter: one ConfigError naming input.stack, one line per problem.
 */
export function validateGatewayInput(input: GatewayInput): void {
  const problems: string[] = [];
  checkIdentity(problems, input);
  checkListeners(problems, input);
  const peerPort = peerPortOf(input);
  checkPeerPort(problems, input, peerPort);
  checkBackends(problems, input, peerPort);
  // The problems keep their historical order: each team, the admin socket, then uniqueness.
  checkEachTeam(problems, input);
  checkAdminSocket(problems, input);
  checkTeamsUnique(problems, input);
  checkCertificatePath(problems, input);
  if (problems.length > 0) throw new ConfigError(input.stack, problems);
}

/** JSON error bodies shaped like llama-server's (and OpenAI's), so clients parse them the same way. */
function errorBody(code: number, type: string, message: string): string {
  // The body goes inside '…' in the configuration, where HAProxy has no escape for a quote.
  if (message.includes("'")) throw new Error("an error body must not contain a single quote");
  return JSON.stringify({ error: { code, type, message } });
}

/** The names the configuration sections share: the proxy's, and the files they read. */
interface GatewayNames {
  proxy: string;
  pem: string;
  teamsMap: string;
  limitsMap: string;
  backendKeyMap: string;
  blockedMap: string;
}

function gatewayNames(input: GatewayInput): GatewayNames {
  const file = (name: string) => join(input.configDir, name);
  return {
    pem: input.tls?.certificatePath ?? file(GATEWAY_FILES.pem),
    proxy: `kimi_kit_gw_${input.name.replace(/[^A-Za-z0-9_]/g, "_")}`,
    teamsMap: file(GATEWAY_FILES.teamsMap),
    limitsMap: file(GATEWAY_FILES.limitsMap),
    backendKeyMap: file(GATEWAY_FILES.backendKeyMap),
    blockedMap: file(GATEWAY_FILES.tokensBlockedMap),
  };
}

function globalAndDefaultsSection(input: GatewayInput, { proxy }: GatewayNames): string {
  return `# Written by kimi-kit (planner/gateway.ts) for gateway ${input.name}; apply with gateway.sh.
global
    maxconn 4096
    log ${input.logTarget ?? "/dev/log"} local0
    ssl-default-bind-options ssl-min-ver TLSv1.2 no-tls-tickets
    ssl-default-bind-ciphers ECDHE+AESGCM:ECDHE+CHACHA20
    ssl-default-bind-ciphersuites TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256
    # This process's name among the peers below (instead of the host name).
    localpeer ${proxy}
    # The token limiter (tools/token-limiter.ts) adds and removes teams in the blocked map here.
    stats socket ${adminSocketOf(input)} mode 600 level admin

defaults
    mode http
    log global
    option forwardfor
    timeout connect 2s
    timeout http-request 30s
    timeout client 15m
    timeout server 60m
    timeout check 2s
`;
}

/** The public TLS frontend: the team from the key, then the request and token limits. */
function publicFrontendSection(input: GatewayInput, names: GatewayNames): string {
  const { proxy, pem, teamsMap, limitsMap, blockedMap } = names;
  const unauthorized = errorBody(401, "authentication_error", "invalid or missing API key");
  const limited = errorBody(429, "rate_limit_error", "the team is over its requests per minute; retry later");
  const overTokens = errorBody(429, "rate_limit_error", "the team is over its tokens per minute; retry later");
  return `frontend ${proxy}
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
    # Over its tokens per minute, as the token limiter last saw in Prometheus' per-team counters.
    acl over_tokens var(txn.team),map(${blockedMap}) -m found
    http-request return status 429 content-type application/json string '${overTokens}' hdr Retry-After 60 if over_tokens
    default_backend ${proxy}_replicas
`;
}

/** The local peer, the per-team stick table, and the replicas behind the gateway. */
function backendSections(input: GatewayInput, { proxy, backendKeyMap }: GatewayNames): string {
  const servers = input.backends.map((backend) => `    server ${backend.name} ${backend.address}:${backend.port}`);
  return `# The local peer only: on a reload the old process hands the stick table (the per-team request
# counters) to the new one through this loopback listener, so a team at its limit stays refused.
peers ${proxy}_peers
    peer ${proxy} 127.0.0.1:${peerPortOf(input)}

backend ${proxy}_teams
    stick-table type string len 64 size 10k expire 2m store http_req_rate(1m) peers ${proxy}_peers

backend ${proxy}_replicas
    balance ${input.balance ?? "leastconn"}
    # The replicas get their own key, not the team's: a team key is valid only at the gateway.
    http-request del-header x-api-key
    http-request set-header Authorization "Bearer %[str(key),map(${backendKeyMap})]"
    # The team the key named, for the usage exporter in front of each replica (tools/usage-exporter.ts);
    # set-header replaces whatever a client sent, so no team can be charged to another.
    http-request set-header X-Kimi-Team %[var(txn.team)]
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
`;
}

function metricsFrontendSection(input: GatewayInput, { proxy }: GatewayNames): string {
  return `frontend ${proxy}_metrics
    bind ${input.stats.address}:${input.stats.port}
    no log
    http-request use-service prometheus-exporter if { path /metrics }
    http-request return status 404
`;
}

export function haproxyGatewayConfig(input: GatewayInput): GatewayFiles {
  validateGatewayInput(input);
  const names = gatewayNames(input);
  // Sections are separated by one blank line.
  const config = [
    globalAndDefaultsSection(input, names),
    publicFrontendSection(input, names),
    backendSections(input, names),
    metricsFrontendSection(input, names),
  ].join("\n");
  const teamsMapText = input.teams.map((team) => `${team.keySha256} ${team.name}\n`).join("");
  const limitsMapText = input.teams.map((team) => `${team.name} ${team.requestsPerMinute}\n`).join("");
  const tokenLimitsText = input.teams
    .flatMap((team) => (team.tokensPerMinute === undefined ? [] : [`${team.name} ${team.tokensPerMinute}\n`]))
    .join("");
  return { config, teamsMap: teamsMapText, limitsMap: limitsMapText, tokenLimitsMap: tokenLimitsText };
}

/**
 * argv after `gateway.sh`: `apply` of the files haproxyGatewayConfig made, staged in fromDir.
 * tls internal-ca: gateway.sh makes and keeps a CA and a server certificate in configDir (for the
 * listen address, 127.0.0.1, localhost and each of sans) and prints ca_certificate_base64; tls
 * secrets: the PEM chain and private key arrive on stdin. secretsStdin: stdin's first line is the
 * replicas' own API key (with tls secrets, the PEM follows it), so no secret is on a command line.
 */
export function gatewayApplyArgv(
  input: Pick<GatewayInput, "name" | "configDir">,
  fromDir: string,
  options: { tls: "internal-ca" | "secrets"; sans: readonly string[]; secretsStdin: boolean },
): string[] {
  const argv = [
    "apply",
    "--name",
    input.name,
    "--config-dir",
    input.configDir,
    "--from",
    fromDir,
    "--tls",
    options.tls,
  ];
  for (const san of options.sans) argv.push("--san", san);
  if (options.secretsStdin) argv.push("--secrets-stdin");
  return argv;
}
