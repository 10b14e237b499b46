/**
 * Generated Kimi-shaped (deepseek2: MLA, leading dense layer, routed + shared experts) models
 * bigger than test-llama-archs': written by lab/gguf-writer.ts, read back with
 * @huggingface/gguf, quantized into tier-like mixes with llama-quantize, split with
 * llama-gguf-split, and served from the shards by the tested llama-server release.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, mkdtempSync, openSync, readFileSync, readSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { gguf } from "@huggingface/gguf";
import { classifyTensor } from "../../planner/tensors";
import {
  deepseek2Size,
  deepseek2TensorPlan,
  writeDeepseek2Gguf,
  writeGguf,
  kv,
  type Deepseek2Dims,
} from "../../lab/gguf-writer";
import { llamaBinDir, llamaTool } from "../../lab/llama-cpp";
import {
  MIX_NAMES,
  PRESET_DIMS,
  expectedMixType,
  generatedModelCase,
  quantizeMix,
  readDeepseek2Dims,
  type GeneratedModelCase,
} from "../../lab/model-mixes";
import type { GgmlTypeName } from "../../planner/ggml-types";
import { splitGguf } from "../../lab/models";
import { freePort } from "../../lab/net";

const MB = 1e6;
const KEY = `kimi-kit-gen-${process.pid}-${Date.now().toString(36)}`;
const SMALL: Deepseek2Dims = {
  layers: 3,
  denseLeadingLayers: 1,
  hidden: 256,
  heads: 2,
  qLoraRank: 128,
  kvLoraRank: 128,
  qkNopeHeadDim: 32,
  qkRopeHeadDim: 16,
  vHeadDim: 32,
  denseFfn: 320,
  experts: 4,
  activeExperts: 2,
  sharedExperts: 1,
  expertFfn: 256,
  vocab: 300,
  contextLength: 1024,
};

let work: string;
let medium: GeneratedModelCase;
let mediumSeconds = 0;
const children = new Set<ChildProcess>();

async function header(path: string) {
  const { metadata, tensorInfos, tensorDataOffset } = await gguf(path, { allowLocalFile: true });
  return {
    metadata: metadata as Record<string, unknown>,
    tensors: tensorInfos.map((t) => ({
      name: t.name,
      shape: t.shape.map(Number),
      dtype: t.dtype,
      offset: Number(t.offset),
    })),
    dataOffset: Number(tensorDataOffset),
  };
}

function readBytes(path: string, position: number, length: number): Buffer {
  const fd = openSync(path, "r");
  try {
    const buf = Buffer.alloc(length);
    readSync(fd, buf, 0, length, position);
    return buf;
  } finally {
    closeSync(fd);
  }
}

function f16ToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

function stats(values: number[]): { mean: number; std: number } {
  const mean = values.reduce((a, b) => a + b, 0) / values.length;
  const variance = values.reduce((a, b) => a + (b - mean) ** 2, 0) / values.length;
  return { mean, std: Math.sqrt(variance) };
}

const GGML_TYPE_NAMES: Record<number, GgmlTypeName> = {
  0: "F32",
  1: "F16",
  2: "Q4_0",
  6: "Q5_0",
  8: "Q8_0",
  10: "Q2_K",
  12: "Q4_K",
};
const typeName = (dtype: number) => GGML_TYPE_NAMES[dtype] ?? (`type#${dtype}` as GgmlTypeName);

interface Server {
  child: ChildProcess;
  log: () => string;
  exited: Promise<number | null>;
}

function startServer(model: string, port: number): Server {
  const child = spawn(
    llamaTool("llama-server"),
    ["-m", model, "--host", "127.0.0.1", "--port", String(port), "-c", "512", "-t", "2", "-np", "1", "--api-key", KEY],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  children.add(child);
  let log = "";
  child.stdout?.on("data", (d: Buffer) => (log += d.toString()));
  child.stderr?.on("data", (d: Buffer) => (log += d.toString()));
  const exited = new Promise<number | null>((resolve) => {
    child.on("exit", (code) => {
      children.delete(child);
      resolve(code);
    });
    child.on("error", () => resolve(-1));
  });
  return { child, log: () => log, exited };
}

async function stopProcess(child: ChildProcess, exited?: Promise<unknown>): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const done = exited ?? new Promise((r) => child.once("exit", r));
  child.kill("SIGTERM");
  const timer = new Promise((r) => setTimeout(r, 10_000, "timeout"));
  if ((await Promise.race([done, timer])) === "timeout") {
    child.kill("SIGKILL");
    await done;
  }
}

async function waitHealthy(server: Server, port: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let exitCode: number | null | undefined;
  void server.exited.then((c) => (exitCode = c));
  for (;;) {
    if (exitCode !== undefined) throw new Error(`llama-server exited with ${exitCode}:\n${server.log().slice(-4000)}`);
    try {
      const r = await fetch(`http://127.0.0.1:${port}/health`);
      if (r.status === 200) return;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline)
      throw new Error(`llama-server not healthy after ${timeoutMs} ms:\n${server.log().slice(-4000)}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

beforeAll(async () => {
  llamaBinDir(); // builds llama.cpp once into its cache (minutes the very first time)
  work = mkdtempSync(join(tmpdir(), "kimi-kit-genmodels-"));
  const started = Date.now();
  medium = await generatedModelCase(work, "medium");
  mediumSeconds = (Date.now() - started) / 1000;
});

afterAll(async () => {
  await Promise.all([...children].map((c) => stopProcess(c)));
  if (work) rmSync(work, { recursive: true, force: true });
});

describe("gguf-writer", () => {
  it("plans presets in their size ranges, with K-quant-friendly expert rows", () => {
    const m = deepseek2Size(PRESET_DIMS.medium, "F16");
    const l = deepseek2Size(PRESET_DIMS.large, "F16");
    expect(m.bytes).toBeGreaterThan(300 * MB);
    expect(m.bytes).toBeLessThan(600 * MB);
    expect(l.bytes).toBeGreaterThan(500 * MB);
    expect(l.bytes).toBeLessThan(1000 * MB);
    for (const dims of Object.values(PRESET_DIMS)) {
      expect(dims.hidden % 256).toBe(0);
      expect(dims.expertFfn % 256).toBe(0);
    }
  });

  it("writes deterministic, aligned GGUF v3 files whose values follow N(0, 0.02) and norms = 1", async () => {
    const a = writeDeepseek2Gguf(join(work, "small-a.gguf"), SMALL, { type: "F32", seed: 7 });
    const b = writeDeepseek2Gguf(join(work, "small-b.gguf"), SMALL, { type: "F32", seed: 7 });
    const c = writeDeepseek2Gguf(join(work, "small-c.gguf"), SMALL, { type: "F32", seed: 8 });
    expect(readFileSync(a.path).equals(readFileSync(b.path))).toBe(true);
    expect(readFileSync(a.path).equals(readFileSync(c.path))).toBe(false);
    expect(statSync(a.path).size).toBe(a.bytes);

    const h = await header(a.path);
    expect(h.dataOffset).toBe(a.dataOffset);
    expect(h.dataOffset % 32).toBe(0);
    for (const t of h.tensors) expect(t.offset % 32).toBe(0);
    const last = a.tensors[a.tensors.length - 1];
    expect(h.dataOffset + (last?.offset ?? 0) + (last?.nbytes ?? 0)).toBeLessThanOrEqual(a.bytes);

    const q = a.tensors.find((t) => t.name === "blk.1.ffn_gate_exps.weight");
    const norm = a.tensors.find((t) => t.name === "blk.1.attn_norm.weight");
    if (!q || !norm) throw new Error("planned tensors missing");
    const raw = readBytes(a.path, a.dataOffset + q.offset, q.nbytes);
    const values = Array.from(new Float32Array(raw.buffer, raw.byteOffset, q.nbytes / 4));
    const s = stats(values);
    expect(Math.abs(s.mean)).toBeLessThan(0.001);
    expect(s.std).toBeGreaterThan(0.019);
    expect(s.std).toBeLessThan(0.021);
    expect(new Set(values.slice(0, 1000)).size).toBeGreaterThan(900); // not a repeating pattern
    const normRaw = readBytes(a.path, a.dataOffset + norm.offset, norm.nbytes);
    expect(
      Array.from(new Float32Array(normRaw.buffer, normRaw.byteOffset, norm.nbytes / 4)).every((v) => v === 1),
    ).toBe(true);
  });

  it("writes every GGUF metadata value type the reader understands", async () => {
    const path = join(work, "kv.gguf");
    writeGguf(
      path,
      {
        "t.u8": kv.u8(200),
        "t.i8": kv.i8(-5),
        "t.u16": kv.u16(60000),
        "t.i16": kv.i16(-300),
        "t.u32": kv.u32(4_000_000_000),
        "t.i32": kv.i32(-7),
        "t.f32": kv.f32(0.5),
        "t.bool": kv.bool(true),
        "t.str": kv.str("héllo"),
        "t.u64": kv.u64(2n ** 40n),
        "t.i64": kv.i64(-(2n ** 40n)),
        "t.f64": kv.f64(1.25),
        "t.arr": kv.arr("str", ["a", "b"]),
        "t.arr_i32": kv.arr("i32", [1, -2, 3]),
      },
      [{ name: "x", shape: [4, 2], type: "F16", data: { kind: "constant", value: 1.5 } }],
    );
    const h = await header(path);
    expect(h.metadata).toMatchObject({
      "t.u8": 200,
      "t.i8": -5,
      "t.u16": 60000,
      "t.i16": -300,
      "t.u32": 4_000_000_000,
      "t.i32": -7,
      "t.f32": 0.5,
      "t.bool": true,
      "t.str": "héllo",
      "t.u64": 2n ** 40n,
      "t.i64": -(2n ** 40n),
      "t.f64": 1.25,
      "t.arr": ["a", "b"],
      "t.arr_i32": [1, -2, 3],
    });
    expect(h.tensors).toEqual([{ name: "x", shape: [4, 2], dtype: 1, offset: 0 }]);
    const raw = readBytes(path, h.dataOffset, 16);
    expect([...Array(8).keys()].map((i) => f16ToF32(raw.readUInt16LE(2 * i)))).toEqual(Array(8).fill(1.5));
  });
});

describe("medium generated model", () => {
  it("is written with the planned tensors, shapes, types and deepseek2 keys", async () => {
    // How long it took is reported, not asserted: speed belongs in bench/, not in tests.
    process.stdout.write(`  medium model written in ${mediumSeconds.toFixed(1)} s\n`);
    expect(medium.sourceBytes).toBeGreaterThan(400 * MB);
    const h = await header(medium.source);
    const plan = deepseek2TensorPlan(PRESET_DIMS.medium, "F16");
    expect(h.tensors.map((t) => ({ name: t.name, shape: t.shape, type: typeName(t.dtype) }))).toEqual(
      plan.map((t) => ({ name: t.name, shape: t.shape, type: t.type })),
    );
    const d = PRESET_DIMS.medium;
    expect(h.metadata).toMatchObject({
      "general.architecture": "deepseek2",
      "deepseek2.block_count": d.layers,
      "deepseek2.leading_dense_block_count": d.denseLeadingLayers,
      "deepseek2.embedding_length": d.hidden,
      "deepseek2.expert_count": d.experts,
      "deepseek2.expert_used_count": d.activeExperts,
      "deepseek2.expert_shared_count": d.sharedExperts,
      "deepseek2.expert_feed_forward_length": d.expertFfn,
      "deepseek2.attention.key_length": d.kvLoraRank + d.qkRopeHeadDim,
      "deepseek2.attention.value_length": d.kvLoraRank,
      "deepseek2.attention.key_length_mla": d.qkNopeHeadDim + d.qkRopeHeadDim,
      "deepseek2.attention.value_length_mla": d.vHeadDim,
      "deepseek2.rope.dimension_count": d.qkRopeHeadDim,
      "tokenizer.ggml.model": "test",
    });
    expect((h.metadata["tokenizer.ggml.tokens"] as string[]).length).toBe(d.vocab);
    expect((await readDeepseek2Dims(medium.source)).dims).toEqual(d);

    // the MoE layers carry separate routed experts, shared experts, router and bias; the dense layer a plain FFN
    const names = new Set(h.tensors.map((t) => t.name));
    for (const n of ["ffn_gate_exps", "ffn_up_exps", "ffn_down_exps", "ffn_gate_shexp", "ffn_gate_inp"])
      expect(names.has(`blk.1.${n}.weight`)).toBe(true);
    expect(names.has("blk.1.exp_probs_b.bias")).toBe(true);
    expect(names.has("blk.0.ffn_gate.weight")).toBe(true);
    expect([...names].some((n) => n.includes("gate_up_exps"))).toBe(false);
    expect(h.tensors.find((t) => t.name === "blk.3.attn_k_b.weight")?.shape).toEqual([
      d.qkNopeHeadDim,
      d.kvLoraRank,
      d.heads,
    ]);

    // F16 values: small, finite, spread
    const t = h.tensors.find((x) => x.name === "blk.2.ffn_down_exps.weight");
    if (!t) throw new Error("no blk.2.ffn_down_exps.weight");
    const raw = readBytes(medium.source, h.dataOffset + t.offset, 2 * 65536);
    const values = [...Array(65536).keys()].map((i) => f16ToF32(raw.readUInt16LE(2 * i)));
    expect(values.every(Number.isFinite)).toBe(true);
    const s = stats(values);
    expect(s.std).toBeGreaterThan(0.018);
    expect(s.std).toBeLessThan(0.022);
  });

  it.each(MIX_NAMES)(
    "quantizes into the %s mix with the planned type per tensor class",
    async (mix) => {
      const r = await quantizeMix(medium.source, medium.mixes[mix].path, mix);
      const h = await header(r.output);
      const got = Object.fromEntries(h.tensors.map((t) => [t.name, typeName(t.dtype)]));
      expect(got).toEqual(medium.mixes[mix].tensorTypes);

      // per class, as the tier is meant: experts K-quant, the rest Q8_0, router/norms F32
      const byClass = new Map<string, Set<string>>();
      for (const t of h.tensors) {
        const cls = classifyTensor(t.name, t.shape);
        byClass.set(cls, (byClass.get(cls) ?? new Set()).add(typeName(t.dtype)));
      }
      const experts = mix === "q2-experts" ? "Q2_K" : "Q4_K";
      expect(Object.fromEntries([...byClass].map(([k, v]) => [k, [...v].sort()]))).toEqual({
        embedding: ["Q8_0"],
        output: ["Q8_0"],
        attention: ["Q8_0"],
        denseFfn: ["Q8_0"],
        sharedExperts: ["Q8_0"],
        routedExperts: [experts],
        // the router (ffn_gate_inp) and the expert bias (exp_probs_b)
        router: ["F32"],
        norms: ["F32"],
      });
      const [lo, hi] = mix === "q2-experts" ? [90 * MB, 150 * MB] : [130 * MB, 200 * MB];
      expect(r.bytes).toBeGreaterThan(lo);
      expect(r.bytes).toBeLessThan(hi);
      expect(r.command).toContain("--pure");
    },
    120_000,
  );

  it("splits the q2-experts mix into shards that llama-server loads and serves with the API key", async () => {
    // Its own mix (quantizeMix reuses the file when the test above made it), so this test runs alone too.
    const q2 = (await quantizeMix(medium.source, medium.mixes["q2-experts"].path, "q2-experts")).output;
    const shards = splitGguf(q2, join(work, "split", "medium-q2-experts"), 48);
    expect(shards.length).toBeGreaterThanOrEqual(3);
    expect(shards[0]).toMatch(/-00001-of-0000\d\.gguf$/);

    const port = await freePort();
    const server = startServer(shards[0] as string, port);
    try {
      await waitHealthy(server, port, 90_000);
      const url = `http://127.0.0.1:${port}/completion`;
      const body = JSON.stringify({ prompt: [1, 2, 3, 4], n_predict: 8, return_tokens: true, n_probs: 1 });
      const denied = await fetch(url, { method: "POST", headers: { "Content-Type": "application/json" }, body });
      expect(denied.status).toBe(401);
      const res = await fetch(url, {
        method: "POST",
        headers: { "Content-Type": "application/json", Authorization: `Bearer ${KEY}` },
        body,
      });
      expect(res.status).toBe(200);
      const json = (await res.json()) as {
        tokens: number[];
        tokens_predicted: number;
        timings: { prompt_n: number; predicted_n: number; predicted_per_second: number };
        completion_probabilities?: { logprob: number }[];
      };
      expect(json.tokens_predicted).toBe(8);
      expect(json.timings.predicted_n).toBe(8);
      expect(json.timings.prompt_n).toBe(4);
      expect(json.timings.predicted_per_second).toBeGreaterThan(0);
      expect(json.tokens).toHaveLength(8);
      for (const t of json.tokens) expect(t >= 0 && t < PRESET_DIMS.medium.vocab).toBe(true);
      // finite logits all the way through the 8 layers
      expect(json.completion_probabilities).toHaveLength(8);
      for (const p of json.completion_probabilities ?? []) expect(Number.isFinite(p.logprob)).toBe(true);
    } finally {
      await stopProcess(server.child, server.exited);
    }
    expect(server.log()).toMatch(/model loaded/);
  }, 150_000);
});

describe("tiny (test-llama-archs) model", () => {
  it("gets the mixes' fallback types where rows are not multiples of 256", async () => {
    const tiny = await generatedModelCase(work, "tiny");
    expect(tiny.dims).toMatchObject({ layers: 2, denseLeadingLayers: 1, hidden: 128, experts: 2, vocab: 128 });
    expect(tiny.fusedGateUp).toBe(true);
    const r = await quantizeMix(tiny.source, tiny.mixes["q2-experts"].path, "q2-experts");
    const h = await header(r.output);
    const got = Object.fromEntries(h.tensors.map((t) => [t.name, typeName(t.dtype)]));
    expect(got).toEqual(tiny.mixes["q2-experts"].tensorTypes);
    // ne[0] = 128 and 192: Q2_K falls back to Q4_0
    expect(got["blk.1.ffn_gate_up_exps.weight"]).toBe("Q4_0");
    expect(got["blk.1.ffn_down_exps.weight"]).toBe("Q4_0");
    expect(
      expectedMixType("q4-experts", { name: "blk.1.ffn_down_exps.weight", shape: [192, 128, 2], type: "F32" }),
    ).toBe("Q5_0");
    expect(got["blk.1.ffn_gate_inp.weight"]).toBe("F32");
    expect(got["token_embd.weight"]).toBe("Q8_0");
  }, 60_000);
});
