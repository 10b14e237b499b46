/**
 * A loopback HTTP server that serves a local folder the way Hugging Face serves a model repo:
 *   GET/HEAD /<owner>/<name>/resolve/<rev>/<path>   (Range: bytes=N-, bytes=N-M, bytes=-N → 206)
 *   GET      /api/models/<owner>/<name>/tree/<rev>[/<folder>]  (JSON listing with LFS sha256)
 * with hooks for tests: a request log with the bytes actually sent, a throttle, corrupted serves,
 * network faults per repo path (a connection dropped mid-body, a reset before any reply, an HTTP
 * error status, a trickle at N bytes/s), and an optional required bearer token.
 */
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { open, readdir, stat, writeFile } from "node:fs/promises";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { Socket } from "node:net";
import { join, relative, sep } from "node:path";

/** A fault served instead of (or in the middle of) one GET of a repo path. */
export type HfFault =
  /** Send the headers (full Content-Length) and this many body bytes, then destroy the socket. */
  | { kind: "drop"; afterBytes: number }
  /** Destroy the socket before any byte of a reply (curl: "empty reply", exit 52). */
  | { kind: "reset" }
  /** Answer with this HTTP status and a short text body. */
  | { kind: "status"; status: number }
  /** Send the body at this many bytes per second (small writes, so the rate holds second by second). */
  | { kind: "trickle"; bytesPerSecond: number };

export interface HfRequestLog {
  method: string;
  /** URL path as requested (still percent-encoded). */
  url: string;
  kind: "resolve" | "tree" | "other";
  /** For resolve/tree: the path inside the repo (decoded). */
  path?: string;
  /** First byte asked for with Range, or null when no Range header was sent. */
  rangeStart: number | null;
  rangeEnd: number | null;
  status: number;
  /** Whether a valid bearer token came with the request (true when no token is required). */
  authorized: boolean;
  /** Body bytes handed to the socket so far (grows while a transfer is running). */
  bytesSent: number;
  corrupted: boolean;
  /** The fault this request was served with, if any. */
  fault?: HfFault["kind"];
  /** True once the response ended or the connection closed. */
  done: boolean;
}

export interface HfServerOptions {
  /** Folder served as the repository root. */
  root: string;
  /** "owner/name" */
  repo: string;
  /** Revisions that exist (default ["main"]). */
  revisions?: string[];
  /** When set, every request needs `Authorization: Bearer <token>` (401 otherwise). */
  token?: string;
  /** Bytes per second per transfer; unset or 0 = as fast as possible. */
  throttleBytesPerSecond?: number;
}

export interface HfServer {
  baseUrl: string;
  port: number;
  /** Every request, in arrival order. Tests may truncate it (`requests.length = 0`). */
  requests: HfRequestLog[];
  /** Resolve-GET log entries for one repo path. */
  resolveGets(path: string): HfRequestLog[];
  /** Changes the throttle, also for transfers already running; 0/undefined = unthrottled. */
  setThrottle(bytesPerSecond?: number): void;
  /** The next `times` GETs of this repo path serve corrupted bytes (same length). */
  corruptNextServe(path: string, times?: number): void;
  /** The next `times` GETs of this repo path get this fault (queued after any faults already set). */
  faultNext(path: string, fault: HfFault, times?: number): void;
  stop(): Promise<void>;
}

export async function sha256File(file: string): Promise<string> {
  const hash = createHash("sha256");
  await new Promise<void>((resolve, reject) => {
    createReadStream(file)
      .on("data", (chunk) => hash.update(chunk))
      .on("end", () => resolve())
      .on("error", reject);
  });
  return hash.digest("hex");
}

async function listFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const full = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await listFiles(full)));
    else if (entry.isFile()) out.push(full);
  }
  return out;
}

/**
 * Writes a fetch-gguf manifest (`sha256<TAB>size<TAB>path`, path relative to root) for every file
 * under root/folder (all of root when folder is omitted), sorted by path. Returns its text.
 */
export async function writeManifest(opts: {
  root: string;
  folder?: string;
  file: string;
  /** Only files whose repo path passes (default: all). */
  filter?: (path: string) => boolean;
}): Promise<string> {
  const files = await listFiles(opts.folder ? join(opts.root, opts.folder) : opts.root);
  const lines: string[] = [];
  for (const full of files.sort()) {
    const path = relative(opts.root, full).split(sep).join("/");
    if (opts.filter && !opts.filter(path)) continue;
    const { size } = await stat(full);
    lines.push(`${await sha256File(full)}\t${size}\t${path}`);
  }
  const text = lines.join("\n") + "\n";
  await writeFile(opts.file, text);
  return text;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function startHfServer(options: HfServerOptions): Promise<HfServer> {
  const revisions = options.revisions ?? ["main"];
  const requests: HfRequestLog[] = [];
  const corrupt = new Map<string, number>();
  const faults = new Map<string, HfFault[]>();
  const shaCache = new Map<string, string>();
  const sockets = new Set<Socket>();
  let throttle = options.throttleBytesPerSecond ?? 0;
  let stopping = false;

  async function cachedSha(full: string, size: number, mtimeMs: number): Promise<string> {
    const key = `${full}\0${size}\0${mtimeMs}`;
    let sha = shaCache.get(key);
    if (!sha) {
      sha = await sha256File(full);
      shaCache.set(key, sha);
    }
    return sha;
  }

  /** Maps a decoded repo path to a file under root, refusing anything that escapes it. */
  function resolveInRoot(path: string): string | null {
    const parts = path.split("/");
    if (parts.some((p) => p === "" || p === "." || p === "..")) return null;
    return join(options.root, ...parts);
  }

  function sendJson(res: ServerResponse, log: HfRequestLog, status: number, body: unknown) {
    log.status = status;
    const text = JSON.stringify(body);
    res.writeHead(status, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(text) });
    res.end(text);
    log.bytesSent = Buffer.byteLength(text);
    log.done = true;
  }

  async function serveTree(res: ServerResponse, log: HfRequestLog, folder: string) {
    const dir = folder === "" ? options.root : resolveInRoot(folder);
    let entries;
    try {
      if (!dir) throw new Error("bad path");
      entries = await readdir(dir, { withFileTypes: true });
    } catch {
      return sendJson(res, log, 404, { error: `Entry not found: ${folder}` });
    }
    const out: unknown[] = [];
    for (const entry of entries.sort((a, b) => a.name.localeCompare(b.name))) {
      const path = folder === "" ? entry.name : `${folder}/${entry.name}`;
      const full = join(dir!, entry.name);
      if (entry.isDirectory()) {
        out.push({ type: "directory", oid: createHash("sha1").update(path).digest("hex"), size: 0, path });
      } else if (entry.isFile()) {
        const st = await stat(full);
        const sha = await cachedSha(full, st.size, st.mtimeMs);
        out.push({
          type: "file",
          oid: createHash("sha1").update(sha).digest("hex"),
          size: st.size,
          path,
          lfs: { oid: sha, size: st.size, pointerSize: 135 },
        });
      }
    }
    sendJson(res, log, 200, out);
  }

  async function serveFile(req: IncomingMessage, res: ServerResponse, log: HfRequestLog, path: string) {
    const full = resolveInRoot(path);
    let size: number;
    let mtimeMs: number;
    try {
      if (!full) throw new Error("bad path");
      const st = await stat(full);
      if (!st.isFile()) throw new Error("not a file");
      size = st.size;
      mtimeMs = st.mtimeMs;
    } catch {
      log.status = 404;
      res.writeHead(404, { "Content-Type": "text/plain", "X-Error-Code": "EntryNotFound" });
      res.end(`Entry not found: ${path}\n`);
      log.done = true;
      return;
    }
    let start = 0;
    let end = size - 1;
    let partial = false;
    const range = req.headers.range;
    if (range) {
      const m = /^bytes=(\d*)-(\d*)$/.exec(range.trim());
      let ok = !!m && (m[1] !== "" || m[2] !== "");
      if (ok && m) {
        if (m[1] === "") {
          const suffix = Number(m[2]);
          start = Math.max(0, size - suffix);
          log.rangeStart = start;
          ok = suffix > 0 && size > 0;
        } else {
          start = Number(m[1]);
          log.rangeStart = start;
          if (m[2] !== "") {
            end = Math.min(Number(m[2]), size - 1);
            log.rangeEnd = Number(m[2]);
            ok = Number(m[2]) >= start;
          }
          ok = ok && start < size;
        }
      }
      if (!ok) {
        log.status = 416;
        res.writeHead(416, { "Content-Range": `bytes */${size}`, "Content-Length": 0 });
        res.end();
        log.done = true;
        return;
      }
      partial = true;
    }
    const fault = req.method === "GET" ? faults.get(path)?.shift() : undefined;
    if (fault) log.fault = fault.kind;
    if (fault?.kind === "reset") {
      req.socket.destroy();
      log.done = true;
      return;
    }
    if (fault?.kind === "status") {
      log.status = fault.status;
      res.writeHead(fault.status, { "Content-Type": "text/plain" });
      res.end(`injected HTTP ${fault.status}\n`);
      log.done = true;
      return;
    }
    const length = size === 0 ? 0 : end - start + 1;
    const sha = await cachedSha(full, size, mtimeMs);
    const headers: Record<string, string | number> = {
      "Content-Type": "application/octet-stream",
      "Content-Length": length,
      "Accept-Ranges": "bytes",
      ETag: `"${sha}"`,
      "X-Linked-Size": size,
    };
    if (partial) headers["Content-Range"] = `bytes ${start}-${end}/${size}`;
    log.status = partial ? 206 : 200;
    res.writeHead(log.status, headers);
    if (req.method === "HEAD" || length === 0) {
      res.end();
      log.done = true;
      return;
    }
    const left = corrupt.get(path) ?? 0;
    if (left > 0) {
      log.corrupted = true;
      if (left === 1) corrupt.delete(path);
      else corrupt.set(path, left - 1);
    }

    let closed = false;
    res.on("close", () => {
      closed = true;
      log.done = true;
    });
    const fh = await open(full, "r");
    try {
      let pos = start;
      const dropAt = fault?.kind === "drop" ? start + fault.afterBytes : Infinity;
      while (pos <= end && !closed && !stopping) {
        if (pos >= dropAt) {
          // Cut the connection mid-body: what was written still reaches the client, then FIN.
          res.socket?.end();
          closed = true;
          break;
        }
        const rate = fault?.kind === "trickle" ? fault.bytesPerSecond : throttle;
        // Fast rates: 20 writes a second; slow ones: 10 (a 10 B/s trickle is 1 byte every 100 ms).
        const chunkSize =
          rate <= 0 ? 256 * 1024 : rate >= 20 * 1024 ? Math.floor(rate / 20) : Math.max(1, Math.floor(rate / 10));
        const want = Math.min(chunkSize, end - pos + 1, dropAt - pos);
        const buf = Buffer.alloc(want);
        const { bytesRead } = await fh.read(buf, 0, want, pos);
        if (bytesRead <= 0) break;
        const chunk = buf.subarray(0, bytesRead);
        if (log.corrupted) for (let k = 0; k < chunk.length; k += 97) chunk[k] = chunk[k]! ^ 0xff;
        const t0 = Date.now();
        const flushed = res.write(chunk);
        log.bytesSent += bytesRead;
        pos += bytesRead;
        if (!flushed && !closed) {
          await new Promise<void>((resolve) => {
            const done = () => {
              res.off("drain", done);
              res.off("close", done);
              resolve();
            };
            res.on("drain", done);
            res.on("close", done);
          });
        }
        if (rate > 0) {
          const wait = (bytesRead / rate) * 1000 - (Date.now() - t0);
          if (wait > 0) await sleep(wait);
        }
      }
    } finally {
      await fh.close();
    }
    if (!closed) res.end();
    res.once("finish", () => (log.done = true));
  }

  const [owner, name] = options.repo.split("/");
  const server = createServer((req, res) => {
    const url = req.url ?? "/";
    const pathname = url.split("?")[0]!;
    const log: HfRequestLog = {
      method: req.method ?? "GET",
      url: pathname,
      kind: "other",
      rangeStart: null,
      rangeEnd: null,
      status: 0,
      authorized: true,
      bytesSent: 0,
      corrupted: false,
      done: false,
    };
    requests.push(log);
    const handle = async () => {
      let segments: string[];
      try {
        segments = pathname
          .split("/")
          .slice(1)
          .map((s) => decodeURIComponent(s));
      } catch {
        return sendJson(res, log, 400, { error: "bad URL encoding" });
      }
      const isTree = segments[0] === "api" && segments[1] === "models" && segments[4] === "tree";
      const isResolve = segments[2] === "resolve";
      if (isTree) log.kind = "tree";
      else if (isResolve) log.kind = "resolve";
      if (options.token !== undefined) {
        log.authorized = req.headers.authorization === `Bearer ${options.token}`;
        if (!log.authorized) {
          return sendJson(res, log, 401, { error: "Invalid credentials in Authorization header" });
        }
      }
      if (isTree && req.method === "GET") {
        const [, , o, n, , rev, ...rest] = segments;
        log.path = rest.join("/");
        if (o !== owner || n !== name) return sendJson(res, log, 404, { error: "Repository not found" });
        if (!rev || !revisions.includes(rev)) return sendJson(res, log, 404, { error: "Invalid rev id" });
        return serveTree(res, log, rest.filter((s) => s !== "").join("/"));
      }
      if (isResolve && (req.method === "GET" || req.method === "HEAD")) {
        const [o, n, , rev, ...rest] = segments;
        log.path = rest.join("/");
        if (o !== owner || n !== name || !rev || !revisions.includes(rev)) {
          log.status = 404;
          res.writeHead(404, { "Content-Type": "text/plain" });
          res.end("Repository or revision not found\n");
          log.done = true;
          return;
        }
        return serveFile(req, res, log, log.path);
      }
      return sendJson(res, log, 404, { error: "not found" });
    };
    handle().catch((error: unknown) => {
      if (!res.headersSent) sendJson(res, log, 500, { error: String(error) });
      else res.destroy();
    });
  });
  server.on("connection", (socket: Socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const address = server.address();
  const port = typeof address === "object" && address ? address.port : 0;

  return {
    baseUrl: `http://127.0.0.1:${port}`,
    port,
    requests,
    resolveGets: (path: string) =>
      requests.filter((r) => r.kind === "resolve" && r.method === "GET" && r.path === path),
    setThrottle(bytesPerSecond?: number) {
      throttle = bytesPerSecond ?? 0;
    },
    corruptNextServe(path: string, times = 1) {
      corrupt.set(path, (corrupt.get(path) ?? 0) + times);
    },
    faultNext(path: string, fault: HfFault, times = 1) {
      const queue = faults.get(path) ?? [];
      for (let k = 0; k < times; k++) queue.push(fault);
      faults.set(path, queue);
    },
    async stop() {
      stopping = true;
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const socket of sockets) socket.destroy();
      server.closeAllConnections();
      await closed;
    },
  };
}
