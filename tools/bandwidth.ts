/**
 * This machine's memory read bandwidth, measured (tools/membw.c: every core streaming a
 * buffer far larger than the caches). The local stack and the bench use it instead of a datasheet.
 */
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, statSync } from "node:fs";
import { join } from "node:path";

const SOURCE = join(__dirname, "membw.c");

export function measureReadBandwidthGBps(
  cores: number,
  cacheDir = join(process.env.KIMI_KIT_CACHE ?? join(process.env.HOME ?? "/tmp", ".cache", "kimi-kit"), "membw"),
): number {
  mkdirSync(cacheDir, { recursive: true });
  const binary = join(cacheDir, "membw");
  if (!existsSync(binary) || statSync(binary).mtimeMs < statSync(SOURCE).mtimeMs) {
    execFileSync("gcc", ["-O3", "-march=native", "-fopenmp", SOURCE, "-o", binary]);
  }
  return Number(
    execFileSync(binary, ["1024", "5"], { env: { ...process.env, OMP_NUM_THREADS: String(cores) } })
      .toString()
      .trim(),
  );
}
