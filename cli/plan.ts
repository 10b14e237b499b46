/**
 * `npm run plan -- --stack NAME [--json]` and `npm run plan -- --compare [--json]`: the sizing
 * engine without Pulumi, hardware or network. Exit status 1 when the named stack does not fit or
 * its configuration is invalid; --compare always exits 0 and marks refused stacks.
 * `--args "<llama-server flags>"` (with --stack, or with --gguf PATH for a local model on the
 * stack's host or this machine) estimates that command line instead of planning the kit's own.
 * `--diff GIT-REF` and `--diff-stack OTHER` print what changed between two plans (planner/diff.ts);
 * this file does the git worktree and the child process, the exit status says whether it is material.
 */
import { spawn, spawnSync } from "node:child_process";
import {
  existsSync,
  mkdtempSync,
  readFileSync,
  realpathSync,
  rmSync,
  symlinkSync,
  unlinkSync,
  writeFileSync,
} from "node:fs";
import { constants, tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { parseArgs } from "node:util";
import { diffPlans, diffToJson, isMaterial, renderDiffMarkdown, renderDiffText, type PlanSide } from "../planner/diff";
import { ConfigError } from "../planner/errors";
import { buildPlan, type Plan } from "../planner/plan";
import { planToJson, renderComparison, renderPlan, type InvalidStack, type PlanJson } from "../planner/report";
import { listStacks, loadStackConfig, STACKS_DIR } from "../planner/stack-file";
import { loadCatalog, loadPrices } from "../planner/catalog";
import {
  recommend,
  RecommendInputError,
  recommendationToJson,
  recommendRequest,
  renderRecommendation,
  renderStackFile,
  stackNameProblem,
  type RecommendOptions,
  type RecommendRequest,
} from "../planner/recommend";
import {
  commandLineToJson,
  estimateCommandLine,
  renderCommandLineEstimate,
  type CommandLineEstimate,
} from "../planner/command-line";
import { measureReadBandwidthGBps } from "../tools/bandwidth";
import { readLocalModel, thisMachineHost } from "./local-model";
import { writeReport } from "./report-file";
import { renderHtmlReport, renderMemorySvg, type ReportVersion } from "../planner/report-html";

const USAGE = `usage: npm run plan -- --stack NAME [--json]
       npm run plan -- --stack NAME --args "<llama-server flags>" [--json]
       npm run plan -- --gguf PATH [--args "<llama-server flags>"] [--stack NAME] [--bandwidth-gbps N] [--json]
       npm run plan -- --compare [--json]
       npm run plan -- --stack NAME [--html FILE] [--svg FILE]
       npm run plan -- --stack NAME --diff GIT-REF [--format text|markdown|json] [--json] [--html FILE] [--svg FILE]
       npm run plan -- --stack NAME --diff-stack OTHER [--format text|markdown|json] [--json] [--html FILE] [--svg FILE]
       npm run plan -- --recommend --model REPO [--tier TIER|any] [--min-decode N] [--context N] [--slots N]
                       [--max-monthly-usd N] [--kind bare-metal|cloud|any] [--usd-per-kwh N] [--top N] [--json]
                       [--write-stack NAME [--force]]
--recommend plans every catalog cloud instance and every bare-metal build priced by
catalog/prices.yaml (CPU platform × DIMM size in every channel × none or 1/2/4/8 of one GPU) for the
tier (or every tier with any, the default), and prints the cheapest that fit and meet --min-decode
(tok/s at depth 4096) and --max-monthly-usd, with decode/prefill, monthly cost, cost per 1M output
tokens, break-even against the API, the near misses and why they fail. Defaults: --context 32768,
--slots 1, --kind any, --usd-per-kwh 0.15, --top 5. --write-stack writes the cheapest as
stacks/Pulumi.NAME.yaml (an existing one only with --force). Exit status: 0 a recommendation,
1 none (one line says which constraint no catalog host meets and what would), 2 bad usage.
--html writes one self-contained page (memory map, decode by depth, prefill by prompt, cost by
volume; both versions overlaid for a diff); --svg writes the memory map alone.
--diff plans the stack with the code and data as they are at GIT-REF (in a temporary git worktree,
removed afterwards) and as they are in the working tree, and prints what changed: devices and their
planned bytes, the verdict, llama-server flags, decode/prefill/TTFT, costs. --diff-stack compares
stack NAME with stack OTHER of the working tree. --format markdown is a pull-request comment, json
(or --json) is for tools. Exit status of --diff and --diff-stack:
  0  nothing material changed
  3  something material changed: a verdict, any llama-server flag, a device's planned bytes (or
     capacity) by >= 1% of its capacity, decode, prefill or TTFT by >= 5%, the monthly cost by >= $1,
     or a side that is new, removed or could not be planned
  2  bad usage, an unknown stack or an unknown git ref
  1  any other failure
stacks: ${listStacks().join(", ")}`;

/** What each option that takes a value accepts, for the one line a missing value prints. */
const VALUE_OF: Record<string, string> = {
  "--stack": `a stack name (${listStacks().join(", ")})`,
  "--gguf": "a local .gguf file (the first shard of a split model)",
  "--bandwidth-gbps": "a positive number of GB/s",
  "--diff": "a git ref (a branch, a tag, a commit, HEAD~1)",
  "--diff-stack": `a stack name (${listStacks().join(", ")})`,
  "--format": "text, markdown or json",
  "--html": "a file path to write the HTML report to",
  "--svg": "a file path to write the memory map SVG to",
  "--model": "a catalog model repo, like unsloth/Kimi-K2.6-GGUF",
  "--tier": "a tier of the model, or any",
  "--min-decode": "a positive number of tokens per second",
  "--context": "a whole number of tokens per slot",
  "--slots": "a whole number of parallel slots",
  "--max-monthly-usd": "a positive number of US dollars per month",
  "--kind": "bare-metal, cloud or any",
  "--usd-per-kwh": "a number of US dollars per kWh",
  "--top": "a whole number of recommendations",
  "--write-stack": "a stack name to write the cheapest recommendation as",
};

/** The options only --recommend reads; each alone is a mistake worth one line. */
const RECOMMEND_ONLY = [
  "model",
  "tier",
  "min-decode",
  "context",
  "slots",
  "max-monthly-usd",
  "kind",
  "usd-per-kwh",
  "top",
  "write-stack",
  "force",
] as const;

/** Every option but --args (taken out before: llama-server flags would read as options here). */
function parseOptions(args: string[]) {
  return parseArgs({
    args,
    options: {
      stack: { type: "string" },
      gguf: { type: "string" },
      "bandwidth-gbps": { type: "string" },
      compare: { type: "boolean" },
      json: { type: "boolean" },
      diff: { type: "string" },
      "diff-stack": { type: "string" },
      format: { type: "string" },
      html: { type: "string" },
      svg: { type: "string" },
      recommend: { type: "boolean" },
      model: { type: "string" },
      tier: { type: "string" },
      "min-decode": { type: "string" },
      context: { type: "string" },
      slots: { type: "string" },
      "max-monthly-usd": { type: "string" },
      kind: { type: "string" },
      "usd-per-kwh": { type: "string" },
      top: { type: "string" },
      "write-stack": { type: "string" },
      force: { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
  }).values;
}

type PlanOptions = ReturnType<typeof parseOptions>;

async function main(argv: string[]): Promise<number> {
  let options: PlanOptions;
  // --args takes the next word verbatim: llama-server flags start with "-", which parseArgs refuses as a value.
  const at = argv.indexOf("--args");
  const argsText = at >= 0 ? argv[at + 1] : argv.find((arg) => arg.startsWith("--args="))?.slice("--args=".length);
  if (at >= 0 && argsText === undefined) {
    process.stderr.write(
      `--args: found nothing; allowed: llama-server flags in one quoted word, e.g. --args "-c 8192 -np 2"\n${USAGE}\n`,
    );
    return 2;
  }
  const rest =
    at >= 0 ? [...argv.slice(0, at), ...argv.slice(at + 2)] : argv.filter((arg) => !arg.startsWith("--args="));
  try {
    options = parseOptions(rest);
  } catch (error) {
    // parseArgs says "Option '--gguf <value>' argument missing": name the option and what it takes instead.
    const missing = /^Option '(--[\w-]+) <value>' argument missing/.exec((error as Error).message)?.[1];
    const allowed = missing ? VALUE_OF[missing] : undefined;
    process.stderr.write(
      `${allowed ? `${missing}: found nothing; allowed: ${allowed}` : (error as Error).message}\n${USAGE}\n`,
    );
    return 2;
  }
  if (!options.help && options.recommend) return recommendAlone(options, argsText);
  if (!options.help) {
    const stray = RECOMMEND_ONLY.find((name) => options[name] !== undefined);
    if (stray) {
      process.stderr.write(`--${stray}: only with --recommend\n${USAGE}\n`);
      return 2;
    }
  }
  if (
    !options.help &&
    (options.diff !== undefined || options["diff-stack"] !== undefined || options.format !== undefined)
  )
    return runDiffOptions(options, argsText);
  if (!options.help && (argsText !== undefined || options.gguf !== undefined)) return runCommandLine(options, argsText);
  if (options.help || (!options.stack && !options.compare)) {
    process.stdout.write(`${USAGE}\n`);
    return options.help ? 0 : 2;
  }
  if (options.compare) return runCompare(options.json === true);
  return runStack(options.stack!, options);
}

/** --recommend, refused (exit 2) beside any option that plans a stack or a command line instead. */
function recommendAlone(options: PlanOptions, argsText: string | undefined): number {
  const conflicting = [
    ["--stack", options.stack],
    ["--compare", options.compare],
    ["--diff", options.diff],
    ["--diff-stack", options["diff-stack"]],
    ["--format", options.format],
    ["--args", argsText],
    ["--gguf", options.gguf],
    ["--bandwidth-gbps", options["bandwidth-gbps"]],
    ["--html", options.html],
    ["--svg", options.svg],
  ].flatMap(([flag, value]) => (value !== undefined && value !== false ? [flag as string] : []));
  if (conflicting.length > 0) {
    process.stderr.write(
      `--recommend: not with ${conflicting.join(", ")} (it plans catalog hosts, not a stack or a command line)\n${USAGE}\n`,
    );
    return 2;
  }
  return runRecommend(options, options.json === true);
}

/** --diff, --diff-stack (and --format): a failure with its exit status is printed as one line. */
async function runDiffOptions(options: PlanOptions, argsText: string | undefined): Promise<number> {
  try {
    return await runDiff({
      stack: options.stack,
      ref: options.diff,
      otherStack: options["diff-stack"],
      format: options.format,
      json: options.json === true,
      reports: { html: options.html, svg: options.svg },
      conflicting: [
        argsText !== undefined ? "--args" : "",
        options.gguf !== undefined ? "--gguf" : "",
        options.compare ? "--compare" : "",
        options["bandwidth-gbps"] !== undefined ? "--bandwidth-gbps" : "",
      ].filter(Boolean),
    });
  } catch (error) {
    if (error instanceof ExitError) {
      process.stderr.write(`${error.message}${error.code === 2 && error.withUsage ? `\n${USAGE}` : ""}\n`);
      return error.code;
    }
    throw error;
  }
}

/** --args and --gguf: a llama-server command line estimated for a stack's host or this machine. */
async function runCommandLine(options: PlanOptions, argsText: string | undefined): Promise<number> {
  if (options.gguf === undefined && !options.stack) {
    process.stderr.write(`--args needs --stack NAME or --gguf PATH\n${USAGE}\n`);
    return 2;
  }
  try {
    const result = await estimateUserCommandLine({
      stack: options.stack,
      gguf: options.gguf,
      argsText: argsText ?? "",
      bandwidthGBps: options["bandwidth-gbps"],
    });
    process.stdout.write(
      options.json
        ? `${JSON.stringify(commandLineToJson(result), null, 2)}\n`
        : `${renderCommandLineEstimate(result)}\n`,
    );
    return result.estimate.fits ? 0 : 1;
  } catch (error) {
    if (error instanceof ConfigError) {
      // Flag and file problems already name the flag or the file: one line each, no "stack" preamble.
      process.stderr.write(`${error.stack_.startsWith("--") ? error.problems.join("\n") : error.message}\n`);
      return 1;
    }
    throw error;
  }
}

/** --compare: every stack planned, a stack that cannot be planned in its own row; always exit 0. */
function runCompare(json: boolean): number {
  const plans: Plan[] = [];
  const invalid: (InvalidStack & { message: string })[] = [];
  for (const stack of listStacks()) {
    try {
      plans.push(buildPlan(stack, loadStackConfig(stack)));
    } catch (error) {
      // One broken stack must not hide the others (nor crash --compare): it gets its own row.
      const problems =
        error instanceof ConfigError ? error.problems : [String((error as Error).message).split("\n")[0]!];
      invalid.push({
        stack,
        problems,
        message: error instanceof ConfigError ? error.message : `stack ${stack}: ${problems[0]}`,
      });
    }
  }
  const invalidJson = invalid.map(({ stack, problems }) => ({ stack, invalid: true, problems }));
  if (json) process.stdout.write(`${JSON.stringify([...plans.map(planToJson), ...invalidJson], null, 2)}\n`);
  else process.stdout.write(`${renderComparison(plans, invalid)}\n`);
  for (const { message } of invalid) process.stderr.write(`${message}\n`);
  return 0;
}

/** --stack NAME: the plan, as text or JSON, and the --html/--svg reports; exit 1 when it does not fit. */
function runStack(stack: string, options: PlanOptions): number {
  try {
    const plan = buildPlan(stack, loadStackConfig(stack));
    process.stdout.write(options.json ? `${JSON.stringify(planToJson(plan), null, 2)}\n` : `${renderPlan(plan)}\n`);
    writeReports({ html: options.html, svg: options.svg }, [{ label: stack, plan: planToJson(plan) }]);
    return plan.fits ? 0 : 1;
  } catch (error) {
    if (error instanceof ConfigError) {
      // A report path names its flag (one line); a stack problem keeps its "stack X" preamble.
      process.stderr.write(`${error.stack_.startsWith("--") ? error.problems.join("\n") : error.message}\n`);
      return 1;
    }
    throw error;
  }
}

/**
 * --recommend: the request is checked first (one line per bad value, exit 2), then the stack name and
 * whether it exists, so a search of seconds never ends in a refusal it could have made at once.
 */
function runRecommend(options: RecommendOptions & { "write-stack"?: string; force?: boolean }, json: boolean): number {
  const catalog = loadCatalog();
  const prices = loadPrices(catalog);
  let request: RecommendRequest;
  try {
    request = recommendRequest(options, catalog, prices);
  } catch (error) {
    if (error instanceof RecommendInputError) {
      process.stderr.write(`${error.message}\n`);
      return 2;
    }
    throw error;
  }
  const name = options["write-stack"];
  if (options.force && name === undefined) {
    process.stderr.write(`--force: only with --write-stack NAME (it allows overwriting that stack)\n`);
    return 2;
  }
  const stackFile = name !== undefined ? join(STACKS_DIR, `Pulumi.${name}.yaml`) : undefined;
  const shownFile =
    name !== undefined
      ? process.env.KIMI_KIT_STACKS_DIR === undefined
        ? `stacks/Pulumi.${name}.yaml`
        : stackFile!
      : undefined;
  if (name !== undefined) {
    const problem = stackNameProblem(name);
    if (problem) {
      process.stderr.write(`${problem}\n`);
      return 2;
    }
    if (existsSync(stackFile!) && !options.force) {
      process.stderr.write(
        `--write-stack: ${shownFile} exists; allowed: a new stack name, or --force to overwrite it\n`,
      );
      return 2;
    }
  }
  const result = recommend(request, { catalog, prices });
  if (json) process.stdout.write(`${JSON.stringify(recommendationToJson(result), null, 2)}\n`);
  if (result.problem !== undefined) {
    // The one line, where a person reads it; --json also carries it as "problem".
    process.stderr.write(`${result.problem}\n`);
    return 1;
  }
  if (!json) process.stdout.write(`${renderRecommendation(result)}\n`);
  if (name !== undefined) {
    writeFileSync(
      stackFile!,
      renderStackFile(
        result.recommended[0]!,
        result,
        name,
        recommendCommandLine(request, name, prices.electricity.usdPerKwh),
      ),
    );
    process.stderr.write(`wrote ${shownFile}: npm run plan -- --stack ${name} plans it\n`);
  }
  return 0;
}

/** The command that wrote a stack, for its header comment: the request as flags, no machine paths. */
function recommendCommandLine(request: RecommendRequest, name: string, defaultUsdPerKwh: number): string {
  const flags = [`--model ${request.model}`, `--tier ${request.tier}`];
  if (request.minDecode !== undefined) flags.push(`--min-decode ${request.minDecode}`);
  if (request.contextLength !== 32768) flags.push(`--context ${request.contextLength}`);
  if (request.slots !== 1) flags.push(`--slots ${request.slots}`);
  if (request.maxMonthlyUsd !== undefined) flags.push(`--max-monthly-usd ${request.maxMonthlyUsd}`);
  if (request.kind !== "any") flags.push(`--kind ${request.kind}`);
  if (request.usdPerKwh !== defaultUsdPerKwh) flags.push(`--usd-per-kwh ${request.usdPerKwh}`);
  return `npm run plan -- --recommend ${flags.join(" ")} --write-stack ${name}`;
}

/** --html and --svg: the plan (or both sides of a diff) as a picture, written where the user asked. */
function writeReports(paths: { html: string | undefined; svg: string | undefined }, versions: ReportVersion[]): void {
  if (paths.html !== undefined) {
    writeReport(paths.html, renderHtmlReport(versions), "--html");
    process.stderr.write(`wrote ${paths.html}\n`);
  }
  if (paths.svg !== undefined) {
    writeReport(paths.svg, renderMemorySvg(versions), "--svg");
    process.stderr.write(`wrote ${paths.svg}\n`);
  }
}

/** The model and host for --args/--gguf: a stack's (its model, tier and host) or a local file's on this machine. */
async function estimateUserCommandLine(request: {
  stack: string | undefined;
  gguf: string | undefined;
  argsText: string;
  bandwidthGBps: string | undefined;
}): Promise<CommandLineEstimate> {
  if (request.stack && request.bandwidthGBps !== undefined) {
    throw new ConfigError("--bandwidth-gbps", [
      `--bandwidth-gbps: not used with --stack ${request.stack}, whose host states its own bandwidth; allowed: --bandwidth-gbps only with --gguf and no --stack (this machine)`,
    ]);
  }
  const catalog = loadCatalog();
  const plan = request.stack ? buildPlan(request.stack, loadStackConfig(request.stack), { catalog }) : undefined;
  let host = plan?.host;
  let hostSource = `stack ${request.stack}`;
  if (!host) {
    // No stack: this machine, at the read bandwidth given or measured now (membw, as the bench does).
    const gbps =
      request.bandwidthGBps === undefined
        ? measureReadBandwidthGBps(thisMachineHost(1).cpu.cores)
        : Number(request.bandwidthGBps);
    if (!(gbps > 0))
      throw new ConfigError("--bandwidth-gbps", [
        `--bandwidth-gbps: found ${JSON.stringify(request.bandwidthGBps)}; allowed: a positive number of GB/s`,
      ]);
    host = thisMachineHost(gbps);
    hostSource =
      request.bandwidthGBps === undefined ? "this machine, bandwidth measured now" : "this machine, --bandwidth-gbps";
  }
  if (request.gguf !== undefined) {
    const model = await readLocalModel(request.gguf);
    return estimateCommandLine({
      modelLabel: request.gguf,
      hostSource,
      tensors: model.tensors,
      arch: model.arch,
      host,
      argsText: request.argsText,
      catalog,
    });
  }
  return estimateCommandLine({
    modelLabel: `${plan!.model.name} ${plan!.tier.name} (stack ${request.stack})`,
    hostSource,
    tensors: plan!.tensors,
    arch: plan!.model.architecture,
    host,
    argsText: request.argsText,
    catalog,
  });
}

// ---- --diff and --diff-stack --------------------------------------------------------------------

/** The kit's root (this file's parent): the tree the working-tree side plans and the git checkout --diff reads. */
const KIT_ROOT = join(__dirname, "..");
/**
 * How long the plan at a ref may take (a plan takes seconds); KIMI_KIT_PLAN_DIFF_TIMEOUT_S changes it (tests use it).
 */
const PLAN_AT_REF_TIMEOUT_S = 120;
/** The signals a user or a CI runner stops us with: each must still remove the worktree. */
const STOP_SIGNALS = ["SIGINT", "SIGTERM", "SIGHUP"] as const;
/** Names a stack file may have: the same rule as planner/stack-file.ts, so no name reaches outside stacks/. */
const STACK_NAME = /^[A-Za-z0-9_.-]+$/;

/**
 * A failure with its exit status: 2 bad usage (with the usage text when `withUsage`), 1 a failure, 128 + n stopped by
 * signal n.
 */
class ExitError extends Error {
  constructor(
    readonly code: number,
    message: string,
    readonly withUsage = false,
  ) {
    super(message);
  }
}

interface DiffRequest {
  stack: string | undefined;
  ref: string | undefined;
  otherStack: string | undefined;
  format: string | undefined;
  json: boolean;
  reports: { html: string | undefined; svg: string | undefined };
  /** Options given that --diff and --diff-stack cannot take. */
  conflicting: string[];
}

async function runDiff(request: DiffRequest): Promise<number> {
  if (request.ref === undefined && request.otherStack === undefined)
    throw new ExitError(2, "--format: only with --diff GIT-REF or --diff-stack OTHER", true);
  if (request.ref !== undefined && request.otherStack !== undefined)
    throw new ExitError(
      2,
      "--diff and --diff-stack: one at a time (a ref of one stack, or two stacks of this tree)",
      true,
    );
  const option = request.ref !== undefined ? "--diff" : "--diff-stack";
  if (request.conflicting.length > 0)
    throw new ExitError(2, `${option}: not with ${request.conflicting.join(", ")}`, true);
  if (!request.stack) throw new ExitError(2, `${option} needs --stack NAME`, true);
  if (request.format !== undefined && !["text", "markdown", "json"].includes(request.format))
    throw new ExitError(2, `--format: found ${JSON.stringify(request.format)}; allowed: text, markdown or json`);
  if (request.json && request.format !== undefined && request.format !== "json")
    throw new ExitError(2, `--json and --format ${request.format}: pick one`);
  const format = request.json ? "json" : (request.format ?? "text");
  const stack = request.stack;

  const { before, after } =
    request.otherStack !== undefined ? twoStacksHere(stack, request.otherStack) : await stackAtRef(stack, request.ref!);
  const diff = diffPlans(before, after);
  const rendered =
    format === "json"
      ? JSON.stringify(diffToJson(diff), null, 2)
      : format === "markdown"
        ? renderDiffMarkdown(diff)
        : renderDiffText(diff);
  process.stdout.write(`${rendered}\n`);
  // Only sides that were planned can be drawn; an older ref's JSON may lack fields, which the
  // renderer says in the page instead of drawing zeros.
  const drawable = [before, after].flatMap((side) =>
    side.plan ? [{ label: side.label, plan: side.plan as PlanJson }] : [],
  );
  try {
    writeReports(request.reports, drawable);
  } catch (error) {
    if (error instanceof ConfigError) throw new ExitError(1, error.problems.join("\n"));
    throw error;
  }
  return isMaterial(diff) ? 3 : 0;
}

/** --diff-stack: both stacks planned by this tree; either unknown is refused (exit 2). */
function twoStacksHere(stack: string, otherStack: string): { before: PlanSide; after: PlanSide } {
  for (const name of [stack, otherStack]) {
    if (!stackExistsHere(name))
      throw new ExitError(2, `no stack file stacks/Pulumi.${name}.yaml; stacks here: ${listStacks().join(", ")}`);
  }
  return { before: planHere(stack, stack), after: planHere(otherStack, otherStack) };
}

/** --diff: the stack as planned at the ref (before) and in the working tree (after); missing on one side is a side. */
async function stackAtRef(stack: string, ref: string): Promise<{ before: PlanSide; after: PlanSide }> {
  const repo = gitCheckout();
  const sha = resolveCommit(ref);
  const label = sha.startsWith(ref) ? sha.slice(0, 7) : `${ref} (${sha.slice(0, 7)})`;
  const atRef =
    STACK_NAME.test(stack) && git(["cat-file", "-e", `${sha}:${repo.prefix}stacks/Pulumi.${stack}.yaml`]).status === 0;
  const here = stackExistsHere(stack);
  if (!atRef && !here)
    throw new ExitError(
      2,
      `--stack ${stack}: no stack file stacks/Pulumi.${stack}.yaml at ${label} nor in the working tree; stacks here: ${listStacks().join(", ")}`,
    );
  // Planned first: a stack that is new needs no worktree at all.
  const after: PlanSide = here ? planHere(stack, "working tree") : { label: "working tree", stack, missing: true };
  const before: PlanSide = atRef
    ? await planAtRef({ sha, label, stack, prefix: repo.prefix })
    : { label, stack, missing: true };
  return { before, after };
}

function stackExistsHere(stack: string): boolean {
  return STACK_NAME.test(stack) && existsSync(join(STACKS_DIR, `Pulumi.${stack}.yaml`));
}

/** One side planned by this tree's own code, in this process; a stack that cannot be planned says why. */
function planHere(stack: string, label: string): PlanSide {
  try {
    return { label, stack, plan: planToJson(buildPlan(stack, loadStackConfig(stack))) };
  } catch (error) {
    return {
      label,
      stack,
      unreadable:
        error instanceof ConfigError ? error.problems.join("; ") : String((error as Error).message).split("\n")[0]!,
    };
  }
}

function git(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const run = spawnSync("git", ["-C", KIT_ROOT, ...args], { encoding: "utf8" });
  if (run.error) throw new ExitError(1, `--diff: cannot run git: ${run.error.message}`);
  return { status: run.status, stdout: run.stdout, stderr: run.stderr };
}

function firstLine(text: string): string {
  return text.trim().split("\n")[0] ?? "";
}

/** The git checkout the kit sits in, and the kit's path inside it ("" at the top, "sub/dir/" below). */
function gitCheckout(): { prefix: string } {
  const inside = git(["rev-parse", "--show-prefix"]);
  if (inside.status !== 0)
    throw new ExitError(1, `--diff: the kit is not in a git checkout (${firstLine(inside.stderr)})`);
  return { prefix: inside.stdout.trim() };
}

function resolveCommit(ref: string): string {
  // A ref that starts with "-" would be read as an option by git.
  const found = ref.startsWith("-")
    ? undefined
    : git(["rev-parse", "--verify", "--quiet", "--end-of-options", `${ref}^{commit}`]);
  if (!found || found.status !== 0)
    throw new ExitError(
      2,
      `--diff: unknown git ref ${JSON.stringify(ref)} (no commit by that name in this repository)`,
    );
  return found.stdout.trim();
}

/**
 * Stops the child when a stop signal arrives while a worktree exists, so the finally block that
 * removes the worktree runs; the caller then exits as the signal would have (128 + its number).
 */
class StopSignals {
  signal: NodeJS.Signals | undefined;
  /** Kills the child running now, if any. */
  onStop: (() => void) | undefined;
  private readonly handler = (signal: NodeJS.Signals) => {
    this.signal ??= signal;
    this.onStop?.();
  };

  listen(): void {
    for (const signal of STOP_SIGNALS) process.on(signal, this.handler);
  }

  release(): void {
    for (const signal of STOP_SIGNALS) process.off(signal, this.handler);
  }

  throwIfStopped(): void {
    if (this.signal)
      throw new ExitError(
        128 + (constants.signals[this.signal] ?? 0),
        `--diff: stopped by ${this.signal}; the temporary worktree was removed`,
      );
  }
}

/** tsx's command-line entry in this kit's node_modules, and that node_modules, which the old tree borrows. */
function tsxEntry(): { cli: string; nodeModules: string } {
  const manifest = require.resolve("tsx/package.json");
  const bin = (JSON.parse(readFileSync(manifest, "utf8")) as { bin: string | Record<string, string> }).bin;
  const relative = typeof bin === "string" ? bin : bin.tsx;
  if (!relative) throw new ExitError(1, "--diff: tsx's package.json names no tsx command");
  return { cli: join(dirname(manifest), relative), nodeModules: realpathSync(dirname(dirname(manifest))) };
}

function timeoutSeconds(): number {
  const text = process.env.KIMI_KIT_PLAN_DIFF_TIMEOUT_S;
  if (text === undefined) return PLAN_AT_REF_TIMEOUT_S;
  const seconds = Number(text);
  if (!(seconds > 0))
    throw new ExitError(
      2,
      `KIMI_KIT_PLAN_DIFF_TIMEOUT_S: found ${JSON.stringify(text)}; allowed: a positive number of seconds`,
    );
  return seconds;
}

/**
 * The stack planned by the code and data of commit `sha`: a detached worktree of it in a temporary
 * directory, its own cli/plan.ts run with --json (on this kit's node_modules, linked in), the worktree
 * removed afterwards whatever happens. The old code may print an older JSON: diffPlans reads it
 * defensively; output that is no plan at all makes the side "unreadable", not the command fail.
 */
async function planAtRef(at: { sha: string; label: string; stack: string; prefix: string }): Promise<PlanSide> {
  const seconds = timeoutSeconds();
  const { cli: tsxCli, nodeModules } = tsxEntry();
  // The real path: git lists worktrees by it, and the check that none is left behind compares with it.
  const parent = realpathSync(mkdtempSync(join(tmpdir(), "kimi-kit-plan-diff-")));
  const tree = join(parent, "tree");
  const kit = join(tree, at.prefix);
  const stops = new StopSignals();
  let linked = false;
  stops.listen();
  try {
    const add = git(["worktree", "add", "--detach", "--quiet", tree, at.sha]);
    stops.throwIfStopped();
    if (add.status !== 0) throw new ExitError(1, `--diff: git worktree add failed: ${firstLine(add.stderr)}`);
    const oldCli = join(kit, "cli", "plan.ts");
    if (!existsSync(oldCli)) return { label: at.label, stack: at.stack, unreadable: "it has no cli/plan.ts" };
    // A tree that brings its own node_modules (committed, oddly) keeps it; otherwise it borrows ours.
    linked = !existsSync(join(kit, "node_modules"));
    if (linked) symlinkSync(nodeModules, join(kit, "node_modules"), "dir");
    // The old tree reads its own stacks/: a stacks directory pointed at for this tree is not its.
    const env = { ...process.env };
    delete env.KIMI_KIT_STACKS_DIR;
    const run = await runChild(
      process.execPath,
      [tsxCli, oldCli, "--stack", at.stack, "--json"],
      { cwd: kit, env, timeoutMs: seconds * 1000 },
      stops,
    );
    stops.throwIfStopped();
    const side = { label: at.label, stack: at.stack };
    if (run.timedOut) return { ...side, unreadable: `planning took longer than ${seconds} s and was stopped` };
    if (run.spawnError) return { ...side, unreadable: `could not start its planner: ${run.spawnError}` };
    let parsed: unknown;
    try {
      parsed = JSON.parse(run.stdout);
    } catch {
      parsed = undefined;
    }
    // Exit 1 with a plan is a stack that does not fit: still a plan.
    if (parsed !== null && typeof parsed === "object" && !Array.isArray(parsed) && (run.code === 0 || run.code === 1))
      return { ...side, plan: parsed as Record<string, unknown> };
    return { ...side, unreadable: childReason(run) };
  } finally {
    removeWorktree(tree, linked ? join(kit, "node_modules") : undefined, parent);
    stops.release();
  }
}

/** Why a child printed no plan, in one line: its error lines without the stack trace, or its exit. */
function childReason(run: { code: number | null; signal: NodeJS.Signals | null; stderr: string }): string {
  const lines = run.stderr
    .split("\n")
    .map((line) => line.trim())
    .filter((line) => line !== "" && !/^at\s/.test(line));
  const exit = run.signal ? `killed by ${run.signal}` : `exit ${run.code}`;
  // An uncaught error prints its source line and a caret first; the "Error: …" line is the reason.
  const text = lines.find((line) => /^[A-Z]\w*(Error|Exception)\b/.test(line)) ?? lines.slice(0, 4).join(" ");
  return text === ""
    ? `its planner printed no plan JSON (${exit})`
    : `${text.length > 400 ? `${text.slice(0, 399)}…` : text} (${exit})`;
}

interface ChildRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
  spawnError?: string;
}

/**
 * Runs the old tree's planner in a process group of its own, so a timeout or a stop signal can kill
 * it and the node process tsx starts under it together.
 */
function runChild(
  command: string,
  args: string[],
  options: { cwd: string; env: NodeJS.ProcessEnv; timeoutMs: number },
  stops: StopSignals,
): Promise<ChildRun> {
  return new Promise((resolve) => {
    const child = spawn(command, args, {
      cwd: options.cwd,
      env: options.env,
      detached: true,
      stdio: ["ignore", "pipe", "pipe"],
    });
    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    let timedOut = false;
    const killGroup = () => {
      try {
        if (child.pid !== undefined) process.kill(-child.pid, "SIGKILL");
      } catch {
        // Already gone: nothing to stop.
      }
    };
    const timer = setTimeout(() => {
      timedOut = true;
      killGroup();
    }, options.timeoutMs);
    stops.onStop = killGroup;
    if (stops.signal) killGroup();
    child.stdout.on("data", (chunk: Buffer) => stdout.push(chunk));
    child.stderr.on("data", (chunk: Buffer) => stderr.push(chunk));
    const finish = (code: number | null, signal: NodeJS.Signals | null, spawnError?: string) => {
      clearTimeout(timer);
      stops.onStop = undefined;
      resolve({
        code,
        signal,
        stdout: Buffer.concat(stdout).toString("utf8"),
        stderr: Buffer.concat(stderr).toString("utf8"),
        timedOut,
        ...(spawnError ? { spawnError } : {}),
      });
    };
    child.on("error", (error) => finish(null, null, error.message));
    child.on("close", (code, signal) => finish(code, signal));
  });
}

/**
 * Removes the worktree and its temporary directory. The node_modules link we made goes first, by
 * itself, so no recursive removal below can reach into the kit's real node_modules through it.
 */
function removeWorktree(tree: string, link: string | undefined, parent: string): void {
  if (link) unlinkSync(link);
  if (existsSync(tree)) git(["worktree", "remove", "--force", tree]);
  rmSync(parent, { recursive: true, force: true });
  git(["worktree", "prune"]);
  if (git(["worktree", "list", "--porcelain"]).stdout.split("\n").includes(`worktree ${tree}`)) {
    process.stderr.write(
      `--diff: the temporary worktree ${tree} could not be removed; run: git worktree remove --force ${tree} && git worktree prune\n`,
    );
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    process.stderr.write(`${(error as Error).stack ?? String(error)}\n`);
    process.exitCode = 1;
  },
);
