/** Reads stacks/Pulumi.<stack>.yaml the way Pulumi does, without the Pulumi CLI. */
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { parse as parseYaml } from "yaml";
import { CONFIG_NAMESPACE, parseStackConfig, type StackConfig } from "./config";
import { ConfigError } from "./errors";

export const STACKS_DIR = join(__dirname, "..", "stacks");

export function listStacks(dir = STACKS_DIR): string[] {
  return readdirSync(dir)
    .map((file) => /^Pulumi\.(.+)\.yaml$/.exec(file)?.[1])
    .filter((name): name is string => name !== undefined)
    .sort();
}

/** The `kimi-kit:` keys of a stack file, namespace stripped; other namespaces (aws:region) are left to Pulumi. */
export function readStackValues(stack: string, dir = STACKS_DIR): Record<string, unknown> {
  const file = join(dir, `Pulumi.${stack}.yaml`);
  if (!existsSync(file)) {
    throw new ConfigError(stack, [`no stack file ${`stacks/Pulumi.${stack}.yaml`}; stacks here: ${listStacks(dir).join(", ")}`]);
  }
  let document: unknown;
  try {
    document = parseYaml(readFileSync(file, "utf8"));
  } catch (error) {
    throw new ConfigError(stack, [`stacks/Pulumi.${stack}.yaml is not valid YAML: ${(error as Error).message}`]);
  }
  const config = (document as { config?: Record<string, unknown> } | null)?.config ?? {};
  const values: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(config)) {
    const [namespace, name] = key.includes(":") ? key.split(":", 2) : [CONFIG_NAMESPACE, key];
    if (namespace === CONFIG_NAMESPACE && name) values[name] = value;
  }
  return values;
}

export function loadStackConfig(stack: string, dir = STACKS_DIR): StackConfig {
  return parseStackConfig(stack, readStackValues(stack, dir));
}
