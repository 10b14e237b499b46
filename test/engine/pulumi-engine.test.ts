/**
 * The real Pulumi engine (CLI and Node.js language host built from Go modules by
 * tools/install-pulumi.sh, cached outside the clone) running this program with the file backend.
 * Resource plugins come only from that bin dir: automatic plugin acquisition is off.
 * What runs depends on which plugins could be built here (the README lists them):
 * - a refused stack fails its preview before creating anything, with the planner's reason;
 * - the cloud stack previews with its plan and projections (only component resources);
 * - a bare-metal stack previews when the command and docker plugins exist, and otherwise fails naming the missing one.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { cpSync, existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const root = join(__dirname, "..", "..");
let bin: string;
let work: string;
let project: string;
let env: NodeJS.ProcessEnv;

function pulumi(args: string[], input?: string): { status: number; output: string } {
  const run = spawnSync(join(bin, "pulumi"), [...args, "--non-interactive"], { cwd: project, env, input, encoding: "utf8", timeout: 300_000 });
  return { status: run.status ?? -1, output: `${run.stdout}\n${run.stderr}` };
}

beforeAll(() => {
  bin = execFileSync("bash", [join(root, "tools", "install-pulumi.sh"), "--project-dir", root], { encoding: "utf8", timeout: 1_200_000, stdio: ["ignore", "pipe", "inherit"] }).trim().split("\n").pop()!;
  work = mkdtempSync(join(tmpdir(), "kimi-kit-engine-"));
  project = join(work, "project");
  // A copy of the program, so `stack init` (which writes an encryption salt into stack files) never touches the repo.
  for (const entry of ["Pulumi.yaml", "package.json", "tsconfig.json", "index.ts", "planner", "components", "catalog", "stacks", "ansible-free-scripts", "locks"]) {
    cpSync(join(root, entry), join(project, entry), { recursive: true });
  }
  symlinkSync(join(root, "node_modules"), join(project, "node_modules"));
  mkdirSync(join(work, "state"));
  const node = dirname(join(root, "node_modules", "node", "bin", "node"));
  env = {
    ...process.env,
    PATH: `${bin}:${node}:${process.env.PATH}`,
    PULUMI_HOME: join(work, "home"),
    PULUMI_BACKEND_URL: `file://${join(work, "state")}`,
    PULUMI_CONFIG_PASSPHRASE: "kimi-kit-engine-test",
    PULUMI_SKIP_UPDATE_CHECK: "true",
    PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION: "true",
    PULUMI_NODEJS_TRANSPILE_ONLY: "true",
  };
}, 1_500_000);

afterAll(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

describe("pulumi CLI on this program (file backend, no plugin downloads)", () => {
  it("previews a refused stack as a failure with the planner's reason, before creating anything", () => {
    expect(pulumi(["stack", "init", "cpu-ddr5-q4"]).status).toBe(0);
    const preview = pulumi(["preview", "--stack", "cpu-ddr5-q4"]);
    expect(preview.status).not.toBe(0);
    expect(preview.output).toMatch(/UD-Q4_K_XL does not fit on .*short by/);
    expect(preview.output).not.toMatch(/^\s+at .*\.(ts|js):\d+/m);
    const state = pulumi(["stack", "export", "--stack", "cpu-ddr5-q4"]);
    expect(state.output).not.toContain("kimi-kit:index:LlmDeployment");
  });

  it("previews the cloud stack with the plan, projections and cost as outputs", () => {
    expect(pulumi(["stack", "init", "aws-r7i"]).status).toBe(0);
    expect(pulumi(["config", "set", "--secret", "--stack", "aws-r7i", "kimi-kit:apiKey", "sk-engine-preview"]).status).toBe(0);
    const preview = pulumi(["preview", "--stack", "aws-r7i", "--diff"]);
    expect(preview.status, preview.output).toBe(0);
    expect(preview.output).toContain("kimi-kit:index:LlmDeployment");
    expect(preview.output).toMatch(/projectedDecodeTokensPerSecond\s*:\s*[\d.]+/);
    expect(preview.output).toMatch(/monthlyCostUsd\s*:\s*2357\.89/);
    expect(preview.output).not.toContain("sk-engine-preview");
  });

  it("previews a bare-metal stack when the command and docker plugins exist, otherwise fails naming the missing one", () => {
    expect(pulumi(["stack", "init", "cpu-ddr5"]).status).toBe(0);
    expect(pulumi(["config", "set", "--secret", "--stack", "cpu-ddr5", "kimi-kit:apiKey", "sk-engine-preview"]).status).toBe(0);
    const preview = pulumi(["preview", "--stack", "cpu-ddr5"]);
    if (existsSync(join(bin, "pulumi-resource-command")) && existsSync(join(bin, "pulumi-resource-docker"))) {
      expect(preview.status, preview.output).toBe(0);
      expect(preview.output).toContain("command:remote:Command");
    } else {
      expect(preview.status).not.toBe(0);
      expect(preview.output).toMatch(/no resource plugin 'pulumi-resource-(command|docker)' found/);
      // The program itself ran: the planner's components were registered before the engine needed a plugin.
      expect(preview.output).toContain("kimi-kit:index:LlmDeployment");
    }
  });
});
