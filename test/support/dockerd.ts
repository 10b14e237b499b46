/**
 * A Docker engine for the tests.
 *
 * If `docker info` already answers, that engine is used and never stopped. Otherwise one is
 * started the way this machine allows (no registry, no iptables, no bridge):
 *   dockerd --storage-driver=vfs --iptables=false --bridge=none --data-root … --exec-root …
 * on the default socket /var/run/docker.sock (or DOCKER_HOST's unix socket when set), because
 * the scripts under test reach it over ssh with a plain `docker` CLI.
 *
 * Several vitest workers (pool forks) may want an engine at once, so the started daemon is
 * shared and reference-counted through a small state folder in the temp dir: whoever drops the
 * last reference stops it (SIGTERM, then waits), and only a daemon this module started is ever
 * stopped. Its data-root lives in a temp folder removed on stop, unless KIMI_KIT_DOCKERD_ROOT
 * names a folder to keep (then imported images survive between runs).
 */
import { execFileSync, spawn, spawnSync } from "node:child_process";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  closeSync,
  readFileSync,
  readdirSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface Dockerd {
  /** The DOCKER_HOST the engine listens on, e.g. unix:///var/run/docker.sock. */
  host: string;
  /** True when this module started the daemon (shared with other workers), false when one was already there. */
  managed: boolean;
  /** Drops this reference; stops the daemon when it was started here and nobody else holds it. */
  stop(): Promise<void>;
}

interface DaemonState {
  pid: number;
  root: string;
  keepRoot: boolean;
  host: string;
}

const STATE_DIR = join(tmpdir(), "kimi-kit-dockerd-state");
const LOCK_DIR = join(STATE_DIR, "lock");
const USERS_DIR = join(STATE_DIR, "users");
const STATE_FILE = join(STATE_DIR, "daemon.json");
let userCounter = 0;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function dockerHost(): string {
  return process.env.DOCKER_HOST || "unix:///var/run/docker.sock";
}

/** Alive and not a zombie. */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return false;
  }
}

export function dockerInfoWorks(host = dockerHost()): boolean {
  try {
    execFileSync("docker", ["info", "--format", "{{.ServerVersion}}"], {
      env: { ...process.env, DOCKER_HOST: host },
      stdio: ["ignore", "pipe", "pipe"],
      timeout: 15_000,
    });
    return true;
  } catch {
    return false;
  }
}

async function withLock<T>(fn: () => Promise<T>): Promise<T> {
  mkdirSync(STATE_DIR, { recursive: true });
  const deadline = Date.now() + 180_000;
  for (;;) {
    try {
      mkdirSync(LOCK_DIR);
      writeFileSync(join(LOCK_DIR, "owner"), String(process.pid));
      break;
    } catch {
      // A lock whose owner died is stale.
      let owner = NaN;
      try {
        owner = Number(readFileSync(join(LOCK_DIR, "owner"), "utf8"));
      } catch {
        /* being written right now */
      }
      if (Number.isFinite(owner) && owner > 0 && !alive(owner)) rmSync(LOCK_DIR, { recursive: true, force: true });
      if (Date.now() > deadline) throw new Error(`could not take ${LOCK_DIR} within 180 s`);
      await sleep(100);
    }
  }
  try {
    return await fn();
  } finally {
    rmSync(LOCK_DIR, { recursive: true, force: true });
  }
}

function readState(): DaemonState | undefined {
  try {
    return JSON.parse(readFileSync(STATE_FILE, "utf8")) as DaemonState;
  } catch {
    return undefined;
  }
}

/** Users whose process died no longer hold a reference. */
function liveUsers(): string[] {
  mkdirSync(USERS_DIR, { recursive: true });
  return readdirSync(USERS_DIR).filter((user) => {
    const pid = Number(user.split("-")[0]);
    if (alive(pid)) return true;
    rmSync(join(USERS_DIR, user), { force: true });
    return false;
  });
}

function register(): string {
  const user = `${process.pid}-${++userCounter}`;
  mkdirSync(USERS_DIR, { recursive: true });
  writeFileSync(join(USERS_DIR, user), "");
  return user;
}

async function stopDaemon(state: DaemonState): Promise<void> {
  if (alive(state.pid)) {
    process.kill(state.pid, "SIGTERM");
    const deadline = Date.now() + 60_000;
    while (alive(state.pid) && Date.now() < deadline) await sleep(200);
    if (alive(state.pid)) process.kill(state.pid, "SIGKILL");
    while (alive(state.pid)) await sleep(100);
  }
  rmSync(STATE_FILE, { force: true });
  unmountUnder(state.root);
  if (!state.keepRoot) {
    try {
      rmSync(state.root, { recursive: true, force: true });
    } catch {
      // Something still mounted there resists; it lives in the temp dir, which is fine.
    }
  }
}

/** dockerd leaves exec-root/netns/default (an nsfs mount) behind; unmount what is under root, deepest first. */
function unmountUnder(root: string): void {
  let mounts: string[];
  try {
    mounts = readFileSync("/proc/self/mounts", "utf8")
      .split("\n")
      .map((line) => line.split(" ")[1]?.replace(/\\040/g, " "))
      .filter((target): target is string => target !== undefined && (target === root || target.startsWith(`${root}/`)));
  } catch {
    return;
  }
  for (const target of mounts.sort((a, b) => b.length - a.length)) {
    spawnSync("umount", [target], { stdio: "ignore" });
  }
}

function handle(user: string, host: string): Dockerd {
  let stopped = false;
  return {
    host,
    managed: true,
    async stop() {
      if (stopped) return;
      stopped = true;
      await withLock(async () => {
        rmSync(join(USERS_DIR, user), { force: true });
        const state = readState();
        if (state && liveUsers().length === 0) await stopDaemon(state);
      });
    },
  };
}

/** An engine that answers `docker info`: the one already running, or one started (and shared) here. */
export async function ensureDockerd(): Promise<Dockerd> {
  const host = dockerHost();
  return withLock(async () => {
    const state = readState();
    if (state && !alive(state.pid)) await stopDaemon(state); // a daemon we started died: forget it
    const ours = readState();

    if (dockerInfoWorks(host)) {
      if (ours && ours.host === host) return handle(register(), host);
      return { host, managed: false, async stop() {} };
    }
    if (ours) {
      // Ours is alive but does not answer (yet): give it time, else replace it.
      const deadline = Date.now() + 60_000;
      while (!dockerInfoWorks(host) && Date.now() < deadline) await sleep(500);
      if (dockerInfoWorks(host)) return handle(register(), host);
      await stopDaemon(ours);
    }

    if (!host.startsWith("unix://"))
      throw new Error(`DOCKER_HOST=${host} does not answer and is no unix socket to start dockerd on`);
    const keepRoot = Boolean(process.env.KIMI_KIT_DOCKERD_ROOT);
    const root = process.env.KIMI_KIT_DOCKERD_ROOT || mkdtempSync(join(tmpdir(), "kimi-kit-dockerd-"));
    mkdirSync(root, { recursive: true });
    const logPath = join(root, "dockerd.log");
    const log = openSync(logPath, "a");
    const daemon = spawn(
      "dockerd",
      [
        "--storage-driver=vfs",
        "--iptables=false",
        "--ip6tables=false",
        "--bridge=none",
        `--data-root=${join(root, "data")}`,
        `--exec-root=${join(root, "exec")}`,
        `--pidfile=${join(root, "dockerd.pid")}`,
        `--host=${host}`,
      ],
      { detached: true, stdio: ["ignore", log, log] },
    );
    closeSync(log);
    daemon.unref();
    if (!daemon.pid) throw new Error("could not spawn dockerd (is docker.io installed?)");
    const started: DaemonState = { pid: daemon.pid, root, keepRoot, host };
    writeFileSync(STATE_FILE, JSON.stringify(started));

    const deadline = Date.now() + 90_000;
    while (!dockerInfoWorks(host)) {
      if (!alive(daemon.pid) || Date.now() > deadline) {
        const tail = existsSync(logPath) ? readFileSync(logPath, "utf8").split("\n").slice(-30).join("\n") : "";
        await stopDaemon(started);
        throw new Error(`dockerd did not answer on ${host}:\n${tail}`);
      }
      await sleep(300);
    }
    return handle(register(), host);
  });
}
