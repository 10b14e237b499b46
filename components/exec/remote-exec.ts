/**
 * How the components run things on the host. Two executors carry out the same steps:
 * - "command-plugin" (default): @pulumi/command's remote.Command and remote.CopyToRemote;
 * - "kimi-dynamic": a Pulumi dynamic provider in this package that runs the system ssh client
 *   with the pinned host key. It needs no resource plugin beyond the Node.js language host, so the
 *   kit also deploys where the command plugin cannot be installed (as on our CI machines, whose Go
 *   module proxy refuses pulumi-command).
 * Both follow @pulumi/command's lifecycle (provider/pkg/provider/remote/commandController.go): a
 * changed command, stdin or connection re-runs `create` in place; changed triggers replace the
 * step, the new one created before the old one's `delete` runs.
 *
 * Create-before-delete is why every step with a `delete` is wrapped by ownedStepCommands: the new
 * step re-creates the same thing (same container name, same shards) and the old step's delete
 * must not then remove it.
 */
import { createHash } from "node:crypto";
import * as pulumi from "@pulumi/pulumi";
import * as command from "@pulumi/command";
import { basename, posix } from "node:path";
import { HOST_STATE_DIR } from "../serving/container-spec";
import { shellQuote } from "../../planner/shell";

export type RemoteExecutor = "command-plugin" | "kimi-dynamic";

export interface Connection {
  host: string;
  port?: number;
  user?: string;
  hostKey?: string;
  privateKey?: string;
  dialErrorLimit?: number;
  perDialTimeout?: number;
}

type ConnectionInput = pulumi.Input<command.types.input.remote.ConnectionArgs>;

export interface RemoteCommandArgs {
  connection: ConnectionInput;
  create: pulumi.Input<string>;
  delete?: pulumi.Input<string>;
  stdin?: pulumi.Input<string>;
  triggers?: pulumi.Input<unknown>[];
  logging?: "stdout" | "stderr" | "stdoutAndStderr" | "none";
}

export interface RemoteStep {
  resource: pulumi.Resource;
  stdout: pulumi.Output<string>;
}

export function remoteCommand(
  executor: RemoteExecutor,
  name: string,
  args: RemoteCommandArgs,
  opts: pulumi.CustomResourceOptions,
): RemoteStep {
  let stepArgs = args;
  if (args.delete !== undefined) {
    const owned = pulumi
      .all([args.create, args.delete, pulumi.all(args.triggers ?? [])])
      .apply(([create, remove, triggers]) => ownedStepCommands(name, create, remove, triggers));
    stepArgs = { ...args, create: owned.create, delete: owned.delete };
  }
  if (executor === "command-plugin") {
    const resource = new command.remote.Command(name, { ...stepArgs, addPreviousOutputInEnv: false }, opts);
    return { resource, stdout: resource.stdout };
  }
  const resource = new SshCommand(name, stepArgs, opts);
  return { resource, stdout: resource.stdout };
}

/** Where each step with a `delete` records which instance of it last ran `create`. */
export const REMOTE_OWNERS_DIR = `${HOST_STATE_DIR}/owners`;

/**
 * Wraps a step's commands so that only the instance that last created a thing removes it. `create`
 * ends by writing this instance's token (a hash of everything that makes it differ from another
 * instance: a replacement always changes the triggers) to REMOTE_OWNERS_DIR/<step>; `delete` runs
 * only while the file still holds that token (or no token at all), so when a replacement has
 * re-created the container or re-verified the shards, the old step's delete leaves them alone.
 */
export function ownedStepCommands(
  stepName: string,
  create: string,
  remove: string,
  triggers: readonly unknown[],
): { create: string; delete: string } {
  const token = createHash("sha256")
    .update(JSON.stringify({ stepName, create, remove, triggers }))
    .digest("hex")
    .slice(0, 32);
  const ownerFile = `${REMOTE_OWNERS_DIR}/${stepName.replace(/[^A-Za-z0-9_.-]/g, "-")}`;
  const recordOwner = `${shellQuote(["mkdir", "-p", "--", REMOTE_OWNERS_DIR])} && printf '%s\n' ${token} > ${shellQuote([`${ownerFile}.tmp`])} && ${shellQuote(["mv", "-f", "--", `${ownerFile}.tmp`, ownerFile])}`;
  const notice = `kimi-kit: ${stepName} was created again by a newer step; this older step removes nothing`;
  return {
    create: `(\n${create}\n) && ${recordOwner}`,
    delete: [
      `owner=$(cat ${shellQuote([ownerFile])} 2>/dev/null || true)`,
      `if [ -z "$owner" ] || [ "$owner" = ${token} ]; then (\n${remove}\n) && ${shellQuote(["rm", "-f", "--", ownerFile])}; else echo ${shellQuote([notice])}; fi`,
    ].join("; "),
  };
}

export interface RemoteCopyArgs {
  connection: ConnectionInput;
  /**
   * A local folder, copied as a folder: it lands at remotePath/<folder's name> (remotePath is made
   * if missing, but not its parents); or a text, written to the file remotePath (its folder must
   * exist). These are CopyToRemote's rules for a folder without a trailing slash and for a text
   * asset (pulumi-command provider/pkg/provider/remote/copyController.go), and the kit's own
   * provider follows them too, so both executors leave the same files on the host.
   */
  source: { folder: string } | { text: string };
  remotePath: string;
  triggers?: pulumi.Input<unknown>[];
}

/** Where a folder copied into remotePath lands, on either executor. */
export function remoteFolderDestination(folder: string, remotePath: string): string {
  return posix.join(remotePath, basename(folder));
}

export function remoteCopy(
  executor: RemoteExecutor,
  name: string,
  args: RemoteCopyArgs,
  opts: pulumi.CustomResourceOptions,
): pulumi.Resource {
  if ("folder" in args.source && args.source.folder.endsWith("/")) {
    // A trailing slash switches CopyToRemote to "copy the contents", with a different layout when
    // remotePath is missing; the kit never asks for that, so neither executor has to model it.
    throw new Error(
      `internal: remoteCopy ${name}: source folder ${args.source.folder} ends with "/"; allowed: a folder path without a trailing slash`,
    );
  }
  if (executor === "command-plugin") {
    const source =
      "folder" in args.source
        ? new pulumi.asset.FileArchive(args.source.folder)
        : new pulumi.asset.StringAsset(args.source.text);
    return new command.remote.CopyToRemote(
      name,
      { connection: args.connection, source, remotePath: args.remotePath, triggers: args.triggers },
      opts,
    );
  }
  return new SshCommand(
    name,
    { connection: args.connection, ...copyStepSshInputs(args.source, args.remotePath), triggers: args.triggers },
    opts,
  );
}

/**
 * A copy as the kit's ssh provider runs it: a script on the host and what arrives on its stdin (a
 * tar of the folder's entries, or the text). The loopback harness carries out the command plugin's
 * CopyToRemote steps through this too, so there is one copy semantics; test/scripts/copy-to-remote
 * checks it against the plugin's own rules.
 */
export function copyStepSshInputs(
  source: RemoteCopyArgs["source"],
  remotePath: string,
): { create: string; stdinFromFolder: string } | { create: string; stdin: string } {
  return "folder" in source
    ? { create: folderCopyScript(source.folder, remotePath), stdinFromFolder: source.folder }
    : { create: textCopyScript(remotePath), stdin: source.text };
}

/** The kit provider's remote side of a folder copy: a tar of the folder's entries arrives on stdin. */
export function folderCopyScript(folder: string, remotePath: string): string {
  const destination = remoteFolderDestination(folder, remotePath);
  const makeOne = (path: string) => `{ [ -d ${shellQuote([path])} ] || ${shellQuote(["mkdir", "--", path])}; }`;
  return `set -e; ${makeOne(remotePath)}; ${makeOne(destination)}; ${shellQuote(["tar", "-C", destination, "--no-overwrite-dir", "-xf", "-"])}`;
}

/** The kit provider's remote side of a text copy: the text arrives on stdin. */
export function textCopyScript(remotePath: string): string {
  const target = shellQuote([remotePath]);
  return `set -e; if [ -d ${target} ]; then echo ${shellQuote([`remote path ${remotePath} is a directory; a text is written to a file path`])} >&2; exit 1; fi; cat > ${target}`;
}

/**
 * Writes `files` (name → text, no secrets: the command line shows in logs) into a fresh folder
 * `dir` on the host, runs `then` (which reads them from there), and removes the folder again.
 */
export function stagedFilesScript(dir: string, files: Readonly<Record<string, string>>, then: string): string {
  if (!/^\/[A-Za-z0-9_./-]+$/.test(dir)) throw new Error(`internal: staging folder ${JSON.stringify(dir)}`);
  const writes = Object.entries(files).map(([name, text]) => {
    if (!/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(name))
      throw new Error(`internal: staged file name ${JSON.stringify(name)}`);
    return `printf '%s' ${shellQuote([text])} > ${shellQuote([posix.join(dir, name)])}`;
  });
  return [
    "set -e",
    "umask 077",
    `rm -rf -- ${dir}`,
    `mkdir -p -- ${dir}`,
    `trap 'rm -rf -- ${dir}' EXIT`,
    ...writes,
    then,
  ].join("\n");
}

/** A local command whose stdout is kept (secret) in the state, e.g. a generated API key. */
export function localCommand(
  executor: RemoteExecutor,
  name: string,
  create: string,
  opts: pulumi.CustomResourceOptions,
): pulumi.Output<string> {
  if (executor === "command-plugin") {
    return new command.local.Command(
      name,
      { create, addPreviousOutputInEnv: false },
      { ...opts, additionalSecretOutputs: ["stdout"] },
    ).stdout;
  }
  return new LocalCommand(name, { create }, { ...opts, additionalSecretOutputs: ["stdout"] }).stdout;
}

/**
 * Runs a read-only command on a host now, from the program itself, with the system ssh client and
 * the pinned host key (what the kimi-dynamic executor runs): for a check that must run on every
 * `pulumi up`, which no step does without showing as a change in every preview. Synchronous, so
 * an unreachable host is given two dials of 15 s at most rather than holding the program for
 * minutes. Returns stdout; throws with ssh's exit status and stderr.
 */
export function runRemoteNow(connection: Connection, script: string): string {
  return runSshSync({ connection: { ...connection, dialErrorLimit: 2, perDialTimeout: 15 } }, script).stdout;
}

// ------------------------------------------------------------------ the dynamic provider
// Pulumi serializes these functions into the state and runs them in the language host: they
// require what they use inside their bodies and share nothing with module scope.

interface SshInputs {
  connection: Connection;
  create: string;
  delete?: string;
  stdin?: string;
  stdinFromFolder?: string;
  triggers?: unknown[];
}

/** What one ssh invocation gives back: the exit status (null when a signal ended it) and its output. */
export interface SshOutcome {
  status: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
}

/**
 * ssh's argv for a connection: batch mode, bounded dials, the pinned host key in a known_hosts file
 * and the private key (both 0600 in `dir`); refuses a connection without a pinned key.
 */
function sshArgv(connection: Connection, dir: string, script: string): string[] {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const fs = require("fs") as typeof import("fs");
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const path = require("path") as typeof import("path");
  const port = connection.port ?? 22;
  const options = [
    "-o",
    "BatchMode=yes",
    "-o",
    `ConnectTimeout=${connection.perDialTimeout ?? 15}`,
    "-o",
    `ConnectionAttempts=${Math.max(1, Math.min(connection.dialErrorLimit ?? 3, 10))}`,
    "-p",
    String(port),
  ];
  if (!connection.hostKey)
    throw new Error(`ssh ${connection.host}:${port}: no pinned host key; refusing to connect to an unverified host`);
  const knownHosts = path.join(dir, "known_hosts");
  fs.writeFileSync(
    knownHosts,
    `${port === 22 ? connection.host : `[${connection.host}]:${port}`} ${connection.hostKey}\n`,
    { mode: 0o600 },
  );
  options.push("-o", "StrictHostKeyChecking=yes", "-o", `UserKnownHostsFile=${knownHosts}`);
  if (connection.privateKey) {
    const key = path.join(dir, "id");
    fs.writeFileSync(key, connection.privateKey.endsWith("\n") ? connection.privateKey : `${connection.privateKey}\n`, {
      mode: 0o600,
    });
    options.push("-i", key, "-o", "IdentitiesOnly=yes");
  }
  return [...options, `${connection.user ?? "root"}@${connection.host}`, script];
}

/** A private folder for one ssh invocation's known_hosts and key files, and how to remove it. */
function sshTempDir(): { dir: string; remove: () => void } {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const fs = require("fs") as typeof import("fs");
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const os = require("os") as typeof import("os");
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const path = require("path") as typeof import("path");
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "kimi-kit-ssh-"));
  return { dir, remove: () => fs.rmSync(dir, { recursive: true, force: true }) };
}

/** stdin of a step: a tar of a folder's entries (a folder copy) or the text given (possibly none). */
function sshStdin(inputs: { stdin?: string; stdinFromFolder?: string }): string | Buffer {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const childProcess = require("child_process") as typeof import("child_process");
  return inputs.stdinFromFolder !== undefined
    ? childProcess.execFileSync("tar", ["-C", inputs.stdinFromFolder, "-cf", "-", "."], { maxBuffer: 1 << 30 })
    : (inputs.stdin ?? "");
}

/** The error a failed step reports: who, the exit status, the end of stderr and stdout. */
function sshFailure(connection: Connection, outcome: SshOutcome): Error {
  return new Error(
    `ssh ${connection.user ?? "root"}@${connection.host}:${connection.port ?? 22}: exit ${outcome.status ?? outcome.signal}\n${outcome.stderr.slice(-4000)}${outcome.stdout.slice(-2000)}`,
  );
}

/**
 * Runs `script` on the host with the system ssh client, without blocking the event loop (a step's
 * download may come from a server in this very process, as in the loopback tests). What the kit's
 * provider runs for every step, and what the loopback harness calls in-process.
 */
export async function runOverSsh(
  inputs: { connection: Connection; stdin?: string; stdinFromFolder?: string },
  script: string,
): Promise<SshOutcome> {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const childProcess = require("child_process") as typeof import("child_process");
  const temp = sshTempDir();
  try {
    const argv = sshArgv(inputs.connection, temp.dir, script);
    const input = sshStdin(inputs);
    return await new Promise<SshOutcome>((resolve, reject) => {
      const child = childProcess.spawn("ssh", argv, { stdio: ["pipe", "pipe", "pipe"] });
      const stdout: Buffer[] = [];
      const stderr: Buffer[] = [];
      child.stdout.on("data", (chunk: Buffer) => stdout.push(chunk));
      child.stderr.on("data", (chunk: Buffer) => stderr.push(chunk));
      child.once("error", reject);
      child.once("close", (status, signal) =>
        resolve({
          status,
          signal,
          stdout: Buffer.concat(stdout).toString(),
          stderr: Buffer.concat(stderr).toString(),
        }),
      );
      // A remote command that exits without reading its stdin closes the pipe: not an error.
      child.stdin.on("error", () => {});
      child.stdin.end(input);
    });
  } finally {
    temp.remove();
  }
}

/** runOverSsh that throws on a non-zero exit: how the provider's create, update and delete run. */
async function runSsh(
  inputs: { connection: Connection; stdin?: string; stdinFromFolder?: string },
  script: string,
): Promise<{ stdout: string; stderr: string }> {
  const outcome = await runOverSsh(inputs, script);
  if (outcome.status !== 0) throw sshFailure(inputs.connection, outcome);
  return { stdout: outcome.stdout, stderr: outcome.stderr };
}

/** The same ssh invocation, synchronously (runRemoteNow: a check the program makes while it runs). */
function runSshSync(inputs: { connection: Connection; stdin?: string }, script: string): { stdout: string } {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const childProcess = require("child_process") as typeof import("child_process");
  const temp = sshTempDir();
  try {
    const run = childProcess.spawnSync("ssh", sshArgv(inputs.connection, temp.dir, script), {
      input: sshStdin(inputs),
      maxBuffer: 256 * 1024 * 1024,
    });
    const outcome: SshOutcome = {
      status: run.status,
      signal: run.signal,
      stdout: run.stdout?.toString() ?? "",
      stderr: run.stderr?.toString() ?? "",
    };
    if (outcome.status !== 0) throw sshFailure(inputs.connection, outcome);
    return { stdout: outcome.stdout };
  } finally {
    temp.remove();
  }
}

const sshProvider: pulumi.dynamic.ResourceProvider = {
  async create(inputs: SshInputs) {
    const { stdout, stderr } = await runSsh(inputs, inputs.create);
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const crypto = require("crypto") as typeof import("crypto");
    return { id: crypto.randomUUID(), outs: { ...inputs, stdout, stderr } };
  },
  // As remote.Command: only triggers replace (create first, then the old delete); any other
  // change re-runs create in place.
  async diff(_id: string, olds: SshInputs, news: SshInputs) {
    const keys = ["connection", "create", "delete", "stdin", "stdinFromFolder", "triggers"] as const;
    const changed = keys.filter((key) => JSON.stringify(olds[key] ?? null) !== JSON.stringify(news[key] ?? null));
    return {
      changes: changed.length > 0,
      replaces: changed.filter((key) => key === "triggers"),
      deleteBeforeReplace: false,
    };
  },
  async update(_id: string, _olds: SshInputs, news: SshInputs) {
    const { stdout, stderr } = await runSsh(news, news.create);
    return { outs: { ...news, stdout, stderr } };
  },
  async delete(_id: string, props: SshInputs) {
    if (props.delete) await runSsh({ connection: props.connection }, props.delete);
  },
};

class SshCommand extends pulumi.dynamic.Resource {
  declare readonly stdout: pulumi.Output<string>;
  declare readonly stderr: pulumi.Output<string>;
  constructor(
    name: string,
    args: RemoteCommandArgs & { stdinFromFolder?: string },
    opts: pulumi.CustomResourceOptions,
  ) {
    super(
      sshProvider,
      name,
      { ...args, stdout: undefined, stderr: undefined },
      { ...opts, additionalSecretOutputs: ["connection", "stdin", ...(opts.additionalSecretOutputs ?? [])] },
      "kimi-kit",
      "SshCommand",
    );
  }
}

const localProvider: pulumi.dynamic.ResourceProvider = {
  async create(inputs: { create: string }) {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const childProcess = require("child_process") as typeof import("child_process");
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const crypto = require("crypto") as typeof import("crypto");
    const stdout = childProcess.execFileSync("/bin/sh", ["-c", inputs.create]).toString();
    return { id: crypto.randomUUID(), outs: { ...inputs, stdout } };
  },
  async diff(_id: string, olds: { create: string }, news: { create: string }) {
    return { changes: olds.create !== news.create, replaces: olds.create !== news.create ? ["create"] : [] };
  },
};

class LocalCommand extends pulumi.dynamic.Resource {
  declare readonly stdout: pulumi.Output<string>;
  constructor(name: string, args: { create: string }, opts: pulumi.CustomResourceOptions) {
    super(localProvider, name, { ...args, stdout: undefined }, opts, "kimi-kit", "LocalCommand");
  }
}
