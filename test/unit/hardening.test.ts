/**
 * Config and input hardening (issue 9, items 2, 4's input half, 5, 6 and 10): what `pulumi up` would
 * trip on is refused by the schema and the plan alike, as one ConfigError naming the field, the value
 * found and what is allowed; defaults are stated once; oversized input is refused before parsing.
 */
import { spawnSync } from "node:child_process";
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { stringify } from "yaml";
import { describe, expect, it } from "vitest";
import { apiKeyProblem, DEFAULTS, modelVolumeBytes, parseStackConfig } from "../../planner/config";
import { ConfigError } from "../../planner/errors";
import { buildPlan } from "../../planner/plan";
import { loadCatalog } from "../../planner/catalog";
import { MAX_STACK_FILE_BYTES, readProgramConfig, readStackValues, STACKS_DIR } from "../../planner/stack-file";

const root = join(__dirname, "..", "..");

/** The ConfigError lines parsing and planning `raw` produce; fails the test when there are none. */
function problemsOf(raw: Record<string, unknown>, stack = "broken"): string[] {
  try {
    buildPlan(stack, parseStackConfig(stack, raw));
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return (error as ConfigError).problems;
  }
  throw new Error("expected a ConfigError");
}

const stackValues = (stack: string) => structuredClone(readStackValues(stack));
const bare = () => stackValues("cpu-ddr5");
const cloud = () => stackValues("aws-r7i");
type Tree = Record<string, Record<string, unknown>>;
const at = (raw: Record<string, unknown>) => raw as Tree;

/** A copy of stacks/ plus extra stack files, for the stack-file reader and the CLI. */
function stacksDirWith(files: Record<string, string>): string {
  const dir = mkdtempSync(join(tmpdir(), "kimi-stacks-"));
  for (const file of readdirSync(STACKS_DIR)) copyFileSync(join(STACKS_DIR, file), join(dir, file));
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, `Pulumi.${name}.yaml`), text);
  return dir;
}

/** A stack file from raw `kimi-kit:*` values (plus any other full keys). */
function stackYaml(raw: Record<string, unknown>, extra: Record<string, unknown> = {}): string {
  const config: Record<string, unknown> = { ...extra };
  for (const [key, value] of Object.entries(raw)) config[`kimi-kit:${key}`] = value;
  return stringify({ config });
}

const plan = (env: Record<string, string>, ...args: string[]) =>
  spawnSync(join(root, "node_modules", ".bin", "tsx"), [join(root, "cli", "plan.ts"), ...args], {
    cwd: root,
    encoding: "utf8",
    env: { ...process.env, ...env },
  });

const GOOD_KEY = "kK7_x-0123456789abcdefghijklmnopqrstuv";

describe("item 2: misspelled keys and namespaces, secrets only encrypted", () => {
  it("a misspelled top-level key is refused by the stack-file reader (plan), naming it and the allowed keys", () => {
    const raw = bare();
    const serving = raw.serving;
    delete raw.serving;
    const dir = stacksDirWith({ typo: stackYaml({ ...raw, servng: serving }) });
    let error: unknown;
    try {
      readStackValues("typo", dir);
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(ConfigError);
    const [line] = (error as ConfigError).problems;
    expect(line).toMatch(/kimi-kit:servng: found the key "servng"; allowed: only the keys .*kimi-kit:serving/);
  });

  it("a misspelled namespace (kimi_kit:) is refused rather than silently ignored", () => {
    const raw = bare();
    const serving = raw.serving;
    delete raw.serving;
    const dir = stacksDirWith({ ns: stackYaml(raw, { "kimi_kit:serving": serving, "aws:region": "us-east-1" }) });
    expect(() => readStackValues("ns", dir)).toThrow(
      /kimi_kit:serving: found the namespace "kimi_kit"; allowed: "kimi-kit:"/,
    );
  });

  it("an unknown nested key lists the keys allowed there, for the host kind in use", () => {
    const raw = bare();
    at(raw).serving!.contextLenght = 8192;
    (at(raw).host!.disk as Record<string, unknown>).fre = "1TB";
    const problems = problemsOf(raw);
    expect(problems.find((line) => line.startsWith("serving:"))).toMatch(
      /^serving: found "contextLenght"; allowed: only the keys contextLength, parallelSlots, /,
    );
    expect(problems).toContain('host.disk: found "fre"; allowed: only the keys free');
    const cloudRaw = cloud();
    at(cloudRaw).host!.allowedCidr = ["203.0.113.0/24"];
    expect(problemsOf(cloudRaw)[0]).toMatch(
      /^host: found "allowedCidr"; allowed: only the keys kind, provider, instanceType, region, ami, diskSize, allowedCidrs, allowPublic/,
    );
  });

  const asProgramConfig = (raw: Record<string, unknown>): Record<string, string> =>
    Object.fromEntries(
      Object.entries(raw).map(([key, value]) => [
        `kimi-kit:${key}`,
        typeof value === "string" ? value : JSON.stringify(value),
      ]),
    );

  it("up refuses apiKey, sshPrivateKey and huggingFaceToken set in plain text, without showing them", () => {
    const all = {
      ...asProgramConfig(bare()),
      "kimi-kit:apiKey": GOOD_KEY,
      "kimi-kit:sshPrivateKey": "-----BEGIN KEY-----",
      "kimi-kit:huggingFaceToken": "hf_plain_token",
    };
    let error: unknown;
    try {
      readProgramConfig("cpu-ddr5", all, () => false);
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(ConfigError);
    const problems = (error as ConfigError).problems;
    for (const key of ["apiKey", "sshPrivateKey", "huggingFaceToken"]) {
      expect(problems.find((line) => line.startsWith(`${key}:`))).toContain(
        `pulumi config set --secret kimi-kit:${key}`,
      );
    }
    expect((error as ConfigError).message).not.toMatch(/kK7_x|BEGIN KEY|hf_plain/);
  });

  it("up accepts them as secrets and hands their values on", () => {
    const all = { ...asProgramConfig(bare()), "kimi-kit:apiKey": GOOD_KEY, "kimi-kit:huggingFaceToken": "hf_token" };
    const config = readProgramConfig(
      "cpu-ddr5",
      all,
      (key) => key === "kimi-kit:apiKey" || key === "kimi-kit:huggingFaceToken",
    );
    expect(config.secrets).toEqual({ apiKey: GOOD_KEY, huggingFaceToken: "hf_token" });
    expect(config.raw.apiKey).toEqual({ secure: "(set)" });
  });

  it("up refuses a misspelled key or namespace, naming it, and lists every problem at once", () => {
    const raw = bare();
    const all = { ...asProgramConfig(raw), "kimi-kit:servng": "{}", "kimi_kit:model": "{}", "aws:region": "us-east-1" };
    let error: unknown;
    try {
      readProgramConfig("cpu-ddr5", all, () => true);
    } catch (caught) {
      error = caught;
    }
    const problems = (error as ConfigError).problems;
    expect(problems).toHaveLength(2);
    expect(problems.join("\n")).toMatch(/kimi-kit:servng: found the key "servng"; allowed: only the keys/);
    expect(problems.join("\n")).toMatch(/kimi_kit:model: found the namespace "kimi_kit"/);
  });
});

describe("item 5: an API key is a key", () => {
  it.each([
    ["empty", ""],
    ["short", "sk-short"],
    ["a comment line", "# 0123456789abcdefghijklmnopqrstuvwxyz"],
    ["two lines", `${GOOD_KEY}\n${GOOD_KEY}`],
    ["spaces", "0123456789 abcdefghijklmnopqrstuvwxyz"],
    ["non-ASCII", "0123456789abcdefghijklmnopqrstuvwxyzé"],
  ])("refuses %s, naming apiKey, saying what is allowed and never echoing it", (_what, key) => {
    const problem = apiKeyProblem(key);
    expect(problem).toMatch(/^apiKey: found .*; allowed: one line of 32 to 512 characters from A-Z a-z 0-9 _ -/);
    if (key.length > 0) expect(problem).not.toContain(key.split("\n")[0]!.slice(0, 12));
  });

  it("accepts a generated key (64 hex characters, like the kit's own) and URL-safe base64", () => {
    expect(apiKeyProblem("0123456789abcdef".repeat(4))).toBeUndefined();
    expect(apiKeyProblem(GOOD_KEY)).toBeUndefined();
  });

  it("up refuses a secret API key that is not a key", () => {
    const all = {
      "kimi-kit:apiKey": "#",
      ...Object.fromEntries(Object.entries(bare()).map(([key, value]) => [`kimi-kit:${key}`, JSON.stringify(value)])),
    };
    expect(() => readProgramConfig("cpu-ddr5", all, () => true)).toThrow(
      /apiKey: found a value of 1 characters; allowed/,
    );
  });
});

describe("item 6: what up would trip on, refused by plan too", () => {
  it("refuses a bare-metal disk smaller than the shards, with the sizes", () => {
    const raw = bare();
    at(raw).host!.disk = { free: "100GB" };
    expect(problemsOf(raw)).toEqual([
      expect.stringMatching(
        /^host\.disk\.free: found 100\.0 GB \(93\.1 GiB\); allowed: at least the shards' \d+\.\d GB/,
      ),
    ]);
  });

  it("refuses an AWS volume smaller than the shards", () => {
    const raw = cloud();
    at(raw).host!.diskSize = "200GB";
    expect(problemsOf(raw, "aws-r7i")[0]).toMatch(/^host\.diskSize: found 200\.0 GB .*; allowed: at least the shards'/);
  });

  it("refuses sizes without a unit", () => {
    const raw = bare();
    at(raw).host!.disk = { free: 1000000000000 };
    expect(problemsOf(raw)[0]).toMatch(
      /^host\.disk\.free: found 1000000000000; allowed: a positive size with its unit/,
    );
    const text = bare();
    (at(text).host!.memory as Record<string, unknown>).total = "412316860416";
    expect(problemsOf(text)[0]).toMatch(
      /^host\.memory\.total: found "412316860416"; allowed: a positive size with its unit/,
    );
  });

  it("refuses allowedCidrs [] and a /0 without allowPublic: true; accepts /0 with it", () => {
    const empty = cloud();
    at(empty).host!.allowedCidrs = [];
    expect(problemsOf(empty)[0]).toMatch(/^host\.allowedCidrs: found \[\]; allowed: the CIDRs that may reach SSH/);
    const world = cloud();
    at(world).host!.allowedCidrs = ["203.0.113.0/24", "0.0.0.0/0"];
    expect(problemsOf(world)[0]).toMatch(
      /^host\.allowedCidrs\[1\]: found "0\.0\.0\.0\/0"; allowed: .*allowPublic: true/,
    );
    at(world).host!.allowPublic = true;
    expect(buildPlan("aws-r7i", parseStackConfig("aws-r7i", world)).fits).toBe(true);
  });

  it.each([
    ["host.allowedCidrs[0]", ["10.0.0.256/24"]],
    ["host.allowedCidrs[0]", ["10.0.0.1/24"]],
    ["host.allowedCidrs[0]", ["10.0.0.0/33"]],
    ["host.allowedCidrs[0]", ["any"]],
    ["host.allowedCidrs[0]", ["0.0.0.0/00"]], // a /0 in disguise, without allowPublic
    ["host.allowedCidrs[0]", ["010.0.0.0/8"]],
  ])("refuses a malformed CIDR (%s = %j)", (field, cidrs) => {
    const raw = cloud();
    at(raw).host!.allowedCidrs = cidrs;
    expect(problemsOf(raw)[0]).toMatch(
      new RegExp(`^${field.replace(/[.[\]]/g, "\\$&")}: found "${cidrs[0]!.replace(/\./g, "\\.")}"; allowed: `),
    );
  });

  it.each(["us-east-1; touch /tmp/x", "mars-north-1", "US-EAST-1", ""])("refuses the region %j", (region) => {
    const raw = cloud();
    at(raw).host!.region = region;
    expect(problemsOf(raw)[0]).toMatch(/^host\.region: found .*; allowed: an AWS region name like us-east-1/);
  });

  it.each([
    "file:///etc/passwd",
    "javascript:alert(1)",
    "ftp://mirror.example",
    "https://user:pw@mirror.example",
    "https://mirror.example/?a=b",
  ])("refuses the mirror URL %j", (url) => {
    const raw = bare();
    raw.deployment = { huggingFaceBaseUrl: url };
    expect(problemsOf(raw)[0]).toMatch(
      /^deployment\.huggingFaceBaseUrl: found .*; allowed: an http:\/\/ or https:\/\/ URL/,
    );
  });

  it("accepts an http(s) mirror, with a port and a path", () => {
    for (const url of ["http://127.0.0.1:8080", "https://hf-mirror.example.com/hf"]) {
      const raw = bare();
      raw.deployment = { huggingFaceBaseUrl: url };
      expect(parseStackConfig("cpu-ddr5", raw).deployment.huggingFaceBaseUrl).toBe(url);
    }
  });

  it.each(["", "--privileged", "-v/:/host", "ghcr.io/x/y:tag; rm -rf /", "UPPER/case"])(
    "refuses the image name %j",
    (image) => {
      const raw = bare();
      raw.deployment = { image };
      expect(problemsOf(raw)[0]).toMatch(/^deployment\.image: found .*; allowed: an image reference like/);
    },
  );

  it("accepts the catalog's images and digest-pinned references", () => {
    const images = Object.values(loadCatalog().llamaCpp.images);
    for (const image of [
      ...images,
      "localhost:5000/llama:test",
      `ghcr.io/ggml-org/llama.cpp@sha256:${"a".repeat(64)}`,
    ]) {
      const raw = bare();
      raw.deployment = { image };
      expect(parseStackConfig("cpu-ddr5", raw).deployment.image).toBe(image);
    }
  });

  it("refuses a lock path that is not a lock, naming the field and never printing the file", () => {
    const dir = mkdtempSync(join(tmpdir(), "kimi-lock-"));
    writeFileSync(join(dir, "passwd.lock.json"), "root:x:0:0:root:/root:/bin/bash\n");
    writeFileSync(join(dir, "other.lock.json"), JSON.stringify({ name: "not-a-lock" }));
    mkdirSync(join(dir, "folder.lock.json"));
    const cases: [string, RegExp][] = [
      ["passwd.lock.json", /which is not JSON/],
      ["other.lock.json", /which is not a lock/],
      ["folder.lock.json", /which is not a regular file/],
    ];
    for (const [file, why] of cases) {
      const raw = bare();
      raw.deployment = { lockFile: join(dir, file) };
      const problems = problemsOf(raw);
      expect(problems[0]).toMatch(/^deployment\.lockFile: found ".*"/);
      expect(problems[0]).toMatch(why);
      expect(problems.join("\n")).not.toContain("root:x");
    }
    const passwd = bare();
    passwd.deployment = { lockFile: "/etc/passwd" };
    expect(problemsOf(passwd)[0]).toMatch(
      /^deployment\.lockFile: found "\/etc\/passwd"; allowed: the path of a \.json lock/,
    );
  });

  it.each(["../../etc/cron.d/x.gguf", "-rf.gguf", "/etc/x.gguf", "UD-Q2/.hidden.gguf", "a/b\nc.gguf"])(
    "refuses a lock whose shard path is %j",
    (shardPath) => {
      const dir = mkdtempSync(join(tmpdir(), "kimi-lock-"));
      const lock = {
        lockVersion: 1,
        repo: "unsloth/Kimi-K2.6-GGUF",
        revision: "main",
        tier: "UD-Q2_K_XL",
        source: "https://huggingface.co",
        generatedAt: "2026-01-01T00:00:00Z",
        metadata: {},
        shards: [{ path: shardPath, size: 1, sha256: "0".repeat(64), tensors: [] }],
      };
      writeFileSync(join(dir, "evil.lock.json"), JSON.stringify(lock));
      const raw = bare();
      raw.deployment = { lockFile: join(dir, "evil.lock.json") };
      const problems = problemsOf(raw);
      expect(problems[0]).toMatch(/^deployment\.lockFile: found ".*evil\.lock\.json", which is not a lock/);
      expect(problems[1]).toMatch(/^deployment\.lockFile shards\[0\]\.path: found .*; allowed: a relative path/);
    },
  );

  it.each([
    ["model.repo", "../../etc/x"],
    ["model.repo", "-x/y"],
    ["model.repo", "owner/na..me"],
    ["model.repo", "owner/name\n"],
    ["model.tier", "../../etc"],
    ["model.tier", "-rf"],
    ["model.tier", "Q4'; touch /tmp/pwned; '"],
    ["model.tier", "UD\u001bQ2"],
  ])("refuses %s = %j", (field, value) => {
    const raw = bare();
    at(raw).model![field.split(".")[1]!] = value;
    // The catalog lookup would refuse these too, but only after a lock path was built from them.
    expect(problemsOf(raw)[0]).toMatch(
      new RegExp(`^${field.replace(".", "\\.")}: found .*; allowed: an? (Hugging Face repo id|tier name)`),
    );
  });

  it.each([
    "/",
    "/etc",
    "/usr",
    "/bin",
    "/boot",
    "/dev",
    "/proc",
    "/sys",
    "/var",
    "/root",
    "/home",
    "/home/",
    "/etc/models",
    "/proc/1/root",
    "/srv/../etc",
    "/srv/./models",
    "/srv//models",
    "/srv/-rf",
    "models",
    "/srv/mo dels",
  ])("refuses the model dir %j", (modelDir) => {
    const raw = bare();
    raw.deployment = { modelDir };
    expect(problemsOf(raw)[0]).toMatch(
      /^deployment\.modelDir: found .*; allowed: an absolute path of plain folder names/,
    );
  });

  it("accepts model dirs below the system trees", () => {
    for (const modelDir of [
      "/srv/models",
      "/data/models",
      "/var/lib/kimi-kit/models",
      "/home/ops/models",
      "/mnt/nvme0/kimi",
    ]) {
      const raw = bare();
      raw.deployment = { modelDir };
      expect(parseStackConfig("cpu-ddr5", raw).deployment.modelDir).toBe(modelDir);
    }
  });

  it("refuses an ssh host that would read as an option", () => {
    const raw = bare();
    (at(raw).host!.ssh as Record<string, unknown>).host = "-Jattacker.example";
    expect(problemsOf(raw)[0]).toMatch(
      /^host\.ssh\.host: found "-Jattacker.example"; allowed: a host name or IP address/,
    );
  });

  it("npm run plan --compare exits 0 and marks a broken stack; --stack names the problem without a stack trace", () => {
    const dir = mkdtempSync(join(tmpdir(), "kimi-lock-"));
    writeFileSync(join(dir, "passwd.lock.json"), "root:x:0:0:root:/root:/bin/bash\n");
    const lockStack = bare();
    lockStack.deployment = { lockFile: join(dir, "passwd.lock.json") };
    const diskStack = bare();
    at(diskStack).host!.disk = { free: "10GB" };
    const stacks = stacksDirWith({ "broken-lock": stackYaml(lockStack), "broken-disk": stackYaml(diskStack) });
    const env = { KIMI_KIT_STACKS_DIR: stacks };

    const compare = plan(env, "--compare");
    expect(compare.status).toBe(0);
    expect(compare.stdout.split("\n").find((line) => line.startsWith("broken-lock"))).toMatch(/INVALID CONFIG/);
    expect(compare.stdout.split("\n").find((line) => line.startsWith("broken-disk"))).toMatch(/INVALID CONFIG/);
    expect(compare.stdout).toMatch(/^cpu-ddr5 /m);
    expect(compare.stderr).toMatch(/host\.disk\.free: found 10\.0 GB/);
    expect(compare.stderr + compare.stdout).not.toContain("root:x");
    expect(compare.stderr).not.toMatch(/\bat .*\.[jt]s:\d+/);
    const json = JSON.parse(plan(env, "--compare", "--json").stdout) as { stack: string; invalid?: boolean }[];
    expect(json.find((entry) => entry.stack === "broken-disk")).toMatchObject({ invalid: true });

    const single = plan(env, "--stack", "broken-lock");
    expect(single.status).toBe(1);
    expect(single.stderr).toMatch(/deployment\.lockFile: found ".*passwd\.lock\.json", which is not JSON/);
    expect(single.stderr + single.stdout).not.toContain("root:x");
    expect(single.stderr).not.toMatch(/\bat .*\.[jt]s:\d+/);
  }, 60_000);
});

describe("item 10: defaults stated once, input capped", () => {
  it("the schema fills the one set of defaults into the config the plan carries", () => {
    const raw = bare();
    delete raw.deployment;
    const plan = buildPlan("cpu-ddr5", parseStackConfig("cpu-ddr5", raw));
    expect(plan.config.deployment.modelDir).toBe(DEFAULTS.modelDir);
    expect(plan.config.deployment.containerWaitSeconds).toBe(DEFAULTS.containerWaitSeconds);
    expect(plan.config.deployment.huggingFaceBaseUrl).toBe(DEFAULTS.huggingFaceBaseUrl);
  });

  it("the cost's model volume is the one the AWS host creates", () => {
    const raw = cloud();
    delete at(raw).host!.diskSize;
    const plan = buildPlan("aws-r7i", parseStackConfig("aws-r7i", raw));
    const volume = plan.cost!.lines.find((line) => line.item === "model volume")!;
    expect(volume.basis).toContain(`${Math.ceil(modelVolumeBytes(undefined, plan.modelBytes) / 1e9)} GB`);
    expect(modelVolumeBytes(undefined, 1e9)).toBe(Math.ceil(1e9 * DEFAULTS.modelVolumeHeadroomRatio));
  });

  it("no component or script states its own model dir, volume headroom or container wait", () => {
    const sources = ["components", "planner", "ansible-free-scripts"].flatMap((dir) =>
      readdirSync(join(root, dir))
        .filter((file) => /\.(ts|sh)$/.test(file))
        .map((file) => ({ file: `${dir}/${file}`, text: readFileSync(join(root, dir, file), "utf8") })),
    );
    for (const { file, text } of sources) {
      if (file === "planner/config.ts") continue;
      expect(text, file).not.toContain("/var/lib/kimi-kit/models");
      expect(text, file).not.toMatch(/modelBytes \* 1\.1/);
      expect(text, file).not.toMatch(/waitSeconds: \d/);
    }
    // The scripts run on their own too, so they keep a default of their own: the same one.
    expect(readFileSync(join(root, "ansible-free-scripts", "probe-host.sh"), "utf8")).toMatch(
      new RegExp(`^model_dir=${DEFAULTS.modelDir}$`, "m"),
    );
    expect(readFileSync(join(root, "ansible-free-scripts", "llama-container.sh"), "utf8")).toMatch(
      new RegExp(`wait_seconds=${DEFAULTS.containerWaitSeconds}\\b`),
    );
  });

  it("refuses a stack file over the size cap before parsing it, quickly", () => {
    const keys = Array.from({ length: 10_000 }, (_, index) => `    k${index}: ${index}`).join("\n");
    const dir = stacksDirWith({ huge: `config:\n  kimi-kit:serving:\n${keys}\n` });
    const started = performance.now();
    expect(() => readStackValues("huge", dir)).toThrow(
      new RegExp(`found \\d+ bytes; allowed: at most ${MAX_STACK_FILE_BYTES} bytes`),
    );
    expect(performance.now() - started).toBeLessThan(1000);
  });
});
