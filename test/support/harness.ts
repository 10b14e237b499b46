/**
 * Until the real Pulumi engine runs in the tests, this harness carries out — for real, over the
 * loopback sshd — exactly what the components asked their providers for, as recorded by the
 * Pulumi mocks: each command:remote:CopyToRemote is copied with scp, each command:remote:Command's
 * `create` (or `delete`) runs through ssh with its `stdin`, in registration order (which the
 * component tests show follows the dependsOn chain). It never produces a result itself.
 */
import { spawn } from "node:child_process";
import * as pulumi from "@pulumi/pulumi";
import type { Registered } from "../components/mocks";
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

async function assetSource(source: unknown): Promise<{ path?: string; text?: string }> {
  if (source instanceof pulumi.asset.FileArchive || source instanceof pulumi.asset.FileAsset) return { path: await source.path };
  if (source instanceof pulumi.asset.StringAsset) return { text: await source.text };
  throw new Error(`harness: unsupported CopyToRemote source ${JSON.stringify(source)}`);
}

/** Runs a command and collects its output without blocking the event loop: the loopback HTTP server lives in this process. */
function run(program: string, args: string[], stdin?: string): Promise<{ status: number; stdout: string; stderr: string }> {
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

function ssh(sshd: LoopbackSshd, command: string, stdin?: string) {
  return run("ssh", [...sshd.sshArgs(), command], stdin);
}

export async function applyRecorded(steps: readonly Registered[], sshd: LoopbackSshd, log: (line: string) => void = () => {}): Promise<StepResult[]> {
  const results: StepResult[] = [];
  for (const step of steps) {
    const started = Date.now();
    if (step.type === "command:remote:CopyToRemote") {
      const remotePath = String(plain(step.inputs.remotePath));
      const source = await assetSource(plain(step.inputs.source));
      let outcome;
      if (source.text !== undefined) {
        outcome = await ssh(sshd, `mkdir -p "$(dirname '${remotePath}')" && cat > '${remotePath}'`, source.text);
      } else {
        await ssh(sshd, `mkdir -p "$(dirname '${remotePath}')"`);
        outcome = await run("scp", ["-q", "-r", "-F", sshd.sshConfigPath, source.path!, `${sshd.alias}:${remotePath}`]);
      }
      results.push({ name: step.name, type: step.type, action: "copy", ...outcome, seconds: (Date.now() - started) / 1000 });
    } else if (step.type === "command:remote:Command") {
      const stdin = plain(step.inputs.stdin);
      const outcome = await ssh(sshd, String(plain(step.inputs.create)), stdin === undefined ? undefined : String(stdin));
      results.push({ name: step.name, type: step.type, action: "create", ...outcome, seconds: (Date.now() - started) / 1000 });
    } else continue;
    const last = results.at(-1)!;
    log(`${last.action} ${last.name}: exit ${last.status} in ${last.seconds.toFixed(1)} s`);
    if (last.status !== 0) throw new Error(`${last.name} failed (exit ${last.status}):\n${last.stderr}\n${last.stdout}`);
  }
  return results;
}

export async function destroyRecorded(steps: readonly Registered[], sshd: LoopbackSshd): Promise<StepResult[]> {
  const results: StepResult[] = [];
  for (const step of [...steps].reverse()) {
    if (step.type !== "command:remote:Command" || step.inputs.delete === undefined) continue;
    const started = Date.now();
    const outcome = await ssh(sshd, String(plain(step.inputs.delete)));
    results.push({ name: step.name, type: step.type, action: "delete", ...outcome, seconds: (Date.now() - started) / 1000 });
  }
  return results;
}
