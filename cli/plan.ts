/**
 * `npm run plan -- --stack NAME [--json]` and `npm run plan -- --compare [--json]`: the sizing
 * engine without Pulumi, hardware or network. Exit status 1 when the named stack does not fit or
 * its configuration is invalid; --compare always exits 0 and marks refused stacks.
 */
import { parseArgs } from "node:util";
import { ConfigError } from "../planner/errors";
import { buildPlan, type Plan } from "../planner/plan";
import { planToJson, renderComparison, renderPlan } from "../planner/report";
import { listStacks, loadStackConfig } from "../planner/stack-file";

const USAGE = `usage: npm run plan -- --stack NAME [--json]
       npm run plan -- --compare [--json]
stacks: ${listStacks().join(", ")}`;

function main(argv: string[]): number {
  let options;
  try {
    options = parseArgs({ args: argv, options: { stack: { type: "string" }, compare: { type: "boolean" }, json: { type: "boolean" }, help: { type: "boolean", short: "h" } } }).values;
  } catch (error) {
    process.stderr.write(`${(error as Error).message}\n${USAGE}\n`);
    return 2;
  }
  if (options.help || (!options.stack && !options.compare)) {
    process.stdout.write(`${USAGE}\n`);
    return options.help ? 0 : 2;
  }
  if (options.compare) {
    const plans: Plan[] = [];
    const invalid: string[] = [];
    for (const stack of listStacks()) {
      try {
        plans.push(buildPlan(stack, loadStackConfig(stack)));
      } catch (error) {
        if (!(error instanceof ConfigError)) throw error;
        invalid.push(error.message);
      }
    }
    if (options.json) process.stdout.write(`${JSON.stringify(plans.map(planToJson), null, 2)}\n`);
    else process.stdout.write(`${renderComparison(plans)}\n`);
    for (const message of invalid) process.stderr.write(`${message}\n`);
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

process.exitCode = main(process.argv.slice(2));
