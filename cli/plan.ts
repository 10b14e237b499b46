/**
 * `npm run plan -- --stack NAME [--json]` and `npm run plan -- --compare [--json]`: the sizing
 * engine without Pulumi, hardware or network. Exit status 1 when the named stack does not fit or
 * its configuration is invalid; --compare always exits 0 and marks refused stacks.
 * `--args "<llama-server flags>"` (with --stack, or with --gguf PATH for a local model on the
 * stack's host or this machine) estimates that command line instead of planning the kit's own.
 */
import { parseArgs } from "node:util";
import { ConfigError } from "../planner/errors";
import { buildPlan, type Plan } from "../planner/plan";
import { planToJson, renderComparison, renderPlan, type InvalidStack } from "../planner/report";
import { listStacks, loadStackConfig } from "../planner/stack-file";
import { loadCatalog } from "../planner/catalog";
import { commandLineToJson, estimateCommandLine, renderCommandLineEstimate, type CommandLineEstimate } from "../planner/command-line";
import { measureReadBandwidthGBps } from "../tools/bandwidth";
import { readLocalModel, thisMachineHost } from "./local-model";

const USAGE = `usage: npm run plan -- --stack NAME [--json]
       npm run plan -- --stack NAME --args "<llama-server flags>" [--json]
       npm run plan -- --gguf PATH [--args "<llama-server flags>"] [--stack NAME] [--bandwidth-gbps N] [--json]
       npm run plan -- --compare [--json]
stacks: ${listStacks().join(", ")}`;

/** What each option that takes a value accepts, for the one line a missing value prints. */
const VALUE_OF: Record<string, string> = {
  "--stack": `a stack name (${listStacks().join(", ")})`,
  "--gguf": "a local .gguf file (the first shard of a split model)",
  "--bandwidth-gbps": "a positive number of GB/s",
};

async function main(argv: string[]): Promise<number> {
  let options;
  // --args takes the next word verbatim: llama-server flags start with "-", which parseArgs refuses as a value.
  const at = argv.indexOf("--args");
  const argsText = at >= 0 ? argv[at + 1] : argv.find((arg) => arg.startsWith("--args="))?.slice("--args=".length);
  if (at >= 0 && argsText === undefined) {
    process.stderr.write(`--args: found nothing; allowed: llama-server flags in one quoted word, e.g. --args "-c 8192 -np 2"\n${USAGE}\n`);
    return 2;
  }
  const rest = at >= 0 ? [...argv.slice(0, at), ...argv.slice(at + 2)] : argv.filter((arg) => !arg.startsWith("--args="));
  try {
    options = parseArgs({
      args: rest,
      options: { stack: { type: "string" }, gguf: { type: "string" }, "bandwidth-gbps": { type: "string" }, compare: { type: "boolean" }, json: { type: "boolean" }, help: { type: "boolean", short: "h" } },
    }).values;
  } catch (error) {
    // parseArgs says "Option '--gguf <value>' argument missing": name the option and what it takes instead.
    const missing = /^Option '(--[\w-]+) <value>' argument missing/.exec((error as Error).message)?.[1];
    const allowed = missing ? VALUE_OF[missing] : undefined;
    process.stderr.write(`${allowed ? `${missing}: found nothing; allowed: ${allowed}` : (error as Error).message}\n${USAGE}\n`);
    return 2;
  }
  if (!options.help && (argsText !== undefined || options.gguf !== undefined)) {
    if (options.gguf === undefined && !options.stack) {
      process.stderr.write(`--args needs --stack NAME or --gguf PATH\n${USAGE}\n`);
      return 2;
    }
    try {
      const result = await estimateUserCommandLine({ stack: options.stack, gguf: options.gguf, argsText: argsText ?? "", bandwidthGBps: options["bandwidth-gbps"] });
      process.stdout.write(options.json ? `${JSON.stringify(commandLineToJson(result), null, 2)}\n` : `${renderCommandLineEstimate(result)}\n`);
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
  if (options.help || (!options.stack && !options.compare)) {
    process.stdout.write(`${USAGE}\n`);
    return options.help ? 0 : 2;
  }
  if (options.compare) {
    const plans: Plan[] = [];
    const invalid: (InvalidStack & { message: string })[] = [];
    for (const stack of listStacks()) {
      try {
        plans.push(buildPlan(stack, loadStackConfig(stack)));
      } catch (error) {
        // One broken stack must not hide the others (nor crash --compare): it gets its own row.
        const problems = error instanceof ConfigError ? error.problems : [String((error as Error).message).split("\n")[0]!];
        invalid.push({ stack, problems, message: error instanceof ConfigError ? error.message : `stack ${stack}: ${problems[0]}` });
      }
    }
    const invalidJson = invalid.map(({ stack, problems }) => ({ stack, invalid: true, problems }));
    if (options.json) process.stdout.write(`${JSON.stringify([...plans.map(planToJson), ...invalidJson], null, 2)}\n`);
    else process.stdout.write(`${renderComparison(plans, invalid)}\n`);
    for (const { message } of invalid) process.stderr.write(`${message}\n`);
    return 0;
  }
  const stack = options.stack!;
  try {
    const plan = buildPlan(stack, loadStackConfig(stack));
    process.stdout.write(options.json ? `${JSON.stringify(planToJson(plan), null, 2)}\n` : `${renderPlan(plan)}\n`);
    return plan.fits ? 0 : 1;
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`${error.message}\n`);
      return 1;
    }
    throw error;
  }
}

/** The model and host for --args/--gguf: a stack's (its model, tier and host) or a local file's on this machine. */
async function estimateUserCommandLine(request: { stack: string | undefined; gguf: string | undefined; argsText: string; bandwidthGBps: string | undefined }): Promise<CommandLineEstimate> {
  if (request.stack && request.bandwidthGBps !== undefined) {
    throw new ConfigError("--bandwidth-gbps", [`--bandwidth-gbps: not used with --stack ${request.stack}, whose host states its own bandwidth; allowed: --bandwidth-gbps only with --gguf and no --stack (this machine)`]);
  }
  const catalog = loadCatalog();
  const plan = request.stack ? buildPlan(request.stack, loadStackConfig(request.stack), { catalog }) : undefined;
  let host = plan?.host;
  let hostSource = `stack ${request.stack}`;
  if (!host) {
    // No stack: this machine, at the read bandwidth given or measured now (membw, as the bench does).
    const gbps = request.bandwidthGBps === undefined ? measureReadBandwidthGBps(thisMachineHost(1).cpu.cores) : Number(request.bandwidthGBps);
    if (!(gbps > 0)) throw new ConfigError("--bandwidth-gbps", [`--bandwidth-gbps: found ${JSON.stringify(request.bandwidthGBps)}; allowed: a positive number of GB/s`]);
    host = thisMachineHost(gbps);
    hostSource = request.bandwidthGBps === undefined ? "this machine, bandwidth measured now" : "this machine, --bandwidth-gbps";
  }
  if (request.gguf !== undefined) {
    const model = await readLocalModel(request.gguf);
    return estimateCommandLine({ modelLabel: request.gguf, hostSource, tensors: model.tensors, arch: model.arch, host, argsText: request.argsText, catalog });
  }
  return estimateCommandLine({ modelLabel: `${plan!.model.name} ${plan!.tier.name} (stack ${request.stack})`, hostSource, tensors: plan!.tensors, arch: plan!.model.architecture, host, argsText: request.argsText, catalog });
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
