/**
 * tools/plan-diff-comment.ts against a loopback fake of GitHub's REST API (test/support/github-fake.ts),
 * run the way the workflow_run job runs it: plain `node` on the .ts file (type stripping), no tsx.
 * One comment per pull request whatever happens: created once, then updated in place; a human's
 * comment quoting the marker is left alone; the bot's comment is found past the first page; every
 * refusal is one line naming the pull request and the status, without the token.
 */
import { spawn } from "node:child_process";
import { createServer } from "node:http";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { commentBody, findBotComment, GITHUB_BODY_LIMIT, MARKER, nextLink } from "../../tools/plan-diff-comment";
import { startGithubFake, type GithubFake } from "../support/github-fake";

const TOOL = resolve(__dirname, "../../tools/plan-diff-comment.ts");
/** As .github/workflows/plan-diff-comment.yml runs it (the flag silences Node's note that it guessed ESM). */
const NODE_FLAGS = ["--disable-warning=MODULE_TYPELESS_PACKAGE_JSON"];
const TOKEN = "ghs_fakeTokenThatMustNeverBePrinted0123456789";
const READ_ONLY = "ghs_readOnlyTokenAlsoNeverPrinted9876543210";
const BOT = { login: "github-actions[bot]", type: "Bot" } as const;
const HUMAN = { login: "octo-reviewer", type: "User" } as const;
const HEAD = "a".repeat(40);
const PR = 7;

let dir: string;
let fake: GithubFake;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "kimi-kit-plan-diff-comment-"));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));
afterEach(async () => {
  await fake?.stop();
});

async function startFake(): Promise<GithubFake> {
  fake = await startGithubFake({
    tokens: { [TOKEN]: { ...BOT, write: true }, [READ_ONLY]: { ...BOT, write: false } },
    pulls: { [PR]: HEAD, 8: "b".repeat(40) },
  });
  return fake;
}

let bodyCount = 0;
function bodyFile(text: string): string {
  const file = join(dir, `body-${bodyCount++}.md`);
  writeFileSync(file, text);
  return file;
}

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** The tool as a child process (async: the fake answers from this same event loop). */
function runTool(args: string[], env: Record<string, string | undefined> = { GITHUB_TOKEN: TOKEN }): Promise<Run> {
  return new Promise((done, fail) => {
    const child = spawn(process.execPath, [...NODE_FLAGS, TOOL, ...args], {
      env: { PATH: process.env.PATH, ...env },
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

function args(pr: number | string, body: string, extra: string[] = []): string[] {
  return [
    "--repo",
    `${fake.owner}/${fake.repo}`,
    "--pr",
    String(pr),
    "--body-file",
    body,
    "--api-url",
    fake.apiUrl,
    ...extra,
  ];
}

const writes = () => fake.requests.filter((request) => request.method === "POST" || request.method === "PATCH");

describe("plan-diff-comment against a fake GitHub", () => {
  it("creates the comment on the first run and updates that same comment on the second", async () => {
    await startFake();
    const first = await runTool(args(PR, bodyFile(`${MARKER}\nfirst diff\n`)));
    expect(first.stderr).toBe("");
    expect(first.code).toBe(0);
    expect(first.stdout).toMatch(
      /^created comment \d+ on kimi-org\/kimi-kit#7: https:\/\/github\.com\/kimi-org\/kimi-kit\/pull\/7#issuecomment-\d+\n$/,
    );
    expect(fake.comments.get(PR)).toHaveLength(1);
    const id = fake.comments.get(PR)![0]!.id;

    const second = await runTool(args(PR, bodyFile(`${MARKER}\nsecond diff\n`)));
    expect(second.code).toBe(0);
    expect(second.stdout).toContain(`updated comment ${id} on kimi-org/kimi-kit#7`);
    expect(fake.comments.get(PR)).toHaveLength(1);
    expect(fake.comments.get(PR)![0]!).toMatchObject({
      id,
      body: `${MARKER}\nsecond diff\n`,
      user: { login: "github-actions[bot]", type: "Bot" },
    });
    expect(writes().map((request) => `${request.method} ${request.status}`)).toEqual(["POST 201", "PATCH 200"]);
    // Every request carried the token, and only to the fake.
    expect(fake.requests.every((request) => request.authorization === `Bearer ${TOKEN}`)).toBe(true);
  });

  it("adds the marker when the body lacks it, so the next run still finds the comment", async () => {
    await startFake();
    expect((await runTool(args(PR, bodyFile("no marker here\n")))).code).toBe(0);
    expect(fake.comments.get(PR)![0]!.body).toBe(`${MARKER}\nno marker here\n`);
    expect((await runTool(args(PR, bodyFile("still none\n")))).code).toBe(0);
    expect(fake.comments.get(PR)).toHaveLength(1);
    expect(fake.comments.get(PR)![0]!.body).toBe(`${MARKER}\nstill none\n`);
  });

  it("never edits a human's comment that quotes the marker, nor another bot's", async () => {
    await startFake();
    const human = fake.addComment(PR, HUMAN, `Why does the bot write ${MARKER} at the top?`);
    const otherBot = fake.addComment(PR, { login: "dependabot[bot]", type: "Bot" }, `${MARKER}\nnot ours`);
    expect((await runTool(args(PR, bodyFile(`${MARKER}\nv1\n`)))).code).toBe(0);
    expect((await runTool(args(PR, bodyFile(`${MARKER}\nv2\n`)))).code).toBe(0);
    const all = fake.comments.get(PR)!;
    expect(all).toHaveLength(3);
    expect(all.find((comment) => comment.id === human.id)!.body).toBe(`Why does the bot write ${MARKER} at the top?`);
    expect(all.find((comment) => comment.id === otherBot.id)!.body).toBe(`${MARKER}\nnot ours`);
    expect(
      all.filter((comment) => comment.user.login === "github-actions[bot]").map((comment) => comment.body),
    ).toEqual([`${MARKER}\nv2\n`]);
  });

  it("follows Link rel=next past 100 comments and updates the bot's comment on page 2", async () => {
    await startFake();
    for (let i = 0; i < 120; i += 1) fake.addComment(PR, HUMAN, `review note ${i}`);
    const mine = fake.addComment(PR, BOT, `${MARKER}\nold diff`);
    for (let i = 0; i < 40; i += 1) fake.addComment(PR, HUMAN, `later note ${i}`);
    const run = await runTool(args(PR, bodyFile(`${MARKER}\nnew diff\n`)));
    expect(run.code).toBe(0);
    expect(run.stdout).toContain(`updated comment ${mine.id}`);
    expect(fake.comments.get(PR)).toHaveLength(161);
    expect(fake.comments.get(PR)!.find((comment) => comment.id === mine.id)!.body).toBe(`${MARKER}\nnew diff\n`);
    const lists = fake.requests.filter((request) => request.method === "GET");
    // Page 1 as asked, page 2 from the Link header (GitHub's /repositories/{id}/ form), then stop.
    expect(lists.map((request) => request.url)).toEqual([
      "/repos/kimi-org/kimi-kit/issues/7/comments?per_page=100",
      "/repositories/424242/issues/7/comments?per_page=100&page=2",
    ]);
    expect(writes().map((request) => request.method)).toEqual(["PATCH"]);
  });

  it("refuses with one line naming the PR and status: unknown PR (404), read-only token (403), body GitHub refuses (422), bad token (401)", async () => {
    await startFake();
    const body = bodyFile(`${MARKER}\nx\n`);
    const cases: [Run, RegExp][] = [
      [
        await runTool(args(999, body)),
        /^plan-diff-comment: GET \/repos\/kimi-org\/kimi-kit\/issues\/999\/comments for kimi-org\/kimi-kit#999 failed: 404 Not Found; .*\n$/,
      ],
      [
        await runTool(args(PR, body), { GITHUB_TOKEN: READ_ONLY }),
        /^plan-diff-comment: POST \/repos\/kimi-org\/kimi-kit\/issues\/7\/comments for kimi-org\/kimi-kit#7 failed: 403 Resource not accessible by integration; .*pull-requests: write.*\n$/,
      ],
      [
        await runTool(args(PR, body), { GITHUB_TOKEN: "ghs_wrong" }),
        /^plan-diff-comment: GET .* for kimi-org\/kimi-kit#7 failed: 401 Bad credentials; .*\n$/,
      ],
    ];
    fake.maxBody = 4;
    cases.push([
      await runTool(args(PR, body)),
      /^plan-diff-comment: POST .* for kimi-org\/kimi-kit#7 failed: 422 Validation Failed; body is too long \(maximum is 4 characters\); .*\n$/,
    ]);
    for (const [run, pattern] of cases) {
      expect(run.code, run.stderr).toBe(1);
      expect(run.stderr).toMatch(pattern);
      expect(run.stderr.trimEnd().split("\n")).toHaveLength(1);
      expect(run.stdout).toBe("");
      expect(run.stderr + run.stdout).not.toContain(TOKEN);
      expect(run.stderr + run.stdout).not.toContain(READ_ONLY);
    }
    expect(fake.comments.get(PR) ?? []).toHaveLength(0);
  });

  it("says so in one line when GitHub cannot be reached", async () => {
    await startFake();
    const url = fake.apiUrl;
    await fake.stop();
    const run = await runTool([
      "--repo",
      "kimi-org/kimi-kit",
      "--pr",
      "7",
      "--body-file",
      bodyFile("x"),
      "--api-url",
      url,
    ]);
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(
      /^plan-diff-comment: GET \/repos\/kimi-org\/kimi-kit\/issues\/7\/comments for kimi-org\/kimi-kit#7: cannot reach http:\/\/127\.0\.0\.1:\d+ \(ECONNREFUSED\)\n$/,
    );
  });

  it("the fake, like GitHub, answers 401 to a request without Authorization", async () => {
    await startFake();
    const response = await fetch(`${fake.apiUrl}/repos/kimi-org/kimi-kit/issues/7/comments`);
    expect(response.status).toBe(401);
    expect(await response.json()).toMatchObject({ message: "Requires authentication" });
  });

  it("refuses to start without GITHUB_TOKEN, and with a PR number that is not digits", async () => {
    await startFake();
    const body = bodyFile(`${MARKER}\nx\n`);
    const noToken = await runTool(args(PR, body), {});
    expect(noToken.code).toBe(2);
    expect(noToken.stderr).toBe("plan-diff-comment: GITHUB_TOKEN is not set: cannot comment on kimi-org/kimi-kit#7\n");
    for (const bad of ["7; rm -rf /", "07", "-7", "7e3", ""]) {
      // --pr=VALUE, as the workflow passes it, so that "-7" is a value and not an option.
      const run = await runTool([
        "--repo",
        "kimi-org/kimi-kit",
        `--pr=${bad}`,
        "--body-file",
        body,
        "--api-url",
        fake.apiUrl,
      ]);
      expect(run.code, bad).toBe(2);
      expect(run.stderr.split("\n")[0]).toMatch(
        /^plan-diff-comment: --pr: wants a pull request number \(digits only\)/,
      );
    }
    expect(fake.requests).toHaveLength(0);
  });
});

describe("the PR number from the artifact is checked against the triggering run", () => {
  it("accepts a number listed in the run's pull_requests without asking GitHub about the head", async () => {
    await startFake();
    const run = await runTool(args(PR, bodyFile("x"), ["--run-prs", "3 7", "--head-sha", "c".repeat(40)]));
    expect(run.code).toBe(0);
    expect(fake.requests.some((request) => request.url.includes("/pulls/"))).toBe(false);
  });

  it("with an empty list (a fork's PR), accepts it only when the PR's head is the run's head commit", async () => {
    await startFake();
    const ok = await runTool(args(PR, bodyFile("x"), ["--run-prs", "", "--head-sha", HEAD]));
    expect(ok.code).toBe(0);
    expect(fake.comments.get(PR)).toHaveLength(1);

    // An artifact naming PR 8 from a run whose head is PR 7's: refused, nothing written on 8.
    const forged = await runTool(args(8, bodyFile("x"), ["--run-prs", "", "--head-sha", HEAD]));
    expect(forged.code).toBe(1);
    expect(forged.stderr).toBe(
      `plan-diff-comment: PR kimi-org/kimi-kit#8 has head ${"b".repeat(40)}, not the triggering run's ${HEAD}: refusing to comment (a newer push, or an artifact naming another PR)\n`,
    );
    expect(fake.comments.get(8) ?? []).toHaveLength(0);

    const notListed = await runTool(args(8, bodyFile("x"), ["--run-prs", "7"]));
    expect(notListed.code).toBe(1);
    expect(notListed.stderr).toMatch(/^plan-diff-comment: PR #8 is not among the triggering run's pull requests \(7\)/);
  });
});

describe("pieces", () => {
  it("nextLink reads rel=next from GitHub's Link header and nothing else", () => {
    const header =
      '<https://api.github.com/repositories/1/issues/7/comments?per_page=100&page=1>; rel="prev", <https://api.github.com/repositories/1/issues/7/comments?per_page=100&page=3>; rel="next", <https://api.github.com/repositories/1/issues/7/comments?per_page=100&page=5>; rel="last"';
    expect(nextLink(header)).toBe("https://api.github.com/repositories/1/issues/7/comments?per_page=100&page=3");
    expect(nextLink('<https://x/a?page=1>; rel="first", <https://x/a?page=4>; rel="last"')).toBeUndefined();
    expect(nextLink(null)).toBeUndefined();
    expect(nextLink('<https://x/a?page=2&q=a,b>; rel="next last"')).toBe("https://x/a?page=2&q=a,b");
  });

  it("findBotComment wants the marker, type Bot and the bot's login", () => {
    const comments = [
      { id: 1, body: MARKER, user: { login: "github-actions[bot]", type: "User" } },
      { id: 2, body: "no marker", user: { login: "github-actions[bot]", type: "Bot" } },
      { id: 3, body: `x ${MARKER}`, user: { login: "github-actions[bot]", type: "Bot" } },
      { id: 4, body: MARKER, user: { login: "github-actions[bot]", type: "Bot" } },
    ];
    expect(findBotComment(comments)?.id).toBe(3);
    expect(findBotComment(comments, "kimi-bot[bot]")).toBeUndefined();
  });

  it("commentBody cuts an over-long body below GitHub's limit, keeping the marker", () => {
    const body = commentBody(`${MARKER}\n${"x".repeat(100_000)}`);
    expect(body.length).toBeLessThanOrEqual(GITHUB_BODY_LIMIT);
    expect(body.startsWith(MARKER)).toBe(true);
    expect(body).toMatch(/cut to fit GitHub's 65,536-character comment limit/);
  });

  it("refuses to send the token to another origin named by a Link header", async () => {
    await startFake();
    const other = await startGithubFake({ tokens: { [TOKEN]: { ...BOT, write: true } }, pulls: { [PR]: HEAD } });
    try {
      // A server that answers page 1 with a rel="next" pointing at another host.
      const evil = createServer((req, res) => {
        res.writeHead(200, {
          "Content-Type": "application/json",
          Link: `<${other.apiUrl}/repos/kimi-org/kimi-kit/issues/7/comments?page=2>; rel="next"`,
        });
        res.end("[]");
      });
      await new Promise<void>((done) => evil.listen(0, "127.0.0.1", () => done()));
      const address = evil.address();
      const port = typeof address === "object" && address ? address.port : 0;
      const run = await runTool([
        "--repo",
        "kimi-org/kimi-kit",
        "--pr",
        "7",
        "--body-file",
        bodyFile("x"),
        "--api-url",
        `http://127.0.0.1:${port}`,
      ]);
      await new Promise<void>((done) => evil.close(() => done()));
      expect(run.code).toBe(1);
      expect(run.stderr).toMatch(/refusing to send the token outside http:\/\/127\.0\.0\.1:\d+\n$/);
      expect(other.requests).toHaveLength(0);
    } finally {
      await other.stop();
    }
  });
});
