import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import type { RecommendationJson } from "../../planner/recommend";
import type { PlanJson } from "../../planner/report";

const root = join(__dirname, "..", "..");
// Written stacks go to a directory of the test's own (KIMI_KIT_STACKS_DIR), never into stacks/.
const stacksDir = mkdtempSync(join(tmpdir(), "cli-recommend-"));
afterAll(() => rmSync(stacksDir, { recursive: true, force: true }));
const plan = (...args: string[]) =>
  spawnSync(join(root, "node_modules", ".bin", "tsx"), [join(root, "cli", "plan.ts"), ...args], {
    cwd: root,
    encoding: "utf8",
    env: { ...process.env, KIMI_KIT_STACKS_DIR: stacksDir },
  });
const K26 = ["--model", "unsloth/Kimi-K2.6-GGUF"];

describe("npm run plan -- --recommend", () => {
  it("prints the cheapest that fit and meet --min-decode, with decode and its band, cost, $/1M output, break-even, near misses and what was not priced", () => {
    const run = plan("--recommend", ...K26, "--tier", "any", "--min-decode", "5");
    expect(run.status).toBe(0);
    expect(run.stderr).toBe("");
    expect(run.stdout).toMatch(
      /^Recommend: Kimi K2\.6 any tier \(UD-Q2_K_XL, UD-Q4_K_XL, UD-Q8_K_XL, BF16\), 32768 tokens × 1 slot\(s\), kind any, --min-decode 5\n/,
    );
    expect(run.stdout).toMatch(/Searched \d+ hosts × 4 tier\(s\) = \d+ candidates in \d+\.\d s/);
    expect(run.stdout).toMatch(
      /\n1\. \$\d[\d,]*\.\d\d\/month — bare metal: .* — UD-Q2_K_XL, hybrid\n {3}decode \d+\.\d tok\/s \(band \d+\.\d–\d+\.\d\) at depth 4096; prefill /,
    );
    expect(run.stdout).toMatch(/per 1M output tokens\n {3}break-even vs API: /);
    expect(run.stdout).toContain("Near misses (cheapest first, and why each was not picked):");
    expect(run.stdout).toMatch(
      /EPYC 9124, 12 × 32 GiB RDIMM — UD-Q2_K_XL: decode \d\.\d tok\/s is below --min-decode 5/,
    );
    expect(run.stdout).toContain("  - platform epyc-9374f: no sourced price for the EPYC 9374F");
    expect(run.stdout.match(/^\d\. /gm)).toHaveLength(5);
  });

  it("--json: the request, the assumptions, the search, recommendations cheapest first, near misses, skipped, no problem", () => {
    const run = plan("--recommend", ...K26, "--tier", "UD-Q2_K_XL", "--min-decode", "5", "--top", "3", "--json");
    expect(run.status).toBe(0);
    const json = JSON.parse(run.stdout) as RecommendationJson;
    expect(Object.keys(json)).toEqual([
      "request",
      "model",
      "assumptions",
      "search",
      "recommendations",
      "nearMisses",
      "skipped",
      "problem",
    ]);
    expect(json.request).toMatchObject({
      model: "unsloth/Kimi-K2.6-GGUF",
      tier: "UD-Q2_K_XL",
      minDecode: 5,
      contextLength: 32768,
      slots: 1,
      kind: "any",
      usdPerKwh: 0.15,
      top: 3,
    });
    expect(json.assumptions).toMatchObject({
      amortizationMonths: 36,
      api: { usdPerMillionInput: 0.95, usdPerMillionOutput: 4 },
      decodeDepthTokens: 4096,
    });
    expect(json.problem).toBeNull();
    expect(json.recommendations).toHaveLength(3);
    const monthly = json.recommendations.map((entry) => entry.monthlyUsd);
    expect(monthly).toEqual([...monthly].sort((a, b) => a - b));
    for (const entry of json.recommendations) {
      expect(entry.status).toBe("recommended");
      expect(entry.fits).toBe(true);
      expect(entry.decodeTokensPerSecond).toBeGreaterThanOrEqual(5);
      expect(entry.decodeBand!.low).toBeLessThan(entry.decodeTokensPerSecond);
      expect(entry.decodeBand!.high).toBeGreaterThan(entry.decodeTokensPerSecond);
      expect(entry.usdPerMillionOutputTokens).toBeGreaterThan(0);
      expect(entry.costLines.reduce((sum, line) => sum + line.monthlyUsd, 0)).toBeCloseTo(entry.monthlyUsd, 6);
      expect(entry.hardware!.priceUsd).toBeCloseTo(
        entry.hardware!.parts.reduce((sum, part) => sum + part.count * part.usdEach, 0),
        6,
      );
    }
    expect(json.nearMisses.every((entry) => entry.why !== undefined && entry.status !== "recommended")).toBe(true);
    expect(json.search.planned).toBeGreaterThan(0);
  });

  it("--write-stack writes the cheapest pick, which `plan --stack` plans to the same verdict, decode and monthly cost", () => {
    const wrote = plan(
      "--recommend",
      ...K26,
      "--tier",
      "any",
      "--min-decode",
      "5",
      "--json",
      "--write-stack",
      "picked",
    );
    expect(wrote.status).toBe(0);
    expect(wrote.stderr).toContain(`wrote ${join(stacksDir, "Pulumi.picked.yaml")}`);
    const pick = (JSON.parse(wrote.stdout) as RecommendationJson).recommendations[0]!;
    const text = readFileSync(join(stacksDir, "Pulumi.picked.yaml"), "utf8");
    // Comments say where the values came from.
    expect(text).toMatch(
      /^# Written by npm run plan -- --recommend --model unsloth\/Kimi-K2\.6-GGUF --tier any --min-decode 5 --write-stack picked\n/,
    );
    expect(text).toContain("# catalog/prices.yaml: AMD EPYC 9124");
    expect(text).toContain("# Nameplate: 200 W AMD EPYC 9124");
    const replanned = plan("--stack", "picked", "--json");
    expect(replanned.status).toBe(0);
    const json = JSON.parse(replanned.stdout) as PlanJson;
    expect(json.fits).toBe(true);
    expect(json.model.tier).toBe(pick.tier);
    expect(json.mode).toBe(pick.mode);
    expect(json.projection.decodeTokensPerSecond).toBe(pick.decodeTokensPerSecond);
    expect(json.cost!.monthlyUsd).toBe(pick.monthlyUsd);
  });

  it("--write-stack refuses a stack that exists unless --force, and a bad name, before searching", () => {
    writeFileSync(join(stacksDir, "Pulumi.taken.yaml"), "config: {}\n");
    const refused = plan("--recommend", ...K26, "--write-stack", "taken");
    expect(refused.status).toBe(2);
    expect(refused.stderr).toBe(
      `--write-stack: ${join(stacksDir, "Pulumi.taken.yaml")} exists; allowed: a new stack name, or --force to overwrite it\n`,
    );
    expect(readFileSync(join(stacksDir, "Pulumi.taken.yaml"), "utf8")).toBe("config: {}\n");
    const forced = plan("--recommend", ...K26, "--tier", "UD-Q2_K_XL", "--write-stack", "taken", "--force");
    expect(forced.status).toBe(0);
    expect(readFileSync(join(stacksDir, "Pulumi.taken.yaml"), "utf8")).toContain("kimi-kit:host:");
    for (const name of ["../escape", ".hidden", "a/b", "-x"]) {
      const bad = plan("--recommend", ...K26, `--write-stack=${name}`);
      expect(bad.status).toBe(2);
      expect(bad.stderr).toBe(
        `--write-stack: found ${JSON.stringify(name)}; allowed: a stack name of letters, digits, _ . - (starting with a letter or digit, at most 100 characters)\n`,
      );
    }
    expect(existsSync(join(stacksDir, "..", "Pulumi.escape.yaml"))).toBe(false);
  });

  it("bad input is one line on stderr, with exit 2; an empty result is one line naming the constraint, with exit 1", () => {
    const lines: [string[], number, string | RegExp][] = [
      [["--recommend"], 2, /^--model: found nothing; allowed: a catalog model repo \(unsloth\/Kimi-K2\.6-GGUF, /],
      [["--recommend", "--model", "acme/Nope"], 2, /^--model: found "acme\/Nope"; allowed: a catalog model repo/],
      [
        ["--recommend", ...K26, "--tier", "Q9"],
        2,
        `--tier: found "Q9"; allowed: any, UD-Q2_K_XL, UD-Q4_K_XL, UD-Q8_K_XL, BF16 (Kimi K2.6)`,
      ],
      [
        ["--recommend", ...K26, "--min-decode", "fast"],
        2,
        `--min-decode: found "fast"; allowed: a positive number of tokens per second, like 5 or 7.5`,
      ],
      [
        ["--recommend", ...K26, "--max-monthly-usd=-5"],
        2,
        /^--max-monthly-usd: found "-5"; allowed: a positive number of US dollars per month/,
      ],
      [
        ["--recommend", ...K26, "--context", "1e5"],
        2,
        /^--context: found "1e5"; allowed: a whole number of tokens per slot from 256 to 262144/,
      ],
      [
        ["--recommend", ...K26, "--slots", "0"],
        2,
        /^--slots: found "0"; allowed: a whole number of parallel slots from 1 to 64/,
      ],
      [["--recommend", ...K26, "--kind", "gpu"], 2, `--kind: found "gpu"; allowed: bare-metal, cloud or any`],
      [
        ["--recommend", ...K26, "--force"],
        2,
        "--force: only with --write-stack NAME (it allows overwriting that stack)",
      ],
      [
        ["--recommend", ...K26, "--tier", "UD-Q4_K_XL", "--min-decode", "500"],
        1,
        /^no catalog host meets --min-decode 500 for Kimi K2\.6 UD-Q4_K_XL at 32768 tokens × 1 slot\(s\); the fastest is .* at \d+\.\d tok\/s/,
      ],
      [
        ["--recommend", ...K26, "--tier", "UD-Q2_K_XL", "--max-monthly-usd", "100"],
        1,
        "--max-monthly-usd 100 is below the cheapest host that holds Kimi K2.6 UD-Q2_K_XL: EPYC 9124, 12 × 32 GiB RDIMM at $177.21/month",
      ],
      [
        ["--recommend", ...K26, "--tier", "BF16", "--kind", "bare-metal"],
        1,
        /^--kind bare-metal: no catalog bare-metal build holds Kimi K2\.6 BF16 .*; --kind cloud does: the cheapest is AWS p5\.48xlarge/,
      ],
    ];
    for (const [args, status, line] of lines) {
      const run = plan(...args);
      expect(run.status, args.join(" ")).toBe(status);
      const stderr = run.stderr.trimEnd().split("\n");
      expect(stderr, args.join(" ")).toHaveLength(1);
      if (typeof line === "string") expect(stderr[0]).toBe(line);
      else expect(stderr[0]).toMatch(line);
      expect(run.stdout).toBe("");
    }
  }, 120_000);

  it("--recommend is refused beside a stack or a command line, and its options are refused without it", () => {
    const both = plan("--recommend", ...K26, "--stack", "cpu-ddr5");
    expect(both.status).toBe(2);
    expect(both.stderr.split("\n")[0]).toBe(
      "--recommend: not with --stack (it plans catalog hosts, not a stack or a command line)",
    );
    const stray = plan("--stack", "cpu-ddr5", "--min-decode", "5");
    expect(stray.status).toBe(2);
    expect(stray.stderr.split("\n")[0]).toBe("--min-decode: only with --recommend");
    const help = plan("--help");
    expect(help.stdout).toContain("npm run plan -- --recommend --model REPO [--tier TIER|any] [--min-decode N]");
  });
});
