/**
 * The machine llama-server runs on, and how the kit reaches it. Bare metal: no cloud resources, only
 * an SSH connection whose host key is pinned (a stack without one is refused). Cloud (AWS): a
 * CloudHost (cloud-host.ts: instance, model volume, security group, key pair) whose public address
 * and host key, read back from the instance, make the connection once it exists; during a preview
 * the address is unknown and the connection undefined.
 */
import * as pulumi from "@pulumi/pulumi";
import type * as command from "@pulumi/command";
import type { Plan } from "../../planner/plan";
import { CloudHost } from "./cloud-host";

export interface HostArgs {
  plan: Plan;
  /** The `kimi-kit:sshPrivateKey` secret; without it the SSH agent is used. */
  sshPrivateKey?: pulumi.Input<string>;
}

export class Host extends pulumi.ComponentResource {
  readonly kind: "bare-metal" | "cloud";
  /** Address clients and SSH use (a cloud instance's public IP once it exists). */
  readonly address: pulumi.Output<string> | undefined;
  readonly sshPort: number;
  readonly sshUser: string;
  /** The pinned host public key ("ssh-ed25519 AAAA…"). */
  readonly hostPublicKey: pulumi.Output<string> | undefined;
  readonly sshPrivateKey: pulumi.Output<string> | undefined;
  /** Connection for @pulumi/command remote resources; undefined while no host exists (cloud preview). */
  readonly connection: pulumi.Output<command.types.input.remote.ConnectionArgs> | undefined;

  constructor(name: string, args: HostArgs, opts?: pulumi.ComponentResourceOptions) {
    super("kimi-kit:host:Host", name, {}, opts);
    const hostConfig = args.plan.config.host;
    this.kind = hostConfig.kind;
    if (hostConfig.kind === "cloud") {
      const cloud = new CloudHost(`${name}-aws`, { plan: args.plan }, { parent: this });
      this.address = cloud.address;
      this.sshPort = 22;
      this.sshUser = "root";
      this.hostPublicKey = cloud.hostPublicKey;
      this.sshPrivateKey = args.sshPrivateKey === undefined ? undefined : pulumi.secret(args.sshPrivateKey);
      this.connection = pulumi.secret(
        pulumi.all([cloud.address, cloud.hostPublicKey, this.sshPrivateKey]).apply(([host, hostKey, privateKey]) => ({
          host,
          port: 22,
          user: "root",
          hostKey,
          ...(privateKey ? { privateKey } : {}),
          // A fresh instance needs a few minutes (cloud-init, and a reboot on GPU types) before SSH answers.
          dialErrorLimit: 60,
          perDialTimeout: 30,
        })),
      ) as pulumi.Output<command.types.input.remote.ConnectionArgs>;
      this.registerOutputs({ kind: this.kind, address: this.address });
      return;
    }
    const ssh = hostConfig.ssh;
    // A split's head or a replica is hosts[i] in the stack file; a single host is `host`.
    const configPath = args.plan.hostConfigPath;
    if (!ssh) {
      throw new pulumi.RunError(
        `stack ${args.plan.stack}: ${configPath}.ssh is missing: set ${configPath}.ssh.host (and port/user) so the kit can reach the machine.`,
      );
    }
    requirePinnedHostKey(args.plan.stack, ssh, `${configPath}.ssh.hostPublicKey`, this);
    this.address = pulumi.output(ssh.host);
    this.sshPort = ssh.port;
    this.sshUser = ssh.user;
    this.hostPublicKey = ssh.hostPublicKey === undefined ? undefined : pulumi.output(ssh.hostPublicKey);
    this.sshPrivateKey = args.sshPrivateKey === undefined ? undefined : pulumi.secret(args.sshPrivateKey);
    this.connection = pinnedConnection(ssh, this.sshPrivateKey);
    this.registerOutputs({ kind: this.kind, address: this.address, sshPort: this.sshPort, sshUser: this.sshUser });
  }
}

/** How the kit reaches a bare-metal machine over SSH (a stack's host.ssh, or a split's hosts[i].ssh). */
export interface SshEndpoint {
  host: string;
  port: number;
  user: string;
  hostPublicKey?: string | undefined;
}

/**
 * The kit only connects to a pinned host key: without one `up` stops here, naming the config key
 * that pins it (`keyPath`, e.g. host.ssh.hostPublicKey); a preview warns and goes on, since it
 * must work before the machine exists (nothing connects then).
 */
export function requirePinnedHostKey(
  stack: string,
  ssh: SshEndpoint,
  keyPath: string,
  resource: pulumi.Resource,
): void {
  if (ssh.hostPublicKey) return;
  const message =
    `stack ${stack}: ${keyPath} is not set; the kit only connects to a pinned host key. ` +
    `Read it with \`ssh-keyscan -p ${ssh.port} -t ed25519 ${ssh.host}\`, check its fingerprint out of band, and set it with ` +
    `\`pulumi config set --path kimi-kit:${keyPath} "ssh-ed25519 AAAA…"\`.`;
  if (!pulumi.runtime.isDryRun()) throw new pulumi.RunError(message);
  pulumi.log.warn(`${message} Preview continues; \`pulumi up\` will stop here.`, resource);
}

/**
 * The remote-command connection to a bare-metal machine: its pinned host key, and the kit's private key when given
 * (else the SSH agent).
 */
export function pinnedConnection(
  ssh: SshEndpoint,
  privateKey: pulumi.Output<string> | undefined,
): pulumi.Output<command.types.input.remote.ConnectionArgs> {
  return pulumi.secret(
    pulumi.output({
      host: ssh.host,
      port: ssh.port,
      user: ssh.user,
      ...(ssh.hostPublicKey ? { hostKey: ssh.hostPublicKey } : {}),
      ...(privateKey ? { privateKey } : {}),
      dialErrorLimit: 20,
      perDialTimeout: 30,
    }),
  ) as pulumi.Output<command.types.input.remote.ConnectionArgs>;
}
