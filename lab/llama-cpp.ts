/**
 * Where the tests find llama.cpp's binaries (llama-server, llama-gguf-split, llama-quantize,
 * test-llama-archs and the .so files beside them).
 */
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, join, resolve } from "node:path";

const BUILD_SCRIPT = resolve(__dirname, "build-llama-cpp.sh");
const TOOLS = ["llama-server", "llama-gguf-split", "llama-quantize", "test-llama-archs"];

let cachedBinDir: string | undefined;

/**
 * The folder holding the llama.cpp binaries: `LLAMA_CPP_BIN_DIR` when set, else the output of
 * lab/build-llama-cpp.sh (which builds once into a cache — ~12 minutes the first time,
 * and waits on the running build's lock when another worker started it).
 */
export function llamaBinDir(): string {
  if (cachedBinDir) return cachedBinDir;
  const fromEnv = process.env.LLAMA_CPP_BIN_DIR;
  if (fromEnv) {
    const missing = TOOLS.filter((tool) => !existsSync(join(fromEnv, tool)));
    if (missing.length > 0) throw new Error(`LLAMA_CPP_BIN_DIR=${fromEnv} lacks ${missing.join(", ")}`);
    cachedBinDir = fromEnv;
    return fromEnv;
  }
  let out: string;
  try {
    out = execFileSync("bash", [BUILD_SCRIPT], {
      stdio: ["ignore", "pipe", "pipe"],
      timeout: 45 * 60_000,
      maxBuffer: 16 * 1024 * 1024,
    }).toString();
  } catch (error) {
    const stderr = (error as { stderr?: Buffer }).stderr?.toString() ?? "";
    throw new Error(`${BUILD_SCRIPT} failed: ${stderr || String(error)}`, { cause: error });
  }
  const dir = out.trim().split("\n").pop() ?? "";
  if (!dir || !existsSync(join(dir, "llama-server"))) {
    throw new Error(`${BUILD_SCRIPT} printed '${dir}', which holds no llama-server`);
  }
  cachedBinDir = dir;
  return dir;
}

/** Path of a tool in llamaBinDir(). */
export function llamaTool(tool: string): string {
  return join(llamaBinDir(), tool);
}

/** True when the dynamic loader finds every library `binary` needs (its .so files are "around it"). */
export function librariesResolve(binary: string): boolean {
  try {
    const out = execFileSync("ldd", [binary], { stdio: ["ignore", "pipe", "pipe"] }).toString();
    return !/not found/.test(out);
  } catch {
    return false;
  }
}

function onPath(program: string): string | undefined {
  for (const dir of (process.env.PATH ?? "").split(":")) {
    if (!dir) continue;
    const candidate = join(dir, program);
    if (existsSync(candidate)) return candidate;
  }
  return undefined;
}

/**
 * The llama-server to run: `LLAMA_SERVER` env, else the one on PATH — each only if its shared
 * libraries resolve — else the built one.
 */
export function llamaServerPath(): string {
  for (const candidate of [process.env.LLAMA_SERVER, onPath("llama-server")]) {
    if (candidate && existsSync(candidate) && librariesResolve(candidate)) return candidate;
  }
  return llamaTool("llama-server");
}

/** The folder of llamaServerPath(), where its own .so files lie. */
export function llamaServerDir(): string {
  return dirname(llamaServerPath());
}
