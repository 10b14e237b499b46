/**
 * The front door in front of the real thing: a tiny llama-server (the test deepseek2 model) on a
 * loopback port with an API key file, HAProxy from front-door.sh terminating TLS in front of it,
 * and curl as the client, trusting the kit's CA. llama-server runs with `--no-webui`, the flag the
 * kit passes unless serving.webUi is true. (The test build of llama.cpp bundles no web UI, so
 * what the flag turns off cannot be shown here: without it / answers 404 too.)
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startServer, type RunningServer } from "../../lab/server";
import { freePort } from "../../lab/net";
import { generateDeepseek2Model } from "../../lab/models";

const SCRIPT = resolve(__dirname, "../../ansible-free-scripts/front-door.sh");
const KEY = "front-door-test-key-0123456789abcdefghij";

let dir: string;
let model: string;
let port: number;
let ca: string;
const servers: RunningServer[] = [];

function run(argv: string[], timeoutMs = 60_000) {
  const r = spawnSync(argv[0]!, argv.slice(1), { encoding: "utf8", timeout: timeoutMs });
  if (r.error) throw r.error;
  return r;
}

const dirs = (name: string) => [
  "--config-dir",
  join(dir, name, "etc"),
  "--run-dir",
  join(dir, name, "run"),
  "--no-systemd",
];

function frontDoor(name: string, backendPort: number): void {
  const r = run([
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
    ...dirs(name),
  ]);
  if (r.status !== 0) throw new Error(`front-door.sh up: ${r.stderr}`);
  const b64 = /^ca_certificate_base64=(\S+)$/m.exec(r.stdout)?.[1];
  if (!b64) throw new Error(`no CA certificate in ${r.stdout}`);
  ca = join(dir, `${name}-ca.pem`);
  writeFileSync(ca, Buffer.from(b64, "base64"));
}

/** curl through the front door: [HTTP status, body]. */
function https(path: string, key: string | undefined, body?: string): [string, string] {
  const args = ["curl", "-sS", "--max-time", "60", "--cacert", ca, "-o", "-", "-w", "\n%{http_code}"];
  if (key !== undefined) args.push("-H", `Authorization: Bearer ${key}`);
  if (body !== undefined) args.push("-H", "Content-Type: application/json", "-d", body);
  const r = run([...args, `https://127.0.0.1:${port}${path}`], 90_000);
  if (r.status !== 0) throw new Error(`curl ${path}: exit ${r.status} ${r.stderr}`);
  const cut = r.stdout.lastIndexOf("\n");
  return [r.stdout.slice(cut + 1), r.stdout.slice(0, cut)];
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "kimi-kit-front-door-llama-"));
  model = generateDeepseek2Model(join(dir, "model"));
  port = await freePort();
}, 600_000);

afterAll(async () => {
  for (const name of ["webui-off"]) run(["bash", SCRIPT, "down", "--name", name, ...dirs(name)]);
  for (const server of servers) await server.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe("HAProxy TLS in front of llama-server --no-webui", () => {
  it("serves a chat completion over https with the key; refuses without or with a wrong key; no web UI", async () => {
    const keyFile = join(dir, "api-key");
    writeFileSync(keyFile, `${KEY}\n`);
    const server = await startServer(model, ["-c", "256", "--api-key-file", keyFile, "--alias", "kimi", "--no-webui"]);
    servers.push(server);
    frontDoor("webui-off", server.port);

    const body = JSON.stringify({ model: "kimi", messages: [{ role: "user", content: "hi" }], max_tokens: 4 });
    const [status, text] = https("/v1/chat/completions", KEY, body);
    expect(status, text).toBe("200");
    expect(JSON.parse(text)).toMatchObject({
      object: "chat.completion",
      choices: [expect.objectContaining({ index: 0 })],
    });

    expect(https("/v1/chat/completions", undefined, body)[0]).toBe("401"); // the proxy
    expect(https("/health", undefined)[0]).toBe("401"); // the proxy: /health is not open to the world
    expect(https("/v1/chat/completions", "wrong-key-0123456789abcdefghijklmnop", body)[0]).toBe("401"); // llama-server
    expect(https("/health", KEY)[0]).toBe("200");
    // --no-webui: no page at / even with the key.
    const [uiStatus, uiBody] = https("/", KEY);
    expect(uiStatus).not.toBe("200");
    expect(uiBody).not.toMatch(/<html/i);
  }, 300_000);
});
