/**
 * What @pulumi/command's remote.CopyToRemote (v1.2.1) does with a source and a remote path, read
 * from its source: pulumi/pulumi-command provider/pkg/provider/remote/copyController.go
 * (`sftpCopy`, `copyDir`, `copyFile`, `copyTextContent`), carried out over the loopback sshd by
 * copyToRemote below. test/scripts/copy-to-remote.test.ts holds it to the plugin's table and the
 * kit's own provider copy (which the loopback harness runs) to it, so a kit path that only works
 * with `scp -r`-like behaviour fails there the way it fails under the real plugin.
 *
 * The rules, as the Go code runs them (the file's comment table differs in one cell, marked *):
 *
 * | source | remote path is a folder | remote path missing          | remote path is a file |
 * |--------|-------------------------|------------------------------|-----------------------|
 * | dir    | path/dir                | mkdir path, then path/dir    | error                 |
 * | dir/   | path/<each entry>       | mkdir path, path/<entry> (*) | error                 |
 * | file   | path/file               | path                         | path (overwritten)    |
 * | text   | error                   | path                         | path (overwritten)    |
 *
 * (*) the comment says "dest/dir", but `sftpCopy` makes `dest` and copies the entries into it.
 * Every mkdir is sftp's Mkdir: one level, failing when the parent is missing; files are created
 * with sftp's Create, which also needs the parent folder.
 */
import { readFileSync } from "node:fs";
import { basename, posix } from "node:path";
import { runOverSsh, type Connection } from "../../components/exec/remote-exec";
import { shellQuote } from "../../planner/shell";
import type { LoopbackSshd } from "./sshd";

export type RemoteEntry = "folder" | "file" | "missing";

export type CopySource =
  { kind: "folder"; localPath: string } | { kind: "file"; localPath: string } | { kind: "text"; text: string };

export type CopyAction =
  /** sftp Mkdir: one level; fails when the parent is missing or the path exists. */
  | { kind: "mkdir"; remotePath: string }
  /** copyDir: the local folder's entries into remoteFolder, recursively, overwriting files. */
  | { kind: "copy-folder-entries"; localFolder: string; remoteFolder: string }
  /** copyFile / copyTextContent: create (or truncate) remotePath and write it. */
  | { kind: "write-file"; remotePath: string; from: { localPath: string } | { text: string } };

/** The paths the plugin stats before it decides, so a caller can look them up in one go. */
export function pathsToStat(source: CopySource, remotePath: string): string[] {
  if (source.kind === "folder" && !source.localPath.endsWith("/"))
    return [remotePath, posix.join(remotePath, basename(source.localPath))];
  return [remotePath];
}

/** The plugin's decision, given what each path in pathsToStat(...) is on the host. */
export function copyToRemoteActions(
  source: CopySource,
  remotePath: string,
  stat: (path: string) => RemoteEntry,
): CopyAction[] {
  const destination = stat(remotePath);
  if (source.kind === "text") {
    if (destination === "folder")
      throw new Error(
        `remote path ${remotePath} is a directory; when using a text asset, remotePath must be a file path`,
      );
    return [{ kind: "write-file", remotePath, from: { text: source.text } }];
  }
  if (source.kind === "file") {
    const target = destination === "folder" ? posix.join(remotePath, basename(source.localPath)) : remotePath;
    return [{ kind: "write-file", remotePath: target, from: { localPath: source.localPath } }];
  }
  const actions: CopyAction[] = [];
  if (destination === "missing") actions.push({ kind: "mkdir", remotePath });
  if (source.localPath.endsWith("/")) {
    if (destination === "file") throw new Error(`remote path ${remotePath} exists but is not a directory`);
    actions.push({ kind: "copy-folder-entries", localFolder: source.localPath, remoteFolder: remotePath });
    return actions;
  }
  const nested = posix.join(remotePath, basename(source.localPath));
  // With remotePath a file, the Go code stats file/dir, which fails (ENOTDIR is not "not exist").
  if (destination === "file") throw new Error(`failed to stat remote path ${nested}: not a directory`);
  const nestedEntry = destination === "missing" ? "missing" : stat(nested);
  if (nestedEntry === "file") throw new Error(`remote path ${nested} exists but is not a directory`);
  if (nestedEntry === "missing") actions.push({ kind: "mkdir", remotePath: nested });
  actions.push({ kind: "copy-folder-entries", localFolder: source.localPath, remoteFolder: nested });
  return actions;
}

/** The loopback sshd as a connection of the kit's provider (pinned host key, the client key). */
export function sshdConnection(sshd: LoopbackSshd): Connection {
  return {
    host: sshd.host,
    port: sshd.port,
    user: sshd.user,
    hostKey: sshd.hostPublicKey,
    privateKey: sshd.privateKey,
  };
}

/** Carries out one CopyToRemote the way the plugin does; a refusal comes back as exit 1 with the plugin's message. */
export async function copyToRemote(
  sshd: LoopbackSshd,
  source: CopySource,
  remotePath: string,
): Promise<{ status: number; stdout: string; stderr: string }> {
  const connection = sshdConnection(sshd);
  const ssh = async (script: string, stdin?: string) => {
    const outcome = await runOverSsh({ connection, ...(stdin === undefined ? {} : { stdin }) }, script);
    return { status: outcome.status ?? -1, stdout: outcome.stdout, stderr: outcome.stderr };
  };
  const paths = pathsToStat(source, remotePath);
  const probe = await ssh(
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
    if (action.kind === "mkdir") last = await ssh(shellQuote(["mkdir", "--", action.remotePath]));
    else if (action.kind === "copy-folder-entries") {
      const outcome = await runOverSsh(
        { connection, stdinFromFolder: action.localFolder },
        `[ -d ${shellQuote([action.remoteFolder])} ] && ${shellQuote(["tar", "-C", action.remoteFolder, "--no-overwrite-dir", "-xf", "-"])}`,
      );
      last = { status: outcome.status ?? -1, stdout: outcome.stdout, stderr: outcome.stderr };
    } else {
      const content = "text" in action.from ? action.from.text : readFileSync(action.from.localPath, "utf8");
      last = await ssh(`cat > ${shellQuote([action.remotePath])}`, content);
    }
    if (last.status !== 0) return last;
  }
  return last;
}
