/**
 * Builds the pull-request comment body of the plan-diff workflow (.github/workflows/plan-diff.yml):
 *
 *   npx tsx tools/plan-diff-body.ts --base REF --out DIR [--head REF] [--pr N] [--run-url URL]
 *       [--plan-command PROGRAM]
 *
 * Picks the stacks the change touches — each stacks/Pulumi.<name>.yaml that differs between REF and
 * HEAD, or every stack (at either commit) when anything under catalog/, locks/ or planner/ differs —
 * runs `npm run -s plan -- --stack NAME --diff <base commit> --format markdown` for each (exit 0:
 * nothing material, 3: a material change, anything else: could not be diffed), and writes to DIR:
 *
 *   body.md      the comment: marker, summary table, each stack's diff (material ones open), cut to
 *                fit GitHub's comment limit
 *   full.md      the same, never cut
 *   summary.json base, head and each stack's outcome, for tools
 *   pr-number    the pull request number (with --pr), for the workflow_run job that posts the comment
 *
 * Exit status 0 when the body was written (a stack that cannot be diffed is shown in it, so the
 * comment still goes up), 1 when git cannot answer (e.g. an unknown ref), 2 on bad usage.
 * --plan-command runs PROGRAM instead of npm, with the same arguments after `--`.
 */
import { spawnSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { MARKER } from "./plan-diff-comment";

/** Paths whose change can move every stack's plan: the data and the code that plans. */
const GLOBAL_DIRS = ["catalog/", "locks/", "planner/"];
const STACK_FILE = /^stacks\/Pulumi\.(.+)\.yaml$/;
/** A name safe to pass on and to show in markdown; the kit's stacks all match. */
const STACK_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$/;
/** Below GitHub's 65,536-character limit, with room for the footer and the cut note. */
export const BODY_BUDGET = 60_000;

const USAGE = `usage: npx tsx tools/plan-diff-body.ts --base REF --out DIR [--head REF] [--pr N] [--run-url URL] [--plan-command PROGRAM]`;

export type StackStatus = "material" | "unchanged" | "failed" | "removed" | "skipped";

export interface StackDiff {
  stack: string;
  status: StackStatus;
  /** The planner's exit status (undefined when it was not run). */
  exit?: number | null;
  /** Its markdown (material / unchanged), or what went wrong (failed / skipped). */
  text: string;
}

export interface Selection {
  /** Why these stacks: shown in the comment. */
  reason: string;
  /** Stacks to diff (present at head). */
  present: string[];
  /** Stacks the change deletes. */
  removed: string[];
  /** Changed stack files whose name is not one the kit would pass on. */
  oddNames: string[];
}

export class GitError extends Error {}

function git(cwd: string, args: string[]): string {
  const result = spawnSync("git", args, { cwd, encoding: "utf8", maxBuffer: 64 * 1024 * 1024 });
  if (result.error) throw new GitError(`git ${args[0]}: ${result.error.message}`);
  if (result.status !== 0)
    throw new GitError(`git ${args.join(" ")}: ${result.stderr.trim().split("\n")[0] ?? `exit ${result.status}`}`);
  return result.stdout;
}

/** The full commit id of REF, or a GitError naming it. */
export function resolveCommit(cwd: string, ref: string): string {
  // `--end-of-options` keeps a ref that starts with "-" from being read as an option.
  try {
    return git(cwd, ["rev-parse", "--verify", "--quiet", "--end-of-options", `${ref}^{commit}`]).trim();
  } catch {
    throw new GitError(`unknown git ref '${ref}': not a commit in ${cwd}`);
  }
}

/** Files that differ between two commits (renames as delete + add, so both names count). */
export function changedFiles(cwd: string, base: string, head: string): string[] {
  return git(cwd, ["diff", "--name-only", "--no-renames", "-z", base, head]).split("\0").filter(Boolean);
}

/** Stack names whose file exists at COMMIT. */
export function stacksAt(cwd: string, commit: string): string[] {
  return git(cwd, ["ls-tree", "-z", "--name-only", commit, "stacks/"])
    .split("\0")
    .map((path) => STACK_FILE.exec(path)?.[1])
    .filter((name): name is string => name !== undefined)
    .sort();
}

/** Which stacks a change touches, from the changed paths and the stacks at each end. */
export function selectStacks(
  changed: readonly string[],
  atBase: readonly string[],
  atHead: readonly string[],
): Selection {
  const globalDirs = GLOBAL_DIRS.filter((dir) => changed.some((path) => path.startsWith(dir)));
  const named =
    globalDirs.length > 0
      ? [...new Set([...atBase, ...atHead])]
      : [
          ...new Set(
            changed.map((path) => STACK_FILE.exec(path)?.[1]).filter((name): name is string => name !== undefined),
          ),
        ];
  const ok = named.filter((name) => STACK_NAME.test(name)).sort();
  return {
    reason:
      globalDirs.length > 0
        ? `${globalDirs.join(", ")} changed: every stack is planned again`
        : ok.length > 0 || named.length > 0
          ? "stack files changed"
          : "no stack file changed",
    present: ok.filter((name) => atHead.includes(name)),
    removed: ok.filter((name) => !atHead.includes(name)),
    oddNames: named.filter((name) => !STACK_NAME.test(name)).sort(),
  };
}

export type PlanRunner = (stack: string, base: string) => { status: number | null; stdout: string; stderr: string };

/** Runs the planner's diff for one stack: npm (or PROGRAM) with `--stack NAME --diff BASE --format markdown`. */
export function planRunner(cwd: string, program?: string): PlanRunner {
  return (stack, base) => {
    const args = ["--stack", stack, "--diff", base, "--format", "markdown"];
    const [command, argv] = program ? [program, args] : ["npm", ["run", "-s", "plan", "--", ...args]];
    const result = spawnSync(command, argv, {
      cwd,
      encoding: "utf8",
      maxBuffer: 64 * 1024 * 1024,
      timeout: 15 * 60_000,
    });
    if (result.error)
      return { status: null, stdout: result.stdout ?? "", stderr: `${result.error.message}\n${result.stderr ?? ""}` };
    return { status: result.status, stdout: result.stdout, stderr: result.stderr };
  };
}

/** Each selected stack's outcome, in the order: material, failed, unchanged, removed, skipped. */
export function diffStacks(selection: Selection, base: string, run: PlanRunner): StackDiff[] {
  const results: StackDiff[] = selection.present.map((stack) => {
    const { status, stdout, stderr } = run(stack, base);
    if (status === 3) return { stack, status: "material", exit: status, text: stdout };
    if (status === 0) return { stack, status: "unchanged", exit: status, text: stdout };
    return { stack, status: "failed", exit: status, text: tail(stderr.trim() || stdout.trim() || "(no output)") };
  });
  results.push(...selection.removed.map((stack): StackDiff => ({ stack, status: "removed", text: "" })));
  results.push(
    ...selection.oddNames.map((stack): StackDiff => ({
      stack,
      status: "skipped",
      text: "the file name is not a stack name the kit accepts (letters, digits, _ . -)",
    })),
  );
  const order: StackStatus[] = ["material", "failed", "unchanged", "removed", "skipped"];
  return results.sort((a, b) => order.indexOf(a.status) - order.indexOf(b.status) || a.stack.localeCompare(b.stack));
}

/** The last lines of a failure's output, each cut: enough to see why, never a whole log. */
function tail(text: string): string {
  return text
    .split("\n")
    .slice(-20)
    .map((line) => (line.length > 300 ? `${line.slice(0, 300)}…` : line))
    .join("\n");
}

/** A fenced block that nothing inside can close: the fence is longer than any backtick run in the text. */
function fenced(text: string): string {
  const longest = Math.max(0, ...[...text.matchAll(/`+/g)].map((match) => match[0].length));
  const fence = "`".repeat(Math.max(3, longest + 1));
  return `${fence}text\n${text}\n${fence}`;
}

/** A stack name as shown: names from a pull request are untrusted, so anything odd becomes "?". */
function shown(stack: string): string {
  return `\`${stack.replace(/[^A-Za-z0-9_.-]/g, "?").slice(0, 100)}\``;
}

/** The same inside <summary>, where GitHub does not render markdown: HTML instead of backticks. */
function shownHtml(stack: string): string {
  return `<code>${stack.replace(/[^A-Za-z0-9_.-]/g, "?").slice(0, 100)}</code>`;
}

const LABEL: Record<StackStatus, string> = {
  material: "**material change**",
  unchanged: "no material change",
  failed: "**could not be diffed**",
  removed: "removed by this pull request",
  skipped: "skipped",
};

function section(result: StackDiff): string | undefined {
  const exit = result.exit === undefined ? "" : ` (exit ${result.exit ?? "killed"})`;
  switch (result.status) {
    case "material":
      return `<details open><summary>${shownHtml(result.stack)}: material change</summary>\n\n${result.text.trim()}\n\n</details>`;
    case "unchanged":
      return `<details><summary>${shownHtml(result.stack)}: no material change</summary>\n\n${result.text.trim()}\n\n</details>`;
    case "failed":
      return `<details open><summary>${shownHtml(result.stack)}: could not be diffed${exit}</summary>\n\n${fenced(result.text)}\n\n</details>`;
    default:
      return undefined;
  }
}

export interface BodyInput {
  base: string;
  head: string;
  reason: string;
  results: readonly StackDiff[];
  runUrl?: string;
}

/**
 * The comment: marker, heading, one table row per stack, then the sections. `budget` cuts it: a
 * section that would not fit is replaced by a line saying where the full text is.
 */
export function composeBody(input: BodyInput, budget = Number.POSITIVE_INFINITY): string {
  const rows = input.results.map(
    (result) =>
      `| ${shown(result.stack)} | ${LABEL[result.status]}${result.status === "failed" ? ` (exit ${result.exit ?? "killed"})` : ""}${result.status === "skipped" ? `: ${result.text}` : ""} |`,
  );
  const material = input.results.filter((result) => result.status === "material").length;
  const failed = input.results.filter((result) => result.status === "failed").length;
  const verdict =
    input.results.length === 0
      ? "No stack to diff."
      : `${material} of ${input.results.length} stack(s) with a material change${failed ? `, ${failed} could not be diffed` : ""}.`;
  const head = [
    MARKER,
    `## Plan diff against \`${input.base.slice(0, 12)}\``,
    "",
    `${verdict} Why these stacks: ${input.reason}.`,
    ...(rows.length ? ["", "| stack | result |", "|---|---|", ...rows] : []),
  ].join("\n");
  const footer = `\n\n<sub>kimi-kit plan diff · base ${input.base.slice(0, 12)} · head ${input.head.slice(0, 12)}${input.runUrl ? ` · [workflow run](${input.runUrl})` : ""}</sub>\n`;
  const where = input.runUrl
    ? `the \`plan-diff\` artifact of the [workflow run](${input.runUrl})`
    : "the `plan-diff` artifact (full.md)";
  let body = head;
  for (const result of input.results) {
    const text = section(result);
    if (text === undefined) continue;
    const omitted = `\n\n${shown(result.stack)}: ${LABEL[result.status]} — left out to fit GitHub's comment limit; see ${where}.`;
    body += body.length + 2 + text.length + footer.length <= budget ? `\n\n${text}` : omitted;
  }
  return body + footer;
}

export interface Built {
  body: string;
  full: string;
  summary: {
    base: string;
    head: string;
    reason: string;
    stacks: { stack: string; status: StackStatus; exit?: number | null }[];
  };
}

/** Everything the workflow needs, for the change from BASE to HEAD in the repository at cwd. */
export function buildPlanDiff(cwd: string, baseRef: string, headRef: string, run: PlanRunner, runUrl?: string): Built {
  const base = resolveCommit(cwd, baseRef);
  const head = resolveCommit(cwd, headRef);
  const selection = selectStacks(changedFiles(cwd, base, head), stacksAt(cwd, base), stacksAt(cwd, head));
  const results = diffStacks(selection, base, run);
  const input = { base, head, reason: selection.reason, results, runUrl };
  return {
    body: composeBody(input, BODY_BUDGET),
    full: composeBody(input),
    summary: {
      base,
      head,
      reason: selection.reason,
      stacks: results.map(({ stack, status, exit }) => ({ stack, status, exit })),
    },
  };
}

export function main(argv: string[], cwd = process.cwd()): number {
  let values;
  try {
    values = parseArgs({
      args: argv,
      options: {
        base: { type: "string" },
        head: { type: "string" },
        out: { type: "string" },
        pr: { type: "string" },
        "run-url": { type: "string" },
        "plan-command": { type: "string" },
      },
    }).values;
  } catch (error) {
    process.stderr.write(`${(error as Error).message}\n${USAGE}\n`);
    return 2;
  }
  if (!values.base || !values.out) {
    process.stderr.write(
      `${!values.base ? "--base: wants the git ref to diff against" : "--out: wants the folder to write the body into"}\n${USAGE}\n`,
    );
    return 2;
  }
  if (values.pr !== undefined && !/^[1-9][0-9]{0,9}$/.test(values.pr)) {
    process.stderr.write(`--pr: wants a pull request number (digits only), got '${values.pr.slice(0, 40)}'\n`);
    return 2;
  }
  try {
    const built = buildPlanDiff(
      cwd,
      values.base,
      values.head ?? "HEAD",
      planRunner(cwd, values["plan-command"]),
      values["run-url"],
    );
    mkdirSync(values.out, { recursive: true });
    writeFileSync(join(values.out, "body.md"), built.body);
    writeFileSync(join(values.out, "full.md"), built.full);
    writeFileSync(join(values.out, "summary.json"), `${JSON.stringify(built.summary, null, 2)}\n`);
    if (values.pr !== undefined) writeFileSync(join(values.out, "pr-number"), `${values.pr}\n`);
    const counts = built.summary.stacks.map((stack) => `${stack.stack}: ${stack.status}`).join(", ") || "no stack";
    process.stdout.write(`wrote ${join(values.out, "body.md")} (${built.body.length} characters; ${counts})\n`);
    return 0;
  } catch (error) {
    process.stderr.write(`plan-diff-body: ${(error as Error).message}\n`);
    return 1;
  }
}

if (require.main === module) process.exit(main(process.argv.slice(2)));
