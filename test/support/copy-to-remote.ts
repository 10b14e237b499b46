/**
 * What @pulumi/command's remote.CopyToRemote (v1.2.1) does with a source and a remote path, read
 * from its source: pulumi/pulumi-command provider/pkg/provider/remote/copyController.go
 * (`sftpCopy`, `copyDir`, `copyFile`, `copyTextContent`). The loopback harness carries out
 * exactly these actions, so a kit path that only works with `scp -r`-like behaviour fails here
 * the way it fails under the real plugin.
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
import { basename, posix } from "node:path";

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
