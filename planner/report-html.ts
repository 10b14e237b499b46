/**
 * The plan as a picture: one self-contained HTML file (inline SVG and CSS, no script, no fetch) with
 * the memory map per device, decode by context depth, prefill by prompt length and monthly cost
 * against the API; and the memory map alone as a standalone SVG. One version is a plan; two are a
 * diff, drawn overlaid (the first "before", hatched or dashed; the second "after", solid).
 *
 * Pure: strings in, strings out; cli/report-file.ts writes them. Everything is read from PlanJson,
 * so a diff's "before" side may come from an older checkout's `plan --json`, which can lack the
 * fields added for this report: those are read as optional and their absence is said in the page.
 */
import type { PlanJson } from "./report";
import { formatDuration, formatGiB, formatTokens, formatUsd } from "./units";

export interface ReportVersion {
  /** Shown in legends and captions, e.g. "main" or "this branch"; escaped, so any text is safe. */
  label: string;
  plan: PlanJson;
}

type DeviceJson = PlanJson["devices"][number];
type ByteField =
  | "modelBytes"
  | "repackBytes"
  | "kvBytes"
  | "recurrentBytes"
  | "computeBytes"
  | "promptCacheBytes"
  | "checkpointBytes"
  | "headroomBytes";

/**
 * The stacked segments in the order llama.cpp's buffers are listed by the text report; `kind` is the
 * bar's data-kind. Okabe–Ito colours, so the kinds stay apart for colour-blind readers.
 */
const KINDS: readonly { kind: string; field: ByteField; name: string; color: string }[] = [
  { kind: "weights", field: "modelBytes", name: "weights", color: "#0072B2" },
  { kind: "repacked", field: "repackBytes", name: "repacked weights", color: "#56B4E9" },
  { kind: "kv", field: "kvBytes", name: "KV cache", color: "#E69F00" },
  { kind: "recurrent", field: "recurrentBytes", name: "recurrent state", color: "#F0E442" },
  { kind: "compute", field: "computeBytes", name: "compute buffers", color: "#D55E00" },
  { kind: "prompt-cache", field: "promptCacheBytes", name: "prompt cache", color: "#009E73" },
  { kind: "checkpoints", field: "checkpointBytes", name: "context checkpoints", color: "#CC79A7" },
  { kind: "headroom", field: "headroomBytes", name: "headroom", color: "#8C8C8C" },
];

/** Width of every chart and of the memory map; the memory bars span it less the side padding. */
const WIDTH = 960;
const PAD = 16;
const TRACK_PX = WIDTH - 2 * PAD;
const FONT = `system-ui, -apple-system, "Segoe UI", "DejaVu Sans", "Liberation Sans", sans-serif`;
/** Ids are prefixed so the memory SVG's patterns cannot clash with anything around it when embedded. */
const ID = "plan-report";

/** Colours of the two versions' lines: before grey and dashed, after (or the only one) blue and solid. */
const VERSION_COLOR = ["#0072B2", "#6B6B6B"] as const;
const API_COLOR = ["#D55E00", "#B07A5A"] as const;

/** Escapes text for HTML and XML alike (element content and quoted attributes). */
export function escapeXml(text: string): string {
  return text.replace(
    /[&<>"']/g,
    (char) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[char]!,
  );
}

/** Coordinates to 3 decimals: exact enough for a 2 px check, short enough to keep files small. */
function px(value: number): string {
  return String(Math.round(value * 1000) / 1000);
}

/**
 * A byte figure as found, 0 when missing: a plan JSON from an older checkout may predate a kind
 * (recurrent state, checkpoints), and a missing kind holds no bytes.
 */
function bytesOf(device: DeviceJson, field: ByteField | "capacityBytes" | "plannedBytes"): number {
  const value: unknown = device[field];
  return typeof value === "number" && Number.isFinite(value) ? value : 0;
}

function checkVersions(versions: readonly ReportVersion[]): void {
  if (versions.length < 1 || versions.length > 2)
    throw new Error(`a plan report draws 1 or 2 versions (a plan or a diff); got ${versions.length}`);
}

/** Role of version i: the only one, or before/after of a diff. */
function isBefore(versions: readonly ReportVersion[], index: number): boolean {
  return versions.length === 2 && index === 0;
}

function title(versions: readonly ReportVersion[]): string {
  if (versions.length === 1) return `Plan for stack ${versions[0]!.plan.stack}`;
  const [before, after] = [versions[0]!, versions[1]!];
  if (before.plan.stack === after.plan.stack)
    return `Plan diff for stack ${after.plan.stack}: ${before.label} → ${after.label}`;
  // Two stacks (--diff-stack): a label that is just the stack's name is not repeated.
  const side = (version: ReportVersion) =>
    version.label === version.plan.stack ? `stack ${version.label}` : `${version.label} (stack ${version.plan.stack})`;
  return `Plan diff: ${side(before)} → ${side(after)}`;
}

// ---------------------------------------------------------------------------------------------
// Memory map

/** Device names in the order first seen, so a device only one version has still gets its row. */
function deviceNames(versions: readonly ReportVersion[]): string[] {
  return [...new Set(versions.flatMap((version) => version.plan.devices.map((device) => device.name)))];
}

function percent(part: number, whole: number): string {
  return whole > 0 ? `${Math.round((part / whole) * 100)}%` : "n/a";
}

function hatchDefs(): string {
  // Before-bars are drawn in diagonal stripes of their kind's colour over a pale wash of it, so the
  // kinds keep their colours and "before" reads at a glance, with no script and no image.
  return `<defs>${KINDS.map(
    (kind) =>
      `<pattern id="${ID}-hatch-${kind.kind}" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="6" height="6" fill="${kind.color}" fill-opacity="0.2"/><rect width="2.5" height="6" fill="${kind.color}"/></pattern>`,
  ).join("")}</defs>`;
}

interface LegendItem {
  swatch: string;
  text: string;
}

/** Legend items in columns of fixed width, wrapping; returns the SVG and the height used. */
function svgLegend(items: readonly LegendItem[], y: number): { svg: string; height: number } {
  const column = 186;
  const perRow = Math.max(1, Math.floor(TRACK_PX / column));
  const out: string[] = [];
  items.forEach((item, index) => {
    const x = PAD + (index % perRow) * column;
    const rowY = y + Math.floor(index / perRow) * 20;
    out.push(
      `<g class="legend-item" transform="translate(${x},${rowY})">${item.swatch}<text x="20" y="11" class="small">${escapeXml(item.text)}</text></g>`,
    );
  });
  return { svg: out.join(""), height: Math.ceil(items.length / perRow) * 20 };
}

function memorySvgBody(versions: readonly ReportVersion[], standalone: boolean): string {
  const diff = versions.length === 2;
  const names = deviceNames(versions);
  const out: string[] = [];
  let y = PAD;
  out.push(`<text x="${PAD}" y="${y + 14}" class="heading">${escapeXml(`Memory map — ${title(versions)}`)}</text>`);
  y += 28;

  const legend = svgLegend(memoryLegendItems(versions), y);
  out.push(legend.svg);
  y += legend.height + 14;

  for (const name of names) y = pushDeviceRows(out, versions, name, y);
  const height = Math.ceil(y + PAD / 2);
  const style = `<style>text{font-family:${FONT};fill:#1F2328}.heading{font-size:16px;font-weight:600}.device-label{font-size:14px}.device-name{font-weight:600}.small{font-size:12px}.over{fill:#B3261E;font-weight:600}.missing{font-style:italic;fill:#6B6B6B}</style>`;
  const namespace = standalone ? ` xmlns="http://www.w3.org/2000/svg"` : "";
  return `<svg${namespace} class="memory-map" width="${WIDTH}" height="${height}" viewBox="0 0 ${WIDTH} ${height}" role="img" aria-label="${escapeXml(`Memory map — ${title(versions)}`)}" data-track-px="${TRACK_PX}" data-track-x="${PAD}">${style}${diff ? hatchDefs() : ""}<rect width="${WIDTH}" height="${height}" fill="#FFFFFF"/>${out.join("")}</svg>`;
}

/** The memory map's legend: the kinds any version holds, free space, the capacity mark, and in a diff the two fills. */
function memoryLegendItems(versions: readonly ReportVersion[]): LegendItem[] {
  const present = KINDS.filter((kind) =>
    versions.some((version) => version.plan.devices.some((device) => bytesOf(device, kind.field) > 0)),
  );
  const legendItems: LegendItem[] = [
    ...present.map((kind) => ({ swatch: `<rect width="14" height="14" fill="${kind.color}"/>`, text: kind.name })),
    { swatch: `<rect width="14" height="14" fill="#EEF0F3" stroke="#B8BEC6"/>`, text: "free (capacity not planned)" },
    { swatch: `<rect x="6" y="-2" width="2" height="18" fill="#1F2328"/>`, text: "capacity" },
  ];
  if (versions.length === 2) {
    legendItems.push({
      swatch: `<rect width="14" height="14" fill="url(#${ID}-hatch-weights)"/>`,
      text: `striped: ${versions[0]!.label}`,
    });
    legendItems.push({
      swatch: `<rect width="14" height="14" fill="${KINDS[0]!.color}"/>`,
      text: `solid: ${versions[1]!.label}`,
    });
  }
  return legendItems;
}

/** What every bar of one device shares: the versions, the device's name and its px-per-byte scale. */
interface DeviceBarContext {
  versions: readonly ReportVersion[];
  name: string;
  scale: number;
}

/** One device's label and one bar per version, from y; returns the y below them. */
function pushDeviceRows(out: string[], versions: readonly ReportVersion[], name: string, y: number): number {
  const found = versions.map((version) => version.plan.devices.find((device) => device.name === name));
  const maxBytes = Math.max(
    ...found.map((device) =>
      device ? Math.max(bytesOf(device, "capacityBytes"), bytesOf(device, "plannedBytes")) : 0,
    ),
  );
  // One scale per device: a GPU's 24 GiB next to 384 GiB of RAM would be a sliver on a shared one.
  // The device's largest figure (capacity or, when over, planned) across the versions spans the track.
  const scale = maxBytes > 0 ? TRACK_PX / maxBytes : 0;
  const latest = [...found].reverse().find((device) => device !== undefined)!;
  const labels = [...new Set(found.flatMap((device) => (device ? [device.label] : [])))];
  out.push(
    `<text x="${PAD}" y="${y + 14}" class="device-label" data-device="${escapeXml(name)}"><tspan class="device-name">${escapeXml(name)}</tspan> · ${escapeXml(latest.label)}${labels.length > 1 ? escapeXml(` (${versions[0]!.label}: ${labels[0]})`) : ""}</text>`,
  );
  y += 22;
  const context: DeviceBarContext = { versions, name, scale };
  found.forEach((device, index) => {
    y = pushDeviceBar(out, context, device, index, y);
  });
  return y + 10;
}

/** Version index's caption and stacked bar for the device (or a note that it lacks it); returns the y below. */
function pushDeviceBar(
  out: string[],
  context: DeviceBarContext,
  device: DeviceJson | undefined,
  index: number,
  y: number,
): number {
  const { versions, name, scale } = context;
  const version = versions[index]!;
  const prefix = versions.length === 2 ? `${version.label}: ` : "";
  if (!device) {
    out.push(
      `<text x="${PAD}" y="${y + 11}" class="small missing" data-device="${escapeXml(name)}" data-version="${index}">${escapeXml(`${prefix}no such device in this version`)}</text>`,
    );
    return y + 20;
  }
  const capacity = bytesOf(device, "capacityBytes");
  const planned = bytesOf(device, "plannedBytes");
  const fits = planned <= capacity;
  const caption = `${prefix}${formatGiB(planned)} planned of ${formatGiB(capacity)} (${percent(planned, capacity)})${fits ? `, ${formatGiB(capacity - planned)} free` : ` — DOES NOT FIT, ${formatGiB(planned - capacity)} over`}`;
  out.push(`<text x="${PAD}" y="${y + 11}" class="small${fits ? "" : " over"}">${escapeXml(caption)}</text>`);
  y += 16;
  const barY = y;
  const height = 18;
  const attrs = (kind: string, bytes: number) =>
    `data-device="${escapeXml(name)}" data-version="${index}" data-version-label="${escapeXml(version.label)}" data-kind="${kind}" data-bytes="${bytes}" data-scale-px-per-byte="${scale}"`;
  out.push(
    `<g class="bar" data-device="${escapeXml(name)}" data-version="${index}" data-planned-bytes="${planned}" data-capacity-bytes="${capacity}">`,
  );
  out.push(
    `<rect class="capacity" x="${PAD}" y="${barY}" width="${px(capacity * scale)}" height="${height}" fill="#EEF0F3" ${attrs("capacity", capacity)}><title>${escapeXml(`${prefix}${name} capacity ${formatGiB(capacity, 2)}`)}</title></rect>`,
  );
  let x = PAD;
  for (const kind of KINDS) {
    const bytes = bytesOf(device, kind.field);
    if (bytes <= 0) continue;
    const width = bytes * scale;
    const fill = isBefore(versions, index) ? `url(#${ID}-hatch-${kind.kind})` : kind.color;
    out.push(
      `<rect class="segment" x="${px(x)}" y="${barY}" width="${px(width)}" height="${height}" fill="${fill}" ${attrs(kind.kind, bytes)}><title>${escapeXml(`${prefix}${name} ${kind.name}: ${formatGiB(bytes, 2)} (${percent(bytes, capacity)} of capacity)`)}</title></rect>`,
    );
    x += width;
  }
  // The outline and the capacity mark carry no data-kind: they are drawn for the eye, not measured.
  out.push(
    `<rect x="${PAD + 0.5}" y="${barY + 0.5}" width="${px(Math.max(0, capacity * scale - 1))}" height="${height - 1}" fill="none" stroke="#B8BEC6"/>`,
  );
  out.push(
    `<rect x="${px(PAD + capacity * scale - 1)}" y="${barY - 3}" width="2" height="${height + 6}" fill="#1F2328"/>`,
  );
  out.push(`</g>`);
  return y + height + 8;
}

/**
 * The memory map alone, as a standalone SVG file: per device, one stacked bar per version of its
 * planned bytes by kind against its capacity. Each measured rect carries data-device, data-version,
 * data-kind, data-bytes and data-scale-px-per-byte (its width is bytes × scale; the scale is the
 * svg's data-track-px ÷ the device's largest capacity or planned bytes across the versions).
 */
export function renderMemorySvg(versions: readonly ReportVersion[]): string {
  checkVersions(versions);
  return `<?xml version="1.0" encoding="UTF-8"?>\n${memorySvgBody(versions, true)}\n`;
}

// ---------------------------------------------------------------------------------------------
// Line charts

interface Point {
  x: number;
  y: number;
  /** Tooltip text. */
  note: string;
}

interface Series {
  name: string;
  kind: string;
  version: number;
  color: string;
  dashed: boolean;
  points: Point[];
}

interface Marker {
  x: number;
  y: number;
  label: string;
  kind: string;
  version: number;
  color: string;
}

interface VerticalLine {
  x: number;
  label: string;
  kind: string;
  version: number;
  color: string;
}

interface Axis {
  label: string;
  log: boolean;
  ticks: number[];
  format: (value: number) => string;
}

interface ChartSpec {
  kind: string;
  title: string;
  width: number;
  height: number;
  x: Axis;
  y: Axis;
  series: Series[];
  markers: Marker[];
  verticals: VerticalLine[];
}

/** 0 to a round maximum in about five steps of 1, 2, 2.5 or 5 × 10^n. */
function linearTicks(max: number): number[] {
  if (!(max > 0)) return [0, 1];
  const raw = max / 5;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * magnitude).find((candidate) => candidate >= raw) ?? 10 * magnitude;
  const ticks: number[] = [];
  for (let i = 0; i * step < max + step * 0.999; i++) ticks.push(Number((i * step).toPrecision(12)));
  return ticks;
}

/** Token axes in binary steps (4k, 8k, 16k …), the sizes contexts and prompts are set in. */
function tokenTicks(max: number): number[] {
  if (!(max > 0)) return [0, 1];
  const step = 2 ** Math.max(0, Math.ceil(Math.log2(max / 5)));
  const ticks: number[] = [];
  for (let i = 0; i * step < max + step * 0.999; i++) ticks.push(i * step);
  return ticks;
}

/** Powers of two spanning [min, max], at most about seven of them. */
function log2Ticks(min: number, max: number): number[] {
  const low = Math.floor(Math.log2(min));
  const high = Math.ceil(Math.log2(max));
  const every = Math.max(1, Math.ceil((high - low) / 6));
  const ticks: number[] = [];
  for (let power = low; ; power += every) {
    ticks.push(2 ** power);
    if (power >= high) return ticks;
  }
}

function formatTokenTick(tokens: number): string {
  if (tokens >= 1024 && tokens % 1024 === 0) return `${tokens / 1024}k`;
  return formatTokens(tokens);
}

function decimalsFor(ticks: readonly number[]): number {
  const step = ticks.length > 1 ? ticks[1]! - ticks[0]! : 1;
  return Math.min(3, Math.max(0, -Math.floor(Math.log10(step))));
}

function rateFormat(ticks: readonly number[]): (value: number) => string {
  const decimals = decimalsFor(ticks);
  return (value) => value.toFixed(decimals);
}

/** A chart's plot area and its value-to-pixel scales. */
interface Frame {
  left: number;
  top: number;
  plotWidth: number;
  plotHeight: number;
  sx: (value: number) => number;
  sy: (value: number) => number;
}

function chartFrame(spec: ChartSpec): Frame {
  const left = 64;
  const right = 20;
  const top = 40;
  const bottom = 48;
  const plotWidth = spec.width - left - right;
  const plotHeight = spec.height - top - bottom;
  const xMin = spec.x.ticks[0]!;
  const xMax = spec.x.ticks.at(-1)!;
  const yMax = spec.y.ticks.at(-1)!;
  const sx = (value: number) => {
    const fraction = spec.x.log
      ? (Math.log2(value) - Math.log2(xMin)) / (Math.log2(xMax) - Math.log2(xMin))
      : (value - xMin) / (xMax - xMin || 1);
    return left + fraction * plotWidth;
  };
  const sy = (value: number) => top + plotHeight - (value / (yMax || 1)) * plotHeight;
  return { left, top, plotWidth, plotHeight, sx, sy };
}

function chartSvg(spec: ChartSpec): string {
  const frame = chartFrame(spec);
  const clip = `${ID}-clip-${spec.kind}`;
  const out: string[] = [];
  pushChartAxes(out, spec, frame, clip);
  out.push(`<g clip-path="url(#${clip})">`);
  pushVerticals(out, spec, frame);
  pushSeries(out, spec, frame);
  pushMarkers(out, spec, frame);
  out.push(`</g>`);
  return `<svg class="chart" data-chart="${spec.kind}" width="${spec.width}" height="${spec.height}" viewBox="0 0 ${spec.width} ${spec.height}" role="img" aria-label="${escapeXml(spec.title)}">${out.join("")}</svg>`;
}

/** The title, the clip path, the grid with its ticks, the axes and their labels. */
function pushChartAxes(out: string[], spec: ChartSpec, frame: Frame, clip: string): void {
  const { left, top, plotWidth, plotHeight, sx, sy } = frame;
  out.push(`<text x="${left}" y="22" class="heading">${escapeXml(spec.title)}</text>`);
  out.push(
    `<defs><clipPath id="${clip}"><rect x="${left - 8}" y="${top - 8}" width="${plotWidth + 16}" height="${plotHeight + 16}"/></clipPath></defs>`,
  );
  for (const tick of spec.y.ticks) {
    const y = px(sy(tick));
    out.push(
      `<line x1="${left}" x2="${left + plotWidth}" y1="${y}" y2="${y}" class="grid"/><text x="${left - 6}" y="${y}" dy="4" text-anchor="end" class="tick">${escapeXml(spec.y.format(tick))}</text>`,
    );
  }
  for (const tick of spec.x.ticks) {
    const x = px(sx(tick));
    out.push(
      `<line x1="${x}" x2="${x}" y1="${top + plotHeight}" y2="${top + plotHeight + 4}" class="axis"/><text x="${x}" y="${top + plotHeight + 17}" text-anchor="middle" class="tick">${escapeXml(spec.x.format(tick))}</text>`,
    );
  }
  out.push(
    `<line x1="${left}" x2="${left + plotWidth}" y1="${top + plotHeight}" y2="${top + plotHeight}" class="axis"/><line x1="${left}" x2="${left}" y1="${top}" y2="${top + plotHeight}" class="axis"/>`,
  );
  out.push(
    `<text x="${left + plotWidth / 2}" y="${spec.height - 8}" text-anchor="middle" class="axis-label">${escapeXml(spec.x.label)}</text>`,
  );
  out.push(
    `<text transform="translate(16,${top + plotHeight / 2}) rotate(-90)" text-anchor="middle" class="axis-label">${escapeXml(spec.y.label)}</text>`,
  );
}

function pushVerticals(out: string[], spec: ChartSpec, frame: Frame): void {
  const { left, top, plotWidth, plotHeight, sx } = frame;
  // Vertical lines' labels sit on staggered rows, in x order, so lines close together stay legible.
  [...spec.verticals]
    .sort((a, b) => a.x - b.x)
    .forEach((line, index) => {
      const x = sx(line.x);
      const anchor = x > left + plotWidth * 0.8 ? "end" : "start";
      out.push(
        `<g class="vertical" data-kind="${line.kind}" data-version="${line.version}" data-x="${line.x}"><line x1="${px(x)}" x2="${px(x)}" y1="${top}" y2="${top + plotHeight}" stroke="${line.color}" stroke-dasharray="2 3"/><text x="${px(x)}" y="${top + 10 + (index % 4) * 13}" dx="${anchor === "end" ? -4 : 4}" text-anchor="${anchor}" class="tick" style="fill: ${line.color}">${escapeXml(line.label)}</text></g>`,
      );
    });
}

function pushSeries(out: string[], spec: ChartSpec, frame: Frame): void {
  const { sx, sy } = frame;
  for (const series of spec.series) {
    const path = series.points.map((point) => `${px(sx(point.x))},${px(sy(point.y))}`).join(" ");
    out.push(`<g class="series" data-kind="${series.kind}" data-version="${series.version}">`);
    if (series.points.length > 1)
      out.push(
        `<polyline points="${path}" fill="none" stroke="${series.color}" stroke-width="2"${series.dashed ? ` stroke-dasharray="6 4"` : ""}/>`,
      );
    for (const point of series.points) {
      out.push(
        `<circle cx="${px(sx(point.x))}" cy="${px(sy(point.y))}" r="3.5" fill="${series.dashed ? "#FFFFFF" : series.color}" stroke="${series.color}" stroke-width="1.5" data-x="${point.x}" data-y="${point.y}"><title>${escapeXml(point.note)}</title></circle>`,
      );
    }
    out.push(`</g>`);
  }
}

function pushMarkers(out: string[], spec: ChartSpec, frame: Frame): void {
  const { left, plotWidth, sx, sy } = frame;
  for (const marker of spec.markers) {
    const x = sx(marker.x);
    const y = sy(marker.y);
    const anchor = x > left + plotWidth * 0.7 ? "end" : "start";
    out.push(
      `<g class="marker" data-kind="${marker.kind}" data-version="${marker.version}" data-x="${marker.x}" data-y="${marker.y}"><circle cx="${px(x)}" cy="${px(y)}" r="6" fill="none" stroke="${marker.color}" stroke-width="2.5"/><text x="${px(x)}" y="${px(y)}" dx="${anchor === "end" ? -9 : 9}" dy="-9" text-anchor="${anchor}" class="tick marker-label" style="fill: ${marker.color}">${escapeXml(marker.label)}</text><title>${escapeXml(marker.label)}</title></g>`,
    );
  }
}

/** An HTML legend under a chart: a line swatch (dashed for before) and the series' name. */
function htmlLegend(series: readonly Series[]): string {
  return `<ul class="legend">${series
    .map(
      (entry) =>
        `<li><span class="swatch" style="border-top: 3px ${entry.dashed ? "dashed" : "solid"} ${entry.color}"></span>${escapeXml(entry.name)}</li>`,
    )
    .join("")}</ul>`;
}

function notes(lines: readonly string[]): string {
  return lines.length ? `<ul class="notes">${lines.map((line) => `<li>${escapeXml(line)}</li>`).join("")}</ul>` : "";
}

function seriesName(versions: readonly ReportVersion[], index: number, what: string): string {
  return versions.length === 2 ? `${versions[index]!.label}: ${what}` : what;
}

const HALF_WIDTH = (WIDTH - 24) / 2;

function decodeChart(versions: readonly ReportVersion[]): string {
  const series: Series[] = versions.map((version, index) => ({
    name: seriesName(versions, index, `decode at depth (${version.plan.fits ? version.plan.mode : "does not fit"})`),
    kind: "decode",
    version: index,
    color: VERSION_COLOR[isBefore(versions, index) ? 1 : 0],
    dashed: isBefore(versions, index),
    points: version.plan.projection.decodeByDepth.map((point) => ({
      x: point.depthTokens,
      y: point.tokensPerSecond,
      note: `${seriesName(versions, index, "")}${point.tokensPerSecond.toFixed(2)} tok/s at depth ${point.depthTokens} tokens`,
    })),
  }));
  const all = series.flatMap((entry) => entry.points);
  const xTicks = tokenTicks(Math.max(1, ...all.map((point) => point.x)));
  const yTicks = linearTicks(Math.max(0, ...all.map((point) => point.y)) * 1.05);
  const svg = chartSvg({
    kind: "decode",
    title: "Decode vs context depth",
    width: HALF_WIDTH,
    height: 300,
    x: { label: "tokens already in the context", log: false, ticks: xTicks, format: formatTokenTick },
    y: { label: "decode tokens/s (one slot)", log: false, ticks: yTicks, format: rateFormat(yTicks) },
    series,
    markers: [],
    verticals: [],
  });
  return `<figure>${svg}${htmlLegend(series)}</figure>`;
}

function prefillChart(versions: readonly ReportVersion[]): string {
  const missing: string[] = [];
  const series: Series[] = [];
  versions.forEach((version, index) => {
    const points = version.plan.projection.prefillByPrompt;
    if (!points || points.length === 0) {
      missing.push(
        `${seriesName(versions, index, "")}no prefill-by-prompt figures in this plan (its JSON was written by a kit without them)`,
      );
      return;
    }
    series.push({
      name: seriesName(versions, index, "prefill for a prompt of this length"),
      kind: "prefill",
      version: index,
      color: VERSION_COLOR[isBefore(versions, index) ? 1 : 0],
      dashed: isBefore(versions, index),
      points: points.map((point) => ({
        x: point.promptTokens,
        y: point.tokensPerSecond,
        note: `${seriesName(versions, index, "")}${point.tokensPerSecond.toFixed(2)} tok/s for a ${point.promptTokens}-token prompt: ${formatDuration(point.seconds)} to the first token`,
      })),
    });
  });
  const all = series.flatMap((entry) => entry.points);
  const xs = all.map((point) => point.x).filter((x) => x > 0);
  const min = xs.length ? Math.min(...xs) : 512;
  const max = xs.length ? Math.max(...xs) : 32768;
  // Prompt lengths run from hundreds to tens of thousands of tokens: on a linear axis the short ones
  // pile up at the origin, so a log axis, in powers of two, once they span more than 4×.
  const log = max / min > 4;
  const xTicks = log ? log2Ticks(min, max) : tokenTicks(max);
  const yTicks = linearTicks(Math.max(0, ...all.map((point) => point.y)) * 1.05);
  const svg = chartSvg({
    kind: "prefill",
    title: "Prefill vs prompt length",
    width: HALF_WIDTH,
    height: 300,
    x: { label: `prompt tokens${log ? " (log scale)" : ""}`, log, ticks: xTicks, format: formatTokenTick },
    y: { label: "prefill tokens/s", log: false, ticks: yTicks, format: rateFormat(yTicks) },
    series,
    markers: [],
    verticals: [],
  });
  return `<figure>${svg}${htmlLegend(series)}${notes(missing)}</figure>`;
}

/**
 * The API's price per 1M tokens at the stack's mix. Older plan JSON lacks the field; the expected
 * volume's API bill, or the break-even volume, gives the same slope when present.
 */
function apiRate(cost: NonNullable<PlanJson["cost"]>): number | undefined {
  if (cost.apiUsdPerMillionTokensAtMix !== undefined) return cost.apiUsdPerMillionTokensAtMix;
  if (cost.expectedTokensPerMonth && cost.expectedTokensPerMonth > 0)
    return (cost.apiMonthlyUsdAtExpected / cost.expectedTokensPerMonth) * 1e6;
  if (cost.breakEvenTokensPerMonth && cost.breakEvenTokensPerMonth > 0)
    return (cost.monthlyUsd / cost.breakEvenTokensPerMonth) * 1e6;
  return undefined;
}

/** A version that sets costs, with the API's price per 1M tokens at its mix when that is known. */
interface PricedVersion {
  index: number;
  cost: NonNullable<PlanJson["cost"]>;
  rate: number | undefined;
}

function costChart(versions: readonly ReportVersion[]): string {
  const lines: string[] = [];
  const priced = pricedVersions(versions, lines);
  if (priced.length === 0) return `<p class="note">No cost chart: no version sets costs.</p>${notes(lines)}`;

  const { xTicks, xEnd, yTicks } = costTicks(priced);
  const series: Series[] = [];
  const markers: Marker[] = [];
  const verticals: VerticalLine[] = [];
  for (const entry of priced) {
    series.push(...costSeries(versions, entry, xEnd));
    markers.push(...breakEvenMarkers(versions, entry));
    verticals.push(...volumeVerticals(versions, entry));
  }
  if (priced.every(({ cost }) => cost.breakEvenTokensPerMonth === null))
    lines.unshift("The lines do not meet within what the host can serve: there is no break-even point.");
  const svg = chartSvg({
    kind: "cost",
    title: "Monthly cost vs tokens per month",
    width: WIDTH,
    height: 340,
    x: {
      label: "tokens per month (input + output at the stack's mix)",
      log: false,
      ticks: xTicks,
      format: formatTokens,
    },
    y: { label: "US$ per month", log: false, ticks: yTicks, format: (value) => `$${value.toLocaleString("en-US")}` },
    series,
    markers,
    verticals,
  });
  return `<figure>${svg}${htmlLegend(series)}${notes(lines)}</figure>`;
}

/** The versions that set costs; says in lines, per version, its break-even or why it has no costs or API line. */
function pricedVersions(versions: readonly ReportVersion[], lines: string[]): PricedVersion[] {
  return versions.flatMap((version, index) => {
    const prefix = seriesName(versions, index, "");
    if (!version.plan.cost) {
      lines.push(`${prefix}no costs: ${version.plan.costOmitted ?? "the stack sets no costs"}`);
      return [];
    }
    const cost = version.plan.cost;
    lines.push(
      cost.breakEvenTokensPerMonth === null
        ? `${prefix}no break-even: ${cost.breakEvenReason}`
        : `${prefix}break-even at ${formatTokens(cost.breakEvenTokensPerMonth)} tokens/month: ${cost.breakEvenReason}`,
    );
    const rate = apiRate(cost);
    if (rate === undefined) lines.push(`${prefix}no API line: this plan's JSON carries no API price at its mix`);
    return [{ index, cost, rate }];
  });
}

/** Axes wide enough for every capacity, break-even and expected volume, and tall enough for both lines. */
function costTicks(priced: readonly PricedVersion[]): { xTicks: number[]; xEnd: number; yTicks: number[] } {
  const xMax =
    Math.max(
      ...priced.flatMap(({ cost }) => [
        cost.capacityTokensPerMonth,
        cost.breakEvenTokensPerMonth ?? 0,
        cost.expectedTokensPerMonth ?? 0,
      ]),
    ) * 1.1;
  const xTicks = linearTicks(xMax > 0 ? xMax : 1);
  const xEnd = xTicks.at(-1)!;
  const yTop = Math.max(
    ...priced.flatMap(({ cost, rate }) => [cost.monthlyUsd, rate === undefined ? 0 : (xEnd * rate) / 1e6]),
  );
  const yTicks = linearTicks(yTop * 1.05);
  return { xTicks, xEnd, yTicks };
}

/** A version's flat self-hosted line up to its capacity and, when priced, the API's line from the origin. */
function costSeries(versions: readonly ReportVersion[], entry: PricedVersion, xEnd: number): Series[] {
  const { index, cost, rate } = entry;
  const before = isBefore(versions, index);
  const color = VERSION_COLOR[before ? 1 : 0];
  const apiColor = API_COLOR[before ? 1 : 0];
  const capacity = cost.capacityTokensPerMonth;
  const series: Series[] = [];
  series.push({
    name: seriesName(
      versions,
      index,
      `self-hosted: ${formatUsd(cost.monthlyUsd)}/month, up to its capacity of ${formatTokens(capacity)} tokens/month`,
    ),
    kind: "self-hosted",
    version: index,
    color,
    dashed: before,
    points: [
      {
        x: 0,
        y: cost.monthlyUsd,
        note: `${seriesName(versions, index, "")}self-hosted ${formatUsd(cost.monthlyUsd)}/month at any volume`,
      },
      {
        x: capacity,
        y: cost.monthlyUsd,
        note: `${seriesName(versions, index, "")}capacity ${formatTokens(capacity)} tokens/month${cost.utilization !== undefined ? ` at ${Math.round(cost.utilization * 100)}% utilization` : ""}`,
      },
    ],
  });
  if (rate !== undefined) {
    series.push({
      name: seriesName(versions, index, `API: $${rate.toFixed(3)} per 1M tokens at the stack's mix`),
      kind: "api",
      version: index,
      color: apiColor,
      dashed: before,
      points: [
        { x: 0, y: 0, note: "API: $0 at no volume" },
        {
          x: xEnd,
          y: (xEnd * rate) / 1e6,
          note: `${seriesName(versions, index, "")}API ${formatUsd((xEnd * rate) / 1e6)}/month at ${formatTokens(xEnd)} tokens/month`,
        },
      ],
    });
  }
  return series;
}

function breakEvenMarkers(versions: readonly ReportVersion[], entry: PricedVersion): Marker[] {
  const { index, cost } = entry;
  const markers: Marker[] = [];
  if (cost.breakEvenTokensPerMonth !== null) {
    markers.push({
      x: cost.breakEvenTokensPerMonth,
      y: cost.monthlyUsd,
      label: `${seriesName(versions, index, "")}break-even ${formatTokens(cost.breakEvenTokensPerMonth)} tokens/month`,
      kind: "break-even",
      version: index,
      color: "#1F2328",
    });
  }
  return markers;
}

/** The version's capacity and, when set, its expected volume, as vertical lines. */
function volumeVerticals(versions: readonly ReportVersion[], entry: PricedVersion): VerticalLine[] {
  const { index, cost } = entry;
  const verticals: VerticalLine[] = [];
  verticals.push({
    x: cost.capacityTokensPerMonth,
    label: `${seriesName(versions, index, "")}capacity`,
    kind: "capacity",
    version: index,
    color: VERSION_COLOR[isBefore(versions, index) ? 1 : 0],
  });
  if (cost.expectedTokensPerMonth !== undefined)
    verticals.push({
      x: cost.expectedTokensPerMonth,
      label: `${seriesName(versions, index, "")}expected`,
      kind: "expected",
      version: index,
      color: "#6B6B6B",
    });
  return verticals;
}

// ---------------------------------------------------------------------------------------------
// The page

interface Row {
  name: string;
  cells: string[];
}

/** Builds a row's cells: one figure per version, read from its plan. */
type CellsOf = (each: (plan: PlanJson) => string) => string[];

function summaryRows(versions: readonly ReportVersion[]): Row[] {
  const cell: CellsOf = (each) => versions.map((version) => each(version.plan));
  return [...planRows(cell), ...speedRows(cell), ...costRows(cell), ...fleetRows(versions)];
}

/** What is planned: the stack, the model, the host and the verdict. */
function planRows(cell: CellsOf): Row[] {
  return [
    { name: "stack", cells: cell((plan) => plan.stack) },
    {
      name: "model",
      cells: cell(
        (plan) =>
          `${plan.model.repo} ${plan.model.tier} (${formatGiB(plan.model.bytes)}, tensors from the ${plan.model.tensorSource})`,
      ),
    },
    {
      name: "host",
      cells: cell(
        (plan) =>
          `${plan.host.label} (${plan.host.kind}; ${formatGiB(plan.host.ramBytes)} RAM${plan.host.gpus.length ? `; ${plan.host.gpus.join(", ")}` : ""})`,
      ),
    },
    {
      name: "verdict",
      cells: cell((plan) => (plan.fits ? `fits (${plan.mode})` : `DOES NOT FIT — ${plan.refusal ?? ""}`)),
    },
  ];
}

function speedRows(cell: CellsOf): Row[] {
  const projection = (plan: PlanJson) => plan.projection;
  return [
    {
      name: "decode",
      cells: cell(
        (plan) =>
          `${projection(plan).decodeTokensPerSecond.toFixed(2)} tok/s at depth ${projection(plan).decodeDepthTokens}`,
      ),
    },
    {
      name: "prefill",
      cells: cell(
        (plan) =>
          `${projection(plan).prefillTokensPerSecond.toFixed(2)} tok/s${projection(plan).prefillPromptTokens ? ` for a ${projection(plan).prefillPromptTokens}-token prompt` : ""}`,
      ),
    },
    {
      name: "time to first token",
      cells: cell(
        (plan) =>
          `${formatDuration(projection(plan).ttft32kSeconds)}${projection(plan).ttftPromptTokens ? ` for a ${projection(plan).ttftPromptTokens}-token prompt` : ""}`,
      ),
    },
  ];
}

function costRows(cell: CellsOf): Row[] {
  return [
    {
      name: "monthly cost",
      cells: cell((plan) =>
        plan.cost ? formatUsd(plan.cost.monthlyUsd) : `omitted — ${plan.costOmitted ?? "no costs"}`,
      ),
    },
    {
      name: "per 1M output tokens",
      cells: cell((plan) => (plan.cost ? formatUsd(plan.cost.usdPerMillionOutputTokens) : "-")),
    },
    {
      name: "API per 1M tokens at the mix",
      cells: cell((plan) =>
        plan.cost && apiRate(plan.cost) !== undefined ? `$${apiRate(plan.cost)!.toFixed(3)}` : "-",
      ),
    },
    {
      name: "break-even",
      cells: cell((plan) =>
        plan.cost
          ? plan.cost.breakEvenTokensPerMonth === null
            ? "none"
            : `${formatTokens(plan.cost.breakEvenTokensPerMonth)} tokens/month`
          : "-",
      ),
    },
  ];
}

/** A fleet's rows (replicas, its cost, the chargeback, the teams), when either version has one. */
function fleetRows(versions: readonly ReportVersion[]): Row[] {
  if (!versions.some((version) => version.plan.fleet || version.plan.teams)) return [];
  const cell = (each: (plan: PlanJson) => string) => versions.map((version) => each(version.plan));
  return [
    {
      name: "replicas",
      cells: cell(({ fleet }) =>
        fleet
          ? `${fleet.replicas} × ${fleet.slotsPerReplica} slot(s): ${fleet.aggregateDecodeTokensPerSecond.toFixed(2)} tok/s decode with every slot busy (${fleet.perReplica.perSlotDecodeTokensPerSecond.toFixed(2)} per request)`
          : "one host",
      ),
    },
    {
      name: "fleet monthly cost",
      cells: cell(({ fleet }) =>
        fleet?.monthlyUsd != null
          ? `${formatUsd(fleet.monthlyUsd)} (${fleet.replicas} × ${formatUsd(fleet.perReplica.monthlyUsd ?? 0)})`
          : "-",
      ),
    },
    {
      name: "chargeback per 1M at the mix",
      cells: cell(({ fleet }) =>
        fleet?.chargeback
          ? `${formatUsd(fleet.chargeback.usdPerMillionAtMix)} here, ${formatUsd(fleet.chargeback.apiUsdPerMillionAtMix)} at the API`
          : "-",
      ),
    },
    {
      name: "teams",
      cells: cell(({ teams }) =>
        teams && teams.length > 0
          ? teams
              .map(
                (team) =>
                  `${team.name}: ${team.rpm} req/min${team.monthlyBudgetUsd !== null ? `, ${formatUsd(team.monthlyBudgetUsd)}/month buys ${team.budgetTokensPerMonth === null ? "?" : formatTokens(team.budgetTokensPerMonth)} tokens` : ""}`,
              )
              .join("; ")
          : "none",
      ),
    },
  ];
}

function summaryTable(versions: readonly ReportVersion[]): string {
  const head =
    versions.length === 2
      ? `<thead><tr><th></th>${versions.map((version) => `<th>${escapeXml(version.label)}</th>`).join("")}</tr></thead>`
      : "";
  const body = summaryRows(versions)
    .map((row) => {
      // In a diff a changed figure is marked, so the eye lands on what the change does.
      const changed = row.cells.length === 2 && row.cells[0] !== row.cells[1];
      return `<tr${changed ? ` class="changed"` : ""}><th scope="row">${escapeXml(row.name)}</th>${row.cells.map((text) => `<td>${escapeXml(text)}</td>`).join("")}</tr>`;
    })
    .join("");
  return `<table class="summary">${head}<tbody>${body}</tbody></table>`;
}

function argsSection(versions: readonly ReportVersion[]): string {
  return versions
    .map(
      (version) =>
        `<details><summary>${escapeXml(versions.length === 2 ? `llama-server flags: ${version.label}` : "llama-server flags")}</summary><pre>${escapeXml(["llama-server", ...version.plan.llamaServerArgs].join(" "))}</pre></details>`,
    )
    .join("");
}

const PAGE_CSS = `
:root { color-scheme: light; }
body { font-family: ${FONT}; color: #1F2328; background: #FFFFFF; margin: 24px; }
main { width: ${WIDTH}px; }
h1 { font-size: 22px; margin: 0 0 12px; }
h2 { font-size: 18px; margin: 28px 0 8px; }
.scroll { overflow-x: auto; }
svg { display: block; }
.heading { font-size: 15px; font-weight: 600; }
.tick { font-size: 11px; fill: #444C56; }
.axis-label { font-size: 12px; fill: #1F2328; }
.grid { stroke: #E5E7EB; }
.axis { stroke: #8C959F; }
.marker-label { font-weight: 600; }
.charts { display: flex; flex-wrap: wrap; gap: 24px; }
figure { margin: 0; }
.legend { list-style: none; padding: 0; margin: 6px 0 0; font-size: 12px; max-width: ${WIDTH}px; }
.legend li { margin: 2px 0; }
.swatch { display: inline-block; width: 26px; margin: 0 8px 3px 0; vertical-align: middle; }
.notes, .note { font-size: 13px; color: #444C56; max-width: ${WIDTH}px; }
table.summary { border-collapse: collapse; font-size: 13px; }
table.summary th, table.summary td { text-align: left; vertical-align: top; padding: 4px 10px; border-bottom: 1px solid #E5E7EB; }
table.summary tr.changed td { background: #FFF4D6; }
pre { white-space: pre-wrap; word-break: break-all; font-size: 12px; background: #F6F8FA; padding: 8px; }
`;

/**
 * The whole report as one HTML file: no script, no external resource (a Content-Security-Policy
 * that allows none says so to the browser too), every text escaped. `versions` is one plan, or a
 * diff's before and after in that order.
 */
export function renderHtmlReport(versions: readonly ReportVersion[]): string {
  checkVersions(versions);
  const heading = title(versions);
  return [
    "<!DOCTYPE html>",
    `<html lang="en"><head><meta charset="utf-8">`,
    `<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">`,
    `<meta name="viewport" content="width=device-width, initial-scale=1">`,
    `<title>${escapeXml(heading)}</title><style>${PAGE_CSS}</style></head>`,
    `<body><main>`,
    `<h1>${escapeXml(heading)}</h1>`,
    summaryTable(versions),
    `<h2>Memory per device</h2>`,
    `<p class="note">Resident bytes by kind under the chosen load mode, against each device's capacity; each device has its own scale.</p>`,
    `<div class="scroll">${memorySvgBody(versions, false)}</div>`,
    `<h2>Speed</h2>`,
    `<div class="charts">${decodeChart(versions)}${prefillChart(versions)}</div>`,
    `<h2>Cost</h2>`,
    `<div class="scroll">${costChart(versions)}</div>`,
    `<h2>Flags</h2>`,
    argsSection(versions),
    `</main></body></html>`,
    "",
  ].join("\n");
}
