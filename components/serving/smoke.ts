/**
 * The smoke request every llama-server the kit starts gets once it is up: a request without the key
 * must be refused, one short chat request with it must answer; llama-server's own timings for it
 * become the deployment's measured speed.
 */
import * as pulumi from "@pulumi/pulumi";
import type * as command from "@pulumi/command";
import { shellQuote } from "../../planner/shell";
import { hostLocalAddress } from "./container-spec";
import { remoteCommand, type RemoteExecutor } from "../exec/remote-exec";

export interface SmokeTimings {
  decodeTokensPerSecond: number | null;
  prefillTokensPerSecond: number | null;
}

/** Reads the `{"timings":{…}}` line the smoke command prints. */
export function parseSmokeTimings(stdout: string | undefined): SmokeTimings {
  for (const line of (stdout ?? "").split("\n").reverse()) {
    const start = line.indexOf("{");
    if (start < 0 || !line.includes('"timings"')) continue;
    try {
      const timings = (JSON.parse(line.slice(start)) as { timings?: Record<string, unknown> }).timings ?? {};
      const number = (value: unknown) => (typeof value === "number" && Number.isFinite(value) ? value : null);
      return {
        decodeTokensPerSecond: number(timings.predicted_per_second),
        prefillTokensPerSecond: number(timings.prompt_per_second),
      };
    } catch {
      continue;
    }
  }
  return { decodeTokensPerSecond: null, prefillTokensPerSecond: null };
}

/**
 * The smoke script: waits for /health, checks that a request without the key is refused (401:
 * llama-server runs with no authentication at all when its key file holds no usable key), sends
 * one short chat request (the key from stdin, via a header file), prints timings.
 */
export function smokeScript(address: string, port: number, alias: string, waitSeconds: number): string {
  const base = `http://${address}:${port}`;
  const body = JSON.stringify({
    model: alias,
    messages: [{ role: "user", content: "Reply with one short sentence: what is 2+2?" }],
    max_tokens: 16,
  });
  return [
    "set -eu",
    'umask 077; headers=$(mktemp); response=$(mktemp); trap \'rm -f "$headers" "$response"\' EXIT',
    `{ printf 'Authorization: Bearer '; head -n1 | tr -d '\\r\\n'; printf '\\n'; } > "$headers"`,
    `i=0; until curl -fsS -o /dev/null ${shellQuote([`${base}/health`])}; do i=$((i+5)); [ "$i" -ge ${waitSeconds} ] && { echo "smoke: ${base}/health did not answer in ${waitSeconds}s" >&2; exit 1; }; sleep 5; done`,
    `code=$(curl -sS -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' -d ${shellQuote([body])} ${shellQuote([`${base}/v1/chat/completions`])})`,
    `[ "$code" = 401 ] || { echo "smoke: ${base}/v1/chat/completions answered HTTP $code without an API key (expected 401): the server is not checking keys" >&2; exit 1; }`,
    `curl -fsS -H @"$headers" -H 'Content-Type: application/json' -d ${shellQuote([body])} ${shellQuote([`${base}/v1/chat/completions`])} > "$response"`,
    `printf '{%s}\\n' "$(grep -o '"timings":{[^}]*}' "$response" | head -n1)"`,
  ].join("\n");
}

export interface SmokeStepArgs {
  connection: pulumi.Input<command.types.input.remote.ConnectionArgs>;
  /** Where llama-server listens (plan.listen): the step runs on its host. */
  listen: { address: string; port: number };
  alias: string;
  waitSeconds: number;
  /** The key llama-server checks; it reaches the step on stdin only. */
  apiKey: pulumi.Input<string>;
  /** Re-run when the container changes (its spec). */
  triggers: pulumi.Input<unknown>[];
}

/** The smoke request as a remote step, and llama-server's timings for it. */
export function smokeStep(
  executor: RemoteExecutor,
  name: string,
  args: SmokeStepArgs,
  opts: pulumi.CustomResourceOptions,
): pulumi.Output<SmokeTimings> {
  const step = remoteCommand(
    executor,
    name,
    {
      connection: args.connection,
      create: smokeScript(hostLocalAddress(args.listen.address), args.listen.port, args.alias, args.waitSeconds),
      stdin: args.apiKey,
      triggers: args.triggers,
      logging: "stdoutAndStderr",
    },
    opts,
  );
  return step.stdout.apply(parseSmokeTimings);
}
