/**
 * ansible-free-scripts/front-door.sh for real: the Debian haproxy terminating TLS on loopback in
 * front of a real HTTP backend (a small Node server that echoes what reached it), checked with curl.
 * The script's files go to a temporary --config-dir/--run-dir; this machine has no systemd, so
 * HAProxy runs in daemon mode with a pid file, as on the test host.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { spawn, type ChildProcess } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { freePort } from "../../lab/net";
import { run, type Result } from "../../lab/spawn";

const SCRIPT = resolve(__dirname, "../../ansible-free-scripts/front-door.sh");

function keyValues(stdout: string): Record<string, string> {
  return Object.fromEntries(
    stdout
      .split("\n")
      .flatMap((line) =>
        /^([a-z0-9_]+)=(.*)$/.exec(line) ? [[line.slice(0, line.indexOf("=")), line.slice(line.indexOf("=") + 1)]] : [],
      ),
  );
}

let work: string;
let backend: ChildProcess;
let backendPort: number;
let port: number;
/**
 * The requests that reached the backend, one line each (the backend is its own process: the test blocks in spawnSync).
 */
const seen = () =>
  existsSync(join(work, "backend.log"))
    ? readFileSync(join(work, "backend.log"), "utf8").split("\n").filter(Boolean)
    : [];
const haproxyCfgHash = () =>
  existsSync("/etc/haproxy/haproxy.cfg")
    ? createHash("sha256").update(readFileSync("/etc/haproxy/haproxy.cfg")).digest("hex")
    : "absent";
let distroCfgBefore: string;

const configDir = () => join(work, "etc");
const runDir = () => join(work, "run");
const pidFile = (name: string) => join(runDir(), `front-door-${name}.pid`);
const dirs = () => ["--config-dir", configDir(), "--run-dir", runDir(), "--no-systemd"];

function up(extra: string[] = [], input?: string, name = "t"): Result {
  return run(
    [
      "bash",
      SCRIPT,
      "up",
      "--name",
      name,
      "--listen",
      "127.0.0.1",
      "--port",
      String(port),
      "--backend-port",
      String(backendPort),
      ...dirs(),
      "--ready-seconds",
      "20",
      ...extra,
    ],
    input,
  );
}

function down(name = "t"): Result {
  return run(["bash", SCRIPT, "down", "--name", name, ...dirs()]);
}

/** curl over https to the front door; `ca` is the file curl trusts. */
function curl(
  ca: string | undefined,
  path: string,
  headers: string[] = [],
  scheme = "https",
): Result & { code: string } {
  const args = ["curl", "-sS", "--max-time", "10", "-o", "-", "-w", "\n%{http_code}"];
  if (ca) args.push("--cacert", ca);
  for (const header of headers) args.push("-H", header);
  const r = run([...args, `${scheme}://127.0.0.1:${port}${path}`]);
  const cut = r.stdout.lastIndexOf("\n");
  return { ...r, stdout: r.stdout.slice(0, Math.max(cut, 0)), code: r.stdout.slice(cut + 1) };
}

function writeCa(stdout: string, file: string): string {
  const b64 = keyValues(stdout).ca_certificate_base64;
  if (!b64) throw new Error(`no ca_certificate_base64 in:\n${stdout}`);
  writeFileSync(join(work, file), Buffer.from(b64, "base64"));
  return join(work, file);
}

/** A self-signed CA of its own (the wrong one), or a certificate + key for --tls secrets. */
function selfSigned(name: string, san: string): { cert: string; key: string } {
  const cert = join(work, `${name}.crt`);
  const key = join(work, `${name}.key`);
  const r = run([
    "openssl",
    "req",
    "-x509",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-nodes",
    "-days",
    "2",
    "-subj",
    `/CN=${name}`,
    "-addext",
    `subjectAltName=${san}`,
    "-keyout",
    key,
    "-out",
    cert,
  ]);
  if (r.status !== 0) throw new Error(r.stderr);
  return { cert, key };
}

const pidOf = (name = "t") => Number(readFileSync(pidFile(name), "utf8").trim());
const alive = (pid: number) => existsSync(`/proc/${pid}`);

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), "kimi-front-door-"));
  distroCfgBefore = haproxyCfgHash();
  [port, backendPort] = [await freePort(), await freePort()];
  const script = `
    const fs = require("fs");
    require("http").createServer((req, res) => {
      fs.appendFileSync(${JSON.stringify(join(work, "backend.log"))}, req.method + " " + req.url + "\\n");
      res.setHeader("content-type", "application/json");
      res.end(JSON.stringify({ backend: true, url: req.url, proto: req.headers["x-forwarded-proto"] ?? null }));
    }).listen(${backendPort}, "127.0.0.1", () => console.log("ready"));`;
  backend = spawn(process.execPath, ["-e", script], { stdio: ["ignore", "pipe", "inherit"] });
  await new Promise<void>((ready, fail) => {
    backend.stdout!.once("data", () => ready());
    backend.once("exit", (code) => fail(new Error(`the backend exited ${code}`)));
  });
});

afterAll(async () => {
  for (const name of ["t", "s"]) {
    const pid = existsSync(pidFile(name)) ? pidOf(name) : undefined;
    down(name);
    if (pid !== undefined && alive(pid)) process.kill(pid, "SIGKILL");
  }
  backend.kill("SIGKILL");
  rmSync(work, { recursive: true, force: true });
  // The distribution's own configuration is never the kit's to write.
  expect(haproxyCfgHash()).toBe(distroCfgBefore);
});

describe("front-door.sh up (internal CA)", () => {
  const BASE_NAMES = ["--san", "llm.example.internal"];
  /**
   * The front door with these arguments, brought up (or left as it is when it already runs them), and
   * the kit's CA it prints: each test starts from what it needs, so any one runs alone too.
   */
  const ensureUp = (args: string[] = BASE_NAMES): string => {
    const r = up(args);
    expect(r.status, r.stderr).toBe(0);
    return writeCa(r.stdout, "kit-ca.pem");
  };

  it("serves the backend over TLS to a client that trusts the kit's CA", () => {
    down();
    const r = up(BASE_NAMES);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).not.toMatch(/ALERT|WARNING/);
    const out = keyValues(r.stdout);
    expect(out).toMatchObject({ front_door: `127.0.0.1:${port}`, tls_source: "internal-ca", changed: "yes" });
    const ca = writeCa(r.stdout, "kit-ca.pem");
    const ok = curl(ca, "/v1/models", ["Authorization: Bearer some-key"]);
    expect(ok.stderr).toBe("");
    expect(ok.code).toBe("200");
    expect(JSON.parse(ok.stdout)).toEqual({ backend: true, url: "/v1/models", proto: "https" });
    // The CA is a CA, the server certificate names what clients dial.
    const text = run(["openssl", "x509", "-in", join(configDir(), "server.pem"), "-noout", "-text"]).stdout;
    expect(text).toMatch(/DNS:llm\.example\.internal/);
    expect(text).toMatch(/IP Address:127\.0\.0\.1/);
    expect(text).toMatch(/TLS Web Server Authentication/);
    // HAProxy serves as the package's unprivileged user, not as root.
    const uid = /^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${pidOf()}/status`, "utf8"))?.[1];
    expect(uid).toBe(run(["id", "-u", "haproxy"]).stdout.trim());
    expect(uid).not.toBe("0");
  });

  it("refuses plain http on the TLS port, and a client with another CA fails verification", () => {
    ensureUp();
    const plain = curl(undefined, "/v1/models", ["Authorization: Bearer some-key"], "http");
    expect(plain.status).not.toBe(0);
    expect(plain.code).toBe("000");
    const wrong = selfSigned("wrong-ca", "DNS:wrong.example");
    const bad = curl(wrong.cert, "/v1/models", ["Authorization: Bearer some-key"]);
    expect(bad.status).toBe(60); // curl: peer certificate cannot be authenticated with the given CA
    expect(bad.code).toBe("000");
    // Without any CA option curl's system store does not know the kit's CA either.
    expect(curl(undefined, "/v1/models").status).toBe(60);
  });

  it("answers 401 at the proxy without an API key, /health and the web UI included, and never forwards it", () => {
    const ca = ensureUp();
    const before = seen().length;
    for (const path of ["/health", "/", "/v1/models", "/metrics"]) {
      const r = curl(ca, path);
      expect(r.code, path).toBe("401");
      expect(r.stdout).toContain("an API key is required");
    }
    expect(curl(ca, "/v1/models", ["X-Api-Key: k"]).code).toBe("200");
    expect(seen().slice(before)).toEqual(["GET /v1/models"]);
  });

  it("keeps every file it writes 0600 in a 0700 folder", () => {
    ensureUp();
    expect(statSync(configDir()).mode & 0o777).toBe(0o700);
    const files = readdirSync(configDir());
    expect(files.sort()).toEqual(["applied.sha256", "ca.crt", "ca.key", "haproxy.cfg", "server.names", "server.pem"]);
    for (const file of files) expect(statSync(join(configDir(), file)).mode & 0o777, file).toBe(0o600);
  });

  it("re-running with the same inputs changes nothing: same process, same certificate", () => {
    ensureUp();
    const pid = pidOf();
    const cert = readFileSync(join(configDir(), "server.pem"), "utf8");
    const r = up(BASE_NAMES);
    expect(r.status, r.stderr).toBe(0);
    expect(keyValues(r.stdout).changed).toBe("no");
    expect(r.stderr).toBe("");
    expect(pidOf()).toBe(pid);
    expect(readFileSync(join(configDir(), "server.pem"), "utf8")).toBe(cert);
  });

  it("new names re-issue the server certificate from the same CA and reload HAProxy, which keeps serving", () => {
    const ca = ensureUp();
    const pid = pidOf();
    const caText = readFileSync(join(configDir(), "ca.crt"), "utf8");
    const r = up(["--san", "llm.example.internal", "--san", "192.0.2.10"]);
    expect(r.status, r.stderr).toBe(0);
    expect(keyValues(r.stdout).changed).toBe("yes");
    expect(readFileSync(join(configDir(), "ca.crt"), "utf8")).toBe(caText);
    expect(
      run(["openssl", "x509", "-in", join(configDir(), "server.pem"), "-noout", "-ext", "subjectAltName"]).stdout,
    ).toContain("IP Address:192.0.2.10");
    expect(pidOf()).not.toBe(pid);
    expect(curl(ca, "/v1/models", ["Authorization: Bearer k"]).code).toBe("200");
  });

  it("--web-ui lets the UI's pages load without a key; the API still wants one", () => {
    const ca = ensureUp([...BASE_NAMES, "--san", "192.0.2.10", "--web-ui"]);
    expect(curl(ca, "/").code).toBe("200");
    expect(curl(ca, "/health").code).toBe("401");
    expect(curl(ca, "/v1/models").code).toBe("401");
    const post = run([
      "curl",
      "-sS",
      "-o",
      "/dev/null",
      "-w",
      "%{http_code}",
      "--cacert",
      ca,
      "-d",
      "{}",
      `https://127.0.0.1:${port}/`,
    ]);
    expect(post.stdout).toBe("401");
  });

  it("down stops its HAProxy and removes its files, and is safe to repeat", () => {
    const ca = ensureUp();
    const pid = pidOf();
    const r = down();
    expect(r.status, r.stderr).toBe(0);
    expect(alive(pid)).toBe(false);
    expect(existsSync(configDir())).toBe(false);
    expect(existsSync(pidFile("t"))).toBe(false);
    expect(curl(ca, "/v1/models", ["Authorization: Bearer k"]).status).toBe(7); // connection refused
    expect(down().status).toBe(0);
  });
});

describe("front-door.sh up --tls secrets", () => {
  it("serves the certificate and key given on stdin", () => {
    const own = selfSigned("own", "IP:127.0.0.1");
    const pem = readFileSync(own.cert, "utf8") + readFileSync(own.key, "utf8");
    const r = up(["--tls", "secrets"], pem, "s");
    expect(r.status, r.stderr).toBe(0);
    expect(keyValues(r.stdout).tls_source).toBe("secrets");
    expect(keyValues(r.stdout).ca_certificate_base64).toBeUndefined();
    expect(curl(own.cert, "/v1/models", ["Authorization: Bearer k"]).code).toBe("200");
    expect(statSync(join(configDir(), "server.pem")).mode & 0o777).toBe(0o600);
    expect(down("s").status).toBe(0);
  });

  it("refuses a key that does not belong to the certificate, and input without a key, leaving nothing running", () => {
    const a = selfSigned("a", "IP:127.0.0.1");
    const b = selfSigned("b", "IP:127.0.0.1");
    const mismatched = up(["--tls", "secrets"], readFileSync(a.cert, "utf8") + readFileSync(b.key, "utf8"), "s");
    expect(mismatched.status).toBe(1);
    expect(mismatched.stderr).toContain("the private key does not belong to the (first) certificate");
    const noKey = up(["--tls", "secrets"], readFileSync(a.cert, "utf8"), "s");
    expect(noKey.status).toBe(1);
    expect(noKey.stderr).toContain("no unencrypted PEM private key");
    expect(existsSync(pidFile("s"))).toBe(false);
    expect(down("s").status).toBe(0);
  });
});

describe("front-door.sh usage", () => {
  it("refuses bad arguments with exit 2 and a usage hint", () => {
    for (const args of [
      [],
      ["start"],
      ["up", "--name", "x"],
      ["up", "--name", "../x", "--listen", "127.0.0.1", "--port", "1", "--backend-port", "2"],
      ["up", "--name", "x", "--listen", "127.0.0.300", "--port", "1", "--backend-port", "2"],
      ["up", "--name", "x", "--listen", "0.0.0.0", "--port", "8080", "--backend-port", "8080"],
      ["up", "--name", "x", "--listen", "127.0.0.1", "--port", "1", "--backend-port", "2", "--tls", "self"],
      ["up", "--name", "x", "--listen", "127.0.0.1", "--port", "1", "--backend-port", "2", "--san", "-oops"],
    ]) {
      const r = run(["bash", SCRIPT, ...args]);
      expect(r.status, args.join(" ")).toBe(2);
      expect(r.stderr).toContain("Run front-door.sh --help for usage.");
    }
    expect(run(["bash", SCRIPT, "--help"]).stdout).toMatch(/^Usage: front-door\.sh up/);
  });
});
