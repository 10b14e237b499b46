/**
 * ansible-free-scripts/usage-exporter.sh for real, as root: it installs the JavaScript of
 * components/exec/host-programs.ts and runs it under the system node as a daemon with a pid file
 * (this machine has no systemd: --no-systemd; temporary --install-dir/--state-dir/--run-dir, free
 * loopback ports) in front of a small fake upstream of the test's own (a separate process: the test
 * blocks in spawnSync while the script runs). PATH drops node_modules, so `node` is the
 * distribution's, as on a host.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { delimiter, join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { hostProgramJavaScript } from "../../components/exec/host-programs";
import { freePort } from "../../lab/net";
import { until as untilCondition } from "../support/until";

const SCRIPT = resolve(__dirname, "../../ansible-free-scripts/usage-exporter.sh");
const isRoot = process.getuid?.() === 0;
const hostPath = (process.env.PATH ?? "")
  .split(delimiter)
  .filter((entry) => !entry.includes("node_modules"))
  .join(delimiter);
const hasNode = spawnSync("node", ["--version"], { env: { ...process.env, PATH: hostPath } }).status === 0;
const hasTools = ["curl", "setsid", "flock"].every(
  (tool) => spawnSync("sh", ["-c", `command -v ${tool}`]).status === 0,
);
const until = <T>(what: string, check: () => Promise<T | undefined>) =>
  untilCondition(what, check, { timeoutMs: 15_000, intervalMs: 100 });

interface Result {
  status: number | null;
  stdout: string;
  stderr: string;
}

function script(args: string[], timeoutMs = 60_000): Result {
  const r = spawnSync("bash", [SCRIPT, ...args], {
    encoding: "utf8",
    timeout: timeoutMs,
    env: { ...process.env, PATH: hostPath },
  });
  if (r.error) throw r.error;
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function keyValues(stdout: string): Record<string, string> {
  return Object.fromEntries(
    stdout
      .split("\n")
      .flatMap((line) =>
        /^[a-z0-9_]+=/.test(line) ? [[line.slice(0, line.indexOf("=")), line.slice(line.indexOf("=") + 1)]] : [],
      ),
  );
}

/** Running: it exists and is no zombie (PID 1 here may reap an orphan late). */
const alive = (pid: number) => {
  try {
    return !/^\d+ \(.*\) [ZX] /.test(readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return false;
  }
};

describe.skipIf(!isRoot || !hasNode || !hasTools)("usage-exporter.sh (daemon mode, real node)", () => {
  let work: string;
  let upstream: ChildProcess | undefined;
  let upstreamPort: number;
  let proxyPort: number;
  let metricsPort: number;
  let metricsPort2: number;

  const jsFile = () => join(work, "from", "usage-exporter.js");
  const installDir = () => join(work, "opt");
  const stateDir = () => join(work, "state");
  const runDir = () => join(work, "run");
  const stateFile = () => join(stateDir(), "r1.json");
  const dirs = () => ["--install-dir", installDir(), "--state-dir", stateDir(), "--run-dir", runDir(), "--no-systemd"];
  const apply = (metrics = metricsPort, extra: string[] = []) =>
    script([
      "apply",
      "--name",
      "r1",
      "--from",
      jsFile(),
      "--listen",
      `127.0.0.1:${proxyPort}`,
      "--upstream",
      `127.0.0.1:${upstreamPort}`,
      "--metrics",
      `127.0.0.1:${metrics}`,
      ...dirs(),
      "--ready-seconds",
      "30",
      ...extra,
    ]);
  const log = () =>
    existsSync(join(runDir(), "usage-r1.log"))
      ? readFileSync(join(runDir(), "usage-r1.log"), "utf8").slice(-2000)
      : "(no log)";
  const expectOk = (r: Result) =>
    expect(r.status, `stdout:\n${r.stdout}\nstderr:\n${r.stderr}\nexporter log:\n${log()}`).toBe(0);

  const metricsText = async (port: number) => {
    const response = await fetch(`http://127.0.0.1:${port}/metrics`);
    return response.ok ? response.text() : undefined;
  };
  const metric = (text: string, name: string, team: string) => {
    const line = text.split("\n").find((l) => l.startsWith(`${name}{team="${team}"} `));
    return line === undefined ? undefined : Number(line.split(" ")[1]);
  };
  /** Polls /metrics until team's request count is `requests`; returns the text. */
  const countsReach = (port: number, team: string, requests: number) =>
    until(`team ${team} at ${requests} requests on :${port}`, async () => {
      const text = await metricsText(port);
      return text !== undefined && metric(text, "kimi_team_requests_total", team) === requests ? text : undefined;
    });
  const complete = async (team: string) => {
    const response = await fetch(`http://127.0.0.1:${proxyPort}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json", "X-Kimi-Team": team },
      body: JSON.stringify({ messages: [{ role: "user", content: "hi" }] }),
    });
    expect(response.status).toBe(200);
    const body = (await response.json()) as { usage: { prompt_tokens: number; completion_tokens: number } };
    expect(body.usage).toEqual({ prompt_tokens: 12, completion_tokens: 5, total_tokens: 17 });
  };

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), "kimi-usage-exporter-script-"));
    mkdirSync(join(work, "from"));
    writeFileSync(jsFile(), hostProgramJavaScript("usage-exporter"));
    [upstreamPort, proxyPort, metricsPort, metricsPort2] = [
      await freePort(),
      await freePort(),
      await freePort(),
      await freePort(),
    ];
    const fake = `
      require("http").createServer((req, res) => {
        req.resume();
        req.on("end", () => {
          res.setHeader("content-type", "application/json");
          res.end(JSON.stringify({ choices: [{ message: { role: "assistant", content: "hello" } }], usage: { prompt_tokens: 12, completion_tokens: 5, total_tokens: 17 } }));
        });
      }).listen(${upstreamPort}, "127.0.0.1", () => console.log("ready"));`;
    upstream = spawn(process.execPath, ["-e", fake], { stdio: ["ignore", "pipe", "inherit"] });
    await new Promise<void>((ready, fail) => {
      upstream!.stdout!.once("data", () => ready());
      upstream!.once("exit", (code) => fail(new Error(`the fake upstream exited ${code}`)));
    });
  });

  afterAll(async () => {
    if (work) {
      script(["remove", "--name", "r1", ...dirs()]);
    }
    if (upstream && upstream.exitCode === null) {
      const exited = new Promise((r) => upstream!.once("exit", r));
      upstream.kill("SIGTERM");
      await exited;
    }
    if (work) rmSync(work, { recursive: true, force: true });
  });

  let firstPid: number;

  it("applies: installs the file, starts the daemon, and counts a team's request in /metrics", async () => {
    const r = apply();
    expectOk(r);
    const out = keyValues(r.stdout);
    expect(out.usage_exporter).toBe(`127.0.0.1:${proxyPort}`);
    expect(out.metrics).toBe(`127.0.0.1:${metricsPort}`);
    expect(out.changed).toBe("yes");
    firstPid = Number(out.pid);
    expect(firstPid).toBeGreaterThan(1);
    expect(alive(firstPid)).toBe(true);
    expect(readFileSync(join(installDir(), "r1", "usage-exporter.js"), "utf8")).toBe(
      hostProgramJavaScript("usage-exporter"),
    );
    expect(readFileSync(join(runDir(), "usage-r1.pid"), "utf8").trim()).toBe(String(firstPid));

    await complete("a");
    const text = await countsReach(metricsPort, "a", 1);
    expect(metric(text, "kimi_team_prompt_tokens_total", "a")).toBe(12);
    expect(metric(text, "kimi_team_completion_tokens_total", "a")).toBe(5);
    await until("the state file to hold team a", async () =>
      existsSync(stateFile()) && readFileSync(stateFile(), "utf8").includes('"a"') ? true : undefined,
    );
  }, 90_000);

  it("re-applies unchanged: changed=no, same pid", () => {
    const r = apply();
    expectOk(r);
    const out = keyValues(r.stdout);
    expect(out.changed).toBe("no");
    expect(Number(out.pid)).toBe(firstPid);
    expect(alive(firstPid)).toBe(true);
  }, 90_000);

  it("a changed apply restarts it, and the counts survive through the state file", async () => {
    await complete("a");
    await countsReach(metricsPort, "a", 2);
    const r = apply(metricsPort2);
    expectOk(r);
    const out = keyValues(r.stdout);
    expect(out.changed).toBe("yes");
    expect(out.metrics).toBe(`127.0.0.1:${metricsPort2}`);
    const pid = Number(out.pid);
    expect(pid).not.toBe(firstPid);
    expect(alive(firstPid)).toBe(false);
    // The new process read the month's counts back, then keeps counting.
    const restored = await countsReach(metricsPort2, "a", 2);
    expect(metric(restored, "kimi_team_prompt_tokens_total", "a")).toBe(24);
    await complete("a");
    const after = await countsReach(metricsPort2, "a", 3);
    expect(metric(after, "kimi_team_completion_tokens_total", "a")).toBe(15);
    // The old metrics listener is gone with the old process.
    await expect(fetch(`http://127.0.0.1:${metricsPort}/metrics`)).rejects.toThrow();

    // A changed file (same arguments) restarts it too; the counts stay.
    writeFileSync(jsFile(), `${hostProgramJavaScript("usage-exporter")}// another build\n`);
    const again = apply(metricsPort2);
    expectOk(again);
    expect(keyValues(again.stdout).changed).toBe("yes");
    firstPid = Number(keyValues(again.stdout).pid);
    expect(firstPid).not.toBe(pid);
    expect(alive(pid)).toBe(false);
    expect(readFileSync(join(installDir(), "r1", "usage-exporter.js"), "utf8")).toContain("// another build");
    await countsReach(metricsPort2, "a", 3);
  }, 90_000);

  it("status reports it running, with its listeners and state file", () => {
    const r = script(["status", "--name", "r1", ...dirs()]);
    expectOk(r);
    const out = keyValues(r.stdout);
    expect(out).toMatchObject({
      usage_exporter: `127.0.0.1:${proxyPort}`,
      upstream: `127.0.0.1:${upstreamPort}`,
      metrics: `127.0.0.1:${metricsPort2}`,
      pid: String(firstPid),
      ready: "yes",
      state: stateFile(),
    });
  });

  it("refuses an unreadable --from and a bad --listen with exit 2, naming the flag, and leaves it running", () => {
    const missing = script([
      "apply",
      "--name",
      "r1",
      "--from",
      join(work, "nope.js"),
      "--listen",
      `127.0.0.1:${proxyPort}`,
      "--upstream",
      `127.0.0.1:${upstreamPort}`,
      "--metrics",
      `127.0.0.1:${metricsPort2}`,
      ...dirs(),
    ]);
    expect(missing.status).toBe(2);
    expect(missing.stderr).toContain("--from");
    const folder = script([
      "apply",
      "--name",
      "r1",
      "--from",
      work,
      "--listen",
      `127.0.0.1:${proxyPort}`,
      "--upstream",
      `127.0.0.1:${upstreamPort}`,
      "--metrics",
      `127.0.0.1:${metricsPort2}`,
      ...dirs(),
    ]);
    expect(folder.status).toBe(2);
    expect(folder.stderr).toContain("--from");
    for (const bad of ["127.0.0.1", "127.0.0.1:0", "127.0.0.1:70000", "localhost:8080", "300.1.1.1:80"]) {
      const r = script([
        "apply",
        "--name",
        "r1",
        "--from",
        jsFile(),
        "--listen",
        bad,
        "--upstream",
        `127.0.0.1:${upstreamPort}`,
        "--metrics",
        `127.0.0.1:${metricsPort2}`,
        ...dirs(),
      ]);
      expect(r.status, `--listen ${bad}: ${r.stderr}`).toBe(2);
      expect(r.stderr).toContain("--listen");
    }
    expect(alive(firstPid)).toBe(true);
  });

  it("remove stops it and deletes the installed file but keeps the state; status then exits 3", async () => {
    const r = script(["remove", "--name", "r1", ...dirs()]);
    expectOk(r);
    expect(keyValues(r.stdout).usage_exporter).toBe("removed");
    await until("the exporter to exit", async () => (alive(firstPid) ? undefined : true));
    expect(existsSync(join(installDir(), "r1"))).toBe(false);
    expect(existsSync(join(runDir(), "usage-r1.pid"))).toBe(false);
    const state = JSON.parse(readFileSync(stateFile(), "utf8")) as { teams: Record<string, unknown> };
    expect(state.teams.a).toEqual({ requests: 3, promptTokens: 36, completionTokens: 15 });

    const status = script(["status", "--name", "r1", ...dirs()]);
    expect(status.status).toBe(3);
    expect(keyValues(status.stdout).usage_exporter).toBe("absent");

    // A removed exporter's next apply starts from the kept month-to-date counts.
    expectOk(apply());
    await countsReach(metricsPort, "a", 3);
    const purge = script(["remove", "--name", "r1", "--purge-state", ...dirs()]);
    expectOk(purge);
    expect(existsSync(stateFile())).toBe(false);
  }, 90_000);
});
