/**
 * kimi-k3 (Kimi K3's llama.cpp architecture: MLA on some layers, KDA linear attention with a
 * recurrent state on the others) sized from its GGUF metadata, against the buffers the real
 * llama-server v0.5.0 logs for test-llama-archs' kimi-k3 model: weights, KV (MLA layers only, K only)
 * and the recurrent state (KDA layers, one per slot, independent of the context). llama-server prints
 * MiB with two decimals, so a figure agrees when it is within that rounding (±0.005 MiB) or 0.5%.
 * The compute buffer is reported, not gated: the estimator models it on deepseek2's MLA step.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseBuffers, startServer } from "../../lab/server";
import { readLocalModel, thisMachineHost, type LocalModel } from "../../cli/local-model";
import { loadCatalog } from "../../planner/catalog";
import { estimate } from "../../planner/estimate";
import { parseFlags } from "../../planner/flags";
import { architectureFromMetadata, UnsizedArchitectureError } from "../../planner/lock";
import { parseStackConfig } from "../../planner/config";
import { buildPlan } from "../../planner/plan";
import { readStackValues } from "../../planner/stack-file";
import { generateArchModel } from "../../lab/models";

const MiB = 1024 * 1024;
const catalog = loadCatalog();
let dir: string;
let model: LocalModel;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "kimi-k3-"));
  model = await readLocalModel(generateArchModel(dir, "kimi-k3"));
}, 300_000);
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Within llama-server's printed precision (two decimals of MiB) or 0.5%. */
function agrees(predictedBytes: number, loggedBytes: number): boolean {
  return Math.abs(predictedBytes - loggedBytes) <= Math.max(0.005 * MiB, 0.005 * loggedBytes);
}

describe("kimi-k3 from its GGUF metadata", () => {
  it("reads the per-layer arrays: which layers are recurrent (KDA) and their state per slot", () => {
    expect(model.arch.llamaCppArch).toBe("kimi-k3");
    // The test model's attention.recurrent_layers is [0, 1]: layer 1 is KDA.
    expect(model.arch.recurrent?.layers).toEqual([1]);
    // n_embd_r + n_embd_s: 3 convs × (4 − 1) × 1 head × 128 + 128² × 1 head, F32.
    expect(model.arch.recurrent?.stateFloatsPerLayer).toBe(3 * 3 * 128 + 128 * 128);
  });

  it.each([
    { args: ["-c", "512", "-np", "2"], label: "2 slots" },
    { args: ["-c", "4096", "-np", "32"], label: "32 slots (state × 32, KV over 4096 cells)" },
    {
      args: ["-c", "2048", "-np", "1", "-ctk", "q8_0", "-ctv", "q8_0"],
      label: "1 slot, q8_0 K (and V: MLA needs them equal)",
    },
    { args: ["-c", "1024"], label: "auto slots (4, unified KV)" },
  ])(
    "weights, KV and recurrent state match llama-server's buffers: $label",
    async ({ args }) => {
      const argv = [...args, "-t", "2", "--load-mode", "none", "--fit", "off", "--cache-ram", "0", "-ub", "512"];
      const server = await startServer(model.path, argv);
      const logged = parseBuffers(server.log());
      await server.stop();
      const cpu = estimate(model.tensors, model.arch, thisMachineHost(10), parseFlags(argv, "test").sizing, { catalog })
        .devices[0]!;
      const report = `predicted weights ${cpu.modelBytes}, KV ${cpu.kvBytes}, RS ${cpu.recurrentBytes}; logged ${JSON.stringify(logged)}`;
      expect(
        agrees(cpu.modelBytes + cpu.repackBytes, (logged.model.CPU ?? 0) + (logged.model.CPU_REPACK ?? 0)),
        report,
      ).toBe(true);
      expect(agrees(cpu.kvBytes, logged.kv.CPU ?? 0), report).toBe(true);
      expect(logged.recurrent.CPU ?? 0, report).toBeGreaterThan(0);
      expect(agrees(cpu.recurrentBytes, logged.recurrent.CPU ?? 0), report).toBe(true);
    },
    120_000,
  );

  it("the KV type flags the kit writes for serving.kvCacheType q8_0 start the real llama-server on an MLA model", async () => {
    const values = structuredClone(readStackValues("cpu-ddr5"));
    (values.serving as Record<string, unknown>).kvCacheType = "q8_0";
    const args = buildPlan("cpu-ddr5", parseStackConfig("cpu-ddr5", values)).llamaServerArgs;
    const kvFlags = ["--cache-type-k", "--cache-type-v"].flatMap((flag) =>
      args.includes(flag) ? [flag, args[args.indexOf(flag) + 1]!] : [],
    );
    expect(kvFlags).toEqual(["--cache-type-k", "q8_0", "--cache-type-v", "q8_0"]);
    const server = await startServer(model.path, ["-c", "512", "-np", "1", "-t", "2", "--fit", "off", ...kvFlags]);
    const logged = parseBuffers(server.log());
    await server.stop();
    expect(logged.kv.CPU ?? 0).toBeGreaterThan(0);
  }, 120_000);

  it("-ctk q8_0 alone is refused as llama-server refuses it (MLA with different K and V cache types)", () => {
    expect(() =>
      estimate(model.tensors, model.arch, thisMachineHost(10), parseFlags(["-ctk", "q8_0"], "test").sizing, {
        catalog,
      }),
    ).toThrow(/-ctv: found f16 with -ctk q8_0; allowed: -ctv q8_0/);
  });

  it("the recurrent state does not grow with the context; KV does", () => {
    const at = (ctx: number) =>
      estimate(
        model.tensors,
        model.arch,
        thisMachineHost(10),
        parseFlags(["-c", String(ctx), "-np", "2"], "test").sizing,
        { catalog },
      ).devices[0]!;
    expect(at(4096).recurrentBytes).toBe(at(512).recurrentBytes);
    expect(at(4096).kvBytes).toBe(8 * at(512).kvBytes);
  });
});

describe("architectures the kit does not size", () => {
  it("refuses one by name, never guessing its memory", () => {
    expect(() =>
      architectureFromMetadata({ "general.architecture": "qwen3vlmoe", "qwen3vlmoe.block_count": 48 }),
    ).toThrow(UnsizedArchitectureError);
    expect(() => architectureFromMetadata({ "general.architecture": "rwkv7" })).toThrow(
      /^architecture rwkv7 is not sized by this kit \(sized: deepseek2, kimi-k3/,
    );
  });

  it("refuses a per-layer array of the wrong length, naming the key", () => {
    const metadata = { ...model.lock.metadata, "kimi-k3.attention.recurrent_layers": [0, 1, 1] };
    expect(() => architectureFromMetadata(metadata)).toThrow(
      /kimi-k3\.attention\.recurrent_layers has 3 entries; allowed: one per layer \(kimi-k3\.block_count = 2\)/,
    );
  });
});
