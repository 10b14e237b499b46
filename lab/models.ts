/**
 * Kimi-shaped GGUF models for tests, made in seconds by llama.cpp's own tools:
 * `test-llama-archs -a '^deepseek2$'` writes a 4.4 MB F32 deepseek2 model (the architecture
 * Kimi K2 uses in llama.cpp: MLA attention, 2 layers with 1 leading dense layer, 2 routed + 1
 * shared expert, vocab 128, n_ctx_train 256, a "test" tokenizer — send token ids as prompts),
 * and `llama-gguf-split` cuts it into shards the way the real 1T-class downloads come.
 * Outputs are cached in the caller's folder: a second call with the same folder reuses them.
 * Never commit a .gguf (.gitignore has *.gguf).
 */
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, statSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { llamaTool } from "./llama-cpp";

const DEEPSEEK2_FILE = "deepseek2-moe.gguf";

function run(tool: string, args: string[]): string {
  try {
    return execFileSync(llamaTool(tool), args, {
      stdio: ["ignore", "pipe", "pipe"],
      timeout: 5 * 60_000,
      maxBuffer: 64 * 1024 * 1024,
    }).toString();
  } catch (error) {
    const e = error as { stderr?: Buffer; stdout?: Buffer };
    throw new Error(
      `${tool} ${args.join(" ")} failed:\n${e.stderr?.toString() ?? ""}${e.stdout?.toString() ?? String(error)}`,
      { cause: error },
    );
  }
}

/** Writes (or reuses) `dir/deepseek2-moe.gguf` and returns its path. */
export function generateDeepseek2Model(dir: string): string {
  return generateArchModel(dir, "deepseek2");
}

/**
 * Writes (or reuses) test-llama-archs' MoE model of a llama.cpp architecture (`dir/<arch>-moe.gguf`),
 * e.g. kimi-k3: one MLA layer with a dense FFN, one KDA (recurrent) layer with 2 routed + 1 shared
 * expert in a latent width, hidden 128, vocab 128.
 */
export function generateArchModel(dir: string, arch: string): string {
  const out = join(dir, arch === "deepseek2" ? DEEPSEEK2_FILE : `${arch}-moe.gguf`);
  if (existsSync(out) && statSync(out).size > 0) return out;
  mkdirSync(dir, { recursive: true });
  run("test-llama-archs", ["-a", `^${arch}$`, "-o", dir]);
  if (!existsSync(out)) throw new Error(`test-llama-archs wrote no ${out} (contents: ${readdirSync(dir).join(", ")})`);
  return out;
}

/** The shards `<outPrefix>-0000K-of-0000N.gguf` already present, sorted; empty when none or incomplete. */
export function existingShards(outPrefix: string): string[] {
  const dir = dirname(outPrefix);
  if (!existsSync(dir)) return [];
  const stem = basename(outPrefix);
  const pattern = new RegExp(`^${stem.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}-(\\d{5})-of-(\\d{5})\\.gguf$`);
  const shards = readdirSync(dir)
    .map((name) => ({ name, m: pattern.exec(name) }))
    .filter((x): x is { name: string; m: RegExpExecArray } => x.m !== null)
    .sort((a, b) => a.name.localeCompare(b.name));
  const first = shards[0];
  if (!first) return [];
  const total = Number(first.m[2]);
  if (shards.length !== total || shards.some((s, i) => Number(s.m[1]) !== i + 1 || Number(s.m[2]) !== total)) return [];
  return shards.map((s) => join(dir, s.name));
}

/**
 * Splits `input` with `llama-gguf-split --split --split-max-tensors maxTensors` into
 * `<outPrefix>-00001-of-0000N.gguf` … and returns the shard paths in order (the first is what
 * llama-server's -m takes). Reuses complete shards from an earlier call.
 */
export function splitGguf(input: string, outPrefix: string, maxTensors = 16): string[] {
  const existing = existingShards(outPrefix);
  if (existing.length > 0) return existing;
  mkdirSync(dirname(outPrefix), { recursive: true });
  run("llama-gguf-split", ["--split", "--split-max-tensors", String(maxTensors), input, outPrefix]);
  const shards = existingShards(outPrefix);
  if (shards.length === 0) throw new Error(`llama-gguf-split wrote no complete ${outPrefix}-*-of-*.gguf set`);
  return shards;
}

/** A deepseek2 model split into shards under `dir/<prefix>-…`, the generated single file kept aside in `dir/.src`. */
export function generateSplitDeepseek2Model(dir: string, prefix = "deepseek2-moe", maxTensors = 16): string[] {
  const single = generateDeepseek2Model(join(dir, ".src"));
  return splitGguf(single, join(dir, prefix), maxTensors);
}
