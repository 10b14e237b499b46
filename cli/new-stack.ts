/**
 * `npm run new-stack`: a stack file from a few answers. In a terminal it asks (node:readline); every
 * answer can also be given as a flag, and a flag's answer is never asked. It writes
 * stacks/Pulumi.<name>.yaml (KIMI_KIT_STACKS_DIR elsewhere) with a comment on every value saying where
 * it came from, then plans it with the same buildPlan as `npm run plan` and prints the verdict and the
 * headline numbers. The file is rendered, parsed by the stack schema and planned before it is written,
 * and written to a temporary file renamed into place, so an interrupted run leaves no partial stack.
 *
 * Each answer is checked as it is given and refused in the schema's one-line form (the field, the
 * value found, what is allowed); a refused answer is asked again, a refused flag ends the run (exit 2).
 */
import { existsSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join, relative } from "node:path";
import { createInterface, type Interface } from "node:readline/promises";
import { parseArgs } from "node:util";
import { parse as parseYaml } from "yaml";
import {
  loadCatalog,
  loadPrices,
  type Catalog,
  type CpuPlatformEntry,
  type GpuEntry,
  type InstanceEntry,
  type ModelEntry,
  type Tier,
} from "../planner/catalog";
import { cidrProblem, CONFIG_NAMESPACE, hostSchema, parseStackConfig, type StackConfig } from "../planner/config";
import { ConfigError, describeIssues } from "../planner/errors";
import { buildPlan, type Plan } from "../planner/plan";
import { recommend, RecommendInputError, recommendRequest, type HostKind } from "../planner/recommend";
import { loadStackConfig, STACKS_DIR } from "../planner/stack-file";
import { verdictLine } from "../planner/report";
import { formatBytes, formatDuration, formatGiB, formatTokens, formatUsd, parseSize } from "../planner/units";

// ---- answers -------------------------------------------------------------------------------------

export type { HostKind };

/** Everything a stack file is written from. Bare-metal and cloud answers are optional: one kind is used. */
export interface Answers {
  name: string;
  model: ModelEntry;
  tier: Tier;
  kind: HostKind;
  contextLength: number;
  slots: number;
  platform: CpuPlatformEntry;
  sockets: number;
  memory: string;
  gpus: { gpu: GpuEntry; count: number }[];
  /** Each card's PCIe link; null: the card's own full width (catalog/gpus.yaml). */
  pcie: { gen: number; lanes: number } | null;
  /** Empty: not known yet (the plan needs none; `pulumi up` does). */
  sshHost: string;
  instance: InstanceEntry;
  region: string;
  allowedCidrs: string[];
  sshPublicKey: string;
  /** null: no hardware price, so no cost section (a bare-metal cost needs one). */
  priceUsd: number | null;
  powerWatts: number;
  amortizationMonths: number;
  usdPerKwh: number;
  tokensPerMonth: number;
  mix: { input: number; output: number };
  apiInput: number;
  apiOutput: number;
  utilization: number;
}
export type AnswerKey = keyof Answers;
/** How an answer was obtained: the comments in the file say so. */
export type Origin = "asked" | "flag" | "default" | "recommended";

/** The answers given so far, with their origins, in question order. */
export interface Session {
  answers: Partial<Answers>;
  origins: Partial<Record<AnswerKey, Origin>>;
  /** Lines for the file's header: why a recommended build was picked. */
  notes?: string[];
}

type Parsed<T> = { value: T } | { problem: string };

export interface Context {
  catalog: Catalog;
  /** Answers given as flags, as typed: a recommendation fills only the others. */
  flags?: Readonly<Partial<Record<AnswerKey, string>>>;
  /** Where stack files go, to refuse a name that exists. */
  stacksDir: string;
  force: boolean;
}

interface Question<K extends AnswerKey> {
  key: K;
  flag: string;
  /** The stack key the answer becomes: the first word of every refusal, as the schema writes it. */
  field: string;
  /** false: a flag only (a default nobody needs to think about), never asked. */
  asked: boolean;
  applies: (answers: Partial<Answers>) => boolean;
  /** The question, shown before "[default]: ". */
  prompt: (answers: Partial<Answers>, context: Context) => string;
  /** Lines printed before the question: the catalog's choices. */
  choices?: (answers: Partial<Answers>, context: Context) => string[];
  /** Why the default is what it is, for the file's comment when the default was taken. */
  defaultBasis?: string;
  /** No default at all (defaultText is undefined): --yes cannot stand in for it. */
  mustAnswer?: true;
  /** The answer an empty reply (or --yes) takes, as typed text; undefined: it must be answered. */
  defaultText: (answers: Partial<Answers>, context: Context) => string | undefined;
  parse: (text: string, answers: Partial<Answers>, context: Context) => Parsed<Answers[K]>;
}
type AnyQuestion = { [K in AnswerKey]: Question<K> }[AnswerKey];

const question = <K extends AnswerKey>(spec: Question<K>): Question<K> => spec;

const found = (text: string) => `found ${JSON.stringify(text)}`;
const bareMetal = (answers: Partial<Answers>) => answers.kind === "bare-metal";
const cloud = (answers: Partial<Answers>) => answers.kind === "cloud";
/** A cost section is written for a cloud instance (its price is in the catalog) or a priced bare-metal box. */
const withCosts = (answers: Partial<Answers>) =>
  cloud(answers) || (bareMetal(answers) && typeof answers.priceUsd === "number");

/** Picks a catalog entry by its number in the list shown or by its id (case-insensitive). */
function pick<T extends { id: string }>(
  text: string,
  entries: readonly T[],
  also: (entry: T) => string[] = () => [],
): T | undefined {
  const trimmed = text.trim();
  if (/^\d+$/.test(trimmed)) return entries[Number(trimmed) - 1];
  const lower = trimmed.toLowerCase();
  return entries.find(
    (entry) => entry.id.toLowerCase() === lower || also(entry).some((name) => name.toLowerCase() === lower),
  );
}

/** "50M", "1.5B", "50,000,000", "2e8": a count of tokens (K, M, B are 10³, 10⁶, 10⁹). */
export function parseCount(text: string, thousand = 1000): number | undefined {
  const match = /^\s*(\d+(?:\.\d+)?(?:e\d+)?)\s*([kmb])?\s*$/i.exec(text.replaceAll(/[,_]/g, ""));
  if (!match) return undefined;
  const power = { k: 1, m: 2, b: 3 }[(match[2] ?? "").toLowerCase() as "k" | "m" | "b"] ?? 0;
  const value = Number(match[1]) * thousand ** power;
  return Number.isFinite(value) ? Math.round(value) : undefined;
}

/** "$5,000", "5000", "0.15": a plain non-negative number (a currency sign and separators are ignored). */
export function parseAmount(text: string): number | undefined {
  const cleaned = text.trim().replace(/^\$/, "").replaceAll(/[,_]/g, "");
  if (!/^\d+(\.\d+)?$/.test(cleaned)) return undefined;
  return Number(cleaned);
}

const SIZE_UNITS: Record<string, string> = {
  b: "B",
  kb: "KB",
  mb: "MB",
  gb: "GB",
  tb: "TB",
  kib: "KiB",
  mib: "MiB",
  gib: "GiB",
  tib: "TiB",
};
/** "384 gib" → "384GiB": the spelling the stacks use; undefined when it is not a size with its unit. */
export function canonicalSize(text: string): string | undefined {
  const match = /^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b)\s*$/i.exec(text);
  if (!match || parseSize(text, { requireUnit: true }) === undefined) return undefined;
  return `${match[1]}${SIZE_UNITS[match[2]!.toLowerCase()]}`;
}

/**
 * The schema's own refusal of one value: `raw` is a whole stack config with that value in place; the
 * line for `path` is returned without its path (the caller names the field or the flag).
 */
function schemaProblem(raw: Record<string, unknown>, path: string): string | undefined {
  try {
    parseStackConfig("new-stack", raw);
    return undefined;
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    const line = error.problems.find((problem) => problem.startsWith(`${path}: `));
    return line?.slice(path.length + 2);
  }
}
/** A stack the schema accepts, for checking one value in place. */
const BASE_RAW = {
  host: { kind: "bare-metal", cpu: { platform: "epyc-9124" }, memory: { total: "384GiB" } },
  model: { repo: "unsloth/Kimi-K2.6-GGUF", tier: "UD-Q2_K_XL" },
};

/** Stack names: what `pulumi stack init` and a file name both take without quoting. */
export const STACK_NAME_PATTERN = /^[a-z0-9][a-z0-9-]{0,62}$/;

export const QUESTIONS: readonly AnyQuestion[] = [
  question({
    key: "name",
    mustAnswer: true,
    flag: "--name",
    field: "name",
    asked: true,
    applies: () => true,
    prompt: () => "Stack name (the X of stacks/Pulumi.X.yaml)",
    defaultText: () => undefined,
    parse: (text, _answers, context) => {
      const name = text.trim();
      if (!STACK_NAME_PATTERN.test(name))
        return {
          problem: `${found(name)}; allowed: 1 to 63 lower-case letters, digits and -, not starting with - (a stack name, e.g. team-a-epyc)`,
        };
      if (!context.force && existsSync(join(context.stacksDir, `Pulumi.${name}.yaml`))) {
        return {
          problem: `${found(name)}, which exists (Pulumi.${name}.yaml); allowed: a name no stack has, or --force to replace that stack`,
        };
      }
      return { value: name };
    },
  }),
  question({
    key: "model",
    defaultBasis: "the catalog's first model",
    flag: "--model",
    field: "model.repo",
    asked: true,
    applies: () => true,
    prompt: () => "Model",
    choices: (_answers, { catalog }) => [
      "Models (catalog/models.yaml):",
      ...catalog.models.map((model, index) => `  ${index + 1}) ${model.id.padEnd(12)} ${model.name} (${model.repo})`),
    ],
    defaultText: (_answers, { catalog }) => catalog.models[0]!.id,
    parse: (text, _answers, { catalog }) => {
      const model = pick(text, catalog.models, (entry) => [entry.repo]);
      return model
        ? { value: model }
        : {
            problem: `${found(text.trim())}; allowed: ${catalog.models.map((entry) => entry.id).join(", ")} (a number from the list, an id or a repo)`,
          };
    },
  }),
  question({
    key: "tier",
    defaultBasis: "the model's first tier in the catalog",
    flag: "--tier",
    field: "model.tier",
    asked: true,
    applies: () => true,
    prompt: (answers) => `Tier of ${answers.model!.name}`,
    choices: (answers) => [
      `Tiers of ${answers.model!.name} (size as published):`,
      ...answers.model!.tiers.map(
        (tier, index) => `  ${index + 1}) ${tier.name.padEnd(12)} ${formatBytes(tier.publishedSizeBytes)}`,
      ),
    ],
    defaultText: (answers) => answers.model!.tiers[0]!.name,
    parse: (text, answers) => {
      const tiers = answers.model!.tiers;
      const trimmed = text.trim();
      const tier = /^\d+$/.test(trimmed)
        ? tiers[Number(trimmed) - 1]
        : tiers.find((entry) => entry.name.toLowerCase() === trimmed.toLowerCase());
      return tier
        ? { value: tier }
        : {
            problem: `${found(trimmed)}; allowed: ${tiers.map((entry) => entry.name).join(", ")} (${answers.model!.name}'s tiers)`,
          };
    },
  }),
  question({
    key: "kind",
    flag: "--kind",
    field: "host.kind",
    asked: true,
    applies: () => true,
    prompt: () => "Host kind: bare-metal (a machine you own) or cloud (an AWS instance)",
    defaultText: () => "bare-metal",
    parse: (text) => {
      const kind = { "1": "bare-metal", "2": "cloud", "bare-metal": "bare-metal", cloud: "cloud" }[
        text.trim().toLowerCase()
      ] as HostKind | undefined;
      return kind ? { value: kind } : { problem: `${found(text.trim())}; allowed: bare-metal or cloud` };
    },
  }),
  question({
    key: "contextLength",
    defaultBasis: "the schema's default",
    flag: "--context",
    field: "serving.contextLength",
    asked: true,
    applies: () => true,
    prompt: (answers) =>
      `Context length per slot in tokens (32k = 32768; ${answers.model!.name} was trained to ${answers.model!.architecture.contextLength})`,
    defaultText: (answers) => String(Math.min(32768, answers.model!.architecture.contextLength)),
    parse: (text, answers) => {
      const tokens = parseCount(text, 1024);
      const trained = answers.model!.architecture.contextLength;
      const allowed = `allowed: a whole number of tokens from 256 to ${trained} (${answers.model!.name}'s trained context), like 32768 or 64k`;
      if (tokens === undefined) return { problem: `${found(text.trim())}; ${allowed}` };
      if (tokens > trained) return { problem: `found ${tokens}; ${allowed}` };
      const problem = schemaProblem({ ...BASE_RAW, serving: { contextLength: tokens } }, "serving.contextLength");
      return problem ? { problem } : { value: tokens };
    },
  }),
  question({
    key: "slots",
    defaultBasis: "the schema's default",
    flag: "--slots",
    field: "serving.parallelSlots",
    asked: true,
    applies: () => true,
    prompt: () => "Parallel slots (requests served at once, each with its own context)",
    defaultText: () => "1",
    parse: (text) => {
      const slots = /^\s*\d+\s*$/.test(text) ? Number(text) : undefined;
      if (slots === undefined) return { problem: `${found(text.trim())}; allowed: a whole number from 1 to 64` };
      const problem = schemaProblem({ ...BASE_RAW, serving: { parallelSlots: slots } }, "serving.parallelSlots");
      return problem ? { problem } : { value: slots };
    },
  }),
  question({
    key: "platform",
    defaultBasis: "the catalog's first platform",
    flag: "--platform",
    field: "host.cpu.platform",
    asked: true,
    applies: bareMetal,
    prompt: () => "CPU platform (a number, an id, or recommend)",
    choices: (_answers, { catalog }) => [
      "CPU platforms (catalog/platforms.yaml):",
      ...catalog.cpuPlatforms.map(
        (platform, index) =>
          `  ${index + 1}) ${platform.id.padEnd(20)} ${platform.name}, ${platform.cores} cores, ${platform.memory.channels} × ${platform.memory.kind}`,
      ),
    ],
    defaultText: (_answers, { catalog }) => catalog.cpuPlatforms[0]!.id,
    parse: (text, _answers, { catalog }) => {
      const platform = pick(text, catalog.cpuPlatforms);
      return platform
        ? { value: platform }
        : {
            problem: `${found(text.trim())}; allowed: ${catalog.cpuPlatforms.map((entry) => entry.id).join(", ")} (a number from the list or an id)`,
          };
    },
  }),
  question({
    key: "sockets",
    defaultBasis: "the platform's",
    flag: "--sockets",
    field: "host.cpu.sockets",
    asked: false,
    applies: bareMetal,
    prompt: () => "Sockets",
    defaultText: (answers) => String(answers.platform?.sockets ?? 1),
    parse: (text) => {
      const sockets = /^\s*\d+\s*$/.test(text) ? Number(text) : undefined;
      if (sockets === undefined) return { problem: `${found(text.trim())}; allowed: a whole number from 1 to 8` };
      const problem = schemaProblem(
        { ...BASE_RAW, host: { ...BASE_RAW.host, cpu: { platform: "epyc-9124", sockets } } },
        "host.cpu.sockets",
      );
      return problem ? { problem } : { value: sockets };
    },
  }),
  question({
    key: "memory",
    flag: "--memory",
    field: "host.memory.total",
    asked: true,
    applies: bareMetal,
    prompt: (answers) =>
      `RAM in all (with its unit, like 384GiB; ${answers.platform!.id} has ${answers.platform!.memory.channels * (answers.sockets ?? 1)} channels)`,
    defaultText: (answers) => `${answers.platform!.memory.channels * (answers.sockets ?? 1) * 32}GiB`,
    parse: (text) => {
      const size = canonicalSize(text);
      if (size === undefined || (parseSize(size, { requireUnit: true }) ?? 0) <= 0) {
        return {
          problem: `${found(text.trim())}; allowed: a positive size with its unit, like "384GiB", "512GB" or "1.5TiB" (a bare number is refused: bytes, GB or GiB?)`,
        };
      }
      return { value: size };
    },
  }),
  question({
    key: "gpus",
    flag: "--gpus",
    field: "host.gpus",
    asked: true,
    applies: bareMetal,
    prompt: () => "GPUs as MODEL:COUNT, several separated by commas, or none",
    choices: (_answers, { catalog }) => [
      "GPUs (catalog/gpus.yaml):",
      ...catalog.gpus.map((gpu) => `  ${gpu.id.padEnd(14)} ${gpu.name}, ${formatGiB(gpu.memory)}`),
    ],
    defaultText: () => "none",
    parse: (text, _answers, { catalog }) => {
      const trimmed = text.trim().toLowerCase();
      if (trimmed === "none" || trimmed === "0" || trimmed === "") return { value: [] };
      const allowed = `allowed: MODEL:COUNT with MODEL one of ${catalog.gpus.map((gpu) => gpu.id).join(", ")} and COUNT 1 to 16 (e.g. rtx-3090:4), several separated by commas, or none`;
      const gpus: { gpu: GpuEntry; count: number }[] = [];
      for (const part of trimmed.split(",")) {
        const match = /^\s*([a-z0-9.-]+)\s*(?::\s*(\d+))?\s*$/.exec(part);
        const gpu = match ? catalog.gpus.find((entry) => entry.id === match[1]) : undefined;
        const count = match?.[2] === undefined ? 1 : Number(match[2]);
        if (!gpu || count < 1 || count > 16) return { problem: `${found(part.trim())}; ${allowed}` };
        const same = gpus.find((entry) => entry.gpu.id === gpu.id);
        if (same) same.count += count;
        else gpus.push({ gpu, count });
      }
      const total = gpus.reduce((sum, entry) => sum + entry.count, 0);
      if (total > 16) return { problem: `${found(text.trim())} (${total} GPUs); ${allowed}; at most 16 in all` };
      return { value: gpus };
    },
  }),
  question({
    key: "pcie",
    flag: "--pcie",
    field: "host.pcie",
    asked: false,
    defaultBasis: "each card's full width, as catalog/gpus.yaml lists it",
    applies: (answers) => bareMetal(answers) && (answers.gpus?.length ?? 0) > 0,
    prompt: () => "Each GPU's PCIe link, GEN:LANES",
    defaultText: () => "full",
    parse: (text) => {
      if (text.trim().toLowerCase() === "full") return { value: null };
      const match = /^\s*(\d+)\s*:\s*(\d+)\s*$/.exec(text);
      const allowed =
        "allowed: GEN:LANES with GEN 3 to 6 and LANES 1, 2, 4, 8 or 16 (risers and x4 slots: 4:4), or full";
      if (!match) return { problem: `${found(text.trim())}; ${allowed}` };
      const pcie = { gen: Number(match[1]), lanes: Number(match[2]) };
      const problem =
        schemaProblem({ ...BASE_RAW, host: { ...BASE_RAW.host, pcie } }, "host.pcie.gen") ??
        schemaProblem({ ...BASE_RAW, host: { ...BASE_RAW.host, pcie } }, "host.pcie.lanes");
      return problem ? { problem: `${found(text.trim())}; ${allowed}` } : { value: pcie };
    },
  }),
  question({
    key: "sshHost",
    flag: "--ssh-host",
    field: "host.ssh.host",
    asked: true,
    applies: bareMetal,
    prompt: () => "SSH address `pulumi up` connects to (blank: add it later; the plan needs none)",
    defaultText: () => "",
    parse: (text) => {
      const host = text.trim();
      if (host === "") return { value: "" };
      const problem = schemaProblem({ ...BASE_RAW, host: { ...BASE_RAW.host, ssh: { host } } }, "host.ssh.host");
      return problem ? { problem } : { value: host };
    },
  }),
  question({
    key: "instance",
    flag: "--instance-type",
    field: "host.instanceType",
    asked: true,
    applies: cloud,
    prompt: () => "Instance type (a number, an id, or recommend)",
    choices: (_answers, { catalog }) => [
      "AWS instance types (catalog/cloud-instances.yaml, us-east-1 on-demand):",
      ...catalog.instances.map(
        (instance, index) =>
          `  ${index + 1}) ${instance.id.padEnd(16)} ${formatGiB(instance.memory, 0)}, ${instance.vcpus} vCPUs${instance.gpus ? `, ${instance.gpus.count} × ${instance.gpus.model}` : ""}, $${instance.usdPerHour}/h`,
      ),
    ],
    defaultText: (_answers, { catalog }) => catalog.instances[0]!.id,
    parse: (text, _answers, { catalog }) => {
      const instance = pick(text, catalog.instances);
      return instance
        ? { value: instance }
        : {
            problem: `${found(text.trim())}; allowed: ${catalog.instances.map((entry) => entry.id).join(", ")} (a number from the list or an id)`,
          };
    },
  }),
  question({
    key: "region",
    defaultBasis: "the schema's default",
    flag: "--region",
    field: "host.region",
    asked: true,
    applies: cloud,
    prompt: () => "AWS region",
    defaultText: () => "us-east-1",
    parse: (text) => {
      const region = text.trim();
      const problem = cloudHostProblem({ region }, "host.region");
      return problem ? { problem } : { value: region };
    },
  }),
  question({
    key: "allowedCidrs",
    mustAnswer: true,
    flag: "--allowed-cidr",
    field: "host.allowedCidrs",
    asked: true,
    applies: cloud,
    prompt: () => "Networks that may reach SSH and the API port (CIDRs separated by commas, like 203.0.113.0/24)",
    defaultText: () => undefined,
    parse: (text) => {
      const blocks = text
        .split(",")
        .map((block) => block.trim())
        .filter(Boolean);
      if (blocks.length === 0)
        return {
          problem: `found nothing; allowed: one or more IPv4 CIDRs like 203.0.113.0/24 (nothing is opened by default)`,
        };
      for (const block of blocks) {
        const problem =
          cidrProblem(block) ??
          (block.endsWith("/0")
            ? "allowed: a CIDR narrower than /0 (admitting the whole internet needs host.allowPublic: true, set in the file by hand)"
            : undefined);
        if (problem) return { problem: `${found(block)}; ${problem}` };
      }
      return { value: blocks };
    },
  }),
  question({
    key: "sshPublicKey",
    flag: "--ssh-public-key",
    field: "host.sshPublicKey",
    asked: false,
    applies: cloud,
    prompt: () => "SSH public key",
    defaultText: () => "",
    parse: (text) => {
      const key = text.trim();
      if (key === "") return { value: "" };
      const problem = cloudHostProblem({ sshPublicKey: key }, "host.sshPublicKey");
      return problem ? { problem } : { value: key };
    },
  }),
  question({
    key: "priceUsd",
    flag: "--hardware-price-usd",
    field: "costs.hardware.priceUsd",
    asked: true,
    applies: bareMetal,
    prompt: () => "What the hardware costs to buy, USD (none: no cost section)",
    defaultText: () => "none",
    parse: (text) => {
      if (text.trim().toLowerCase() === "none" || text.trim() === "") return { value: null };
      const usd = parseAmount(text);
      return usd === undefined
        ? { problem: `${found(text.trim())}; allowed: a price in US dollars like 5000 or $16,500, or none` }
        : { value: usd };
    },
  }),
  question({
    key: "powerWatts",
    mustAnswer: true,
    flag: "--power-watts",
    field: "costs.hardware.powerWatts",
    asked: true,
    applies: (answers) => bareMetal(answers) && typeof answers.priceUsd === "number",
    prompt: () => "Power draw under load, watts",
    defaultText: () => undefined,
    parse: (text) => numberInRange(text, 0, 20000, "a whole or decimal number of watts from 0 to 20000, like 350"),
  }),
  question({
    key: "amortizationMonths",
    defaultBasis: "three years, as the stacks in stacks/",
    flag: "--amortization-months",
    field: "costs.hardware.amortizationMonths",
    asked: false,
    applies: (answers) => bareMetal(answers) && typeof answers.priceUsd === "number",
    prompt: () => "Months the price is spread over",
    defaultText: () => "36",
    parse: (text) => {
      const months = /^\s*\d+\s*$/.test(text) ? Number(text) : 0;
      return months >= 1 && months <= 120
        ? { value: months }
        : { problem: `${found(text.trim())}; allowed: a whole number of months from 1 to 120` };
    },
  }),
  question({
    key: "usdPerKwh",
    defaultBasis: "as the stacks in stacks/",
    flag: "--usd-per-kwh",
    field: "costs.hardware.usdPerKwh",
    asked: false,
    applies: (answers) => bareMetal(answers) && typeof answers.priceUsd === "number",
    prompt: () => "Electricity price, USD per kWh",
    defaultText: () => "0.15",
    parse: (text) => numberInRange(text, 0, 5, "a price per kWh in US dollars from 0 to 5, like 0.15"),
  }),
  question({
    key: "tokensPerMonth",
    defaultBasis: "as the stacks in stacks/",
    flag: "--tokens-per-month",
    field: "costs.usage.tokensPerMonth",
    asked: true,
    applies: withCosts,
    prompt: () => "Expected tokens per month, input and output together (50M = 50,000,000)",
    defaultText: () => "50M",
    parse: (text) => {
      const tokens = parseCount(text);
      return tokens === undefined
        ? { problem: `${found(text.trim())}; allowed: a number of tokens like 50000000, 50M or 1.5B` }
        : { value: tokens };
    },
  }),
  question({
    key: "mix",
    defaultBasis: "as the stacks in stacks/",
    flag: "--mix",
    field: "costs.usage.mix",
    asked: true,
    applies: withCosts,
    prompt: () => "Input to output tokens, IN:OUT",
    defaultText: () => "3:1",
    parse: (text) => {
      const match = /^\s*(\d+(?:\.\d+)?)\s*:\s*(\d+(?:\.\d+)?)\s*$/.exec(text);
      const mix = match ? { input: Number(match[1]), output: Number(match[2]) } : undefined;
      if (!mix || mix.input + mix.output === 0)
        return {
          problem: `${found(text.trim())}; allowed: IN:OUT, two numbers not both zero, like 3:1 (three input tokens for each output token)`,
        };
      return { value: mix };
    },
  }),
  question({
    key: "apiInput",
    defaultBasis: "the Kimi K2.6 API price the stacks in stacks/ compare with",
    flag: "--api-usd-per-million-input",
    field: "costs.api.usdPerMillionInput",
    asked: false,
    applies: withCosts,
    prompt: () => "API price per 1M input tokens, USD",
    defaultText: () => "0.95",
    parse: (text) => numberInRange(text, 0, 10000, "a price in US dollars per million tokens, like 0.95"),
  }),
  question({
    key: "apiOutput",
    defaultBasis: "the Kimi K2.6 API price the stacks in stacks/ compare with",
    flag: "--api-usd-per-million-output",
    field: "costs.api.usdPerMillionOutput",
    asked: false,
    applies: withCosts,
    prompt: () => "API price per 1M output tokens, USD",
    defaultText: () => "4.0",
    parse: (text) => numberInRange(text, 0, 10000, "a price in US dollars per million tokens, like 4.0"),
  }),
  question({
    key: "utilization",
    defaultBasis: "the schema's default",
    flag: "--utilization",
    field: "costs.usage.utilization",
    asked: false,
    applies: withCosts,
    prompt: () => "Share of the month the host is busy",
    defaultText: () => "0.5",
    parse: (text) => {
      const value = parseAmount(text);
      return value !== undefined && value > 0 && value <= 1
        ? { value }
        : { problem: `${found(text.trim())}; allowed: a fraction more than 0 and at most 1, like 0.5` };
    },
  }),
];

function numberInRange(text: string, low: number, high: number, allowed: string): Parsed<number> {
  const value = parseAmount(text);
  return value !== undefined && value >= low && value <= high
    ? { value }
    : { problem: `${found(text.trim())}; allowed: ${allowed}` };
}

/** The cloud host schema's refusal of one of its values (region, sshPublicKey), without the path. */
function cloudHostProblem(values: Record<string, string>, path: string): string | undefined {
  const result = hostSchema.safeParse(
    { kind: "cloud", provider: "aws", instanceType: "r7i.12xlarge", allowedCidrs: ["203.0.113.0/24"], ...values },
    { reportInput: true },
  );
  if (result.success) return undefined;
  const line = describeIssues(result.error.issues, () => "host.").find((problem) => problem.startsWith(`${path}: `));
  return line?.slice(path.length + 2);
}

export function questionFor(key: AnswerKey): AnyQuestion {
  return QUESTIONS.find((entry) => entry.key === key)!;
}

/**
 * Checks one answer and records it. Returns the refusal (`found …; allowed: …`, the field not
 * included: a terminal names the field, a flag names the flag and the field) or undefined.
 */
export function answer(
  session: Session,
  key: AnswerKey,
  text: string,
  origin: Origin,
  context: Context,
): string | undefined {
  const entry = questionFor(key);
  const parsed = entry.parse(text, session.answers, context);
  if ("problem" in parsed) return parsed.problem;
  (session.answers as Record<AnswerKey, unknown>)[key] = parsed.value;
  session.origins[key] = origin;
  return undefined;
}

/** The refusal as a terminal shows it: `host.memory.total: found "384"; allowed: …`. */
export const fieldLine = (key: AnswerKey, problem: string) => `${questionFor(key).field}: ${problem}`;
/** The refusal as a script sees it: `--memory (host.memory.total): found "384"; allowed: …`. */
export const flagLine = (key: AnswerKey, problem: string) =>
  `${questionFor(key).flag} (${questionFor(key).field}): ${problem}`;

// ---- "recommend" ---------------------------------------------------------------------------------

/** What a recommendation fills in: the host answers, as a person would have typed them. */
export interface RecommendedHardware {
  kind: HostKind;
  /** Answer texts by key (platform, memory, gpus, instance …), checked like typed answers. */
  texts: Partial<Record<AnswerKey, string>>;
  /** One line on why: shown, and written as the file's comment. */
  why: string;
}

/**
 * "recommend" for the hardware: planner/recommend.ts (`npm run plan -- --recommend`) searches the
 * catalog's builds and instances, plans each with the same buildPlan, and the cheapest that holds the
 * model and tier at the answered context and slots becomes the answers (its parts priced by
 * catalog/prices.yaml). No candidate: its one line says which constraint fails and what would pass.
 */
export function recommendHardware(
  request: { model: ModelEntry; tier: Tier; kind: HostKind; contextLength: number; slots: number; usdPerKwh?: number },
  catalog: Catalog,
): RecommendedHardware | string {
  const prices = loadPrices(catalog);
  let result: ReturnType<typeof recommend>;
  try {
    const options = {
      model: request.model.repo,
      tier: request.tier.name,
      context: String(request.contextLength),
      slots: String(request.slots),
      kind: request.kind,
      top: "1",
      ...(request.usdPerKwh === undefined ? {} : { "usd-per-kwh": String(request.usdPerKwh) }),
    };
    result = recommend(recommendRequest(options, catalog, prices), { catalog, prices });
  } catch (error) {
    if (error instanceof RecommendInputError)
      return `allowed: a choice from the list (the recommendation refused its request: ${error.message})`;
    throw error;
  }
  const best = result.recommended[0];
  if (!best)
    return `allowed: a choice from the list — ${result.problem ?? `no catalog ${request.kind} host qualifies`}`;
  const { host, build, label } = best.candidate;
  const texts: Partial<Record<AnswerKey, string>> =
    host.kind === "cloud"
      ? { instance: host.instanceType, region: host.region }
      : {
          platform: host.cpu.platform,
          sockets: String(host.cpu.sockets),
          memory: host.memory.total,
          gpus: host.gpus?.map((gpu) => `${gpu.model}:${gpu.count}`).join(",") || "none",
          ...(host.pcie ? { pcie: `${host.pcie.gen}:${host.pcie.lanes}` } : {}),
          ...(build
            ? {
                priceUsd: String(build.priceUsd),
                powerWatts: String(build.powerWatts),
                amortizationMonths: String(prices.amortizationMonths.value),
                usdPerKwh: String(result.request.usdPerKwh),
              }
            : {}),
        };
  const why =
    `\`npm run plan -- --recommend\` picked ${label}: the cheapest catalog ${request.kind} host that holds ${request.model.name} ${request.tier.name} at ${request.contextLength} tokens × ${request.slots} slot(s), ` +
    `${formatUsd(best.monthlyUsd)}/month${build ? " (its parts priced by catalog/prices.yaml)" : ""}, decode ${best.plan.projection.decodeTokensPerSecond.toFixed(1)} tok/s at depth ${best.plan.projection.decodeDepthTokens}.`;
  return { kind: host.kind, texts, why };
}

// ---- the stack file ------------------------------------------------------------------------------

/**
 * A YAML scalar: plain where YAML reads it back as the same string (the stacks' style), else JSON's double-quoted form,
 * which YAML reads too.
 */
export function scalar(text: string): string {
  try {
    if ((parseYaml(`k: ${text}`) as { k?: unknown } | null)?.k === text && !text.includes("#")) return text;
  } catch {
    // Not a plain scalar: quoted below.
  }
  return JSON.stringify(text);
}

function said(key: AnswerKey, origin: Origin | undefined): string {
  const entry = questionFor(key);
  switch (origin) {
    case "asked":
      return "answered";
    case "flag":
      return `given as ${entry.flag}`;
    case "recommended":
      return "recommended: see the top of this file";
    default:
      return entry.defaultBasis ? `new-stack's default: ${entry.defaultBasis}` : "new-stack's default";
  }
}

/** A comment wrapped at 100 columns, as the stacks in stacks/ are. */
export function wrapComment(indent: number, text: string, width = 100): string[] {
  const lines: string[] = [];
  let line = "";
  for (const word of text.split(" ")) {
    if (line !== "" && indent + 2 + line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else line = line === "" ? word : `${line} ${word}`;
  }
  if (line !== "") lines.push(line);
  return lines.map((part) => `${" ".repeat(indent)}# ${part}`);
}

/** The host's label in the plan and the report, from the answers. */
function hostLabel(answers: Answers): string {
  if (answers.kind === "cloud") return `AWS ${answers.instance.id}`;
  const cpu = `${answers.sockets > 1 ? `${answers.sockets} × ` : ""}${answers.platform.name}`;
  const gpus = answers.gpus.map((entry) => `${entry.count} × ${entry.gpu.name}`).join(", ");
  return [cpu, `${answers.memory} of ${answers.platform.memory.kind}`, gpus].filter(Boolean).join(", ");
}

/** Appends to the stack file being rendered: a value line, a wrapped comment, and where an answer came from. */
interface StackWriter {
  push: (indent: number, text: string) => void;
  comment: (indent: number, text: string) => void;
  from: (key: AnswerKey) => string;
}

/**
 * The stack file, in the style of the stacks in stacks/: every value with a comment saying what it is
 * and where it came from (an answer, a flag, the catalog or this command's default).
 */
export function renderStackFile(
  answers: Answers,
  origins: Partial<Record<AnswerKey, Origin>>,
  notes: readonly string[] = [],
): string {
  const lines: string[] = [];
  const writer: StackWriter = {
    push: (indent, text) => lines.push(`${" ".repeat(indent)}${text}`),
    comment: (indent, text) => lines.push(...wrapComment(indent, text)),
    from: (key) => said(key, origins[key]),
  };
  const { push, comment } = writer;
  const { model, tier } = answers;

  comment(
    0,
    `Written by \`npm run new-stack\` (cli/new-stack.ts): ${model.name} ${tier.name} on ${hostLabel(answers)}, ${answers.contextLength} tokens × ${answers.slots} slot(s). ` +
      `Edit it freely: \`npm run plan -- --stack ${answers.name}\` plans it again and refuses a mistake as one line naming the key, the value and what is allowed.`,
  );
  for (const note of notes) comment(0, note);
  lines.push("config:");
  push(2, `${CONFIG_NAMESPACE}:host:`);
  if (answers.kind === "bare-metal") writeBareMetalHost(writer, answers, origins);
  else writeCloudHost(writer, answers);
  writeModelAndServing(writer, answers);
  if (!withCosts(answers)) {
    comment(
      2,
      "No kimi-kit:costs: a bare-metal cost needs the hardware's price (--hardware-price-usd), so the plan sizes and projects everything and omits the monthly cost and break-even.",
    );
    return `${lines.join("\n")}\n`;
  }
  writeCosts(writer, answers);
  return `${lines.join("\n")}\n`;
}

/** kimi-kit:host for a bare-metal machine: its name, ssh, CPU, memory and GPUs. */
function writeBareMetalHost(writer: StackWriter, answers: Answers, origins: Partial<Record<AnswerKey, Origin>>): void {
  const { push, comment, from } = writer;
  const { platform } = answers;
  const channels = platform.memory.channels * answers.sockets;
  push(4, "kind: bare-metal");
  comment(4, "What the plan and its report call this machine (from the answers).");
  push(4, `name: ${scalar(hostLabel(answers))}`);
  if (answers.sshHost) {
    comment(
      4,
      `Where \`pulumi up\` connects (${from("sshHost")}); pin its key as ssh.hostPublicKey (ssh-keyscan) before up.`,
    );
    push(4, "ssh:");
    push(6, `host: ${scalar(answers.sshHost)}`);
  } else {
    comment(4, "`pulumi up` needs the address it connects to; the plan does not:");
    comment(4, 'ssh: { host: 203.0.113.10, user: root, hostPublicKey: "ssh-ed25519 AAAA…" }');
  }
  push(4, "cpu:");
  comment(
    6,
    `catalog/platforms.yaml ${platform.id}: ${platform.name}, ${platform.cores} cores${platform.ccds ? ` in ${platform.ccds} CCDs` : ""}, ${platform.memory.channels} channels of ${platform.memory.kind} per socket (${from("platform")}).`,
  );
  push(6, `platform: ${platform.id}`);
  if (answers.sockets !== platform.sockets) {
    comment(6, `Sockets (${from("sockets")}): the platform's cores, channels and NUMA nodes are multiplied.`);
    push(6, `sockets: ${answers.sockets}`);
  }
  push(4, "memory:");
  const memoryWhy =
    origins.memory === "default"
      ? `one 32 GiB DIMM in each of the ${channels} channels`
      : `${channels} channels of ${platform.memory.kind}`;
  comment(6, `RAM in all (${from("memory")}; ${memoryWhy}); the plan checks the tier against it.`);
  push(6, `total: ${answers.memory}`);
  if (answers.gpus.length > 0) writeGpus(writer, answers);
}

/** The host's GPUs, and each card's PCIe link when one was given. */
function writeGpus(writer: StackWriter, answers: Answers): void {
  const { push, comment, from } = writer;
  comment(
    4,
    `catalog/gpus.yaml (${from("gpus")})${answers.pcie ? "" : "; each on a full-width PCIe link unless host.pcie (gen, lanes) says less: risers, x4 slots"}.`,
  );
  push(4, "gpus:");
  for (const entry of answers.gpus) {
    comment(6, `${entry.gpu.name}, ${formatGiB(entry.gpu.memory)} each, ${entry.gpu.bandwidthGBps} GB/s.`);
    push(6, `- model: ${entry.gpu.id}`);
    push(6, `  count: ${entry.count}`);
  }
  if (answers.pcie) {
    comment(4, `Each card's PCIe link (${from("pcie")}): what the plan charges for weights streamed to the cards.`);
    push(4, `pcie: { gen: ${answers.pcie.gen}, lanes: ${answers.pcie.lanes} }`);
  }
}

/** kimi-kit:host for a cloud instance: its type, region, networks and SSH key. */
function writeCloudHost(writer: StackWriter, answers: Answers): void {
  const { push, comment, from } = writer;
  const { instance } = answers;
  push(4, "kind: cloud");
  push(4, "provider: aws");
  comment(
    4,
    `catalog/cloud-instances.yaml: ${instance.vcpus} vCPUs, ${formatGiB(instance.memory, 0)}${instance.gpus ? `, ${instance.gpus.count} × ${instance.gpus.model}` : ""}, $${instance.usdPerHour}/h on demand in us-east-1 (${from("instance")}).`,
  );
  push(4, `instanceType: ${instance.id}`);
  comment(
    4,
    `The region (${from("region")})${answers.region === "us-east-1" ? "" : `; the catalog's price is us-east-1's: set costs.cloud.usdPerHour to ${answers.region}'s`}.`,
  );
  push(4, `region: ${answers.region}`);
  comment(4, `Only these networks reach SSH and the API port (${from("allowedCidrs")}).`);
  push(4, `allowedCidrs: [${answers.allowedCidrs.map((block) => JSON.stringify(block)).join(", ")}]`);
  if (answers.sshPublicKey) {
    comment(
      4,
      `The public half of kimi-kit:sshPrivateKey, installed for root by cloud-init (${from("sshPublicKey")}).`,
    );
    push(4, `sshPublicKey: ${scalar(answers.sshPublicKey)}`);
  } else {
    comment(
      4,
      "`pulumi up` installs this public key for root (the half of kimi-kit:sshPrivateKey); the plan needs none:",
    );
    comment(4, "sshPublicKey: ssh-ed25519 AAAA… ops@example.com");
  }
}

/** kimi-kit:model and kimi-kit:serving: the tier, and the context and slots it is served with. */
function writeModelAndServing(writer: StackWriter, answers: Answers): void {
  const { push, comment, from } = writer;
  const { model, tier } = answers;
  push(2, `${CONFIG_NAMESPACE}:model:`);
  comment(4, `catalog/models.yaml ${model.id}: ${model.name} (${from("model")}).`);
  push(4, `repo: ${model.repo}`);
  comment(
    4,
    `${formatBytes(tier.publishedSizeBytes)} as published (${from("tier")}); the plan checks it against the memory above.`,
  );
  push(4, `tier: ${scalar(tier.name)}`);
  push(2, `${CONFIG_NAMESPACE}:serving:`);
  comment(
    4,
    `Tokens of context per slot (${from("contextLength")}); ${model.name} was trained to ${model.architecture.contextLength}.`,
  );
  push(4, `contextLength: ${answers.contextLength}`);
  comment(4, `Requests served at once, each with its own context's KV cache (${from("slots")}).`);
  push(4, `parallelSlots: ${answers.slots}`);
}

/** kimi-kit:costs: the hardware (or cloud volume), the API compared with, and the expected usage. */
function writeCosts(writer: StackWriter, answers: Answers): void {
  const { push, comment, from } = writer;
  push(2, `${CONFIG_NAMESPACE}:costs:`);
  if (answers.kind === "bare-metal") {
    push(4, "hardware:");
    comment(6, `What the hardware costs to buy, USD (${from("priceUsd")}).`);
    push(6, `priceUsd: ${String(answers.priceUsd!)}`);
    comment(6, `Months that price is spread over (${from("amortizationMonths")}).`);
    push(6, `amortizationMonths: ${answers.amortizationMonths}`);
    comment(6, `Draw under load, watts (${from("powerWatts")}).`);
    push(6, `powerWatts: ${String(answers.powerWatts)}`);
    comment(6, `Electricity, USD per kWh (${from("usdPerKwh")}).`);
    push(6, `usdPerKwh: ${String(answers.usdPerKwh)}`);
  } else {
    comment(
      4,
      "The instance's hourly price is catalog/cloud-instances.yaml's; the model volume is priced per GB-month.",
    );
    push(4, "cloud:");
    push(6, "storageUsdPerGbMonth: 0.08");
  }
  push(4, "api:");
  comment(6, `The API this host is compared with: USD per 1M input tokens (${from("apiInput")}) …`);
  push(6, `usdPerMillionInput: ${String(answers.apiInput)}`);
  comment(6, `… and per 1M output tokens (${from("apiOutput")}).`);
  push(6, `usdPerMillionOutput: ${String(answers.apiOutput)}`);
  push(4, "usage:");
  comment(6, `Expected tokens a month, input and output together (${from("tokensPerMonth")}).`);
  push(6, `tokensPerMonth: ${answers.tokensPerMonth}`);
  comment(6, `Input : output tokens (${from("mix")}).`);
  push(6, `mix: { input: ${String(answers.mix.input)}, output: ${String(answers.mix.output)} }`);
  comment(6, `Share of the month the host is busy serving, for its capacity (${from("utilization")}).`);
  push(6, `utilization: ${String(answers.utilization)}`);
}

/** The `kimi-kit:` values of a rendered file, read the way planner/stack-file.ts reads a stack. */
export function valuesOf(text: string): Record<string, unknown> {
  const document = parseYaml(text) as { config?: Record<string, unknown> };
  const values: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(document.config ?? {})) {
    if (key.startsWith(`${CONFIG_NAMESPACE}:`)) values[key.slice(CONFIG_NAMESPACE.length + 1)] = value;
  }
  return values;
}

/** Whether every answer the applicable questions need is there: the keys missing, in question order. */
export function missingAnswers(answers: Partial<Answers>): AnswerKey[] {
  return QUESTIONS.filter((entry) => entry.applies(answers) && answers[entry.key] === undefined).map(
    (entry) => entry.key,
  );
}

/**
 * Renders, parses and plans the stack (nothing on disk): a file the schema or the planner would
 * refuse is a bug here, never written.
 */
export function prepareStack(
  name: string,
  answers: Answers,
  origins: Partial<Record<AnswerKey, Origin>>,
  notes: readonly string[] = [],
): { text: string; config: StackConfig; plan: Plan } {
  const text = renderStackFile(answers, origins, notes);
  const config = parseStackConfig(name, valuesOf(text));
  return { text, config, plan: buildPlan(name, config) };
}

/**
 * Writes the file through a temporary file in the same folder, renamed into place: a reader (or an
 * interrupted run) never sees half a stack. Returns the path written.
 */
export function writeStackFile(dir: string, name: string, text: string, force: boolean): string {
  const path = join(dir, `Pulumi.${name}.yaml`);
  if (!force && existsSync(path))
    throw new ConfigError(name, [
      `found "${name}", which exists (Pulumi.${name}.yaml); allowed: a name no stack has, or --force to replace that stack`,
    ]);
  const temporary = join(dir, `.Pulumi.${name}.yaml.${process.pid}.tmp`);
  // A signal's default action would end the process between the write and the rename; with a handler
  // it waits for this synchronous block, and the run then ends as interrupted, its file whole.
  let stoppedBy: NodeJS.Signals | undefined;
  const defer = (signal: NodeJS.Signals) => (stoppedBy = signal);
  const signals: NodeJS.Signals[] = ["SIGINT", "SIGTERM", "SIGHUP"];
  for (const signal of signals) process.on(signal, defer);
  try {
    writeFileSync(temporary, text, { encoding: "utf8", flag: "wx", mode: 0o644 });
    renameSync(temporary, path);
  } finally {
    rmSync(temporary, { force: true });
    // The handlers stay until the signal, if one came while writing, has been delivered to them.
    setImmediate(() => {
      for (const signal of signals) process.removeListener(signal, defer);
      if (stoppedBy) process.exit(128 + (stoppedBy === "SIGINT" ? 2 : stoppedBy === "SIGTERM" ? 15 : 1));
    });
  }
  return path;
}

// ---- the verdict ---------------------------------------------------------------------------------

/** The verdict and the numbers a team decides on, in a few lines (`npm run plan` prints the whole plan). */
export function renderSummary(plan: Plan): string {
  const { placement, projection, cost } = plan;
  const out: string[] = [];
  out.push(verdictLine(plan));
  out.push(`  ${plan.model.name} ${plan.tier.name} (${formatBytes(plan.modelBytes)}) on ${plan.host.label}`);
  for (const device of placement.memory) {
    out.push(
      `  memory   ${device.device} (${device.label}): ${formatBytes(device.plannedBytes)} of ${formatBytes(device.capacityBytes)}${device.fits ? "" : " — short"}`,
    );
  }
  out.push(`  decode   ${projection.decodeTokensPerSecond.toFixed(1)} tok/s at depth ${projection.decodeDepthTokens}`);
  out.push(
    `  prefill  ${projection.prefillTokensPerSecond.toFixed(1)} tok/s for a ${projection.prefillPromptTokens}-token prompt`,
  );
  out.push(
    `  TTFT     ${formatDuration(projection.ttftSeconds)} for a ${formatTokens(projection.ttftPromptTokens)}-token prompt`,
  );
  if (cost) {
    out.push(
      `  monthly  ${formatUsd(cost.monthlyUsd)}; ${formatUsd(cost.usdPerMillionTokensAtMix)} per 1M tokens at this mix (API ${formatUsd(cost.apiUsdPerMillionTokensAtMix)})`,
    );
    out.push(
      `  break-even ${cost.breakEvenTokensPerMonth === null ? "none" : `${formatTokens(cost.breakEvenTokensPerMonth)} tokens/month`} — ${cost.breakEvenReason}`,
    );
  } else out.push(`  monthly  omitted — ${plan.costOmitted}`);
  return out.join("\n");
}

// ---- the command ---------------------------------------------------------------------------------

export const USAGE = `usage: npm run new-stack                       (in a terminal: asks each answer)
       npm run new-stack -- [flags] [--yes] [--force]
Writes stacks/Pulumi.<name>.yaml (KIMI_KIT_STACKS_DIR: another folder) with a comment on every value,
then plans it and prints the verdict, memory, decode, prefill, TTFT and cost. An answer given as a
flag is not asked; --yes takes the default for every other answer; without a terminal nothing is
asked, so every answer must come from a flag or (with --yes) its default.
  --name NAME                  the stack name: lower-case letters, digits, - (an existing one only with --force)
  --model ID|REPO              a model of catalog/models.yaml (kimi-k2.6, …)
  --tier TIER                  one of that model's tiers (UD-Q2_K_XL, …)
  --kind bare-metal|cloud
  --context N                  tokens per slot (32768, 64k)            --slots N   parallel slots (1)
 bare metal:
  --platform ID|recommend      a CPU platform of catalog/platforms.yaml, or the cheapest build that holds the tier
  --sockets N (the platform's)
  --memory SIZE                RAM in all, with its unit (384GiB)          --ssh-host HOST
  --gpus MODEL:COUNT[,…]|none  GPUs of catalog/gpus.yaml (rtx-3090:4)    --pcie GEN:LANES|full (each card's link)
  --hardware-price-usd N|none  the purchase price; none: no cost section   --power-watts N
  --amortization-months N (36) --usd-per-kwh N (0.15)
 cloud:
  --instance-type ID|recommend an instance of catalog/cloud-instances.yaml, or the cheapest that holds the tier
  --region REGION (us-east-1)
  --allowed-cidr CIDR[,…]      networks that reach SSH and the API (required)  --ssh-public-key KEY
 costs:
  --tokens-per-month N (50M)   --mix IN:OUT (3:1)   --utilization F (0.5)
  --api-usd-per-million-input N (0.95)   --api-usd-per-million-output N (4.0)
Exit status: 0 written and it fits; 1 written but the plan refuses it (the file stays, with the
reason printed); 2 bad flags or a refused answer without a terminal; 130 interrupted (nothing written).`;

class Interrupted extends Error {}

/** Asks in a terminal: a question, its choices and default; a refused reply is said and asked again. */
class Asker {
  private readonly abort = new AbortController();
  private interrupted = false;
  constructor(
    private readonly rl: Interface,
    private readonly out: NodeJS.WritableStream,
  ) {
    // In raw mode Ctrl-C reaches readline as a key, not as a signal: without a handler it would only pause.
    rl.on("SIGINT", () => {
      this.interrupted = true;
      this.abort.abort();
    });
    // Ctrl-D (end of input) closes the interface: stop as well, rather than wait for an answer forever.
    rl.on("close", () => this.abort.abort());
  }

  say(line: string): void {
    this.out.write(`${line}\n`);
  }

  async ask(session: Session, key: AnswerKey, context: Context): Promise<void> {
    const entry = questionFor(key);
    for (const line of entry.choices?.(session.answers, context) ?? []) this.say(line);
    for (;;) {
      const fallback = entry.defaultText(session.answers, context);
      const shown = fallback === undefined ? "" : ` [${fallback === "" ? "blank" : fallback}]`;
      let reply: string;
      try {
        reply = await this.rl.question(`${entry.prompt(session.answers, context)}${shown}: `, {
          signal: this.abort.signal,
        });
      } catch {
        throw new Interrupted(this.interrupted ? "interrupted" : "end of input");
      }
      const useDefault = reply.trim() === "" && fallback !== undefined;
      const problem = take(session, key, useDefault ? fallback : reply, useDefault ? "default" : "asked", context);
      if (problem === undefined) {
        if (session.origins[key] === "recommended") this.say(session.notes!.at(-1)!);
        return;
      }
      this.say(fieldLine(key, problem));
    }
  }
}

/** An answer, or "recommend" for the hardware questions: recorded, or the refusal. */
function take(session: Session, key: AnswerKey, text: string, origin: Origin, context: Context): string | undefined {
  if ((key === "platform" || key === "instance") && text.trim().toLowerCase() === "recommend")
    return applyRecommendation(session, context);
  return answer(session, key, text, origin, context);
}

/** The answers a recommended bare-metal build sets together: its parts, their price and their power. */
const RECOMMENDED_HARDWARE: readonly AnswerKey[] = ["sockets", "memory", "gpus", "pcie", "priceUsd", "powerWatts"];

/** Fills the host answers from recommendHardware, except those given as flags; the refusal when it has none. */
function applyRecommendation(session: Session, context: Context): string | undefined {
  // The recommendation picks the build: a flag that also picks part of it contradicts it.
  const conflicting = RECOMMENDED_HARDWARE.filter((key) => context.flags?.[key] !== undefined).map(
    (key) => questionFor(key).flag,
  );
  if (conflicting.length > 0)
    return `found "recommend"; allowed: a choice from the list, or recommend without ${conflicting.join(", ")} (the recommendation picks the whole build)`;
  const { model, tier, kind, contextLength, slots } = session.answers;
  // The electricity price enters the search's monthly cost; a bad one is refused later, at its own question.
  const usdPerKwh = context.flags?.usdPerKwh === undefined ? undefined : parseAmount(context.flags.usdPerKwh);
  const result = recommendHardware(
    {
      model: model!,
      tier: tier!,
      kind: kind!,
      contextLength: contextLength!,
      slots: slots!,
      ...(usdPerKwh === undefined ? {} : { usdPerKwh }),
    },
    context.catalog,
  );
  if (typeof result === "string") return `found "recommend"; ${result}`;
  // Checked as typed answers, in question order (a later check may read an earlier answer), on a copy:
  // a build refused half-way must not leave half its answers behind.
  const trial: Session = { answers: { ...session.answers }, origins: { ...session.origins } };
  for (const entry of QUESTIONS) {
    const text = result.texts[entry.key];
    // A flag's answer stands; the hardware question itself was answered "recommend".
    if (
      text === undefined ||
      (context.flags?.[entry.key] !== undefined && entry.key !== "platform" && entry.key !== "instance")
    )
      continue;
    const problem = answer(trial, entry.key, text, "recommended", context);
    if (problem)
      return `found "recommend"; allowed: a choice from the list (the recommendation's ${entry.field} was refused: ${problem})`;
  }
  Object.assign(session.answers, trial.answers);
  Object.assign(session.origins, trial.origins);
  session.notes = [...(session.notes ?? []), result.why];
  return undefined;
}

interface Io {
  stdin: NodeJS.ReadableStream & { isTTY?: boolean };
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
}

/** The flags as parseArgs reads them; an exit status instead when they are refused or --help is asked. */
function parseFlags(argv: string[], io: Io): Record<string, string | boolean | undefined> | number {
  const flagOptions = Object.fromEntries(QUESTIONS.map((entry) => [entry.flag.slice(2), { type: "string" as const }]));
  let values: Record<string, string | boolean | undefined>;
  try {
    values = parseArgs({
      args: argv,
      options: {
        ...flagOptions,
        yes: { type: "boolean", short: "y" },
        force: { type: "boolean" },
        help: { type: "boolean", short: "h" },
      },
      strict: true,
      allowPositionals: false,
    }).values;
  } catch (error) {
    // parseArgs says "Option '--memory <value>' argument missing": name the flag and point at the usage.
    const missing = /^Option '(--[\w-]+) <value>' argument missing/.exec((error as Error).message)?.[1];
    io.stderr.write(
      `${missing ? `${missing}: found nothing; allowed: a value (see the usage below)` : (error as Error).message}\n${USAGE}\n`,
    );
    return 2;
  }
  if (values.help) {
    io.stdout.write(`${USAGE}\n`);
    return 0;
  }
  return values;
}

/** What one run of the questions shares: the answers so far, how to ask, and the answers nobody gave. */
interface Round {
  session: Session;
  context: Context;
  flags: Partial<Record<AnswerKey, string>>;
  asker: Asker | undefined;
  yes: boolean;
  io: Io;
  /** Answers nobody gave, without a terminal to ask: listed together, so one rerun fixes them all. */
  missing: AnswerKey[];
}

/** Every question that applies, in order; an exit status when a refused flag or default ends the run. */
async function answerAll(round: Round): Promise<number | undefined> {
  // Questions in order: a later one's choices, default and check depend on the earlier answers.
  for (const entry of QUESTIONS) {
    // Answered already: by a recommendation, which fills several at once.
    if (!entry.applies(round.session.answers) || round.session.answers[entry.key] !== undefined) continue;
    const code = await answerQuestion(round, entry);
    if (code !== undefined) return code;
  }
  return undefined;
}

/** One question: from its flag, else asked in a terminal, else its default (with --yes), else missing. */
async function answerQuestion(round: Round, entry: AnyQuestion): Promise<number | undefined> {
  const { session, context, asker, yes, io, missing } = round;
  const flagText = round.flags[entry.key];
  if (missing.length > 0) {
    // An earlier answer is missing, so this one cannot be checked: only list it if it is missing too.
    // The answers that decide which questions apply (kind, price) depend on nothing: still taken.
    if (typeof flagText === "string" && (entry.key === "kind" || entry.key === "priceUsd"))
      answer(session, entry.key, flagText, "flag", context);
    else if (typeof flagText !== "string" && entry.asked && (!yes || entry.mustAnswer)) missing.push(entry.key);
    return undefined;
  }
  if (typeof flagText === "string") {
    const problem = take(session, entry.key, flagText, "flag", context);
    if (problem === undefined) {
      if (session.origins[entry.key] === "recommended") io.stdout.write(`${session.notes!.at(-1)!}\n`);
      return undefined;
    }
    // In a terminal a refused flag is one more wrong answer, said and asked again; in a script it ends the run.
    if (!asker || !entry.asked) return refuse(io, flagLine(entry.key, problem));
    asker.say(fieldLine(entry.key, problem));
  }
  if (asker && entry.asked) {
    await asker.ask(session, entry.key, context);
    return undefined;
  }
  const fallback = entry.defaultText(session.answers, context);
  if (fallback === undefined || (entry.asked && !yes)) {
    missing.push(entry.key);
    return undefined;
  }
  const problem = take(session, entry.key, fallback, "default", context);
  if (problem !== undefined) return refuse(io, flagLine(entry.key, problem));
  return undefined;
}

export async function main(
  argv: string[],
  io: Io = { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr },
): Promise<number> {
  const values = parseFlags(argv, io);
  if (typeof values === "number") return values;
  const flags: Partial<Record<AnswerKey, string>> = {};
  for (const entry of QUESTIONS) {
    const text = values[entry.flag.slice(2)];
    if (typeof text === "string") flags[entry.key] = text;
  }
  const context: Context = { catalog: loadCatalog(), stacksDir: STACKS_DIR, force: values.force === true, flags };
  const session: Session = { answers: {}, origins: {} };
  const yes = values.yes === true;
  const terminal = io.stdin.isTTY === true;
  const rl = terminal && !yes ? createInterface({ input: io.stdin, output: io.stdout, terminal: true }) : undefined;
  const asker = rl ? new Asker(rl, io.stdout) : undefined;
  const missing: AnswerKey[] = [];
  try {
    asker?.say("A new kimi-kit stack. Enter takes the [default]; Ctrl-C stops without writing anything.");
    const code = await answerAll({ session, context, flags, asker, yes, io, missing });
    if (code !== undefined) return code;
  } catch (error) {
    if (error instanceof Interrupted) {
      io.stderr.write(`\nstopped (${error.message}): nothing written\n`);
      return 130;
    }
    throw error;
  } finally {
    rl?.close();
  }
  if (missing.length > 0) {
    const flags = missing.map((key) => questionFor(key).flag).join(", ");
    const why = terminal ? "--yes asks nothing" : "stdin is not a terminal, so nothing is asked";
    return refuse(
      io,
      `${flags}: found nothing; allowed: a value for each (${why}; --yes takes the default of an answer that has one)`,
    );
  }
  return writeAndPlan(session.answers as Answers, session, context, io);
}

/** Renders, checks and writes the stack, then plans the file as written and prints the verdict and next steps. */
function writeAndPlan(answers: Answers, session: Session, context: Context, io: Io): number {
  let prepared: ReturnType<typeof prepareStack>;
  try {
    prepared = prepareStack(answers.name, answers, session.origins, session.notes);
  } catch (error) {
    if (error instanceof ConfigError) {
      io.stderr.write(
        `new-stack would write a stack the kit refuses (a bug in cli/new-stack.ts); nothing written:\n${error.message}\n`,
      );
      return 1;
    }
    throw error;
  }
  let path: string;
  try {
    path = writeStackFile(context.stacksDir, answers.name, prepared.text, context.force);
  } catch (error) {
    if (error instanceof ConfigError) return refuse(io, flagLine("name", error.problems[0]!));
    throw error;
  }
  // The file on disk, read back as `npm run plan` reads it: what is printed is what was written.
  const plan = buildPlan(answers.name, loadStackConfig(answers.name, context.stacksDir));
  const shown = relative(process.cwd(), path);
  io.stdout.write(`\nwrote ${shown.startsWith("..") ? path : shown}\n${renderSummary(plan)}\n`);
  const steps = [
    `npm run plan -- --stack ${answers.name} (the whole plan)`,
    ...(answers.kind === "bare-metal" && !answers.sshHost ? ["add host.ssh (where `pulumi up` connects)"] : []),
    `pulumi stack init ${answers.name}`,
    `pulumi config set --secret --stack ${answers.name} kimi-kit:apiKey "$(openssl rand -hex 32)"`,
    `pulumi up --stack ${answers.name}`,
  ];
  io.stdout.write(`Next: ${steps.join("; ")}\n`);
  return plan.fits ? 0 : 1;
}

function refuse(io: Io, line: string): number {
  io.stderr.write(`${line}\n`);
  return 2;
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (error: unknown) => {
      process.stderr.write(`${(error as Error).stack ?? String(error)}\n`);
      process.exitCode = 1;
    },
  );
}
