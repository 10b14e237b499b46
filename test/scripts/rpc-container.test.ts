/**
 * An RPC worker's container for real, as RpcWorker runs it: llama-container.sh starts
 * ggml-rpc-server from the locally built llama-server image (`--entrypoint /app/ggml-rpc-server`,
 * the same image as the head), a head llama-server places its layers on it over --rpc and serves
 * a completion through it, and `down` removes the container. RpcWorker's every-update check
 * (`llama-container.sh status` over pinned SSH from the program) reads it as running, then, once
 * removed, as not running. Real Docker engine, host network, loopback sshd.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseBuffers, startServer, type RunningServer } from "../../lab/server";
import { ensureDockerd, type Dockerd } from "../support/dockerd";
import { buildLlamaServerImage, type LlamaServerImage } from "../support/llama-image";
import { generateDeepseek2Model } from "../../lab/models";
import { freePort, waitForPort } from "../../lab/net";
import { RPC_SERVER_ENTRYPOINT, workerDownMessage } from "../../components/fleet/rpc-worker";
import { runRemoteNow } from "../../components/exec/remote-exec";
import { startLoopbackSshd, type LoopbackSshd } from "../support/sshd";
import { shellQuote } from "../../planner/shell";

const SCRIPT = resolve(__dirname, "../../ansible-free-scripts/llama-container.sh");
const name = `kimi-kit-test-rpc-${process.pid}`;

let dockerd: Dockerd;
let image: LlamaServerImage;
let work: string;
let port: number;
let head: RunningServer | undefined;
let sshd: LoopbackSshd;

/** Runs llama-container.sh on this host, as the kit's steps run it on a worker. */
function container(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const run = spawnSync("bash", [SCRIPT, ...args], {
    encoding: "utf8",
    timeout: 120_000,
    env: { ...process.env, KIMI_KIT_STATE_DIR: join(work, "state") },
  });
  return { status: run.status, stdout: run.stdout, stderr: run.stderr };
}

function lastResult(stdout: string): string {
  return stdout.trim().split("\n").pop() ?? "";
}

function docker(args: string[]): string {
  return execFileSync("docker", args, { stdio: ["ignore", "pipe", "pipe"] })
    .toString()
    .trim();
}

/** RpcWorker's argv (rpcServerUpArgv) with this test's image, address and port. */
function upArgs(): string[] {
  return [
    "up",
    "--name",
    name,
    "--image",
    image.name,
    "--entrypoint",
    RPC_SERVER_ENTRYPOINT,
    "--restart",
    "unless-stopped",
    "--label",
    "kimi-kit.test=rpc-container",
    "--",
    "--host",
    "127.0.0.1",
    "--port",
    String(port),
    "--threads",
    "2",
  ];
}

beforeAll(async () => {
  // The first run may wait for the llama.cpp build (lab/build-llama-cpp.sh, ~12 min).
  dockerd = await ensureDockerd();
  image = buildLlamaServerImage();
  work = mkdtempSync(join(tmpdir(), "kimi-kit-rpc-container-"));
  port = await freePort();
  sshd = await startLoopbackSshd();
}, 45 * 60_000);

/** RpcWorker's check: `llama-container.sh status` over the pinned connection, read by workerDownMessage. */
function workerCheck(): string | undefined {
  const connection = {
    host: sshd.host,
    port: sshd.port,
    user: sshd.user,
    hostKey: sshd.hostPublicKey,
    privateKey: sshd.privateKey,
  };
  const stdout = runRemoteNow(connection, shellQuote(["bash", SCRIPT, "status", "--name", name]));
  return workerDownMessage(
    { id: "worker-1", endpoint: `127.0.0.1:${port}`, containerName: name },
    stdout,
    "llama-container.sh up …",
  );
}

afterAll(async () => {
  await head?.stop();
  await sshd?.stop();
  if (image) spawnSync("docker", ["rm", "-f", name], { stdio: "ignore" });
  await dockerd?.stop();
  if (work) rmSync(work, { recursive: true, force: true });
}, 120_000);

describe("ggml-rpc-server in a container from the llama-server image", () => {
  /** The worker's container up (created, or unchanged when it runs): each test starts from what it needs. */
  const ensureUp = () => {
    const up = container(upArgs());
    expect(up.status, up.stderr).toBe(0);
  };

  it("the image carries ggml-rpc-server beside llama-server", () => {
    expect(image.hasRpcServer).toBe(true);
  });

  it("up --entrypoint runs ggml-rpc-server, and a head llama-server serves a completion through it", async () => {
    container(["down", "--name", name]);
    const up = container(upArgs());
    expect(up.status, up.stderr).toBe(0);
    expect(lastResult(up.stdout)).toMatch(/^CONTAINER_RESULT action=created id=[0-9a-f]{64}$/);
    expect(JSON.parse(docker(["inspect", "--format", "{{json .Config.Entrypoint}}", name]))).toEqual([
      RPC_SERVER_ENTRYPOINT,
    ]);
    expect(docker(["inspect", "--format", "{{.HostConfig.NetworkMode}}", name])).toBe("host");
    // ggml-rpc-server has no health URL: its listening socket is the condition.
    await waitForPort(port, 60_000).catch((error: unknown) => {
      throw new Error(
        `${String(error)}; container state ${docker(["inspect", "--format", "{{.State.Status}}", name])}, logs:\n${docker(["logs", name])}`,
      );
    });

    head = await startServer(generateDeepseek2Model(work), [
      "-c",
      "512",
      "-np",
      "1",
      "-t",
      "2",
      "--fit",
      "off",
      "-ngl",
      "99",
      "--rpc",
      `127.0.0.1:${port}`,
    ]);
    const answer = await head.complete({ prompt: [1, 2, 3, 4], n_predict: 4 });
    const logged = parseBuffers(head.log());
    await head.stop();
    head = undefined;
    const device = `RPC0[127.0.0.1:${port}]`;
    expect(logged.model[device] ?? 0).toBeGreaterThan(0);
    expect(logged.kv[device] ?? 0).toBeGreaterThan(0);
    expect(answer.timings.predicted_n).toBe(4);
  }, 300_000);

  it("status reports it running, with no health check (what RpcWorker asks on every update); the same up again leaves it alone", () => {
    ensureUp();
    const status = container(["status", "--name", name]);
    expect(status.status).toBe(0);
    expect(status.stdout).toContain("state=running\nhealth=none\n");
    const again = container(upArgs());
    expect(again.status, again.stderr).toBe(0);
    expect(lastResult(again.stdout)).toMatch(/^CONTAINER_RESULT action=unchanged /);
    expect(workerCheck()).toBeUndefined();
  }, 60_000);

  it("down removes the worker's container", () => {
    ensureUp();
    const down = container(["down", "--name", name]);
    expect(down.status, down.stderr).toBe(0);
    expect(lastResult(down.stdout)).toMatch(/^CONTAINER_RESULT action=removed id=[0-9a-f]{64}$/);
    expect(spawnSync("docker", ["inspect", name]).status).not.toBe(0);
    expect(container(["status", "--name", name]).stdout).toContain("state=absent\n");
    expect(workerCheck()).toBe(
      `worker worker-1 (127.0.0.1:${port}): ggml-rpc-server container not running (container ${name}: absent). ` +
        "Start it again on that host with `llama-container.sh up …` (what the kit ran), then run `pulumi up` again; the head's llama-server lost the worker's layers and may need a restart too.",
    );
  }, 60_000);
});
