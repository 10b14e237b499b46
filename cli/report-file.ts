/**
 * Writes a rendered report (`--html`, `--svg`) to the path the user gave. planner/ stays free of I/O,
 * so the file lives here. A path that cannot be written is the user's to fix, so it is a ConfigError
 * with one line naming the flag, the path and the reason, not a stack trace.
 */
import { writeFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { ConfigError } from "../planner/errors";

/** Node's error codes for a failed write, in words a user can act on. */
function why(code: string | undefined, path: string, fallback: string): string {
  switch (code) {
    case "ENOENT":
      return `its folder ${dirname(resolve(path))} does not exist`;
    case "ENOTDIR":
      return "a part of the path is a file, not a folder";
    case "EISDIR":
      return "it is a folder; name a file inside it";
    case "EACCES":
    case "EPERM":
      return "permission denied";
    case "EROFS":
      return "the file system is read-only";
    case "ENOSPC":
      return "no space left on the device";
    default:
      return fallback;
  }
}

/**
 * Writes `content` to `path` (created or replaced). Throws a ConfigError whose one problem reads
 * "`flag` PATH: cannot write the report: REASON" when the path is not writable.
 */
export function writeReport(path: string, content: string, flag = "--html"): void {
  if (path.trim() === "")
    throw new ConfigError(flag, [`${flag}: found nothing; allowed: a file path to write the report to`]);
  try {
    writeFileSync(path, content, "utf8");
  } catch (error) {
    const failure = error as NodeJS.ErrnoException;
    const fallback = (failure.message ?? String(error)).split("\n")[0]!;
    throw new ConfigError(flag, [`${flag} ${path}: cannot write the report: ${why(failure.code, path, fallback)}`]);
  }
}
