/**
 * Per-team tokens-per-minute limits for the gateway: HAProxy counts a team's requests but never sees
 * its tokens (they are in the response bodies, which only the usage exporters in front of the
 * replicas read). This loop closes the circle: every few seconds it asks Prometheus how many tokens
 * (prompt + completion) each team used over the last minute, summed over all replicas, and keeps
 * HAProxy's "blocked" map in step through its admin socket (`add map` / `del map`), so the gateway
 * answers 429 to a team over its limit and admits it again once its last minute falls below it.
 * The same map is written to its file too, so a reload of the gateway keeps it.
 *
 * The limit is enforced after the fact, as far as Prometheus can see: the request that crosses the
 * limit completes, and the block takes effect within one scrape plus one interval (about 25 s with
 * the kit's 15 s scrape and 10 s interval). The plan says so beside each team's tpm.
 *
 * Deployed like the usage exporter: transpiled to one CommonJS file for Debian's nodejs (node:
 * built-ins only) and run by ansible-free-scripts/token-limiter.sh.
 *
 * Usage: node token-limiter.js --prometheus URL --limits FILE --socket PATH --blocked-map FILE [--interval SECONDS]
 * [--once]
 *   --limits: `<team> <tokens per minute>` per line (the gateway's token-limits.map).
 */
import { readFileSync, renameSync, writeFileSync } from "node:fs";
import { createConnection } from "node:net";

/** The tokens each team used over the last minute, summed over every replica's usage exporter. */
export const TOKENS_LAST_MINUTE_QUERY =
  "sum by (team) (increase(kimi_team_prompt_tokens_total[1m]) + increase(kimi_team_completion_tokens_total[1m]))";

/** `<team> <number>` lines; blank lines and # comments skipped. */
export function parseTeamNumbers(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split("\n")) {
    const trimmed = line.trim();
    if (trimmed === "" || trimmed.startsWith("#")) continue;
    const [team, value] = trimmed.split(/\s+/);
    const number = Number(value);
    if (!team || !Number.isFinite(number)) throw new Error(`not a '<team> <number>' line: ${JSON.stringify(line)}`);
    out.set(team, number);
  }
  return out;
}

/** The teams at or over their limit, sorted. A team Prometheus has no series for has used nothing. */
export function teamsOverLimit(limits: ReadonlyMap<string, number>, used: ReadonlyMap<string, number>): string[] {
  return [...limits]
    .filter(([team, limit]) => (used.get(team) ?? 0) >= limit)
    .map(([team]) => team)
    .sort();
}

/** Prometheus' instant-query answer as team → value. */
export function usedByTeam(body: unknown): Map<string, number> {
  const data =
    (body as {
      status?: string;
      data?: { result?: { metric?: Record<string, string>; value?: [number, string] }[] };
    }) ?? {};
  if (data.status !== "success" || !Array.isArray(data.data?.result))
    throw new Error(`Prometheus answered ${JSON.stringify(body).slice(0, 300)}`);
  const out = new Map<string, number>();
  for (const sample of data.data.result) {
    const team = sample.metric?.team;
    const value = Number(sample.value?.[1]);
    if (team && Number.isFinite(value)) out.set(team, value);
  }
  return out;
}

/** Sends one command to HAProxy's admin socket and returns its answer. */
export function haproxyCommand(socketPath: string, command: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = createConnection(socketPath);
    let answer = "";
    socket.setEncoding("utf8");
    socket.setTimeout(5000, () =>
      socket.destroy(new Error(`HAProxy admin socket ${socketPath}: no answer to '${command}' in 5 s`)),
    );
    socket.on("connect", () => socket.end(`${command}\n`));
    socket.on("data", (chunk: string) => (answer += chunk));
    socket.on("end", () => resolve(answer));
    socket.on("error", reject);
  });
}

/** The keys of HAProxy's live copy of a map (`show map FILE`: `<id> <key> <value>` lines). */
export function parseShowMap(answer: string): Set<string> {
  const keys = new Set<string>();
  for (const line of answer.split("\n")) {
    const parts = line.trim().split(/\s+/);
    if (parts.length >= 3 && /^0x[0-9a-f]+$/i.test(parts[0]!)) keys.add(parts[1]!);
  }
  return keys;
}

export interface LimiterOptions {
  prometheusUrl: string;
  limitsFile: string;
  socketPath: string;
  blockedMapFile: string;
}

export interface LimiterRound {
  used: Record<string, number>;
  blocked: string[];
  added: string[];
  removed: string[];
}

/** One round: ask Prometheus, then make HAProxy's blocked map (live and on disk) exactly the teams over their limit. */
export async function limitOnce(options: LimiterOptions): Promise<LimiterRound> {
  const limits = parseTeamNumbers(readFileSync(options.limitsFile, "utf8"));
  const response = await fetch(
    `${options.prometheusUrl.replace(/\/$/, "")}/api/v1/query?query=${encodeURIComponent(TOKENS_LAST_MINUTE_QUERY)}`,
  );
  const used = usedByTeam(await response.json());
  const blocked = teamsOverLimit(limits, used);
  const live = parseShowMap(await haproxyCommand(options.socketPath, `show map ${options.blockedMapFile}`));
  const added = blocked.filter((team) => !live.has(team));
  const removed = [...live].filter((team) => !blocked.includes(team)).sort();
  for (const team of added) await haproxyCommand(options.socketPath, `add map ${options.blockedMapFile} ${team} 1`);
  for (const team of removed) await haproxyCommand(options.socketPath, `del map ${options.blockedMapFile} ${team}`);
  // The file too (write and rename): a reload of the gateway starts from the same blocks.
  writeFileSync(`${options.blockedMapFile}.tmp`, blocked.map((team) => `${team} 1\n`).join(""), { mode: 0o600 });
  renameSync(`${options.blockedMapFile}.tmp`, options.blockedMapFile);
  return { used: Object.fromEntries(used), blocked, added, removed };
}

function flagValue(args: readonly string[], name: string): string | undefined {
  const at = args.indexOf(name);
  return at === -1 ? undefined : args[at + 1];
}

if (require.main === module) {
  const args = process.argv.slice(2);
  const required = (name: string): string => {
    const value = flagValue(args, name);
    if (!value) {
      console.error(`token-limiter: ${name} is required`);
      process.exit(2);
    }
    return value;
  };
  const options: LimiterOptions = {
    prometheusUrl: required("--prometheus"),
    limitsFile: required("--limits"),
    socketPath: required("--socket"),
    blockedMapFile: required("--blocked-map"),
  };
  const intervalSeconds = Number(flagValue(args, "--interval") ?? "10");
  const round = async () => {
    try {
      const result = await limitOnce(options);
      for (const team of result.added)
        console.error(
          `token-limiter: ${team} blocked (${Math.round(result.used[team] ?? 0)} tokens in the last minute)`,
        );
      for (const team of result.removed) console.error(`token-limiter: ${team} admitted again`);
      return true;
    } catch (error) {
      // Prometheus or HAProxy away for a moment: keep the blocks as they are and try again.
      console.error(`token-limiter: ${error instanceof Error ? error.message : String(error)}`);
      return false;
    }
  };
  if (args.includes("--once")) {
    void round().then((ok) => process.exit(ok ? 0 : 1));
  } else {
    void round();
    setInterval(() => void round(), Math.max(1, intervalSeconds) * 1000);
  }
}
