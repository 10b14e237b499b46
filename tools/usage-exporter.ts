/**
 * Per-team usage accounting: a small reverse proxy in front of one llama-server replica that counts
 * requests, prompt tokens and completion tokens per team and exports them for Prometheus.
 *
 * Why a proxy and not the gateway's log: HAProxy logs the team (it knows the key) but not the token
 * counts, which are in the response body; HAProxy cannot parse bodies, and llama-server has no per-key
 * accounting. So the counter sits where the body passes. One proxy per replica (not one on the gateway
 * host) keeps HAProxy's load balancing and health checks untouched: HAProxy's backend servers are these
 * proxies, it sets `X-Kimi-Team` from the key it checked, and the replica's firewall admits only the
 * gateway, so nobody else can claim a team. Requests without the header count as team "none".
 *
 * Token counts come from the response's OpenAI `usage` (JSON bodies, and the last SSE chunk when the
 * client asked `stream_options.include_usage`); a stream without it still ends with llama-server's
 * `timings` (prompt_n + cache_n prompt tokens, predicted_n completion tokens), which are used instead,
 * so the proxy never rewrites a request. Bodies stream through unchanged as they arrive.
 *
 * The counters are month-to-date: they restart at the start of each UTC month (Prometheus sees an
 * ordinary counter reset), so the budget alerts compare them with a monthly budget directly. With a
 * state file they survive a restart of the proxy.
 *
 * Usage: tsx tools/usage-exporter.ts --listen HOST:PORT --upstream HOST:PORT --metrics HOST:PORT [--state FILE]
 *
 * On a host it runs as plain JavaScript under Debian's Node 18 (components/exec/host-programs.ts
 * transpiles this file alone; ansible-free-scripts/usage-exporter.sh installs and runs it), so it
 * imports only node: built-ins and uses no API newer than Node 18.
 */
import { existsSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import {
  createServer,
  request as httpRequest,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from "node:http";
import type { AddressInfo } from "node:net";

export const TEAM_HEADER = "x-kimi-team";
const NO_TEAM = "none";
/** The largest JSON body kept for parsing; longer ones still pass through, uncounted for tokens. */
const MAX_JSON_BYTES = 16 * 1024 * 1024;
/** Paths whose responses carry usage (OpenAI-compatible and llama-server's own). */
const COMPLETION_PATHS = new Set([
  "/v1/chat/completions",
  "/chat/completions",
  "/v1/completions",
  "/completions",
  "/completion",
]);

export interface TeamUsage {
  requests: number;
  promptTokens: number;
  completionTokens: number;
}

interface State {
  month: string;
  teams: Record<string, TeamUsage>;
}

const monthOf = (date: Date) => date.toISOString().slice(0, 7);

export interface Tokens {
  prompt: number;
  completion: number;
}

/**
 * Token counts from one parsed response object or SSE chunk: `usage` first, llama-server's `timings` as the fallback.
 */
export function tokensOf(value: unknown): Tokens | undefined {
  if (typeof value !== "object" || value === null) return undefined;
  const record = value as Record<string, unknown>;
  const usage = record.usage as Record<string, unknown> | undefined;
  if (usage && typeof usage.prompt_tokens === "number" && typeof usage.completion_tokens === "number") {
    return { prompt: usage.prompt_tokens, completion: usage.completion_tokens };
  }
  const timings = record.timings as Record<string, unknown> | undefined;
  if (timings && typeof timings.prompt_n === "number" && typeof timings.predicted_n === "number") {
    const cached = typeof timings.cache_n === "number" ? timings.cache_n : 0;
    return { prompt: timings.prompt_n + cached, completion: timings.predicted_n };
  }
  return undefined;
}

/** Tokens of a whole SSE body: the last chunk that carries usage or timings (`usage` wins when both exist). */
export function tokensOfStream(text: string): Tokens | undefined {
  let found: Tokens | undefined;
  let fromUsage = false;
  for (const line of text.split("\n")) {
    if (!line.startsWith("data:")) continue;
    const data = line.slice(5).trim();
    if (data === "" || data === "[DONE]") continue;
    let parsed: unknown;
    try {
      parsed = JSON.parse(data);
    } catch {
      continue;
    }
    const tokens = tokensOf(parsed);
    if (!tokens) continue;
    const hasUsage = typeof (parsed as Record<string, unknown>).usage === "object";
    if (hasUsage || !fromUsage) {
      found = tokens;
      fromUsage = hasUsage;
    }
  }
  return found;
}

/** Prometheus text exposition of the counters. */
export function renderMetrics(teams: Record<string, TeamUsage>): string {
  const label = (team: string) => team.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
  const families: [string, string, keyof TeamUsage][] = [
    ["kimi_team_requests_total", "Completion requests per team this UTC month", "requests"],
    ["kimi_team_prompt_tokens_total", "Prompt tokens per team this UTC month (cached ones included)", "promptTokens"],
    ["kimi_team_completion_tokens_total", "Completion tokens per team this UTC month", "completionTokens"],
  ];
  const names = Object.keys(teams).sort();
  return families
    .map(([name, help, key]) =>
      [
        `# HELP ${name} ${help}`,
        `# TYPE ${name} counter`,
        ...names.map((team) => `${name}{team="${label(team)}"} ${teams[team]![key]}`),
      ].join("\n"),
    )
    .join("\n")
    .concat("\n");
}

export interface UsageProxyOptions {
  listen: { host: string; port: number };
  upstream: { host: string; port: number };
  metrics: { host: string; port: number };
  stateFile?: string;
  /** The clock (tests move it across a month). */
  now?: () => Date;
}

export interface UsageProxy {
  port: number;
  metricsPort: number;
  usage(): Record<string, TeamUsage>;
  close(): Promise<void>;
}

/** The month-to-date counters, restarted each UTC month and, with a state file, kept across restarts. */
interface UsageStore {
  current(): State;
  record(team: string, tokens: Tokens | undefined): void;
}

function usageStore(options: UsageProxyOptions, now: () => Date): UsageStore {
  let state: State = { month: monthOf(now()), teams: {} };
  if (options.stateFile && existsSync(options.stateFile))
    state = JSON.parse(readFileSync(options.stateFile, "utf8")) as State;

  const current = (): State => {
    const month = monthOf(now());
    if (state.month !== month) state = { month, teams: {} };
    return state;
  };
  const record = (team: string, tokens: Tokens | undefined) => {
    const teams = current().teams;
    const usage = (teams[team] ??= { requests: 0, promptTokens: 0, completionTokens: 0 });
    usage.requests += 1;
    usage.promptTokens += tokens?.prompt ?? 0;
    usage.completionTokens += tokens?.completion ?? 0;
    if (options.stateFile) {
      // Write then rename, so a crash mid-write leaves the previous state, not half a file.
      writeFileSync(`${options.stateFile}.tmp`, JSON.stringify(state));
      renameSync(`${options.stateFile}.tmp`, options.stateFile);
    }
  };
  return { current, record };
}

/** The tokens of a kept response body: an SSE stream's, else a JSON body's (none if it does not parse). */
function tokensOfBody(text: string, contentType: string): Tokens | undefined {
  const isStream = contentType.includes("text/event-stream");
  let tokens: Tokens | undefined;
  if (isStream) tokens = tokensOfStream(text);
  else {
    try {
      tokens = tokensOf(JSON.parse(text));
    } catch {
      tokens = undefined;
    }
  }
  return tokens;
}

/**
 * Streams the upstream response to the client as it arrives, keeping a counted response's body
 * (up to MAX_JSON_BYTES) to record the team's tokens once it ends.
 */
function relayResponse(
  upstreamRes: IncomingMessage,
  res: ServerResponse,
  counted: boolean,
  recordTokens: (tokens: Tokens | undefined) => void,
): void {
  res.writeHead(upstreamRes.statusCode ?? 502, upstreamRes.headers);
  const chunks: Buffer[] = [];
  let kept = 0;
  upstreamRes.on("data", (chunk: Buffer) => {
    if (counted && kept + chunk.length <= MAX_JSON_BYTES) {
      chunks.push(chunk);
      kept += chunk.length;
    }
    res.write(chunk);
  });
  upstreamRes.on("end", () => {
    res.end();
    if (!counted) return;
    const text = Buffer.concat(chunks).toString("utf8");
    recordTokens(tokensOfBody(text, upstreamRes.headers["content-type"] ?? ""));
  });
  upstreamRes.on("error", () => res.destroy());
}

/** The reverse proxy to the replica: every request passes; completions are counted for their team. */
function createProxyServer(options: UsageProxyOptions, store: UsageStore): Server {
  return createServer((req: IncomingMessage, res: ServerResponse) => {
    const rawTeam = req.headers[TEAM_HEADER];
    const team = (Array.isArray(rawTeam) ? rawTeam[0] : rawTeam) || NO_TEAM;
    const path = (req.url ?? "/").split("?")[0]!;
    const counted = req.method === "POST" && COMPLETION_PATHS.has(path);
    const upstream = httpRequest(
      {
        host: options.upstream.host,
        port: options.upstream.port,
        method: req.method,
        path: req.url,
        headers: req.headers,
      },
      (upstreamRes) => relayResponse(upstreamRes, res, counted, (tokens) => store.record(team, tokens)),
    );
    upstream.on("error", () => {
      if (!res.headersSent) res.writeHead(502, { "content-type": "text/plain" });
      res.end("upstream unreachable\n");
    });
    req.pipe(upstream);
  });
}

function createMetricsServer(store: UsageStore): Server {
  return createServer((req, res) => {
    if (req.url !== "/metrics") {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { "content-type": "text/plain; version=0.0.4" }).end(renderMetrics(store.current().teams));
  });
}

const listenOn = (server: Server, at: { host: string; port: number }) =>
  new Promise<number>((resolve, reject) => {
    server.once("error", reject);
    server.listen(at.port, at.host, () => resolve((server.address() as AddressInfo).port));
  });

const closeServer = (server: Server) =>
  new Promise<void>((resolve) => {
    server.closeAllConnections();
    server.close(() => resolve());
  });

export async function startUsageProxy(options: UsageProxyOptions): Promise<UsageProxy> {
  const now = options.now ?? (() => new Date());
  const store = usageStore(options, now);
  const proxy = createProxyServer(options, store);
  const metrics = createMetricsServer(store);
  const port = await listenOn(proxy, options.listen);
  const metricsPort = await listenOn(metrics, options.metrics);
  return {
    port,
    metricsPort,
    usage: () => structuredClone(store.current().teams),
    close: async () => {
      await Promise.all([closeServer(proxy), closeServer(metrics)]);
    },
  };
}

function parseHostPort(flag: string, value: string | undefined): { host: string; port: number } {
  const match = value === undefined ? null : /^(.+):(\d+)$/.exec(value);
  if (!match) throw new Error(`${flag} needs HOST:PORT, got '${value ?? ""}'`);
  return { host: match[1]!.replace(/^\[|\]$/g, ""), port: Number(match[2]) };
}

if (require.main === module) {
  const args = process.argv.slice(2);
  const flag = (name: string) => {
    const at = args.indexOf(name);
    return at === -1 ? undefined : args[at + 1];
  };
  startUsageProxy({
    listen: parseHostPort("--listen", flag("--listen")),
    upstream: parseHostPort("--upstream", flag("--upstream")),
    metrics: parseHostPort("--metrics", flag("--metrics")),
    stateFile: flag("--state"),
  }).then(
    (p) => console.log(`usage-exporter: proxy on ${p.port}, metrics on ${p.metricsPort}`),
    (error: unknown) => {
      console.error(`usage-exporter: ${error instanceof Error ? error.message : String(error)}`);
      process.exit(1);
    },
  );
}
