/**
 * A small GGUF v3 writer for tests, and a generator of deepseek2-architecture models (the
 * architecture llama.cpp runs Kimi K2 / K2.6 with: MLA attention, leading dense layers, routed +
 * shared experts) of any size, filled with small deterministic pseudo-random weights.
 *
 * GGUF v3 layout: "GGUF", u32 version, u64 tensor_count, u64 kv_count, the metadata KVs
 * (string key, u32 value type, value), the tensor infos (name, u32 n_dims, u64 ne[n_dims] with
 * ne[0] the row length, u32 ggml type, u64 offset into the data section), padding to the
 * alignment (general.alignment, default 32), then each tensor's data, each padded to the
 * alignment. Everything little endian.
 *
 * Tensor data is streamed to disk in chunks, so a model of any size needs a few MB of memory;
 * on 2 cores a 450 MB F16 model is written in a few seconds.
 */
import { closeSync, mkdirSync, openSync, renameSync, rmSync, writeSync } from "node:fs";
import { dirname } from "node:path";
import type { Architecture, TensorClass, Tier } from "../planner/catalog";
import { tensorsFromArchitecture } from "../planner/tensors";

// ---------------------------------------------------------------------------------------------
// Metadata values

/** GGUF metadata value types (the numbers the format stores). */
export const GGUF_VALUE_TYPE = {
  u8: 0,
  i8: 1,
  u16: 2,
  i16: 3,
  u32: 4,
  i32: 5,
  f32: 6,
  bool: 7,
  str: 8,
  array: 9,
  u64: 10,
  i64: 11,
  f64: 12,
} as const;

export type GgufScalarType = Exclude<keyof typeof GGUF_VALUE_TYPE, "array">;
type ScalarJs = number | bigint | boolean | string;

export type GgufValue =
  { type: GgufScalarType; value: ScalarJs } | { type: "array"; itemType: GgufScalarType; value: readonly ScalarJs[] };

/** Constructors for metadata values: `kv.u32(7)`, `kv.str("deepseek2")`, `kv.arr("str", [...])`. */
export const kv = {
  u8: (value: number): GgufValue => ({ type: "u8", value }),
  i8: (value: number): GgufValue => ({ type: "i8", value }),
  u16: (value: number): GgufValue => ({ type: "u16", value }),
  i16: (value: number): GgufValue => ({ type: "i16", value }),
  u32: (value: number): GgufValue => ({ type: "u32", value }),
  i32: (value: number): GgufValue => ({ type: "i32", value }),
  f32: (value: number): GgufValue => ({ type: "f32", value }),
  bool: (value: boolean): GgufValue => ({ type: "bool", value }),
  str: (value: string): GgufValue => ({ type: "str", value }),
  u64: (value: number | bigint): GgufValue => ({ type: "u64", value }),
  i64: (value: number | bigint): GgufValue => ({ type: "i64", value }),
  f64: (value: number): GgufValue => ({ type: "f64", value }),
  arr: (itemType: GgufScalarType, value: readonly ScalarJs[]): GgufValue => ({ type: "array", itemType, value }),
};

/** Growable little-endian byte buffer for the header. */
class ByteWriter {
  private buf = Buffer.alloc(1 << 16);
  length = 0;

  private ensure(n: number): void {
    if (this.length + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.length + n) size *= 2;
    const next = Buffer.alloc(size);
    this.buf.copy(next, 0, 0, this.length);
    this.buf = next;
  }

  u8(v: number) {
    this.ensure(1);
    this.buf.writeUInt8(v, this.length);
    this.length += 1;
  }
  i8(v: number) {
    this.ensure(1);
    this.buf.writeInt8(v, this.length);
    this.length += 1;
  }
  u16(v: number) {
    this.ensure(2);
    this.buf.writeUInt16LE(v, this.length);
    this.length += 2;
  }
  i16(v: number) {
    this.ensure(2);
    this.buf.writeInt16LE(v, this.length);
    this.length += 2;
  }
  u32(v: number) {
    this.ensure(4);
    this.buf.writeUInt32LE(v, this.length);
    this.length += 4;
  }
  i32(v: number) {
    this.ensure(4);
    this.buf.writeInt32LE(v, this.length);
    this.length += 4;
  }
  f32(v: number) {
    this.ensure(4);
    this.buf.writeFloatLE(v, this.length);
    this.length += 4;
  }
  f64(v: number) {
    this.ensure(8);
    this.buf.writeDoubleLE(v, this.length);
    this.length += 8;
  }
  u64(v: number | bigint) {
    this.ensure(8);
    this.buf.writeBigUInt64LE(BigInt(v), this.length);
    this.length += 8;
  }
  i64(v: number | bigint) {
    this.ensure(8);
    this.buf.writeBigInt64LE(BigInt(v), this.length);
    this.length += 8;
  }
  str(s: string) {
    const bytes = Buffer.from(s, "utf8");
    this.u64(bytes.length);
    this.ensure(bytes.length);
    bytes.copy(this.buf, this.length);
    this.length += bytes.length;
  }
  pad(alignment: number) {
    const n = (alignment - (this.length % alignment)) % alignment;
    this.ensure(n);
    this.buf.fill(0, this.length, this.length + n);
    this.length += n;
  }
  bytes(): Buffer {
    return this.buf.subarray(0, this.length);
  }
}

function writeScalar(w: ByteWriter, type: GgufScalarType, value: ScalarJs, key: string): void {
  const num = (): number => {
    if (typeof value !== "number") throw new Error(`GGUF key ${key}: ${type} needs a number, got ${typeof value}`);
    return value;
  };
  switch (type) {
    case "u8":
      return w.u8(num());
    case "i8":
      return w.i8(num());
    case "u16":
      return w.u16(num());
    case "i16":
      return w.i16(num());
    case "u32":
      return w.u32(num());
    case "i32":
      return w.i32(num());
    case "f32":
      return w.f32(num());
    case "f64":
      return w.f64(num());
    case "u64":
    case "i64":
      if (typeof value !== "number" && typeof value !== "bigint")
        throw new Error(`GGUF key ${key}: ${type} needs a number or bigint`);
      return type === "u64" ? w.u64(value) : w.i64(value);
    case "bool":
      if (typeof value !== "boolean") throw new Error(`GGUF key ${key}: bool needs a boolean`);
      return w.u8(value ? 1 : 0);
    case "str":
      if (typeof value !== "string") throw new Error(`GGUF key ${key}: str needs a string`);
      return w.str(value);
  }
}

function writeValue(w: ByteWriter, key: string, v: GgufValue): void {
  w.u32(GGUF_VALUE_TYPE[v.type]);
  if (v.type === "array") {
    w.u32(GGUF_VALUE_TYPE[v.itemType]);
    w.u64(v.value.length);
    for (const item of v.value) writeScalar(w, v.itemType, item, key);
  } else {
    writeScalar(w, v.type, v.value, key);
  }
}

// ---------------------------------------------------------------------------------------------
// Tensors

/** The ggml tensor types this writer can fill (ggml type ids: F32 = 0, F16 = 1). */
export type GgufTensorType = "F32" | "F16";
export const GGML_TYPE_ID: Record<GgufTensorType, number> = { F32: 0, F16: 1 };
const BYTES_PER_ELEMENT: Record<GgufTensorType, number> = { F32: 4, F16: 2 };

export type GgufTensorData =
  /** i.i.d. ~N(0, std²) values, deterministic for (seed, tensor name). */
  | { kind: "normal"; std: number; seed: number }
  | { kind: "constant"; value: number }
  /** Raw little-endian element bytes, exactly elements × element size long. */
  | { kind: "bytes"; bytes: Uint8Array };

export interface GgufTensorSpec {
  name: string;
  /** ggml order: shape[0] is the row length (ne[0]). */
  shape: readonly number[];
  type: GgufTensorType;
  data: GgufTensorData;
}

export interface WrittenTensor {
  name: string;
  shape: number[];
  type: GgufTensorType;
  /** Offset in the data section (relative to dataOffset). */
  offset: number;
  nbytes: number;
}

export interface WrittenGguf {
  path: string;
  bytes: number;
  /** Absolute file offset of the data section. */
  dataOffset: number;
  alignment: number;
  tensors: WrittenTensor[];
}

const align = (n: number, a: number) => Math.ceil(n / a) * a;
const elementCount = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);

/** f32 → IEEE half bits, round to nearest even. */
const f32buf = new Float32Array(1);
const u32buf = new Uint32Array(f32buf.buffer);
export function f32ToF16Bits(v: number): number {
  f32buf[0] = v;
  const x = u32buf[0] as number;
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0); // inf / nan
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00; // overflow → inf
  if (e <= 0) {
    if (e < -10) return sign; // underflow → ±0
    mant |= 0x800000;
    const shift = 14 - e;
    let half = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    if (rem > mid || (rem === mid && half & 1)) half++;
    return sign | half;
  }
  let half = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && half & 1)) half++; // a carry into the exponent is still correct (up to inf)
  return sign | half;
}

/** mulberry32: a tiny seeded PRNG for building tables and per-tensor seeds. */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** FNV-1a of a string mixed with a seed: a per-tensor xorshift state (never 0). */
function tensorState(seed: number, name: string): number {
  let h = (0x811c9dc5 ^ Math.imul(seed | 0, 0x9e3779b1)) >>> 0;
  for (let i = 0; i < name.length; i++) {
    h ^= name.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h === 0 ? 0x9e3779b9 : h;
}

const TABLE_BITS = 16;
const TABLE_SIZE = 1 << TABLE_BITS;
const normalTables = new Map<string, Float32Array | Uint16Array>();

/**
 * 65,536 N(0, std²) samples (Box–Muller, fixed seed) in the tensor's element type. Each element
 * of a tensor is one table entry picked by the top 16 bits of a per-tensor xorshift32 stream:
 * one shift-xor and one load per element, fast enough to stream hundreds of MB per second.
 */
function normalTable(type: GgufTensorType, std: number): Float32Array | Uint16Array {
  const key = `${type}:${std}`;
  const cached = normalTables.get(key);
  if (cached) return cached;
  const rnd = mulberry32(0x5eed1234);
  const values = new Float32Array(TABLE_SIZE);
  for (let i = 0; i < TABLE_SIZE; i += 2) {
    const u1 = Math.max(rnd(), 1e-12);
    const u2 = rnd();
    const r = Math.sqrt(-2 * Math.log(u1)) * std;
    values[i] = r * Math.cos(2 * Math.PI * u2);
    values[i + 1] = r * Math.sin(2 * Math.PI * u2);
  }
  const table = type === "F32" ? values : Uint16Array.from(values, (v) => f32ToF16Bits(v));
  normalTables.set(key, table);
  return table;
}

const CHUNK_ELEMENTS = 1 << 20;

/** Streams one tensor's data to `fd` at the current position; returns the bytes written. */
function writeTensorData(fd: number, spec: GgufTensorSpec, scratch: ArrayBuffer): number {
  const n = elementCount(spec.shape);
  const size = BYTES_PER_ELEMENT[spec.type];
  const data = spec.data;
  if (data.kind === "bytes") {
    if (data.bytes.length !== n * size)
      throw new Error(`tensor ${spec.name}: ${data.bytes.length} bytes given, ${n * size} needed`);
    let off = 0;
    while (off < data.bytes.length) off += writeSync(fd, data.bytes, off, data.bytes.length - off);
    return data.bytes.length;
  }
  const f32 = new Float32Array(scratch);
  const u16 = new Uint16Array(scratch);
  const bytes = new Uint8Array(scratch);
  if (data.kind === "constant") {
    if (spec.type === "F32") f32.fill(data.value);
    else u16.fill(f32ToF16Bits(data.value));
  }
  const table = data.kind === "normal" ? normalTable(spec.type, data.std) : undefined;
  let x = data.kind === "normal" ? tensorState(data.seed, spec.name) | 0 : 0;
  let written = 0;
  for (let start = 0; start < n; start += CHUNK_ELEMENTS) {
    const count = Math.min(CHUNK_ELEMENTS, n - start);
    if (table) {
      const out = spec.type === "F32" ? f32 : u16;
      for (let i = 0; i < count; i++) {
        x ^= x << 13;
        x ^= x >>> 17;
        x ^= x << 5;
        out[i] = table[x >>> TABLE_BITS] as number;
      }
    }
    const len = count * size;
    let off = 0;
    while (off < len) off += writeSync(fd, bytes, off, len - off);
    written += len;
  }
  return written;
}

/** Each tensor's place in the data section (checking names and shapes); the section's aligned size. */
function planTensors(
  tensors: readonly GgufTensorSpec[],
  alignment: number,
): { infos: WrittenTensor[]; dataSize: number } {
  const names = new Set<string>();
  const infos: WrittenTensor[] = [];
  let dataSize = 0;
  for (const t of tensors) {
    if (names.has(t.name)) throw new Error(`duplicate tensor ${t.name}`);
    names.add(t.name);
    if (t.shape.length < 1 || t.shape.length > 4 || t.shape.some((d) => !Number.isInteger(d) || d < 1)) {
      throw new Error(`tensor ${t.name}: bad shape [${t.shape.join(", ")}]`);
    }
    const nbytes = elementCount(t.shape) * BYTES_PER_ELEMENT[t.type];
    infos.push({ name: t.name, shape: [...t.shape], type: t.type, offset: dataSize, nbytes });
    dataSize = align(dataSize + nbytes, alignment);
  }
  return { infos, dataSize };
}

/** The header: magic, version, metadata and tensor infos, padded to the alignment. */
function ggufHeader(
  metadata: Record<string, GgufValue>,
  infos: readonly WrittenTensor[],
  alignment: number,
): ByteWriter {
  const w = new ByteWriter();
  w.u8(0x47);
  w.u8(0x47);
  w.u8(0x55);
  w.u8(0x46); // "GGUF"
  w.u32(3);
  w.u64(infos.length);
  w.u64(Object.keys(metadata).length);
  for (const [key, value] of Object.entries(metadata)) {
    w.str(key);
    writeValue(w, key, value);
  }
  for (const info of infos) {
    // like ggml: trailing dimensions of 1 are not written (n_dims = ggml_n_dims)
    let nDims = info.shape.length;
    while (nDims > 1 && info.shape[nDims - 1] === 1) nDims--;
    w.str(info.name);
    w.u32(nDims);
    for (let d = 0; d < nDims; d++) w.u64(info.shape[d] as number);
    w.u32(GGML_TYPE_ID[info.type]);
    w.u64(info.offset);
  }
  w.pad(alignment);
  return w;
}

/** Writes the header, then each tensor's data at its planned offset, zero-padded to the alignment. */
function writeFileBody(
  fd: number,
  header: Uint8Array,
  tensors: readonly GgufTensorSpec[],
  infos: readonly WrittenTensor[],
  alignment: number,
): void {
  let off = 0;
  while (off < header.length) off += writeSync(fd, header, off, header.length - off);
  const scratch = new ArrayBuffer(CHUNK_ELEMENTS * 4);
  const zeros = new Uint8Array(alignment);
  let pos = 0;
  for (let i = 0; i < tensors.length; i++) {
    const spec = tensors[i] as GgufTensorSpec;
    const info = infos[i] as WrittenTensor;
    if (pos !== info.offset) throw new Error(`internal: tensor ${info.name} at ${pos}, planned ${info.offset}`);
    pos += writeTensorData(fd, spec, scratch);
    const pad = align(pos, alignment) - pos;
    if (pad > 0) pos += writeSync(fd, zeros, 0, pad);
  }
}

/**
 * Writes a GGUF v3 file: `metadata` in the given order, then the tensors in the given order.
 * Writes `path + ".partial"` and renames it, so an interrupted run never leaves a truncated
 * file under `path`.
 */
export function writeGguf(
  path: string,
  metadata: Record<string, GgufValue>,
  tensors: readonly GgufTensorSpec[],
): WrittenGguf {
  const alignmentKv = metadata["general.alignment"];
  const alignment = alignmentKv && alignmentKv.type === "u32" ? Number(alignmentKv.value) : 32;
  if (!(alignment > 0 && alignment % 8 === 0))
    throw new Error(`general.alignment must be a positive multiple of 8, got ${alignment}`);

  const { infos, dataSize } = planTensors(tensors, alignment);
  const w = ggufHeader(metadata, infos, alignment);
  const dataOffset = w.length;

  mkdirSync(dirname(path), { recursive: true });
  const partial = `${path}.partial`;
  const fd = openSync(partial, "w");
  try {
    writeFileBody(fd, w.bytes(), tensors, infos, alignment);
    closeSync(fd);
  } catch (error) {
    closeSync(fd);
    rmSync(partial, { force: true });
    throw error;
  }
  renameSync(partial, path);
  return { path, bytes: dataOffset + dataSize, dataOffset, alignment, tensors: infos };
}

// ---------------------------------------------------------------------------------------------
// deepseek2 (Kimi K2-shaped) models

/** Dimensions of a deepseek2 model; names follow the HF config (Kimi K2: see reference docs). */
/**
 * A generated model's dimensions, in the short names of the presets; deepseek2Architecture turns
 * them into the planner's Architecture, whose tensor model (planner/tensors.ts) lists the tensors.
 */
export interface Deepseek2Dims {
  layers: number;
  /** first N layers use a dense FFN (Kimi K2: 1) */
  denseLeadingLayers: number;
  hidden: number;
  heads: number;
  /** the low-rank Q projection (attn_q_a / attn_q_b), as Kimi K2 and DeepSeek V3 have */
  qLoraRank: number;
  kvLoraRank: number;
  qkNopeHeadDim: number;
  qkRopeHeadDim: number;
  vHeadDim: number;
  /** FFN width of the leading dense layers */
  denseFfn: number;
  experts: number;
  activeExperts: number;
  sharedExperts: number;
  /** FFN width of one routed (and one shared) expert */
  expertFfn: number;
  vocab: number;
  contextLength: number;
}

export interface Deepseek2WriteOptions {
  /**
   * element type of the matrices (default F16); norms, router and expert bias stay F32 as convert_hf_to_gguf writes
   * them
   */
  type?: GgufTensorType;
  /** seed of the weights (default 1) */
  seed?: number;
  /** standard deviation of the matrices' values (default 0.02) */
  std?: number;
  /** general.name (default "kimi-kit-test-deepseek2") */
  name?: string;
}

export interface PlannedTensor {
  name: string;
  shape: number[];
  type: GgufTensorType;
  /** The planner's tensor class (planner/tensors.ts classifyTensor). */
  class: TensorClass;
}

function checkDims(d: Deepseek2Dims): void {
  for (const [k, v] of Object.entries(d)) {
    if (!Number.isInteger(v) || v < 0) throw new Error(`deepseek2 dims: ${k} must be a non-negative integer, got ${v}`);
  }
  const positive: (keyof Deepseek2Dims)[] = [
    "layers",
    "hidden",
    "heads",
    "qLoraRank",
    "kvLoraRank",
    "qkNopeHeadDim",
    "qkRopeHeadDim",
    "vHeadDim",
    "experts",
    "activeExperts",
    "sharedExperts",
    "expertFfn",
    "vocab",
    "contextLength",
  ];
  for (const k of positive) if (d[k] < 1) throw new Error(`deepseek2 dims: ${k} must be ≥ 1 (llama.cpp requires it)`);
  if (d.denseLeadingLayers > d.layers) throw new Error("deepseek2 dims: denseLeadingLayers > layers");
  if (d.denseLeadingLayers > 0 && d.denseFfn < 1) throw new Error("deepseek2 dims: dense layers need denseFfn ≥ 1");
  if (d.activeExperts > d.experts) throw new Error("deepseek2 dims: activeExperts > experts");
  if (d.qkRopeHeadDim % 2 !== 0) throw new Error("deepseek2 dims: qkRopeHeadDim must be even (RoPE pairs)");
}

/** The planner's Architecture of a generated deepseek2 model (the same fields, the planner's names). */
export function deepseek2Architecture(dims: Deepseek2Dims): Architecture {
  checkDims(dims);
  return {
    llamaCppArch: "deepseek2",
    layers: dims.layers,
    denseLeadingLayers: dims.denseLeadingLayers,
    hiddenSize: dims.hidden,
    attentionHeads: dims.heads,
    qLoraRank: dims.qLoraRank,
    kvLoraRank: dims.kvLoraRank,
    qkNopeHeadDim: dims.qkNopeHeadDim,
    qkRopeHeadDim: dims.qkRopeHeadDim,
    vHeadDim: dims.vHeadDim,
    denseFfnSize: dims.denseFfn,
    routedExperts: dims.experts,
    activeExperts: dims.activeExperts,
    sharedExperts: dims.sharedExperts,
    expertFfnSize: dims.expertFfn,
    vocabSize: dims.vocab,
    contextLength: dims.contextLength,
  };
}

/** The inverse of deepseek2Architecture, for a deepseek2 Architecture read from a file's metadata. */
export function deepseek2DimsOf(arch: Architecture): Deepseek2Dims {
  if (arch.llamaCppArch !== "deepseek2") throw new Error(`architecture ${arch.llamaCppArch}, not deepseek2`);
  return {
    layers: arch.layers,
    denseLeadingLayers: arch.denseLeadingLayers,
    hidden: arch.hiddenSize,
    heads: arch.attentionHeads,
    qLoraRank: arch.qLoraRank,
    kvLoraRank: arch.kvLoraRank,
    qkNopeHeadDim: arch.qkNopeHeadDim,
    qkRopeHeadDim: arch.qkRopeHeadDim,
    vHeadDim: arch.vHeadDim,
    denseFfn: arch.denseFfnSize,
    experts: arch.routedExperts,
    activeExperts: arch.activeExperts,
    sharedExperts: arch.sharedExperts,
    expertFfn: arch.expertFfnSize,
    vocab: arch.vocabSize,
    contextLength: arch.contextLength,
  };
}

/**
 * Every tensor of the model in file order, with ggml shapes (ne[0] first) and element types: the
 * planner's tensor model for this architecture, matrices in `type`, norms, router and expert bias
 * F32 as convert_hf_to_gguf writes them.
 */
export function deepseek2TensorPlan(dims: Deepseek2Dims, type: GgufTensorType = "F16"): PlannedTensor[] {
  const tier: Tier = {
    name: type,
    publishedSizeBytes: 0,
    types: {
      embedding: type,
      norms: "F32",
      output: type,
      attention: type,
      denseFfn: type,
      router: "F32",
      routedExperts: type,
      sharedExperts: type,
    },
    shards: { count: 1, verified: false },
  };
  return tensorsFromArchitecture(deepseek2Architecture(dims), tier).map((tensor) => ({
    name: tensor.name,
    shape: tensor.shape,
    type: tensor.type as GgufTensorType,
    class: tensor.cls,
  }));
}

/**
 * The metadata llama.cpp's deepseek2 loader reads (src/models/deepseek2.cpp, llama-model.cpp),
 * Kimi K2-like where the value is free (sigmoid gating, normalized expert weights, scale 2.827,
 * rope base 50000, rms eps 1e-6), and a "test" tokenizer of `vocab` tokens `tok_0`… (no BOS/EOS:
 * send token ids as the prompt; the server detokenizes ids as hex).
 */
export function deepseek2Metadata(dims: Deepseek2Dims, options: Deepseek2WriteOptions = {}): Record<string, GgufValue> {
  checkDims(dims);
  const d = dims;
  const a = "deepseek2";
  const tokens = Array.from({ length: d.vocab }, (_, i) => `tok_${i}`);
  return {
    "general.architecture": kv.str(a),
    "general.name": kv.str(options.name ?? "kimi-kit-test-deepseek2"),
    // llama_ftype: 0 = ALL_F32, 1 = MOSTLY_F16
    "general.file_type": kv.u32((options.type ?? "F16") === "F32" ? 0 : 1),
    "general.alignment": kv.u32(32),
    [`${a}.vocab_size`]: kv.u32(d.vocab),
    [`${a}.context_length`]: kv.u32(d.contextLength),
    [`${a}.embedding_length`]: kv.u32(d.hidden),
    [`${a}.block_count`]: kv.u32(d.layers),
    [`${a}.leading_dense_block_count`]: kv.u32(d.denseLeadingLayers),
    [`${a}.feed_forward_length`]: kv.u32(d.denseFfn),
    [`${a}.expert_feed_forward_length`]: kv.u32(d.expertFfn),
    [`${a}.expert_count`]: kv.u32(d.experts),
    [`${a}.expert_used_count`]: kv.u32(d.activeExperts),
    [`${a}.expert_shared_count`]: kv.u32(d.sharedExperts),
    [`${a}.expert_weights_scale`]: kv.f32(2.827),
    [`${a}.expert_weights_norm`]: kv.bool(true),
    // llama_expert_gating_func_type: 1 = softmax, 2 = sigmoid (DeepSeek V3 / Kimi K2)
    [`${a}.expert_gating_func`]: kv.u32(2),
    [`${a}.attention.head_count`]: kv.u32(d.heads),
    // MLA stores one latent "head" per token
    [`${a}.attention.head_count_kv`]: kv.u32(1),
    [`${a}.attention.q_lora_rank`]: kv.u32(d.qLoraRank),
    [`${a}.attention.kv_lora_rank`]: kv.u32(d.kvLoraRank),
    // the cached (compressed) K/V per token: kv_lora_rank + rope for K, kv_lora_rank for V
    [`${a}.attention.key_length`]: kv.u32(d.kvLoraRank + d.qkRopeHeadDim),
    [`${a}.attention.value_length`]: kv.u32(d.kvLoraRank),
    // the per-head sizes after decompression
    [`${a}.attention.key_length_mla`]: kv.u32(d.qkNopeHeadDim + d.qkRopeHeadDim),
    [`${a}.attention.value_length_mla`]: kv.u32(d.vHeadDim),
    [`${a}.attention.layer_norm_rms_epsilon`]: kv.f32(1e-6),
    [`${a}.rope.dimension_count`]: kv.u32(d.qkRopeHeadDim),
    [`${a}.rope.freq_base`]: kv.f32(50000),
    "tokenizer.ggml.model": kv.str("test"),
    "tokenizer.ggml.tokens": kv.arr("str", tokens),
    "tokenizer.ggml.scores": kv.arr("f32", new Array<number>(d.vocab).fill(0)),
    // 1 = LLAMA_TOKEN_TYPE_NORMAL
    "tokenizer.ggml.token_type": kv.arr("i32", new Array<number>(d.vocab).fill(1)),
    "tokenizer.ggml.add_bos_token": kv.bool(false),
    "tokenizer.ggml.add_eos_token": kv.bool(false),
  };
}

/** Parameter count and file size (± header) of the model deepseek2TensorPlan describes. */
export function deepseek2Size(dims: Deepseek2Dims, type: GgufTensorType = "F16"): { params: number; bytes: number } {
  let params = 0;
  let bytes = 0;
  for (const t of deepseek2TensorPlan(dims, type)) {
    const n = elementCount(t.shape);
    params += n;
    bytes += align(n * BYTES_PER_ELEMENT[t.type], 32);
  }
  return { params, bytes };
}

export interface WrittenDeepseek2 extends WrittenGguf {
  dims: Deepseek2Dims;
  plan: PlannedTensor[];
}

/**
 * Writes a deepseek2 model with `dims` to `path`: separate (not fused) routed expert tensors,
 * shared experts, MLA split into attn_k_b/attn_v_b. Matrices ~N(0, std²) (seeded per tensor
 * name), RMS norm weights 1, expert bias 0.
 */
export function writeDeepseek2Gguf(
  path: string,
  dims: Deepseek2Dims,
  options: Deepseek2WriteOptions = {},
): WrittenDeepseek2 {
  const type = options.type ?? "F16";
  const seed = options.seed ?? 1;
  const std = options.std ?? 0.02;
  const plan = deepseek2TensorPlan(dims, type);
  const specs: GgufTensorSpec[] = plan.map((t) => ({
    name: t.name,
    shape: t.shape,
    type: t.type,
    data:
      t.class === "norms"
        ? { kind: "constant", value: 1 }
        : t.name.endsWith(".exp_probs_b.bias")
          ? { kind: "constant", value: 0 }
          : { kind: "normal", std, seed },
  }));
  const written = writeGguf(path, deepseek2Metadata(dims, { ...options, type }), specs);
  return { ...written, dims: { ...dims }, plan };
}
