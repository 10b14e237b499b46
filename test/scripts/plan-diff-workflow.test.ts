/**
 * The plan-diff workflows (.github/workflows/plan-diff.yml computes, plan-diff-comment.yml posts):
 *
 * - actionlint v1.7.12 (tools/install-actionlint.sh; it runs shellcheck on every `run:` block) finds
 *   nothing in them, and does find each of three deliberate breakages in a copy (so a silent or
 *   shellcheck-less actionlint cannot pass this test);
 * - their shape holds the security split: the pull_request job has a read-only token and no
 *   secrets; the workflow_run job never checks out, installs or runs the pull request's code, and
 *   checks the artifact's pull request number;
 * - their `run:` blocks, taken from the YAML and run with the runner's own bash invocation, do the
 *   job end to end: the diff step in a scratch git repository whose HEAD is a merge commit like
 *   refs/pull/N/merge, the comment step against a loopback fake of GitHub's API.
 *
 * Until `npm run plan -- --stack X --diff REF --format markdown` lands, the scratch repository's
 * `plan` script is a stand-in with that interface (exit 0 nothing material, 3 material, 1 failure,
 * 2 unknown ref; markdown starting with `<!-- kimi-kit-plan-diff:STACK -->`).
 */
import { spawn, spawnSync } from "node:child_process";
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  unlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { delimiter, dirname, join, resolve } from "node:path";
import { parse } from "yaml";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BODY_BUDGET, composeBody, selectStacks, type StackDiff } from "../../tools/plan-diff-body";
import { MARKER } from "../../tools/plan-diff-comment";
import { startGithubFake, type GithubFake } from "../support/github-fake";

const ROOT = resolve(__dirname, "../..");
const WORKFLOWS = join(ROOT, ".github/workflows");
const DIFF_YML = join(WORKFLOWS, "plan-diff.yml");
const COMMENT_YML = join(WORKFLOWS, "plan-diff-comment.yml");
/** Node 22 (this test's own) first, so the steps' `node`, `npm` and `npx` are the workflow's Node 22. */
const PATH = [dirname(process.execPath), join(ROOT, "node_modules/.bin"), process.env.PATH].join(delimiter);

interface Step {
  name?: string;
  uses?: string;
  run?: string;
  with?: Record<string, unknown>;
  env?: Record<string, string>;
}
interface Job {
  if?: string;
  permissions?: Record<string, string>;
  steps: Step[];
}
interface Workflow {
  name: string;
  on: Record<string, unknown>;
  permissions?: Record<string, string>;
  jobs: Record<string, Job>;
}

const load = (file: string) => parse(readFileSync(file, "utf8")) as Workflow;
const only = (workflow: Workflow): Job => {
  expect(Object.keys(workflow.jobs)).toHaveLength(1);
  return Object.values(workflow.jobs)[0]!;
};
const stepNamed = (job: Job, name: RegExp): Step => {
  const step = job.steps.find((candidate) => name.test(candidate.name ?? ""));
  expect(step, `a step named ${name}`).toBeDefined();
  return step!;
};

let scratch: string;
beforeAll(() => {
  scratch = mkdtempSync(join(tmpdir(), "kimi-kit-plan-diff-workflow-"));
});
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

describe("actionlint", () => {
  let actionlint: string;

  beforeAll(() => {
    // Builds once into ~/.cache/kimi-kit (bash .ci/run does it first); a cached binary is reused.
    const install = spawnSync("bash", [join(ROOT, "tools/install-actionlint.sh")], {
      encoding: "utf8",
      timeout: 600_000,
    });
    expect(install.status, install.stderr).toBe(0);
    actionlint = install.stdout.trim().split("\n").pop()!;
  }, 620_000);

  it("installs idempotently: a second run builds nothing and prints the same binary", () => {
    const again = spawnSync("bash", [join(ROOT, "tools/install-actionlint.sh")], { encoding: "utf8" });
    expect(again.status).toBe(0);
    expect(again.stdout.trim()).toBe(actionlint);
    expect(again.stderr).toContain("actionlint v1.7.12 already built");
    expect(spawnSync(actionlint, ["-version"], { encoding: "utf8" }).stdout.split("\n")[0]).toBe("v1.7.12");
    expect(spawnSync("bash", [join(ROOT, "tools/install-actionlint.sh"), "--nope"], { encoding: "utf8" }).status).toBe(
      2,
    );
  });

  it("finds nothing in .github/workflows/*.yml, shellcheck included", () => {
    expect(
      spawnSync("shellcheck", ["--version"]).status,
      "shellcheck on PATH (actionlint runs it on run: blocks)",
    ).toBe(0);
    const files = ["plan-diff.yml", "plan-diff-comment.yml"].map((file) => join(WORKFLOWS, file));
    const result = spawnSync(actionlint, ["-no-color", ...files], { cwd: ROOT, encoding: "utf8" });
    expect(result.stdout + result.stderr).toBe("");
    expect(result.status).toBe(0);
  });

  it("fails on a broken copy: an unquoted variable (shellcheck), an untrusted expression in a script, an unknown key", () => {
    const original = readFileSync(DIFF_YML, "utf8");
    const breakages: [string, string, string, RegExp][] = [
      [
        "shellcheck",
        '"$RUNNER_TEMP/plan-diff/body.md"',
        "$RUNNER_TEMP/plan-diff/body.md",
        /shellcheck reported issue in this script: SC2086/,
      ],
      [
        "expression",
        '--pr "$PR_NUMBER"',
        '--pr "${{ github.event.pull_request.title }}"',
        /"github\.event\.pull_request\.title" is potentially untrusted/,
      ],
      ["syntax", "timeout-minutes: 30", "timeout-minute: 30", /unexpected key "timeout-minute" for "job" section/],
    ];
    for (const [what, from, to, finding] of breakages) {
      expect(original, what).toContain(from);
      const dir = join(scratch, `broken-${what}`, ".github", "workflows");
      mkdirSync(dir, { recursive: true });
      writeFileSync(join(dir, "plan-diff.yml"), original.replace(from, to));
      const result = spawnSync(actionlint, ["-no-color", join(dir, "plan-diff.yml")], {
        cwd: dirname(dirname(dir)),
        encoding: "utf8",
      });
      expect(result.status, what).toBe(1);
      expect(result.stdout, what).toMatch(finding);
    }
  });
});

describe("the two-workflow split (GitHub Security Lab: preventing pwn requests)", () => {
  const diff = load(DIFF_YML);
  const comment = load(COMMENT_YML);
  const diffText = readFileSync(DIFF_YML, "utf8");
  const commentText = readFileSync(COMMENT_YML, "utf8");

  it("plan-diff runs on pull_request for stacks/, catalog/, locks/, planner/ with a read-only token and no secrets", () => {
    expect(Object.keys(diff.on)).toEqual(["pull_request"]);
    expect((diff.on.pull_request as { paths: string[] }).paths).toEqual([
      "stacks/**",
      "catalog/**",
      "locks/**",
      "planner/**",
    ]);
    expect(diff.permissions).toEqual({ contents: "read" });
    expect(only(diff).permissions).toBeUndefined();
    expect(diffText).not.toMatch(/secrets\.|pull_request_target|github\.token/);
    const checkout = stepNamed(only(diff), /^Check out/);
    expect(checkout.with).toMatchObject({ "fetch-depth": 0, "persist-credentials": false });
    expect(stepNamed(only(diff), /Set up Node/).with).toMatchObject({ "node-version": 22 });
    expect(stepNamed(only(diff), /Install/).run?.trim()).toMatch(/^npm ci\b/);
    const upload = stepNamed(only(diff), /Upload/);
    expect(upload.uses).toMatch(/^actions\/upload-artifact@/);
    expect(upload.with).toMatchObject({ name: "plan-diff", "if-no-files-found": "error" });
  });

  it("plan-diff-comment runs on workflow_run of plan-diff, may write pull requests, and never runs the pull request's code", () => {
    expect(comment.on).toEqual({ workflow_run: { workflows: [diff.name], types: ["completed"] } });
    expect(comment.permissions).toEqual({});
    const job = only(comment);
    expect(job.permissions).toEqual({ actions: "read", contents: "read", "pull-requests": "write" });
    expect(job.if).toBe(
      "github.event.workflow_run.event == 'pull_request' && github.event.workflow_run.conclusion == 'success'",
    );
    // The only checkout is the default branch; nothing names the pull request's head as a ref.
    const checkouts = job.steps.filter((step) => step.uses?.startsWith("actions/checkout@"));
    expect(checkouts).toHaveLength(1);
    expect(checkouts[0]!.with).toMatchObject({
      ref: "${{ github.event.repository.default_branch }}",
      "persist-credentials": false,
    });
    // The parsed workflow (comments gone): no pull request ref anywhere, no package manager, no tsx.
    expect(JSON.stringify(comment)).not.toMatch(/head_branch|pull_request\.head|refs\/pull|\bnpm\b|\bnpx\b|\btsx\b/);
    const download = stepNamed(job, /Download/);
    expect(download.with).toMatchObject({
      name: "plan-diff",
      "run-id": "${{ github.event.workflow_run.id }}",
      path: "${{ runner.temp }}/plan-diff",
    });
    const post = stepNamed(job, /comment/);
    expect(post.run).toMatch(/node [^\n]*tools\/plan-diff-comment\.ts/);
    expect(post.run).toContain('--head-sha "$HEAD_SHA" --run-prs "$RUN_PRS"');
    expect(post.env).toMatchObject({
      HEAD_SHA: "${{ github.event.workflow_run.head_sha }}",
      RUN_PRS: "${{ join(github.event.workflow_run.pull_requests.*.number, ' ') }}",
    });
    // No expression inside a script: untrusted values reach the shell only through env.
    for (const step of job.steps) expect(step.run ?? "").not.toContain("${{");
  });

  it("both cite the Security Lab article and pin every action to a full commit SHA", () => {
    for (const [text, workflow] of [
      [diffText, diff],
      [commentText, comment],
    ] as const) {
      expect(text).toContain("https://securitylab.github.com/resources/github-actions-preventing-pwn-requests/");
      const uses = Object.values(workflow.jobs)
        .flatMap((job) => job.steps)
        .map((step) => step.uses)
        .filter((use): use is string => use !== undefined);
      expect(uses.length).toBeGreaterThan(1);
      for (const use of uses) expect(use).toMatch(/^[\w.-]+\/[\w.-]+@[0-9a-f]{40}$/);
      for (const line of text.split("\n").filter((candidate) => candidate.includes("uses:")))
        expect(line).toMatch(/ # v\d+\.\d+\.\d+$/);
    }
  });
});

/** A `run:` block as the runner runs it: `bash --noprofile --norc -eo pipefail FILE`. */
function runStep(
  script: string,
  cwd: string,
  env: Record<string, string>,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const file = join(scratch, `step-${Math.random().toString(36).slice(2)}.sh`);
  writeFileSync(file, script);
  return new Promise((done, fail) => {
    const child = spawn("bash", ["--noprofile", "--norc", "-eo", "pipefail", file], {
      cwd,
      env: { PATH, HOME: process.env.HOME ?? scratch, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    child.on("error", fail);
    child.on("close", (code) => done({ code, stdout, stderr }));
  });
}

function git(cwd: string, ...args: string[]): string {
  const result = spawnSync("git", args, { cwd, encoding: "utf8" });
  if (result.status !== 0) throw new Error(`git ${args.join(" ")}: ${result.stderr}`);
  return result.stdout.trim();
}

/** Stand-in for `npm run plan -- --stack X --diff REF --format markdown` (helper D's interface). */
const STAND_IN = `
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
const arg = (name) => process.argv[process.argv.indexOf(name) + 1];
const stack = arg("--stack"), ref = arg("--diff");
if (arg("--format") !== "markdown") { console.error("stand-in: wants --format markdown"); process.exit(2); }
try { execFileSync("git", ["rev-parse", "--verify", "--quiet", ref + "^{commit}"], { stdio: "ignore" }); }
catch { console.error("unknown git ref: " + ref); process.exit(2); }
if (stack === "broken") { console.error("planning broken at HEAD failed:\\nstacks/Pulumi.broken.yaml: model.tier: found \`Q9\`; allowed: Q2, Q4"); process.exit(1); }
const file = "stacks/Pulumi." + stack + ".yaml";
let before = null;
try { before = execFileSync("git", ["show", ref + ":" + file], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }); } catch {}
const now = existsSync(file) ? readFileSync(file, "utf8") : null;
const out = ["<!-- kimi-kit-plan-diff:" + stack + " -->", "#### " + stack];
if (before === null) { console.log([...out, "new stack", "now: " + now.trim()].join("\\n")); process.exit(3); }
if (before !== now) { console.log([...out, "was: " + before.trim(), "now: " + now.trim()].join("\\n")); process.exit(3); }
console.log([...out, "nothing material changed"].join("\\n"));
`;

describe("the workflows' run: blocks, end to end", () => {
  let repo: string;
  let prHead: string;
  let artifact: string;
  let fake: GithubFake;
  const TOKEN = "ghs_workflowRunTokenNeverPrinted";

  beforeAll(async () => {
    repo = join(scratch, "repo");
    mkdirSync(join(repo, "tools"), { recursive: true });
    mkdirSync(join(repo, "stacks"));
    mkdirSync(join(repo, "catalog"));
    for (const file of ["plan-diff-body.ts", "plan-diff-comment.ts"])
      copyFileSync(join(ROOT, "tools", file), join(repo, "tools", file));
    writeFileSync(
      join(repo, "package.json"),
      JSON.stringify({ name: "scratch", private: true, scripts: { plan: "node plan-stand-in.mjs" } }),
    );
    writeFileSync(join(repo, "plan-stand-in.mjs"), STAND_IN);
    symlinkSync(join(ROOT, "node_modules"), join(repo, "node_modules"));
    writeFileSync(join(repo, ".gitignore"), "node_modules\n");
    for (const stack of ["alpha", "beta", "gone"])
      writeFileSync(join(repo, "stacks", `Pulumi.${stack}.yaml`), `config:\n  kimi-kit:gpus: 1 # ${stack}\n`);
    writeFileSync(join(repo, "catalog", "gpus.yaml"), "gpus: []\n");
    git(repo, "init", "-q", "-b", "main");
    git(repo, "config", "user.email", "ci@example.invalid");
    git(repo, "config", "user.name", "ci");
    git(repo, "add", "-A");
    git(repo, "commit", "-q", "-m", "base");
    // The pull request: alpha grows, gone goes, gamma and broken arrive.
    git(repo, "checkout", "-q", "-b", "topic");
    writeFileSync(join(repo, "stacks", "Pulumi.alpha.yaml"), "config:\n  kimi-kit:gpus: 2 # alpha\n");
    unlinkSync(join(repo, "stacks", "Pulumi.gone.yaml"));
    writeFileSync(join(repo, "stacks", "Pulumi.gamma.yaml"), "config:\n  kimi-kit:gpus: 4 # gamma\n");
    writeFileSync(join(repo, "stacks", "Pulumi.broken.yaml"), "config:\n  kimi-kit:tier: Q9\n");
    git(repo, "add", "-A");
    git(repo, "commit", "-q", "-m", "topic");
    prHead = git(repo, "rev-parse", "HEAD");
    // The base moves on (a README), then the merge GitHub would check out as refs/pull/N/merge.
    git(repo, "checkout", "-q", "main");
    writeFileSync(join(repo, "README.md"), "later\n");
    git(repo, "add", "-A");
    git(repo, "commit", "-q", "-m", "main moves on");
    git(repo, "merge", "-q", "--no-ff", "-m", "Merge topic into main", "topic");
    artifact = join(scratch, "runner", "plan-diff");
    fake = await startGithubFake({
      tokens: { [TOKEN]: { login: "github-actions[bot]", type: "Bot", write: true } },
      pulls: { 7: prHead, 8: "f".repeat(40) },
    });
  }, 60_000);
  afterAll(async () => {
    await fake?.stop();
  });

  const diffStep = () => stepNamed(only(load(DIFF_YML)), /^Diff each/).run!;
  const commentStep = () => stepNamed(only(load(COMMENT_YML)), /comment/).run!;
  const diffEnv = () => ({
    PR_NUMBER: "7",
    RUN_URL: "https://github.com/kimi-org/kimi-kit/actions/runs/42",
    RUNNER_TEMP: join(scratch, "runner"),
    GITHUB_STEP_SUMMARY: join(scratch, "summary.md"),
  });
  const commentEnv = (extra: Record<string, string> = {}) => ({
    GITHUB_TOKEN: TOKEN,
    GITHUB_API_URL: fake.apiUrl,
    REPO: "kimi-org/kimi-kit",
    HEAD_SHA: prHead,
    RUN_PRS: "",
    ARTIFACT: artifact,
    ...extra,
  });

  it("the diff step diffs the touched stacks against the merge's first parent and writes the artifact", async () => {
    const run = await runStep(diffStep(), repo, diffEnv());
    expect(run.stderr).toBe("");
    expect(run.code).toBe(0);
    const body = readFileSync(join(artifact, "body.md"), "utf8");
    expect(body.startsWith(`${MARKER}\n`)).toBe(true);
    expect(readFileSync(join(artifact, "pr-number"), "utf8")).toBe("7\n");
    expect(readFileSync(join(scratch, "summary.md"), "utf8")).toBe(body);
    const summary = JSON.parse(readFileSync(join(artifact, "summary.json"), "utf8")) as {
      base: string;
      stacks: { stack: string; status: string; exit?: number }[];
    };
    // The base is main after it moved on (HEAD^1), so README.md is not part of the diff and beta is untouched.
    expect(summary.base).toBe(git(repo, "rev-parse", "HEAD^1"));
    expect(summary.stacks).toEqual([
      { stack: "alpha", status: "material", exit: 3 },
      { stack: "gamma", status: "material", exit: 3 },
      { stack: "broken", status: "failed", exit: 1 },
      { stack: "gone", status: "removed" },
    ]);
    expect(body).toContain("| `alpha` | **material change** |");
    expect(body).toContain("| `broken` | **could not be diffed** (exit 1) |");
    expect(body).toContain("| `gone` | removed by this pull request |");
    expect(body).toContain("<!-- kimi-kit-plan-diff:alpha -->");
    expect(body).toMatch(/was: config:\n {2}kimi-kit:gpus: 1 # alpha\nnow: config:\n {2}kimi-kit:gpus: 2 # alpha/);
    expect(body).toContain("stacks/Pulumi.broken.yaml: model.tier: found `Q9`; allowed: Q2, Q4");
    expect(body).not.toContain("`beta`");
    expect(body).toContain("[workflow run](https://github.com/kimi-org/kimi-kit/actions/runs/42)");
  }, 120_000);

  it("the comment step posts the artifact as one comment, then updates it in place", async () => {
    const first = await runStep(commentStep(), ROOT, commentEnv());
    expect(first.stderr).toBe("");
    expect(first.code).toBe(0);
    expect(fake.comments.get(7)).toHaveLength(1);
    expect(fake.comments.get(7)![0]!.body).toBe(readFileSync(join(artifact, "body.md"), "utf8"));
    writeFileSync(join(artifact, "body.md"), `${MARKER}\nsecond push\n`);
    const second = await runStep(commentStep(), ROOT, commentEnv());
    expect(second.code).toBe(0);
    expect(fake.comments.get(7)).toHaveLength(1);
    expect(fake.comments.get(7)![0]!.body).toBe(`${MARKER}\nsecond push\n`);
  });

  it("the comment step refuses a tampered pr-number before any request, and another PR's number at GitHub's answer", async () => {
    const before = fake.requests.length;
    for (const tampered of ["7; curl evil.example", "$(id)", "-1", "", "12345678901"]) {
      writeFileSync(join(artifact, "pr-number"), `${tampered}\n`);
      const run = await runStep(commentStep(), ROOT, commentEnv());
      expect(run.code, tampered).toBe(1);
      expect(run.stdout, tampered).toContain("::error::the artifact's pr-number is not a pull request number");
    }
    expect(fake.requests.length).toBe(before);
    writeFileSync(join(artifact, "pr-number"), "8\n");
    const other = await runStep(commentStep(), ROOT, commentEnv());
    expect(other.code).toBe(1);
    expect(other.stderr).toMatch(
      /^plan-diff-comment: PR kimi-org\/kimi-kit#8 has head f{40}, not the triggering run's [0-9a-f]{40}: refusing to comment/,
    );
    expect(fake.comments.get(8) ?? []).toHaveLength(0);
    expect(other.stderr).not.toContain(TOKEN);
    writeFileSync(join(artifact, "pr-number"), "7\n");
  });

  it("a catalog change diffs every stack, the untouched ones as no material change", async () => {
    git(repo, "checkout", "-q", "-b", "catalog-change", "main~1");
    writeFileSync(join(repo, "catalog", "gpus.yaml"), "gpus: [rtx-3090]\n");
    git(repo, "commit", "-q", "-am", "catalog");
    git(repo, "checkout", "-q", "main~1");
    git(repo, "merge", "-q", "--no-ff", "-m", "Merge catalog-change", "catalog-change");
    const out = join(scratch, "runner2");
    const run = await runStep(diffStep(), repo, { ...diffEnv(), RUNNER_TEMP: out });
    expect(run.code, run.stderr).toBe(0);
    const summary = JSON.parse(readFileSync(join(out, "plan-diff", "summary.json"), "utf8")) as {
      reason: string;
      stacks: { stack: string; status: string }[];
    };
    expect(summary.reason).toBe("catalog/ changed: every stack is planned again");
    expect(summary.stacks).toEqual([
      { stack: "alpha", status: "unchanged", exit: 0 },
      { stack: "beta", status: "unchanged", exit: 0 },
      { stack: "gone", status: "unchanged", exit: 0 },
    ]);
    expect(readFileSync(join(out, "plan-diff", "body.md"), "utf8")).toContain(
      "<details><summary><code>beta</code>: no material change</summary>",
    );
  }, 120_000);

  it("an unknown base ref is one line and exit 1, and no body is written", async () => {
    const out = join(scratch, "runner3");
    const run = spawnSync("npx", ["tsx", "tools/plan-diff-body.ts", "--base", "no-such-ref", "--out", out], {
      cwd: repo,
      encoding: "utf8",
      env: { ...process.env, PATH },
    });
    expect(run.status).toBe(1);
    expect(run.stderr).toBe(`plan-diff-body: unknown git ref 'no-such-ref': not a commit in ${repo}\n`);
    expect(existsSync(join(out, "body.md"))).toBe(false);
  }, 60_000);
});

describe("plan-diff-body pieces", () => {
  it("selectStacks: stack files alone pick those stacks; catalog/, locks/ or planner/ pick all at either end", () => {
    expect(selectStacks(["stacks/Pulumi.a.yaml", "README.md"], ["a", "b"], ["a", "b"])).toEqual({
      reason: "stack files changed",
      present: ["a"],
      removed: [],
      oddNames: [],
    });
    expect(selectStacks(["locks/k2.json", "planner/x.ts"], ["a", "old"], ["a", "new"])).toEqual({
      reason: "locks/, planner/ changed: every stack is planned again",
      present: ["a", "new"],
      removed: ["old"],
      oddNames: [],
    });
    expect(selectStacks(["stacks/Pulumi.$(x).yaml"], [], ["$(x)"]).oddNames).toEqual(["$(x)"]);
    expect(selectStacks(["stacks/README.md"], ["a"], ["a"])).toEqual({
      reason: "no stack file changed",
      present: [],
      removed: [],
      oddNames: [],
    });
  });

  it("composeBody stays under the budget, keeping the table and naming what it left out", () => {
    const big = "x".repeat(25_000);
    const results: StackDiff[] = ["s1", "s2", "s3", "s4"].map((stack) => ({
      stack,
      status: "material",
      exit: 3,
      text: big,
    }));
    const body = composeBody(
      {
        base: "b".repeat(40),
        head: "h".repeat(40),
        reason: "stack files changed",
        results,
        runUrl: "https://example.invalid/run",
      },
      BODY_BUDGET,
    );
    expect(body.length).toBeLessThanOrEqual(BODY_BUDGET);
    expect(body).toContain("| `s4` | **material change** |");
    expect(body).toMatch(
      /`s3`: \*\*material change\*\* — left out to fit GitHub's comment limit; see the `plan-diff` artifact of the \[workflow run\]\(https:\/\/example\.invalid\/run\)/,
    );
    expect(composeBody({ base: "b", head: "h", reason: "r", results }).length).toBeGreaterThan(100_000);
  });

  it("a failure's output cannot close its code fence", () => {
    const body = composeBody({
      base: "b",
      head: "h",
      reason: "r",
      results: [{ stack: "x", status: "failed", exit: 1, text: "```\n## injected heading\n````" }],
    });
    expect(body).toContain("`````text\n```\n## injected heading\n````\n`````");
  });
});
