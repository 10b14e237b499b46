/**
 * The front door of a public listener (planner/front-door.ts): first the host firewall
 * (firewall.sh: the kit's own nftables table admits only serving.allowedCidrs to the port), then
 * HAProxy terminating TLS on bindAddress:port in front of llama-server on loopback (front-door.sh).
 * Destroy runs the other way round: HAProxy goes, then the table. With the internal CA, the CA
 * certificate front-door.sh made on the host is an output, for clients to trust.
 */
import * as pulumi from "@pulumi/pulumi";
import type * as command from "@pulumi/command";
import { remoteCommand } from "../exec/remote-exec";
import { parseKeyValues, remoteScript, scriptSha256 } from "../host/host-prep";
import type { Plan } from "../../planner/plan";
import {
  firewallApplyArgv,
  firewallRemoveArgv,
  frontDoorDownArgv,
  frontDoorPlan,
  frontDoorUpArgv,
  type FrontDoorPlan,
} from "../../planner/front-door";

export interface FrontDoorArgs {
  plan: Plan;
  connection: pulumi.Input<command.types.input.remote.ConnectionArgs>;
  /** The host's address as clients dial it: a name on the server certificate (internal CA). */
  hostAddress: pulumi.Input<string>;
  /** serving.tls.source "secrets": kimi-kit:tlsCertificate and kimi-kit:tlsPrivateKey (PEM). */
  tlsCertificate?: pulumi.Input<string>;
  tlsPrivateKey?: pulumi.Input<string>;
  /** Steps that must run first (the scripts copied to the host). */
  after: pulumi.Resource[];
}

/** The CA certificate (PEM) in front-door.sh's stdout, or undefined (tls from secrets). */
export function caCertificateOf(stdout: string | undefined): string | undefined {
  const encoded = parseKeyValues(stdout ?? "").ca_certificate_base64;
  if (!encoded) return undefined;
  const pem = Buffer.from(encoded, "base64").toString("utf8");
  return /^-----BEGIN CERTIFICATE-----\n[\s\S]+-----END CERTIFICATE-----\n?$/.test(pem) ? pem : undefined;
}

/** What front-door.sh reads on stdin with --tls secrets: the certificate chain, then the key. */
export function tlsSecretsPem(certificate: string, privateKey: string): string {
  const line = (text: string) => (text.endsWith("\n") ? text : `${text}\n`);
  return line(certificate) + line(privateKey);
}

export class FrontDoor extends pulumi.ComponentResource {
  readonly door: FrontDoorPlan;
  /** The CA certificate clients trust (internal CA); undefined with tls from secrets. */
  readonly caCertificate: pulumi.Output<string | undefined>;
  /** The last step; what uses the front door depends on it. */
  readonly ready: pulumi.Resource;

  constructor(name: string, args: FrontDoorArgs, opts?: pulumi.ComponentResourceOptions) {
    const { plan } = args;
    const door = frontDoorPlan(plan.stack, plan.config.serving);
    if (!door)
      throw new Error(
        `internal: FrontDoor ${name}: serving.bindAddress ${plan.config.serving.bindAddress} is loopback; there is no front door to build`,
      );
    if (door.tlsSource === "secrets" && (args.tlsCertificate === undefined || args.tlsPrivateKey === undefined)) {
      throw new pulumi.RunError(
        `stack ${plan.stack}: serving.tls.source "secrets" needs kimi-kit:tlsCertificate and kimi-kit:tlsPrivateKey (secret config)`,
      );
    }
    super("kimi-kit:serving:FrontDoor", name, {}, opts);
    this.door = door;
    const executor = plan.config.deployment.remoteExecutor;
    const library = scriptSha256("lib-common.sh");

    // The port is filtered before anything listens on it publicly.
    const firewall = remoteCommand(
      executor,
      `${name}-firewall`,
      {
        connection: args.connection,
        create: remoteScript("firewall.sh", firewallApplyArgv(door)),
        delete: remoteScript("firewall.sh", firewallRemoveArgv(door)),
        triggers: [scriptSha256("firewall.sh"), library, door.firewallTable],
        logging: "stdoutAndStderr",
      },
      { parent: this, dependsOn: args.after },
    );
    const stdin =
      door.tlsSource === "secrets"
        ? pulumi.secret(
            pulumi
              .all([args.tlsCertificate!, args.tlsPrivateKey!])
              .apply(([certificate, key]) => tlsSecretsPem(certificate, key)),
          )
        : undefined;
    const proxy = remoteCommand(
      executor,
      `${name}-proxy`,
      {
        connection: args.connection,
        create: pulumi
          .output(args.hostAddress)
          .apply((address) => remoteScript("front-door.sh", frontDoorUpArgv(door, [address]))),
        delete: remoteScript("front-door.sh", frontDoorDownArgv(door)),
        stdin,
        // A new name or TLS source is a new front door; a changed address or certificate re-runs `up` in place.
        triggers: [scriptSha256("front-door.sh"), library, door.name, door.tlsSource],
        logging: "stdoutAndStderr",
      },
      { parent: this, dependsOn: [firewall.resource] },
    );
    this.caCertificate = proxy.stdout.apply(caCertificateOf);
    this.ready = proxy.resource;
    this.registerOutputs({ caCertificate: this.caCertificate });
  }
}
