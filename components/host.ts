/**
 * The machine llama-server runs on. Bare metal: no cloud resources, only a pinned SSH connection.
 * Cloud (AWS): the instance, volume and security group land with @pulumi/aws, which this kit does
 * not depend on yet. Until then a cloud stack previews (registering nothing AWS-specific, so the
 * plan can be exported and reviewed) and `pulumi up` stops with a RunError. The interface below
 * (address, port, user, connection) is what an AWS-backed Host will fill in.
 */
import * as pulumi from "@pulumi/pulumi";
import type * as command from "@pulumi/command";
import type { Plan } from "../planner/plan";

export interface HostArgs {
  plan: Plan;
  /** The `kimi-kit:sshPrivateKey` secret; without it the SSH agent is used. */
  sshPrivateKey?: pulumi.Input<string>;
}

/**
 * Throws the RunError an update of a cloud stack ends with until @pulumi/aws lands; preview passes.
 * LlmDeployment calls it before registering anything.
 */
export function assertHostDeployable(plan: Plan): void {
  const host = plan.config.host;
  if (host.kind === "cloud" && !pulumi.runtime.isDryRun()) {
    throw new pulumi.RunError(
      `stack ${plan.stack}: host.kind "cloud" (aws ${host.instanceType}) cannot be deployed yet: the AWS host component lands with @pulumi/aws. ` +
        "`pulumi preview` shows the plan; for now use a bare-metal host (host.kind: bare-metal with host.ssh).",
    );
  }
}

export class Host extends pulumi.ComponentResource {
  readonly kind: "bare-metal" | "cloud";
  /** Address clients and SSH use; undefined for a cloud host until @pulumi/aws lands. */
  readonly address: string | undefined;
  readonly sshPort: number;
  readonly sshUser: string;
  /** The pinned host public key ("ssh-ed25519 AAAA…"). */
  readonly hostPublicKey: string | undefined;
  readonly sshPrivateKey: pulumi.Output<string> | undefined;
  /** Connection for @pulumi/command remote resources; undefined while no host exists (cloud preview). */
  readonly connection: pulumi.Output<command.types.input.remote.ConnectionArgs> | undefined;

  constructor(name: string, args: HostArgs, opts?: pulumi.ComponentResourceOptions) {
    assertHostDeployable(args.plan);
    super("kimi-kit:host:Host", name, {}, opts);
    const hostConfig = args.plan.config.host;
    this.kind = hostConfig.kind;
    if (hostConfig.kind === "cloud") {
      // NOTE: the AWS branch (ec2.Instance of plan.host.cloud.instanceType in its region, an EBS
      // volume of host.diskSize, a security group open to host.allowedCidrs on the SSH and serving
      // ports, the host key read back from the instance) needs @pulumi/aws, which is not a
      // dependency yet. Preview registers nothing AWS-specific; an update refused above.
      this.address = undefined;
      this.sshPort = 22;
      this.sshUser = "ubuntu";
      this.hostPublicKey = undefined;
      this.sshPrivateKey = undefined;
      this.connection = undefined;
      this.registerOutputs({ kind: this.kind });
      return;
    }
    const ssh = hostConfig.ssh;
    if (!ssh) {
      throw new pulumi.RunError(`stack ${args.plan.stack}: host.ssh is missing: set host.ssh.host (and port/user) so the kit can reach the machine.`);
    }
    if (!ssh.hostPublicKey) {
      const message =
        `stack ${args.plan.stack}: host.ssh.hostPublicKey is not set; the kit only connects to a pinned host key. ` +
        `Read it with \`ssh-keyscan -p ${ssh.port} -t ed25519 ${ssh.host}\`, check its fingerprint out of band, and set it with ` +
        `\`pulumi config set --path kimi-kit:host.ssh.hostPublicKey "ssh-ed25519 AAAA…"\`.`;
      // Preview must work before the machine exists (nothing connects then); an update must not.
      if (!pulumi.runtime.isDryRun()) throw new pulumi.RunError(message);
      pulumi.log.warn(`${message} Preview continues; \`pulumi up\` will stop here.`, this);
    }
    this.address = ssh.host;
    this.sshPort = ssh.port;
    this.sshUser = ssh.user;
    this.hostPublicKey = ssh.hostPublicKey;
    this.sshPrivateKey = args.sshPrivateKey === undefined ? undefined : pulumi.secret(args.sshPrivateKey);
    this.connection = pulumi.secret(
      pulumi.output({
        host: ssh.host,
        port: ssh.port,
        user: ssh.user,
        ...(ssh.hostPublicKey ? { hostKey: ssh.hostPublicKey } : {}),
        ...(this.sshPrivateKey ? { privateKey: this.sshPrivateKey } : {}),
        dialErrorLimit: 20,
        perDialTimeout: 30,
      }),
    ) as pulumi.Output<command.types.input.remote.ConnectionArgs>;
    this.registerOutputs({ kind: this.kind, address: this.address, sshPort: this.sshPort, sshUser: this.sshUser });
  }
}
