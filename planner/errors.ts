import type { z } from "zod";

/**
 * One readable line per problem: the key path, the value found and what is allowed. `keysAt` names
 * the keys allowed where an unknown key was found, so a typo's line lists the right spelling.
 */
export function describeIssues(
  issues: readonly z.core.$ZodIssue[],
  prefix: (path: readonly PropertyKey[]) => string = () => "",
  keysAt: (path: readonly PropertyKey[]) => readonly string[] | undefined = () => undefined,
): string[] {
  return issues.map((issue) => {
    const path = formatPath(issue.path);
    const found = `found ${foundValue(issue)}`;
    const keys = issue.code === "unrecognized_keys" ? keysAt(issue.path) : undefined;
    const allowedText = keys ? `allowed: only the keys ${keys.join(", ")}` : allowed(issue);
    return `${prefix(issue.path)}${path || "(top level)"}: ${found}; ${allowedText}`;
  });
}

/** The value at fault: for an unknown key the key, for a union its discriminator, never a whole object. */
function foundValue(issue: z.core.$ZodIssue): string {
  if (issue.code === "unrecognized_keys") return issue.keys.map((key) => JSON.stringify(key)).join(", ");
  const input = "input" in issue ? issue.input : undefined;
  if (input === undefined) return "nothing (missing)";
  const last = issue.path.at(-1);
  if (
    issue.code === "invalid_union" &&
    input &&
    typeof input === "object" &&
    typeof last === "string" &&
    last in input
  ) {
    return JSON.stringify((input as Record<string, unknown>)[last]);
  }
  const text = JSON.stringify(input);
  return text.length > 120 ? `${text.slice(0, 117)}…` : text;
}

/** Says what is allowed in words; our own messages already do, zod's defaults are rephrased. */
function allowed(issue: z.core.$ZodIssue): string {
  if (issue.message.startsWith("allowed:")) return issue.message;
  switch (issue.code) {
    case "too_small":
      return `allowed: ${issue.origin === "array" ? "at least" : issue.inclusive ? "at least" : "more than"} ${String(issue.minimum)}${issue.origin === "array" ? " item(s)" : ""}`;
    case "too_big":
      return `allowed: ${issue.inclusive ? "at most" : "less than"} ${String(issue.maximum)}${issue.origin === "array" ? " item(s)" : ""}`;
    case "invalid_type":
      return `allowed: a ${issue.expected}`;
    case "invalid_value":
      return `allowed: one of ${issue.values.map((value) => JSON.stringify(value)).join(", ")}`;
    case "unrecognized_keys":
      return "allowed: only the documented keys (see the stacks in stacks/ and planner/config.ts)";
    case "invalid_union":
      return `allowed: ${issue.message.replace(/^Invalid discriminator value\. Expected /, "one of ")}`;
    default:
      return `allowed: ${issue.message}`;
  }
}

export function formatPath(path: readonly PropertyKey[]): string {
  return path
    .map((part, index) => (typeof part === "number" ? `[${part}]` : index === 0 ? String(part) : `.${String(part)}`))
    .join("");
}

/** A refusal the user can act on; never printed with a stack trace. */
export class ConfigError extends Error {
  constructor(
    readonly stack_: string,
    readonly problems: string[],
  ) {
    super(`stack ${stack_}: the configuration is invalid:\n${problems.map((p) => `  - ${p}`).join("\n")}`);
    this.name = "ConfigError";
  }
}
