/**
 * components/exec/host-programs.ts: tools/usage-exporter.ts as one self-contained CommonJS file. It is
 * run here under the system `node` (not tsx, not the node_modules one), as on a production host, in
 * front of a small fake upstream that answers completions with a `usage` object (JSON) or a stream
 * whose last chunk carries it; /metrics must then show each team's counts.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { builtinModules } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { hostProgramJavaScript, hostProgramJavaScriptSha256 } from "../../components/exec/host-programs";
import { freePort } from "../../lab/net";

/** The distribution's node (what a host runs), not node_modules/.bin/node that npx puts first on PATH. */
const SYSTEM_NODE = existsSync("/usr/bin/node") ? "/usr/bin/node" : "node";

describe('hostProgramJavaScript("usage-exporter")', () => {
  it("is CommonJS that requires only Node built-ins, and its sha256 is the file's", () => {
    const js = hostProgramJavaScript("usage-exporter");
    expect(js).not.toMatch(/^\s*import\s/m);
    expect(js).not.toMatch(/^\s*export\s/m);
    expect(js).toContain("require.main === module");
    const required = [...js.matchAll(/\brequire\(\s*["']([^"']+)["']\s*\)/g)].map((m) => m[1]!);
    expect(required.length).toBeGreaterThan(0);
    for (const specifier of required) expect(builtinModules).toContain(specifier.replace(/^node:/, ""));
    expect(hostProgramJavaScriptSha256("usage-exporter")).toBe(createHash("sha256").update(js).digest("hex"));
    expect(hostProgramJavaScriptSha256("usage-exporter")).toMatch(/^[0-9a-f]{64}$/);
  });

  it("passes `node --check` under the system node (Node 18 or later)", () => {
    const version = spawnSync(SYSTEM_NODE, ["--version"], { encoding: "utf8" });
    expect(version.status).toBe(0);
    expect(Number(/^v(\d+)\./.exec(version.stdout)?.[1])).toBeGreaterThanOrEqual(18);
    const dir = mkdtempSync(join(tmpdir(), "kimi-usage-js-check-"));
    try {
      writeFileSync(join(dir, "usage-exporter.js"), hostProgramJavaScript("usage-exporter"));
      const check = spawnSync(SYSTEM_NODE, ["--check", join(dir, "usage-exporter.js")], { encoding: "utf8" });
      expect(check.stderr).toBe("");
      expect(check.status).toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("the transpiled exporter under the system node", () => {
  let work: string;
  let upstream: Server;
  let exporter: ChildProcess | undefined;
  let exporterLog = "";
  let proxyPort: number;
  let metricsPort: number;

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), "kimi-usage-js-"));
    // The replica: a chat completion with `usage`, or (stream: true) SSE chunks, the last with usage.
    upstream = createServer((req, res) => {
      let body = "";
      req.on("data", (chunk: Buffer) => (body += chunk.toString("utf8")));
      req.on("end", () => {
        const request = body ? (JSON.parse(body) as { stream?: boolean; prompt_tokens?: number }) : {};
        const prompt = request.prompt_tokens ?? 11;
        if (request.stream) {
          res.writeHead(200, { "content-type": "text/event-stream" });
          res.write(`data: ${JSON.stringify({ choices: [{ delta: { content: "hi" } }] })}\n\n`);
          res.write(
            `data: ${JSON.stringify({ choices: [], usage: { prompt_tokens: prompt, completion_tokens: 5, total_tokens: prompt + 5 } })}\n\n`,
          );
          res.end("data: [DONE]\n\n");
          return;
        }
        res.writeHead(200, { "content-type": "application/json" });
        res.end(
          JSON.stringify({
            choices: [{ message: { role: "assistant", content: "hello" } }],
            usage: { prompt_tokens: prompt, completion_tokens: 4, total_tokens: prompt + 4 },
          }),
        );
      });
    });
    await new Promise<void>((resolve) => upstream.listen(0, "127.0.0.1", () => resolve()));
    const upstreamPort = (upstream.address() as { port: number }).port;
    [proxyPort, metricsPort] = [await freePort(), await freePort()];
    const file = join(work, "usage-exporter.js");
    writeFileSync(file, hostProgramJavaScript("usage-exporter"));
    // From a folder without node_modules: nothing but the file and Node itself.
    exporter = spawn(
      SYSTEM_NODE,
      [
        file,
        "--listen",
        `127.0.0.1:${proxyPort}`,
        "--upstream",
        `127.0.0.1:${upstreamPort}`,
        "--metrics",
        `127.0.0.1:${metricsPort}`,
        "--state",
        join(work, "state.json"),
      ],
      { cwd: work, stdio: ["ignore", "pipe", "pipe"] },
    );
    exporter.stdout!.on("data", (chunk: Buffer) => (exporterLog += chunk.toString("utf8")));
    exporter.stderr!.on("data", (chunk: Buffer) => (exporterLog += chunk.toString("utf8")));
    const deadline = Date.now() + 15_000;
    for (;;) {
      if (exporter.exitCode !== null) throw new Error(`the exporter exited ${exporter.exitCode}: ${exporterLog}`);
      const up = await fetch(`http://127.0.0.1:${metricsPort}/metrics`).then(
        (r) => r.ok,
        () => false,
      );
      if (up) break;
      if (Date.now() > deadline) throw new Error(`the exporter's /metrics did not answer within 15 s: ${exporterLog}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  });

  afterAll(async () => {
    if (exporter && exporter.exitCode === null) {
      const exited = new Promise((resolve) => exporter!.once("exit", resolve));
      exporter.kill("SIGTERM");
      await exited;
    }
    await new Promise<void>((resolve) => (upstream ? upstream.close(() => resolve()) : resolve()));
    if (work) rmSync(work, { recursive: true, force: true });
  });

  const complete = async (team: string | undefined, body: Record<string, unknown>) => {
    const response = await fetch(`http://127.0.0.1:${proxyPort}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json", ...(team ? { "X-Kimi-Team": team } : {}) },
      body: JSON.stringify({ messages: [{ role: "user", content: "hi" }], ...body }),
    });
    expect(response.status).toBe(200);
    return response.text();
  };

  const metric = (text: string, name: string, team: string) => {
    const line = text.split("\n").find((l) => l.startsWith(`${name}{team="${team}"} `));
    return line === undefined ? undefined : Number(line.split(" ")[1]);
  };

  it("proxies bodies unchanged and counts requests and tokens per team", async () => {
    const first = JSON.parse(await complete("a", { prompt_tokens: 10 })) as { usage: { prompt_tokens: number } };
    expect(first.usage.prompt_tokens).toBe(10);
    await complete("a", { prompt_tokens: 20 });
    const streamed = await complete("b", { stream: true, prompt_tokens: 30 });
    expect(streamed).toContain("data: [DONE]");
    await complete(undefined, {});
    // A GET that is no completion passes through uncounted.
    expect((await fetch(`http://127.0.0.1:${proxyPort}/health`)).status).toBe(200);

    // The counts are recorded when the response ends: poll until the last one shows.
    const deadline = Date.now() + 10_000;
    let text: string;
    for (;;) {
      text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
      if (metric(text, "kimi_team_requests_total", "none") === 1) break;
      if (Date.now() > deadline) throw new Error(`the counts never reached /metrics:\n${text}\n${exporterLog}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(metric(text, "kimi_team_requests_total", "a")).toBe(2);
    expect(metric(text, "kimi_team_prompt_tokens_total", "a")).toBe(30);
    expect(metric(text, "kimi_team_completion_tokens_total", "a")).toBe(8);
    expect(metric(text, "kimi_team_requests_total", "b")).toBe(1);
    expect(metric(text, "kimi_team_prompt_tokens_total", "b")).toBe(30);
    expect(metric(text, "kimi_team_completion_tokens_total", "b")).toBe(5);
    expect(metric(text, "kimi_team_prompt_tokens_total", "none")).toBe(11);
    expect(text).toContain("# TYPE kimi_team_requests_total counter");
    // Exactly three teams: the /health GET was not counted.
    expect(text.split("\n").filter((l) => l.startsWith("kimi_team_requests_total{"))).toHaveLength(3);

    // The state file holds the same month-to-date counts.
    const state = JSON.parse(readFileSync(join(work, "state.json"), "utf8")) as {
      month: string;
      teams: Record<string, { requests: number; promptTokens: number }>;
    };
    expect(state.month).toBe(new Date().toISOString().slice(0, 7));
    expect(state.teams.a).toEqual({ requests: 2, promptTokens: 30, completionTokens: 8 });
  });
});

describe('hostProgramJavaScript("token-limiter")', () => {
  it("is one file of node: built-ins that the system node runs, naming a missing flag with exit 2", () => {
    const js = hostProgramJavaScript("token-limiter");
    for (const [, specifier] of js.matchAll(/\brequire\(\s*["']([^"']+)["']\s*\)/g))
      expect(specifier!.startsWith("node:") || builtinModules.includes(specifier!)).toBe(true);
    expect(hostProgramJavaScriptSha256("token-limiter")).not.toBe(hostProgramJavaScriptSha256("usage-exporter"));
    const dir = mkdtempSync(join(tmpdir(), "kimi-kit-limiter-js-"));
    try {
      writeFileSync(join(dir, "token-limiter.js"), js);
      const run = spawnSync("node", [join(dir, "token-limiter.js"), "--prometheus", "http://127.0.0.1:9"], {
        encoding: "utf8",
      });
      expect(run.status).toBe(2);
      expect(run.stderr).toContain("token-limiter: --limits is required");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
