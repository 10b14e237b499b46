import type { z } from "zod";

/** One readable line per problem: the key path, the value found and what is allowed. */
export function describeIssues(issues: readonly z.core.$ZodIssue[], prefix: (path: readonly PropertyKey[]) => string = () => ""): string[] {
  return issues.map((issue) => {
    const path = formatPath(issue.path);
    const found = "input" in issue && issue.input !== undefined ? `found ${JSON.stringify(issue.input)}` : "missing";
    return `${prefix(issue.path)}${path || "(top level)"}: ${found}; ${issue.message}`;
  });
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
