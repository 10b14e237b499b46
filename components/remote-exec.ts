/**
 * How the components run things on the host. Two executors carry out the same steps:
 * - "command-plugin" (default): @pulumi/command's remote.Command and remote.CopyToRemote;
 * - "kimi-dynamic": a Pulumi dynamic provider in this package that runs the system ssh client
 *   with the pinned host key. It needs no resource plugin beyond the Node.js language host, so the
 *   kit also deploys where the command plugin cannot be installed (as on our CI machines, whose Go
 *   module proxy refuses pulumi-command).
 * Both replace a step when its command, stdin, connection or triggers change, and run `delete`
 * (when given) before the step goes away.
 */
import * as pulumi from "@pulumi/pulumi";
import * as command from "@pulumi/command";

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

export function remoteCommand(executor: RemoteExecutor, name: string, args: RemoteCommandArgs, opts: pulumi.CustomResourceOptions): RemoteStep {
  if (executor === "command-plugin") {
    const resource = new command.remote.Command(name, { ...args, addPreviousOutputInEnv: false }, opts);
    return { resource, stdout: resource.stdout };
  }
  const resource = new SshCommand(name, args, opts);
  return { resource, stdout: resource.stdout };
}

export interface RemoteCopyArgs {
  connection: ConnectionInput;
  /** A local folder (copied recursively into remotePath) or a text (written to the file remotePath). */
  source: { folder: string } | { text: string };
  remotePath: string;
  triggers?: pulumi.Input<unknown>[];
}

export function remoteCopy(executor: RemoteExecutor, name: string, args: RemoteCopyArgs, opts: pulumi.CustomResourceOptions): pulumi.Resource {
  if (executor === "command-plugin") {
    const source = "folder" in args.source ? new pulumi.asset.FileArchive(args.source.folder) : new pulumi.asset.StringAsset(args.source.text);
    return new command.remote.CopyToRemote(name, { connection: args.connection, source, remotePath: args.remotePath, triggers: args.triggers }, opts);
  }
  const script =
    "folder" in args.source
      ? `set -e; mkdir -p '${args.remotePath}'; tar -C '${args.remotePath}' -xf -`
      : `set -e; mkdir -p "$(dirname '${args.remotePath}')"; cat > '${args.remotePath}'`;
  return new SshCommand(name, { connection: args.connection, create: script, stdinFromFolder: "folder" in args.source ? args.source.folder : undefined, stdin: "text" in args.source ? args.source.text : undefined, triggers: args.triggers }, opts);
}

/** A local command whose stdout is kept (secret) in the state, e.g. a generated API key. */
export function localCommand(executor: RemoteExecutor, name: string, create: string, opts: pulumi.CustomResourceOptions): pulumi.Output<string> {
  if (executor === "command-plugin") {
    return new command.local.Command(name, { create, addPreviousOutputInEnv: false }, { ...opts, additionalSecretOutputs: ["stdout"] }).stdout;
  }
  return new LocalCommand(name, { create }, { ...opts, additionalSecretOutputs: ["stdout"] }).stdout;
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

function runSsh(inputs: { connection: Connection; stdin?: string; stdinFromFolder?: string }, script: string): { stdout: string; stderr: string } {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const childProcess = require("child_process") as typeof import("child_process");
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const fs = require("fs") as typeof import("fs");
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const os = require("os") as typeof import("os");
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const path = require("path") as typeof import("path");
  const connection = inputs.connection;
  const port = connection.port ?? 22;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "kimi-kit-ssh-"));
  try {
    const options = ["-o", "BatchMode=yes", "-o", `ConnectTimeout=${connection.perDialTimeout ?? 15}`, "-o", `ConnectionAttempts=${Math.max(1, Math.min(connection.dialErrorLimit ?? 3, 10))}`, "-p", String(port)];
    if (connection.hostKey) {
      const knownHosts = path.join(dir, "known_hosts");
      fs.writeFileSync(knownHosts, `${port === 22 ? connection.host : `[${connection.host}]:${port}`} ${connection.hostKey}\n`, { mode: 0o600 });
      options.push("-o", "StrictHostKeyChecking=yes", "-o", `UserKnownHostsFile=${knownHosts}`);
    } else {
      throw new Error(`ssh ${connection.host}:${port}: no pinned host key; refusing to connect to an unverified host`);
    }
    if (connection.privateKey) {
      const key = path.join(dir, "id");
      fs.writeFileSync(key, connection.privateKey.endsWith("\n") ? connection.privateKey : `${connection.privateKey}\n`, { mode: 0o600 });
      options.push("-i", key, "-o", "IdentitiesOnly=yes");
    }
    const input = inputs.stdinFromFolder !== undefined ? childProcess.execFileSync("tar", ["-C", inputs.stdinFromFolder, "-cf", "-", "."]) : (inputs.stdin ?? "");
    const run = childProcess.spawnSync("ssh", [...options, `${connection.user ?? "root"}@${connection.host}`, script], { input, maxBuffer: 256 * 1024 * 1024 });
    const stdout = run.stdout?.toString() ?? "";
    const stderr = run.stderr?.toString() ?? "";
    if (run.status !== 0) {
      throw new Error(`ssh ${connection.user ?? "root"}@${connection.host}:${port}: exit ${run.status ?? run.signal}\n${stderr.slice(-4000)}${stdout.slice(-2000)}`);
    }
    return { stdout, stderr };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

const sshProvider: pulumi.dynamic.ResourceProvider = {
  async create(inputs: SshInputs) {
    const { stdout, stderr } = runSsh(inputs, inputs.create);
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const crypto = require("crypto") as typeof import("crypto");
    return { id: crypto.randomUUID(), outs: { ...inputs, stdout, stderr } };
  },
  async diff(_id: string, olds: SshInputs, news: SshInputs) {
    const keys = ["connection", "create", "delete", "stdin", "stdinFromFolder", "triggers"] as const;
    const replaces = keys.filter((key) => JSON.stringify(olds[key] ?? null) !== JSON.stringify(news[key] ?? null));
    return { changes: replaces.length > 0, replaces, deleteBeforeReplace: true };
  },
  async delete(_id: string, props: SshInputs) {
    if (props.delete) runSsh({ connection: props.connection }, props.delete);
  },
};

class SshCommand extends pulumi.dynamic.Resource {
  declare readonly stdout: pulumi.Output<string>;
  declare readonly stderr: pulumi.Output<string>;
  constructor(name: string, args: RemoteCommandArgs & { stdinFromFolder?: string }, opts: pulumi.CustomResourceOptions) {
    super(sshProvider, name, { ...args, stdout: undefined, stderr: undefined }, { ...opts, additionalSecretOutputs: ["connection", "stdin", ...(opts.additionalSecretOutputs ?? [])] }, "kimi-kit", "SshCommand");
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
