/**
 * The kit's llama.cpp build carries the RPC backend (GGML_RPC=ON, lab/build-llama-cpp.sh):
 * its --help lists --rpc exactly as the fixture the flag table is tested against, a ggml-rpc-server
 * on loopback serves a head llama-server's layers for real, and the flag table reads --rpc.
 */
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { connect } from "node:net";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseBuffers, startServer } from "../../lab/server";
import { parseFlags } from "../../planner/flags";
import { llamaServerPath, llamaTool } from "../../lab/llama-cpp";
import { generateDeepseek2Model } from "../../lab/models";
import { freePort } from "../../lab/net";

let dir: string;
let worker: ChildProcess | undefined;
let workerLog = "";

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "rpc-"));
});
afterAll(() => {
  worker?.kill("SIGKILL");
  rmSync(dir, { recursive: true, force: true });
});

describe("llama.cpp built with RPC", () => {
  it("llama-server --help is the fixture the flag table is checked against, --rpc included", () => {
    const help = execFileSync(llamaServerPath(), ["--help"], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
    const fixture = readFileSync(join(__dirname, "..", "fixtures", "llama-server-help-v0.5.0.txt"), "utf8");
    // The fixture was saved with stderr, whose one timestamped log line ("0.00.000.690 I srv …") is not help.
    const body = (text: string) =>
      text
        .split("\n")
        .filter((line) => !/^\d+\.\d+\.\d+\.\d+ I /.test(line))
        .join("\n")
        .trim();
    expect(body(help)).toBe(body(fixture));
    expect(help).toMatch(/^--rpc SERVERS\s+comma-separated list of RPC servers \(host:port\)$/m);
  });

  it("a head llama-server places its layers on a ggml-rpc-server worker and serves", async () => {
    const port = await freePort();
    worker = spawn(llamaTool("ggml-rpc-server"), ["-H", "127.0.0.1", "-p", String(port)], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    worker.stdout?.on("data", (chunk: Buffer) => (workerLog += chunk.toString()));
    worker.stderr?.on("data", (chunk: Buffer) => (workerLog += chunk.toString()));
    // Its banner goes to a pipe, block-buffered: the listening socket is the condition to wait on.
    const listening = () =>
      new Promise<boolean>((resolve) => {
        const socket = connect(port, "127.0.0.1", () => (socket.end(), resolve(true)));
        socket.on("error", () => resolve(false));
      });
    for (let tries = 0; !(await listening()); tries++) {
      if (worker.exitCode !== null || tries > 300) throw new Error(`ggml-rpc-server did not start:\n${workerLog}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    const head = await startServer(generateDeepseek2Model(dir), [
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
    const logged = parseBuffers(head.log());
    const answer = await head.complete({ prompt: [1, 2, 3, 4], n_predict: 4 });
    await head.stop();
    const device = `RPC0[127.0.0.1:${port}]`;
    expect(logged.model[device] ?? 0).toBeGreaterThan(0);
    expect(logged.kv[device] ?? 0).toBeGreaterThan(0);
    expect(answer.timings.predicted_n).toBe(4);
  }, 120_000);

  it("--rpc is read into the sizing flags (the estimator sizes RPC devices from the stack's workers)", () => {
    const parsed = parseFlags(["--rpc", "10.0.0.2:50052,10.0.0.3:50052", "-ngl", "99"]);
    expect(parsed.sizing.rpc).toEqual(["10.0.0.2:50052", "10.0.0.3:50052"]);
    expect(parsed.notModelled).toEqual([]);
  });
});
