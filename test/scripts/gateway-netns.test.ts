/**
 * The gateway for real (issue 14, item 2 and the gateway half of item 5): two llama-server
 * replicas on the generated deepseek2 model, one in each worker namespace (w1, w2), listening on
 * their private addresses with their own API key and a firewall (firewall.sh, the kit's nftables
 * table) that admits only the gateway's address; HAProxy from gateway.sh with the configuration
 * planner/gateway.ts writes, in the head namespace, terminating TLS with a test CA; curl as the
 * client in the outsider namespace. A tiny UDP syslog listener in the head namespace receives
 * HAProxy's access log, to show the team is in every line. The per-team request counters survive
 * the reloads an apply makes (the peers section), and a gateway applied from nothing with the argv
 * gatewayApplyArgv builds takes its secrets on stdin (--secrets-stdin, --tls internal-ca|secrets).
 */
import { type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { gatewayApplyArgv, haproxyGatewayConfig, keySha256, type GatewayInput } from "../../planner/gateway";
import { llamaServerPath } from "../../lab/llama-cpp";
import { generateDeepseek2Model } from "../../lab/models";
import { createTopology, netnsUnavailable, type Host, type Topology } from "../../lab/netns";
import { run, type Result } from "../../lab/spawn";

const GATEWAY = resolve(__dirname, "../../ansible-free-scripts/gateway.sh");
const FIREWALL = resolve(__dirname, "../../ansible-free-scripts/firewall.sh");
const unavailable =
  netnsUnavailable() ??
  (run(["sh", "-c", "command -v haproxy && command -v nft && command -v curl"]).status === 0
    ? undefined
    : "needs haproxy, nft and curl");

const REPLICA_PORT = 8080;
const GATEWAY_PORT = 8443;
const STATS_PORT = 8404;
const SYSLOG_PORT = 5514;
const FIREWALL_TABLE = "kimi_kit_gw_test";
const BACKEND_KEY = "replica-key-0123456789abcdefghijklmnop";
const KEY = {
  a: "team-a-key-0123456789abcdefghijklmnopq",
  b: "team-b-key-0123456789abcdefghijklmnopq",
  ops: "team-ops-key-0123456789abcdefghijklmno",
};
const A_RPM = 5;

let topo: Topology | undefined;
let dir: string;
let model: string;
let ca: string;
let syslog: ChildProcess | undefined;
const replicas: Partial<Record<"w1" | "w2", { child: ChildProcess; log: () => string }>> = {};
const name = "gwtest";

const configDir = () => join(dir, "etc");
const gatewayDirs = () => ["--name", name, "--config-dir", configDir(), "--run-dir", join(dir, "run"), "--no-systemd"];

function must(r: Result, what: string): Result {
  if (r.status !== 0) throw new Error(`${what} exited ${r.status}: ${r.stderr}${r.stdout}`);
  return r;
}

/** A CA and a server certificate for the head's address, as an operator's own PKI would give. */
function makePki(head: string): string {
  const ca = join(dir, "ca.crt");
  const caKey = join(dir, "ca.key");
  must(
    run([
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
      "/CN=gateway test CA",
      "-addext",
      "basicConstraints=critical,CA:TRUE",
      "-addext",
      "keyUsage=critical,keyCertSign",
      "-keyout",
      caKey,
      "-out",
      ca,
    ]),
    "openssl CA",
  );
  const key = join(dir, "server.key");
  const csr = join(dir, "server.csr");
  const crt = join(dir, "server.crt");
  must(
    run([
      "openssl",
      "req",
      "-new",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:P-256",
      "-nodes",
      "-subj",
      `/CN=${head}`,
      "-keyout",
      key,
      "-out",
      csr,
    ]),
    "openssl csr",
  );
  writeFileSync(
    join(dir, "server.ext"),
    `basicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:${head}\n`,
  );
  must(
    run([
      "openssl",
      "x509",
      "-req",
      "-days",
      "2",
      "-in",
      csr,
      "-CA",
      ca,
      "-CAkey",
      caKey,
      "-CAcreateserial",
      "-extfile",
      join(dir, "server.ext"),
      "-out",
      crt,
    ]),
    "openssl sign",
  );
  writeFileSync(join(dir, "server.pem"), readFileSync(crt, "utf8") + readFileSync(key, "utf8"));
  return ca;
}

function gatewayInput(teams: (keyof typeof KEY)[]): GatewayInput {
  const t = topo!;
  const rpm = { a: A_RPM, b: 1000, ops: 1000 };
  return {
    stack: "gateway-netns-test",
    name,
    configDir: configDir(),
    listen: { address: t.addr.head, port: GATEWAY_PORT },
    backends: (["w1", "w2"] as const).map((host) => ({ name: host, address: t.addr[host], port: REPLICA_PORT })),
    teams: teams.map((team) => ({
      name: `team-${team}`,
      keySha256: keySha256(KEY[team]),
      requestsPerMinute: rpm[team],
    })),
    stats: { address: "127.0.0.1", port: STATS_PORT },
    balance: "roundrobin",
    logTarget: `127.0.0.1:${SYSLOG_PORT}`,
  };
}

/** The files planner/gateway.ts writes for these teams, staged in a folder of their own. */
function stage(teams: (keyof typeof KEY)[]): string {
  const files = haproxyGatewayConfig(gatewayInput(teams));
  const from = join(dir, `from-${teams.join("-")}`);
  mkdirSync(from, { recursive: true });
  writeFileSync(join(from, "haproxy.cfg"), files.config);
  writeFileSync(join(from, "teams.map"), files.teamsMap);
  writeFileSync(join(from, "limits.map"), files.limitsMap);
  return from;
}

const keyValues = (stdout: string): Record<string, string> =>
  Object.fromEntries(
    stdout
      .trim()
      .split("\n")
      .map((line) => [line.slice(0, line.indexOf("=")), line.slice(line.indexOf("=") + 1)]),
  );

/** gateway.sh apply in the head namespace with the files planner/gateway.ts writes for these teams. */
function applyGateway(teams: (keyof typeof KEY)[], first: boolean): Record<string, string> {
  const from = stage(teams);
  const extra = first ? ["--pem", join(dir, "server.pem"), "--backend-key-file", join(dir, "backend-key")] : [];
  const r = must(
    topo!.exec("head", ["bash", GATEWAY, "apply", ...gatewayDirs(), "--from", from, "--ready-seconds", "20", ...extra]),
    "gateway.sh apply",
  );
  expect(r.stderr).not.toMatch(/ALERT/);
  return keyValues(r.stdout);
}

/** curl from the outsider namespace to the gateway: [HTTP status, body]; cacert: the CA curl trusts. */
function call(path: string, key: string | undefined, body?: unknown, cacert = ca): [number, string] {
  const t = topo!;
  const args = ["curl", "-sS", "--max-time", "60", "--cacert", cacert, "-o", "-", "-w", "\n%{http_code}"];
  if (key !== undefined) args.push("-H", `Authorization: Bearer ${key}`);
  if (body !== undefined) args.push("-H", "Content-Type: application/json", "-d", JSON.stringify(body));
  const r = t.exec("out", [...args, `https://${t.addr.head}:${GATEWAY_PORT}${path}`], undefined, 90_000);
  if (r.status !== 0) throw new Error(`curl ${path}: exit ${r.status} ${r.stderr}`);
  const cut = r.stdout.lastIndexOf("\n");
  return [Number(r.stdout.slice(cut + 1)), r.stdout.slice(0, cut)];
}

const chat = { model: "kimi", messages: [{ role: "user", content: "hi" }], max_tokens: 4 };

/** The exporter's text, read inside the head namespace (it listens on the head's loopback only). */
function metrics(): string {
  return must(
    topo!.exec("head", ["curl", "-sS", "--max-time", "5", `http://127.0.0.1:${STATS_PORT}/metrics`]),
    "curl metrics",
  ).stdout;
}

/** 1 when the exporter reports this server of the replicas backend in this state. */
function serverState(metricsText: string, server: string, state: "UP" | "DOWN"): boolean {
  return metricsText
    .split("\n")
    .some(
      (line) =>
        line.startsWith("haproxy_server_status{") &&
        line.includes(`server="${server}"`) &&
        line.includes(`state="${state}"`) &&
        line.trim().endsWith(" 1"),
    );
}

async function until(what: string, condition: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/**
 * llama-server's own count of decode calls (its /metrics, read from the gateway's namespace): every completion that
 * reaches it adds to it.
 */
function replicaDecodes(host: "w1" | "w2"): number {
  const t = topo!;
  const text = must(
    t.exec("head", [
      "curl",
      "-sS",
      "--max-time",
      "5",
      "-H",
      `Authorization: Bearer ${BACKEND_KEY}`,
      `http://${t.addr[host]}:${REPLICA_PORT}/metrics`,
    ]),
    `metrics of ${host}`,
  ).stdout;
  const value = /^llamacpp:n_decode_total (\d+)/m.exec(text)?.[1];
  if (value === undefined) throw new Error(`no llamacpp:n_decode_total in the metrics of ${host}:\n${text}`);
  return Number(value);
}

async function startReplica(host: "w1" | "w2"): Promise<void> {
  const t = topo!;
  const argv = [
    llamaServerPath(),
    "-m",
    model,
    "--host",
    t.addr[host],
    "--port",
    String(REPLICA_PORT),
    "-t",
    "1",
    "-c",
    "512",
    "-np",
    "1",
    "--api-key-file",
    join(dir, "backend-key"),
    "--alias",
    "kimi",
    "--no-webui",
    "--metrics",
  ];
  const child = t.spawnIn(host as Host, argv);
  let log = "";
  child.stdout?.on("data", (chunk: Buffer) => (log += chunk.toString()));
  child.stderr?.on("data", (chunk: Buffer) => (log += chunk.toString()));
  replicas[host] = { child, log: () => log };
  // Healthy as seen from the gateway's namespace: the only one its firewall admits.
  await until(
    `${host} healthy`,
    () => {
      if (child.exitCode !== null || child.signalCode !== null)
        throw new Error(`llama-server on ${host} exited:\n${log.slice(-3000)}`);
      return (
        t.exec("head", [
          "curl",
          "-s",
          "-o",
          "/dev/null",
          "-w",
          "%{http_code}",
          "--max-time",
          "2",
          `http://${t.addr[host]}:${REPLICA_PORT}/health`,
        ]).stdout === "200"
      );
    },
    240_000,
  );
}

const alive = (pid: number | undefined) => pid !== undefined && existsSync(`/proc/${pid}`);

describe.skipIf(unavailable !== undefined)(
  `gateway.sh: HAProxy in front of two llama-server replicas across namespaces${unavailable ? ` (skipped: ${unavailable})` : ""}`,
  () => {
    beforeAll(async () => {
      dir = mkdtempSync(join(tmpdir(), "kimi-kit-gateway-"));
      model = generateDeepseek2Model(join(dir, "model"));
      topo = createTopology();
      ca = makePki(topo.addr.head);
      writeFileSync(join(dir, "backend-key"), `${BACKEND_KEY}\n`, { mode: 0o600 });
      // The replicas admit only the gateway's address to their port.
      for (const host of ["w1", "w2"] as const)
        must(
          topo.exec(host, [
            "bash",
            FIREWALL,
            "apply",
            "--table",
            FIREWALL_TABLE,
            "--allow",
            `${REPLICA_PORT}=${topo.addr.head}/32`,
          ]),
          `firewall.sh in ${host}`,
        );
      await Promise.all([startReplica("w1"), startReplica("w2")]);
      const script = `require("dgram").createSocket("udp4").on("message", (m) => require("fs").appendFileSync(${JSON.stringify(join(dir, "access.log"))}, m.toString() + "\\n")).bind(${SYSLOG_PORT}, "127.0.0.1", () => console.log("ready"));`;
      syslog = topo.spawnIn("head", [process.execPath, "-e", script]);
      await new Promise<void>((ready, fail) => {
        syslog!.stdout!.once("data", () => ready());
        syslog!.once("exit", (code) => fail(new Error(`the syslog listener exited ${code}`)));
      });
    }, 600_000);

    afterAll(async () => {
      if (topo) topo.exec("head", ["bash", GATEWAY, "remove", ...gatewayDirs()]);
      for (const replica of Object.values(replicas)) {
        if (replica.child.exitCode === null && replica.child.signalCode === null) {
          const exited = new Promise((r) => replica.child.once("close", r));
          replica.child.kill("SIGKILL");
          await exited;
        }
      }
      if (syslog && syslog.exitCode === null) syslog.kill("SIGKILL");
      topo?.destroy();
      if (dir) rmSync(dir, { recursive: true, force: true });
    });

    it("admits only the gateway to the replicas' ports", () => {
      const t = topo!;
      for (const host of ["w1", "w2"] as const) {
        expect(t.canConnect("head", t.addr[host], REPLICA_PORT)).toBe(true);
        expect(t.canConnect("out", t.addr[host], REPLICA_PORT)).toBe(false);
      }
    });

    it("serves both teams' keys; refuses a missing or unknown key at the edge", () => {
      const out = applyGateway(["a", "b", "ops"], true);
      expect(out).toMatchObject({ gateway: `${topo!.addr.head}:${GATEWAY_PORT}`, teams: "3", changed: "yes" });
      // The same files again: nothing to do.
      expect(applyGateway(["a", "b", "ops"], false).changed).toBe("no");

      for (const key of [KEY.a, KEY.b]) {
        const [status, text] = call("/v1/chat/completions", key, chat);
        expect(status, text).toBe(200);
        expect(JSON.parse(text)).toMatchObject({ object: "chat.completion" });
      }
      const seenBefore = replicaDecodes("w1") + replicaDecodes("w2");
      expect(seenBefore).toBeGreaterThan(0); // the completions above did reach the replicas: the counter counts them
      for (const key of [undefined, "unknown-key-0123456789abcdefghijklmnop", BACKEND_KEY]) {
        const [status, text] = call("/v1/chat/completions", key, chat);
        expect(status, `${key}: ${text}`).toBe(401);
        expect(JSON.parse(text)).toMatchObject({ error: { code: 401 } });
      }
      // Refused at the edge: neither replica saw those three requests.
      expect(replicaDecodes("w1") + replicaDecodes("w2")).toBe(seenBefore);
      // The access log names the team.
      const access = readFileSync(join(dir, "access.log"), "utf8");
      expect(access).toMatch(/team=team-a .*POST \/v1\/chat\/completions/);
      expect(access).toMatch(/team=team-b /);
    });

    it("revokes team B by applying the team list without it: B gets 401, A continues, the replicas keep running", () => {
      const pids = { w1: replicas.w1!.child.pid, w2: replicas.w2!.child.pid };
      const out = applyGateway(["a", "ops"], false);
      expect(out).toMatchObject({ teams: "2", changed: "yes" });
      expect(call("/v1/chat/completions", KEY.b, chat)[0]).toBe(401);
      const [status, text] = call("/v1/chat/completions", KEY.a, chat);
      expect(status, text).toBe(200);
      expect({ w1: replicas.w1!.child.pid, w2: replicas.w2!.child.pid }).toEqual(pids);
      expect(alive(pids.w1) && alive(pids.w2)).toBe(true);
      expect(readFileSync(join(configDir(), "teams.map"), "utf8")).not.toContain(keySha256(KEY.b));
    });

    it("answers 429 with a JSON body once team A is over its requests per minute; the reload above kept A's count", () => {
      // A made two requests (one before the reload above, one after): the peers section handed the
      // counter to the new process, so A has A_RPM - 2 left (without it, A_RPM - 1).
      const statuses: number[] = [];
      let body = "";
      for (let i = 0; i < A_RPM - 1; i++) {
        const [status, text] = call("/v1/models", KEY.a);
        statuses.push(status);
        body = text;
      }
      expect(statuses).toEqual([...Array<number>(A_RPM - 2).fill(200), 429]);
      expect(JSON.parse(body)).toMatchObject({ error: { code: 429, type: "rate_limit_error" } });
      // Another team is not limited by A's use.
      expect(call("/v1/models", KEY.ops)[0]).toBe(200);
    });

    it("still refuses team A with 429 right after an apply that adds team B back (a reload)", () => {
      const before = Number(
        /^pid=(\d+)$/m.exec(
          must(topo!.exec("head", ["bash", GATEWAY, "status", ...gatewayDirs()]), "status").stdout,
        )?.[1],
      );
      const out = applyGateway(["a", "b", "ops"], false);
      expect(out).toMatchObject({ teams: "3", changed: "yes" });
      expect(Number(out.pid)).not.toBe(before); // a new HAProxy process: the counters came from the old one
      const [status, text] = call("/v1/models", KEY.a);
      expect(status, text).toBe(429);
      expect(call("/v1/models", KEY.b)[0]).toBe(200);
    });

    it("keeps serving through w2 when w1 dies; the exporter reports w1 DOWN", async () => {
      expect(serverState(metrics(), "w1", "UP") && serverState(metrics(), "w2", "UP")).toBe(true);
      const w1 = replicas.w1!.child;
      const exited = new Promise((r) => w1.once("close", r));
      w1.kill("SIGKILL");
      await exited;
      // Before the health check notices: a request sent to w1 fails to connect and is retried on w2.
      for (let i = 0; i < 4; i++) {
        const [status, text] = call("/v1/chat/completions", KEY.ops, chat);
        expect(status, text).toBe(200);
      }
      await until("w1 DOWN in the exporter", () => serverState(metrics(), "w1", "DOWN"), 20_000);
      expect(serverState(metrics(), "w2", "UP")).toBe(true);
      for (let i = 0; i < 3; i++) expect(call("/v1/chat/completions", KEY.ops, chat)[0]).toBe(200);
    }, 120_000);

    it("status reports the running gateway; remove stops it", () => {
      const status = topo!.exec("head", ["bash", GATEWAY, "status", ...gatewayDirs()]);
      expect(status.status, status.stderr).toBe(0);
      const pid = Number(/^pid=(\d+)$/m.exec(status.stdout)?.[1]);
      expect(alive(pid)).toBe(true);
      must(topo!.exec("head", ["bash", GATEWAY, "remove", ...gatewayDirs()]), "gateway.sh remove");
      expect(existsSync(configDir())).toBe(false);
      expect(alive(pid)).toBe(false);
      expect(topo!.exec("head", ["bash", GATEWAY, "status", ...gatewayDirs()]).status).toBe(3);
    });

    it("applies from nothing with gatewayApplyArgv: --tls internal-ca and the replicas' key on stdin (--secrets-stdin)", () => {
      const t = topo!;
      const input = gatewayInput(["ops"]);
      const from = stage(["ops"]);
      const dirs = ["--run-dir", join(dir, "run"), "--no-systemd", "--ready-seconds", "20"];
      const argv = gatewayApplyArgv(input, from, { tls: "internal-ca", sans: ["gateway.test"], secretsStdin: true });
      expect(argv.join(" ")).not.toContain(BACKEND_KEY);
      const first = t.exec("head", ["bash", GATEWAY, ...argv, ...dirs], `${BACKEND_KEY}\n`);
      expect(first.status, first.stderr).toBe(0);
      expect(first.stdout + first.stderr).not.toContain(BACKEND_KEY);
      const out = keyValues(first.stdout);
      expect(out).toMatchObject({ gateway: `${t.addr.head}:${GATEWAY_PORT}`, teams: "1", changed: "yes" });
      const kitCa = join(dir, "kit-ca.crt");
      writeFileSync(kitCa, Buffer.from(out.ca_certificate_base64!, "base64"));
      expect(readFileSync(join(configDir(), "backend-key.map"), "utf8")).toBe(`key ${BACKEND_KEY}\n`);
      // The client trusts the printed CA; the team's key works through the gateway (which sent the replicas the key
      // from stdin).
      const [status, text] = call("/v1/chat/completions", KEY.ops, chat, kitCa);
      expect(status, text).toBe(200);
      expect(
        t.exec("out", [
          "curl",
          "-sS",
          "--max-time",
          "10",
          "--cacert",
          ca,
          `https://${t.addr.head}:${GATEWAY_PORT}/health`,
        ]).status,
      ).not.toBe(0);
      const san = must(
        run(["openssl", "x509", "-in", join(configDir(), "server.pem"), "-noout", "-ext", "subjectAltName"]),
        "openssl x509",
      ).stdout;
      expect(san).toContain("DNS:gateway.test");
      expect(san).toContain(`IP Address:${t.addr.head}`);

      // Again with the same inputs: the CA and the certificate are reused, nothing reloads.
      const again = t.exec("head", ["bash", GATEWAY, ...argv, ...dirs], `${BACKEND_KEY}\n`);
      expect(again.status, again.stderr).toBe(0);
      expect(keyValues(again.stdout)).toMatchObject({
        changed: "no",
        ca_certificate_base64: out.ca_certificate_base64,
        certificate_sha256: out.certificate_sha256,
      });

      // --tls secrets: the key line, then the operator's PEM chain and key, all on stdin.
      const secretsArgv = gatewayApplyArgv(input, from, { tls: "secrets", sans: [], secretsStdin: true });
      const secrets = t.exec(
        "head",
        ["bash", GATEWAY, ...secretsArgv, ...dirs],
        `${BACKEND_KEY}\n${readFileSync(join(dir, "server.pem"), "utf8")}`,
      );
      expect(secrets.status, secrets.stderr).toBe(0);
      expect(keyValues(secrets.stdout)).toMatchObject({ changed: "yes" });
      expect(keyValues(secrets.stdout).ca_certificate_base64).toBeUndefined();
      expect(existsSync(join(configDir(), "ca.key"))).toBe(false);
      const [viaPki, viaPkiText] = call("/v1/chat/completions", KEY.ops, chat, ca);
      expect(viaPki, viaPkiText).toBe(200);

      // Refusals change nothing: a PEM that is not one, an empty stdin, two sources of one secret.
      const pemBefore = readFileSync(join(configDir(), "server.pem"), "utf8");
      const notPem = t.exec("head", ["bash", GATEWAY, ...secretsArgv, ...dirs], `${BACKEND_KEY}\nnot a certificate\n`);
      expect(notPem.status).toBe(1);
      expect(notPem.stderr).toContain("stdin holds no PEM certificate");
      expect(notPem.stderr).not.toContain(BACKEND_KEY);
      const empty = t.exec("head", ["bash", GATEWAY, ...argv, ...dirs], "");
      expect(empty.status).toBe(1);
      expect(empty.stderr).toContain("--secrets-stdin: stdin is empty");
      const both = t.exec(
        "head",
        ["bash", GATEWAY, ...argv, ...dirs, "--backend-key-file", join(dir, "backend-key")],
        `${BACKEND_KEY}\n`,
      );
      expect(both.status).toBe(2);
      expect(readFileSync(join(configDir(), "server.pem"), "utf8")).toBe(pemBefore);
      expect(call("/v1/chat/completions", KEY.ops, chat, ca)[0]).toBe(200);
    }, 120_000);
  },
);
