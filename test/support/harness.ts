/**
 * Where the command plugin cannot run, this harness carries out — for real, over the loopback
 * sshd — exactly what the components asked @pulumi/command for, as recorded by the Pulumi mocks,
 * through the kit's own ssh provider code called in-process (components/exec/remote-exec.ts
 * runOverSsh): each command:remote:Command's `create` (or `delete`) with its `stdin`, each
 * command:remote:CopyToRemote as the kit's provider copies (copyStepSshInputs: one copy semantics,
 * checked against the plugin's own rules in test/scripts/copy-to-remote.test.ts), in registration
 * order (which the component tests show follows the dependsOn chain), with the connection each step
 * recorded. It never produces a result itself.
 */
import { statSync } from "node:fs";
import * as pulumi from "@pulumi/pulumi";
import { registered, settle, type Registered } from "../components/mocks";
import { HF_TOKEN, type LocalHost } from "./local-stack";
import { unwrapSecrets as plain } from "./rpc-secrets";
import { copyStepSshInputs, runOverSsh, type Connection, type SshOutcome } from "../../components/exec/remote-exec";

export interface StepResult {
  name: string;
  type: string;
  action: "copy" | "create" | "delete";
  status: number;
  stdout: string;
  stderr: string;
  seconds: number;
}

/** The plugin accepts path-based archives and text assets for what the kit copies (a folder, a text); nothing else. */
async function copySource(source: unknown): Promise<{ folder: string } | { text: string }> {
  if (source instanceof pulumi.asset.FileArchive) {
    const folder = await source.path;
    if (statSync(folder).isDirectory()) return { folder };
  }
  if (source instanceof pulumi.asset.StringAsset) return { text: await source.text };
  throw new Error(
    `harness: CopyToRemote source ${JSON.stringify(source)}: the kit copies a folder (FileArchive) or a text (StringAsset)`,
  );
}

const statusOf = (outcome: SshOutcome) => ({
  status: outcome.status ?? -1,
  stdout: outcome.stdout,
  stderr: outcome.stderr,
});

export async function applyRecorded(
  steps: readonly Registered[],
  log: (line: string) => void = () => {},
): Promise<StepResult[]> {
  const results: StepResult[] = [];
  for (const step of steps) {
    const started = Date.now();
    const connection = plain(step.inputs.connection) as Connection;
    if (step.type === "command:remote:CopyToRemote") {
      const remotePath = String(plain(step.inputs.remotePath));
      const copy = copyStepSshInputs(await copySource(plain(step.inputs.source)), remotePath);
      const outcome = statusOf(await runOverSsh({ connection, ...copy }, copy.create));
      results.push({
        name: step.name,
        type: step.type,
        action: "copy",
        ...outcome,
        seconds: (Date.now() - started) / 1000,
      });
    } else if (step.type === "command:remote:Command") {
      const stdin = plain(step.inputs.stdin);
      const outcome = statusOf(
        await runOverSsh(
          { connection, ...(stdin === undefined ? {} : { stdin: String(stdin) }) },
          String(plain(step.inputs.create)),
        ),
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

export async function destroyRecorded(steps: readonly Registered[]): Promise<StepResult[]> {
  const results: StepResult[] = [];
  for (const step of [...steps].reverse()) {
    if (step.type !== "command:remote:Command" || step.inputs.delete === undefined) continue;
    const started = Date.now();
    const connection = plain(step.inputs.connection) as Connection;
    const outcome = statusOf(await runOverSsh({ connection }, String(plain(step.inputs.delete))));
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

/**
 * Registers the `local` stack with these values under the mocks (installed by the caller) and
 * returns what it registered: the same resource names each time, as a later `up` would.
 */
export async function registerLocalStack(
  host: LocalHost,
  values: Record<string, unknown>,
  apiKey: string,
): Promise<Registered[]> {
  const before = registered.length;
  const { deployStack } = await import("../../components/llm-deployment.js");
  deployStack(
    "local",
    {
      ...values,
      apiKey: { secure: "(set)" },
      sshPrivateKey: { secure: "(set)" },
      huggingFaceToken: { secure: "(set)" },
    },
    {
      apiKey: pulumi.secret(apiKey),
      sshPrivateKey: pulumi.secret(host.sshd.privateKey),
      huggingFaceToken: pulumi.secret(HF_TOKEN),
    },
    "local",
  );
  await settle();
  return registered.slice(before).filter((resource) => resource.name.startsWith("local"));
}
