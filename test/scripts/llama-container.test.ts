/**
 * llama-container.sh end to end: over a real sshd, against a real Docker engine, with a locally
 * imported llama-server image serving a split, Kimi-shaped (deepseek2 MLA MoE) model from a
 * read-only bind mount, the API key passed through --secret-stdin.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { execFileSync, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join, resolve } from "node:path";
import { startLoopbackSshd, type LoopbackSshd } from "../support/sshd";
import { ensureDockerd, type Dockerd } from "../support/dockerd";
import { buildLlamaServerImage, type LlamaServerImage } from "../support/llama-image";
import { generateDeepseek2Model, splitGguf } from "../../lab/models";
import { freePort } from "../../lab/net";
import { shellQuote } from "../../planner/shell";

const SCRIPT = resolve(__dirname, "../../ansible-free-scripts/llama-container.sh");
const SECRET_IN_CONTAINER = "/run/secrets/llama-api-keys";
const KEY = `kimi-kit-test-key-${process.pid}-${Date.now().toString(36)}`;
const OTHER_KEY = `${KEY}-rotated`;

const q = (word: string) => shellQuote([word]);

interface Result {
  status: number | null;
  stdout: string;
  stderr: string;
}

let sshd: LoopbackSshd;
let dockerd: Dockerd;
let image: LlamaServerImage;
let work: string;
let modelDir: string;
let stateDir: string;
let remoteDir: string;
let remoteScript: string;
let shards: string[];
let port: number;
const name = `kimi-kit-test-llama-${process.pid}`;
const failingName = `${name}-failing`;

function docker(args: string[]): string {
  return execFileSync("docker", args, { stdio: ["ignore", "pipe", "pipe"], maxBuffer: 64 * 1024 * 1024 }).toString();
}

/** Runs llama-container.sh on the host over ssh. */
function container(args: string[], stdin?: string): Result {
  const command = `KIMI_KIT_STATE_DIR=${q(stateDir)} bash ${q(remoteScript)} ${args.map(q).join(" ")}`;
  const r = spawnSync("ssh", [...sshd.sshArgs(), command], { input: stdin ?? "", encoding: "utf8", timeout: 300_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function upArgs(ctx: number, containerName = name, extraServerArgs: string[] = []): string[] {
  const health = `http://127.0.0.1:${port}/health`;
  return [
    "up",
    "--name",
    containerName,
    "--image",
    image.name,
    "--volume",
    `${modelDir}:/models:ro`,
    "--secret-stdin",
    SECRET_IN_CONTAINER,
    "--health-url",
    health,
    "--wait-seconds",
    "120",
    ...(image.hasShell ? ["--health-cmd", `wget -q -O /dev/null ${health}`] : []),
    "--label",
    "kimi-kit.test=llama-container",
    "--env",
    "LLAMA_ARG_N_PREDICT=64",
    "--",
    "-m",
    `/models/${basename(shards[0] ?? "")}`,
    "--host",
    "127.0.0.1",
    "--port",
    String(port),
    "-c",
    String(ctx),
    "-t",
    "2",
    "--api-key-file",
    SECRET_IN_CONTAINER,
    ...extraServerArgs,
  ];
}

function result(stdout: string): { action: string; id: string } {
  const last = stdout.trim().split("\n").pop() ?? "";
  const m = /^CONTAINER_RESULT action=(\w+) id=(\S*)$/.exec(last);
  if (!m) throw new Error(`last line is no CONTAINER_RESULT:\n${stdout}`);
  return { action: m[1] ?? "", id: m[2] ?? "" };
}

function keyValues(stdout: string): Record<string, string> {
  return Object.fromEntries(
    stdout
      .split("\n")
      .filter((l) => l.includes("="))
      .map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]),
  );
}

/** sha256 and mtime of every file in the model dir: proof nothing touched them. */
function modelFingerprint(): Record<string, string> {
  const out: Record<string, string> = {};
  for (const f of readdirSync(modelDir).sort()) {
    const p = join(modelDir, f);
    out[f] = `${createHash("sha256").update(readFileSync(p)).digest("hex")} ${statSync(p).mtimeMs}`;
  }
  return out;
}

async function completion(key?: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`http://127.0.0.1:${port}/completion`, {
    method: "POST",
    headers: { "content-type": "application/json", ...(key ? { authorization: `Bearer ${key}` } : {}) },
    body: JSON.stringify({ prompt: [1, 2, 3, 4, 5], n_predict: 8 }),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

function removeIfPresent(containerName: string) {
  spawnSync("docker", ["rm", "-f", containerName], { stdio: "ignore" });
}

beforeAll(async () => {
  // The first run may wait for the llama.cpp build (lab/build-llama-cpp.sh, ~12 min).
  dockerd = await ensureDockerd();
  image = buildLlamaServerImage();
  work = mkdtempSync(join(tmpdir(), "kimi-kit-llama-container-"));
  modelDir = join(work, "models");
  stateDir = join(work, "state");
  const single = generateDeepseek2Model(join(work, "src"));
  shards = splitGguf(single, join(modelDir, "deepseek2-moe"), 16);
  port = await freePort();
  sshd = await startLoopbackSshd();
  // The script and the lib-common.sh it sources from its own folder, as on a host.
  remoteDir = sshd.exec("mktemp -d -t kimi-kit-llama-container-XXXXXX").trim();
  remoteScript = `${remoteDir}/llama-container.sh`;
  sshd.exec(`cat > ${q(remoteScript)}`, readFileSync(SCRIPT, "utf8"));
  sshd.exec(`cat > ${q(`${remoteDir}/lib-common.sh`)}`, readFileSync(join(SCRIPT, "..", "lib-common.sh"), "utf8"));
}, 45 * 60_000);

afterAll(async () => {
  if (image) {
    removeIfPresent(name);
    removeIfPresent(failingName);
  }
  if (sshd && remoteDir) spawnSync("ssh", [...sshd.sshArgs(), `rm -rf ${q(remoteDir)}`]);
  await sshd?.stop();
  await dockerd?.stop();
  if (work) rmSync(work, { recursive: true, force: true });
}, 120_000);

describe("llama-container.sh", () => {
  let before: Record<string, string> = {};
  beforeAll(() => {
    before = modelFingerprint();
  });
  /**
   * The container the tests share, as a test needs it (context, key): created or replaced when it is
   * not so, unchanged when it is. Each test states what it starts from, so any one runs alone too.
   */
  const ensureUp = (ctx = 256, key = KEY): { action: string; id: string } => {
    const r = container(upArgs(ctx), `${key}\n`);
    expect(r.status, r.stderr).toBe(0);
    return result(r.stdout);
  };

  it("up creates the container, waits for /health and serves the split deepseek2 model with the key", async () => {
    expect(shards.length).toBeGreaterThan(1);
    removeIfPresent(name);
    const r = container(upArgs(256), `${KEY}\n`);
    expect(r.stderr + r.stdout).not.toContain(KEY);
    expect(r.status, r.stderr).toBe(0);
    const { action, id } = result(r.stdout);
    expect(action).toBe("created");
    expect(id).toMatch(/^[0-9a-f]{64}$/);
    expect(r.stdout).toContain(`http://127.0.0.1:${port}/health answered after`);

    const health = await fetch(`http://127.0.0.1:${port}/health`);
    expect(health.status).toBe(200);
    expect(await health.json()).toMatchObject({ status: "ok" });

    const ok = await completion(KEY);
    expect(ok.status).toBe(200);
    expect(ok.body.timings).toMatchObject({ predicted_n: expect.any(Number), prompt_n: expect.any(Number) });
    const denied = await completion();
    expect(denied.status).toBe(401);
    const wrong = await completion("not-the-key");
    expect(wrong.status).toBe(401);
  }, 300_000);

  it("keeps the key out of docker inspect and logs, in a 0600 file mounted read-only", () => {
    ensureUp();
    const inspect = docker(["inspect", name]);
    expect(inspect).not.toContain(KEY);
    const [info] = JSON.parse(inspect) as [
      {
        HostConfig: { NetworkMode: string; RestartPolicy: { Name: string } };
        Mounts: Array<{ Source: string; Destination: string; RW: boolean }>;
        Config: { Labels: Record<string, string>; Env: string[] };
        Args: string[];
      },
    ];
    expect(info.HostConfig.NetworkMode).toBe("host");
    expect(info.HostConfig.RestartPolicy.Name).toBe("unless-stopped");
    expect(info.Config.Labels["kimi-kit.test"]).toBe("llama-container");
    expect(info.Config.Labels["kimi-kit.spec-sha256"]).toMatch(/^[0-9a-f]{64}$/);
    expect(info.Config.Env).toContain("LLAMA_ARG_N_PREDICT=64");
    expect(info.Args).toContain("--api-key-file");
    const secretMount = info.Mounts.find((m) => m.Destination === SECRET_IN_CONTAINER);
    expect(secretMount).toMatchObject({
      Source: join(stateDir, "secrets", name, basename(SECRET_IN_CONTAINER)),
      RW: false,
    });
    expect(info.Mounts.find((m) => m.Destination === "/models")).toMatchObject({ Source: modelDir, RW: false });

    const logs = execFileSync("docker", ["logs", name], {
      stdio: ["ignore", "pipe", "pipe"],
      maxBuffer: 64 * 1024 * 1024,
    });
    expect(logs.toString()).not.toContain(KEY);
    expect(statSync(join(stateDir, "secrets", name)).mode & 0o777).toBe(0o700);
    expect(statSync(secretMount!.Source).mode & 0o777).toBe(0o600);
    expect(readFileSync(secretMount!.Source, "utf8")).toBe(`${KEY}\n`);
  });

  it("status prints key=value lines", () => {
    const { id: firstId } = ensureUp();
    const r = container(["status", "--name", name]);
    expect(r.status).toBe(0);
    const kv = keyValues(r.stdout);
    expect(kv).toMatchObject({ name, state: "running", id: firstId, image: image.name, restart_count: "0" });
    expect(kv.spec_sha256).toBe(
      docker(["inspect", "--format", '{{index .Config.Labels "kimi-kit.spec-sha256"}}', name]).trim(),
    );
    expect(kv.health).toMatch(image.hasShell ? /^(starting|healthy)$/ : /^none$/);
  });

  it("a second identical up is unchanged and keeps the same container", () => {
    const { id: firstId } = ensureUp();
    const startedAt = docker(["inspect", "--format", "{{.State.StartedAt}}", name]).trim();
    const secretFile = join(stateDir, "secrets", name, basename(SECRET_IN_CONTAINER));
    const secretMtime = statSync(secretFile).mtimeMs;
    const r = container(upArgs(256), `${KEY}\n`);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain("unchanged");
    expect(result(r.stdout)).toEqual({ action: "unchanged", id: firstId });
    expect(docker(["inspect", "--format", "{{.State.StartedAt}}", name]).trim()).toBe(startedAt);
    expect(statSync(secretFile).mtimeMs).toBe(secretMtime);
  }, 180_000);

  it("changing one argument replaces the container and leaves the model files untouched", async () => {
    const { id: firstId } = ensureUp(256);
    const r = container(upArgs(512), `${KEY}\n`);
    expect(r.status, r.stderr).toBe(0);
    const { action, id } = result(r.stdout);
    expect(action).toBe("replaced");
    expect(id).not.toBe(firstId);
    expect(spawnSync("docker", ["inspect", firstId]).status).not.toBe(0);
    expect(docker(["inspect", "--format", "{{json .Args}}", name])).toContain('"512"');
    expect((await completion(KEY)).status).toBe(200);
    expect(modelFingerprint()).toEqual(before);
  }, 180_000);

  it("a new secret replaces the container; the old key stops working", async () => {
    ensureUp(512, KEY);
    const oldId = docker(["inspect", "--format", "{{.Id}}", name]).trim();
    const r = container(upArgs(512), `${OTHER_KEY}\n`);
    expect(r.status, r.stderr).toBe(0);
    expect(result(r.stdout).action).toBe("replaced");
    expect(result(r.stdout).id).not.toBe(oldId);
    expect((await completion(OTHER_KEY)).status).toBe(200);
    expect((await completion(KEY)).status).toBe(401);
    expect(docker(["inspect", name])).not.toContain(OTHER_KEY);
  }, 180_000);

  it("a server that cannot start fails with its logs, naming the container and URL", () => {
    const r = container([
      "up",
      "--name",
      failingName,
      "--image",
      image.name,
      "--volume",
      `${modelDir}:/models:ro`,
      "--health-url",
      `http://127.0.0.1:${port + 1}/health`,
      "--wait-seconds",
      "60",
      "--",
      "-m",
      "/models/no-such-model.gguf",
      "--host",
      "127.0.0.1",
      "--port",
      String(port + 1),
    ]);
    expect(r.status).toBe(3);
    expect(r.stderr).toContain(`container ${failingName} stopped before http://127.0.0.1:${port + 1}/health answered`);
    expect(r.stderr).toContain(`last 50 log lines of ${failingName}`);
    expect(r.stderr).toContain("no-such-model.gguf");
    expect(r.stdout).not.toContain("CONTAINER_RESULT");
    expect(r.stderr).toContain(`'llama-container.sh down --name ${failingName}' removes it`);
    expect(container(["down", "--name", failingName]).status).toBe(0);
  }, 180_000);

  it("a server that never answers the health URL times out with exit 3 after --wait-seconds", () => {
    const url = `http://127.0.0.1:${port + 2}/no-such-endpoint`;
    const started = Date.now();
    const r = container([
      "up",
      "--name",
      failingName,
      "--image",
      image.name,
      "--volume",
      `${modelDir}:/models:ro`,
      "--health-url",
      url,
      "--wait-seconds",
      "4",
      "--",
      "-m",
      `/models/${basename(shards[0] ?? "")}`,
      "--host",
      "127.0.0.1",
      "--port",
      String(port + 2),
      "-c",
      "256",
      "-t",
      "1",
    ]);
    expect(r.status).toBe(3);
    expect(Date.now() - started).toBeGreaterThanOrEqual(4_000);
    expect(r.stderr).toContain(`container ${failingName} is running but ${url} did not answer 200 within 4s`);
    expect(r.stderr).toContain("404");
    expect(r.stdout).not.toContain("CONTAINER_RESULT");
    expect(container(["down", "--name", failingName]).status).toBe(0);
  }, 180_000);

  it("refuses a missing volume source and a container it did not create", () => {
    const missing = container([
      "up",
      "--name",
      `${name}-x`,
      "--image",
      image.name,
      "--volume",
      `${work}/absent:/models:ro`,
      "--",
      "--version",
    ]);
    expect(missing.status).toBe(1);
    expect(missing.stderr).toContain(`volume source ${work}/absent does not exist on this host`);

    const foreign = `${name}-foreign`;
    docker(["create", "--name", foreign, "--network", "host", image.name, "--version"]);
    try {
      const r = container(["down", "--name", foreign]);
      expect(r.status).toBe(1);
      expect(r.stderr).toContain("refusing to remove it");
      const up = container(["up", "--name", foreign, "--image", image.name, "--", "--version"]);
      expect(up.status).toBe(1);
      expect(up.stderr).toContain("refusing to replace it");
      expect(spawnSync("docker", ["inspect", foreign]).status).toBe(0);
    } finally {
      removeIfPresent(foreign);
    }
  }, 60_000);

  it("--entrypoint runs another program of the same image, is part of the spec, and must be absolute", () => {
    expect(image.hasRpcServer).toBe(true);
    const entryName = `${name}-entrypoint`;
    const entryArgs = (entrypoint: string) => [
      "up",
      "--name",
      entryName,
      "--image",
      image.name,
      "--entrypoint",
      entrypoint,
      "--restart",
      "no",
      "--",
      "--host",
      "127.0.0.1",
      "--port",
      String(port + 3),
    ];
    try {
      const relative = container(entryArgs("ggml-rpc-server"));
      expect(relative.status).toBe(2);
      expect(relative.stderr).toContain("--entrypoint wants an absolute path inside the image, got 'ggml-rpc-server'");
      const up = container(entryArgs("/app/ggml-rpc-server"));
      expect(up.status, up.stderr).toBe(0);
      expect(result(up.stdout).action).toBe("created");
      expect(docker(["inspect", "--format", "{{json .Config.Entrypoint}}", entryName]).trim()).toBe(
        '["/app/ggml-rpc-server"]',
      );
      // The same arguments under another entrypoint are another spec.
      const other = container(entryArgs("/app/llama-server"));
      expect(other.status, other.stderr).toBe(0);
      expect(result(other.stdout).action).toBe("replaced");
      expect(docker(["inspect", "--format", "{{json .Config.Entrypoint}}", entryName]).trim()).toBe(
        '["/app/llama-server"]',
      );
    } finally {
      removeIfPresent(entryName);
    }
  }, 60_000);

  it("the health check takes the spec's timing; a network other than host and a bad timing are refused", () => {
    const timedName = `${name}-timed`;
    const timedArgs = (...timing: string[]) => [
      "up",
      "--name",
      timedName,
      "--image",
      image.name,
      "--restart",
      "no",
      "--health-cmd",
      "true",
      ...timing,
      "--",
      "--version",
    ];
    try {
      for (const [flags, message] of [
        [["--network", "bridge"], "--network 'bridge' is not allowed (expected host"],
        [["--health-retries", "0"], "--health-retries wants a positive integer, got '0'"],
        [["--health-interval", "30s"], "--health-interval wants a positive integer, got '30s'"],
      ] as const) {
        const refused = container(timedArgs(...flags));
        expect(refused.status, refused.stderr).toBe(2);
        expect(refused.stderr).toContain(message);
      }
      const up = container(timedArgs("--health-interval", "7", "--health-timeout", "3", "--health-retries", "2"));
      expect(up.status, up.stderr).toBe(0);
      const check = JSON.parse(docker(["inspect", "--format", "{{json .Config.Healthcheck}}", timedName])) as {
        Test: string[];
        Interval: number;
        Timeout: number;
        Retries: number;
      };
      expect(check).toMatchObject({ Test: ["CMD-SHELL", "true"], Interval: 7e9, Timeout: 3e9, Retries: 2 });
      // Other timing, another spec (its hash label differs).
      const specOf = () =>
        docker(["inspect", "--format", '{{index .Config.Labels "kimi-kit.spec-sha256"}}', timedName]).trim();
      const first = specOf();
      const again = container(timedArgs("--health-interval", "8", "--health-timeout", "3", "--health-retries", "2"));
      expect(again.status, again.stderr).toBe(0);
      expect(specOf()).not.toBe(first);
    } finally {
      removeIfPresent(timedName);
    }
  }, 60_000);

  it("down removes the container only; the model dir and the secret stay", () => {
    ensureUp(512, OTHER_KEY);
    const id = docker(["inspect", "--format", "{{.Id}}", name]).trim();
    const r = container(["down", "--name", name]);
    expect(r.status, r.stderr).toBe(0);
    expect(result(r.stdout)).toEqual({ action: "removed", id });
    expect(spawnSync("docker", ["inspect", name]).status).not.toBe(0);
    expect(modelFingerprint()).toEqual(before);
    expect(readFileSync(join(stateDir, "secrets", name, basename(SECRET_IN_CONTAINER)), "utf8")).toBe(`${OTHER_KEY}\n`);

    const again = container(["down", "--name", name]);
    expect(again.status).toBe(0);
    expect(again.stdout).toContain("already absent");
    expect(result(again.stdout)).toEqual({ action: "absent", id: "" });
    expect(keyValues(container(["status", "--name", name]).stdout).state).toBe("absent");
  }, 60_000);
});
