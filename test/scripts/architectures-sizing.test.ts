/**
 * Every architecture the kit sizes from GGUF metadata, against the real llama-server v0.5.0: each
 * model test-llama-archs writes for it is served at settings that exercise one slot, several slots
 * with a small ubatch (sliding windows and chunks: min(cells, window × 1 + ubatch)), and a unified
 * cache over several slots (window × slots + ubatch), and the weights, KV (with sliding-window,
 * indexer and deepseek4's compressed caches) and recurrent or compressor state the estimator predicts
 * are compared with the buffers the server logs. llama-server prints MiB with two decimals: a figure agrees within that
 * rounding or 0.5%.
 * The CPU compute buffer (the graph allocator's peak for one ubatch, a model of which tensors are alive
 * at each candidate step) is held to 10%, also without flash attention (f32 scores, masks and V copies)
 * and with a 2048-token ubatch (the MoE, indexer and attention activations grow with it).
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseBuffers, startServer } from "../../lab/server";
import { readLocalModel, thisMachineHost } from "../../cli/local-model";
import { loadCatalog } from "../../planner/catalog";
import { estimate } from "../../planner/estimate";
import { parseFlags } from "../../planner/flags";
import { SIZED_ARCHITECTURES } from "../../planner/lock";
import { generateArchModel } from "../../lab/models";

const MiB = 1024 * 1024;
const catalog = loadCatalog();
let dir: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "archs-"));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Within the log's rounding (0.005 MiB for each of the `figures` two-decimal figures summed) or 0.5%. */
function agrees(predictedBytes: number, loggedBytes: number, figures = 1): boolean {
  return Math.abs(predictedBytes - loggedBytes) <= Math.max(figures * 0.005 * MiB, 0.005 * loggedBytes);
}

/** The compute buffer is a model of the allocator's peak, not arithmetic on the file: within 10%. */
const COMPUTE_TOLERANCE = 0.1;

const SETTINGS = [
  ["-c", "512", "-np", "1", "--load-mode", "none"],
  ["-c", "32768", "-np", "4", "-ub", "256", "--load-mode", "none"],
  ["-c", "20000", "-np", "3", "-kvu", "-ub", "300", "-b", "300", "--load-mode", "none"],
  // Sliding-window layers keep the whole context; the weights memory-mapped (llama-server's default).
  ["-c", "4096", "-np", "2", "--swa-full"],
  // Without flash attention: f32 scores over every visible cell, f32 masks, V copied out.
  ["-c", "4096", "-np", "2", "-fa", "off", "--load-mode", "none"],
  // A large ubatch: every per-token activation and mask is four times the default's.
  ["-c", "8192", "-np", "1", "-ub", "2048", "-b", "2048", "--load-mode", "none"],
];

// Every architecture the kit sizes, so one added to SIZED_ARCHITECTURES is checked here too.
describe.each([...SIZED_ARCHITECTURES])("%s", (arch) => {
  it("weights, KV (windows, indexers) and recurrent state match llama-server's buffers, the compute buffer within 10%", async () => {
    const model = await readLocalModel(generateArchModel(join(dir, arch), arch));
    expect(model.arch.llamaCppArch).toBe(arch);
    for (const settings of SETTINGS) {
      const argv = [...settings, "-t", "2", "--fit", "off", "--cache-ram", "0"];
      const server = await startServer(model.path, argv);
      const logged = parseBuffers(server.log());
      // deepseek4 logs one KV buffer per cache (raw window, compressed, indexer), each rounded on its own.
      const kvFigures = [...server.log().matchAll(/llama_kv_cache:\s+CPU KV buffer size/g)].length;
      await server.stop();
      const cpu = estimate(model.tensors, model.arch, thisMachineHost(10), parseFlags(argv, "test").sizing, { catalog })
        .devices[0]!;
      // Memory-mapped, llama-server's CPU_Mapped buffer is the mapped file span (estimate()'s mappedBytes).
      const weights = cpu.mappedBytes > 0 ? cpu.mappedBytes + cpu.repackBytes : cpu.modelBytes + cpu.repackBytes;
      const report = `${arch} ${settings.join(" ")}: predicted weights ${weights}, KV ${cpu.kvBytes}, RS ${cpu.recurrentBytes}, compute ${cpu.computeBytes}; logged ${JSON.stringify(logged)}`;
      expect(
        agrees(weights, (logged.model.CPU ?? 0) + (logged.model.CPU_Mapped ?? 0) + (logged.model.CPU_REPACK ?? 0)),
        report,
      ).toBe(true);
      expect(agrees(cpu.kvBytes, logged.kv.CPU ?? 0, kvFigures), report).toBe(true);
      expect(agrees(cpu.recurrentBytes, logged.recurrent.CPU ?? 0), report).toBe(true);
      const loggedCompute = logged.compute.CPU;
      expect(loggedCompute, report).toBeGreaterThan(0);
      expect(Math.abs(cpu.computeBytes - loggedCompute!) / loggedCompute!, report).toBeLessThanOrEqual(
        COMPUTE_TOLERANCE,
      );
    }
  }, 180_000);
});

describe("architectures the kit does not size", () => {
  it("are refused by name, as the file's problem", async () => {
    // test-llama-archs' qwen3vlmoe: a MoE architecture whose vision-language caches the kit does not size.
    await expect(readLocalModel(generateArchModel(join(dir, "qwen3vlmoe"), "qwen3vlmoe"))).rejects.toThrow(
      /architecture qwen3vlmoe is not sized by this kit/,
    );
  }, 180_000);
});
