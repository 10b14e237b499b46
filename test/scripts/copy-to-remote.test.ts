/**
 * The plugin model's CopyToRemote against the plugin's own table (copyController.go, v1.2.1), carried out
 * over the real loopback sshd: each row starts from a fresh remote folder in the state the row names
 * and checks which files exist afterwards. The expectations are the table's, written out by hand.
 */
import { spawnSync } from "node:child_process";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
  type Dirent,
} from "node:fs";
import { homedir, tmpdir } from "node:os";
import { join, relative } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { copyToRemote, sshdConnection } from "../support/copy-to-remote";
import { startLoopbackSshd, type LoopbackSshd } from "../support/sshd";
import type { CopySource } from "../support/copy-to-remote";
import { copyStepSshInputs, runOverSsh } from "../../components/exec/remote-exec";
import { SCRIPTS_DIR, scriptsFolderPrepCommand } from "../../components/host/host-prep";
import { REMOTE_MANIFESTS_DIR, REMOTE_SCRIPTS_DIR } from "../../components/serving/container-spec";
import { shellQuote } from "../../planner/shell";

let sshd: LoopbackSshd;
let work: string;
let localFolder: string;
let localFile: string;

beforeAll(async () => {
  sshd = await startLoopbackSshd();
  work = mkdtempSync(join(tmpdir(), "kimi-kit-copy-"));
  localFolder = join(work, "scripts");
  mkdirSync(join(localFolder, "lib"), { recursive: true });
  writeFileSync(join(localFolder, "probe.sh"), "echo probe\n");
  writeFileSync(join(localFolder, "lib", "common.sh"), "echo common\n");
  localFile = join(work, "one.txt");
  writeFileSync(localFile, "one\n");
}, 60_000);

afterAll(async () => {
  await sshd?.stop();
  if (work) rmSync(work, { recursive: true, force: true });
});

type Start = "folder" | "missing" | "file";

/** A fresh remote path in the given state; its parent always exists. */
function remotePath(start: Start): string {
  const parent = mkdtempSync(join(work, "remote-"));
  const path = join(parent, "dest");
  if (start === "folder") mkdirSync(path);
  if (start === "file") writeFileSync(path, "old\n");
  return path;
}

const folder = (): CopySource => ({ kind: "folder", localPath: localFolder });
const folderSlash = (): CopySource => ({ kind: "folder", localPath: `${localFolder}/` });

describe("CopyToRemote, row by row", () => {
  it("dir → existing folder: dest/dir", async () => {
    const dest = remotePath("folder");
    expect((await copyToRemote(sshd, folder(), dest)).status).toBe(0);
    expect(readFileSync(join(dest, "scripts", "probe.sh"), "utf8")).toBe("echo probe\n");
    expect(readFileSync(join(dest, "scripts", "lib", "common.sh"), "utf8")).toBe("echo common\n");
    expect(existsSync(join(dest, "probe.sh"))).toBe(false);
  });

  it("dir → missing path: dest is made, then dest/dir", async () => {
    const dest = remotePath("missing");
    expect((await copyToRemote(sshd, folder(), dest)).status).toBe(0);
    expect(existsSync(join(dest, "scripts", "probe.sh"))).toBe(true);
    expect(existsSync(join(dest, "probe.sh"))).toBe(false);
  });

  it("dir → existing file: error", async () => {
    const outcome = await copyToRemote(sshd, folder(), remotePath("file"));
    expect(outcome.status).not.toBe(0);
  });

  it("dir/ → existing folder: its entries in dest", async () => {
    const dest = remotePath("folder");
    expect((await copyToRemote(sshd, folderSlash(), dest)).status).toBe(0);
    expect(existsSync(join(dest, "probe.sh"))).toBe(true);
    expect(existsSync(join(dest, "lib", "common.sh"))).toBe(true);
    expect(existsSync(join(dest, "scripts"))).toBe(false);
  });

  it("dir/ → missing path: dest is made and gets the entries (what sftpCopy does; its comment says dest/dir)", async () => {
    const dest = remotePath("missing");
    expect((await copyToRemote(sshd, folderSlash(), dest)).status).toBe(0);
    expect(existsSync(join(dest, "probe.sh"))).toBe(true);
  });

  it("dir/ → existing file: error", async () => {
    const outcome = await copyToRemote(sshd, folderSlash(), remotePath("file"));
    expect(outcome.status).not.toBe(0);
    expect(outcome.stderr).toMatch(/exists but is not a directory/);
  });

  it("file → existing folder: dest/file; → missing: dest; → file: dest overwritten", async () => {
    const intoFolder = remotePath("folder");
    expect((await copyToRemote(sshd, { kind: "file", localPath: localFile }, intoFolder)).status).toBe(0);
    expect(readFileSync(join(intoFolder, "one.txt"), "utf8")).toBe("one\n");
    const missing = remotePath("missing");
    expect((await copyToRemote(sshd, { kind: "file", localPath: localFile }, missing)).status).toBe(0);
    expect(readFileSync(missing, "utf8")).toBe("one\n");
    const file = remotePath("file");
    expect((await copyToRemote(sshd, { kind: "file", localPath: localFile }, file)).status).toBe(0);
    expect(readFileSync(file, "utf8")).toBe("one\n");
  });

  it("text → missing or file: written there; → folder: error", async () => {
    const missing = remotePath("missing");
    expect((await copyToRemote(sshd, { kind: "text", text: "a\tb\n" }, missing)).status).toBe(0);
    expect(readFileSync(missing, "utf8")).toBe("a\tb\n");
    const outcome = await copyToRemote(sshd, { kind: "text", text: "x" }, remotePath("folder"));
    expect(outcome.status).not.toBe(0);
    expect(outcome.stderr).toMatch(/is a directory/);
  });

  it("makes one level only: a missing parent fails, for folders and files alike", async () => {
    const deep = join(remotePath("missing"), "deeper");
    expect((await copyToRemote(sshd, folder(), deep)).status).not.toBe(0);
    expect((await copyToRemote(sshd, { kind: "text", text: "x" }, join(deep, "manifest.tsv"))).status).not.toBe(0);
    expect(existsSync(deep)).toBe(false);
  });
});

describe("the kit's own ssh provider (kimi-dynamic) copies the way the plugin does", () => {
  // What the provider runs for a copy step, through its own ssh runner (as the loopback harness does).
  const kitCopy = (source: { folder: string } | { text: string }, remotePath: string) => {
    const copy = copyStepSshInputs(source, remotePath);
    return runOverSsh({ connection: sshdConnection(sshd), ...copy }, copy.create);
  };
  /** Every file under a folder, relative, sorted: the layout to compare. */
  const layout = (root: string): string[] =>
    (readdirSync(root, { recursive: true, withFileTypes: true }) as Dirent[])
      .filter((entry) => entry.isFile())
      .map((entry) => relative(root, join(entry.parentPath, entry.name)))
      .sort();

  for (const start of ["folder", "missing"] as const) {
    it(`folder → ${start} path: same files as CopyToRemote`, async () => {
      const viaPlugin = remotePath(start);
      const viaKit = remotePath(start);
      expect((await copyToRemote(sshd, folder(), viaPlugin)).status).toBe(0);
      expect((await kitCopy({ folder: localFolder }, viaKit)).status).toBe(0);
      expect(layout(viaKit)).toEqual(layout(viaPlugin));
      expect(layout(viaKit)).toContain(join("scripts", "probe.sh"));
    });
  }

  it("text → a file, a folder refused like the plugin", async () => {
    const target = remotePath("missing");
    expect((await kitCopy({ text: "a\n" }, target)).status).toBe(0);
    expect(readFileSync(target, "utf8")).toBe("a\n");
    const refused = await kitCopy({ text: "a\n" }, remotePath("folder"));
    expect(refused.status).not.toBe(0);
    expect(refused.stderr).toMatch(/is a directory/);
  });

  it("a quote in a path (a hostile tier name) is a path, never a command", async () => {
    // No slash in the payload, so the whole name is one file name; an injected `touch` would run in
    // the ssh user's home folder (the same user as this test).
    const canaryName = `kimi-kit-pwned-${process.pid}`;
    const canary = join(homedir(), canaryName);
    const hostile = join(mkdtempSync(join(work, "remote-")), `x'; touch ${canaryName}; echo '.tsv`);
    expect((await kitCopy({ text: "manifest\n" }, hostile)).status).toBe(0);
    expect(readFileSync(hostile, "utf8")).toBe("manifest\n");
    const hostileFolder = join(mkdtempSync(join(work, "remote-")), `d'; touch ${canaryName}; echo '`);
    expect((await kitCopy({ folder: localFolder }, hostileFolder)).status).toBe(0);
    expect(existsSync(join(hostileFolder, "scripts", "probe.sh"))).toBe(true);
    expect(existsSync(canary)).toBe(false);
  });
});

describe("the scripts folder step", () => {
  it("re-run (remote.Command re-runs it on any connection change) keeps every current script and drops only what the repo no longer ships", () => {
    const current = readdirSync(SCRIPTS_DIR);
    const stale = `stale-${process.pid}.sh`;
    const run = (script: string) => spawnSync("ssh", [...sshd.sshArgs(), script], { encoding: "utf8" });
    expect(
      run(
        `mkdir -p ${shellQuote([REMOTE_SCRIPTS_DIR])} && touch ${shellQuote([`${REMOTE_SCRIPTS_DIR}/${stale}`, `${REMOTE_SCRIPTS_DIR}/${current[0]!}`])}`,
      ).status,
    ).toBe(0);
    const prep = run(scriptsFolderPrepCommand(current));
    expect(prep.status, prep.stderr).toBe(0);
    expect(existsSync(join(REMOTE_SCRIPTS_DIR, stale))).toBe(false);
    expect(existsSync(join(REMOTE_SCRIPTS_DIR, current[0]!))).toBe(true);
    expect(existsSync(REMOTE_MANIFESTS_DIR)).toBe(true);
  });
});
