/**
 * The real Pulumi CLI for the engine tests: built (or reused) by tools/install-pulumi.sh, run on a
 * copy of this program with the file backend, a test passphrase and automatic plugin acquisition
 * off, so nothing is downloaded. The copy keeps `stack init` from writing into the repo's stack files.
 */
import { execFileSync, spawn } from "node:child_process";
import { cpSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { stringify } from "yaml";

const ROOT = join(__dirname, "..", "..");

export interface PulumiProject {
  bin: string;
  dir: string;
  /** Async on purpose: the loopback Hub the engine downloads from lives in this same process. */
  run(args: string[], input?: string): Promise<{ status: number; output: string }>;
  writeStack(stack: string, values: Record<string, unknown>): void;
  remove(): void;
}

export function pulumiProject(): PulumiProject {
  const bin = execFileSync("bash", [join(ROOT, "tools", "install-pulumi.sh"), "--project-dir", ROOT], {
    encoding: "utf8",
    timeout: 1_200_000,
    stdio: ["ignore", "pipe", "inherit"],
  })
    .trim()
    .split("\n")
    .pop()!;
  const work = mkdtempSync(join(tmpdir(), "kimi-kit-engine-"));
  const dir = join(work, "project");
  for (const entry of [
    "Pulumi.yaml",
    "package.json",
    "tsconfig.json",
    "index.ts",
    "planner",
    "components",
    "catalog",
    "stacks",
    "ansible-free-scripts",
    "locks",
    "policy",
    "tools",
  ]) {
    cpSync(join(ROOT, entry), join(dir, entry), { recursive: true });
  }
  symlinkSync(join(ROOT, "node_modules"), join(dir, "node_modules"));
  mkdirSync(join(work, "state"));
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    PATH: `${bin}:${dirname(join(ROOT, "node_modules", "node", "bin", "node"))}:${process.env.PATH}`,
    PULUMI_HOME: join(work, "home"),
    PULUMI_BACKEND_URL: `file://${join(work, "state")}`,
    PULUMI_CONFIG_PASSPHRASE: "kimi-kit-engine-test",
    PULUMI_SKIP_UPDATE_CHECK: "true",
    PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION: "true",
    PULUMI_NODEJS_TRANSPILE_ONLY: "true",
  };
  return {
    bin,
    dir,
    run(args, input) {
      return new Promise((resolve, reject) => {
        const child = spawn(join(bin, "pulumi"), [...args, "--non-interactive"], {
          cwd: dir,
          env,
          stdio: ["pipe", "pipe", "pipe"],
        });
        let output = "";
        child.stdout.on("data", (chunk: Buffer) => (output += chunk.toString()));
        child.stderr.on("data", (chunk: Buffer) => (output += chunk.toString()));
        const timer = setTimeout(() => child.kill("SIGKILL"), 900_000);
        child.once("error", reject);
        child.once("close", (code) => {
          clearTimeout(timer);
          resolve({ status: code ?? -1, output });
        });
        child.stdin.end(input ?? "");
      });
    },
    writeStack(stack, values) {
      const config: Record<string, unknown> = {};
      for (const [key, value] of Object.entries(values)) config[`kimi-kit:${key}`] = value;
      writeFileSync(join(dir, "stacks", `Pulumi.${stack}.yaml`), stringify({ config }));
    },
    remove() {
      rmSync(work, { recursive: true, force: true });
    },
  };
}
