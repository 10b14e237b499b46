import { spawnSync } from "node:child_process";
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { CommandLineJson } from "../../planner/command-line";
import { writeDeepseek2Gguf, type Deepseek2Dims } from "../../lab/gguf-writer";

const root = join(__dirname, "..", "..");
const plan = (...args: string[]) =>
  spawnSync(join(root, "node_modules", ".bin", "tsx"), [join(root, "cli", "plan.ts"), ...args], {
    cwd: root,
    encoding: "utf8",
  });
const GiB = 1024 ** 3;

/** A small deepseek2 model: 3 layers (1 dense), MLA with kv_lora 64 + rope 16, 8 experts of 64. */
const DIMS: Deepseek2Dims = {
  layers: 3,
  denseLeadingLayers: 1,
  hidden: 128,
  heads: 4,
  qLoraRank: 64,
  kvLoraRank: 64,
  qkNopeHeadDim: 32,
  qkRopeHeadDim: 16,
  vHeadDim: 32,
  denseFfn: 256,
  experts: 8,
  activeExperts: 2,
  sharedExperts: 1,
  expertFfn: 64,
  vocab: 512,
  contextLength: 4096,
};
let dir: string;
let model: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "kimi-kit-cli-estimate-"));
  model = join(dir, "small.gguf");
  writeDeepseek2Gguf(model, DIMS, { type: "F16" });
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("npm run plan -- --stack X --args", () => {
  it("estimates a user's command line on the stack's host: settings, ignored flags, bytes by kind, projections", () => {
    const run = plan(
      "--stack",
      "cpu-ddr5",
      "--args",
      "-c 65536 -np 2 -ctk q8_0 -ctv q8_0 --jinja --temp 0.6",
      "--json",
    );
    expect(run.stderr).toBe("");
    expect(run.status).toBe(0);
    const json = JSON.parse(run.stdout) as CommandLineJson;
    expect(json.ignoredForSizing).toEqual(["--jinja", "--temp"]);
    expect(json.settings.slots).toBe(2);
    // Kimi K2.6's MLA KV: (512 + 64) q8_0 elements per token per layer = 18 blocks × 34 bytes = 612 B; 61 layers;
    // 65,536 cells.
    expect(json.devices[0]!.bytesByKind.kv).toBe(612 * 61 * 65536);
    // llama-server's default load mode maps the file: the whole model is one span, 11.5 GiB of it read (the rest is
    // repacked).
    expect(json.devices[0]!.mappedFileSpanBytes).toBeGreaterThan(
      json.devices[0]!.bytesByKind.weights + json.devices[0]!.bytesByKind.repackedWeights * 0.99,
    );
    expect(json.projection.decodeByDepth.map((point) => point.depthTokens)).toEqual([0, 4096, 32768]);
    expect(json.projection.prefillByPrompt.length).toBeGreaterThan(1);
  });

  it("text output prints the table by kind and says which flags it ignored (a pasted program name is dropped)", () => {
    const run = plan("--stack", "cpu-ddr5", "--args", "/usr/bin/llama-server -c 8192 --no-repack --metrics");
    expect(run.status).toBe(0);
    for (const part of [
      "Ignored for sizing: --metrics",
      "repack off",
      "weights",
      "repacked",
      "prompt cache",
      "headroom",
      "decode   by depth",
      "prefill  by prompt",
    ])
      expect(run.stdout).toContain(part);
  });

  it.each([
    [["--args", "-c 8192 --turbo"], /^--turbo: not a llama-server v0\.5\.0 flag/],
    [["--args", "--no-mmap"], /^--no-mmap: removed in llama-server v0\.5\.0; allowed: --load-mode none$/],
    [["--args", "-ub 0"], /^-ub: found "0"; allowed: an integer ≥ 1$/],
    [["--args", "-ot exps=CUDA0"], /^-ot: found "exps=CUDA0"; allowed: buffers of this host's devices \(CPU\)$/],
    [["--args", "-c 4096", "--bandwidth-gbps", "50"], /^--bandwidth-gbps: not used with --stack cpu-ddr5/],
  ])("%j on a stack is one clear line naming the flag, exit 1, no stack trace", (args, message) => {
    const run = plan("--stack", "cpu-ddr5", ...args);
    expect(run.status).toBe(1);
    expect(run.stdout).toBe("");
    expect(run.stderr.trim()).toMatch(message);
    expect(run.stderr.trim().split("\n")).toHaveLength(1);
  });

  it("refuses a command line that does not fit, with the shortfall", () => {
    const run = plan("--stack", "cpu-ddr5", "--args", "-c 524288 -np 4 -ctk f32 -ctv f32 --no-repack");
    expect(run.status).toBe(1);
    expect(run.stdout).toMatch(/Verdict: DOES NOT FIT — CPU needs .* has /);
  });
});

describe("npm run plan -- --gguf PATH", () => {
  it("reads a local GGUF and sizes it on this machine at the given bandwidth", () => {
    const run = plan(
      "--gguf",
      model,
      "--args",
      "-c 2048 -np 1 --load-mode none --cache-ram 0",
      "--bandwidth-gbps",
      "20",
      "--json",
    );
    expect(run.stderr).toBe("");
    expect(run.status).toBe(0);
    const json = JSON.parse(run.stdout) as CommandLineJson;
    expect(json.model.architecture).toBe("deepseek2");
    expect(json.model.layers).toBe(3);
    expect(json.host.memoryBandwidthBytesPerSecond).toBe(20e9);
    const cpu = json.devices[0]!;
    // f16 MLA cache: (64 + 16) elements × 2 bytes per token per layer, 3 layers, 2048 cells.
    expect(cpu.bytesByKind.kv).toBe(80 * 2 * 3 * 2048);
    expect(cpu.bytesByKind.promptCache).toBe(0);
    expect(cpu.mappedFileSpanBytes).toBe(0);
    expect(cpu.bytesByKind.weights + cpu.bytesByKind.repackedWeights).toBe(json.model.bytes);
    expect(json.model.bytes).toBeGreaterThan(0.9e6);
    expect(json.model.bytes).toBeLessThan(0.01 * GiB);
  });

  it("uses the stack's host when a stack is given", () => {
    const run = plan("--gguf", model, "--stack", "rtx3090x4", "--args", "-ngl all --cpu-moe", "--json");
    expect(run.status).toBe(0);
    const json = JSON.parse(run.stdout) as CommandLineJson;
    expect(json.devices.map((device) => device.name)).toEqual(["CPU", "CUDA0", "CUDA1", "CUDA2", "CUDA3"]);
    expect(json.mode).toBe("hybrid");
    expect(json.devices[0]!.bytesByKind.repackedWeights).toBe(0); // a CUDA host buffer comes before CPU_REPACK
  });

  it.each([
    ["a file that does not exist", () => join(dir, "missing.gguf"), /^--gguf: .*missing\.gguf: no such file/],
    [
      "a file that is not GGUF",
      () => {
        const path = join(dir, "notes.gguf");
        writeFileSync(path, "hello, not a model\n");
        return path;
      },
      /^--gguf: .*notes\.gguf: not a GGUF file/,
    ],
    ["a directory", () => dir, /^--gguf: .*: not a file; allowed: a local \.gguf file$/],
    [
      "a shard that is not the first",
      () => {
        const path = join(dir, "small-00002-of-00003.gguf");
        copyFileSync(model, path);
        return path;
      },
      /^--gguf: .*small-00002-of-00003\.gguf: shard 2 of 3 of a split model; allowed: the first shard \(small-00001-of-00003\.gguf\)/,
    ],
  ])("%s is one clear line naming the file, exit 1", (_, pathOf, message) => {
    const run = plan("--gguf", pathOf(), "--bandwidth-gbps", "20");
    expect(run.status).toBe(1);
    expect(run.stderr.trim()).toMatch(message);
    expect(run.stderr.trim().split("\n")).toHaveLength(1);
    expect(run.stderr).not.toMatch(/\bat .*\.ts:\d+/);
  });

  it("--gguf with no path names the option and what it takes, exit 2", () => {
    const run = plan("--args", "-c 4096", "--gguf");
    expect(run.status).toBe(2);
    expect(run.stderr.split("\n")[0]).toBe(
      "--gguf: found nothing; allowed: a local .gguf file (the first shard of a split model)",
    );
  });
});
