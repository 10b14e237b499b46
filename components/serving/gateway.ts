/**
 * The fleet's gateway (planner/fleet-serving.ts, planner/gateway.ts): HAProxy on the gateway host,
 * the only public listener. First the host firewall (the kit's table admits serving.allowedCidrs to
 * the public port and only the host itself to the exporter), then gateway.sh apply with the
 * configuration and the team maps haproxyGatewayConfig writes; the replicas' key (and, with TLS
 * from secrets, the certificate and key) reach it on stdin only.
 *
 * Team keys are generated here, once per team, and kept as secrets in the state; the gateway only
 * ever sees their sha256. Removing a team deletes its key and changes the maps: the apply step runs
 * again and HAProxy reloads without a restart, and the replicas are not touched (nothing of theirs
 * depends on the teams).
 */
import * as pulumi from "@pulumi/pulumi";
import type * as command from "@pulumi/command";
import { firewallAllowArgv, type GatewayServing } from "../../planner/fleet-serving";
import {
  GATEWAY_FILES,
  gatewayApplyArgv,
  haproxyGatewayConfig,
  keySha256,
  type GatewayTeam,
} from "../../planner/gateway";
import type { Plan } from "../../planner/plan";
import { REMOTE_KIT_DIR } from "./container-spec";
import { caCertificateOf, tlsSecretsPem } from "./front-door";
import { remoteScript, scriptSha256 } from "../host/host-prep";
import { localCommand, remoteCommand, stagedFilesScript, type RemoteStep } from "../exec/remote-exec";

/** Generates one API key: 32 random bytes, hex (what the single-host apiKey uses too). */
export const GENERATE_KEY_COMMAND = "head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n'";

/**
 * The apply step's script: the three files staged on the host, then gateway.sh apply reading them
 * (and the secrets on stdin). `sans` are the names clients dial, for the internal CA's certificate.
 */
export function gatewayApplyScript(
  gateway: GatewayServing,
  teams: readonly GatewayTeam[],
  sans: readonly string[],
): string {
  const files = haproxyGatewayConfig({ ...gateway.input, teams: [...teams] });
  const staging = `${REMOTE_KIT_DIR}/staged/gateway-${gateway.input.name}`;
  const argv = gatewayApplyArgv(gateway.input, staging, { tls: gateway.tlsSource, sans, secretsStdin: true });
  return stagedFilesScript(
    staging,
    {
      [GATEWAY_FILES.config]: files.config,
      [GATEWAY_FILES.teamsMap]: files.teamsMap,
      [GATEWAY_FILES.limitsMap]: files.limitsMap,
      [GATEWAY_FILES.tokenLimitsMap]: files.tokenLimitsMap,
    },
    remoteScript("gateway.sh", argv),
  );
}

/** What gateway.sh --secrets-stdin reads: the replicas' key on the first line, then the PEM (TLS from secrets). */
export function gatewayStdin(backendKey: string, pem: string | undefined): string {
  return `${backendKey}\n${pem ?? ""}`;
}

export interface GatewayArgs {
  plan: Plan;
  gateway: GatewayServing;
  connection: pulumi.Input<command.types.input.remote.ConnectionArgs>;
  /** The gateway host's address as clients dial it (a name on the internal CA's certificate). */
  hostAddress: pulumi.Input<string>;
  /** The replicas' own key: the gateway puts it on every request it forwards. */
  backendKey: pulumi.Input<string>;
  tlsCertificate?: pulumi.Input<string>;
  tlsPrivateKey?: pulumi.Input<string>;
  /** Steps that must run first (the host prepared, the replicas serving). */
  after: pulumi.Resource[];
}

type GatewayTeamPlan = NonNullable<Plan["teams"]>[number];
type Executor = Plan["config"]["deployment"]["remoteExecutor"];
/** One team's generated key (a secret in the state). */
interface TeamKey {
  team: GatewayTeamPlan;
  key: pulumi.Output<string>;
}

/** TLS from secrets needs both secrets: refused before anything is registered. */
function requireTlsSecrets(args: GatewayArgs): void {
  const { plan, gateway } = args;
  if (gateway.tlsSource === "secrets" && (args.tlsCertificate === undefined || args.tlsPrivateKey === undefined)) {
    throw new pulumi.RunError(
      `stack ${plan.stack}: serving.tls.source "secrets" needs kimi-kit:tlsCertificate and kimi-kit:tlsPrivateKey (secret config)`,
    );
  }
}

/** One resource per team: adding a team adds one key, removing one deletes only that key. */
function generateTeamKeys(
  parent: pulumi.Resource,
  name: string,
  executor: Executor,
  teams: readonly GatewayTeamPlan[],
): TeamKey[] {
  return teams.map((team) => ({
    team,
    key: localCommand(executor, `${name}-key-${team.name}`, GENERATE_KEY_COMMAND, { parent }),
  }));
}

/** The host firewall (the kit's table), after `args.after`: the apply step waits on it. */
function gatewayFirewall(
  parent: pulumi.Resource,
  name: string,
  args: GatewayArgs,
  firewall: NonNullable<GatewayServing["firewall"]>,
  library: string,
): pulumi.Resource {
  return remoteCommand(
    args.plan.config.deployment.remoteExecutor,
    `${name}-firewall`,
    {
      connection: args.connection,
      create: remoteScript("firewall.sh", firewallAllowArgv(firewall)),
      delete: remoteScript("firewall.sh", ["remove", "--table", firewall.table]),
      triggers: [scriptSha256("firewall.sh"), library, firewall.table],
      logging: "stdoutAndStderr",
    },
    { parent, dependsOn: args.after },
  ).resource;
}

/** The maps hold hashes only; they are computed from the keys, so the script is no secret. */
function hashedTeamsOf(keys: readonly TeamKey[]): pulumi.Output<GatewayTeam[]> {
  return pulumi.unsecret(
    pulumi.all(keys.map((entry) => entry.key)).apply((values) =>
      keys.map((entry, index): GatewayTeam => ({
        name: entry.team.name,
        keySha256: keySha256(values[index]!),
        requestsPerMinute: entry.team.rpm,
        ...(entry.team.tpm !== undefined ? { tokensPerMinute: entry.team.tpm } : {}),
      })),
    ),
  );
}

/** gateway.sh apply with the configuration and the team maps; the secrets on stdin. */
function haproxyApplyStep(
  parent: pulumi.Resource,
  name: string,
  args: GatewayArgs,
  keys: readonly TeamKey[],
  library: string,
  ready: pulumi.Resource[],
): RemoteStep {
  const { gateway } = args;
  const hashedTeams = hashedTeamsOf(keys);
  const pem =
    gateway.tlsSource === "secrets"
      ? pulumi
          .all([args.tlsCertificate!, args.tlsPrivateKey!])
          .apply(([certificate, key]) => tlsSecretsPem(certificate, key))
      : pulumi.output(undefined);
  return remoteCommand(
    args.plan.config.deployment.remoteExecutor,
    `${name}-haproxy`,
    {
      connection: args.connection,
      create: pulumi
        .all([hashedTeams, args.hostAddress])
        .apply(([hashed, address]) => gatewayApplyScript(gateway, hashed, [address])),
      delete: remoteScript("gateway.sh", [
        "remove",
        "--name",
        gateway.input.name,
        "--config-dir",
        gateway.input.configDir,
      ]),
      stdin: pulumi.secret(pulumi.all([args.backendKey, pem]).apply(([key, chain]) => gatewayStdin(key, chain))),
      // A new name or TLS source is a new gateway; new teams, limits, replicas or a new address re-run apply in place
      // (a reload).
      triggers: [scriptSha256("gateway.sh"), library, gateway.input.name, gateway.tlsSource],
      logging: "stdoutAndStderr",
    },
    { parent, dependsOn: ready },
  );
}

export class Gateway extends pulumi.ComponentResource {
  /** Each team's key, by team name (secret). */
  readonly teamKeys: pulumi.Output<Record<string, string>>;
  readonly caCertificate: pulumi.Output<string | undefined>;
  readonly ready: pulumi.Resource;

  constructor(name: string, args: GatewayArgs, opts?: pulumi.ComponentResourceOptions) {
    const { plan, gateway } = args;
    requireTlsSecrets(args);
    super("kimi-kit:serving:Gateway", name, {}, opts);
    const executor = plan.config.deployment.remoteExecutor;
    const library = scriptSha256("lib-common.sh");
    const teams = plan.teams ?? [];
    const keys = generateTeamKeys(this, name, executor, teams);
    this.teamKeys = pulumi.secret(
      pulumi
        .all(keys.map((entry) => entry.key))
        .apply((values) => Object.fromEntries(keys.map((entry, index) => [entry.team.name, values[index]!]))),
    );
    const ready = gateway.firewall ? [gatewayFirewall(this, name, args, gateway.firewall, library)] : args.after;
    const apply = haproxyApplyStep(this, name, args, keys, library, ready);
    this.caCertificate = apply.stdout.apply(caCertificateOf);
    this.ready = apply.resource;
    this.registerOutputs({ caCertificate: this.caCertificate, teams: teams.map((team) => team.name) });
  }
}
