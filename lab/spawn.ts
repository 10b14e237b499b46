/** Runs a command to completion for the script tests: its exit status and output, never a throw on a non-zero exit. */
import { spawnSync } from "node:child_process";

export interface Result {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** argv[0] with the rest as arguments, `input` on stdin; throws only when it cannot start or runs past timeoutMs. */
export function run(argv: string[], input?: string, timeoutMs = 60_000): Result {
  const r = spawnSync(argv[0]!, argv.slice(1), { input, encoding: "utf8", timeout: timeoutMs });
  if (r.error) throw r.error;
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}
