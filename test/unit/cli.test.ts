import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import type { PlanJson } from "../../planner/report";

const root = join(__dirname, "..", "..");
const plan = (...args: string[]) =>
  spawnSync(join(root, "node_modules", ".bin", "tsx"), [join(root, "cli", "plan.ts"), ...args], {
    cwd: root,
    encoding: "utf8",
  });

describe("npm run plan", () => {
  it("prints verdict, memory map, command line, projections, cost and break-even; exit 0", () => {
    const run = plan("--stack", "cpu-ddr5");
    expect(run.status).toBe(0);
    for (const part of [
      "Verdict: FITS",
      "Memory map",
      "llama-server \\",
      "--api-key-file",
      "decode",
      "prefill",
      "TTFT",
      "Monthly cost",
      "break-even",
      "Seed figures",
    ]) {
      expect(run.stdout).toContain(part);
    }
    expect(run.stderr).toBe("");
  });

  it("exits non-zero with the refusal when the stack does not fit", () => {
    const run = plan("--stack", "cpu-ddr5-q4");
    expect(run.status).toBe(1);
    expect(run.stdout).toMatch(/DOES NOT FIT .*short by .*Tiers that fit this host at this context: UD-Q2_K_XL/);
  });

  it("exits non-zero, without a stack trace, for an unknown stack", () => {
    const run = plan("--stack", "nope");
    expect(run.status).toBe(1);
    expect(run.stderr).toContain("no stack file stacks/Pulumi.nope.yaml");
    expect(run.stderr).not.toMatch(/\bat .*\.ts:\d+/);
  });

  it("--html and --svg write the plan as a picture, for one stack and for both sides of --diff-stack; an unwritable path is one line", () => {
    const dir = mkdtempSync(join(tmpdir(), "plan-html-"));
    try {
      const one = plan("--stack", "cpu-ddr5-q4-split", "--html", join(dir, "one.html"), "--svg", join(dir, "one.svg"));
      expect(one.status).toBe(0);
      const html = readFileSync(join(dir, "one.html"), "utf8");
      // Both hosts of the split are drawn, each device by the name llama.cpp logs.
      expect(html).toContain('data-device="CPU"');
      expect(html).toContain('data-device="RPC0[10.20.0.2:50052]"');
      expect(readFileSync(join(dir, "one.svg"), "utf8")).toMatch(
        /^<\?xml [^>]*>\s*<svg[^>]*xmlns="http:\/\/www\.w3\.org\/2000\/svg"/,
      );
      const two = plan("--stack", "cpu-ddr5", "--diff-stack", "cpu-ddr5-q4", "--html", join(dir, "two.html"));
      expect(two.status).toBe(3);
      const diffPage = readFileSync(join(dir, "two.html"), "utf8");
      expect(diffPage).toContain("cpu-ddr5-q4");
      expect(new Set([...diffPage.matchAll(/data-version="([^"]+)"/g)].map((match) => match[1])).size).toBe(2);
      const bad = plan("--stack", "cpu-ddr5", "--html", join(dir, "missing", "x.html"));
      expect(bad.status).toBe(1);
      expect(bad.stderr.trim()).toBe(
        `--html ${join(dir, "missing", "x.html")}: cannot write the report: its folder ${join(dir, "missing")} does not exist`,
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("--json has the documented fields", () => {
    const run = plan("--stack", "rtx3090x4", "--json");
    const json = JSON.parse(run.stdout) as PlanJson;
    expect(json.stack).toBe("rtx3090x4");
    expect(json.fits).toBe(true);
    expect(json.devices.map((device) => device.name)).toEqual(["CPU", "CUDA0", "CUDA1", "CUDA2", "CUDA3"]);
    for (const device of json.devices) expect(device.plannedBytes).toBeLessThanOrEqual(device.capacityBytes);
    expect(json.llamaServerArgs).toContain("--override-tensor");
    expect(json.projection.decodeTokensPerSecond).toBeGreaterThan(0);
    expect(json.projection.ttft32kSeconds).toBeGreaterThan(0);
    expect(typeof json.cost!.monthlyUsd).toBe("number");
    expect(json.cost).toHaveProperty("breakEvenTokensPerMonth");
  });

  it("--compare lists every stack cheapest first and marks refused ones, exit 0", () => {
    const run = plan("--compare");
    expect(run.status).toBe(0);
    const lines = run.stdout.trim().split("\n").slice(2);
    expect(lines.find((line) => line.startsWith("cpu-ddr5-q4 "))).toContain("does not fit");
    expect(lines.at(-1)).toMatch(/does not fit|refused/);
    expect(lines.find((line) => line.startsWith("k3-q2-split"))).toContain("refused");
    const fitting = lines
      .filter((line) => !/does not fit|refused/.test(line))
      .map((line) => Number(/\$([\d,]+\.\d\d)/.exec(line)![1]!.replaceAll(",", "")));
    expect(fitting).toEqual([...fitting].sort((a, b) => a - b));
    const json = JSON.parse(plan("--compare", "--json").stdout) as PlanJson[];
    expect(json.find((entry) => entry.stack === "cpu-ddr5-q4")!.refusal).toMatch(/does not fit/);
  });
});
