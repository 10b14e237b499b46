/**
 * ansible-free-scripts/monitoring.sh for real: the Debian prometheus run by the script (daemon mode
 * with a pid file: this machine has no systemd; temporary --config-dir/--data-dir/--run-dir, a free
 * loopback port) with the kit's generated config and rules. It scrapes a small HTTP server of the
 * test's own that serves /metrics only with the right Bearer key, as llama-server does with
 * --api-key-file, so the target is up only when the key given on stdin reaches Prometheus (the
 * config names the key file relative to itself, MONITORING_BEARER_TOKEN_FILE).
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { alertRules, MONITORING_BEARER_TOKEN_FILE, prometheusConfig, type TeamPricing } from "../../planner/monitoring";
import { freePort } from "../../lab/net";
import { run, type Result } from "../../lab/spawn";
import { until as untilCondition } from "../support/until";

const SCRIPT = resolve(__dirname, "../../ansible-free-scripts/monitoring.sh");
const KEY = "replica-key-7f3a9c";
const hasPrometheus =
  spawnSync("prometheus", ["--version"]).status === 0 && spawnSync("promtool", ["--version"]).status === 0;
const isRoot = process.getuid?.() === 0;

let work: string;
let exporter: ChildProcess;
let exporterPort: number;
let promPort: number;

const from = () => join(work, "from");
const configDir = () => join(work, "etc");
const dataDir = () => join(work, "data");
const runDir = () => join(work, "run");
const until = <T>(what: string, check: () => Promise<T | undefined>) =>
  untilCondition(what, check, {
    context: () =>
      `prometheus log:\n${existsSync(join(runDir(), "monitoring-t.log")) ? readFileSync(join(runDir(), "monitoring-t.log"), "utf8").slice(-2000) : ""}`,
  });
const dirs = () => ["--config-dir", configDir(), "--data-dir", dataDir(), "--run-dir", runDir(), "--no-systemd"];

function keyValues(stdout: string): Record<string, string> {
  return Object.fromEntries(
    stdout
      .split("\n")
      .flatMap((line) =>
        /^([a-z0-9_]+)=(.*)$/.exec(line) ? [[line.slice(0, line.indexOf("=")), line.slice(line.indexOf("=") + 1)]] : [],
      ),
  );
}

function apply(extra: string[] = [], input?: string): Result {
  return run(
    [
      "bash",
      SCRIPT,
      "apply",
      "--name",
      "t",
      "--from",
      from(),
      "--listen",
      `127.0.0.1:${promPort}`,
      ...dirs(),
      "--ready-seconds",
      "30",
      ...extra,
    ],
    input,
    90_000,
  );
}

const teams: TeamPricing[] = [
  { name: "alpha", monthlyBudgetUsd: 100, usdPerInputToken: 1e-6, usdPerOutputToken: 1e-5 },
];

/** Writes the planner's files into --from: the config names rules.yml and the key file relative to itself. */
function writeFrom(rules: string, config?: string): void {
  mkdirSync(from(), { recursive: true });
  writeFileSync(join(from(), "rules.yml"), rules);
  writeFileSync(
    join(from(), "prometheus.yml"),
    config ??
      prometheusConfig({
        scrapeIntervalSeconds: 1,
        replicas: [{ name: "r1", address: "127.0.0.1", port: exporterPort }],
        ruleFiles: ["rules.yml"],
        replicaBearerTokenFile: MONITORING_BEARER_TOKEN_FILE,
      }),
  );
}

const baseRules = () => alertRules({ projectedDecodeTokensPerSecond: 5, slotsPerReplica: 2, teams: [] });
const rulesWithBudget = () => alertRules({ projectedDecodeTokensPerSecond: 5, slotsPerReplica: 2, teams });

async function api<T>(path: string): Promise<T> {
  const response = await fetch(`http://127.0.0.1:${promPort}${path}`);
  const body = (await response.json()) as { status: string; data: T };
  if (body.status !== "success") throw new Error(`${path}: ${JSON.stringify(body)}`);
  return body.data;
}

interface Target {
  labels: Record<string, string>;
  health: string;
  lastError: string;
}
const replicaTarget = async () =>
  (await api<{ activeTargets: Target[] }>("/api/v1/targets")).activeTargets.find(
    (t) => t.labels.job === "llama-server" && t.labels.replica === "r1",
  );
const targetHealth = (health: "up" | "down") =>
  until(`the replica target ${health}`, async () =>
    (await replicaTarget())?.health === health ? await replicaTarget() : undefined,
  );
const ruleNames = async () =>
  (await api<{ groups: { rules: { name: string }[] }[] }>("/api/v1/rules")).groups.flatMap((g) =>
    g.rules.map((r) => r.name),
  );
const alive = (pid: number) => existsSync(`/proc/${pid}`);
const fileHash = (path: string) =>
  existsSync(path) ? createHash("sha256").update(readFileSync(path)).digest("hex") : "absent";
const installed = () =>
  Object.fromEntries(["prometheus.yml", "rules.yml", "bearer-token"].map((f) => [f, fileHash(join(configDir(), f))]));
let distroConfigBefore: string;

beforeAll(async () => {
  if (!hasPrometheus || !isRoot) return;
  work = mkdtempSync(join(tmpdir(), "kimi-monitoring-script-"));
  distroConfigBefore = fileHash("/etc/prometheus/prometheus.yml");
  [exporterPort, promPort] = [await freePort(), await freePort()];
  // Its own process: the script tests block in spawnSync while Prometheus scrapes.
  const script = `
    require("http").createServer((req, res) => {
      if (req.url !== "/metrics") { res.statusCode = 404; return res.end(); }
      if (req.headers.authorization !== ${JSON.stringify(`Bearer ${KEY}`)}) { res.statusCode = 401; return res.end("Unauthorized"); }
      res.setHeader("content-type", "text/plain; version=0.0.4");
      res.end("# TYPE kimi_test_up gauge\\nkimi_test_up 1\\n");
    }).listen(${exporterPort}, "127.0.0.1", () => console.log("ready"));`;
  exporter = spawn(process.execPath, ["-e", script], { stdio: ["ignore", "pipe", "inherit"] });
  await new Promise<void>((ready, fail) => {
    exporter.stdout!.once("data", () => ready());
    exporter.once("exit", (code) => fail(new Error(`the exporter exited ${code}`)));
  });
});

afterAll(() => {
  if (!work) return;
  const pidFile = join(runDir(), "monitoring-t.pid");
  const pid = existsSync(pidFile) ? Number(readFileSync(pidFile, "utf8").trim()) : undefined;
  run(["bash", SCRIPT, "remove", "--name", "t", "--purge-data", ...dirs()]);
  if (pid !== undefined && alive(pid)) process.kill(pid, "SIGKILL");
  exporter?.kill("SIGKILL");
  rmSync(work, { recursive: true, force: true });
  // The distribution's own configuration is never the kit's to write.
  expect(fileHash("/etc/prometheus/prometheus.yml")).toBe(distroConfigBefore);
});

describe.skipIf(!hasPrometheus || !isRoot)(
  `monitoring.sh with a real Prometheus${hasPrometheus ? "" : " (skipped: no prometheus; apt-get install prometheus)"}${isRoot ? "" : " (skipped: needs root)"}`,
  () => {
    let pid: number;

    it("the exporter wants the key (the control: without it /metrics is refused)", async () => {
      expect((await fetch(`http://127.0.0.1:${exporterPort}/metrics`)).status).toBe(401);
      expect(
        (await fetch(`http://127.0.0.1:${exporterPort}/metrics`, { headers: { authorization: `Bearer ${KEY}` } }))
          .status,
      ).toBe(200);
    });

    it("refuses a public listener and a key the config would not send, before touching anything", () => {
      writeFrom(baseRules());
      const open = run([
        "bash",
        SCRIPT,
        "apply",
        "--name",
        "t",
        "--from",
        from(),
        "--listen",
        `0.0.0.0:${promPort}`,
        ...dirs(),
      ]);
      expect(open.status, open.stderr).toBe(2);
      expect(open.stderr).toMatch(/neither loopback nor private/);
      expect(
        run([
          "bash",
          SCRIPT,
          "apply",
          "--name",
          "t",
          "--from",
          from(),
          "--listen",
          `203.0.113.5:${promPort}`,
          ...dirs(),
        ]).status,
      ).toBe(2);
      writeFrom(
        baseRules(),
        prometheusConfig({
          scrapeIntervalSeconds: 1,
          replicas: [{ name: "r1", address: "127.0.0.1", port: exporterPort }],
          ruleFiles: ["rules.yml"],
        }),
      );
      const unused = apply(["--bearer-stdin"], `${KEY}\n`);
      expect(unused.status).toBe(1);
      expect(unused.stderr).toMatch(/names no credentials_file/);
      // The key goes where the config's credentials_file points, but only into --config-dir.
      writeFrom(
        baseRules(),
        prometheusConfig({
          scrapeIntervalSeconds: 1,
          replicas: [{ name: "r1", address: "127.0.0.1", port: exporterPort }],
          ruleFiles: ["rules.yml"],
          replicaBearerTokenFile: join(work, "elsewhere"),
        }),
      );
      const outside = apply(["--bearer-stdin"], `${KEY}\n`);
      expect(outside.status).toBe(1);
      expect(outside.stderr).toMatch(/must be a file in --config-dir/);
      expect(existsSync(join(work, "elsewhere"))).toBe(false);
      expect(existsSync(join(configDir(), "prometheus.yml"))).toBe(false);
    });

    it("apply starts Prometheus with the key from stdin, and the key-protected target comes up", async () => {
      writeFrom(baseRules());
      const r = apply(["--bearer-stdin"], `${KEY}\nignored second line\n`);
      expect(r.status, r.stderr).toBe(0);
      const out = keyValues(r.stdout);
      expect(out).toMatchObject({ monitoring: `127.0.0.1:${promPort}`, changed: "yes" });
      pid = Number(out.pid);
      expect(pid).toBeGreaterThan(1);
      expect(readFileSync(join(runDir(), "monitoring-t.pid"), "utf8").trim()).toBe(String(pid));
      expect(readFileSync(join(configDir(), "bearer-token"), "utf8")).toBe(`${KEY}\n`);
      for (const file of ["prometheus.yml", "rules.yml", "bearer-token"])
        expect((statSync(join(configDir(), file)).mode & 0o777).toString(8), file).toBe("600");
      expect((statSync(configDir()).mode & 0o777).toString(8)).toBe("700");
      expect((await fetch(`http://127.0.0.1:${promPort}/-/ready`)).status).toBe(200);

      const target = await targetHealth("up");
      expect(target!.lastError).toBe("");
      const samples = await until("the scraped series", async () => {
        const data = await api<{ result: { metric: Record<string, string>; value: [number, string] }[] }>(
          `/api/v1/query?query=${encodeURIComponent("kimi_test_up")}`,
        );
        return data.result.length > 0 ? data.result : undefined;
      });
      expect(samples[0]!.metric).toMatchObject({ job: "llama-server", replica: "r1" });
      expect(await ruleNames()).not.toContain("TeamBudget80");
    }, 120_000);

    it("re-applying the same files (and key) changes nothing: same process, changed=no", () => {
      const r = apply(["--bearer-stdin"], `${KEY}\n`);
      expect(r.status, r.stderr).toBe(0);
      expect(keyValues(r.stdout)).toEqual({ monitoring: `127.0.0.1:${promPort}`, pid: String(pid), changed: "no" });
      // Without --bearer-stdin the installed key is kept, and nothing changes either.
      const again = apply();
      expect(keyValues(again.stdout)).toMatchObject({ pid: String(pid), changed: "no" });
      expect(readFileSync(join(configDir(), "bearer-token"), "utf8")).toBe(`${KEY}\n`);
    });

    it("a wrong key is reloaded in and the target goes down with 401; the right key brings it back", async () => {
      const wrong = apply(["--bearer-stdin"], "not-the-key\n");
      expect(wrong.status, wrong.stderr).toBe(0);
      expect(keyValues(wrong.stdout)).toMatchObject({ pid: String(pid), changed: "yes" });
      const down = await targetHealth("down");
      expect(down!.lastError).toMatch(/401/);
      const right = apply(["--bearer-stdin"], `${KEY}\n`);
      expect(keyValues(right.stdout)).toMatchObject({ pid: String(pid), changed: "yes" });
      await targetHealth("up");
    }, 120_000);

    it("a changed rules file is reloaded (SIGHUP, same process) and its new rule is served", async () => {
      writeFrom(rulesWithBudget());
      const r = apply();
      expect(r.status, r.stderr).toBe(0);
      expect(keyValues(r.stdout)).toMatchObject({ pid: String(pid), changed: "yes" });
      // The script waits for the reload, so the rule is there at once.
      const names = await ruleNames();
      expect(names).toContain("TeamBudget80");
      expect(names).toContain("ReplicaDown");
    });

    it("a configuration promtool refuses fails, keeps the previous files, and the running Prometheus keeps serving", async () => {
      const before = installed();
      writeFrom(rulesWithBudget().replace("== 0", "== == 0"));
      const r = apply(["--bearer-stdin"], "another-key\n");
      expect(r.status).toBe(1);
      expect(r.stderr).toMatch(/promtool refused/);
      expect(installed()).toEqual(before);
      expect(readdirHidden()).toEqual([]);
      expect(alive(pid)).toBe(true);
      expect((await fetch(`http://127.0.0.1:${promPort}/-/ready`)).status).toBe(200);
      expect(await ruleNames()).toContain("TeamBudget80");
      expect((await replicaTarget())?.health).toBe("up");
      // The kept files still apply cleanly: nothing to do.
      writeFrom(rulesWithBudget());
      expect(keyValues(apply().stdout)).toMatchObject({ pid: String(pid), changed: "no" });
    });

    it("status reports the running instance; remove stops it, deletes the config and keeps the data", () => {
      const status = run(["bash", SCRIPT, "status", "--name", "t", ...dirs()]);
      expect(status.status, status.stderr).toBe(0);
      expect(keyValues(status.stdout)).toEqual({ monitoring: `127.0.0.1:${promPort}`, pid: String(pid), ready: "yes" });

      const removed = run(["bash", SCRIPT, "remove", "--name", "t", ...dirs()]);
      expect(removed.status, removed.stderr).toBe(0);
      expect(keyValues(removed.stdout)).toEqual({ monitoring: "removed" });
      expect(alive(pid)).toBe(false);
      expect(existsSync(configDir())).toBe(false);
      expect(existsSync(join(runDir(), "monitoring-t.pid"))).toBe(false);
      expect(existsSync(join(dataDir(), "wal"))).toBe(true);

      const gone = run(["bash", SCRIPT, "status", "--name", "t", ...dirs()]);
      expect(gone.status).toBe(3);
      expect(keyValues(gone.stdout)).toEqual({ monitoring: "absent" });
      // Removing again is fine; --purge-data then deletes the data folder it created.
      expect(run(["bash", SCRIPT, "remove", "--name", "t", "--purge-data", ...dirs()]).status).toBe(0);
      expect(existsSync(dataDir())).toBe(false);
    });
  },
);

/** Leftover backup folders in --config-dir (the script removes its own on every exit). */
function readdirHidden(): string[] {
  return run(["find", configDir(), "-mindepth", "1", "-name", ".previous.*"]).stdout.split("\n").filter(Boolean);
}
