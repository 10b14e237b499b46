/**
 * `npm run -s new-stack` in a real terminal (tmux, Debian package `tmux`), answered as a person
 * would: each prompt is waited for on the screen (`capture-pane`, polled until the text is there),
 * then the answer is typed with `send-keys`. Wrong answers are refused in one line and asked again;
 * a flag's answer is never asked; Ctrl-C leaves nothing behind. Each test writes into its own
 * temporary stacks folder (KIMI_KIT_STACKS_DIR) and runs its own tmux server (-L), both removed after.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { buildPlan } from "../../planner/plan";
import { loadStackConfig } from "../../planner/stack-file";

const root = join(__dirname, "..", "..");
/** How long one prompt may take to appear: the first one waits for npm, tsx and the catalog to load. */
const PROMPT_TIMEOUT_MS = 60_000;

let stacksDir: string;
let socket: string;

function tmux(...args: string[]): string {
  const result = spawnSync("tmux", ["-L", socket, "-f", "/dev/null", ...args], { encoding: "utf8" });
  if (result.error) throw new Error(`tmux could not start (${result.error.message}); install Debian's package tmux`);
  if (result.status !== 0) throw new Error(`tmux ${args.join(" ")}: ${result.stderr}`);
  return result.stdout;
}

/** Starts the command in a 200×60 terminal; the pane stays after it exits, to read its output and status. */
function start(command: string): void {
  const shell = `${command}; echo "new-stack exited with $?"`;
  tmux(
    "start-server",
    ";",
    "set-option",
    "-wg",
    "remain-on-exit",
    "on",
    ";",
    "new-session",
    "-d",
    "-s",
    "t",
    "-x",
    "200",
    "-y",
    "60",
    "-c",
    root,
    "-e",
    `KIMI_KIT_STACKS_DIR=${stacksDir}`,
    "sh",
    "-c",
    shell,
  );
}

/** Everything the terminal shows and scrolled past, wrapped lines joined. */
const screen = () => tmux("capture-pane", "-p", "-J", "-t", "t", "-S", "-");
const occurrences = (text: string, part: string) => text.split(part).length - 1;

/** Polls the screen until `part` is on it `times` times; fails with the screen when it never is. */
async function waitFor(part: string, times = 1): Promise<string> {
  const deadline = Date.now() + PROMPT_TIMEOUT_MS;
  for (;;) {
    const shown = screen();
    if (occurrences(shown, part) >= times) return shown;
    if (Date.now() > deadline)
      throw new Error(`waited ${PROMPT_TIMEOUT_MS} ms for ${JSON.stringify(part)} (×${times}); the screen:\n${shown}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/**
 * Waits for the command to end: start() runs it under sh, which prints its exit status (tmux's own
 * #{pane_dead_status} is sometimes never set when the terminal closes before the process is reaped).
 */
async function finished(): Promise<{ status: number; shown: string }> {
  const shown = await waitFor("new-stack exited with ");
  return { status: Number(/new-stack exited with (\d+)/.exec(shown)![1]), shown };
}

/** Waits for the prompt (its `times`-th showing), then types the answer and Enter as a person would. */
async function reply(prompt: string, text: string, times = 1): Promise<void> {
  await waitFor(prompt, times);
  if (text !== "") tmux("send-keys", "-t", "t", "-l", text);
  tmux("send-keys", "-t", "t", "Enter");
}

beforeEach(() => {
  stacksDir = mkdtempSync(join(tmpdir(), "kimi-kit-new-stack-tty-"));
  socket = `kimi-kit-new-stack-${process.pid}-${Date.now()}`;
});

afterEach(() => {
  spawnSync("tmux", ["-L", socket, "kill-server"]);
  rmSync(stacksDir, { recursive: true, force: true });
});

describe("npm run new-stack in a terminal (tmux)", () => {
  it("asks each answer, refuses a wrong one in one line and asks again, writes a stack that plans, prints its verdict", async () => {
    start("npm run -s new-stack");
    await reply("Stack name (the X of stacks/Pulumi.X.yaml): ", "Team A");
    await waitFor('name: found "Team A"; allowed: 1 to 63 lower-case letters, digits and -');
    await reply("Stack name (the X of stacks/Pulumi.X.yaml): ", "team-a", 2);
    await waitFor("  4) glm-5 ");
    await reply("Model [kimi-k2.6]: ", "");
    await reply("Tier of Kimi K2.6 [UD-Q2_K_XL]: ", "1");
    await reply("Host kind: bare-metal (a machine you own) or cloud (an AWS instance) [bare-metal]: ", "bare-metal");
    await reply("Context length per slot in tokens", "64k");
    await reply("Parallel slots (requests served at once, each with its own context) [1]: ", "2");
    await waitFor("  2) epyc-9374f");
    await reply("CPU platform (a number, an id, or recommend) [epyc-9124]: ", "2");
    await reply("RAM in all (with its unit, like 384GiB; epyc-9374f has 12 channels) [384GiB]: ", "384");
    await waitFor('host.memory.total: found "384"; allowed: a positive size with its unit');
    await reply("RAM in all (with its unit, like 384GiB; epyc-9374f has 12 channels) [384GiB]: ", "384GiB", 2);
    await reply("GPUs as MODEL:COUNT, several separated by commas, or none [none]: ", "rtx-pro-6000:1");
    await reply(
      "SSH address `pulumi up` connects to (blank: add it later; the plan needs none) [blank]: ",
      "203.0.113.30",
    );
    await reply("What the hardware costs to buy, USD (none: no cost section) [none]: ", "$16,500");
    await reply("Power draw under load, watts: ", "700");
    await reply("Expected tokens per month, input and output together (50M = 50,000,000) [50M]: ", "200M");
    await reply("Input to output tokens, IN:OUT [3:1]: ", "");
    const { status, shown } = await finished();
    expect(status, shown).toBe(0);

    const file = join(stacksDir, "Pulumi.team-a.yaml");
    expect(shown).toContain(`wrote ${file}`);
    const config = loadStackConfig("team-a", stacksDir);
    expect(config.host.kind === "bare-metal" && config.host.cpu.platform).toBe("epyc-9374f");
    expect(config.host.kind === "bare-metal" && config.host.gpus).toEqual([{ model: "rtx-pro-6000", count: 1 }]);
    expect(config.host.kind === "bare-metal" && config.host.ssh?.host).toBe("203.0.113.30");
    expect(config.serving).toMatchObject({ contextLength: 65536, parallelSlots: 2 });
    expect(config.costs).toMatchObject({
      hardware: { priceUsd: 16500, powerWatts: 700 },
      usage: { tokensPerMonth: 200_000_000, mix: { input: 3, output: 1 } },
    });
    // What the terminal printed is the plan of the file on disk.
    const plan = buildPlan("team-a", config);
    expect(shown).toContain(plan.fits ? `Verdict: FITS (${plan.placement.mode})` : "Verdict: ");
    expect(plan.fits, plan.refusal).toBe(true);
    expect(shown).toContain(`decode   ${plan.projection.decodeTokensPerSecond.toFixed(1)} tok/s`);
    expect(shown).toMatch(/monthly {2}\$[\d,]+\.\d\d; /);
    const text = readFileSync(file, "utf8");
    expect(text).toContain("# Draw under load, watts (answered).");
    expect(text).toContain("(new-stack's default: as the stacks in stacks/)");
    expect(readdirSync(stacksDir)).toEqual(["Pulumi.team-a.yaml"]);
  }, 180_000);

  it("never asks an answer given as a flag; the cloud's CIDRs have no default and must be typed", async () => {
    start("npm run -s new-stack -- --name cloud-a --kind cloud --instance-type r7i.24xlarge --context 32768 --slots 1");
    await reply("Model [kimi-k2.6]: ", "kimi-k2.6");
    await reply("Tier of Kimi K2.6 [UD-Q2_K_XL]: ", "UD-Q2_K_XL");
    await reply("AWS region [us-east-1]: ", "");
    await reply("Networks that may reach SSH and the API port (CIDRs separated by commas, like 203.0.113.0/24): ", "");
    await waitFor("host.allowedCidrs: found nothing; allowed: one or more IPv4 CIDRs");
    await reply(
      "Networks that may reach SSH and the API port (CIDRs separated by commas, like 203.0.113.0/24): ",
      "203.0.113.0/24",
      2,
    );
    await reply("Expected tokens per month, input and output together (50M = 50,000,000) [50M]: ", "");
    await reply("Input to output tokens, IN:OUT [3:1]: ", "");
    const { status, shown } = await finished();
    expect(status, shown).toBe(0);
    for (const asked of ["Stack name", "Host kind", "Instance type", "Context length", "Parallel slots"])
      expect(shown).not.toContain(asked);
    const config = loadStackConfig("cloud-a", stacksDir);
    expect(config.host).toMatchObject({
      kind: "cloud",
      instanceType: "r7i.24xlarge",
      region: "us-east-1",
      allowedCidrs: ["203.0.113.0/24"],
    });
    expect(shown).toContain(`Verdict: FITS (${buildPlan("cloud-a", config).placement.mode})`);
  }, 180_000);

  it("Ctrl-C in the middle stops with 130 and writes nothing, not even a temporary file", async () => {
    start("npm run -s new-stack");
    await reply("Stack name (the X of stacks/Pulumi.X.yaml): ", "half-done");
    await waitFor("Model [kimi-k2.6]: ");
    tmux("send-keys", "-t", "t", "C-c");
    const { status, shown } = await finished();
    expect(shown).toContain("stopped (interrupted): nothing written");
    expect(status, shown).toBe(130);
    expect(readdirSync(stacksDir)).toEqual([]);
  }, 180_000);
});
