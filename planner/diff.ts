/**
 * What changed between two plans of a stack (`npm run plan -- --stack X --diff REF`, `--diff-stack Y`):
 * per-device planned bytes, the verdict, the llama-server flags, the projections and the costs, and
 * whether any of it is material. Pure: cli/plan.ts plans each side (a git worktree for a ref) and
 * hands the two --json objects here.
 *
 * A side may come from an older version of the kit, whose --json lacked fields or named them
 * differently: every field is read defensively, an absent one is "unknown" (never zero), and what
 * could not be compared is listed instead of guessed.
 */
import type { PlanJson } from "./report";
import { formatDuration, formatGiB, formatTokens, formatUsd } from "./units";

/** A device's planned bytes (or capacity) moving by this share of its capacity is material. */
export const DEVICE_BYTES_MATERIAL_FRACTION = 0.01;
/** Decode, prefill or TTFT moving by this fraction of the before figure is material. */
export const PROJECTION_MATERIAL_FRACTION = 0.05;
/** The monthly cost moving by this many dollars (rounded to cents) is material. */
export const MONTHLY_COST_MATERIAL_USD = 1;

/** A plan as some version of the kit printed it with --json: the current shape, or an older one. */
export type PlanJsonAtAnyRef = PlanJson | Record<string, unknown>;

export interface PlanSide {
  /** Where the side comes from, as the reader should see it: "HEAD~1 (f4d6d76)", "working tree", a stack name. */
  label: string;
  /** The stack planned on this side; the plan's own `stack` field is used when absent. */
  stack?: string;
  plan?: PlanJsonAtAnyRef;
  /** Why this side could not be planned (a config error, a crash, a timeout, output that is not a plan). */
  unreadable?: string;
  /** The stack file does not exist on this side. */
  missing?: true;
}

export interface Verdict {
  fits?: boolean;
  mode?: string;
  refusal?: string;
}

export interface Change<T> {
  before?: T;
  after?: T;
}

export interface DeviceDiff {
  /** llama.cpp's device name (CPU, CUDA0, RPC0[host:port]): devices are matched by it. */
  name: string;
  label: string;
  /** "one side": the other side could not be planned, so nothing is compared. */
  status: "added" | "removed" | "changed" | "unchanged" | "one side";
  capacity: Change<number>;
  planned: Change<number>;
  /** after − before; absent when either side's figure is unknown. */
  deltaBytes?: number;
  /** The capacity the change is measured against: after's, or before's for a removed device. */
  referenceCapacity?: number;
  /** Bytes by kind whose figure differs (weights, KV, …); empty when none does or none is known. */
  kinds: ({ kind: string } & Change<number>)[];
}

export interface FlagChange {
  flag: string;
  /** Each occurrence's values, space-joined ("" for a switch); absent when the flag is not given. */
  before?: string[];
  after?: string[];
}

export type MetricKey = "decode" | "prefill" | "ttft";

export interface MetricDiff extends Change<number> {
  key: MetricKey;
  /** Where the figure is taken (decode depth, TTFT prompt), when the plan says. */
  at: Change<number>;
  /** after / before − 1; absent when either figure is unknown or before is 0. */
  fraction?: number;
}

/** A side's cost block: unknown (its JSON has no cost field), none (the stack sets no costs), or figures. */
export type CostState =
  | { state: "unknown" }
  | { state: "none"; reason?: string }
  | {
      state: "priced";
      monthlyUsd?: number;
      usdPerMillionOutputTokens?: number;
      breakEvenTokensPerMonth?: number | null;
      breakEvenReason?: string;
    };

export interface PlanDiff {
  /** The stack, or "X..Y" for two stacks: names the pull-request comment. */
  key: string;
  kind: "compared" | "new stack" | "removed stack" | "unreadable" | "nothing to compare";
  before: SideSummary;
  after: SideSummary;
  verdict: Change<Verdict>;
  model: Change<string>;
  host: Change<string>;
  image: Change<string>;
  devices: DeviceDiff[];
  flags: FlagChange[];
  projections: MetricDiff[];
  cost: Change<CostState>;
  /** What could not be compared and why (an older side's JSON lacks the field, a side was not planned). */
  notCompared: string[];
}

export interface SideSummary {
  label: string;
  stack?: string;
  state: "planned" | "unreadable" | "missing";
  reason?: string;
}

/** The fields the diff uses, read from a --json object of any version; undefined = unknown. */
interface ReadPlan {
  stack?: string;
  verdict: Verdict;
  model?: string;
  host?: string;
  image?: string;
  devices?: ReadDevice[];
  args?: string[];
  metrics: Record<MetricKey, { value?: number; at?: number }>;
  cost: CostState;
}

interface ReadDevice {
  name: string;
  label: string;
  capacityBytes?: number;
  plannedBytes?: number;
  kinds: Record<string, number | undefined>;
}

/** PlanJson device fields by the words the plan's memory table uses for them. */
const DEVICE_KINDS: readonly (readonly [string, string])[] = [
  ["modelBytes", "weights"],
  ["repackBytes", "repacked weights"],
  ["kvBytes", "KV"],
  ["recurrentBytes", "recurrent state"],
  ["checkpointBytes", "checkpoints"],
  ["computeBytes", "compute"],
  ["promptCacheBytes", "prompt cache"],
  ["headroomBytes", "headroom"],
];

const METRICS: readonly { key: MetricKey; name: string; unit: string; higherIsBetter: boolean }[] = [
  { key: "decode", name: "decode", unit: "tok/s", higherIsBetter: true },
  { key: "prefill", name: "prefill", unit: "tok/s", higherIsBetter: true },
  { key: "ttft", name: "TTFT", unit: "s", higherIsBetter: false },
];

function record(value: unknown): Record<string, unknown> | undefined {
  return value !== null && typeof value === "object" && !Array.isArray(value)
    ? (value as Record<string, unknown>)
    : undefined;
}

function num(value: unknown): number | undefined {
  return typeof value === "number" && Number.isFinite(value) ? value : undefined;
}

function str(value: unknown): string | undefined {
  return typeof value === "string" ? value : undefined;
}

function readPlan(value: PlanJsonAtAnyRef): ReadPlan {
  const plan: Record<string, unknown> = value as Record<string, unknown>;
  const model = record(plan.model);
  const host = record(plan.host);
  const projection = record(plan.projection);
  const devices = readDevices(plan);
  const cost = readCost(plan);
  const repo = str(model?.repo);
  const tier = str(model?.tier);
  return {
    stack: str(plan.stack),
    verdict: {
      fits: typeof plan.fits === "boolean" ? plan.fits : undefined,
      mode: str(plan.mode),
      refusal: str(plan.refusal),
    },
    model:
      repo === undefined && tier === undefined
        ? undefined
        : [repo, tier].filter((part) => part !== undefined).join(" "),
    host: str(host?.label),
    image: str(plan.image),
    devices,
    args:
      Array.isArray(plan.llamaServerArgs) && plan.llamaServerArgs.every((arg) => typeof arg === "string")
        ? (plan.llamaServerArgs as string[])
        : undefined,
    metrics: {
      decode: { value: num(projection?.decodeTokensPerSecond), at: num(projection?.decodeDepthTokens) },
      prefill: { value: num(projection?.prefillTokensPerSecond), at: undefined },
      // The JSON field kept its historical "32k" name; the prompt is the stack's ttftPromptTokens.
      ttft: {
        value: num(projection?.ttft32kSeconds) ?? num(projection?.ttftSeconds),
        at: num(projection?.ttftPromptTokens),
      },
    },
    cost,
  };
}

/** The plan's devices, with a split stack's workers; undefined when its JSON lists no devices. */
function readDevices(plan: Record<string, unknown>): ReadDevice[] | undefined {
  const devices = Array.isArray(plan.devices)
    ? plan.devices.flatMap((entry): ReadDevice[] => {
        const device = record(entry);
        const name = str(device?.name);
        if (!device || name === undefined) return [];
        return [
          {
            name,
            label: str(device.label) ?? "",
            capacityBytes: num(device.capacityBytes),
            plannedBytes: num(device.plannedBytes),
            kinds: Object.fromEntries(DEVICE_KINDS.map(([field]) => [field, num(device[field])])),
          },
        ];
      })
    : undefined;
  // Workers of a split stack hold bytes of their own; a kit that listed them only under cluster.workers
  // still gets them compared, under the device name the head gives them.
  const cluster = record(plan.cluster);
  if (devices && Array.isArray(cluster?.workers)) {
    for (const entry of cluster.workers) {
      const worker = record(entry);
      const name = str(worker?.device);
      if (!worker || name === undefined || devices.some((device) => device.name === name)) continue;
      devices.push({
        name,
        label: `worker ${str(worker.id) ?? "?"} ${str(worker.endpoint) ?? ""}`.trim(),
        capacityBytes: num(worker.capacityBytes),
        plannedBytes: num(worker.plannedBytes),
        kinds: {},
      });
    }
  }
  return devices;
}

function readCost(plan: Record<string, unknown>): CostState {
  let cost: CostState;
  if (!("cost" in plan)) cost = { state: "unknown" };
  else if (plan.cost === null)
    cost = { state: "none", ...(str(plan.costOmitted) ? { reason: str(plan.costOmitted) } : {}) };
  else {
    const figures = record(plan.cost);
    const breakEven = figures?.breakEvenTokensPerMonth;
    cost = figures
      ? {
          state: "priced",
          monthlyUsd: num(figures.monthlyUsd),
          usdPerMillionOutputTokens: num(figures.usdPerMillionOutputTokens),
          breakEvenTokensPerMonth: breakEven === null ? null : num(breakEven),
          breakEvenReason: str(figures.breakEvenReason),
        }
      : { state: "unknown" };
  }
  return cost;
}

/**
 * llama-server argv → flag → each occurrence's values. A word is a flag when it starts with "--" or
 * is "-" and a letter ("-ot", "-c"); "-1" and other words are values of the flag before them.
 */
export function flagOccurrences(args: readonly string[]): Map<string, string[]> {
  const flags = new Map<string, string[]>();
  let current: { flag: string; values: string[] } | undefined;
  const close = () => {
    if (current) flags.set(current.flag, [...(flags.get(current.flag) ?? []), current.values.join(" ")]);
  };
  for (const arg of args) {
    if (/^--?[A-Za-z]/.test(arg)) {
      close();
      current = { flag: arg, values: [] };
    } else if (current) current.values.push(arg);
    else current = { flag: "(leading values)", values: [arg] };
  }
  close();
  return flags;
}

function sameList(a: readonly string[] | undefined, b: readonly string[] | undefined): boolean {
  return a !== undefined && b !== undefined && a.length === b.length && a.every((value, index) => value === b[index]);
}

function diffFlags(before: readonly string[], after: readonly string[]): FlagChange[] {
  const a = flagOccurrences(before);
  const b = flagOccurrences(after);
  const changes: FlagChange[] = [];
  // The after side's order first (the command line the reviewer will run), then flags it dropped.
  for (const flag of [...b.keys(), ...[...a.keys()].filter((flag) => !b.has(flag))]) {
    const was = a.get(flag);
    const now = b.get(flag);
    if (!sameList(was, now)) changes.push({ flag, ...(was ? { before: was } : {}), ...(now ? { after: now } : {}) });
  }
  return changes;
}

function diffDevices(before: readonly ReadDevice[], after: readonly ReadDevice[]): DeviceDiff[] {
  const names = [
    ...after.map((device) => device.name),
    ...before.map((device) => device.name).filter((name) => !after.some((device) => device.name === name)),
  ];
  return names.map((name): DeviceDiff => {
    const was = before.find((device) => device.name === name);
    const now = after.find((device) => device.name === name);
    const deltaBytes =
      was?.plannedBytes !== undefined && now?.plannedBytes !== undefined
        ? now.plannedBytes - was.plannedBytes
        : undefined;
    const kinds =
      was && now
        ? DEVICE_KINDS.map(([field, kind]) => ({ kind, before: was.kinds[field], after: now.kinds[field] })).filter(
            (entry) => entry.before !== undefined && entry.after !== undefined && entry.before !== entry.after,
          )
        : [];
    const status = !was
      ? "added"
      : !now
        ? "removed"
        : deltaBytes !== 0 || was.capacityBytes !== now.capacityBytes || kinds.length > 0
          ? "changed"
          : "unchanged";
    return {
      name,
      label: now?.label ?? was?.label ?? "",
      status,
      capacity: { before: was?.capacityBytes, after: now?.capacityBytes },
      planned: { before: was?.plannedBytes, after: now?.plannedBytes },
      ...(deltaBytes !== undefined ? { deltaBytes } : {}),
      ...((now?.capacityBytes ?? was?.capacityBytes) !== undefined
        ? { referenceCapacity: now?.capacityBytes ?? was?.capacityBytes }
        : {}),
      kinds,
    };
  });
}

function summary(side: PlanSide): SideSummary {
  const stack = side.stack ?? (side.plan ? str((side.plan as Record<string, unknown>).stack) : undefined);
  const base = { label: side.label, ...(stack !== undefined ? { stack } : {}) };
  if (side.missing) return { ...base, state: "missing" };
  if (side.unreadable !== undefined || !side.plan)
    return { ...base, state: "unreadable", reason: side.unreadable ?? "no plan" };
  return { ...base, state: "planned" };
}

export function diffPlans(before: PlanSide, after: PlanSide): PlanDiff {
  const sides = { before: summary(before), after: summary(after) };
  const a = sides.before.state === "planned" ? readPlan(before.plan!) : undefined;
  const b = sides.after.state === "planned" ? readPlan(after.plan!) : undefined;
  const stackBefore = sides.before.stack ?? a?.stack;
  const stackAfter = sides.after.stack ?? b?.stack;
  const key =
    stackBefore !== undefined && stackAfter !== undefined && stackBefore !== stackAfter
      ? `${stackBefore}..${stackAfter}`
      : (stackAfter ?? stackBefore ?? "unknown");
  const kind = diffKind(sides, a, b);

  const notCompared: string[] = [];
  /** Names the side(s) whose JSON lacks what `what` needs; only when both sides were planned. */
  const lacking: Lacking = (what, known) => {
    if (!a || !b) return;
    for (const side of ["before", "after"] as const)
      if (!known[side]) notCompared.push(`${what}: ${sides[side].label}'s plan JSON has no such field (an older kit?)`);
  };

  let devices: DeviceDiff[] = [];
  if (a && b) {
    if (a.devices && b.devices) devices = diffDevices(a.devices, b.devices);
    else lacking("devices", { before: a.devices !== undefined, after: b.devices !== undefined });
  } else if (a || b) {
    // One side only (a new stack, or the other side unreadable): its devices, shown as such.
    devices = diffDevices(a?.devices ?? [], b?.devices ?? []).map((device) =>
      kind === "unreadable" ? { ...device, status: "one side" } : device,
    );
  }

  let flags: FlagChange[] = [];
  if (a && b) {
    if (a.args && b.args) flags = diffFlags(a.args, b.args);
    else lacking("llama-server flags", { before: a.args !== undefined, after: b.args !== undefined });
  }

  const projections = diffMetrics(a, b, lacking);
  lacking("costs", { before: a?.cost.state !== "unknown", after: b?.cost.state !== "unknown" });
  lacking("verdict", { before: a?.verdict.fits !== undefined, after: b?.verdict.fits !== undefined });

  return {
    key,
    kind,
    ...sides,
    verdict: { before: a?.verdict, after: b?.verdict },
    model: { before: a?.model, after: b?.model },
    host: { before: a?.host, after: b?.host },
    image: { before: a?.image, after: b?.image },
    devices,
    flags,
    projections,
    cost: { before: a?.cost, after: b?.cost },
    notCompared,
  };
}

/** Records what could not be compared because a side's JSON lacks it. */
type Lacking = (what: string, known: { before: boolean; after: boolean }) => void;

function diffKind(
  sides: { before: SideSummary; after: SideSummary },
  a: ReadPlan | undefined,
  b: ReadPlan | undefined,
): PlanDiff["kind"] {
  let kind: PlanDiff["kind"] = "nothing to compare";
  if (a && b) kind = "compared";
  else if (sides.before.state === "missing" && sides.after.state !== "missing") kind = "new stack";
  else if (sides.after.state === "missing" && sides.before.state !== "missing") kind = "removed stack";
  else if (a || b) kind = "unreadable";
  return kind;
}

/** Decode, prefill and TTFT before and after, with the change as a fraction where both are known. */
function diffMetrics(a: ReadPlan | undefined, b: ReadPlan | undefined, lacking: Lacking): MetricDiff[] {
  return METRICS.map(({ key: metric, name }): MetricDiff => {
    const was = a?.metrics[metric];
    const now = b?.metrics[metric];
    lacking(name, { before: was?.value !== undefined, after: now?.value !== undefined });
    const fraction =
      was?.value !== undefined && now?.value !== undefined && was.value !== 0 ? now.value / was.value - 1 : undefined;
    return {
      key: metric,
      before: was?.value,
      after: now?.value,
      at: { before: was?.at, after: now?.at },
      ...(fraction !== undefined ? { fraction } : {}),
    };
  });
}

function isDeviceMaterial(device: DeviceDiff): boolean {
  if (device.status === "added" || device.status === "removed") return true;
  const capacity = device.referenceCapacity;
  if (capacity === undefined || capacity <= 0) return device.deltaBytes !== undefined && device.deltaBytes !== 0;
  const capacityDelta =
    device.capacity.before !== undefined && device.capacity.after !== undefined
      ? device.capacity.after - device.capacity.before
      : 0;
  // A hair of float noise must not turn exactly 1% into 0.99999…%.
  const limit = DEVICE_BYTES_MATERIAL_FRACTION * capacity * (1 - 1e-9);
  return Math.abs(device.deltaBytes ?? 0) >= limit || Math.abs(capacityDelta) >= limit;
}

function isMetricMaterial(metric: MetricDiff): boolean {
  if (metric.before === undefined || metric.after === undefined) return false;
  if (metric.before === 0) return metric.after !== 0;
  return Math.abs(metric.fraction ?? 0) >= PROJECTION_MATERIAL_FRACTION * (1 - 1e-9);
}

function monthly(cost: CostState | undefined): number | undefined {
  return cost?.state === "priced" ? cost.monthlyUsd : undefined;
}

/** Why the diff is material, one phrase per reason; empty when nothing material changed. */
export function materialChanges(diff: PlanDiff): string[] {
  const reasons: string[] = [];
  // Nothing can be said to be unchanged when a side is missing or could not be planned.
  if (diff.kind === "new stack") reasons.push(`new stack (absent at ${diff.before.label})`);
  if (diff.kind === "removed stack") reasons.push(`stack removed (absent at ${diff.after.label})`);
  for (const side of [diff.before, diff.after])
    if (side.state === "unreadable") reasons.push(`unreadable at ${side.label}`);
  if (diff.kind !== "compared") return reasons;
  const { before, after } = diff.verdict;
  if (before?.fits !== undefined && after?.fits !== undefined && before.fits !== after.fits)
    reasons.push(after.fits ? "verdict: now fits" : "verdict: NOW REFUSED");
  if (diff.flags.length > 0) reasons.push(`llama-server flags: ${diff.flags.map((flag) => flag.flag).join(", ")}`);
  for (const device of diff.devices.filter(isDeviceMaterial)) {
    reasons.push(
      device.status === "added"
        ? `device ${device.name} added`
        : device.status === "removed"
          ? `device ${device.name} removed`
          : `${device.name} planned bytes ${signedGiB(device.deltaBytes ?? 0)}${shareText(device)}`,
    );
  }
  for (const metric of diff.projections.filter(isMetricMaterial))
    reasons.push(`${METRICS.find((entry) => entry.key === metric.key)!.name} ${percentText(metric)}`);
  const [was, now] = [diff.cost.before, diff.cost.after];
  if (was && now && was.state !== "unknown" && now.state !== "unknown") {
    if (was.state !== now.state) reasons.push(now.state === "priced" ? "costs added" : "costs removed");
    else {
      const delta = (monthly(now) ?? 0) - (monthly(was) ?? 0);
      // Cents, as the plan prints them: $0.995 of float noise is not a dollar.
      if (
        monthly(was) !== undefined &&
        monthly(now) !== undefined &&
        Math.abs(Math.round(delta * 100)) >= MONTHLY_COST_MATERIAL_USD * 100
      )
        reasons.push(`monthly cost ${signedUsd(delta)}`);
    }
  }
  return reasons;
}

export function isMaterial(diff: PlanDiff): boolean {
  return materialChanges(diff).length > 0;
}

/** The --json object: the diff, whether it is material and why, and the thresholds applied. */
export interface PlanDiffJson extends PlanDiff {
  material: boolean;
  materialChanges: string[];
  thresholds: { deviceBytesFractionOfCapacity: number; projectionFraction: number; monthlyCostUsd: number };
}

export function diffToJson(diff: PlanDiff): PlanDiffJson {
  return {
    ...diff,
    material: isMaterial(diff),
    materialChanges: materialChanges(diff),
    thresholds: {
      deviceBytesFractionOfCapacity: DEVICE_BYTES_MATERIAL_FRACTION,
      projectionFraction: PROJECTION_MATERIAL_FRACTION,
      monthlyCostUsd: MONTHLY_COST_MATERIAL_USD,
    },
  };
}

// ---- rendering ----------------------------------------------------------------------------------

function signedGiB(bytes: number): string {
  return `${bytes < 0 ? "-" : "+"}${formatGiB(Math.abs(bytes))}`;
}

function signedUsd(usd: number): string {
  return `${usd < 0 ? "-" : "+"}${formatUsd(Math.abs(usd))}`;
}

function shareText(device: DeviceDiff): string {
  if (device.deltaBytes === undefined || !device.referenceCapacity) return "";
  const share = (device.deltaBytes / device.referenceCapacity) * 100;
  return ` (${share < 0 ? "-" : "+"}${Math.abs(share).toFixed(1)}% of ${formatGiB(device.referenceCapacity)})`;
}

function percentText(metric: MetricDiff): string {
  if (metric.fraction === undefined)
    return metric.before === 0 && metric.after !== undefined && metric.after !== 0 ? "from 0" : "";
  const percent = metric.fraction * 100;
  return `${percent < 0 ? "-" : "+"}${Math.abs(percent).toFixed(1)}%`;
}

function verdictText(verdict: Verdict | undefined): string {
  if (!verdict) return "—";
  if (verdict.fits === undefined) return "unknown";
  return verdict.fits ? `FITS${verdict.mode ? ` (${verdict.mode})` : ""}` : "DOES NOT FIT";
}

function verdictChange(diff: PlanDiff): "now refused" | "now fits" | undefined {
  const { before, after } = diff.verdict;
  if (before?.fits === undefined || after?.fits === undefined || before.fits === after.fits) return undefined;
  return after.fits ? "now fits" : "now refused";
}

/** What a side shows for a figure: "—" for a side with no plan, "unknown" for a field its JSON lacks. */
function shown<T>(
  diff: PlanDiff,
  side: "before" | "after",
  value: T | undefined,
  format: (value: T) => string,
): string {
  if (diff[side].state !== "planned") return "—";
  return value === undefined ? "unknown" : format(value);
}

function metricValue(key: MetricKey, value: number): string {
  return key === "ttft" ? formatDuration(value) : `${value.toFixed(value < 10 ? 2 : 1)} tok/s`;
}

function metricLabel(metric: MetricDiff): string {
  const name = METRICS.find((entry) => entry.key === metric.key)!.name;
  const { before, after } = metric.at;
  if (before === undefined && after === undefined) return name;
  const where = metric.key === "decode" ? "depth" : "prompt";
  if (before === undefined || after === undefined || before === after)
    return `${name} @${formatTokens((after ?? before)!)} ${where}`;
  return `${name} @${formatTokens(before)} → @${formatTokens(after)} ${where}`;
}

type Priced = Extract<CostState, { state: "priced" }>;

function costValue(diff: PlanDiff, side: "before" | "after", pick: (cost: Priced) => string): string {
  const cost = diff.cost[side];
  if (diff[side].state !== "planned" || !cost) return "—";
  return cost.state === "unknown" ? "unknown" : cost.state === "none" ? "no costs" : pick(cost);
}

function costRows(diff: PlanDiff): { name: string; before: string; after: string; change: string }[] {
  const usd = (value: number | undefined) => (value === undefined ? "unknown" : formatUsd(value));
  const breakEven = (value: number | null | undefined) =>
    value === undefined ? "unknown" : value === null ? "none" : `${formatTokens(value)} tok/mo`;
  const figure = (side: "before" | "after", pick: (cost: Priced) => number | undefined) => {
    const cost = diff.cost[side];
    return cost?.state === "priced" ? pick(cost) : undefined;
  };
  const delta = (pick: (cost: Priced) => number | undefined) => {
    const [was, now] = [figure("before", pick), figure("after", pick)];
    return was !== undefined && now !== undefined ? signedUsd(now - was) : "";
  };
  return [
    {
      name: "monthly cost",
      before: costValue(diff, "before", (c) => usd(c.monthlyUsd)),
      after: costValue(diff, "after", (c) => usd(c.monthlyUsd)),
      change: delta((c) => c.monthlyUsd),
    },
    {
      name: "per 1M output tokens",
      before: costValue(diff, "before", (c) => usd(c.usdPerMillionOutputTokens)),
      after: costValue(diff, "after", (c) => usd(c.usdPerMillionOutputTokens)),
      change: delta((c) => c.usdPerMillionOutputTokens),
    },
    {
      name: "break-even",
      before: costValue(diff, "before", (c) => breakEven(c.breakEvenTokensPerMonth)),
      after: costValue(diff, "after", (c) => breakEven(c.breakEvenTokensPerMonth)),
      change: "",
    },
  ];
}

/** Two stacks of one tree are named by stack; one stack at two versions by the versions' labels. */
function twoStacks(diff: PlanDiff): boolean {
  return diff.before.stack !== undefined && diff.after.stack !== undefined && diff.before.stack !== diff.after.stack;
}

function headline(diff: PlanDiff, code: (text: string) => string): string {
  return twoStacks(diff)
    ? `stack ${code(diff.before.stack!)} → stack ${code(diff.after.stack!)}`
    : `stack ${code(diff.key)}: ${diff.before.label} → ${diff.after.label}`;
}

/** Sides that could not be compared, in the words the issue asks for: "unreadable at REF: reason", "new stack". */
function sideProblems(diff: PlanDiff): { what: string; detail: string }[] {
  const lines: { what: string; detail: string }[] = [];
  for (const side of [diff.before, diff.after])
    if (side.state === "unreadable") lines.push({ what: `unreadable at ${side.label}`, detail: side.reason ?? "" });
  if (diff.kind === "new stack")
    lines.push({
      what: "new stack",
      detail: `stacks/Pulumi.${diff.after.stack ?? diff.key}.yaml does not exist at ${diff.before.label}`,
    });
  if (diff.kind === "removed stack")
    lines.push({
      what: "removed stack",
      detail: `stacks/Pulumi.${diff.before.stack ?? diff.key}.yaml does not exist at ${diff.after.label}`,
    });
  return lines;
}

function flagText(flag: string, value: string): string {
  return value === "" ? flag : `${flag} ${value}`;
}

/** Unified-diff lines for the flags that differ: "-" the before occurrence, "+" the after one. */
function flagDiffLines(flags: readonly FlagChange[]): string[] {
  const lines: string[] = [];
  for (const change of flags) {
    const was = change.before ?? [];
    const now = change.after ?? [];
    const gone = was.filter((value) => !now.includes(value));
    const added = now.filter((value) => !was.includes(value));
    // Same values in another order or count (repeated -ot rules, whose order matters): both lists whole.
    const [minus, plus] = gone.length + added.length > 0 ? [gone, added] : [was, now];
    lines.push(
      ...minus.map((value) => `- ${flagText(change.flag, value)}`),
      ...plus.map((value) => `+ ${flagText(change.flag, value)}`),
    );
  }
  return lines;
}

/** One line per flag for the text report: changed (with both values), added or removed. */
function flagTextLines(flags: readonly FlagChange[]): string[] {
  return flags.map((change) => {
    const values = (list: readonly string[]) => list.map((value) => (value === "" ? "(switch)" : value)).join(" | ");
    if (!change.before) return `added    ${change.after!.map((value) => flagText(change.flag, value)).join(" ")}`;
    if (!change.after) return `removed  ${change.before.map((value) => flagText(change.flag, value)).join(" ")}`;
    return `changed  ${change.flag}: ${values(change.before)} → ${values(change.after)}`;
  });
}

function thresholdsText(): string {
  return `a verdict, any llama-server flag, a device's bytes by ≥ ${DEVICE_BYTES_MATERIAL_FRACTION * 100}% of its capacity, decode/prefill/TTFT by ≥ ${PROJECTION_MATERIAL_FRACTION * 100}%, the monthly cost by ≥ ${formatUsd(MONTHLY_COST_MATERIAL_USD)}`;
}

function deviceCell(diff: PlanDiff, device: DeviceDiff, side: "before" | "after"): string {
  if (diff[side].state !== "planned" || (side === "before" ? device.status === "added" : device.status === "removed"))
    return "—";
  const planned = device.planned[side];
  const capacity = device.capacity[side];
  if (planned === undefined) return "unknown";
  return capacity === undefined ? formatGiB(planned) : `${formatGiB(planned)} of ${formatGiB(capacity)}`;
}

function deviceChange(device: DeviceDiff): string {
  if (device.status === "added" || device.status === "removed") return device.status;
  if (device.status === "one side" || device.deltaBytes === undefined) return "";
  if (device.status === "unchanged") return "unchanged";
  const capacity =
    device.capacity.before !== device.capacity.after &&
    device.capacity.before !== undefined &&
    device.capacity.after !== undefined
      ? `; capacity ${signedGiB(device.capacity.after - device.capacity.before)}`
      : "";
  return `${signedGiB(device.deltaBytes)}${shareText(device)}${capacity}`;
}

/** "before → after" for two planned sides, the one figure for one side. */
function arrow(diff: PlanDiff, before: string, after: string): string {
  if (diff.before.state !== "planned") return after;
  if (diff.after.state !== "planned") return before;
  return `${before} → ${after}`;
}

export function renderDiffText(diff: PlanDiff): string {
  const out: string[] = [`Plan diff, ${headline(diff, (text) => text)}`];
  const change = verdictChange(diff);
  if (change === "now refused")
    out.push(
      `VERDICT CHANGED: ${verdictText(diff.verdict.before)} → DOES NOT FIT — NOW REFUSED: ${diff.verdict.after?.refusal ?? "(no reason given)"}`,
    );
  if (change === "now fits") out.push(`VERDICT CHANGED: DOES NOT FIT → ${verdictText(diff.verdict.after)} — now fits`);
  for (const problem of sideProblems(diff)) out.push(`${problem.what}: ${problem.detail}`);
  const reasons = materialChanges(diff);
  out.push(
    reasons.length > 0 ? `Material: yes — ${reasons.join("; ")}` : `Material: no (material: ${thresholdsText()})`,
  );
  if (diff.before.state !== "planned" && diff.after.state !== "planned") return out.join("\n");

  pushTextIdentity(out, diff, change);
  pushTextDevices(out, diff);
  pushTextFlags(out, diff);
  pushTextProjections(out, diff);
  pushTextCosts(out, diff);
  if (diff.notCompared.length > 0) {
    out.push("");
    out.push("Not compared:");
    for (const line of diff.notCompared) out.push(`  - ${line}`);
  }
  return out.join("\n").replace(/ +$/gm, "");
}

/** The verdict (unless a changed one already headed the report), a new refusal, the model, host and image. */
function pushTextIdentity(out: string[], diff: PlanDiff, change: ReturnType<typeof verdictChange>): void {
  out.push("");
  const [verdictBefore, verdictAfter] = [verdictText(diff.verdict.before), verdictText(diff.verdict.after)];
  if (!change)
    out.push(
      `Verdict: ${diff.kind === "compared" && verdictBefore === verdictAfter ? `${verdictAfter} (unchanged)` : arrow(diff, verdictBefore, verdictAfter)}`,
    );
  if (
    diff.verdict.before?.fits === false &&
    diff.verdict.after?.fits === false &&
    diff.verdict.before.refusal !== diff.verdict.after.refusal
  )
    out.push(`  refusal now: ${diff.verdict.after.refusal ?? "(none given)"}`);
  for (const [name, value] of [
    ["Model", diff.model],
    ["Host", diff.host],
    ["Image", diff.image],
  ] as const) {
    const [was, now] = [value.before ?? "unknown", value.after ?? "unknown"];
    out.push(`${name}: ${diff.kind === "compared" && was === now ? was : arrow(diff, was, now)}`);
  }
}

function pushTextDevices(out: string[], diff: PlanDiff): void {
  if (diff.devices.length > 0) {
    out.push("");
    out.push("Devices (planned bytes of capacity; a change as a share of capacity):");
    for (const device of diff.devices) {
      const free = (side: "before" | "after") =>
        device.planned[side] !== undefined && device.capacity[side] !== undefined
          ? formatGiB(device.capacity[side]! - device.planned[side]!)
          : "unknown";
      const changeText = deviceChange(device);
      const freeText = device.status === "changed" ? `; free ${free("before")} → ${free("after")}` : "";
      out.push(
        `  ${device.name} ${device.label}: ${arrow(diff, deviceCell(diff, device, "before"), deviceCell(diff, device, "after"))}${changeText ? `, ${changeText}` : ""}${freeText}`,
      );
      if (device.kinds.length > 0)
        out.push(
          `    ${device.kinds.map((kind) => `${kind.kind} ${formatGiB(kind.before!, 2)} → ${formatGiB(kind.after!, 2)} (${signedGiB(kind.after! - kind.before!)})`).join("; ")}`,
        );
    }
  }
}

function pushTextFlags(out: string[], diff: PlanDiff): void {
  if (diff.kind === "compared") {
    out.push("");
    if (diff.flags.length === 0)
      out.push(
        diff.notCompared.some((line) => line.startsWith("llama-server flags"))
          ? "llama-server flags: not compared"
          : "llama-server flags: unchanged",
      );
    else {
      out.push(`llama-server flags (${diff.flags.length} changed):`);
      for (const line of flagTextLines(diff.flags)) out.push(`  ${line}`);
    }
  }
}

function pushTextProjections(out: string[], diff: PlanDiff): void {
  out.push("");
  out.push("Projections:");
  for (const metric of diff.projections) {
    const figure = (side: "before" | "after") =>
      shown(diff, side, metric[side], (value) => metricValue(metric.key, value));
    const percent = percentText(metric);
    out.push(
      `  ${metricLabel(metric)}: ${arrow(diff, figure("before"), figure("after"))}${percent ? ` (${percent})` : ""}`,
    );
  }
  // plan.ts projects a refused plan as if it ran (so the reader sees what the tier would do); say so.
  if ([diff.verdict.before, diff.verdict.after].some((verdict) => verdict?.fits === false))
    out.push(
      "  (a side that does not fit is projected as if it ran: those figures describe a deployment that cannot start)",
    );
}

function pushTextCosts(out: string[], diff: PlanDiff): void {
  out.push("");
  out.push("Costs:");
  for (const row of costRows(diff))
    out.push(`  ${row.name}: ${arrow(diff, row.before, row.after)}${row.change ? ` (${row.change})` : ""}`);
  const omitted = new Set(
    [diff.cost.before, diff.cost.after].flatMap((cost) => (cost?.state === "none" && cost.reason ? [cost.reason] : [])),
  );
  for (const reason of omitted) out.push(`  no costs: ${reason}`);
}

/** The hidden first line a bot looks for to find and update its pull-request comment. */
export function diffMarker(key: string): string {
  return `<!-- kimi-kit-plan-diff:${key} -->`;
}

/** A table cell: pipes escaped and newlines flattened, so a refusal or an -ot regex cannot break the row. */
function cell(text: string): string {
  return text.replaceAll("|", "\\|").replaceAll("\n", " ");
}

export function renderDiffMarkdown(diff: PlanDiff): string {
  const out: string[] = [diffMarker(diff.key), `### Plan diff: ${headline(diff, (text) => `\`${text}\``)}`, ""];
  const change = verdictChange(diff);
  if (change === "now refused")
    out.push(
      `> [!CAUTION]`,
      `> **Verdict changed: ${verdictText(diff.verdict.before)} → DOES NOT FIT (now refused).** ${cell(diff.verdict.after?.refusal ?? "")}`,
      "",
    );
  if (change === "now fits")
    out.push(`> [!NOTE]`, `> **Verdict changed: DOES NOT FIT → ${verdictText(diff.verdict.after)} (now fits).**`, "");
  for (const problem of sideProblems(diff)) out.push(`**${problem.what}**: ${cell(problem.detail)}`, "");
  const reasons = materialChanges(diff);
  out.push(
    reasons.length > 0
      ? `**Material change:** ${reasons.map(cell).join("; ")}`
      : `No material change (material: ${thresholdsText()}).`,
  );
  if (diff.before.state !== "planned" && diff.after.state !== "planned") return out.join("\n");
  out.push("");
  const [beforeHead, afterHead] = twoStacks(diff)
    ? [diff.before.stack!, diff.after.stack!]
    : [diff.before.label, diff.after.label];
  out.push(`| | ${cell(beforeHead)} | ${cell(afterHead)} | change |`, "|---|---:|---:|---:|");
  for (const row of markdownRows(diff, change)) out.push(`| ${row.map(cell).join(" | ")} |`);
  if ([diff.verdict.before, diff.verdict.after].some((verdict) => verdict?.fits === false))
    out.push(
      "",
      "_A side that does not fit is projected as if it ran: its figures describe a deployment that cannot start._",
    );
  pushFlagDetails(out, diff);
  pushKindDetails(out, diff, beforeHead, afterHead);
  if (diff.kind === "compared" && diff.image.before !== diff.image.after)
    out.push("", `Image: \`${diff.image.before ?? "unknown"}\` → \`${diff.image.after ?? "unknown"}\``);
  if (diff.notCompared.length > 0) out.push("", "Not compared:", ...diff.notCompared.map((line) => `- ${cell(line)}`));
  return out.join("\n");
}

/** The comment's table rows: verdict, a changed model or host, devices, projections, costs and the flag count. */
function markdownRows(diff: PlanDiff, change: ReturnType<typeof verdictChange>): string[][] {
  const sameVerdict = diff.kind === "compared" && verdictText(diff.verdict.before) === verdictText(diff.verdict.after);
  const rows: string[][] = [
    [
      "**verdict**",
      verdictText(diff.verdict.before),
      verdictText(diff.verdict.after),
      change ? `**${change.toUpperCase()}**` : sameVerdict ? "unchanged" : "",
    ],
  ];
  if (diff.model.before !== diff.model.after)
    rows.push(["model", diff.model.before ?? "—", diff.model.after ?? "—", diff.kind === "compared" ? "changed" : ""]);
  if (diff.host.before !== diff.host.after)
    rows.push(["host", diff.host.before ?? "—", diff.host.after ?? "—", diff.kind === "compared" ? "changed" : ""]);
  for (const device of diff.devices)
    rows.push([
      `${device.name} planned`,
      deviceCell(diff, device, "before"),
      deviceCell(diff, device, "after"),
      deviceChange(device),
    ]);
  for (const metric of diff.projections) {
    rows.push([
      metricLabel(metric),
      shown(diff, "before", metric.before, (value) => metricValue(metric.key, value)),
      shown(diff, "after", metric.after, (value) => metricValue(metric.key, value)),
      percentText(metric),
    ]);
  }
  for (const row of costRows(diff)) rows.push([row.name, row.before, row.after, row.change]);
  if (diff.kind === "compared")
    rows.push(["llama-server flags", "", "", diff.flags.length === 0 ? "unchanged" : `${diff.flags.length} changed`]);
  return rows;
}

/** The changed llama-server flags as a collapsed diff block. */
function pushFlagDetails(out: string[], diff: PlanDiff): void {
  if (diff.flags.length > 0)
    out.push(
      "",
      `<details><summary>llama-server flags: ${diff.flags.length} changed</summary>`,
      "",
      "```diff",
      ...flagDiffLines(diff.flags),
      "```",
      "",
      "</details>",
    );
}

/** Per device, the kinds of bytes that changed, as a collapsed table. */
function pushKindDetails(out: string[], diff: PlanDiff, beforeHead: string, afterHead: string): void {
  const withKinds = diff.devices.filter((device) => device.kinds.length > 0);
  if (withKinds.length > 0) {
    out.push(
      "",
      "<details><summary>Memory by kind</summary>",
      "",
      `| device | kind | ${cell(beforeHead)} | ${cell(afterHead)} | change |`,
      "|---|---|---:|---:|---:|",
    );
    for (const device of withKinds)
      for (const kind of device.kinds)
        out.push(
          `| ${cell(device.name)} | ${kind.kind} | ${formatGiB(kind.before!, 2)} | ${formatGiB(kind.after!, 2)} | ${signedGiB(kind.after! - kind.before!)} |`,
        );
    out.push("", "</details>");
  }
}
