/**
 * ansible-free-scripts/firewall.sh, applied for real, but only inside network namespaces this test
 * creates: a "server" namespace joined by veth pairs to two "client" namespaces, with addresses
 * (10.77.x.x) that exist only inside them. Nothing here changes this machine's own ruleset or
 * sends a packet outside the namespaces; the host's ruleset is compared before and after.
 *
 * Also the front door end to end: front-door.sh's HAProxy (TLS, the kit's internal CA) in the
 * server namespace behind the firewall, reached with curl from an allowed and a refused client.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { run as runCommand, type Result } from "../../lab/spawn";

const SCRIPTS = resolve(__dirname, "../../ansible-free-scripts");
const FIREWALL = join(SCRIPTS, "firewall.sh");
const FRONT_DOOR = join(SCRIPTS, "front-door.sh");

const tag = `${process.pid % 100000}`;
const NS = { server: `kkfw-srv-${tag}`, allowed: `kkfw-a-${tag}`, refused: `kkfw-b-${tag}` };
const SERVER_A = "10.77.1.1"; // the server's address on the allowed client's link
const SERVER_B = "10.77.2.1"; // … and on the refused client's link
const SERVER_B6 = "fd77:2::1"; // … and its IPv6 address there
const SERVING_PORT = 8443;
const SSH_PORT = 2222; // an SSH stand-in: a port the kit's rules must never touch
const TLS_PORT = 9443;
const BACKEND_PORT = 18080;

const run = (argv: string[], input?: string, timeoutMs = 30_000): Result => runCommand(argv, input, timeoutMs);

function must(argv: string[], input?: string): string {
  const r = run(argv, input);
  if (r.status !== 0) throw new Error(`${argv.join(" ")} exited ${r.status}: ${r.stderr}${r.stdout}`);
  return r.stdout;
}

const inNs = (ns: string, argv: string[], input?: string) => run(["ip", "netns", "exec", ns, ...argv], input);
const mustInNs = (ns: string, argv: string[], input?: string) => must(["ip", "netns", "exec", ns, ...argv], input);
const firewall = (...args: string[]) => inNs(NS.server, ["bash", FIREWALL, ...args]);
const ruleset = (ns = NS.server) => mustInNs(ns, ["nft", "-s", "list", "ruleset"]);

/** A plain HTTP GET from a client namespace: the body, or curl's exit code (28: timed out, 7: refused). */
function get(client: string, address: string, port: number): { status: number | null; body: string } {
  // A dropped SYN can only show as a timeout; 2 s is ample inside one machine (the drop counter
  // below confirms the packets were dropped by the kit's rule, not lost otherwise).
  const host = address.includes(":") ? `[${address}]` : address;
  const r = inNs(client, ["curl", "-sS", "--connect-timeout", "2", "--max-time", "4", `http://${host}:${port}/`]);
  return { status: r.status, body: r.stdout };
}

function dropCount(port: number): number {
  const table = mustInNs(NS.server, ["nft", "list", "table", "inet", "kimi_kit"]);
  const line = table.split("\n").find((l) => l.includes(`tcp dport ${port} counter`) && l.trim().endsWith("drop"));
  const packets = /counter packets (\d+)/.exec(line ?? "")?.[1];
  if (packets === undefined) throw new Error(`no drop counter for port ${port} in:\n${table}`);
  return Number(packets);
}

const OTHER_TABLE = `table inet operator_fw {
  chain input {
    type filter hook input priority filter; policy accept;
    tcp dport 9999 counter drop
  }
}
`;

let hostRulesetBefore = "";
/** The server namespace's ruleset with only the operator's table in it, before the kit applies anything. */
let operatorOnly = "";
let listener: ChildProcess | undefined;
let backend: ChildProcess | undefined;
let work = "";

/** Starts a process inside a namespace and resolves once it prints `ready`. */
function startInNs(ns: string, script: string): Promise<ChildProcess> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn("ip", ["netns", "exec", ns, process.execPath, "-e", script], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    const timer = setTimeout(() => reject(new Error(`listener in ${ns} did not start: ${out}`)), 15_000);
    child.stdout!.on("data", (chunk: Buffer) => {
      out += chunk.toString();
      if (out.includes("ready")) {
        clearTimeout(timer);
        resolvePromise(child);
      }
    });
    child.stderr!.on("data", (chunk: Buffer) => (out += chunk.toString()));
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`listener in ${ns} exited ${code}: ${out}`));
    });
  });
}

const LISTENERS = `
const http = require("http");
const ports = ${JSON.stringify([SERVING_PORT, SSH_PORT])};
let up = 0;
// "::" takes IPv4 and IPv6 connections alike.
for (const port of ports) http.createServer((req, res) => res.end("ok " + port)).listen(port, "::", () => { if (++up === ports.length) console.log("ready"); });
`;

const BACKEND = `
require("http").createServer((req, res) => {
  res.setHeader("content-type", "application/json");
  res.end(JSON.stringify({ backend: "llama", path: req.url, proto: req.headers["x-forwarded-proto"] ?? null }));
}).listen(${BACKEND_PORT}, "127.0.0.1", () => console.log("ready"));
`;

function cleanup(): void {
  listener?.kill("SIGKILL");
  backend?.kill("SIGKILL");
  if (work) {
    // front-door.sh down stops its HAProxy (found by its pid file) inside the namespace.
    run([
      "ip",
      "netns",
      "exec",
      NS.server,
      "bash",
      FRONT_DOOR,
      "down",
      "--name",
      "fwtest",
      "--config-dir",
      join(work, "front-door"),
      "--run-dir",
      join(work, "run"),
      "--no-systemd",
    ]);
    rmSync(work, { recursive: true, force: true });
  }
  for (const ns of Object.values(NS)) run(["ip", "netns", "del", ns]);
}

beforeAll(async () => {
  hostRulesetBefore = must(["nft", "-s", "list", "ruleset"]);
  for (const ns of Object.values(NS)) run(["ip", "netns", "del", ns]); // a stale run's, if any
  work = mkdtempSync(join(tmpdir(), "kimi-fw-"));
  for (const ns of Object.values(NS)) {
    must(["ip", "netns", "add", ns]);
    must(["ip", "-n", ns, "link", "set", "lo", "up"]);
  }
  // Both ends of each veth pair are created inside the namespaces: the host never has them.
  const link = (client: string, ifname: string, server: string, peer: string) => {
    must(["ip", "-n", NS.server, "link", "add", ifname, "type", "veth", "peer", "name", `${ifname}p`, "netns", client]);
    must(["ip", "-n", NS.server, "addr", "add", `${server}/24`, "dev", ifname]);
    must(["ip", "-n", client, "addr", "add", `${peer}/24`, "dev", `${ifname}p`]);
    must(["ip", "-n", NS.server, "link", "set", ifname, "up"]);
    must(["ip", "-n", client, "link", "set", `${ifname}p`, "up"]);
  };
  link(NS.allowed, "kka", SERVER_A, "10.77.1.2");
  link(NS.refused, "kkb", SERVER_B, "10.77.2.2");
  // IPv6 on the refused client's link too (unique local addresses, inside the namespaces only).
  must(["ip", "-n", NS.server, "-6", "addr", "add", `${SERVER_B6}/64`, "dev", "kkb", "nodad"]);
  must(["ip", "-n", NS.refused, "-6", "addr", "add", "fd77:2::2/64", "dev", "kkbp", "nodad"]);
  mustInNs(NS.server, ["nft", "-f", "-"], OTHER_TABLE);
  operatorOnly = ruleset();
  expect(operatorOnly).toContain("tcp dport 9999");
  listener = await startInNs(NS.server, LISTENERS);
}, 60_000);

afterAll(() => {
  cleanup();
  // The machine's own ruleset is exactly what it was: every rule went into the namespaces only.
  expect(must(["nft", "-s", "list", "ruleset"])).toBe(hostRulesetBefore);
});

describe("firewall.sh in network namespaces", () => {
  // Each test starts from the rules it needs (none, or the kit's table allowing these CIDRs), so any one runs alone too.
  const BASE_ALLOW = `${SERVING_PORT}=10.77.1.0/24,192.0.2.0/24`;
  const withKitTable = () => expect(firewall("apply", "--allow", BASE_ALLOW).status).toBe(0);
  const withoutKitTable = () => expect(firewall("remove").status).toBe(0);

  it("without the kit's rules both clients reach the serving port (so a refusal below is the rule's doing)", () => {
    withoutKitTable();
    expect(get(NS.allowed, SERVER_A, SERVING_PORT)).toEqual({ status: 0, body: `ok ${SERVING_PORT}` });
    expect(get(NS.refused, SERVER_B, SERVING_PORT)).toEqual({ status: 0, body: `ok ${SERVING_PORT}` });
    expect(get(NS.refused, SERVER_B6, SERVING_PORT)).toEqual({ status: 0, body: `ok ${SERVING_PORT}` });
  });

  it("apply admits only the allowed CIDRs to the serving port; the SSH stand-in stays open to everyone", () => {
    withoutKitTable();
    const before = ruleset();
    const applied = firewall("apply", "--allow", BASE_ALLOW);
    expect(applied.stderr).toBe("");
    expect(applied.status).toBe(0);
    expect(applied.stdout).toContain(`firewall=applied table=inet kimi_kit ports=${SERVING_PORT}`);

    expect(get(NS.allowed, SERVER_A, SERVING_PORT)).toEqual({ status: 0, body: `ok ${SERVING_PORT}` });
    const dropsBefore = dropCount(SERVING_PORT);
    const refused = get(NS.refused, SERVER_B, SERVING_PORT);
    expect(refused.status).toBe(28); // timed out: the SYN was dropped, not answered
    expect(dropCount(SERVING_PORT)).toBeGreaterThan(dropsBefore);

    // The allowed CIDRs are IPv4: over IPv6 nobody reaches the serving port.
    expect(get(NS.refused, SERVER_B6, SERVING_PORT).status).toBe(28);

    expect(get(NS.refused, SERVER_B, SSH_PORT)).toEqual({ status: 0, body: `ok ${SSH_PORT}` });
    expect(get(NS.refused, SERVER_B6, SSH_PORT)).toEqual({ status: 0, body: `ok ${SSH_PORT}` });
    expect(get(NS.allowed, SERVER_A, SSH_PORT)).toEqual({ status: 0, body: `ok ${SSH_PORT}` });
    // The server reaches its own port over loopback whatever the CIDRs say (health checks, smoke step).
    expect(get(NS.server, "127.0.0.1", SERVING_PORT)).toEqual({ status: 0, body: `ok ${SERVING_PORT}` });

    // The operator's table is still there, rule for rule, and the kit's is the only one added.
    const after = ruleset();
    expect(before).toBe(operatorOnly);
    expect(after.startsWith(operatorOnly) || after.endsWith(operatorOnly)).toBe(true);
    expect(after.match(/^table /gm)).toEqual(["table ", "table "]);
  });

  it("re-applying the same arguments leaves the same ruleset; other arguments replace the table as a whole", () => {
    withKitTable();
    const once = ruleset();
    expect(firewall("apply", "--allow", `${SERVING_PORT}=192.0.2.0/24,10.77.1.0/24`).status).toBe(0);
    expect(ruleset()).toBe(once);
    expect(once.match(/table inet kimi_kit/g)).toHaveLength(1);

    // Now the other client's network is the allowed one: the old set is gone in the same step.
    expect(firewall("apply", "--allow", `${SERVING_PORT}=10.77.2.0/24`).status).toBe(0);
    expect(get(NS.refused, SERVER_B, SERVING_PORT)).toEqual({ status: 0, body: `ok ${SERVING_PORT}` });
    expect(get(NS.allowed, SERVER_A, SERVING_PORT).status).toBe(28);
    expect(ruleset().match(/table inet kimi_kit/g)).toHaveLength(1);
  });

  it("refuses bad input without touching the loaded rules", () => {
    withKitTable();
    const loaded = ruleset();
    for (const args of [
      ["apply", "--allow", `${SERVING_PORT}=10.77.1.1/24`.replace("/24", "/33")],
      ["apply", "--allow", `${SERVING_PORT}=not-a-cidr`],
      ["apply", "--allow", `${SERVING_PORT}=0.0.0.0/00`],
      ["apply", "--allow", "22=10.0.0.0/8"],
      ["apply", "--allow", `70000=10.0.0.0/8`],
      ["apply", "--table", "other", "--allow", `${SERVING_PORT}=10.0.0.0/8`],
      ["apply"],
      ["flush"],
    ]) {
      const r = firewall(...args);
      expect(r.status, args.join(" ")).toBe(2);
      expect(r.stderr).toMatch(/^firewall\.sh: /);
    }
    expect(ruleset()).toBe(loaded);
  });

  it("remove deletes only the kit's table; the operator's rule survives and remove is safe to repeat", () => {
    withKitTable();
    expect(firewall("remove").stdout).toContain("firewall=removed table=inet kimi_kit");
    const after = ruleset();
    expect(after).not.toContain("kimi_kit");
    expect(after).toBe(operatorOnly);
    expect(get(NS.allowed, SERVER_A, SERVING_PORT)).toEqual({ status: 0, body: `ok ${SERVING_PORT}` });
    const again = firewall("remove");
    expect(again.status).toBe(0);
    expect(again.stdout).toContain("firewall=absent");
  });
});

describe("the front door behind the firewall (HAProxy TLS in the server namespace)", () => {
  let ca = "";

  it("an allowed client gets the backend over https with the kit's CA; a refused client gets nothing", async () => {
    backend = await startInNs(NS.server, BACKEND);
    const up = inNs(NS.server, [
      "bash",
      FRONT_DOOR,
      "up",
      "--name",
      "fwtest",
      "--listen",
      "0.0.0.0",
      "--port",
      String(TLS_PORT),
      "--backend-port",
      String(BACKEND_PORT),
      "--san",
      SERVER_A,
      "--san",
      SERVER_B,
      "--config-dir",
      join(work, "front-door"),
      "--run-dir",
      join(work, "run"),
      "--no-systemd",
      "--ready-seconds",
      "20",
    ]);
    expect(up.stderr).not.toMatch(/ALERT|WARNING/);
    expect(up.status, up.stderr).toBe(0);
    const caB64 = /^ca_certificate_base64=(\S+)$/m.exec(up.stdout)?.[1];
    expect(caB64).toBeDefined();
    ca = join(work, "ca.pem");
    writeFileSync(ca, Buffer.from(caB64!, "base64"));
    expect(firewall("apply", "--allow", `${TLS_PORT}=10.77.1.0/24`).status).toBe(0);

    const https = (client: string, address: string) =>
      inNs(client, [
        "curl",
        "-sS",
        "--connect-timeout",
        "2",
        "--max-time",
        "5",
        "--cacert",
        ca,
        "-H",
        "Authorization: Bearer test-key",
        `https://${address}:${TLS_PORT}/v1/models`,
      ]);
    const ok = https(NS.allowed, SERVER_A);
    expect(ok.status, ok.stderr).toBe(0);
    expect(JSON.parse(ok.stdout)).toEqual({ backend: "llama", path: "/v1/models", proto: "https" });
    expect(https(NS.refused, SERVER_B).status).toBe(28);
    // Plain HTTP to the TLS port from the allowed client: no HTTP answer at all.
    const plain = inNs(NS.allowed, ["curl", "-sS", "--max-time", "5", `http://${SERVER_A}:${TLS_PORT}/v1/models`]);
    expect(plain.status).not.toBe(0);
    expect(plain.stdout).toBe("");
    // The backend itself is not reachable from outside the host: it listens on loopback only.
    expect(inNs(NS.allowed, ["curl", "-sS", "--max-time", "3", `http://${SERVER_A}:${BACKEND_PORT}/`]).status).toBe(7);
    expect(firewall("remove").status).toBe(0);
  }, 60_000);
});
