/**
 * Creates or updates the one plan-diff comment on a pull request:
 *
 *   GITHUB_TOKEN=... node [--disable-warning=MODULE_TYPELESS_PACKAGE_JSON] tools/plan-diff-comment.ts \
 *       --repo OWNER/NAME --pr N --body-file F
 *       [--api-url URL] [--head-sha SHA] [--run-prs "N ..."] [--bot-login LOGIN]
 *
 * Lists the PR's issue comments (every page, following GitHub's Link rel="next"), finds the one
 * that carries MARKER and was written by the bot, and PATCHes it; POSTs a new one only when there is
 * none, so a PR never holds two. A human's comment that quotes the marker is never edited.
 *
 * It runs in the privileged workflow_run job (.github/workflows/plan-diff-comment.yml), which must
 * not install or run the pull request's code: so this file imports only Node built-ins and uses only
 * erasable TypeScript, and runs with plain `node` (Node >= 22.18 strips the types), no npm ci.
 *
 * The PR number comes from an artifact the pull request's own run wrote, so it is untrusted: with
 * --run-prs (the triggering workflow_run's pull_requests) or --head-sha (its head commit) the number
 * is accepted only if it is in that list or the PR's head is that commit (fork PRs leave the list
 * empty, hence the head check).
 *
 * Exit status: 0 done, 1 GitHub refused or could not be reached (one line naming the PR and status),
 * 2 bad usage. The token is never printed: messages carry method, path, status and GitHub's message.
 */
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";

/** The hidden line that marks the kit's comment (tools/plan-diff-body.ts writes it first). */
export const MARKER = "<!-- kimi-kit-plan-diff-comment -->";
/** The login GitHub gives GITHUB_TOKEN's identity in Actions. */
export const DEFAULT_BOT_LOGIN = "github-actions[bot]";
/** GitHub refuses a comment body longer than this (422 "body is too long (maximum is 65536 characters)"). */
export const GITHUB_BODY_LIMIT = 65_536;

const USAGE = `usage: GITHUB_TOKEN=... node tools/plan-diff-comment.ts --repo OWNER/NAME --pr N --body-file FILE
         [--api-url URL] [--head-sha SHA] [--run-prs "N ..."] [--bot-login LOGIN]`;

/** The fields of an issue comment this tool reads (GitHub sends many more). */
export interface IssueComment {
  id: number;
  body?: string | null;
  html_url?: string;
  user?: { login?: string; type?: string } | null;
}

/** A failure that is reported as one line and exit status `code`. */
export class CommentError extends Error {
  readonly code: number;
  constructor(message: string, code = 1) {
    super(message);
    this.code = code;
  }
}

/** The URL of rel="next" in a Link header (RFC 8288, as GitHub sends it), or undefined on the last page. */
export function nextLink(header: string | null): string | undefined {
  if (!header) return undefined;
  // Each link is <URL> followed by its parameters; matching <…> first keeps a comma inside a URL intact.
  for (const [, url, params] of header.matchAll(/<([^>]*)>([^<]*)/g)) {
    const rel = /;\s*rel\s*=\s*(?:"([^"]*)"|([^\s;,]+))/i.exec(params ?? "");
    if ((rel?.[1] ?? rel?.[2] ?? "").split(/\s+/).includes("next")) return url;
  }
  return undefined;
}

/** The comment to update: the first (oldest) that carries the marker and was written by the bot. */
export function findBotComment(
  comments: readonly IssueComment[],
  botLogin = DEFAULT_BOT_LOGIN,
): IssueComment | undefined {
  return comments.find(
    (comment) =>
      comment.user?.type === "Bot" && comment.user.login === botLogin && (comment.body ?? "").includes(MARKER),
  );
}

/**
 * The body as posted: the marker first if the file lacks it (the comment must be found again next
 * time), cut with a note if over GitHub's limit (a 422 would leave the old comment standing).
 */
export function commentBody(text: string): string {
  const body = text.includes(MARKER) ? text : `${MARKER}\n${text}`;
  if (body.length <= GITHUB_BODY_LIMIT) return body;
  const note =
    "\n\n… cut to fit GitHub's 65,536-character comment limit; the full text is in the workflow run's artifact.\n";
  return body.slice(0, GITHUB_BODY_LIMIT - note.length) + note;
}

export interface Options {
  repo: string;
  pr: number;
  body: string;
  apiUrl: string;
  token: string;
  headSha?: string;
  runPrs?: number[];
  botLogin: string;
}

export interface Outcome {
  action: "created" | "updated";
  id: number;
  url: string;
}

interface Reply {
  status: number;
  headers: Headers;
  json: unknown;
}

/** One GitHub API call, as the caller sees it: the reply, or a CommentError. */
type Call = (method: string, url: URL, body?: unknown) => Promise<Reply>;

/** Calls the API with the token, turning every refusal or network failure into one CommentError line. */
function githubCaller(api: URL, where: string, token: string): Call {
  return async (method, url, body) => {
    // The token goes only to the API's own origin: a Link header pointing elsewhere is refused.
    if (url.origin !== api.origin)
      throw new CommentError(
        `${method} ${url.origin}${url.pathname} for ${where}: refusing to send the token outside ${api.origin}`,
      );
    let response: Response;
    try {
      response = await fetch(url, {
        method,
        headers: {
          Accept: "application/vnd.github+json",
          Authorization: `Bearer ${token}`,
          "X-GitHub-Api-Version": "2022-11-28",
          "User-Agent": "kimi-kit-plan-diff-comment",
          ...(body === undefined ? {} : { "Content-Type": "application/json" }),
        },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (error) {
      const cause = (error as { cause?: { code?: string; message?: string } }).cause;
      throw new CommentError(
        `${method} ${url.pathname} for ${where}: cannot reach ${api.origin} (${cause?.code ?? cause?.message ?? (error as Error).message})`,
      );
    }
    const text = await response.text();
    // An error page from a proxy is not JSON: the status alone still makes the one line.
    let json: unknown;
    try {
      json = text ? JSON.parse(text) : undefined;
    } catch {
      json = undefined;
    }
    if (!response.ok)
      throw new CommentError(
        `${method} ${url.pathname} for ${where} failed: ${response.status} ${explain(response.status, json)}`,
      );
    return { status: response.status, headers: response.headers, json };
  };
}

/**
 * When the triggering run is known, the PR must be one of its pull requests, or (given its head)
 * still have the head the run saw: an artifact cannot steer the comment to another PR.
 */
async function checkTriggeringRun(options: Options, call: Call, api: URL, where: string): Promise<void> {
  const repoPath = `repos/${options.repo}`;
  if (options.runPrs !== undefined || options.headSha !== undefined) {
    const listed = options.runPrs?.includes(options.pr) ?? false;
    if (!listed) {
      if (options.headSha === undefined)
        throw new CommentError(
          `PR #${options.pr} is not among the triggering run's pull requests (${options.runPrs?.join(", ") || "none"}): refusing to comment on ${where}`,
        );
      const pull = (await call("GET", new URL(`${repoPath}/pulls/${options.pr}`, api))).json as
        { head?: { sha?: string } } | undefined;
      const head = pull?.head?.sha;
      if (head !== options.headSha)
        throw new CommentError(
          `PR ${where} has head ${head ?? "(none)"}, not the triggering run's ${options.headSha}: refusing to comment (a newer push, or an artifact naming another PR)`,
        );
    }
  }
}

/** All of the PR's comments, following rel="next" pages. */
async function listComments(options: Options, call: Call, api: URL, where: string): Promise<IssueComment[]> {
  const repoPath = `repos/${options.repo}`;
  const comments: IssueComment[] = [];
  let next: URL | undefined = new URL(`${repoPath}/issues/${options.pr}/comments?per_page=100`, api);
  // A cap on pages, so a server that keeps answering rel="next" cannot loop this forever.
  for (let page = 0; next && page < 1000; page += 1) {
    const reply = await call("GET", next);
    if (!Array.isArray(reply.json))
      throw new CommentError(
        `GET ${next.pathname} for ${where}: expected a JSON array of comments, got ${typeof reply.json}`,
      );
    comments.push(...(reply.json as IssueComment[]));
    const link = nextLink(reply.headers.get("link"));
    next = link === undefined ? undefined : new URL(link, api);
  }
  return comments;
}

/** Creates or updates the comment; throws CommentError (one line) on any refusal. */
export async function upsertComment(options: Options): Promise<Outcome> {
  const api = new URL(options.apiUrl.endsWith("/") ? options.apiUrl : `${options.apiUrl}/`);
  const where = `${options.repo}#${options.pr}`;
  const call = githubCaller(api, where, options.token);
  const repoPath = `repos/${options.repo}`;
  await checkTriggeringRun(options, call, api, where);
  const comments = await listComments(options, call, api, where);

  const body = commentBody(options.body);
  const mine = findBotComment(comments, options.botLogin);
  const reply = mine
    ? await call("PATCH", new URL(`${repoPath}/issues/comments/${mine.id}`, api), { body })
    : await call("POST", new URL(`${repoPath}/issues/${options.pr}/comments`, api), { body });
  const saved = reply.json as IssueComment | undefined;
  return { action: mine ? "updated" : "created", id: saved?.id ?? mine?.id ?? 0, url: saved?.html_url ?? "" };
}

/** GitHub's own message for a refusal, on the same line, with a hint for the statuses a workflow meets. */
function explain(status: number, json: unknown): string {
  const message =
    typeof json === "object" && json !== null && "message" in json
      ? String((json as { message: unknown }).message)
      : "";
  const hint: Record<number, string> = {
    401: "the token is missing or invalid",
    403: "the token lacks pull-requests: write, or the conversation is locked",
    404: "no such repository or pull request, or the token cannot see it",
    422: "GitHub refused the body",
  };
  const errors =
    typeof json === "object" && json !== null && "errors" in json && Array.isArray((json as { errors: unknown }).errors)
      ? (json as { errors: unknown[] }).errors
          .map((error) =>
            typeof error === "object" && error !== null && "message" in error
              ? String((error as { message: unknown }).message)
              : "",
          )
          .filter(Boolean)
      : [];
  return [message, ...errors, hint[status]].filter(Boolean).join("; ").replace(/\s+/g, " ");
}

/** The markdown to post: it must be readable and not blank. */
function readBodyFile(path: string, where: string): string {
  let body: string;
  try {
    body = readFileSync(path, "utf8");
  } catch (error) {
    throw new CommentError(
      `--body-file: cannot read ${path} (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`,
      2,
    );
  }
  if (!body.trim()) throw new CommentError(`--body-file: ${path} is empty: nothing to post on ${where}`, 2);
  return body;
}

export function parseCli(argv: string[], env: NodeJS.ProcessEnv): Options {
  let values;
  try {
    values = parseArgs({
      args: argv,
      options: {
        repo: { type: "string" },
        pr: { type: "string" },
        "body-file": { type: "string" },
        "api-url": { type: "string" },
        "head-sha": { type: "string" },
        "run-prs": { type: "string" },
        "bot-login": { type: "string" },
      },
    }).values;
  } catch (error) {
    throw new CommentError(`${(error as Error).message}\n${USAGE}`, 2);
  }
  const { repo, pr } = values;
  if (!repo || !/^[A-Za-z0-9_.-]+\/[A-Za-z0-9_.-]+$/.test(repo))
    throw new CommentError(`--repo: wants OWNER/NAME, got '${repo ?? ""}'\n${USAGE}`, 2);
  // Digits only, no sign or leading zero: the number arrives from an untrusted artifact.
  if (!pr || !/^[1-9][0-9]{0,9}$/.test(pr))
    throw new CommentError(
      `--pr: wants a pull request number (digits only), got '${(pr ?? "").slice(0, 40)}'\n${USAGE}`,
      2,
    );
  if (!values["body-file"]) throw new CommentError(`--body-file: wants the markdown file to post\n${USAGE}`, 2);
  const headSha = values["head-sha"];
  if (headSha !== undefined && !/^[0-9a-f]{40}([0-9a-f]{24})?$/.test(headSha))
    throw new CommentError(`--head-sha: wants a full commit id, got '${headSha.slice(0, 70)}'`, 2);
  const runPrsText = values["run-prs"];
  if (runPrsText !== undefined && !/^[0-9\s]*$/.test(runPrsText))
    throw new CommentError(
      `--run-prs: wants pull request numbers separated by spaces, got '${runPrsText.slice(0, 70)}'`,
      2,
    );
  const runPrs = runPrsText?.split(/\s+/).filter(Boolean).map(Number);
  const token = env.GITHUB_TOKEN ?? "";
  if (!token) throw new CommentError(`GITHUB_TOKEN is not set: cannot comment on ${repo}#${pr}`, 2);
  const body = readBodyFile(values["body-file"], `${repo}#${pr}`);
  return {
    repo,
    pr: Number(pr),
    body,
    apiUrl: values["api-url"] ?? env.GITHUB_API_URL ?? "https://api.github.com",
    token,
    headSha,
    runPrs,
    botLogin: values["bot-login"] ?? DEFAULT_BOT_LOGIN,
  };
}

export async function main(argv: string[], env: NodeJS.ProcessEnv): Promise<number> {
  let token = "";
  try {
    const options = parseCli(argv, env);
    token = options.token;
    const outcome = await upsertComment(options);
    process.stdout.write(
      `${outcome.action} comment ${outcome.id} on ${options.repo}#${options.pr}${outcome.url ? `: ${outcome.url}` : ""}\n`,
    );
    return 0;
  } catch (error) {
    const known = error instanceof CommentError;
    const message = known ? error.message : `plan-diff-comment failed: ${(error as Error).message}`;
    // GitHub echoes nothing secret, but a message is scrubbed of the token all the same.
    const safe = token ? message.split(token).join("***") : message;
    process.stderr.write(`plan-diff-comment: ${safe}\n`);
    return known ? error.code : 1;
  }
}

// Run as a program, not when a test imports it. `require.main` is not available here: plain `node`
// loads this file as an ES module (type stripping), tsx as CommonJS; the script path works for both.
if (/plan-diff-comment\.ts$/.test(process.argv[1] ?? "")) {
  main(process.argv.slice(2), process.env).then((code) => (process.exitCode = code));
}
