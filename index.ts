/**
 * The Pulumi program: the `kimi-kit:*` config of the selected stack → one LlmDeployment.
 * `pulumi preview` needs no SSH or Docker connection (remote commands do not run in preview and the
 * docker provider is configured without a daemon check); a stack the planner refuses fails here with
 * the planner's reason and registers nothing.
 */
import * as pulumi from "@pulumi/pulumi";
import { CONFIG_NAMESPACE } from "./planner/config";
import { deployStack } from "./components/llm-deployment";

const config = new pulumi.Config(CONFIG_NAMESPACE);
const raw: Record<string, unknown> = {};
for (const key of ["host", "model", "serving", "costs", "projection", "deployment"]) {
  const value = config.getObject<unknown>(key);
  if (value !== undefined) raw[key] = value;
}
const apiKeySecret = config.getSecret("apiKey");
const sshPrivateKey = config.getSecret("sshPrivateKey");
const huggingFaceToken = config.getSecret("huggingFaceToken");
// Secrets never go through the schema as values: it only needs to know they are set, encrypted.
for (const [key, value] of Object.entries({ apiKey: apiKeySecret, sshPrivateKey, huggingFaceToken })) {
  if (value !== undefined) raw[key] = { secure: "(set)" };
}

const deployment = deployStack(pulumi.getStack(), raw, { apiKey: apiKeySecret, sshPrivateKey, huggingFaceToken });

export const endpoint = deployment.endpoint;
export const apiKey = deployment.apiKey;
export const plan = deployment.planSummary;
export const projectedDecodeTokensPerSecond = deployment.projectedDecodeTokensPerSecond;
export const projectedPrefillTokensPerSecond = deployment.projectedPrefillTokensPerSecond;
export const projectedTtft32kSeconds = deployment.projectedTtft32kSeconds;
export const measuredDecodeTokensPerSecond = deployment.measuredDecodeTokensPerSecond;
export const measuredPrefillTokensPerSecond = deployment.measuredPrefillTokensPerSecond;
export const monthlyCostUsd = deployment.monthlyCostUsd;
export const breakEvenTokensPerMonth = deployment.breakEvenTokensPerMonth;
