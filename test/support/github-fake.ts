/**
 * A loopback stand-in for the part of GitHub's REST API that tools/plan-diff-comment.ts uses, with
 * GitHub's documented behaviour (docs.github.com/rest, API version 2022-11-28):
 *
 *   GET   /repos/{owner}/{repo}/issues/{n}/comments   per_page (default 30, max 100) and page; a Link
 *         header with rel="next"/"last"/"first"/"prev" whose URLs use the /repositories/{id}/ form
 *         GitHub itself sends (so a client must follow the link, not rebuild it); 404 for an unknown
 *         pull request
 *   POST  /repos/{owner}/{repo}/issues/{n}/comments   {"body"} → 201, the created comment, Location
 *   PATCH /repos/{owner}/{repo}/issues/comments/{id}  {"body"} → 200, the updated comment
 *   GET   /repos/{owner}/{repo}/pulls/{n}             the pull request's number and head sha
 *
 * Every request needs `Authorization: Bearer <token>` (or `token <token>`): none → 401 "Requires
 * authentication", an unknown token → 401 "Bad credentials"; a read-only token writing → 403
 * "Resource not accessible by integration"; a body over `maxBody` characters (65536, GitHub's limit;
 * lowered by tests to provoke it) → 422 "Validation Failed". Errors carry GitHub's JSON shape.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

export interface FakeUser {
  login: string;
  type: "User" | "Bot";
}

export interface FakeComment {
  id: number;
  node_id: string;
  url: string;
  html_url: string;
  issue_url: string;
  body: string;
  user: FakeUser & { id: number };
  created_at: string;
  updated_at: string;
  author_association: string;
}

export interface FakeRequest {
  method: string;
  /** Path and query as requested. */
  url: string;
  status: number;
  /** The Authorization header as sent (tests check the token went only where it should). */
  authorization: string | undefined;
}

export interface GithubFake {
  /** http://127.0.0.1:PORT — pass as --api-url. */
  apiUrl: string;
  owner: string;
  repo: string;
  /** Comments per pull request number, oldest first. */
  comments: Map<number, FakeComment[]>;
  /** Head commit per pull request number; a number not here is unknown (404). */
  pulls: Map<number, string>;
  requests: FakeRequest[];
  /** GitHub's comment body limit (65536); lower it to make GitHub's 422 happen. */
  maxBody: number;
  /** Adds a comment as `user` directly to the store (someone else commenting). */
  addComment(pr: number, user: FakeUser, body: string): FakeComment;
  stop(): Promise<void>;
}

export interface FakeOptions {
  owner?: string;
  repo?: string;
  /** Tokens and who they are; `write: false` is a token without pull-requests: write. */
  tokens: Record<string, FakeUser & { write: boolean }>;
  /** Pull request numbers and their head commits. */
  pulls: Record<number, string>;
}

const DOCS = "https://docs.github.com/rest";
const REPO_ID = 424242;

export async function startGithubFake(options: FakeOptions): Promise<GithubFake> {
  const owner = options.owner ?? "kimi-org";
  const repo = options.repo ?? "kimi-kit";
  const comments = new Map<number, FakeComment[]>();
  const pulls = new Map<number, string>(Object.entries(options.pulls).map(([number, sha]) => [Number(number), sha]));
  const requests: FakeRequest[] = [];
  let nextId = 1_000_001;
  let base = "";
  const userIds = new Map<string, number>();

  const makeComment = (pr: number, user: FakeUser, body: string): FakeComment => {
    const id = nextId++;
    const now = new Date(Date.UTC(2026, 0, 1, 0, 0, id % 60)).toISOString();
    if (!userIds.has(user.login)) userIds.set(user.login, 5000 + userIds.size);
    return {
      id,
      node_id: `IC_kwDO${id}`,
      url: `${base}/repos/${owner}/${repo}/issues/comments/${id}`,
      html_url: `https://github.com/${owner}/${repo}/pull/${pr}#issuecomment-${id}`,
      issue_url: `${base}/repos/${owner}/${repo}/issues/${pr}`,
      body,
      user: { ...user, id: userIds.get(user.login)! },
      created_at: now,
      updated_at: now,
      author_association: user.type === "Bot" ? "NONE" : "MEMBER",
    };
  };

  const fake: GithubFake = {
    apiUrl: "",
    owner,
    repo,
    comments,
    pulls,
    requests,
    maxBody: 65_536,
    addComment(pr, user, body) {
      const comment = makeComment(pr, user, body);
      comments.set(pr, [...(comments.get(pr) ?? []), comment]);
      return comment;
    },
    stop: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };

  const send = (res: ServerResponse, status: number, json: unknown, headers: Record<string, string> = {}): void => {
    res.writeHead(status, {
      "Content-Type": "application/json; charset=utf-8",
      "X-GitHub-Api-Version-Selected": "2022-11-28",
      ...headers,
    });
    res.end(JSON.stringify(json));
  };
  const error = (res: ServerResponse, status: number, message: string, extra: Record<string, unknown> = {}): void =>
    send(res, status, { message, ...extra, documentation_url: DOCS, status: String(status) });

  const readBody = async (req: IncomingMessage): Promise<string> => {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    return Buffer.concat(chunks).toString("utf8");
  };

  /** {"body": string} from a request, or a 422 sent and undefined. */
  const commentBodyOf = async (req: IncomingMessage, res: ServerResponse): Promise<string | undefined> => {
    let parsed: unknown;
    try {
      parsed = JSON.parse(await readBody(req));
    } catch {
      send(res, 400, { message: "Problems parsing JSON", documentation_url: DOCS, status: "400" });
      return undefined;
    }
    const body = typeof parsed === "object" && parsed !== null ? (parsed as { body?: unknown }).body : undefined;
    if (typeof body !== "string" || body.length === 0) {
      error(res, 422, "Validation Failed", {
        errors: [{ resource: "IssueComment", code: "missing_field", field: "body" }],
      });
      return undefined;
    }
    if (body.length > fake.maxBody) {
      error(res, 422, "Validation Failed", {
        errors: [
          {
            resource: "IssueComment",
            code: "custom",
            field: "body",
            message: `body is too long (maximum is ${fake.maxBody} characters)`,
          },
        ],
      });
      return undefined;
    }
    return body;
  };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const url = new URL(req.url ?? "/", base);
    const auth = req.headers.authorization;
    const token = /^(?:Bearer|token) (.+)$/.exec(auth ?? "")?.[1];
    if (!auth) return error(res, 401, "Requires authentication");
    const who = token === undefined ? undefined : options.tokens[token];
    if (!who) return error(res, 401, "Bad credentials");

    // /repositories/{id}/… is how GitHub spells the same repository in Link headers.
    const path = url.pathname.replace(`/repositories/${REPO_ID}/`, `/repos/${owner}/${repo}/`);
    const prefix = `/repos/${owner}/${repo}/`;
    if (!path.startsWith(prefix)) return error(res, 404, "Not Found");
    const rest = path.slice(prefix.length);

    let match = /^issues\/(\d+)\/comments$/.exec(rest);
    if (match) {
      const pr = Number(match[1]);
      if (!pulls.has(pr)) return error(res, 404, "Not Found");
      if (req.method === "GET") {
        const perPage = Math.min(100, Math.max(1, Number(url.searchParams.get("per_page") ?? 30) || 30));
        const page = Math.max(1, Number(url.searchParams.get("page") ?? 1) || 1);
        const all = comments.get(pr) ?? [];
        const last = Math.max(1, Math.ceil(all.length / perPage));
        const link = (p: number, rel: string) =>
          `<${base}/repositories/${REPO_ID}/issues/${pr}/comments?per_page=${perPage}&page=${p}>; rel="${rel}"`;
        const links = [
          ...(page > 1 ? [link(page - 1, "prev")] : []),
          ...(page < last ? [link(page + 1, "next"), link(last, "last")] : []),
          ...(page > 1 ? [link(1, "first")] : []),
        ];
        return send(
          res,
          200,
          all.slice((page - 1) * perPage, page * perPage),
          links.length ? { Link: links.join(", ") } : {},
        );
      }
      if (req.method === "POST") {
        if (!who.write) return error(res, 403, "Resource not accessible by integration");
        const body = await commentBodyOf(req, res);
        if (body === undefined) return;
        const created = fake.addComment(pr, { login: who.login, type: who.type }, body);
        return send(res, 201, created, { Location: created.url });
      }
      return error(res, 404, "Not Found");
    }

    match = /^issues\/comments\/(\d+)$/.exec(rest);
    if (match) {
      const id = Number(match[1]);
      const comment = [...comments.values()].flat().find((candidate) => candidate.id === id);
      if (!comment) return error(res, 404, "Not Found");
      if (req.method === "GET") return send(res, 200, comment);
      if (req.method === "PATCH") {
        if (!who.write) return error(res, 403, "Resource not accessible by integration");
        const body = await commentBodyOf(req, res);
        if (body === undefined) return;
        comment.body = body;
        comment.updated_at = new Date(Date.parse(comment.updated_at) + 1000).toISOString();
        return send(res, 200, comment);
      }
      return error(res, 404, "Not Found");
    }

    match = /^pulls\/(\d+)$/.exec(rest);
    if (match && req.method === "GET") {
      const pr = Number(match[1]);
      const sha = pulls.get(pr);
      if (sha === undefined) return error(res, 404, "Not Found");
      return send(res, 200, { number: pr, state: "open", head: { sha, ref: `topic-${pr}` }, base: { ref: "main" } });
    }
    return error(res, 404, "Not Found");
  };

  const server: Server = createServer((req, res) => {
    res.on("finish", () =>
      requests.push({
        method: req.method ?? "",
        url: req.url ?? "",
        status: res.statusCode,
        authorization: req.headers.authorization,
      }),
    );
    handle(req, res).catch((caught: unknown) => {
      if (!res.headersSent) error(res, 500, (caught as Error).message);
      else res.destroy();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  fake.apiUrl = base;
  return fake;
}
