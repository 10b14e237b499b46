/**
 * The HTML/SVG plan report, read as text: labels escaped, each bar's width the plan's bytes times
 * the device's scale (worked out here from the plan JSON and the drawing's track width, never from
 * the renderer's helpers), two versions overlaid, nothing fetched from elsewhere, and the report
 * file's write errors as one line each. The browser test (test/scripts/report-html-browser.test.ts)
 * checks the same geometry as rendered.
 */
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { writeReport } from "../../cli/report-file";
import { ConfigError } from "../../planner/errors";
import { buildPlan } from "../../planner/plan";
import { renderHtmlReport, renderMemorySvg, type ReportVersion } from "../../planner/report-html";
import { planToJson, type PlanJson } from "../../planner/report";
import { loadStackConfig } from "../../planner/stack-file";
import { KIND_FIELDS } from "../support/report-kinds";

const planJson = (stack: string): PlanJson => planToJson(buildPlan(stack, loadStackConfig(stack), { lock: null }));
const cpu = planJson("cpu-ddr5");
const gpus = planJson("rtx3090x4");

function unescape(text: string): string {
  return text.replace(
    /&(amp|lt|gt|quot|#39);/g,
    (_, name: string) => ({ amp: "&", lt: "<", gt: ">", quot: '"', "#39": "'" })[name]!,
  );
}

/** Every element of one tag with its attributes, from the markup the renderer wrote. */
function elements(markup: string, tag: string): Record<string, string>[] {
  return [...markup.matchAll(new RegExp(`<${tag}\\b([^>]*)>`, "g"))].map((match) =>
    Object.fromEntries([...match[1]!.matchAll(/([\w:-]+)="([^"]*)"/g)].map((attr) => [attr[1]!, unescape(attr[2]!)])),
  );
}

const trackPx = (markup: string): number =>
  Number(elements(markup, "svg").find((svg) => svg["data-track-px"])!["data-track-px"]);

/** Checks every device's bars in `markup` against the plans: rect per non-zero kind, width = bytes × scale. */
function expectBarsMatch(markup: string, versions: readonly ReportVersion[]): void {
  const rects = elements(markup, "rect").filter((rect) => rect["data-kind"]);
  const track = trackPx(markup);
  expect(track).toBeGreaterThan(500);
  const names = [...new Set(versions.flatMap((version) => version.plan.devices.map((device) => device.name)))];
  for (const name of names) {
    const devices = versions.map((version) => version.plan.devices.find((device) => device.name === name));
    // The device's largest figure across versions spans the track.
    const largest = Math.max(
      ...devices.map((device) => (device ? Math.max(device.capacityBytes, device.plannedBytes) : 0)),
    );
    const scale = track / largest;
    devices.forEach((device, version) => {
      const mine = rects.filter((rect) => rect["data-device"] === name && rect["data-version"] === String(version));
      if (!device) {
        expect(mine).toEqual([]);
        return;
      }
      const capacity = mine.find((rect) => rect["data-kind"] === "capacity")!;
      expect(Number(capacity["data-bytes"])).toBe(device.capacityBytes);
      expect(Number(capacity.width)).toBeCloseTo(device.capacityBytes * scale, 1);
      let x = Number(capacity.x);
      for (const [kind, field] of Object.entries(KIND_FIELDS)) {
        const bytes = device[field];
        const rect = mine.find((entry) => entry["data-kind"] === kind);
        if (bytes === 0) {
          expect(rect, `${name} ${kind}`).toBeUndefined();
          continue;
        }
        expect(rect, `${name} ${kind}`).toBeDefined();
        expect(Number(rect!["data-bytes"])).toBe(bytes);
        expect(Number(rect!["data-scale-px-per-byte"])).toBeCloseTo(scale, 15);
        expect(Number(rect!.width)).toBeCloseTo(bytes * scale, 1);
        // Stacked: each kind starts where the one before it ended.
        expect(Number(rect!.x)).toBeCloseTo(x, 1);
        x += bytes * scale;
      }
      expect(x - Number(capacity.x)).toBeCloseTo(device.plannedBytes * scale, 1);
    });
  }
}

/** A plan whose user-given texts are all markup, to prove they are shown and never interpreted. */
function hostile(): PlanJson {
  const plan = structuredClone(cpu);
  plan.stack = `x<script>alert(1)</script>`;
  plan.host.label = `host "quoted" & <b>bold</b>`;
  plan.devices = plan.devices.map((device) => ({
    ...device,
    name: `${device.name}<i>`,
    label: `RAM <img src=x onerror=alert(1)> 'DDR5' & more`,
  }));
  plan.llamaServerArgs = [...plan.llamaServerArgs, "--alias", "</pre><script>x</script>"];
  return plan;
}

describe("renderHtmlReport / renderMemorySvg", () => {
  it("shows every device's name and label, escaped, in the map and the page", () => {
    for (const plan of [cpu, gpus]) {
      const html = renderHtmlReport([{ label: "now", plan }]);
      const labels = elements(html, "text").filter((text) => text.class === "device-label");
      expect(labels.map((text) => text["data-device"])).toEqual(plan.devices.map((device) => device.name));
      for (const device of plan.devices) expect(html).toContain(device.label);
    }
    const plan = hostile();
    for (const markup of [
      renderHtmlReport([{ label: `<label>`, plan }]),
      renderMemorySvg([{ label: `<label>`, plan }]),
    ]) {
      expect(markup).not.toMatch(/<script|<img|<i>|<b>|<label>|onerror=alert\(1\)>/);
      expect(markup).toContain("RAM &lt;img src=x onerror=alert(1)&gt; &#39;DDR5&#39; &amp; more");
      expect(markup).toContain("CPU&lt;i&gt;");
      expectBarsMatch(markup, [{ label: "<label>", plan }]);
    }
    const html = renderHtmlReport([{ label: "l", plan }]);
    expect(html).toContain("x&lt;script&gt;alert(1)&lt;/script&gt;");
    expect(html).toContain("host &quot;quoted&quot; &amp; &lt;b&gt;bold&lt;/b&gt;");
    expect(html).toContain("&lt;/pre&gt;&lt;script&gt;x&lt;/script&gt;");
  });

  it("draws each kind's bar as its bytes × the device's scale, stacked, against capacity", () => {
    for (const plan of [cpu, gpus]) {
      const versions = [{ label: "now", plan }];
      expectBarsMatch(renderHtmlReport(versions), versions);
      expectBarsMatch(renderMemorySvg(versions), versions);
    }
    // The legend names only the kinds present: rtx3090x4 repacks nothing.
    const svg = renderMemorySvg([{ label: "now", plan: gpus }]);
    expect(gpus.devices.every((device) => device.repackBytes === 0)).toBe(true);
    expect(svg).not.toContain("repacked weights");
    expect(svg).toContain("KV cache");
  });

  it("draws a device over its capacity past the capacity mark and says so", () => {
    const plan = structuredClone(gpus);
    const over = plan.devices[1]!;
    over.kvBytes += over.capacityBytes; // planned now ≈ 2× capacity
    over.plannedBytes += over.capacityBytes;
    plan.fits = false;
    plan.refusal = "CUDA0 short by 24 GiB";
    const versions = [{ label: "now", plan }];
    const svg = renderMemorySvg(versions);
    expectBarsMatch(svg, versions);
    expect(svg).toMatch(/DOES NOT FIT, [\d.]+ GiB over/);
  });

  it("overlays two versions: before striped and dashed, after solid, one scale per device", () => {
    // After: more KV on every GPU and a device that only the after side has.
    const after = structuredClone(gpus);
    for (const device of after.devices.slice(1)) {
      device.kvBytes *= 2;
      device.plannedBytes += device.kvBytes / 2;
    }
    after.devices.push({ ...after.devices[1]!, name: "CUDA4", label: "NVIDIA GeForce RTX 4090" });
    after.projection.decodeByDepth = after.projection.decodeByDepth.map((point) => ({
      ...point,
      tokensPerSecond: point.tokensPerSecond * 1.2,
    }));
    const versions: ReportVersion[] = [
      { label: "main", plan: gpus },
      { label: "this branch", plan: after },
    ];
    const html = renderHtmlReport(versions);
    expectBarsMatch(html, versions);
    expect(html).toContain("Plan diff for stack rtx3090x4: main → this branch");
    const segments = elements(html, "rect").filter((rect) => rect.class === "segment");
    expect(
      segments.filter((rect) => rect["data-version"] === "0").every((rect) => rect.fill!.startsWith("url(#")),
    ).toBe(true);
    expect(segments.filter((rect) => rect["data-version"] === "1").every((rect) => rect.fill!.startsWith("#"))).toBe(
      true,
    );
    expect(html).toContain("main: no such device in this version");
    // Each chart has a series per version, the before one dashed.
    const series = elements(html, "g").filter((group) => group.class === "series");
    for (const kind of ["decode", "prefill", "self-hosted", "api"]) {
      expect(series.filter((group) => group["data-kind"] === kind).map((group) => group["data-version"])).toEqual([
        "0",
        "1",
      ]);
    }
    const lines = elements(html, "polyline");
    expect(lines.filter((line) => line["stroke-dasharray"]).length).toBe(4);
    // The decode series' points are the plans' own figures.
    const points = elements(html, "circle").filter((circle) => circle["data-x"] !== undefined);
    for (const point of after.projection.decodeByDepth) {
      expect(
        points.some(
          (circle) =>
            Number(circle["data-x"]) === point.depthTokens && Number(circle["data-y"]) === point.tokensPerSecond,
        ),
      ).toBe(true);
    }
  });

  it("plots monthly cost against the API line with the break-even, or says there is none", () => {
    // The stacks' own API prices never break even; a pricier API does.
    const cheap = renderHtmlReport([{ label: "now", plan: cpu }]);
    expect(cpu.cost!.breakEvenTokensPerMonth).toBeNull();
    expect(cheap).toContain("there is no break-even point");
    expect(cheap).toContain(`no break-even: ${cpu.cost!.breakEvenReason}`.replace(/'/g, "&#39;"));
    expect(elements(cheap, "g").some((group) => group["data-kind"] === "break-even")).toBe(false);

    const plan = structuredClone(cpu);
    const cost = plan.cost!;
    cost.apiUsdPerMillionTokensAtMix = 100;
    cost.breakEvenTokensPerMonth = (cost.monthlyUsd / 100) * 1e6;
    cost.breakEvenReason = "above it self-hosting is cheaper";
    const html = renderHtmlReport([{ label: "now", plan }]);
    const marker = elements(html, "g").find((group) => group["data-kind"] === "break-even")!;
    expect(Number(marker["data-x"])).toBe(cost.breakEvenTokensPerMonth);
    expect(Number(marker["data-y"])).toBe(cost.monthlyUsd);
    const api = elements(html, "circle").filter(
      (circle) =>
        circle["data-x"] !== undefined && Number(circle["data-x"]) > 0 && Number(circle["data-y"]) !== cost.monthlyUsd,
    );
    // The API line's end point lies on tokens × $100 per 1M.
    expect(
      api.some((circle) => Math.abs(Number(circle["data-y"]) - (Number(circle["data-x"]) * 100) / 1e6) < 1e-6),
    ).toBe(true);
  });

  it("reads a plan JSON without this report's added fields (an older checkout's), saying what is missing", () => {
    const old = structuredClone(cpu);
    delete old.projection.prefillByPrompt;
    delete old.projection.prefillPromptTokens;
    delete old.projection.ttftPromptTokens;
    delete old.cost!.apiUsdPerMillionTokensAtMix;
    delete old.cost!.expectedTokensPerMonth;
    delete old.cost!.utilization;
    delete old.cost!.usdPerMillionTokensAtMix;
    const html = renderHtmlReport([
      { label: "v0.1", plan: old },
      { label: "now", plan: cpu },
    ]);
    expect(html).toContain("v0.1: no prefill-by-prompt figures in this plan");
    expect(html).toContain("v0.1: no API line");
    const noCosts = structuredClone(cpu);
    noCosts.cost = null;
    noCosts.costOmitted = "the stack sets no costs";
    expect(renderHtmlReport([{ label: "now", plan: noCosts }])).toContain("No cost chart: no version sets costs.");
  });

  it("references nothing outside the file: no CDN, no script, no external URL", () => {
    const versions: ReportVersion[] = [
      { label: "a", plan: cpu },
      { label: "b", plan: gpus },
    ];
    const html = renderHtmlReport(versions);
    expect(html).not.toMatch(/https?:\/\//);
    expect(html).not.toMatch(/<script|<link|<img|<iframe|@import|\bsrc=|\bhref=/i);
    // Every url() is a reference to a pattern or clip path in the same file.
    expect([...html.matchAll(/url\(([^)]*)\)/g)].every((match) => match[1]!.startsWith("#"))).toBe(true);
    expect(html).toContain(`http-equiv="Content-Security-Policy" content="default-src 'none'`);
    // A standalone SVG needs its namespace, a name and not a fetch; nothing else may be a URL.
    const svg = renderMemorySvg(versions);
    expect(svg.replace(`xmlns="http://www.w3.org/2000/svg"`, "")).not.toMatch(/https?:\/\/|<script|href=/i);
    expect(svg).toMatch(/^<\?xml version="1.0" encoding="UTF-8"\?>\n<svg xmlns="http:\/\/www.w3.org\/2000\/svg" /);
  });

  it("draws one or two versions, no other count", () => {
    expect(() => renderHtmlReport([])).toThrow(/1 or 2 versions/);
    expect(() =>
      renderMemorySvg([
        { label: "a", plan: cpu },
        { label: "b", plan: cpu },
        { label: "c", plan: cpu },
      ]),
    ).toThrow(/1 or 2 versions/);
  });
});

it("a fleet's page adds its replicas, the fleet's cost, the chargeback and each team; a single host's does not", () => {
  const fleet = planJson("cpu-ddr5-fleet");
  const text = unescape(renderHtmlReport([{ label: "cpu-ddr5-fleet", plan: fleet }]));
  expect(text).toContain(
    `2 × 2 slot(s): ${fleet.fleet!.aggregateDecodeTokensPerSecond.toFixed(2)} tok/s decode with every slot busy`,
  );
  expect(text).toContain("$354.43 (2 × $177.21)");
  expect(text).toMatch(/platform: 30 req\/min, \$150\.00\/month buys [\d.]+M tokens; research: 10 req\/min/);
  expect(unescape(renderHtmlReport([{ label: "cpu-ddr5", plan: cpu }]))).not.toContain("fleet monthly cost");
});

describe("writeReport", () => {
  const dir = mkdtempSync(join(tmpdir(), "report-html-"));

  it("writes the file, replacing one that is there", () => {
    const path = join(dir, "report.html");
    writeFileSync(path, "old");
    writeReport(path, "<!DOCTYPE html>");
    expect(readFileSync(path, "utf8")).toBe("<!DOCTYPE html>");
  });

  it.each([
    [
      "a missing folder",
      () => join(dir, "missing", "report.html"),
      /^--html \S+: cannot write the report: its folder \S+missing does not exist$/,
    ],
    ["a folder", () => dir, /^--html \S+: cannot write the report: it is a folder; name a file inside it$/],
    [
      "a path through a file",
      () => join(dir, "report.html", "x.html"),
      /^--html \S+: cannot write the report: a part of the path is a file, not a folder$/,
    ],
  ])("refuses %s with one line naming the flag, the path and why", (_, pathOf, message) => {
    writeFileSync(join(dir, "report.html"), "x");
    const path = pathOf();
    let caught: unknown;
    try {
      writeReport(path, "x");
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(ConfigError);
    const problems = (caught as ConfigError).problems;
    expect(problems).toHaveLength(1);
    expect(problems[0]).toContain(path);
    expect(problems[0]).toMatch(message);
  });

  it("names --svg when writing the memory map", () => {
    expect(() => writeReport(join(dir, "nope", "map.svg"), "x", "--svg")).toThrow(ConfigError);
    try {
      writeReport(join(dir, "nope", "map.svg"), "x", "--svg");
    } catch (error) {
      expect((error as ConfigError).problems[0]).toMatch(/^--svg \S+map\.svg: cannot write the report: /);
    }
  });
});
