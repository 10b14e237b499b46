/**
 * ansible-free-scripts/fetch-gguf.sh, run for real on a loopback sshd "host" against a loopback
 * Hugging Face look-alike serving generated shards.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  writeFileSync,
  writeSync,
  closeSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startHfServer, writeManifest, type HfServer } from "../support/hf-server";
import { startLoopbackSshd, type LoopbackSshd } from "../support/sshd";
import { shellQuote } from "../../planner/shell";

const SCRIPT = join(__dirname, "..", "..", "ansible-free-scripts", "fetch-gguf.sh");
const REPO = "acme/Model-GGUF";
const TIER = "Q2";
const MB = 1024 * 1024;
const SIZES = [2 * MB, 3 * MB, 4 * MB + 123, 6 * MB + 7];
const PATHS = SIZES.map((_, k) => `${TIER}/Model-${TIER}-0000${k + 1}-of-00004.gguf`);
const TOKEN = `hf_test_${randomBytes(12).toString("hex")}`;

let sshd: LoopbackSshd;
let hf: HfServer;
let work: string;
let root: string;
let hostScript: string;
let manifestFile: string;
let manifestText: string;
const shas: string[] = [];
const children = new Set<ChildProcess>();

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

const sha256 = (file: string) => createHash("sha256").update(readFileSync(file)).digest("hex");
const q = (word: string) => shellQuote([word]);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Runs a command on the host over ssh without blocking the event loop (the HF server lives here). */
function startOnHost(command: string, stdin = ""): { result: Promise<Run>; stdout: () => string } {
  let stdout = "";
  let stderr = "";
  const result = new Promise<Run>((resolve, reject) => {
    const child = spawn("ssh", [...sshd.sshArgs(), command], { stdio: ["pipe", "pipe", "pipe"] });
    children.add(child);
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.on("error", reject);
    child.on("close", (code) => {
      children.delete(child);
      resolve({ code, stdout, stderr });
    });
    child.stdin.end(stdin);
  });
  return { result, stdout: () => stdout };
}

function onHost(command: string, stdin = ""): Promise<Run> {
  return startOnHost(command, stdin).result;
}

/** Runs the script on the host; its own temp files (left behind by kill -9) stay under `work`. */
function startFetchGguf(args: string[], stdin = "") {
  return startOnHost(["env", `TMPDIR=${join(work, "host-tmp")}`, "bash", hostScript, ...args].map(q).join(" "), stdin);
}

function fetchGguf(args: string[], stdin = ""): Promise<Run> {
  return startFetchGguf(args, stdin).result;
}

function baseArgs(dest: string, server: HfServer = hf): string[] {
  return ["--dest", dest, "--base-url", server.baseUrl, "--repo", REPO];
}

function newDest(name: string): string {
  return join(work, "dest", name);
}

function lastLine(text: string): string {
  return text.trimEnd().split("\n").at(-1) ?? "";
}

/** "<sec>.<nanoseconds>" as `date -r FILE +%s.%N` prints it. */
function mtimeString(file: string): string {
  const ns = statSync(file, { bigint: true }).mtimeNs;
  return `${ns / 1_000_000_000n}.${String(ns % 1_000_000_000n).padStart(9, "0")}`;
}

function expectAllVerified(dest: string) {
  PATHS.forEach((p, k) => {
    const final = join(dest, p);
    expect(sha256(final), p).toBe(shas[k]);
    expect(readFileSync(`${final}.verified`, "utf8")).toBe(`${shas[k]} ${SIZES[k]} ${mtimeString(final)}\n`);
    expect(existsSync(`${final}.partial`), `${p}.partial`).toBe(false);
  });
}

async function waitFor(what: string, predicate: () => boolean, timeoutMs: number) {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

const fileSize = (f: string) => (existsSync(f) ? statSync(f).size : -1);

/** Every regular file under dir (none when dir is gone). */
function listTree(dir: string): string[] {
  let entries;
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch {
    return [];
  }
  return entries.flatMap((e) =>
    e.isDirectory() ? listTree(join(dir, e.name)) : e.isFile() ? [join(dir, e.name)] : [],
  );
}

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), "fetch-gguf-test-"));
  root = join(work, "repo");
  mkdirSync(join(root, TIER), { recursive: true });
  mkdirSync(join(root, "docs"), { recursive: true });
  SIZES.forEach((size, k) => {
    const data = randomBytes(size);
    writeFileSync(join(root, PATHS[k]!), data);
    shas.push(createHash("sha256").update(data).digest("hex"));
  });
  writeFileSync(join(root, "docs", "README.md"), "# not a model\n");
  manifestFile = join(work, "manifest.tsv");
  manifestText = await writeManifest({ root, folder: TIER, file: manifestFile });

  sshd = await startLoopbackSshd();
  hf = await startHfServer({ root, repo: REPO });
  const hostDir = join(work, "host");
  mkdirSync(join(work, "host-tmp"));
  hostScript = join(hostDir, "fetch-gguf.sh");
  // Ship the script to the "host" the way a person would: over ssh, with the lib-common.sh it sources.
  sshd.exec(
    `mkdir -p ${q(hostDir)} && cat > ${q(hostScript)} && chmod 755 ${q(hostScript)}`,
    readFileSync(SCRIPT, "utf8"),
  );
  sshd.exec(`cat > ${q(join(hostDir, "lib-common.sh"))}`, readFileSync(join(SCRIPT, "..", "lib-common.sh"), "utf8"));
}, 60_000);

/** Unmounts a test filesystem, stopping first anything of this test still writing there. */
function unmount(dir: string) {
  if (!spawnSync("mountpoint", ["-q", dir]).status) {
    spawnSync("pkill", ["-9", "-f", `[c]url .*${dir}/`]);
    if (spawnSync("umount", [dir]).status !== 0) spawnSync("umount", ["-l", dir]);
  }
}

afterAll(async () => {
  if (work) unmount(join(work, "small-disk"));
  if (sshd && work) {
    // Anything of ours still running on the host (a failed kill test, say).
    await onHost(
      `pkill -9 -f ${q(`${work}/host/[f]etch-gguf.sh`)}; pkill -9 -f ${q(`[c]url .*${work}/dest/`)}; true`,
    ).catch(() => undefined);
  }
  for (const child of children) child.kill("SIGKILL");
  await hf?.stop();
  await sshd?.stop();
  if (work) rmSync(work, { recursive: true, force: true });
});

describe("fetch-gguf.sh", () => {
  it("prints usage on --help, exits 2 on bad usage, and is shellcheck-clean", async () => {
    const help = await fetchGguf(["--help"]);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/^Usage: fetch-gguf\.sh --dest DIR --base-url URL --repo OWNER\/NAME/);
    for (const flag of [
      "--revision",
      "--manifest",
      "--resolve",
      "--connections",
      "--token-stdin",
      "--reverify",
      "--progress-seconds",
      "--attempts",
      "--retry-delay",
      "--retry-max-delay",
      "--min-rate-bytes-per-second",
      "--stall-seconds",
    ]) {
      expect(help.stdout).toContain(flag);
    }
    expect(help.stdout).toMatch(/Exit codes:[\s\S]*4 +not enough free disk space[\s\S]*7 +another run holds the lock/);

    const none = await fetchGguf([]);
    expect(none.code).toBe(2);
    expect(none.stderr).toContain("--dest is required");
    const unknown = await fetchGguf([...baseArgs(newDest("usage")), "--manifest", manifestFile, "--bogus"]);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain("unknown argument: --bogus");
    const both = await fetchGguf([...baseArgs(newDest("usage")), "--manifest", manifestFile, "--resolve", TIER]);
    expect(both.code).toBe(2);
    const badConnections = await fetchGguf([
      ...baseArgs(newDest("usage")),
      "--manifest",
      manifestFile,
      "--connections",
      "0",
    ]);
    expect(badConnections.code).toBe(2);
    for (const [flag, value] of [
      ["--attempts", "0"],
      ["--min-rate-bytes-per-second", "0"],
      ["--stall-seconds", "x"],
      ["--retry-delay", "-1"],
    ] as const) {
      const bad = await fetchGguf([...baseArgs(newDest("usage")), "--manifest", manifestFile, flag, value]);
      expect(bad.code, flag).toBe(2);
      expect(bad.stderr, flag).toContain(`${flag} must be`);
    }
    expect(existsSync(newDest("usage"))).toBe(false);

    const shellcheck = spawnSync("shellcheck", [SCRIPT], { encoding: "utf8" });
    expect(shellcheck.error).toBeUndefined();
    expect(shellcheck.stdout + shellcheck.stderr).toBe("");
    expect(shellcheck.status).toBe(0);
  });

  it("rejects a bad manifest line with exit 3, naming the line, before touching anything", async () => {
    const good = manifestText.split("\n")[0]!;
    const bad = `${"z".repeat(64)}\t123\t${TIER}/x.gguf`;
    const file = join(work, "bad-manifest.tsv");
    writeFileSync(file, `# a comment\n${good}\n\n${bad}\n`);
    const dest = newDest("bad-manifest");
    const before = hf.requests.length;
    const run = await fetchGguf([...baseArgs(dest), "--manifest", file]);
    expect(run.code).toBe(3);
    expect(run.stderr).toContain(`line 4`);
    expect(run.stderr).toContain(bad);

    writeFileSync(file, `${good}\n${shas[1]}\t${SIZES[1]}\t../escape.gguf\n`);
    const escape = await fetchGguf([...baseArgs(dest), "--manifest", file]);
    expect(escape.code).toBe(3);
    expect(escape.stderr).toMatch(/line 2: path must be relative.*\.\.\/escape\.gguf/);

    writeFileSync(file, `${shas[0]}\tbig\t${PATHS[0]}\n`);
    const size = await fetchGguf([...baseArgs(dest), "--manifest", file]);
    expect(size.code).toBe(3);
    expect(size.stderr).toContain("line 1: size is not a byte count");

    expect(existsSync(dest)).toBe(false);
    expect(hf.requests.length).toBe(before);
  });

  const full = () => newDest("full");
  const total = SIZES.reduce((a, b) => a + b, 0);

  it("fetches every shard, verifies it and writes sidecars", async () => {
    const before = hf.requests.length;
    const run = await fetchGguf([...baseArgs(full()), "--manifest", manifestFile]);
    expect(run.stderr).toBe("");
    expect(run.code).toBe(0);
    expectAllVerified(full());
    const gets = hf.requests.slice(before).filter((r) => r.kind === "resolve");
    expect(gets.map((r) => r.path).sort()).toEqual([...PATHS].sort());
    expect(gets.every((r) => r.rangeStart === null && r.status === 200)).toBe(true);
    expect(run.stdout).toContain(
      `fetched 4 shard(s), ${total} bytes; skipped 0 verified shard(s); all 4 shard(s) verified in ${full()}\n`,
    );
    expect(lastLine(run.stdout)).toBe(`FETCH_GGUF_RESULT verified=4 downloaded_bytes=${total}`);
    expect(readdirSync(join(full(), TIER)).sort()).toEqual(
      PATHS.flatMap((p) => [p, `${p}.verified`])
        .map((p) => p.slice(TIER.length + 1))
        .sort(),
    );
  });

  it("downloads nothing on a second run", async () => {
    const before = hf.requests.length;
    const run = await fetchGguf([...baseArgs(full()), "--manifest", manifestFile]);
    expect(run.code).toBe(0);
    expect(hf.requests.slice(before)).toEqual([]);
    expect(run.stdout.match(/: verified earlier, skipping/g)).toHaveLength(4);
    expect(run.stdout).toContain(
      `fetched 0 shard(s), 0 bytes; skipped 4 verified shard(s); all 4 shard(s) verified in ${full()}`,
    );
    expect(lastLine(run.stdout)).toBe("FETCH_GGUF_RESULT verified=4 downloaded_bytes=0");
    expectAllVerified(full());
  });

  it("re-hashes a final file whose sidecar no longer matches; a corrupted one goes to .bad and is fetched again", async () => {
    const corrupted = join(full(), PATHS[1]!);
    const fd = openSync(corrupted, "r+");
    writeSync(fd, Buffer.from("flipped bytes"), 0, 13, 1000);
    closeSync(fd);
    const corruptedSha = sha256(corrupted);
    rmSync(`${join(full(), PATHS[0]!)}.verified`); // intact file, lost sidecar
    const before = hf.requests.length;
    const run = await fetchGguf([...baseArgs(full()), "--manifest", manifestFile]);
    expect(run.code).toBe(0);
    const gets = hf.requests.slice(before);
    expect(gets.map((r) => r.path)).toEqual([PATHS[1]]);
    expect(gets[0]!.rangeStart).toBeNull();
    expect(run.stderr).toContain(
      `sha256 mismatch: expected ${shas[1]}, found ${corruptedSha}; moved it to ${corrupted}.bad`,
    );
    expect(sha256(`${corrupted}.bad`)).toBe(corruptedSha);
    expect(run.stdout).toMatch(/\[1\/4\] Q2\/Model-Q2-00001-of-00004\.gguf: sha256 ok, skipping/);
    expect(lastLine(run.stdout)).toBe(`FETCH_GGUF_RESULT verified=4 downloaded_bytes=${SIZES[1]}`);
    expect(run.stdout).toContain(`fetched 1 shard(s), ${SIZES[1]} bytes; skipped 3 verified shard(s)`);
    expectAllVerified(full());

    const reverify = await fetchGguf([...baseArgs(full()), "--manifest", manifestFile, "--reverify"]);
    expect(reverify.code).toBe(0);
    expect(reverify.stdout.match(/: hashing the existing file/g)).toHaveLength(4);
    expect(lastLine(reverify.stdout)).toBe("FETCH_GGUF_RESULT verified=4 downloaded_bytes=0");
    expect(hf.requests.length).toBe(before + 1);
  });

  it("never keeps a shard served corrupted: .bad, fetched once more from scratch", async () => {
    const dest = newDest("corrupt-serve");
    hf.corruptNextServe(PATHS[2]!);
    const run = await fetchGguf([...baseArgs(dest), "--manifest", manifestFile]);
    expect(run.code).toBe(0);
    const gets = hf.resolveGets(PATHS[2]!).filter((r) => r.url.includes("/resolve/"));
    const mine = gets.slice(-2);
    expect(mine.map((r) => [r.corrupted, r.rangeStart])).toEqual([
      [true, null],
      [false, null],
    ]);
    const final = join(dest, PATHS[2]!);
    expect(run.stderr).toMatch(
      new RegExp(
        `sha256 mismatch for ${final}: expected ${shas[2]}, found [0-9a-f]{64}; the file is now ${final}\\.bad`,
      ),
    );
    expect(existsSync(`${final}.bad`)).toBe(true);
    expect(sha256(`${final}.bad`)).not.toBe(shas[2]);
    expect(run.stdout).toContain("downloading it once more from scratch");
    expectAllVerified(dest);
    expect(lastLine(run.stdout)).toBe(`FETCH_GGUF_RESULT verified=4 downloaded_bytes=${total + SIZES[2]!}`);

    // Corrupted twice: exit 5, the shard never stands under its final name.
    const dest2 = newDest("corrupt-twice");
    const one = join(work, "one-shard.tsv");
    writeFileSync(one, manifestText.split("\n")[0] + "\n");
    hf.corruptNextServe(PATHS[0]!, 2);
    const twice = await fetchGguf([...baseArgs(dest2), "--manifest", one]);
    expect(twice.code).toBe(5);
    expect(twice.stderr).toMatch(
      new RegExp(`${PATHS[0]}: failed verification twice \\(expected sha256 ${shas[0]}, found [0-9a-f]{64}\\)`),
    );
    expect(existsSync(join(dest2, PATHS[0]!))).toBe(false);
    expect(existsSync(join(dest2, `${PATHS[0]}.verified`))).toBe(false);
    expect(existsSync(join(dest2, `${PATHS[0]}.bad`))).toBe(true);
  });

  it("resumes after kill -9 mid-shard without fetching finished shards or the received bytes again", async () => {
    const dest = newDest("resume");
    const partial3 = join(dest, `${PATHS[2]}.partial`);
    hf.setThrottle(2 * MB);
    const before = hf.requests.length;
    const first = startFetchGguf([
      ...baseArgs(dest),
      "--manifest",
      manifestFile,
      "--connections",
      "1",
      "--progress-seconds",
      "1",
    ]);
    await waitFor("shard 3 to be under way", () => fileSize(partial3) >= MB, 30_000);
    hf.setThrottle(MB / 4); // slow enough that shard 3 cannot finish before the kill, even on a busy machine
    const progressLine =
      /^\[3\/4\] Q2\/Model-Q2-00003-of-00004\.gguf \d+\.\d MiB \/ 4\.0 MiB \(\d+%\) \d+(\.\d)? (B|KiB|MiB)\/s ETA (\d+:\d\d|--:--)$/m;
    const totalLine =
      /^total: \d+\.\d MiB \/ 15\.0 MiB \(\d+%\) \d+(\.\d)? (B|KiB|MiB)\/s ETA (\d+:\d\d|--:--), 2 of 4 shard\(s\) verified$/m;
    await waitFor("a progress line for shard 3", () => progressLine.test(first.stdout()), 10_000);
    await waitFor("a total progress line", () => totalLine.test(first.stdout()), 10_000);

    // A second run while the first holds the lock fails fast.
    const locked = await fetchGguf([...baseArgs(dest), "--manifest", manifestFile]);
    expect(locked.code).toBe(7);
    expect(locked.stderr).toContain(`${dest}/.fetch-gguf.lock`);

    const kill = await onHost(
      `pkill -9 -f ${q(`${work}/host/[f]etch-gguf.sh`)}; pkill -9 -f ${q(`[c]url .*${dest}/`)}; true`,
    );
    expect(kill.code).toBe(0);
    const killed = await first.result;
    expect(killed.code).not.toBe(0);
    expect(killed.stdout).not.toContain("FETCH_GGUF_RESULT");
    const leftovers = await onHost(`pgrep -f ${q(`[c]url .*${dest}/`)} || true`);
    expect(leftovers.stdout).toBe("");
    hf.setThrottle(0);
    await waitFor("the server to see the killed transfer end", () => hf.requests.every((r) => r.done), 5_000);

    const have = fileSize(partial3);
    expect(have).toBeGreaterThan(0);
    expect(have).toBeLessThan(SIZES[2]!);
    expect(existsSync(join(dest, PATHS[0]!))).toBe(true);
    expect(existsSync(join(dest, PATHS[1]!))).toBe(true);
    expect(existsSync(join(dest, PATHS[2]!))).toBe(false);
    const firstRun = hf.requests.slice(before);
    expect(firstRun.filter((r) => r.path === PATHS[3])).toEqual([]);

    const mark = hf.requests.length;
    const second = await fetchGguf([...baseArgs(dest), "--manifest", manifestFile]);
    expect(second.code).toBe(0);
    const secondRun = hf.requests.slice(mark);
    expect(secondRun.filter((r) => r.path === PATHS[0] || r.path === PATHS[1])).toEqual([]);
    const resumed = secondRun.filter((r) => r.path === PATHS[2]);
    expect(resumed).toHaveLength(1);
    expect(resumed[0]).toMatchObject({ rangeStart: have, status: 206, bytesSent: SIZES[2]! - have });
    expect(second.stdout).toContain(`resuming at byte ${have} of ${SIZES[2]}`);
    const served3 = hf.requests
      .slice(before)
      .filter((r) => r.path === PATHS[2])
      .reduce((a, r) => a + r.bytesSent, 0);
    expect(served3).toBeGreaterThanOrEqual(SIZES[2]!);
    expect(served3).toBeLessThan(SIZES[2]! + MB); // about once, not twice
    expect(secondRun.filter((r) => r.path === PATHS[3]).map((r) => r.rangeStart)).toEqual([null]);
    expect(lastLine(second.stdout)).toBe(
      `FETCH_GGUF_RESULT verified=4 downloaded_bytes=${SIZES[2]! - have + SIZES[3]!}`,
    );
    expectAllVerified(dest);
  }, 60_000);

  it("moves a .partial larger than the manifest size to .bad and downloads the shard again", async () => {
    const dest = newDest("oversized");
    const partial = join(dest, `${PATHS[0]}.partial`);
    mkdirSync(join(dest, TIER), { recursive: true });
    writeFileSync(partial, randomBytes(SIZES[0]! + 10));
    const one = join(work, "first-shard.tsv");
    writeFileSync(one, manifestText.split("\n")[0] + "\n");
    const before = hf.requests.length;
    const run = await fetchGguf([...baseArgs(dest), "--manifest", one]);
    expect(run.code).toBe(0);
    expect(run.stdout).toContain(
      `${partial} has ${SIZES[0]! + 10} bytes, more than the manifest's ${SIZES[0]}: moving it to ${join(dest, PATHS[0]!)}.bad`,
    );
    expect(hf.requests.slice(before).map((r) => [r.path, r.rangeStart])).toEqual([[PATHS[0], null]]);
    expect(fileSize(`${join(dest, PATHS[0]!)}.bad`)).toBe(SIZES[0]! + 10);
    expect(sha256(join(dest, PATHS[0]!))).toBe(shas[0]);
  });

  it("stops with exit 4 before the first byte when the disk is too small", async () => {
    const dest = newDest("no-space");
    const df = spawnSync("df", ["--output=avail", "-B1", work], { encoding: "utf8" });
    const avail = Number(df.stdout.trim().split("\n").at(-1));
    expect(avail).toBeGreaterThan(0);
    const huge = Math.ceil(avail / 2) + 1;
    const file = join(work, "huge.tsv");
    writeFileSync(file, PATHS.map((p, k) => `${shas[k]}\t${huge}\t${p}`).join("\n") + "\n");
    const before = hf.requests.length;
    const run = await fetchGguf([...baseArgs(dest), "--manifest", file]);
    expect(run.code).toBe(4);
    expect(run.stderr).toContain(
      `not enough free disk space in ${dest}: 4 shard(s) still to download need ${4 * huge} bytes (`,
    );
    expect(run.stderr).toMatch(
      /need \d+ bytes \(\d+\.\d GiB\), available \d+ bytes \(\d+\.\d GiB\)\. Nothing was downloaded\./,
    );
    expect(hf.requests.slice(before)).toEqual([]);
    expect(readdirSync(dest)).toEqual([".fetch-gguf.lock"]);
  });

  it("retries a 503 with backoff but never a 404, naming the shard, URL and HTTP status", async () => {
    const dest = newDest("missing");
    const file = join(work, "missing.tsv");
    writeFileSync(file, `${manifestText.split("\n")[0]}\n${shas[0]}\t${SIZES[0]}\t${TIER}/not-there.gguf\n`);
    hf.faultNext(PATHS[0]!, { kind: "status", status: 503 }, 2);
    const before = hf.requests.length;
    const started = Date.now();
    const run = await fetchGguf([...baseArgs(dest), "--manifest", file, "--connections", "1"]);
    const elapsed = Date.now() - started;
    expect(run.code).toBe(6);
    const mine = hf.requests.slice(before);
    // 503 twice (backoff 2 s, then 4 s), then served; the 404 asked for once and never again.
    expect(mine.map((r) => [r.path, r.status])).toEqual([
      [PATHS[0], 503],
      [PATHS[0], 503],
      [PATHS[0], 200],
      [`${TIER}/not-there.gguf`, 404],
    ]);
    expect(run.stdout).toContain(
      `[1/2] ${PATHS[0]}: try 1 of 5 failed (curl exit 22, HTTP 503) at 0 B/s; 0 of ${SIZES[0]} bytes kept in ${join(dest, PATHS[0]!)}.partial; retrying in 2 s`,
    );
    expect(run.stdout).toContain(
      `[1/2] ${PATHS[0]}: try 2 of 5 failed (curl exit 22, HTTP 503) at 0 B/s; 0 of ${SIZES[0]} bytes kept in ${join(dest, PATHS[0]!)}.partial; retrying in 4 s`,
    );
    expect(sha256(join(dest, PATHS[0]!))).toBe(shas[0]);
    expect(run.stderr).toContain(
      `[2/2] ${TIER}/not-there.gguf: download failed (curl exit 22, HTTP 404: ${TIER}/not-there.gguf not found in ${REPO} at revision main) from ${hf.baseUrl}/${REPO}/resolve/main/${TIER}/not-there.gguf`,
    );
    expect(run.stderr).toContain("Not retried: this will not heal by itself.");
    expect(run.stdout).not.toContain("not-there.gguf: try");
    expect(elapsed).toBeLessThan(20_000);
  }, 60_000);

  it("resumes a connection dropped mid-shard (and a reply-less reset) within the same run, and verifies", async () => {
    const dest = newDest("dropped");
    const cut = MB + 5;
    hf.faultNext(PATHS[1]!, { kind: "drop", afterBytes: cut });
    hf.faultNext(PATHS[1]!, { kind: "reset" });
    const before = hf.requests.length;
    const run = await fetchGguf([...baseArgs(dest), "--manifest", manifestFile]); // default flags
    expect(run.stderr).toBe("");
    expect(run.code).toBe(0);
    const gets = hf.requests.slice(before).filter((r) => r.path === PATHS[1]);
    expect(
      gets.map((r) => ({ fault: r.fault, rangeStart: r.rangeStart, status: r.status, bytesSent: r.bytesSent })),
    ).toEqual([
      { fault: "drop", rangeStart: null, status: 200, bytesSent: cut },
      { fault: "reset", rangeStart: cut, status: 0, bytesSent: 0 },
      { fault: undefined, rangeStart: cut, status: 206, bytesSent: SIZES[1]! - cut },
    ]);
    const partial = `${join(dest, PATHS[1]!)}.partial`;
    expect(run.stdout).toContain(
      `[2/4] ${PATHS[1]}: try 1 of 5 failed (curl exit 18, the connection dropped before the end of the shard)`,
    );
    expect(run.stdout).toContain(`; ${cut} of ${SIZES[1]} bytes kept in ${partial}; retrying in 2 s`);
    expect(run.stdout).toContain(
      `[2/4] ${PATHS[1]}: try 2 of 5 failed (curl exit 52, the server closed the connection without a reply)`,
    );
    expect(run.stdout).toContain(
      `[2/4] ${PATHS[1]}: resuming at byte ${cut} of ${SIZES[1]} from ${hf.baseUrl}/${REPO}/resolve/main/${PATHS[1]} (try 3 of 5)`,
    );
    expectAllVerified(dest);
    expect(lastLine(run.stdout)).toBe(`FETCH_GGUF_RESULT verified=4 downloaded_bytes=${total}`);
  }, 60_000);

  it("aborts a 10 B/s trickle below the minimum rate, retries it, then fails naming shard, URL, rate and bytes kept", async () => {
    const dest = newDest("trickle");
    const one = join(work, "trickle-shard.tsv");
    writeFileSync(one, manifestText.split("\n")[0] + "\n");
    hf.faultNext(PATHS[0]!, { kind: "trickle", bytesPerSecond: 10 }, 3);
    const url = `${hf.baseUrl}/${REPO}/resolve/main/${PATHS[0]}`;
    const partial = `${join(dest, PATHS[0]!)}.partial`;
    const flags = [
      "--attempts",
      "3",
      "--min-rate-bytes-per-second",
      "1000",
      "--stall-seconds",
      "2",
      "--retry-delay",
      "1",
      "--retry-max-delay",
      "1",
    ];
    const before = hf.requests.length;
    const started = Date.now();
    const run = await fetchGguf([...baseArgs(dest), "--manifest", one, ...flags]);
    const elapsed = Date.now() - started;
    expect(run.code).toBe(6);
    const gets = hf.requests.slice(before);
    expect(gets.map((r) => r.fault)).toEqual(["trickle", "trickle", "trickle"]);
    expect(gets[0]!.rangeStart).toBeNull();
    expect(gets[1]!.rangeStart).toBe(gets[0]!.bytesSent);
    expect(gets[2]!.rangeStart).toBe(gets[0]!.bytesSent + gets[1]!.bytesSent);
    expect(
      run.stdout.match(
        /: try [12] of 3 failed \(curl exit 28, transfer too slow: \d+ B\/s on average, below --min-rate-bytes-per-second 1000 for --stall-seconds 2\) at \d+ B\/s; \d+ of 2097152 bytes kept in .*; retrying in 1 s$/gm,
      ),
    ).toHaveLength(2);
    const kept = fileSize(partial);
    expect(kept).toBeGreaterThan(0);
    expect(kept).toBe(gets.reduce((a, r) => a + r.bytesSent, 0));
    const message = new RegExp(
      `^fetch-gguf\\.sh: \\[1/1\\] ${PATHS[0]}: download failed 3 time\\(s\\) in a row \\(curl exit 28, transfer too slow: (\\d+) B/s on average, below --min-rate-bytes-per-second 1000 for --stall-seconds 2\\) from ${url.replace(/[.]/g, "\\.")}; curl: .*too slow.*; the last try ran at (\\d+) B/s\\. (\\d+) of ${SIZES[0]} bytes are kept in ${partial.replace(/[.]/g, "\\.")}; re-run to resume\\.$`,
      "m",
    );
    const m = message.exec(run.stderr);
    expect(m, run.stderr).not.toBeNull();
    expect(Number(m![1])).toBeGreaterThanOrEqual(1);
    expect(Number(m![1])).toBeLessThanOrEqual(20);
    expect(Number(m![3])).toBe(kept);
    expect(existsSync(join(dest, PATHS[0]!))).toBe(false);
    // Three tries of about 2-3 s each and two 1 s backoffs: bounded, nowhere near curl's old 300 s.
    expect(elapsed).toBeLessThan(25_000);

    // The bytes kept are resumed by the next run once the server behaves.
    const mark = hf.requests.length;
    const again = await fetchGguf([...baseArgs(dest), "--manifest", one, ...flags]);
    expect(again.code).toBe(0);
    expect(hf.requests.slice(mark).map((r) => [r.rangeStart, r.status])).toEqual([[kept, 206]]);
    expect(sha256(join(dest, PATHS[0]!))).toBe(shas[0]);
  }, 60_000);

  it("reports a disk that fills up mid-download as a full disk (exit 4), keeping the .partial", async () => {
    const disk = join(work, "small-disk");
    mkdirSync(disk);
    // A real 3 MiB filesystem: the 2 MiB shard fits when the run starts (the pre-flight check
    // passes), then something else fills the disk while the shard is being written.
    const mount = spawnSync("mount", ["-t", "tmpfs", "-o", "size=3m", "tmpfs", disk], { encoding: "utf8" });
    expect(mount.status, `mount -t tmpfs needs root: ${mount.stderr}`).toBe(0);
    try {
      const dest = join(disk, "models");
      const one = join(work, "disk-shard.tsv");
      writeFileSync(one, manifestText.split("\n")[0] + "\n");
      const partial = `${join(dest, PATHS[0]!)}.partial`;
      hf.faultNext(PATHS[0]!, { kind: "trickle", bytesPerSecond: 256 * 1024 });
      const before = hf.requests.length;
      const running = startFetchGguf([...baseArgs(dest), "--manifest", one]);
      await waitFor("the shard to be under way", () => fileSize(partial) >= 128 * 1024, 15_000);
      const filler = openSync(join(disk, "filler"), "w");
      const block = Buffer.alloc(64 * 1024, 1);
      try {
        for (;;) writeSync(filler, block);
      } catch (error) {
        expect((error as NodeJS.ErrnoException).code).toBe("ENOSPC");
      } finally {
        closeSync(filler);
      }
      const run = await running.result;
      expect(run.code).toBe(4);
      const kept = fileSize(partial);
      expect(kept).toBeGreaterThanOrEqual(128 * 1024);
      expect(kept).toBeLessThan(SIZES[0]!);
      expect(run.stderr).toContain(
        `fetch-gguf.sh: disk full in ${dest}: [1/1] ${PATHS[0]}: writing ${partial} stopped at ${kept} of ${SIZES[0]} bytes (curl exit 23, could not write; `,
      );
      expect(run.stderr).toContain(
        `The ${kept} bytes received stay in ${partial}: free space in ${dest}, then re-run to resume.`,
      );
      expect(hf.requests.slice(before).filter((r) => r.path === PATHS[0])).toHaveLength(1); // not retried
      expect(existsSync(join(dest, PATHS[0]!))).toBe(false);

      // Space freed: the next run resumes from the bytes kept.
      rmSync(join(disk, "filler"));
      const mark = hf.requests.length;
      const again = await fetchGguf([...baseArgs(dest), "--manifest", one]);
      expect(again.code).toBe(0);
      expect(hf.requests.slice(mark).map((r) => [r.rangeStart, r.status])).toEqual([[kept, 206]]);
      expect(sha256(join(dest, PATHS[0]!))).toBe(shas[0]);
    } finally {
      unmount(disk);
    }
  }, 60_000);

  describe("--resolve and --token-stdin", () => {
    let secured: HfServer;
    beforeAll(async () => {
      secured = await startHfServer({ root, repo: REPO, token: TOKEN });
    });
    afterAll(async () => {
      await secured?.stop();
    });

    it("fails clearly without a token (401), on a folder without .gguf files, and on a missing folder", async () => {
      const dest = newDest("resolve-fail");
      const resolve = await fetchGguf([...baseArgs(dest, secured), "--resolve", TIER]);
      expect(resolve.code).toBe(3);
      expect(resolve.stderr).toContain(
        `HTTP 401 from ${secured.baseUrl}/api/models/${REPO}/tree/main/${TIER}: the Hugging Face token is missing or wrong`,
      );
      const download = await fetchGguf([...baseArgs(dest, secured), "--manifest", manifestFile]);
      expect(download.code).toBe(6);
      expect(download.stderr).toMatch(
        /\[1\/4\] Q2\/Model-Q2-00001-of-00004\.gguf: download failed \(curl exit 22, HTTP 401: the Hugging Face token is missing or wrong/,
      );
      expect(download.stderr).toContain(`${secured.baseUrl}/${REPO}/resolve/main/${PATHS[0]}`);
      expect(secured.requests.every((r) => r.status === 401 && !r.authorized)).toBe(true);
      // 401 is not retried: no path asked for twice, and the run says so.
      const paths = secured.requests.filter((r) => r.kind === "resolve").map((r) => r.url);
      expect(paths.length).toBeGreaterThan(0);
      expect(new Set(paths).size).toBe(paths.length);
      expect(download.stderr).toContain("Not retried: this will not heal by itself.");

      const docs = await fetchGguf([...baseArgs(dest), "--resolve", "docs"]);
      expect(docs.code).toBe(3);
      expect(docs.stderr).toContain(
        `folder docs: no .gguf files listed at ${hf.baseUrl}/api/models/${REPO}/tree/main/docs`,
      );
      const nope = await fetchGguf([...baseArgs(dest), "--resolve", "nope"]);
      expect(nope.code).toBe(3);
      expect(nope.stderr).toContain(
        `cannot list folder nope: HTTP 404 from ${hf.baseUrl}/api/models/${REPO}/tree/main/nope`,
      );
    });

    it("resolves the folder through the tree API with the token, which never touches disk, argv or environ", async () => {
      const dest = newDest("resolve");
      secured.setThrottle(3 * MB);
      // A dropped transfer on the way: the retry must carry the token again.
      secured.faultNext(PATHS[2]!, { kind: "drop", afterBytes: 100_000 });
      const before = secured.requests.length;
      let done = false;
      const run = fetchGguf([...baseArgs(dest, secured), "--resolve", TIER, "--token-stdin"], `${TOKEN}\n`).finally(
        () => (done = true),
      );
      const samples: string[] = [];
      const leaks: string[] = [];
      const hostTmp = join(work, "host-tmp");
      let filesSeen = 0;
      while (!done) {
        samples.push((await onHost("ps -eo args")).stdout);
        // Every process of this test's work tree: argv and environment.
        for (const pid of readdirSync("/proc").filter((d) => /^\d+$/.test(d))) {
          try {
            const cmdline = readFileSync(`/proc/${pid}/cmdline`, "utf8");
            if (!cmdline.includes(work)) continue;
            if (cmdline.includes(TOKEN)) leaks.push(`argv of ${pid}: ${cmdline}`);
            if (readFileSync(`/proc/${pid}/environ`, "utf8").includes(TOKEN))
              leaks.push(`environ of ${pid}: ${cmdline}`);
          } catch {
            // the process ended meanwhile
          }
        }
        // Every file under the script's temp dir while it runs.
        for (const f of listTree(hostTmp)) {
          filesSeen++;
          try {
            if (readFileSync(f).includes(TOKEN)) leaks.push(`file ${f}`);
          } catch {
            // removed meanwhile
          }
        }
        await sleep(50);
      }
      const result = await run;
      secured.setThrottle(0);
      for (const f of [...listTree(hostTmp), ...listTree(dest)]) {
        if (readFileSync(f).includes(TOKEN)) leaks.push(`file ${f}`);
      }
      expect(leaks).toEqual([]);
      expect(filesSeen).toBeGreaterThan(0); // the scan saw the script's work files
      expect(samples.some((s) => s.includes(`${secured.baseUrl}/${REPO}/resolve/main/`))).toBe(true); // caught curl running
      expect(samples.filter((s) => s.includes(TOKEN))).toEqual([]);
      expect(result.stderr).toBe("");
      expect(result.code).toBe(0);
      expect(result.stdout).toContain(
        `# manifest resolved from ${secured.baseUrl}/api/models/${REPO}/tree/main/${TIER}: 4 shard(s), ${total} bytes`,
      );
      expect(result.stdout).toContain(manifestText);
      expect(result.stdout).toContain(`[3/4] ${PATHS[2]}: try 1 of 5 failed (curl exit 18,`);
      const mine = secured.requests.slice(before);
      expect(mine.map((r) => r.kind).sort()).toEqual(["resolve", "resolve", "resolve", "resolve", "resolve", "tree"]);
      expect(mine.every((r) => r.authorized)).toBe(true);
      expect(mine.filter((r) => r.path === PATHS[2]).map((r) => r.rangeStart)).toEqual([null, 100_000]);
      expectAllVerified(dest);
      expect(lastLine(result.stdout)).toBe(`FETCH_GGUF_RESULT verified=4 downloaded_bytes=${total}`);

      // The only place the token is spelled out is the curl config printed into a pipe.
      const source = readFileSync(SCRIPT, "utf8");
      const code = source.split("\n").filter((l) => !/^\s*#/.test(l));
      expect(code.filter((l) => /Bearer/.test(l)).map((l) => l.trim())).toEqual([
        `auth_config() { printf 'header = "Authorization: Bearer %s"\\n' "$TOKEN"; }`,
      ]);
      expect(code.filter((l) => /auth_config/.test(l)).map((l) => l.trim())).toEqual([
        `auth_config() { printf 'header = "Authorization: Bearer %s"\\n' "$TOKEN"; }`,
        `curl --config <(auth_config) "$@" >"$out" 2>"$errf" &`,
      ]);
      expect(source).not.toMatch(/export\s+TOKEN|auth-header/);
    }, 60_000);
  });
});
