/**
 * The kit's own llama-server flags for a local model on this machine, as a stack of this machine
 * would get them from the planner, minus what the benches' runner sets itself (model path, address,
 * key file). bench/accuracy.ts and bench/concurrency.ts time exactly these.
 */
import { parseStackConfig } from "../../planner/config";
import type { ManifestLock } from "../../planner/lock";
import { buildPlan } from "../../planner/plan";
import { thisMachine } from "../../lab/this-machine";

const RUNNER_SETS = new Set(["--model", "--host", "--port", "--api-key-file"]);

export function kitArgsOnThisMachine(
  lock: ManifestLock,
  serving: { contextLength: number; parallelSlots: number },
): string[] {
  const machine = thisMachine();
  const config = parseStackConfig("bench", {
    host: {
      kind: "bare-metal",
      cpu: { cores: machine.cores, allCoreGHz: machine.ghz, avx512: machine.avx512 },
      memory: { total: `${machine.ramBytes}B`, measuredBandwidthGBps: 30 },
    },
    model: { repo: lock.repo, tier: lock.tier },
    serving,
  });
  const args = buildPlan("bench", config, { lock }).llamaServerArgs;
  return args.filter((arg, index) => !RUNNER_SETS.has(arg) && !RUNNER_SETS.has(args[index - 1] ?? ""));
}
