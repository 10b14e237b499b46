/**
 * token-limiter.sh's refusals: every bad flag exits 2 naming the flag and the value, and an apply
 * that cannot work (not the limiter's program, no gateway socket) exits 1 saying why, before it
 * installs or starts anything. Its working path runs against real HAProxy and Prometheus in
 * test/scripts/monitoring.test.ts.
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { hostProgramJavaScript } from "../../components/exec/host-programs";

const SCRIPT = resolve(__dirname, "../../ansible-free-scripts/token-limiter.sh");
const dir = mkdtempSync(join(tmpdir(), "kimi-kit-limiter-script-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const base = () => [
  "apply",
  "--name",
  "t",
  "--from",
  join(dir, "token-limiter.js"),
  "--prometheus",
  "http://127.0.0.1:9",
  "--limits",
  join(dir, "limits"),
  "--socket",
  join(dir, "admin.sock"),
  "--blocked-map",
  join(dir, "blocked.map"),
  "--interval",
  "10",
  "--install-dir",
  join(dir, "install"),
  "--run-dir",
  join(dir, "run"),
  "--no-systemd",
];
const run = (argv: string[]) => spawnSync("bash", [SCRIPT, ...argv], { encoding: "utf8" });
const replaced = (flag: string, value: string) =>
  base().map((arg, index, all) => (all[index - 1] === flag ? value : arg));

writeFileSync(join(dir, "token-limiter.js"), hostProgramJavaScript("token-limiter"));
writeFileSync(join(dir, "limits"), "alpha 100\n");

describe("token-limiter.sh refuses bad input, naming it", () => {
  it.each([
    ["--prometheus", "not a url", "--prometheus wants a URL like http://127.0.0.1:9190, got 'not a url'"],
    ["--limits", "relative/limits", "--limits wants an absolute path without spaces, got 'relative/limits'"],
    ["--interval", "0", "--interval wants at least 1 second, got '0'"],
    ["--name", "bad name", "--name"],
  ])("%s %j → exit 2", (flag, value, message) => {
    const result = run(replaced(flag, value));
    expect(result.status).toBe(2);
    expect(result.stderr).toContain(message);
  });

  it("a missing required flag → exit 2 naming it", () => {
    const argv = base().filter((arg, index, all) => arg !== "--socket" && all[index - 1] !== "--socket");
    const result = run(argv);
    expect(result.status).toBe(2);
    expect(result.stderr).toContain("--socket is required");
  });

  it.skipIf(process.getuid?.() !== 0)(
    "no gateway socket, or a file that is not the limiter → exit 1, nothing installed",
    () => {
      const noSocket = run(base());
      expect(noSocket.status).toBe(1);
      expect(noSocket.stderr).toContain(
        `--socket ${join(dir, "admin.sock")} is not a socket (is the gateway running?)`,
      );
      writeFileSync(join(dir, "other.js"), "console.log('hello');\n");
      const other = run(replaced("--from", join(dir, "other.js")));
      expect(other.status).toBe(1);
      expect(other.stderr).toContain("is not the token limiter (no TOKENS_LAST_MINUTE_QUERY in it)");
      expect(existsSync(join(dir, "install", "t"))).toBe(false);
    },
  );
});
