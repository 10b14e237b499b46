/**
 * The plan report in a real headless browser (Debian's chromium, driven by playwright-core): for
 * cpu-ddr5, rtx3090x4 and a two-version diff, opened from a file:// URL, the page logs no console
 * error and throws nothing, every device's label is in the DOM, each memory bar's rendered width is
 * its plan bytes × the device's scale within 2 px, and a screenshot is taken. The expected widths
 * are worked out here from the plan JSON and the drawing's track width.
 *
 * Needs /usr/bin/chromium (apt-get install -y chromium fonts-dejavu-core; .ci/run installs it): where
 * it is absent the suite is skipped and its title says why.
 */
import { existsSync, mkdtempSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { chromium, type Browser } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildPlan } from "../../planner/plan";
import { renderHtmlReport, renderMemorySvg, type ReportVersion } from "../../planner/report-html";
import { planToJson, type PlanJson } from "../../planner/report";
import { loadStackConfig } from "../../planner/stack-file";
import { KIND_FIELDS } from "../support/report-kinds";

const CHROMIUM = "/usr/bin/chromium";
const hasChromium = existsSync(CHROMIUM);
const skipped = hasChromium ? "" : ` (SKIPPED: ${CHROMIUM} is absent; apt-get install -y chromium fonts-dejavu-core)`;
// The default reporter shows a skipped suite only as a count: say why where it is seen.
if (!hasChromium) console.warn(`report-html-browser.test.ts${skipped}`);

const planJson = (stack: string): PlanJson => planToJson(buildPlan(stack, loadStackConfig(stack), { lock: null }));

/** What the page reports about itself: bars as drawn, device labels, and what went wrong. */
interface Rendered {
  trackPx: number;
  bars: { device: string; version: string; kind: string; bytes: number; width: number; left: number }[];
  labels: { device: string; text: string }[];
  text: string;
}

/**
 * The little of the DOM the page-side function uses. The project compiles without the DOM library
 * (it is Node code), and pulling it in for one test would type `document` for every file.
 */
interface PageElement {
  getAttribute(name: string): string | null;
  getBoundingClientRect(): { width: number; left: number };
  textContent: string | null;
}
interface PageDocument {
  querySelector(selector: string): PageElement | null;
  querySelectorAll(selector: string): Iterable<PageElement>;
  documentElement: PageElement;
}

/** Opens a file in a fresh page; returns what it rendered and every console error or page error. */
async function open(
  browser: Browser,
  file: string,
  screenshot: string,
): Promise<{ rendered: Rendered; errors: string[] }> {
  const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
  const errors: string[] = [];
  page.on("console", (message) => {
    if (message.type() === "error") errors.push(`console: ${message.text()}`);
  });
  page.on("pageerror", (error) => errors.push(`page: ${error.message}`));
  page.on("requestfailed", (request) => errors.push(`request failed: ${request.url()}`));
  await page.goto(pathToFileURL(file).href, { waitUntil: "load" });
  const rendered = await page.evaluate((): Rendered => {
    const document = (globalThis as unknown as { document: PageDocument }).document;
    const svg = document.querySelector("svg[data-track-px]")!;
    return {
      trackPx: Number(svg.getAttribute("data-track-px")),
      bars: [...document.querySelectorAll("rect[data-kind]")].map((rect) => {
        const box = rect.getBoundingClientRect();
        return {
          device: rect.getAttribute("data-device") ?? "",
          version: rect.getAttribute("data-version") ?? "",
          kind: rect.getAttribute("data-kind") ?? "",
          bytes: Number(rect.getAttribute("data-bytes")),
          width: box.width,
          left: box.left,
        };
      }),
      labels: [...document.querySelectorAll(".device-label")].map((text) => ({
        device: text.getAttribute("data-device") ?? "",
        text: text.textContent ?? "",
      })),
      text: document.documentElement.textContent ?? "",
    };
  });
  // A standalone SVG document has no body to measure a full page by, so it is shot as the viewport.
  await page.screenshot({ path: screenshot, fullPage: file.endsWith(".html") });
  await page.close();
  return { rendered, errors };
}

function expectRenderedMatches(rendered: Rendered, versions: readonly ReportVersion[]): void {
  const names = [...new Set(versions.flatMap((version) => version.plan.devices.map((device) => device.name)))];
  expect(rendered.labels.map((label) => label.device)).toEqual(names);
  let measured = 0;
  for (const name of names) {
    const devices = versions.map((version) => version.plan.devices.find((device) => device.name === name));
    const label = rendered.labels.find((entry) => entry.device === name)!;
    const latest = [...devices].reverse().find((device) => device !== undefined)!;
    expect(label.text).toContain(name);
    expect(label.text).toContain(latest.label);
    const scale =
      rendered.trackPx /
      Math.max(...devices.map((device) => (device ? Math.max(device.capacityBytes, device.plannedBytes) : 0)));
    devices.forEach((device, version) => {
      const bars = rendered.bars.filter((bar) => bar.device === name && bar.version === String(version));
      if (!device) return expect(bars).toEqual([]);
      const capacity = bars.find((bar) => bar.kind === "capacity")!;
      expect(Math.abs(capacity.width - device.capacityBytes * scale)).toBeLessThanOrEqual(2);
      let left = capacity.left;
      for (const [kind, field] of Object.entries(KIND_FIELDS)) {
        const bar = bars.find((entry) => entry.kind === kind);
        if (device[field] === 0) {
          expect(bar).toBeUndefined();
          continue;
        }
        expect(bar!.bytes).toBe(device[field]);
        expect(Math.abs(bar!.width - device[field] * scale), `${name} ${kind} width`).toBeLessThanOrEqual(2);
        expect(Math.abs(bar!.left - left), `${name} ${kind} left`).toBeLessThanOrEqual(2);
        left += device[field] * scale;
        measured++;
      }
    });
  }
  expect(measured).toBeGreaterThan(0);
}

describe.skipIf(!hasChromium)(`plan report in headless chromium${skipped}`, () => {
  const dir = mkdtempSync(join(tmpdir(), "report-browser-"));
  let browser: Browser;
  const cases: Record<string, ReportVersion[]> = {};

  beforeAll(async () => {
    const cpu = planJson("cpu-ddr5");
    const gpus = planJson("rtx3090x4");
    cases["cpu-ddr5"] = [{ label: "now", plan: cpu }];
    cases["rtx3090x4"] = [{ label: "now", plan: gpus }];
    // A diff: a GPU added to the CPU host (the CPU row overlaid, the GPU row only after).
    cases["diff"] = [
      { label: "cpu-ddr5", plan: cpu },
      { label: "epyc-pro6000", plan: planJson("epyc-pro6000") },
    ];
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true });
  }, 120_000);

  afterAll(async () => {
    await browser?.close();
  });

  it.each(["cpu-ddr5", "rtx3090x4", "diff"])(
    "%s: no errors, every label, bar widths within 2 px, a screenshot",
    async (name) => {
      const versions = cases[name]!;
      const file = join(dir, `${name}.html`);
      writeFileSync(file, renderHtmlReport(versions));
      const screenshot = join(dir, `${name}.png`);
      const { rendered, errors } = await open(browser, file, screenshot);
      expect(errors).toEqual([]);
      expectRenderedMatches(rendered, versions);
      for (const version of versions)
        for (const device of version.plan.devices) expect(rendered.text).toContain(device.label);
      expect(readFileSync(screenshot).subarray(1, 4).toString("latin1")).toBe("PNG");
      expect(statSync(screenshot).size).toBeGreaterThan(10_000);
    },
  );

  it("the standalone memory SVG renders the same bars", async () => {
    const versions = cases["diff"]!;
    const file = join(dir, "memory.svg");
    writeFileSync(file, renderMemorySvg(versions));
    const { rendered, errors } = await open(browser, file, join(dir, "memory.png"));
    expect(errors).toEqual([]);
    expectRenderedMatches(rendered, versions);
  });
});
