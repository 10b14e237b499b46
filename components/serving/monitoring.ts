/**
 * Prometheus on the gateway host (planner/fleet-serving.ts, planner/monitoring.ts): Debian's
 * package run by monitoring.sh under its own name, scraping every replica's /metrics (with the
 * replicas' key, which reaches the host on stdin only) and the gateway's exporter, with the kit's
 * alert rules. It listens on loopback: reach it through an SSH tunnel. When a team has a tokens-per-
 * minute limit, the token limiter (tools/token-limiter.ts, token-limiter.sh) runs beside it and
 * keeps the gateway's blocked map in step with Prometheus' per-team counters.
 */
import * as pulumi from "@pulumi/pulumi";
import type * as command from "@pulumi/command";
import type { MonitoringServing, TokenLimiterServing } from "../../planner/fleet-serving";
import type { Plan } from "../../planner/plan";
import { REMOTE_KIT_DIR } from "./container-spec";
import { remoteScript, scriptSha256 } from "../host/host-prep";
import { hostProgramJavaScript, hostProgramJavaScriptSha256 } from "../exec/host-programs";
import { remoteCommand, stagedFilesScript } from "../exec/remote-exec";

/** argv after `monitoring.sh`: apply the files staged in `fromDir`, the key on stdin. */
export function monitoringApplyArgv(monitoring: MonitoringServing, fromDir: string): string[] {
  return [
    "apply",
    "--name",
    monitoring.name,
    "--from",
    fromDir,
    "--config-dir",
    monitoring.configDir,
    "--listen",
    `${monitoring.listen.address}:${monitoring.listen.port}`,
    "--bearer-stdin",
  ];
}

export function monitoringApplyScript(monitoring: MonitoringServing): string {
  const staging = `${REMOTE_KIT_DIR}/staged/monitoring-${monitoring.name}`;
  return stagedFilesScript(
    staging,
    { "prometheus.yml": monitoring.prometheusYml, "rules.yml": monitoring.rulesYml },
    remoteScript("monitoring.sh", monitoringApplyArgv(monitoring, staging)),
  );
}

/** argv after `token-limiter.sh`: apply the staged program with the gateway's files. */
export function tokenLimiterApplyArgv(limiter: TokenLimiterServing, fromFile: string): string[] {
  return [
    "apply",
    "--name",
    limiter.name,
    "--from",
    fromFile,
    "--prometheus",
    limiter.prometheusUrl,
    "--limits",
    limiter.limitsFile,
    "--socket",
    limiter.socket,
    "--blocked-map",
    limiter.blockedMapFile,
    "--interval",
    String(limiter.intervalSeconds),
  ];
}

export function tokenLimiterApplyScript(limiter: TokenLimiterServing): string {
  const staging = `${REMOTE_KIT_DIR}/staged/token-limiter-${limiter.name}`;
  return stagedFilesScript(
    staging,
    { "token-limiter.js": hostProgramJavaScript("token-limiter") },
    remoteScript("token-limiter.sh", tokenLimiterApplyArgv(limiter, `${staging}/token-limiter.js`)),
  );
}

export interface MonitoringArgs {
  plan: Plan;
  monitoring: MonitoringServing;
  tokenLimiter: TokenLimiterServing | undefined;
  connection: pulumi.Input<command.types.input.remote.ConnectionArgs>;
  /** The replicas' key: llama-server's /metrics wants it. */
  backendKey: pulumi.Input<string>;
  after: pulumi.Resource[];
}

export class Monitoring extends pulumi.ComponentResource {
  /** Where Prometheus answers on the gateway host. */
  readonly url: string;

  constructor(name: string, args: MonitoringArgs, opts?: pulumi.ComponentResourceOptions) {
    super("kimi-kit:serving:Monitoring", name, {}, opts);
    const { plan, monitoring } = args;
    const step = remoteCommand(
      plan.config.deployment.remoteExecutor,
      `${name}-prometheus`,
      {
        connection: args.connection,
        create: monitoringApplyScript(monitoring),
        delete: remoteScript("monitoring.sh", [
          "remove",
          "--name",
          monitoring.name,
          "--config-dir",
          monitoring.configDir,
        ]),
        stdin: pulumi.secret(pulumi.output(args.backendKey).apply((key) => `${key}\n`)),
        triggers: [scriptSha256("monitoring.sh"), scriptSha256("lib-common.sh"), monitoring.name],
        logging: "stdoutAndStderr",
      },
      { parent: this, dependsOn: args.after },
    );
    if (args.tokenLimiter) {
      const limiter = args.tokenLimiter;
      remoteCommand(
        plan.config.deployment.remoteExecutor,
        `${name}-token-limiter`,
        {
          connection: args.connection,
          create: tokenLimiterApplyScript(limiter),
          delete: remoteScript("token-limiter.sh", ["remove", "--name", limiter.name]),
          triggers: [
            scriptSha256("token-limiter.sh"),
            scriptSha256("lib-common.sh"),
            hostProgramJavaScriptSha256("token-limiter"),
            limiter.name,
          ],
          logging: "stdoutAndStderr",
        },
        { parent: this, dependsOn: [step.resource] },
      );
    }
    this.url = `http://${monitoring.listen.address}:${monitoring.listen.port}`;
    this.registerOutputs({ url: this.url, ready: step.stdout });
  }
}
