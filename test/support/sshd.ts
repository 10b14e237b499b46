/**
 * A real OpenSSH server on 127.0.0.1 that plays the customer's bare-metal host.
 * It gets a throwaway client key and its own host key, so callers can pin the host key the way
 * the kit does in production (never "accept anything").
 */
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync, rmSync, mkdirSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort, waitForPort } from "../../lab/net";

export interface LoopbackSshd {
  host: "127.0.0.1";
  port: number;
  user: string;
  /** OpenSSH private key (PEM text) of the throwaway client key. */
  privateKey: string;
  privateKeyPath: string;
  /** "ssh-ed25519 AAAA…" — the host's public key, to pin. */
  hostPublicKey: string;
  /** A known_hosts file with the pinned key. */
  knownHostsPath: string;
  /** An ssh_config with a `Host <alias>` entry, for `ssh -F` / `DOCKER_HOST=ssh://<alias>`. */
  sshConfigPath: string;
  alias: string;
  /** Base argv for `ssh` that reaches the host with strict host-key checking. */
  sshArgs(): string[];
  /** Runs a command on the host over ssh; resolves with stdout, rejects with stderr on failure. */
  exec(command: string, stdin?: string): string;
  stop(): Promise<void>;
}

const SSHD = "/usr/sbin/sshd";

export async function startLoopbackSshd(): Promise<LoopbackSshd> {
  if (!existsSync(SSHD)) {
    throw new Error(`${SSHD} not found: install Debian's openssh-server (.ci/run does)`);
  }
  mkdirSync("/run/sshd", { recursive: true });
  const dir = mkdtempSync(join(tmpdir(), "kimi-kit-sshd-"));
  const clientKey = join(dir, "client_ed25519");
  const hostKey = join(dir, "host_ed25519");
  execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "kimi-kit-test", "-f", clientKey]);
  execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "kimi-kit-test-host", "-f", hostKey]);
  const port = await freePort();
  const user = execFileSync("id", ["-un"]).toString().trim();
  const hostPublicKey = readFileSync(`${hostKey}.pub`, "utf8").trim().split(" ").slice(0, 2).join(" ");
  const knownHostsPath = join(dir, "known_hosts");
  writeFileSync(knownHostsPath, `[127.0.0.1]:${port} ${hostPublicKey}\n`);
  const alias = `kimi-kit-loopback-${port}`;
  const sshConfigPath = join(dir, "ssh_config");
  writeFileSync(
    sshConfigPath,
    [
      `Host ${alias}`,
      `  HostName 127.0.0.1`,
      `  Port ${port}`,
      `  User ${user}`,
      `  IdentityFile ${clientKey}`,
      `  IdentitiesOnly yes`,
      `  UserKnownHostsFile ${knownHostsPath}`,
      `  StrictHostKeyChecking yes`,
      `  BatchMode yes`,
      "",
    ].join("\n"),
  );

  const daemon: ChildProcess = spawn(
    SSHD,
    [
      "-D",
      "-e",
      "-p",
      String(port),
      "-o",
      "ListenAddress=127.0.0.1",
      "-h",
      hostKey,
      "-o",
      `AuthorizedKeysFile=${clientKey}.pub`,
      "-o",
      "PermitRootLogin=prohibit-password",
      "-o",
      "StrictModes=no",
      "-o",
      "PasswordAuthentication=no",
      "-o",
      "UsePAM=no",
      "-o",
      `PidFile=${join(dir, "sshd.pid")}`,
      "-o",
      "MaxStartups=64",
      "-o",
      "MaxSessions=64",
    ],
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  let daemonLog = "";
  daemon.stderr?.on("data", (chunk: Buffer) => (daemonLog += chunk.toString()));
  try {
    await waitForPort(port, 10_000);
  } catch (error) {
    daemon.kill("SIGKILL");
    throw new Error(`sshd did not listen on 127.0.0.1:${port}: ${daemonLog}`, { cause: error });
  }

  const sshArgs = () => ["-F", sshConfigPath, alias];
  return {
    host: "127.0.0.1",
    port,
    user,
    privateKey: readFileSync(clientKey, "utf8"),
    privateKeyPath: clientKey,
    hostPublicKey,
    knownHostsPath,
    sshConfigPath,
    alias,
    sshArgs,
    exec(command: string, stdin?: string): string {
      return execFileSync("ssh", [...sshArgs(), command], {
        input: stdin,
        stdio: ["pipe", "pipe", "pipe"],
        maxBuffer: 64 * 1024 * 1024,
      }).toString();
    },
    async stop() {
      if (daemon.exitCode === null) {
        const exited = new Promise<void>((resolve) => daemon.once("exit", () => resolve()));
        daemon.kill("SIGTERM");
        await exited;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
