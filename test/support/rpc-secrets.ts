/**
 * Values as a provider or a policy sees them: the engine hands registrations over with secrets
 * wrapped in Pulumi's RPC form; Pulumi's own unwrapRpcSecret undoes that, here at any depth.
 */
import * as pulumi from "@pulumi/pulumi";

export function unwrapSecrets(value: unknown): unknown {
  const unwrapped: unknown = pulumi.runtime.unwrapRpcSecret(value);
  if (Array.isArray(unwrapped)) return unwrapped.map(unwrapSecrets);
  if (unwrapped && typeof unwrapped === "object" && Object.getPrototypeOf(unwrapped) === Object.prototype)
    return Object.fromEntries(Object.entries(unwrapped).map(([key, entry]) => [key, unwrapSecrets(entry)]));
  return unwrapped;
}
