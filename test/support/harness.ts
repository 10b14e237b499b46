/**
 * Where the command plugin cannot run, this harness carries out — for real, over the loopback
 * sshd — exactly what the components asked @pulumi/command for, as recorded by the Pulumi mocks:
 * each command:remote:CopyToRemote follows the plugin's own copy rules (copy-to-remote.ts, read
 * from its Go source), each command:remote:Command's `create` (or `delete`) runs through ssh with
 * its `stdin`, in registration order (which the component tests show follows the dependsOn chain).
 * It never produces a result itself.
 */
import { execFileSync, spawn } from "node:child_process";
import { readFileSync, statSync } from "node:fs";
import * as pulumi from "@pulumi/pulumi";
import type { Registered } from "../components/mocks";
import { shellQuote } from "../../planner/shell";
import { copyToRemoteActions, pathsToStat, type CopySource, type RemoteEntry } from "./copy-to-remote";
import type { LoopbackSshd } from "./sshd";

export interface StepResult {
  name: string;
  type: string;
  action: "copy" | "create" | "delete";
  status: number;
  stdout: string;
  stderr: string;
  seconds: number;
}

const SECRET_SIG = "4dabf18193072939515e22adb298388d";

/** Inputs arrive serialized; a secret is {<sig>: …, value}. The provider would see the plain value. */
function plain(value: unknown): unknown {
  if (value && typeof value === "object" && SECRET_SIG in value) return (value as unknown as { value: unknown }).value;
  return value;
}

/** The plugin accepts path-based assets and archives and text assets (its Check); nothing else. */
async function assetSource(source: unknown): Promise<CopySource> {
  if (source instanceof pulumi.asset.FileArchive || source instanceof pulumi.asset.FileAsset) {
    const localPath = await source.path;
    return { kind: statSync(localPath).isDirectory() ? "folder" : "file", localPath };
  }
  if (source instanceof pulumi.asset.StringAsset) return { kind: "text", text: await source.text };
  throw new Error(
    `harness: CopyToRemote refuses source ${JSON.stringify(source)}: asset must be a path-based file asset or a text asset`,
  );
}

/** Runs a command and collects its output without blocking the event loop: the loopback HTTP server lives in this process. */
function run(
  program: string,
  args: string[],
  stdin?: string | Buffer,
): Promise<{ status: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(program, args, { stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    child.once("error", reject);
    child.once("close", (code) => resolve({ status: code ?? -1, stdout, stderr }));
    child.stdin.end(stdin ?? "");
  });
}

function ssh(sshd: LoopbackSshd, command: string, stdin?: string | Buffer) {
  return run("ssh", [...sshd.sshArgs(), command], stdin);
}

/** Carries out one CopyToRemote the way the plugin does; a refusal comes back as exit 1 with the plugin's message. */
export async function copyToRemote(
  sshd: LoopbackSshd,
  source: CopySource,
  remotePath: string,
): Promise<{ status: number; stdout: string; stderr: string }> {
  const paths = pathsToStat(source, remotePath);
  const probe = await ssh(
    sshd,
    paths
      .map(
        (path) =>
          `if [ -d ${shellQuote([path])} ]; then echo folder; elif [ -e ${shellQuote([path])} ]; then echo file; else echo missing; fi`,
      )
      .join("; "),
  );
  if (probe.status !== 0) return probe;
  const kinds = new Map(paths.map((path, index) => [path, probe.stdout.split("\n")[index] as RemoteEntry]));
  let actions;
  try {
    actions = copyToRemoteActions(source, remotePath, (path) => kinds.get(path) ?? "missing");
  } catch (error) {
    return { status: 1, stdout: "", stderr: (error as Error).message };
  }
  let last = { status: 0, stdout: "", stderr: "" };
  for (const action of actions) {
    if (action.kind === "mkdir") last = await ssh(sshd, shellQuote(["mkdir", "--", action.remotePath]));
    else if (action.kind === "copy-folder-entries") {
      const archive = execFileSync("tar", ["-C", action.localFolder, "-cf", "-", "."], { maxBuffer: 1 << 30 });
      last = await ssh(
        sshd,
        `[ -d ${shellQuote([action.remoteFolder])} ] && ${shellQuote(["tar", "-C", action.remoteFolder, "--no-overwrite-dir", "-xf", "-"])}`,
        archive,
      );
    } else {
      const content = "text" in action.from ? action.from.text : readFileSync(action.from.localPath);
      last = await ssh(sshd, `cat > ${shellQuote([action.remotePath])}`, content);
    }
    if (last.status !== 0) return last;
  }
  return last;
}

export async function applyRecorded(
  steps: readonly Registered[],
  sshd: LoopbackSshd,
  log: (line: string) => void = () => {},
): Promise<StepResult[]> {
  const results: StepResult[] = [];
  for (const step of steps) {
    const started = Date.now();
    if (step.type === "command:remote:CopyToRemote") {
      const remotePath = String(plain(step.inputs.remotePath));
      const outcome = await copyToRemote(sshd, await assetSource(plain(step.inputs.source)), remotePath);
      results.push({
        name: step.name,
        type: step.type,
        action: "copy",
        ...outcome,
        seconds: (Date.now() - started) / 1000,
      });
    } else if (step.type === "command:remote:Command") {
      const stdin = plain(step.inputs.stdin);
      const outcome = await ssh(
        sshd,
        String(plain(step.inputs.create)),
        stdin === undefined ? undefined : String(stdin),
      );
      results.push({
        name: step.name,
        type: step.type,
        action: "create",
        ...outcome,
        seconds: (Date.now() - started) / 1000,
      });
    } else continue;
    const last = results.at(-1)!;
    log(`${last.action} ${last.name}: exit ${last.status} in ${last.seconds.toFixed(1)} s`);
    if (last.status !== 0)
      throw new Error(`${last.name} failed (exit ${last.status}):\n${last.stderr}\n${last.stdout}`);
  }
  return results;
}

export async function destroyRecorded(steps: readonly Registered[], sshd: LoopbackSshd): Promise<StepResult[]> {
  const results: StepResult[] = [];
  for (const step of [...steps].reverse()) {
    if (step.type !== "command:remote:Command" || step.inputs.delete === undefined) continue;
    const started = Date.now();
    const outcome = await ssh(sshd, String(plain(step.inputs.delete)));
    results.push({
      name: step.name,
      type: step.type,
      action: "delete",
      ...outcome,
      seconds: (Date.now() - started) / 1000,
    });
  }
  return results;
}
