/**
 * `npm run bench:plan` — how long planning takes: every stack in stacks/, in process, after one
 * warm-up pass (catalog parsed once). Prints a markdown table.
 */
import { performance } from "node:perf_hooks";
import { buildPlan } from "../planner/plan";
import { listStacks, loadStackConfig } from "../planner/stack-file";
import { loadCatalog } from "../planner/catalog";

const repetitions = 20;
const coldStart = performance.now();
loadCatalog();
const catalogMs = performance.now() - coldStart;
const rows: string[] = [];
let totalMedian = 0;
for (const stack of listStacks()) {
  const config = loadStackConfig(stack);
  buildPlan(stack, config);
  const times: number[] = [];
  for (let i = 0; i < repetitions; i++) {
    const start = performance.now();
    buildPlan(stack, config);
    times.push(performance.now() - start);
  }
  times.sort((a, b) => a - b);
  const median = times[Math.floor(times.length / 2)]!;
  totalMedian += median;
  rows.push(`| ${stack} | ${median.toFixed(2)} | ${times[0]!.toFixed(2)} | ${times.at(-1)!.toFixed(2)} |`);
}
console.log(`catalog load and validation (once per process): ${catalogMs.toFixed(1)} ms\n`);
console.log("| stack | median ms | min ms | max ms |\n|---|---:|---:|---:|");
console.log(rows.join("\n"));
console.log(`| all stacks | ${totalMedian.toFixed(2)} | | |`);
console.log(`\n${repetitions} runs per stack, Node ${process.version}`);
