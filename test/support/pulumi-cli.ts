/**
 * The real Pulumi CLI for the engine tests: built (or reused) by tools/install-pulumi.sh, run on a
 * copy of this program with the file backend, a test passphrase and automatic plugin acquisition
 * off, so nothing is downloaded. The copy keeps `stack init` from writing into the repo's stack files.
 */
import { execFileSync, spawn } from "node:child_process";
import { cpSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import {
  LocalWorkspace,
  PulumiCommand,
  type EngineEvent,
  type OpMap,
  type PolicyEvent,
  type PreviewOptions,
  type Stack,
  type StepEventMetadata,
  type UpOptions,
} from "@pulumi/pulumi/automation";
import { stringify } from "yaml";

const ROOT = join(__dirname, "..", "..");

export interface PulumiProject {
  bin: string;
  dir: string;
  /** The engine's environment: the file backend, passphrase, no plugin downloads, Node 22 and the bin dir on PATH. */
  env: Record<string, string>;
  /** Async on purpose: the loopback Hub the engine downloads from lives in this same process. */
  run(args: string[], input?: string): Promise<{ status: number; output: string }>;
  writeStack(stack: string, values: Record<string, unknown>): void;
  /** The Automation API's stack on this project (created, or selected when it exists), with this engine. */
  stack(name: string): Promise<Stack>;
  remove(): void;
}

/** One engine operation (preview, up, destroy) through the Automation API, read from its typed events. */
export interface EngineRun {
  ok: boolean;
  /** The engine's steps, one per resource and operation: op (same, create, update, replace…), type token, URN. */
  steps: StepEventMetadata[];
  /** What the engine and the program reported as warnings and errors. */
  diagnostics: string[];
  /** The stack's outputs as the operation knows them (a preview: the projected ones). */
  outputs: Record<string, unknown>;
  /** Policy violations the packs reported (enforcement "warning" is an advisory policy). */
  policies: PolicyEvent[];
  /** The engine's summary: how many resources each operation touches, and the packs it ran (name → version). */
  resourceChanges: OpMap;
  policyPacks: Record<string, string>;
  /** Everything the engine sent, as JSON (to check that no secret appears anywhere). */
  eventsJson: string;
  /** The CLI's failure (the Automation API's CommandError), when the operation failed. */
  error?: string;
}

/** Runs one operation and collects what the engine reports, whether or not it succeeds. */
async function collect(operation: (onEvent: (event: EngineEvent) => void) => Promise<unknown>): Promise<EngineRun> {
  const events: EngineEvent[] = [];
  let error: string | undefined;
  try {
    await operation((event) => events.push(event));
  } catch (failure) {
    error = (failure as Error).message;
  }
  const steps = events.flatMap((event) => (event.resourcePreEvent ? [event.resourcePreEvent.metadata] : []));
  const diagnostics = events.flatMap((event) =>
    event.diagnosticEvent && ["warning", "error"].includes(event.diagnosticEvent.severity)
      ? [event.diagnosticEvent.message]
      : [],
  );
  const stackOutputs = events
    .map((event) => event.resOutputsEvent?.metadata)
    .filter((metadata) => metadata?.type === "pulumi:pulumi:Stack")
    .map((metadata) => metadata?.new?.outputs ?? {});
  const outputs = Object.assign({}, ...stackOutputs) as Record<string, unknown>;
  const policies = events.flatMap((event) => (event.policyEvent ? [event.policyEvent] : []));
  const summary = events.find((event) => event.summaryEvent)?.summaryEvent;
  // The engine writes the packs under "PolicyPacks" (its JSON tag was forgotten, says the SDK's own comment).
  const packs = summary as unknown as { policyPacks?: Record<string, string>; PolicyPacks?: Record<string, string> };
  return {
    ok: error === undefined,
    steps,
    diagnostics,
    outputs,
    policies,
    resourceChanges: summary?.resourceChanges ?? {},
    policyPacks: packs?.policyPacks ?? packs?.PolicyPacks ?? {},
    eventsJson: JSON.stringify(events),
    ...(error ? { error } : {}),
  };
}

/** Previews a stack and collects what the engine reports, whether or not the preview succeeds. */
export function preview(
  stack: Stack,
  options: Pick<PreviewOptions, "policyPacks" | "policyPackConfigs"> = {},
): Promise<EngineRun> {
  return collect((onEvent) => stack.preview({ ...options, onEvent }));
}

/** `pulumi up` (with --expect-no-changes when asked), collected the same way. */
export function up(stack: Stack, options: Pick<UpOptions, "expectNoChanges"> = {}): Promise<EngineRun> {
  return collect((onEvent) => stack.up({ ...options, onEvent }));
}

/** `pulumi destroy`, collected the same way. */
export function destroy(stack: Stack): Promise<EngineRun> {
  return collect((onEvent) => stack.destroy({ onEvent }));
}

/** The resource names (the URN's last part) of the steps with this op. */
export function namesOf(run: EngineRun, op: StepEventMetadata["op"]): string[] {
  return run.steps
    .filter((step) => step.op === op)
    .map((step) => step.urn.split("::").pop()!)
    .sort();
}

/** The Pulumi CLI's bin folder, built or reused by tools/install-pulumi.sh. */
export function installedPulumiBin(): string {
  return execFileSync("bash", [join(ROOT, "tools", "install-pulumi.sh"), "--project-dir", ROOT], {
    encoding: "utf8",
    timeout: 1_200_000,
    stdio: ["ignore", "pipe", "inherit"],
  })
    .trim()
    .split("\n")
    .pop()!;
}

export function pulumiProject(): PulumiProject {
  const bin = installedPulumiBin();
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
  const env: Record<string, string> = {
    ...Object.fromEntries(
      Object.entries(process.env).filter((entry): entry is [string, string] => entry[1] !== undefined),
    ),
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
    env,
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
    async stack(name) {
      const pulumiCommand = await PulumiCommand.get({ root: dirname(bin), skipVersionCheck: true });
      return LocalWorkspace.createOrSelectStack({ stackName: name, workDir: dir }, { pulumiCommand, envVars: env });
    },
    remove() {
      rmSync(work, { recursive: true, force: true });
    },
  };
}
