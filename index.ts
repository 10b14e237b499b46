/**
 * The Pulumi program: the `kimi-kit:*` config of the selected stack → one LlmDeployment.
 * `pulumi preview` needs no SSH or Docker connection (remote commands do not run in preview and the
 * docker provider is configured without a daemon check); a stack the planner refuses fails here with
 * the planner's reason and registers nothing. The config is checked first, as a whole: misspelled
 * keys, secrets set in plain text and an API key that is not one stop `up` before any resource.
 */
import * as pulumi from "@pulumi/pulumi";
import { ConfigError } from "./planner/errors";
import { readProgramConfig, type ProgramConfig } from "./planner/stack-file";
import { deployStack } from "./components/llm-deployment";

/**
 * Whether Pulumi holds a config key encrypted. @pulumi/pulumi keeps the secret keys' names for the
 * program (runtime.isConfigSecret, marked internal, fed by PULUMI_CONFIG_SECRET_KEYS); when an SDK
 * lacks it, the environment variable is read directly, and without either nothing counts as secret,
 * so a secret key is refused rather than trusted.
 */
function isSecretConfigKey(fullKey: string): boolean {
  const runtime = pulumi.runtime as typeof pulumi.runtime & { isConfigSecret?: (key: string) => boolean };
  // Older language hosts named keys "<namespace>:config:<key>"; accept either spelling.
  const spellings = [fullKey, fullKey.replace(":", ":config:")];
  if (typeof runtime.isConfigSecret === "function") return spellings.some((key) => runtime.isConfigSecret!(key));
  try {
    const keys = JSON.parse(process.env.PULUMI_CONFIG_SECRET_KEYS ?? "[]") as unknown;
    return Array.isArray(keys) && spellings.some((key) => keys.includes(key));
  } catch {
    return false;
  }
}

function programConfig(stack: string): ProgramConfig {
  try {
    return readProgramConfig(stack, pulumi.runtime.allConfig(), isSecretConfigKey);
  } catch (error) {
    // A RunError prints the lines without a stack trace.
    if (error instanceof ConfigError) throw new pulumi.RunError(error.message);
    throw error;
  }
}

const stack = pulumi.getStack();
const { raw, secrets } = programConfig(stack);
// Secrets reach the components only as secret Outputs: never a plain value in state or logs.
const secret = (value: string | undefined) => (value === undefined ? undefined : pulumi.secret(value));

const deployment = deployStack(stack, raw, {
  apiKey: secret(secrets.apiKey),
  sshPrivateKey: secret(secrets.sshPrivateKey),
  huggingFaceToken: secret(secrets.huggingFaceToken),
  tlsCertificate: secret(secrets.tlsCertificate),
  tlsPrivateKey: secret(secrets.tlsPrivateKey),
});

export const endpoint = deployment.endpoint;
/** A public listener with the internal CA: the CA certificate clients trust (`curl --cacert`). */
export const caCertificate = deployment.caCertificate;
export const apiKey = deployment.apiKey;
export const plan = deployment.planSummary;
export const projectedDecodeTokensPerSecond = deployment.projectedDecodeTokensPerSecond;
export const projectedPrefillTokensPerSecond = deployment.projectedPrefillTokensPerSecond;
export const projectedTtft32kSeconds = deployment.projectedTtft32kSeconds;
export const measuredDecodeTokensPerSecond = deployment.measuredDecodeTokensPerSecond;
export const measuredPrefillTokensPerSecond = deployment.measuredPrefillTokensPerSecond;
/** The host's memory read bandwidth HostPrep measured, and the plan re-projected with it (null without one). */
export const measuredBandwidthGBps = deployment.measuredBandwidthGBps;
export const projectedFromMeasuredBandwidthDecodeTokensPerSecond =
  deployment.projectedFromMeasuredBandwidthDecodeTokensPerSecond;
export const projectedFromMeasuredBandwidthPrefillTokensPerSecond =
  deployment.projectedFromMeasuredBandwidthPrefillTokensPerSecond;
/** Projected from the plan's host, projected from the measured bandwidth, and measured: side by side. */
export const speed = deployment.speedSideBySide;
export const monthlyCostUsd = deployment.monthlyCostUsd;
export const breakEvenTokensPerMonth = deployment.breakEvenTokensPerMonth;
/**
 * A split (kimi-kit:hosts): the image every host runs, the head's layers, each worker's endpoint, layers and planned
 * bytes; null for one host.
 */
export const cluster = deployment.cluster;
/** kimi-kit:teams: each team's key at the gateway (secret: `pulumi stack output --show-secrets teamApiKeys`). */
export const teamApiKeys = deployment.teamApiKeys;
/** A fleet: each replica's listener and its smoke request's timings; null for one host. */
export const replicas = deployment.replicas;
/** A fleet's Prometheus on the gateway host (loopback there); null for one host. */
export const monitoringUrl = deployment.monitoringUrl;
/** A fleet's Grafana dashboard (JSON) for that Prometheus; null for one host. */
export const grafanaDashboard = deployment.grafanaDashboard;
