/**
 * templates/kimi-kit under the real Pulumi CLI (tools/install-pulumi.sh, file backend, no plugin
 * downloads): `pulumi new` with --yes and --config makes a team project whose stack holds the
 * template's answers, that stack plans with the kit's planner (read as `npm run plan` and as the
 * program reads it), and `pulumi preview` in the new project runs the kit's program from the
 * checkout beside it. `npm` is a stand-in that records its call: `pulumi new` installs the program's
 * dependencies, which would need the network, and the stand-in's folder is not the kit's.
 * `pulumi new` itself is the CLI's (the Automation API has no template command); the config and the
 * preview of the new project go through the Automation API and read the engine's typed events.
 */
import { spawnSync } from "node:child_process";
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { LocalWorkspace, PulumiCommand } from "@pulumi/pulumi/automation";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse as parseYaml } from "yaml";
import { parseStackConfig } from "../../planner/config";
import { buildPlan } from "../../planner/plan";
import { loadStackConfig, readProgramConfig } from "../../planner/stack-file";
import { installedPulumiBin, preview } from "../support/pulumi-cli";

const ROOT = join(__dirname, "..", "..");
let work: string;
let env: NodeJS.ProcessEnv;
let pulumiBin: string;

beforeAll(() => {
  const bin = (pulumiBin = installedPulumiBin());
  work = mkdtempSync(join(tmpdir(), "kimi-kit-pulumi-new-"));
  for (const dir of ["state", "home", "fake-bin", "kimi-kit"]) mkdirSync(join(work, dir));
  // The language host checks that an install leaves a node_modules folder, as npm's does.
  writeFileSync(
    join(work, "fake-bin", "npm"),
    `#!/bin/sh\necho "npm $* in $(pwd)" >> "${join(work, "npm.log")}"\nmkdir -p node_modules\n`,
  );
  chmodSync(join(work, "fake-bin", "npm"), 0o755);
  // Until the preview, ../kimi-kit is a stand-in without dependencies: nothing for `pulumi new` to fetch.
  writeFileSync(join(work, "kimi-kit", "package.json"), JSON.stringify({ name: "kimi-kit-stand-in", private: true }));
  env = {
    ...process.env,
    PATH: `${join(work, "fake-bin")}:${bin}:${dirname(join(ROOT, "node_modules", "node", "bin", "node"))}:${process.env.PATH}`,
    PULUMI_HOME: join(work, "home"),
    PULUMI_BACKEND_URL: `file://${join(work, "state")}`,
    PULUMI_CONFIG_PASSPHRASE: "kimi-kit-template-test",
    PULUMI_SKIP_UPDATE_CHECK: "true",
    PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION: "true",
    PULUMI_NODEJS_TRANSPILE_ONLY: "true",
  };
}, 1_500_000);

afterAll(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

const team = () => join(work, "team-llm");
function pulumi(args: string[], cwd = team()): { status: number | null; output: string } {
  const result = spawnSync("pulumi", [...args, "--non-interactive"], { cwd, env, encoding: "utf8", timeout: 600_000 });
  return { status: result.status, output: `${result.stdout}${result.stderr}` };
}

describe("pulumi new ./templates/kimi-kit", () => {
  it("makes a project of the team's stacks whose program is the kit beside it; the answers become the stack's config", () => {
    const made = pulumi(
      [
        "new",
        join(ROOT, "templates", "kimi-kit"),
        "--yes",
        "--dir",
        team(),
        "--name",
        "team-llm",
        "--stack",
        "dev",
        "--config",
        'kimi-kit:serving={"contextLength": 65536, "parallelSlots": 2}',
      ],
      work,
    );
    expect(made.status, made.output).toBe(0);
    expect(made.output).toContain("KIMI_KIT_STACKS_DIR=$PWD npm --prefix ../kimi-kit run plan");

    const project = parseYaml(readFileSync(join(team(), "Pulumi.yaml"), "utf8")) as Record<string, unknown>;
    expect(project).toMatchObject({
      name: "team-llm",
      runtime: { name: "nodejs", options: { typescript: true } },
      main: "../kimi-kit",
    });
    expect(project.template).toBeUndefined();
    expect(readFileSync(join(team(), "README.md"), "utf8")).toMatch(/^# team-llm\n/);
    // pulumi new installed the program's dependencies where the program is: the kit beside the project.
    expect(readFileSync(join(work, "npm.log"), "utf8")).toContain(
      `npm install --loglevel=error in ${join(work, "kimi-kit")}`,
    );

    const stack = parseYaml(readFileSync(join(team(), "Pulumi.dev.yaml"), "utf8")) as {
      config: Record<string, unknown>;
    };
    expect(Object.keys(stack.config).sort()).toEqual([
      "kimi-kit:costs",
      "kimi-kit:host",
      "kimi-kit:model",
      "kimi-kit:serving",
    ]);
    // A blank secret answer is not saved: `up` refuses a stack without one, naming the command that sets it.
    expect(stack.config["kimi-kit:apiKey"]).toBeUndefined();
    expect(JSON.parse(stack.config["kimi-kit:serving"] as string)).toEqual({ contextLength: 65536, parallelSlots: 2 });
    expect(JSON.parse(stack.config["kimi-kit:model"] as string)).toEqual({
      repo: "unsloth/Kimi-K2.6-GGUF",
      tier: "UD-Q2_K_XL",
    });
  });

  it("the stack plans unchanged, read as `npm run plan` reads a file and as Pulumi hands it to the program", () => {
    const fromFile = loadStackConfig("dev", team());
    const stack = parseYaml(readFileSync(join(team(), "Pulumi.dev.yaml"), "utf8")) as {
      config: Record<string, string>;
    };
    const fromProgram = parseStackConfig("dev", readProgramConfig("dev", stack.config, () => false).raw);
    expect(fromProgram).toEqual(fromFile);
    const plan = buildPlan("dev", fromFile);
    expect(plan.fits, plan.refusal).toBe(true);
    expect(plan.config.serving).toMatchObject({ contextLength: 65536, parallelSlots: 2 });
    const cli = spawnSync("npm", ["--prefix", ROOT, "run", "-s", "plan", "--", "--stack", "dev"], {
      cwd: team(),
      encoding: "utf8",
      env: { ...process.env, KIMI_KIT_STACKS_DIR: team() },
    });
    expect(cli.status, cli.stderr).toBe(0);
    expect(cli.stdout).toContain("Verdict: FITS (cpu-only)");
  });

  it("pulumi preview in the new project runs the kit's program from ../kimi-kit and projects what the plan does", async () => {
    rmSync(join(work, "kimi-kit"), { recursive: true });
    symlinkSync(ROOT, join(work, "kimi-kit"));
    const pulumiCommand = await PulumiCommand.get({ root: dirname(pulumiBin), skipVersionCheck: true });
    const envVars = Object.fromEntries(
      Object.entries(env).filter((entry): entry is [string, string] => entry[1] !== undefined),
    );
    const stack = await LocalWorkspace.selectStack({ stackName: "dev", workDir: team() }, { pulumiCommand, envVars });
    await stack.setAllConfig({
      "kimi-kit:host": {
        value:
          '{"kind": "bare-metal", "cpu": {"platform": "epyc-9124"}, "memory": {"total": "384GiB"}, "ssh": {"host": "203.0.113.10"}}',
      },
      // No plugins here: the kit's own ssh executor and the docker CLI (as test/engine/pulumi-engine.test.ts).
      "kimi-kit:deployment": { value: '{"remoteExecutor": "kimi-dynamic", "containerEngine": "docker-cli"}' },
      "kimi-kit:apiKey": { value: "sk-template-preview-0123456789abcdefghij", secret: true },
    });
    const run = await preview(stack);
    expect(run.ok, run.error).toBe(true);
    expect(run.steps.map((step) => step.type)).toContain("kimi-kit:index:LlmDeployment");
    expect(run.eventsJson).not.toContain("sk-template-preview");
    expect(run.outputs.projectedDecodeTokensPerSecond).toBeCloseTo(
      buildPlan("dev", loadStackConfig("dev", team())).projection.decodeTokensPerSecond,
      6,
    );
  }, 600_000);
});
