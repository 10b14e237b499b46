/**
 * `npm run new-stack` (cli/new-stack.ts): each answer's check and its one-line refusal, the stack file
 * it renders (parsed by the stack schema and planned unchanged, with its comments), and the command
 * without a terminal: flags only, a name that exists, a bad name, a refused flag.
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse as parseYaml } from "yaml";
import {
  answer,
  canonicalSize,
  fieldLine,
  missingAnswers,
  parseCount,
  prepareStack,
  QUESTIONS,
  recommendHardware,
  renderStackFile,
  scalar,
  wrapComment,
  writeStackFile,
  type AnswerKey,
  type Answers,
  type Context,
  type Session,
} from "../../cli/new-stack";
import { loadCatalog } from "../../planner/catalog";
import { parseStackConfig } from "../../planner/config";
import { buildPlan } from "../../planner/plan";
import { loadStackConfig } from "../../planner/stack-file";

const root = join(__dirname, "..", "..");
let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "kimi-kit-new-stack-"));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const context = (force = false): Context => ({ catalog: loadCatalog(), stacksDir: dir, force });

/** The answers a script would give: these texts, every other applicable answer its default (as --yes). */
function answersFrom(texts: Partial<Record<AnswerKey, string>>): Session {
  const session: Session = { answers: {}, origins: {} };
  for (const entry of QUESTIONS) {
    if (!entry.applies(session.answers)) continue;
    const text = texts[entry.key] ?? entry.defaultText(session.answers, context());
    if (text === undefined) throw new Error(`no answer for ${entry.key}`);
    const problem = answer(session, entry.key, text, texts[entry.key] === undefined ? "default" : "asked", context());
    if (problem !== undefined) throw new Error(fieldLine(entry.key, problem));
  }
  expect(missingAnswers(session.answers)).toEqual([]);
  return session;
}

/** The refusal of one answer given after `before`, as a terminal shows it (undefined when accepted). */
function refusal(
  key: AnswerKey,
  text: string,
  before: Partial<Record<AnswerKey, string>> = {},
  force = false,
): string | undefined {
  const session: Session = { answers: {}, origins: {} };
  for (const entry of QUESTIONS) {
    if (entry.key === key) break;
    if (!entry.applies(session.answers)) continue;
    const given =
      before[entry.key] ??
      entry.defaultText(session.answers, context()) ??
      (entry.key === "name" ? "refusal-test" : "203.0.113.0/24");
    expect(answer(session, entry.key, given, "asked", context())).toBeUndefined();
  }
  const problem = answer(session, key, text, "asked", context(force));
  return problem === undefined ? undefined : fieldLine(key, problem);
}

describe("each answer is checked as it is given, refused in the schema's one-line form", () => {
  it("a stack name: lower-case letters, digits and -; one that exists only with --force", () => {
    for (const bad of ["My Box", "Team_A", "-lead", "a/b", "x".repeat(64), ""]) {
      expect(refusal("name", bad)).toMatch(/^name: found ".*"; allowed: 1 to 63 lower-case letters, digits and -/);
    }
    expect(refusal("name", "team-a-2")).toBeUndefined();
    writeFileSync(join(dir, "Pulumi.taken.yaml"), "config: {}\n");
    expect(refusal("name", "taken")).toBe(
      'name: found "taken", which exists (Pulumi.taken.yaml); allowed: a name no stack has, or --force to replace that stack',
    );
    expect(refusal("name", "taken", {}, true)).toBeUndefined();
    rmSync(join(dir, "Pulumi.taken.yaml"));
  });

  it("a model and a tier from the catalog, by number, id or repo; the tiers are the chosen model's", () => {
    expect(refusal("model", "kimi")).toBe(
      'model.repo: found "kimi"; allowed: kimi-k2.6, kimi-k3, deepseek-v3, glm-5 (a number from the list, an id or a repo)',
    );
    expect(refusal("model", "9")).toMatch(/^model\.repo: found "9"; allowed: kimi-k2\.6/);
    for (const good of ["2", "kimi-k3", "unsloth/Kimi-K3-GGUF", "KIMI-K3"])
      expect(refusal("model", good)).toBeUndefined();
    expect(refusal("tier", "UD-Q1_0")).toBe(
      `model.tier: found "UD-Q1_0"; allowed: UD-Q2_K_XL, UD-Q4_K_XL, UD-Q8_K_XL, BF16 (Kimi K2.6's tiers)`,
    );
    expect(refusal("tier", "UD-Q1_0", { model: "kimi-k3" })).toBeUndefined();
    expect(refusal("tier", "ud-q4_k_xl")).toBeUndefined();
  });

  it("host kind, context and slots: the schema's ranges and the model's trained context", () => {
    expect(refusal("kind", "vm")).toBe('host.kind: found "vm"; allowed: bare-metal or cloud');
    expect(refusal("contextLength", "lots")).toMatch(
      /^serving\.contextLength: found "lots"; allowed: a whole number of tokens from 256 to 262144 \(Kimi K2\.6's trained context\)/,
    );
    expect(refusal("contextLength", "300000")).toMatch(/^serving\.contextLength: found 300000; allowed: .* to 262144/);
    expect(refusal("contextLength", "300000", { model: "kimi-k3" })).toBeUndefined();
    // The schema's own line for what it refuses itself.
    expect(refusal("contextLength", "100")).toBe("serving.contextLength: found 100; allowed: at least 256");
    expect(refusal("contextLength", "64k")).toBeUndefined();
    expect(refusal("slots", "0")).toBe("serving.parallelSlots: found 0; allowed: at least 1");
    expect(refusal("slots", "two")).toBe('serving.parallelSlots: found "two"; allowed: a whole number from 1 to 64');
  });

  it("bare-metal hardware: a catalog platform, RAM with its unit, catalog GPUs, an SSH address", () => {
    const metal = { kind: "bare-metal" };
    expect(refusal("platform", "epyc-9999", metal)).toMatch(
      /^host\.cpu\.platform: found "epyc-9999"; allowed: epyc-9124, epyc-9374f, ryzen-9-9950x, xeon-platinum-8488c/,
    );
    expect(refusal("memory", "384", metal)).toBe(
      'host.memory.total: found "384"; allowed: a positive size with its unit, like "384GiB", "512GB" or "1.5TiB" (a bare number is refused: bytes, GB or GiB?)',
    );
    expect(refusal("memory", "0GiB", metal)).toMatch(/^host\.memory\.total: found "0GiB"/);
    expect(refusal("memory", "1.5 tib", metal)).toBeUndefined();
    expect(refusal("gpus", "rtx-9090:2", metal)).toMatch(
      /^host\.gpus: found "rtx-9090:2"; allowed: MODEL:COUNT with MODEL one of rtx-3090, /,
    );
    expect(refusal("gpus", "rtx-3090:17", metal)).toMatch(/^host\.gpus: found "rtx-3090:17"/);
    expect(refusal("gpus", "rtx-3090:4, rtx-4090:1", metal)).toBeUndefined();
    const rig = { ...metal, gpus: "rtx-3090:4" };
    expect(refusal("pcie", "4:3", rig)).toBe(
      'host.pcie: found "4:3"; allowed: GEN:LANES with GEN 3 to 6 and LANES 1, 2, 4, 8 or 16 (risers and x4 slots: 4:4), or full',
    );
    expect(refusal("pcie", "4:4", rig)).toBeUndefined();
    expect(refusal("sshHost", "-oProxyCommand=x", metal)).toMatch(
      /^host\.ssh\.host: found "-oProxyCommand=x"; allowed: a host name or IP address/,
    );
    expect(refusal("priceUsd", "cheap", metal)).toMatch(
      /^costs\.hardware\.priceUsd: found "cheap"; allowed: a price in US dollars/,
    );
    expect(refusal("powerWatts", "-5", { ...metal, priceUsd: "5000" })).toMatch(
      /^costs\.hardware\.powerWatts: found "-5"/,
    );
  });

  it("cloud: a catalog instance type, an AWS region, CIDRs narrower than /0", () => {
    const aws = { kind: "cloud" };
    expect(refusal("instance", "m5.large", aws)).toMatch(
      /^host\.instanceType: found "m5\.large"; allowed: r7i\.12xlarge, r7i\.24xlarge/,
    );
    expect(refusal("region", "mars-north-1", aws)).toBe(
      'host.region: found "mars-north-1"; allowed: an AWS region name like us-east-1 or eu-central-1',
    );
    expect(refusal("allowedCidrs", "203.0.113.7/24", aws)).toBe(
      'host.allowedCidrs: found "203.0.113.7/24"; allowed: the network address of the block, here 203.0.113.0/24',
    );
    expect(refusal("allowedCidrs", "0.0.0.0/0", aws)).toMatch(
      /^host\.allowedCidrs: found "0\.0\.0\.0\/0"; allowed: a CIDR narrower than \/0/,
    );
    expect(refusal("allowedCidrs", " ", aws)).toMatch(/^host\.allowedCidrs: found nothing/);
    expect(refusal("allowedCidrs", "203.0.113.0/24, 198.51.100.0/24", aws)).toBeUndefined();
  });

  it("costs: tokens a month with K/M/B, a mix IN:OUT not both zero", () => {
    expect(refusal("tokensPerMonth", "many")).toMatch(
      /^costs\.usage\.tokensPerMonth: found "many"; allowed: a number of tokens like 50000000, 50M or 1\.5B/,
    );
    expect(refusal("mix", "0:0")).toMatch(
      /^costs\.usage\.mix: found "0:0"; allowed: IN:OUT, two numbers not both zero/,
    );
    expect(refusal("mix", "3/1")).toMatch(/^costs\.usage\.mix: found "3\/1"/);
    expect(parseCount("50M")).toBe(50_000_000);
    expect(parseCount("1.5B")).toBe(1_500_000_000);
    expect(parseCount("50,000,000")).toBe(50_000_000);
    expect(parseCount("64k", 1024)).toBe(65536);
    expect(parseCount("lots")).toBeUndefined();
    expect(canonicalSize("384 gib")).toBe("384GiB");
    expect(canonicalSize("384")).toBeUndefined();
  });

  it("recommend: planner/recommend.ts picks the cheapest catalog host that holds the tier, as answer texts", () => {
    const catalog = loadCatalog();
    const model = catalog.models[0]!;
    const metal = recommendHardware(
      { model, tier: model.tiers[0]!, kind: "bare-metal", contextLength: 32768, slots: 1 },
      catalog,
    );
    if (typeof metal === "string") throw new Error(metal);
    expect(metal.kind).toBe("bare-metal");
    expect(catalog.cpuPlatforms.map((platform) => platform.id)).toContain(metal.texts.platform);
    expect(canonicalSize(metal.texts.memory!)).toBe(metal.texts.memory);
    expect(Number(metal.texts.priceUsd)).toBeGreaterThan(0);
    expect(metal.why).toMatch(
      /^`npm run plan -- --recommend` picked .*: the cheapest catalog bare-metal host that holds Kimi K2\.6 UD-Q2_K_XL at 32768 tokens × 1 slot\(s\), \$[\d,.]+\/month/,
    );
    const aws = recommendHardware(
      { model, tier: model.tiers[0]!, kind: "cloud", contextLength: 32768, slots: 1 },
      catalog,
    );
    if (typeof aws === "string") throw new Error(aws);
    expect(catalog.instances.map((instance) => instance.id)).toContain(aws.texts.instance);
    expect(aws.texts.priceUsd).toBeUndefined();
  });
});

/** Three answer sets a team would give: a CPU box, a GPU rig, a cloud instance. */
const ANSWER_SETS: Record<string, Partial<Record<AnswerKey, string>>> = {
  "cpu-box": {
    name: "cpu-box",
    kind: "bare-metal",
    platform: "epyc-9124",
    memory: "384GiB",
    sshHost: "203.0.113.10",
    priceUsd: "5000",
    powerWatts: "350",
  },
  "gpu-rig": {
    name: "gpu-rig",
    kind: "bare-metal",
    platform: "epyc-9374f",
    memory: "384GiB",
    gpus: "rtx-pro-6000:1",
    contextLength: "64k",
    slots: "2",
    priceUsd: "$16,500",
    powerWatts: "700",
    tokensPerMonth: "200M",
  },
  "cloud-box": {
    name: "cloud-box",
    kind: "cloud",
    instance: "r7i.12xlarge",
    region: "us-east-1",
    allowedCidrs: "203.0.113.0/24",
    model: "kimi-k2.6",
    tier: "UD-Q2_K_XL",
  },
  "k3-big": {
    name: "k3-big",
    model: "kimi-k3",
    tier: "UD-Q2_K_XL",
    kind: "bare-metal",
    platform: "epyc-9374f",
    sockets: "2",
    memory: "1536GiB",
    priceUsd: "none",
  },
};

describe("the stack file: parsed by the schema and planned without edits, a comment on every value", () => {
  for (const [name, texts] of Object.entries(ANSWER_SETS)) {
    it(`${name}: written, read back as \`npm run plan\` reads it, planned; the printed plan is that file's`, () => {
      const session = answersFrom(texts);
      const prepared = prepareStack(name, session.answers as Answers, session.origins);
      writeStackFile(dir, name, prepared.text, false);
      const config = loadStackConfig(name, dir);
      const plan = buildPlan(name, config);
      expect(plan.fits, plan.refusal).toBe(true);
      expect(plan.projection.decodeTokensPerSecond).toBeCloseTo(prepared.plan.projection.decodeTokensPerSecond, 9);
      expect(config.model.tier).toBe(texts.tier ?? session.answers.model!.tiers[0]!.name);
      expect(config.host.kind).toBe(texts.kind);
      // No temporary file is left beside the stack.
      expect(readdirSync(dir).filter((file) => file.startsWith("."))).toEqual([]);
    });
  }

  it("the CPU box: each value carries where it came from", () => {
    const session = answersFrom({ ...ANSWER_SETS["cpu-box"], name: "cpu-box-comments" });
    const text = renderStackFile(session.answers as Answers, session.origins);
    expect(text).toMatch(/^# Written by `npm run new-stack`/);
    expect(text).toContain("# catalog/platforms.yaml epyc-9124: AMD EPYC 9124 (Genoa, Zen 4), 16 cores in 4 CCDs");
    expect(text).toMatch(/# RAM in all \(answered; 12 channels of DDR5-4800\)/);
    expect(text).toMatch(
      /# catalog\/models\.yaml kimi-k2\.6: Kimi K2\.6 \(new-stack's default: the catalog's first model\)/,
    );
    expect(text).toMatch(/# What the hardware costs to buy, USD \(answered\)\.\n\s+priceUsd: 5000/);
    expect(text).toMatch(/# Months that price is spread over \(new-stack's default: three years/);
    expect(text).toMatch(/ssh:\n\s+host: 203\.0\.113\.10/);
    // Every scalar value line under config has a comment above it, or sits in a block that has one.
    const lines = text.split("\n");
    const uncommented = lines.filter(
      (line, index) =>
        /^\s+[A-Za-z]+: \S/.test(line) &&
        !/^\s+(kind|provider|host|count|usdPerMillionOutput): /.test(line) &&
        !lines[index - 1]!.trim().startsWith("#"),
    );
    expect(uncommented).toEqual([]);
    expect(text.split("\n").every((line) => line.length <= 100 || !line.trim().startsWith("#"))).toBe(true);
  });

  it("a bare-metal box without a price: no cost section, and the file says why", () => {
    const session = answersFrom({ name: "no-price", kind: "bare-metal" });
    const text = renderStackFile(session.answers as Answers, session.origins);
    expect(text).not.toMatch(/^\s*kimi-kit:costs:/m);
    expect(text).toContain("# No kimi-kit:costs: a bare-metal cost needs the hardware's price (--hardware-price-usd)");
    expect(prepareStack("no-price", session.answers as Answers, session.origins).plan.cost).toBeUndefined();
  });

  it("a stack the plan refuses is still a valid stack (written; the verdict says why)", () => {
    const session = answersFrom({ name: "too-small", model: "kimi-k3", kind: "bare-metal" });
    const { plan } = prepareStack("too-small", session.answers as Answers, session.origins);
    expect(plan.fits).toBe(false);
    expect(plan.refusal).toMatch(/does not fit/);
  });

  it("text that YAML would read as something else is quoted; comments wrap at 100 columns", () => {
    for (const text of [
      "true",
      "0.5",
      "a: b",
      "x # y",
      "- z",
      "AMD EPYC 9124 (Genoa, Zen 4), 384GiB of DDR5-4800",
      '"quoted"',
    ]) {
      expect((parseYaml(`k: ${scalar(text)}`) as { k: unknown }).k).toBe(text);
    }
    expect(scalar("epyc-9124")).toBe("epyc-9124");
    const wrapped = wrapComment(6, "word ".repeat(60).trim());
    expect(wrapped.length).toBeGreaterThan(1);
    expect(wrapped.every((line) => line.length <= 100 && line.startsWith("      # "))).toBe(true);
  });

  it("an existing file is never overwritten without force; the write leaves no temporary file", () => {
    writeFileSync(join(dir, "Pulumi.keep.yaml"), "config: {}\n");
    expect(() => writeStackFile(dir, "keep", "config: {x: 1}\n", false)).toThrow(/which exists/);
    expect(readFileSync(join(dir, "Pulumi.keep.yaml"), "utf8")).toBe("config: {}\n");
    writeStackFile(dir, "keep", "config: {}\n# replaced\n", true);
    expect(readFileSync(join(dir, "Pulumi.keep.yaml"), "utf8")).toContain("# replaced");
    expect(readdirSync(dir).filter((file) => file.endsWith(".tmp"))).toEqual([]);
  });
});

describe("npm run new-stack without a terminal: flags only", () => {
  const run = (args: string[], stacksDir = dir) =>
    spawnSync(join(root, "node_modules", ".bin", "tsx"), [join(root, "cli", "new-stack.ts"), ...args], {
      cwd: root,
      encoding: "utf8",
      input: "",
      env: { ...process.env, KIMI_KIT_STACKS_DIR: stacksDir },
    });

  it("writes the stack from flags and --yes, asks nothing, prints the verdict and the headline numbers", () => {
    const result = run([
      "--name",
      "flags-rig",
      "--kind",
      "bare-metal",
      "--platform",
      "ryzen-9-9950x",
      "--memory",
      "256GiB",
      "--gpus",
      "rtx-3090:4",
      "--pcie",
      "4:4",
      "--context",
      "32768",
      "--slots",
      "1",
      "--hardware-price-usd",
      "5800",
      "--power-watts",
      "900",
      "--tokens-per-month",
      "50M",
      "--mix",
      "3:1",
      "--yes",
    ]);
    expect(result.stderr).toBe("");
    expect(result.status).toBe(0);
    expect(result.stdout).not.toMatch(/\[.*\]: /);
    const plan = buildPlan("flags-rig", loadStackConfig("flags-rig", dir));
    expect(result.stdout).toContain(`wrote ${join(dir, "Pulumi.flags-rig.yaml")}`);
    expect(result.stdout).toContain(`Verdict: FITS (${plan.placement.mode})`);
    expect(result.stdout).toContain(`decode   ${plan.projection.decodeTokensPerSecond.toFixed(1)} tok/s`);
    expect(result.stdout).toMatch(/monthly {2}\$\d[\d,]*\.\d\d;/);
    const text = readFileSync(join(dir, "Pulumi.flags-rig.yaml"), "utf8");
    expect(text).toContain("(given as --gpus)");
    expect(text).toMatch(/# Each card's PCIe link \(given as --pcie\).*\n.*\n\s+pcie: \{ gen: 4, lanes: 4 \}/);
  });

  it("without --yes, lists every answer no flag gave, in one line, and writes nothing", () => {
    const result = run(["--name", "half", "--kind", "cloud"]);
    expect(result.status).toBe(2);
    expect(result.stderr.trim()).toBe(
      "--model, --tier, --context, --slots, --instance-type, --region, --allowed-cidr, --tokens-per-month, --mix: found nothing; allowed: a value for each (stdin is not a terminal, so nothing is asked; --yes takes the default of an answer that has one)",
    );
    expect(existsSync(join(dir, "Pulumi.half.yaml"))).toBe(false);
  });

  it("a cloud stack needs its CIDRs even with --yes: nothing is opened by default", () => {
    const result = run(["--name", "cloud-yes", "--kind", "cloud", "--yes"]);
    expect(result.status).toBe(2);
    expect(result.stderr).toMatch(/^--allowed-cidr: found nothing/);
  });

  it("refuses a bad flag, a bad name and an existing name in one line each, exit 2, nothing written", () => {
    writeFileSync(join(dir, "Pulumi.exists.yaml"), "config: {}\n");
    const cases: [string[], string][] = [
      [
        ["--name", "Team A", "--yes"],
        '--name (name): found "Team A"; allowed: 1 to 63 lower-case letters, digits and -',
      ],
      [
        ["--name", "exists", "--yes"],
        '--name (name): found "exists", which exists (Pulumi.exists.yaml); allowed: a name no stack has, or --force to replace that stack',
      ],
      [
        ["--name", "bad-memory", "--memory", "384", "--yes"],
        '--memory (host.memory.total): found "384"; allowed: a positive size with its unit',
      ],
      [
        ["--name", "bad-tier", "--model", "kimi-k3", "--tier", "UD-Q2_K", "--yes"],
        '--tier (model.tier): found "UD-Q2_K"; allowed: UD-Q1_0,',
      ],
      [
        ["--name", "rec", "--platform", "recommend", "--gpus", "rtx-3090:1", "--yes"],
        '--platform (host.cpu.platform): found "recommend"; allowed: a choice from the list, or recommend without --gpus (the recommendation picks the whole build)',
      ],
    ];
    for (const [args, line] of cases) {
      const result = run(args);
      expect(result.status, result.stderr).toBe(2);
      expect(result.stderr.split("\n").filter(Boolean)).toHaveLength(1);
      expect(result.stderr.startsWith(line), result.stderr).toBe(true);
      expect(result.stderr).not.toMatch(/\bat .*\.ts:\d+/);
    }
    expect(readFileSync(join(dir, "Pulumi.exists.yaml"), "utf8")).toBe("config: {}\n");
    expect(readdirSync(dir).filter((file) => /bad-|rec\.|Team/.test(file))).toEqual([]);
  });

  it("--platform recommend: the recommended build is written with where it came from, and plans as recommended", () => {
    const result = run([
      "--name",
      "rec-box",
      "--model",
      "kimi-k2.6",
      "--tier",
      "UD-Q2_K_XL",
      "--platform",
      "recommend",
      "--usd-per-kwh",
      "0.3",
      "--yes",
    ]);
    expect(result.stderr).toBe("");
    expect(result.status).toBe(0);
    expect(result.stdout).toMatch(/^`npm run plan -- --recommend` picked /);
    const text = readFileSync(join(dir, "Pulumi.rec-box.yaml"), "utf8");
    expect(text).toMatch(/^# `npm run plan -- --recommend` picked /m);
    expect(text).toMatch(/# What the hardware costs to buy, USD \(recommended: see the top of this file\)\./);
    expect(text).toMatch(/# Electricity, USD per kWh \(given as --usd-per-kwh\)\.\n\s+usdPerKwh: 0\.3/);
    expect(buildPlan("rec-box", loadStackConfig("rec-box", dir)).fits).toBe(true);
  });

  it("--force replaces a stack; a refused plan still writes the stack and exits 1 with the reason", () => {
    const result = run(["--name", "exists", "--model", "kimi-k3", "--force", "--yes"]);
    expect(result.status).toBe(1);
    expect(result.stdout).toMatch(/Verdict: DOES NOT FIT — Kimi K3 UD-Q1_0 does not fit on .* short by/);
    expect(loadStackConfig("exists", dir).model.repo).toBe("unsloth/Kimi-K3-GGUF");
  });
});

describe("templates/kimi-kit (`pulumi new`): the same answers as new-stack", () => {
  /** The template's prompts and their defaults, as Pulumi.yaml states them. */
  const template = () =>
    (
      parseYaml(readFileSync(join(root, "templates", "kimi-kit", "Pulumi.yaml"), "utf8")) as {
        template: { config: Record<string, { description: string; default?: string; secret?: boolean }> };
      }
    ).template.config;

  it("asks the kit's own keys; its defaults are the stack new-stack writes with --yes for the seed's $5,000, 350 W box", () => {
    const prompts = template();
    expect(Object.keys(prompts).sort()).toEqual([
      "kimi-kit:apiKey",
      "kimi-kit:costs",
      "kimi-kit:host",
      "kimi-kit:model",
      "kimi-kit:serving",
    ]);
    expect(prompts["kimi-kit:apiKey"]).toMatchObject({ secret: true });
    expect(prompts["kimi-kit:apiKey"]!.default).toBeUndefined();
    for (const [key, prompt] of Object.entries(prompts)) expect(prompt.description, key).toMatch(/\S{10}/);
    const raw = Object.fromEntries(
      Object.entries(prompts).flatMap(([key, prompt]) =>
        prompt.default === undefined ? [] : [[key.slice("kimi-kit:".length), JSON.parse(prompt.default) as unknown]],
      ),
    );
    const fromTemplate = parseStackConfig("template", raw);
    const session = answersFrom({ name: "template-twin", priceUsd: "5000", powerWatts: "350" });
    const fromNewStack = prepareStack("template-twin", session.answers as Answers, session.origins).config;
    // new-stack names the host for the report; the template leaves the name to the plan.
    expect(fromTemplate).toEqual({ ...fromNewStack, host: { ...fromNewStack.host, name: undefined } });
    expect(buildPlan("template", fromTemplate).fits).toBe(true);
  });

  it("a stack file holding JSON text (as `pulumi new` saves answers) is read as Pulumi hands it to the program", () => {
    const prompts = template();
    const lines = Object.entries(prompts).flatMap(([key, prompt]) =>
      prompt.default === undefined ? [] : [`  ${key}: '${prompt.default}'`],
    );
    writeFileSync(join(dir, "Pulumi.json-text.yaml"), `config:\n${lines.join("\n")}\n`);
    const config = loadStackConfig("json-text", dir);
    expect(config.model).toEqual({ repo: "unsloth/Kimi-K2.6-GGUF", tier: "UD-Q2_K_XL", vision: false });
    expect(config.serving.contextLength).toBe(32768);
    // Text that is not JSON stays text, and the schema refuses it naming the key.
    writeFileSync(join(dir, "Pulumi.json-broken.yaml"), `config:\n${lines.join("\n").replace(`'{"repo"`, `'{repo`)}\n`);
    expect(() => loadStackConfig("json-broken", dir)).toThrow(/model: found "\{repo/);
  });
});
