import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { ConfigError } from "../../planner/errors";
import { LLAMA_SERVER_FLAGS, parseFlags, renderArgv, splitCommandLine } from "../../planner/flags";
import { buildPlan } from "../../planner/plan";
import { loadStackConfig } from "../../planner/stack-file";

const help = readFileSync(join(__dirname, "..", "fixtures", "llama-server-help-v0.5.0.txt"), "utf8");

/** Flag names as --help prints them at the start of a line: "-t,    --threads N", "--repack, -nr, --no-repack". */
function helpFlagNames(): Set<string> {
  const names = new Set<string>();
  for (const line of help.split("\n")) {
    if (!line.startsWith("-") || line.startsWith("-----")) continue;
    const head = line.replace(/,\s+(?=-)/g, ", ").split(/\s{2,}/)[0]!;
    for (const part of head.split(", ")) names.add(part.split(" ")[0]!);
  }
  return names;
}

function problemsOf(argv: string[]): string[] {
  try {
    parseFlags(argv);
  } catch (error) {
    if (error instanceof ConfigError) return error.problems;
    throw error;
  }
  return [];
}

describe("the llama-server flag table", () => {
  it("lists exactly the flag names llama-server v0.5.0 --help lists, with their env names", () => {
    const fromHelp = helpFlagNames();
    const fromTable = new Set(LLAMA_SERVER_FLAGS.flatMap((flag) => flag.names));
    expect([...fromTable].filter((name) => !fromHelp.has(name))).toEqual([]);
    expect([...fromHelp].filter((name) => !fromTable.has(name))).toEqual([]);
    for (const flag of LLAMA_SERVER_FLAGS) if (flag.env) expect(help, flag.env).toContain(`(env: ${flag.env})`);
  });

  it("models every flag the issue names as changing memory or speed", () => {
    const sizing = new Map(
      LLAMA_SERVER_FLAGS.filter((flag) => flag.sizing).flatMap((flag) =>
        flag.names.map((name) => [name, flag.sizing] as const),
      ),
    );
    for (const name of [
      "-c",
      "-np",
      "-b",
      "-ub",
      "-t",
      "-tb",
      "-ngl",
      "-sm",
      "-ts",
      "-ot",
      "--cpu-moe",
      "--n-cpu-moe",
      "-ctk",
      "-ctv",
      "-fa",
      "--no-repack",
      "--load-mode",
      "--cache-ram",
      "--no-op-offload",
      "--numa",
      "--swa-full",
      "--ctx-checkpoints",
    ]) {
      expect(sizing.get(name), name).toBeTruthy();
    }
    expect(sizing.get("--jinja")).toBeUndefined();
  });
});

describe("parseFlags", () => {
  it("reads a user's command line into typed fields and names the flags it ignores for sizing", () => {
    const parsed = parseFlags(
      splitCommandLine(
        `-c 8192 -np 2 -ub 256 --no-repack -ot "blk\\.(1|2)\\.ffn_.*_exps=CUDA0,exps=CPU" --jinja --temp 0.6 -ngl all -ts 3/1 --load-mode=mmap --cache-ram -1 --no-op-offload -ctk q8_0 -fa off`,
      ),
    );
    expect(parsed.sizing).toEqual({
      ctxSize: 8192,
      parallel: 2,
      ubatch: 256,
      repack: false,
      overrideTensor: [
        { pattern: "blk\\.(1|2)\\.ffn_.*_exps", device: "CUDA0" },
        { pattern: "exps", device: "CPU" },
      ],
      gpuLayers: "all",
      tensorSplit: [3, 1],
      loadMode: "mmap",
      cacheRamMiB: -1,
      opOffload: false,
      cacheTypeK: "q8_0",
      flashAttn: "off",
    });
    expect(parsed.ignoredForSizing).toEqual(["--jinja", "--temp"]);
  });

  it("warns about known flags that change sizing but are not modelled, only when they do", () => {
    expect(parseFlags(["-nkvo", "--jinja", "-dev", "CUDA0"]).notModelled).toEqual(["-nkvo", "-dev"]);
    expect(parseFlags(["-kvo", "--jinja"]).notModelled).toEqual([]);
  });

  it("an unknown flag is an error naming it", () => {
    expect(problemsOf(["-c", "4096", "--turbo"])).toEqual([
      expect.stringMatching(/^--turbo: not a llama-server v0\.5\.0 flag/),
    ]);
  });

  it("a flag v0.5.0 removed is an error naming it and what replaced it", () => {
    expect(problemsOf(["--no-mmap"])).toEqual(["--no-mmap: removed in llama-server v0.5.0; allowed: --load-mode none"]);
    expect(problemsOf(["--mmap"])[0]).toContain("--load-mode mmap");
  });

  it.each([
    [["-ub", "0"], /^-ub: found "0"; allowed: an integer ≥ 1/],
    [["-c", "-5"], /^-c: found "-5"; allowed: an integer ≥ 0/],
    [["-np", "0"], /^-np: found "0"/],
    [["-ctk", "q3_k"], /^-ctk: found "q3_k"; allowed: one of f32, f16/],
    [["--load-mode", "fast"], /^--load-mode: found "fast"; allowed: one of auto, none, mmap/],
    [["-ngl", "many"], /^-ngl: found "many"; allowed: an integer ≥ 0, auto or all/],
    [["-ot", "exps=GPU0"], /^-ot: found "exps=GPU0"; allowed: PATTERN=BUFFER/],
    [["-ts", "1,,1"], /^-ts: found "1,,1"/],
    [["--numa"], /^--numa: found nothing \(missing value\)/],
    [["-ngl"], /^-ngl: found nothing \(missing value\); allowed: an integer ≥ 0, auto or all$/],
    [["--cpu-moe", "1"], /^"1": a value with no flag before it \(--cpu-moe is a switch and takes no value\)/],
  ])("%j is one clear problem naming the flag", (argv, message) => {
    const problems = problemsOf(argv);
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatch(message);
  });

  it("renders in --help order and parses back to the same set", () => {
    const argv = [
      "--threads",
      "8",
      "--no-repack",
      "--override-tensor",
      "a=CPU",
      "--override-tensor",
      "b=CUDA1",
      "--tensor-split",
      "1,2",
      "--swa-full",
      "--alias",
      "x",
    ];
    const parsed = parseFlags(argv);
    expect(renderArgv(parsed)).toEqual([
      "--threads",
      "8",
      "--swa-full",
      "--no-repack",
      "--override-tensor",
      "a=CPU",
      "--override-tensor",
      "b=CUDA1",
      "--tensor-split",
      "1,2",
      "--alias",
      "x",
    ]);
    expect(parseFlags(renderArgv(parsed))).toEqual(parsed);
  });

  it("the kit's own command lines parse without a problem into the placement the plan chose", () => {
    const plan = buildPlan("rtx3090x4", loadStackConfig("rtx3090x4"));
    const parsed = parseFlags(plan.llamaServerArgs);
    expect(parsed.sizing.overrideTensor?.map((rule) => `${rule.pattern}=${rule.device}`)).toEqual(
      plan.placement.overrideRules,
    );
    expect(parsed.sizing.tensorSplit).toEqual([24, 24, 24, 24]);
    expect(parsed.sizing.repack).toBe(false);
    expect(parsed.ignoredForSizing).toEqual(expect.arrayContaining(["--model", "--api-key-file", "--fit"]));
  });
});
