/**
 * `npm run plan -- --stack X --diff REF` against a real git repository: a copy of this kit's files
 * (as they are now, committed in a temporary repository), commits that change a stack, and side
 * refs whose cli/plan.ts is an "older kit" (another JSON shape, a crash, a planner that hangs). Every
 * run checks that no worktree and no temporary directory is left behind, Ctrl-C included.
 */
import { spawn, spawnSync, type SpawnSyncReturns } from "node:child_process";
import {
  copyFileSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
  existsSync,
} from "node:fs";
import { open } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { PlanDiffJson } from "../../planner/diff";

const root = join(__dirname, "..", "..");
let dir: string;
/** The temporary repository: HEAD~2 = the kit now, HEAD~1 = cpu-ddr5 broken, HEAD = fixed, 64K context, a new stack. */
let repo: string;
/** TMPDIR of every CLI run: the worktree parent is made here, so "nothing left" means none in it. */
let temp: string;

function git(...args: string[]): string {
  const run = spawnSync("git", ["-C", repo, ...args], { encoding: "utf8" });
  if (run.status !== 0) throw new Error(`git ${args.join(" ")}: ${run.stderr}`);
  return run.stdout.trim();
}

/** A commit beside HEAD (HEAD its parent, HEAD itself unmoved) with `files` replaced, tagged `tag`. */
function sideRef(tag: string, files: Record<string, string>): void {
  const index = join(dir, `index-${tag}`);
  const env = { ...process.env, GIT_INDEX_FILE: index };
  const plumb = (args: string[], input?: string) => {
    const run = spawnSync("git", ["-C", repo, ...args], { encoding: "utf8", env, input });
    if (run.status !== 0) throw new Error(`git ${args.join(" ")}: ${run.stderr}`);
    return run.stdout.trim();
  };
  plumb(["read-tree", "HEAD"]);
  for (const [path, content] of Object.entries(files))
    plumb([
      "update-index",
      "--add",
      "--cacheinfo",
      `100644,${plumb(["hash-object", "-w", "--stdin"], content)},${path}`,
    ]);
  const commit = plumb(["commit-tree", plumb(["write-tree"]), "-p", "HEAD", "-m", tag]);
  plumb(["tag", tag, commit]);
}

function plan(args: string[], env: Record<string, string> = {}): SpawnSyncReturns<string> {
  return spawnSync(join(root, "node_modules", ".bin", "tsx"), [join(repo, "cli", "plan.ts"), ...args], {
    cwd: repo,
    encoding: "utf8",
    env: { ...process.env, TMPDIR: temp, ...env },
    timeout: 120_000,
  });
}

/** The worktrees git knows of: only the repository itself once a run is over. */
function worktrees(): string[] {
  return git("worktree", "list", "--porcelain")
    .split("\n")
    .filter((line) => line.startsWith("worktree "));
}

function expectNothingLeft(): void {
  expect(worktrees()).toEqual([`worktree ${repo}`]);
  // tsx keeps a cache of its own in TMPDIR (tsx-UID); the worktree parents are ours.
  expect(readdirSync(temp).filter((name) => name.startsWith("kimi-kit-plan-diff-"))).toEqual([]);
}

const CTX = /^(\s+contextLength:) 32768$/m;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "kimi-kit-plan-diff-test-"));
  repo = join(dir, "repo");
  temp = join(dir, "tmp");
  mkdirSync(temp);
  // The kit as it is now (tracked and new files, not ignored ones), so the test runs this tree's code.
  const files = spawnSync("git", ["-C", root, "ls-files", "-z", "--cached", "--others", "--exclude-standard"], {
    encoding: "utf8",
  })
    .stdout.split("\0")
    .filter(Boolean);
  for (const file of files) {
    if (!existsSync(join(root, file))) continue; // deleted in the working tree, still in the index
    mkdirSync(dirname(join(repo, file)), { recursive: true });
    copyFileSync(join(root, file), join(repo, file));
  }
  spawnSync("git", ["init", "--quiet", "--initial-branch=main", repo]);
  // The kit's node_modules, linked: .gitignore's "node_modules/" matches a directory, not a link, so say it here.
  symlinkSync(join(root, "node_modules"), join(repo, "node_modules"), "dir");
  writeFileSync(join(repo, ".git", "info", "exclude"), "/node_modules\n");
  for (const [key, value] of [
    ["user.name", "plan-diff test"],
    ["user.email", "plan-diff@test.invalid"],
    ["commit.gpgsign", "false"],
  ] as const)
    git("config", key, value);
  git("add", "-A");
  git("commit", "--quiet", "-m", "the kit");

  const stackFile = join(repo, "stacks", "Pulumi.cpu-ddr5.yaml");
  const original = readFileSync(stackFile, "utf8");
  expect(original).toMatch(CTX);
  writeFileSync(stackFile, original.replace(CTX, "$1 -5"));
  git("commit", "--quiet", "-am", "cpu-ddr5: a context length no schema accepts");
  writeFileSync(stackFile, original.replace(CTX, "$1 65536"));
  writeFileSync(join(repo, "stacks", "Pulumi.fresh.yaml"), original);
  git("add", "-A");
  git("commit", "--quiet", "-m", "cpu-ddr5: 64K context; a new stack");

  // "Older kits" at side refs: their own cli/plan.ts is what --diff must run.
  const oldPlan = {
    stack: "cpu-ddr5",
    fits: true,
    mode: "cpu-only",
    devices: [{ name: "CPU", label: "system RAM", capacityBytes: 384 * 1024 ** 3, plannedBytes: 300 * 1024 ** 3 }],
    projection: { decodeTokensPerSecond: 3 },
  };
  sideRef("old-shape", { "cli/plan.ts": `process.stdout.write(${JSON.stringify(JSON.stringify(oldPlan))});\n` });
  sideRef("crashes", { "cli/plan.ts": `throw new RangeError("the old planner gave up");\n` });
  // Tells the test it is running (its pid, through a FIFO when one is named), then never finishes.
  sideRef("hangs", {
    "cli/plan.ts": `import { writeFileSync } from "node:fs";\nif (process.env.PLAN_DIFF_TEST_FIFO) writeFileSync(process.env.PLAN_DIFF_TEST_FIFO, \`\${process.pid}\\n\`);\nsetInterval(() => {}, 1 << 30);\n`,
  });
}, 120_000);

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

// Each test runs the CLI once to three times (a few seconds each): room for a loaded 2-core CI machine.
describe("npm run plan -- --diff", { timeout: 120_000 }, () => {
  it("text: the 64K context against HEAD~2 — --ctx-size and KV named, exit 3, no worktree left", () => {
    const run = plan(["--stack", "cpu-ddr5", "--diff", "HEAD~2"]);
    expect(run.stderr).toBe("");
    expect(run.status).toBe(3);
    const sha = git("rev-parse", "--short=7", "HEAD~2");
    expect(run.stdout.split("\n")[0]).toBe(`Plan diff, stack cpu-ddr5: HEAD~2 (${sha}) → working tree`);
    expect(run.stdout).toContain("Material: yes — llama-server flags: --ctx-size");
    expect(run.stdout).toContain("changed  --ctx-size: 32768 → 65536");
    // Kimi K2.6's MLA KV: 61 layers × (512 + 64) × 2 bytes per token, 32768 → 65536 tokens.
    expect(run.stdout).toContain(
      `KV ${((61 * 576 * 2 * 32768) / 1024 ** 3).toFixed(2)} GiB → ${((61 * 576 * 2 * 65536) / 1024 ** 3).toFixed(2)} GiB`,
    );
    expectNothingLeft();
  });

  it("markdown: the marker first, then the table; json: the same diff for tools", () => {
    const markdown = plan(["--stack", "cpu-ddr5", "--diff", "HEAD~2", "--format", "markdown"]);
    expect(markdown.status).toBe(3);
    const lines = markdown.stdout.split("\n");
    expect(lines[0]).toBe("<!-- kimi-kit-plan-diff:cpu-ddr5 -->");
    expect(lines).toContain("| **verdict** | FITS (cpu-only) | FITS (cpu-only) | unchanged |");
    expect(markdown.stdout).toContain("- --ctx-size 32768\n+ --ctx-size 65536");
    const json = plan(["--stack", "cpu-ddr5", "--diff", "HEAD~2", "--json"]);
    expect(json.status).toBe(3);
    const diff = JSON.parse(json.stdout) as PlanDiffJson;
    expect(diff.kind).toBe("compared");
    expect(diff.material).toBe(true);
    expect(diff.flags).toContainEqual({ flag: "--ctx-size", before: ["32768"], after: ["65536"] });
    expect(diff.before.label).toBe(`HEAD~2 (${git("rev-parse", "--short=7", "HEAD~2")})`);
    expectNothingLeft();
  });

  it("the working tree against HEAD: nothing material, exit 0", () => {
    const run = plan(["--stack", "cpu-ddr5", "--diff", "HEAD"]);
    expect(run.status).toBe(0);
    expect(run.stdout).toContain("Material: no");
    expect(run.stdout).toContain("llama-server flags: unchanged");
    expectNothingLeft();
  });

  it("an uncommitted change counts: the working tree is the after side", () => {
    const stackFile = join(repo, "stacks", "Pulumi.cpu-ddr5.yaml");
    const committed = readFileSync(stackFile, "utf8");
    try {
      writeFileSync(stackFile, committed.replace("tier: UD-Q2_K_XL", "tier: UD-Q4_K_XL"));
      const run = plan(["--stack", "cpu-ddr5", "--diff", "HEAD"]);
      expect(run.status).toBe(3);
      expect(run.stdout.split("\n")[1]).toMatch(/^VERDICT CHANGED: FITS \(cpu-only\) → DOES NOT FIT — NOW REFUSED: /);
    } finally {
      writeFileSync(stackFile, committed);
    }
    expectNothingLeft();
  });

  it("an unknown ref: one line, exit 2, nothing created", () => {
    const run = plan(["--stack", "cpu-ddr5", "--diff", "nonexistent-ref"]);
    expect(run.status).toBe(2);
    expect(run.stdout).toBe("");
    expect(run.stderr).toBe('--diff: unknown git ref "nonexistent-ref" (no commit by that name in this repository)\n');
    expectNothingLeft();
  });

  it("a stack added after the ref is a new stack, not an error", () => {
    const run = plan(["--stack", "fresh", "--diff", "HEAD~1"]);
    expect(run.status).toBe(3);
    expect(run.stdout).toContain(
      `new stack: stacks/Pulumi.fresh.yaml does not exist at HEAD~1 (${git("rev-parse", "--short=7", "HEAD~1")})`,
    );
    expect(run.stdout).toContain("Verdict: FITS (cpu-only)");
    expectNothingLeft();
  });

  it("a stack neither at the ref nor here: one line, exit 2", () => {
    const run = plan(["--stack", "nowhere", "--diff", "HEAD~1"]);
    expect(run.status).toBe(2);
    expect(run.stderr.trim().split("\n")).toHaveLength(1);
    expect(run.stderr).toContain("no stack file stacks/Pulumi.nowhere.yaml at HEAD~1");
  });

  it("a side the ref's kit cannot plan is 'unreadable at REF: reason'; the command still diffs", () => {
    const run = plan(["--stack", "cpu-ddr5", "--diff", "HEAD~1"]);
    expect(run.status).toBe(3);
    const sha = git("rev-parse", "--short=7", "HEAD~1");
    expect(run.stdout).toMatch(
      new RegExp(
        `^unreadable at HEAD~1 \\(${sha}\\): stack cpu-ddr5: the configuration is invalid: .*serving\\.contextLength: found -5.* \\(exit 1\\)$`,
        "m",
      ),
    );
    expect(run.stdout).toContain("Verdict: FITS (cpu-only)");
    const crashed = plan(["--stack", "cpu-ddr5", "--diff", "crashes"]);
    expect(crashed.status).toBe(3);
    expect(crashed.stdout).toMatch(
      /^unreadable at crashes \([0-9a-f]{7}\): RangeError: the old planner gave up \(exit 1\)$/m,
    );
    expectNothingLeft();
  });

  it("runs the ref's own code: an older JSON shape is compared where it can be and the rest is named", () => {
    const run = plan(["--stack", "cpu-ddr5", "--diff", "old-shape"]);
    expect(run.stderr).toBe("");
    expect(run.status).toBe(3);
    // The old kit's figures (300 GiB, 3 tok/s) can only have come from the ref's cli/plan.ts.
    expect(run.stdout).toMatch(/CPU system RAM \(DDR5-4800\): 300\.0 GiB of 384\.0 GiB → \d+\.\d GiB of 384\.0 GiB/);
    // The after side is this tree's own projection (checked elsewhere); here only the old side's figure matters.
    expect(run.stdout).toMatch(/decode @4\.1K depth: 3\.00 tok\/s → \d+\.\d{2} tok\/s/);
    expect(run.stdout).toContain("monthly cost: unknown → $177.21");
    expect(run.stdout).toContain("  - llama-server flags: old-shape");
    expect(run.stdout).toContain("  - costs: old-shape");
    expectNothingLeft();
  });

  it("a planner that does not finish is stopped at the timeout: unreadable, worktree removed", () => {
    const run = plan(["--stack", "cpu-ddr5", "--diff", "hangs"], { KIMI_KIT_PLAN_DIFF_TIMEOUT_S: "2" });
    expect(run.status).toBe(3);
    expect(run.stdout).toMatch(/^unreadable at hangs \([0-9a-f]{7}\): planning took longer than 2 s and was stopped$/m);
    expectNothingLeft();
  });

  it("Ctrl-C while the old planner runs: the planner is stopped, the worktree removed, exit 130", async () => {
    const fifo = join(dir, "ready.fifo");
    expect(spawnSync("mkfifo", [fifo]).status).toBe(0);
    // Its own process group, as a shell gives a foreground job: the signal goes to the whole group, as Ctrl-C does.
    // node itself loads tsx (no tsx parent process relaying the signal and racing the child's last write).
    const cli = spawn(
      process.execPath,
      ["--import", "tsx", join(repo, "cli", "plan.ts"), "--stack", "cpu-ddr5", "--diff", "hangs"],
      {
        cwd: repo,
        env: { ...process.env, TMPDIR: temp, PLAN_DIFF_TEST_FIFO: fifo },
        detached: true,
        stdio: ["ignore", "pipe", "pipe"],
      },
    );
    let stderr = "";
    cli.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    const exited = new Promise<number | null>((resolve) => cli.on("close", (code) => resolve(code)));
    // The old planner writes its pid once it runs; if the CLI ends first, the race says so.
    const handle = await open(fifo, "r");
    const pid = Number((await Promise.race([handle.readFile("utf8"), exited.then(() => "")])).trim());
    await handle.close();
    expect(pid, `the CLI ended before the old planner ran: ${stderr}`).toBeGreaterThan(0);
    expect(worktrees()).toHaveLength(2);
    process.kill(-cli.pid!, "SIGINT");
    expect(await exited).toBe(130);
    expect(stderr).toContain("--diff: stopped by SIGINT; the temporary worktree was removed");
    expectNothingLeft();
    // The old planner is gone (or a zombie nobody has reaped yet: no longer running either way).
    const state = existsSync(`/proc/${pid}/status`)
      ? /^State:\s+(\S)/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1]
      : "gone";
    expect(["gone", "Z"]).toContain(state);
  });
});

describe("npm run plan -- --diff-stack", { timeout: 120_000 }, () => {
  it("two stacks of one tree: the refused one named first, exit 3", () => {
    const run = plan(["--stack", "cpu-ddr5", "--diff-stack", "cpu-ddr5-q4", "--format", "markdown"]);
    expect(run.status).toBe(3);
    const lines = run.stdout.split("\n");
    expect(lines[0]).toBe("<!-- kimi-kit-plan-diff:cpu-ddr5..cpu-ddr5-q4 -->");
    expect(lines[1]).toBe("### Plan diff: stack `cpu-ddr5` → stack `cpu-ddr5-q4`");
    expect(lines.slice(2, 6).join("\n")).toMatch(
      /> \*\*Verdict changed: FITS \(cpu-only\) → DOES NOT FIT \(now refused\)\.\*\*/,
    );
    expect(worktrees()).toEqual([`worktree ${repo}`]);
  });

  it("bad usage is one line and exit 2: an unknown stack, both --diff and --diff-stack, an unknown --format", () => {
    const unknown = plan(["--stack", "cpu-ddr5", "--diff-stack", "nope"]);
    expect(unknown.status).toBe(2);
    expect(unknown.stderr.trim().split("\n")).toEqual([
      expect.stringContaining("no stack file stacks/Pulumi.nope.yaml"),
    ]);
    const both = plan(["--stack", "cpu-ddr5", "--diff", "HEAD", "--diff-stack", "cpu-ddr5-q4"]);
    expect(both.status).toBe(2);
    expect(both.stderr.split("\n")[0]).toBe(
      "--diff and --diff-stack: one at a time (a ref of one stack, or two stacks of this tree)",
    );
    const format = plan(["--stack", "cpu-ddr5", "--diff-stack", "cpu-ddr5-q4", "--format", "html"]);
    expect(format.status).toBe(2);
    expect(format.stderr).toBe('--format: found "html"; allowed: text, markdown or json\n');
  });
});
