/**
 * Reads a stack's `kimi-kit:*` config: from stacks/Pulumi.<stack>.yaml the way Pulumi does, without
 * the Pulumi CLI (`npm run plan`), or from the config Pulumi hands the program (`pulumi up`). Both
 * refuse the same typos and hand the same raw values to the schema.
 */
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { parse as parseYaml } from "yaml";
import {
  apiKeyProblem,
  CONFIG_NAMESPACE,
  parseStackConfig,
  SECRET_CONFIG_KEYS,
  STACK_CONFIG_KEYS,
  type SecretConfigKey,
  type StackConfig,
} from "./config";
import { ConfigError } from "./errors";

/** stacks/ of this repository; KIMI_KIT_STACKS_DIR points `npm run plan` elsewhere (tests use it). */
export const STACKS_DIR = process.env.KIMI_KIT_STACKS_DIR ?? join(__dirname, "..", "stacks");

/**
 * A stack file is a few KiB; the cap keeps a pathological one (100k keys once took 345 s through the
 * parser and the schema) from hanging `plan` or `up`.
 */
export const MAX_STACK_FILE_BYTES = 64 * 1024;
/** One config value as Pulumi passes it to the program (a JSON text): the same bound as the file. */
export const MAX_CONFIG_VALUE_CHARS = MAX_STACK_FILE_BYTES;

export function listStacks(dir = STACKS_DIR): string[] {
  return readdirSync(dir)
    .map((file) => /^Pulumi\.(.+)\.yaml$/.exec(file)?.[1])
    .filter((name): name is string => name !== undefined)
    .sort();
}

/**
 * A namespace that is meant to be this kit's but is misspelled (`kimi_kit:`, `kimikit:`, `Kimi-Kit:`):
 * Pulumi would silently ignore it. Other namespaces (aws:, pulumi:) belong to Pulumi and providers.
 */
function namespaceProblem(namespace: string, fullKey: string): string | undefined {
  if (namespace === CONFIG_NAMESPACE) return undefined;
  const squashed = namespace.toLowerCase().replace(/[^a-z0-9]/g, "");
  const target = CONFIG_NAMESPACE.replace(/[^a-z0-9]/g, "");
  if (squashed === target || editDistance(squashed, target) <= 1) {
    return `${fullKey}: found the namespace "${namespace}"; allowed: "${CONFIG_NAMESPACE}:" (keys ${STACK_CONFIG_KEYS.join(", ")})`;
  }
  return undefined;
}

function unknownKeyProblem(name: string, fullKey: string): string | undefined {
  if ((STACK_CONFIG_KEYS as readonly string[]).includes(name)) return undefined;
  return `${fullKey}: found the key "${name}"; allowed: only the keys ${STACK_CONFIG_KEYS.map((key) => `${CONFIG_NAMESPACE}:${key}`).join(", ")}`;
}

function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, index) => index);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++)
      current[j] = Math.min(previous[j]! + 1, current[j - 1]! + 1, previous[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    previous = current;
  }
  return previous[b.length]!;
}

/** "kimi-kit:host" → ["kimi-kit", "host"]; a key without a namespace is the project's (Pulumi's rule). */
function splitKey(key: string): [string, string] {
  const colon = key.indexOf(":");
  return colon < 0 ? [CONFIG_NAMESPACE, key] : [key.slice(0, colon), key.slice(colon + 1)];
}

/**
 * Pulumi hands the program every value as text and an object as its JSON, so a value the file holds
 * as JSON text (what `pulumi new` saves for a template's answers, or `pulumi config set KEY '{…}'`
 * without --path) reaches the program as the object it spells (readProgramConfig). Read it the same
 * way here, so that `npm run plan` and `pulumi up` judge the same config.
 */
function asTheProgramReadsIt(value: unknown): unknown {
  if (typeof value !== "string" || !/^\s*[[{]/.test(value)) return value;
  try {
    return JSON.parse(value) as unknown;
  } catch {
    // Not JSON after all: the schema refuses the text as it is, naming the key.
    return value;
  }
}

/** The `kimi-kit:` keys of a stack file, namespace stripped; other namespaces (aws:region) are left to Pulumi. */
export function readStackValues(stack: string, dir = STACKS_DIR): Record<string, unknown> {
  const file = join(dir, `Pulumi.${stack}.yaml`);
  const shown = `stacks/Pulumi.${stack}.yaml`;
  if (!/^[A-Za-z0-9_.-]+$/.test(stack) || !existsSync(file)) {
    throw new ConfigError(stack, [`no stack file ${shown}; stacks here: ${listStacks(dir).join(", ")}`]);
  }
  const stat = statSync(file);
  if (!stat.isFile())
    throw new ConfigError(stack, [`${shown}: found something that is not a regular file; allowed: a YAML stack file`]);
  if (stat.size > MAX_STACK_FILE_BYTES) {
    throw new ConfigError(stack, [
      `${shown}: found ${stat.size} bytes; allowed: at most ${MAX_STACK_FILE_BYTES} bytes (a stack file is a few KiB)`,
    ]);
  }
  let document: unknown;
  try {
    // A few aliases at most: a stack file has no use for the billion-laughs kind.
    document = parseYaml(readFileSync(file, "utf8"), { maxAliasCount: 16 });
  } catch (error) {
    throw new ConfigError(stack, [`${shown} is not valid YAML: ${(error as Error).message.split("\n")[0]}`]);
  }
  const config = (document as { config?: unknown } | null)?.config ?? {};
  if (config === null || typeof config !== "object" || Array.isArray(config)) {
    throw new ConfigError(stack, [
      `${shown} config: found ${Array.isArray(config) ? "a list" : typeof config}; allowed: a mapping of keys like ${CONFIG_NAMESPACE}:host`,
    ]);
  }
  const values: Record<string, unknown> = {};
  const problems: string[] = [];
  for (const [key, value] of Object.entries(config as Record<string, unknown>)) {
    const [namespace, name] = splitKey(key);
    const misspelled = namespaceProblem(namespace, key);
    if (misspelled) problems.push(misspelled);
    if (namespace !== CONFIG_NAMESPACE) continue;
    const unknown = unknownKeyProblem(name, key);
    if (unknown) problems.push(unknown);
    else values[name] = asTheProgramReadsIt(value);
  }
  if (problems.length > 0) throw new ConfigError(stack, problems);
  return values;
}

export function loadStackConfig(stack: string, dir = STACKS_DIR): StackConfig {
  return parseStackConfig(stack, readStackValues(stack, dir));
}

export interface ProgramConfig {
  /** The `kimi-kit:*` values for the schema; secrets only as `{secure: "(set)"}`. */
  raw: Record<string, unknown>;
  /** The secrets' plain values, for pulumi.secret(); never logged. */
  secrets: Partial<Record<SecretConfigKey, string>>;
}

/**
 * The program's view of its config (`pulumi.runtime.allConfig()`: full keys → text, objects as
 * JSON): refuses misspelled keys and namespaces, secrets Pulumi does not hold encrypted, and an API
 * key that is not one; then checks the rest against the schema, so every problem is listed at once.
 */
export function readProgramConfig(
  stack: string,
  all: Record<string, string>,
  isSecret: (fullKey: string) => boolean,
): ProgramConfig {
  const raw: Record<string, unknown> = {};
  const secrets: Partial<Record<SecretConfigKey, string>> = {};
  const problems: string[] = [];
  for (const [fullKey, text] of Object.entries(all)) {
    const [namespace, name] = splitKey(fullKey);
    const misspelled = namespaceProblem(namespace, fullKey);
    if (misspelled) problems.push(misspelled);
    if (namespace !== CONFIG_NAMESPACE) continue;
    const unknown = unknownKeyProblem(name, fullKey);
    if (unknown) {
      problems.push(unknown);
      continue;
    }
    const secretKey = (SECRET_CONFIG_KEYS as readonly string[]).includes(name) ? (name as SecretConfigKey) : undefined;
    if (secretKey) {
      if (!isSecret(fullKey)) {
        problems.push(
          `${secretKey}: found a plain-text value (hidden); allowed: only an encrypted value; set it with \`pulumi config set --secret ${fullKey} <value>\``,
        );
        continue;
      }
      if (secretKey === "apiKey") {
        const problem = apiKeyProblem(text);
        if (problem) problems.push(problem);
      }
      secrets[secretKey] = text;
      raw[secretKey] = { secure: "(set)" };
      continue;
    }
    if (text.length > MAX_CONFIG_VALUE_CHARS) {
      problems.push(`${name}: found ${text.length} characters; allowed: at most ${MAX_CONFIG_VALUE_CHARS}`);
      continue;
    }
    // Pulumi passes objects as JSON text and scalars as their text; the schema judges either.
    try {
      raw[name] = JSON.parse(text) as unknown;
    } catch {
      raw[name] = text;
    }
  }
  try {
    parseStackConfig(stack, raw);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    problems.push(...error.problems);
  }
  if (problems.length > 0) throw new ConfigError(stack, problems);
  return { raw, secrets };
}
