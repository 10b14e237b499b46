import { ConfigError } from "../../planner/errors";

/** The problems of the ConfigError `action` throws; anything else thrown is rethrown, and no throw fails. */
export function configProblems(action: () => unknown): string[] {
  try {
    action();
  } catch (error) {
    if (error instanceof ConfigError) return error.problems;
    throw error;
  }
  throw new Error("expected a ConfigError");
}
