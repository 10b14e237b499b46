/**
 * `npm run bench:rpc [-- --rounds N --out FILE]`: holds estimate()'s projection of a llama.cpp RPC
 * split (issue 12) against the real thing on this machine. Two ggml-rpc-server workers and the head
 * llama-server run in network namespaces of one machine (lab/rpc-cluster.ts), the links
 * unlimited (veth) or limited with tbf to 25 and 10 Gbit/s; the same model runs on the head alone
 * for the single-host baseline. Every process gets -t 1, so that the three of them do not fight over
 * this machine's cores (the split runs its hosts one after another anyway).
 *
 * Measured: llama-server's own timings (prompt_per_second, predicted_per_second), medians over
 * interleaved rounds — one run of every configuration per round, after a warm-up — since this shared
 * machine's speed drifts from one minute to the next. Projected: estimate() of the very command line
 * each head got, every host as this machine at its measured read bandwidth, with the CPU factors
 * fitted here on the single-host runs the way bench/accuracy.ts fits them (bench/lib/calibrate.ts),
 * and the link as measured between the namespaces (TCP round trip; the tbf rate, or the measured
 * veth throughput when unlimited).
 *
 * Gated: the split ÷ single ratio, decode and prefill, projected vs measured at each link rate —
 * the quantity the planner's verdicts on a split rest on. Printed besides, as evidence for any gap:
 * per decoded token, each process's CPU time, run-queue wait and wake-ups, the TCP segments to each
 * worker, and the RPC commands each worker serves (GGML_RPC_DEBUG=1, in a separate run so the
 * logging does not slow the timed one); and per RPC device, the predicted vs logged buffers.
 * Exits non-zero when a gate is missed or the machine cannot make network namespaces.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { parseArgs } from "node:util";
import { readLocalModel, thisMachineHost, type LocalModel } from "../cli/local-model";
import { loadCatalog } from "../planner/catalog";
import { estimate, type Estimate } from "../planner/estimate";
import { parseFlags } from "../planner/flags";
import { isRpcDevice, linkSpec, rpcDeviceName, type LinkSpec } from "../planner/network";
import type { CpuFactorOverrides } from "../planner/speed";
import { thisMachine } from "../lab/this-machine";
import { generatedModelCase, quantizeMix } from "../lab/model-mixes";
import { netnsUnavailable, type Host } from "../lab/netns";
import { startRpcCluster, type HeadServer, type RpcCluster } from "../lab/rpc-cluster";
import { measureReadBandwidthGBps } from "../tools/bandwidth";
import { fitCpuFactors, median, UNIT_CPU_FACTORS, type CalibrationCase } from "./lib/calibrate";
import { measureRoundTrip, measureThroughputGbit, type RoundTrip } from "./lib/rpc-link";
import {
  countRpcCommands,
  pidsIn,
  rpcPayloadBytes,
  scaleTcp,
  schedCounters,
  subtractSched,
  subtractTcp,
  systemCpu,
  tcpCounters,
  type SchedCounters,
  type TcpCounters,
} from "./lib/rpc-trace";
import { parseBuffers } from "../lab/server";
import { benchModelsDir, benchPrompt, DECODE_DEPTH, GENERATED_TOKENS, PROMPT_TOKENS } from "./lib/workload";

const MiB = 1024 * 1024;
const { values: options } = parseArgs({ options: { rounds: { type: "string" }, out: { type: "string" } } });
const ROUNDS = Number(options.rounds ?? 5);
if (!Number.isInteger(ROUNDS) || ROUNDS < 3)
  throw new Error(`--rounds wants an integer of at least 3 (a median of fewer is no median), got ${options.rounds}`);

/**
 * The gate: projected split ÷ single within 35% of the measured one, decode and prefill, at every
 * link rate. Not tighter: this 2-core VM is shared, and a split's three processes see more of its
 * neighbours' noise than one process does.
 */
const GATE = 0.35;

/**
 * Every head's flags, single host or split: one slot, one thread for decode and batch; -ngl 99 offloads every layer to
 * the RPC devices.
 */
const FLAGS = ["-c", "1024", "-np", "1", "-t", "1", "-tb", "1", "-ngl", "99", "--fit", "off"];
/**
 * llama.cpp splits the 8 layers and the output layer at the cumulative shares of -ts: with 1,1 layer
 * il goes to RPC0 while il/9 < 0.5, so RPC0 gets layers 0–4 and RPC1 layers 5–7 and the output.
 */
const SPLIT = ["-ts", "1,1"];
/** Decoded tokens the per-token counters difference over (a 1-token request is subtracted, so the prompt cancels). */
const TRACE_TOKENS = 64;
/**
 * The traced requests' prompt: short, because the prompt's bytes cross the link as a few large
 * sends whose segment and ACK counts vary from run to run, which the difference would not cancel.
 */
const TRACE_PROMPT_TOKENS = 16;
/** Decode steps whose RPC commands are counted, at the end of a request of COUNT_REQUEST_TOKENS. */
const COUNT_STEPS = 32;
const COUNT_REQUEST_TOKENS = 64;

interface LinkCase {
  name: string;
  /** tbf rate; undefined: no limit. */
  gbit: number | undefined;
}
const LINKS: readonly LinkCase[] = [
  { name: "no limit (veth)", gbit: undefined },
  { name: "25 Gbit/s (tbf)", gbit: 25 },
  { name: "10 Gbit/s (tbf)", gbit: 10 },
];

interface Rates {
  decode: number;
  prefill: number;
}

interface Case {
  key: string;
  label: string;
  model: LocalModel;
  modelLabel: string;
  args: string[];
  server: HeadServer;
  /** Split cases: the link rate to set before each run. */
  link?: LinkCase;
  runs: Rates[];
}

interface PerToken {
  head: SchedCounters;
  w1: SchedCounters;
  w2: SchedCounters;
  /** TCP counters of the head's connections to each worker, in --rpc order. */
  tcp: TcpCounters[];
}

interface CommandCounts {
  endpoint: string;
  /** Commands per decode step, by name. */
  perStep: Record<string, number>;
  /** Payload bytes per decode step, by command. */
  bytesPerStep: Record<string, number>;
}

const catalog = loadCatalog();
const machine = thisMachine();

function completionBody(
  vocabSize: number,
  run: number,
  nPredict: number,
  promptTokens = PROMPT_TOKENS,
): Record<string, unknown> {
  return {
    prompt: benchPrompt(vocabSize, run, promptTokens),
    n_predict: nPredict,
    cache_prompt: false,
    temperature: 0,
    ignore_eos: true,
  };
}

/** Sets the links to a case's rate, only when it differs from the rate they have. */
function rateSetter(cluster: RpcCluster): (link: LinkCase | undefined) => void {
  let current: number | undefined;
  return (link) => {
    if (!link || link.gbit === current) return;
    if (link.gbit === undefined) cluster.topology.clearRate();
    else cluster.topology.setRate(link.gbit);
    current = link.gbit;
  };
}

/**
 * Per decoded token: counters around a 1-token request and a (1 + TRACE_TOKENS)-token one with the same prompt,
 * differenced.
 */
async function tracePerToken(cluster: RpcCluster, server: HeadServer, vocabSize: number): Promise<PerToken> {
  const headPids = pidsIn(cluster.topology, "head", server.socketPath);
  const workerPids = (host: Host) => pidsIn(cluster.topology, host);
  const [w1Pids, w2Pids] = [workerPids("w1"), workerPids("w2")];
  const snapshot = () => ({
    head: schedCounters(headPids),
    w1: schedCounters(w1Pids),
    w2: schedCounters(w2Pids),
    tcp: cluster.workers.map((worker) => tcpCounters(cluster.topology, "head", worker.endpoint)),
  });
  const start = snapshot();
  await server.complete(completionBody(vocabSize, 0, 1, TRACE_PROMPT_TOKENS));
  const middle = snapshot();
  await server.complete(completionBody(vocabSize, 0, 1 + TRACE_TOKENS, TRACE_PROMPT_TOKENS));
  const end = snapshot();
  const perTokenSched = (key: "head" | "w1" | "w2"): SchedCounters => {
    const long = subtractSched(end[key], middle[key]);
    const short = subtractSched(middle[key], start[key]);
    return {
      cpuSeconds: (long.cpuSeconds - short.cpuSeconds) / TRACE_TOKENS,
      runqueueWaitSeconds: (long.runqueueWaitSeconds - short.runqueueWaitSeconds) / TRACE_TOKENS,
      switches: (long.switches - short.switches) / TRACE_TOKENS,
    };
  };
  const tcp = cluster.workers.map((_, index) => {
    const long = subtractTcp(end.tcp[index]!, middle.tcp[index]!);
    const short = subtractTcp(middle.tcp[index]!, start.tcp[index]!);
    return scaleTcp(subtractTcp(long, short), 1 / TRACE_TOKENS);
  });
  return { head: perTokenSched("head"), w1: perTokenSched("w1"), w2: perTokenSched("w2"), tcp };
}

/**
 * The RPC commands each worker serves per decode step, from a split of the same command line whose
 * workers log every command (GGML_RPC_DEBUG=1). The output is read after the cluster has stopped,
 * so it is complete; a decode step is what lies between one graph_recompute and the next (the last
 * COUNT_STEPS of a COUNT_REQUEST_TOKENS-token request, all of them decode steps).
 */
async function countCommands(model: LocalModel, args: readonly string[]): Promise<CommandCounts[]> {
  const cluster = await startRpcCluster({ workerEnv: { GGML_RPC_DEBUG: "1" } });
  try {
    const head = await cluster.startHead(model.path, args);
    await head.complete(completionBody(model.arch.vocabSize, 0, COUNT_REQUEST_TOKENS));
  } finally {
    await cluster.stop();
  }
  const logs = cluster.workers.map((worker) => worker.log());
  return cluster.workers.map((worker, index) => {
    const lines = logs[index]!.split("\n").filter((line) => /^\[\w+\]/.test(line));
    const recomputes = lines.flatMap((line, at) => (line.startsWith("[graph_recompute]") ? [at] : []));
    if (recomputes.length < COUNT_STEPS + 1)
      throw new Error(
        `${worker.endpoint} logged ${recomputes.length} graph_recompute commands for a ${COUNT_REQUEST_TOKENS}-token request; expected more than ${COUNT_STEPS}:\n${logs[index]!.slice(-2000)}`,
      );
    const window = lines.slice(recomputes.at(-COUNT_STEPS - 1)! + 1, recomputes.at(-1)! + 1).join("\n");
    const perStep = Object.fromEntries(
      Object.entries(countRpcCommands(window)).map(([name, count]) => [name, count / COUNT_STEPS]),
    );
    const bytesPerStep = Object.fromEntries(
      Object.entries(rpcPayloadBytes(window)).map(([name, bytes]) => [name, bytes / COUNT_STEPS]),
    );
    return { endpoint: worker.endpoint, perStep, bytesPerStep };
  });
}

function projection(
  model: LocalModel,
  args: readonly string[],
  bandwidthGBps: number,
  cpuFactors: CpuFactorOverrides,
  rpc?: { endpoints: string[]; link: LinkSpec },
): { decode: number; prefill: number; estimate: Estimate } {
  const host = thisMachineHost(bandwidthGBps);
  const result = estimate(model.tensors, model.arch, host, parseFlags(args, "bench:rpc").sizing, {
    catalog,
    decodeDepthTokens: DECODE_DEPTH,
    decodeDepths: [DECODE_DEPTH],
    prefillPrompts: [PROMPT_TOKENS],
    cpuFactors,
    // Each worker is this machine too, serving its device with ggml-rpc-server -t 1.
    ...(rpc
      ? { rpc: { workers: rpc.endpoints.map((endpoint) => ({ endpoint, host, threads: 1 })), link: rpc.link } }
      : {}),
  });
  const prefill = result.projection.prefillByPrompt.find(
    (point) => point.promptTokens === PROMPT_TOKENS,
  )!.tokensPerSecond;
  return { decode: result.projection.decodeTokensPerSecond, prefill, estimate: result };
}

const fixed = (value: number, digits = 1) => value.toFixed(digits);
const ratioCell = (projected: number, measured: number) => `${fixed(projected / measured, 3)}`;
const ms = (seconds: number) => fixed(seconds * 1e3, 3);

type Models = Record<"medium" | "large", LocalModel>;

/** The two generated models, each quantized to the q2-experts mix. */
async function prepareModels(workDir: string): Promise<Models> {
  // The large model is the split's: over 10 ms a token on one thread of a small VM, so decode is
  // mostly the workers streaming weights, not round trips. The medium one is the fit's second equation.
  const models: Record<"medium" | "large", LocalModel> = {} as Record<"medium" | "large", LocalModel>;
  for (const preset of ["medium", "large"] as const) {
    const generated = await generatedModelCase(workDir, preset);
    await quantizeMix(generated.source, generated.mixes["q2-experts"].path, "q2-experts");
    models[preset] = await readLocalModel(generated.mixes["q2-experts"].path, `${preset} q2-experts`);
  }
  return models;
}

type SetRate = (link: LinkCase | undefined) => void;

interface LinkMeasurement {
  roundTrips: Map<LinkCase, RoundTrip[]>;
  vethGbit: number;
  linkOf: (link: LinkCase) => LinkSpec;
}

// ---------------------------------------------------------------- the link
async function measureLinks(cluster: RpcCluster, setRate: SetRate): Promise<LinkMeasurement> {
  // The round trip at each rate, head → each worker (a port of its own: the kit's firewall in a
  // worker's namespace filters only the RPC port); the throughput of the unlimited veth.
  const probePort = cluster.port + 1;
  const roundTrips = new Map<LinkCase, RoundTrip[]>();
  for (const link of LINKS) {
    setRate(link);
    const trips: RoundTrip[] = [];
    for (const worker of cluster.workers)
      trips.push(await measureRoundTrip(cluster.topology, "head", worker.host, probePort));
    roundTrips.set(link, trips);
  }
  setRate(LINKS[0]);
  const vethGbit = await measureThroughputGbit(cluster.topology, "head", "w1", probePort);
  const linkOf = (link: LinkCase): LinkSpec => {
    const rtt = median(roundTrips.get(link)!.map((trip) => trip.medianMicroseconds));
    const spec = linkSpec(link.gbit ?? vethGbit, rtt, "tcp");
    return {
      ...spec,
      basis: `${link.gbit === undefined ? `veth, measured ${fixed(vethGbit)} Gbit/s` : `tbf ${link.gbit} Gbit/s`}, ${fixed(rtt)} µs TCP round trip (measured)`,
    };
  };
  return { roundTrips, vethGbit, linkOf };
}

// ---------------------------------------------------------------- the heads
async function startHeads(
  cluster: RpcCluster,
  models: Models,
  endpoints: readonly string[],
  splitArgs: string[],
): Promise<{ cases: Case[]; split: HeadServer; splitBuffers: ReturnType<typeof parseBuffers> }> {
  const splitModel = models.large;
  // All three stay up for the whole measurement (an idle llama-server only waits), so the rounds
  // can interleave them.
  const singleMedium = await cluster.startHead(models.medium.path, FLAGS, { rpc: false });
  const singleLarge = await cluster.startHead(splitModel.path, FLAGS, { rpc: false });
  const split = await cluster.startHead(splitModel.path, [...FLAGS, ...SPLIT]);
  const splitBuffers = parseBuffers(split.log());
  for (const endpoint of endpoints) {
    const device = rpcDeviceName(endpoint);
    if (!((splitBuffers.model[device] ?? 0) > 0 && (splitBuffers.kv[device] ?? 0) > 0))
      throw new Error(
        `-ts ${SPLIT[1]}: ${device} holds no layers (model ${splitBuffers.model[device] ?? 0} B, KV ${splitBuffers.kv[device] ?? 0} B); every worker must hold layers`,
      );
  }
  const cases: Case[] = [
    {
      key: "single-medium",
      label: "single host (medium q2-experts; calibration)",
      model: models.medium,
      modelLabel: "medium q2-experts",
      args: FLAGS,
      server: singleMedium,
      runs: [],
    },
    {
      key: "single-large",
      label: "single host (large q2-experts; calibration)",
      model: splitModel,
      modelLabel: "large q2-experts",
      args: FLAGS,
      server: singleLarge,
      runs: [],
    },
    ...LINKS.map((link): Case => ({
      key: `split ${link.name}`,
      label: `split over 2 workers, ${link.name}`,
      model: splitModel,
      modelLabel: "large q2-experts",
      args: splitArgs,
      server: split,
      link,
      runs: [],
    })),
  ];
  return { cases, split, splitBuffers };
}

type Load = { wallSeconds: number; busySeconds: number; ownSeconds: number; stealSeconds: number };

/** One timed request of a case, checked to have evaluated and decoded what was asked. */
async function timedRun(entry: Case, round: number, setRate: SetRate): Promise<void> {
  setRate(entry.link);
  const { timings } = await entry.server.complete(completionBody(entry.model.arch.vocabSize, round, GENERATED_TOKENS));
  if (timings.prompt_n !== PROMPT_TOKENS || timings.predicted_n !== GENERATED_TOKENS)
    throw new Error(
      `${entry.label}: evaluated ${timings.prompt_n} prompt tokens and decoded ${timings.predicted_n}, expected ${PROMPT_TOKENS} and ${GENERATED_TOKENS}`,
    );
  entry.runs.push({ decode: timings.predicted_per_second, prefill: timings.prompt_per_second });
}

// ---------------------------------------------------------------- the rounds
async function runRounds(
  cluster: RpcCluster,
  cases: readonly Case[],
  setRate: SetRate,
): Promise<{ bandwidths: number[]; load: Load }> {
  const bandwidths: number[] = [];
  // What else ran while the requests did: the machine's busy CPU time minus this bench's own
  // (the three servers, the workers and this process), summed over the rounds' request phases.
  const load = { wallSeconds: 0, busySeconds: 0, ownSeconds: 0, stealSeconds: 0 };
  const ownPids = () => [
    ...pidsIn(cluster.topology, "head"),
    ...pidsIn(cluster.topology, "w1"),
    ...pidsIn(cluster.topology, "w2"),
  ];
  const ownCpu = (pids: number[]) => {
    const self = process.cpuUsage();
    return schedCounters(pids).cpuSeconds + (self.user + self.system) / 1e6;
  };
  for (let round = 0; round < ROUNDS; round++) {
    bandwidths.push(measureReadBandwidthGBps(machine.cores));
    const pids = ownPids();
    const before = { wall: performance.now(), system: systemCpu(), own: ownCpu(pids) };
    // Rotated, so that no case always runs right after the same other one.
    for (let index = 0; index < cases.length; index++)
      await timedRun(cases[(index + round) % cases.length]!, round, setRate);
    const after = systemCpu();
    load.wallSeconds += (performance.now() - before.wall) / 1e3;
    load.busySeconds += after.busySeconds - before.system.busySeconds;
    load.stealSeconds += after.stealSeconds - before.system.stealSeconds;
    load.ownSeconds += ownCpu(pids) - before.own;
  }
  return { bandwidths, load };
}

// ---------------------------------------------------------------- evidence: per decoded token
async function traceCases(
  cluster: RpcCluster,
  cases: readonly Case[],
  setRate: SetRate,
): Promise<Map<string, PerToken>> {
  const traces = new Map<string, PerToken>();
  for (const entry of cases.filter((item) => item.key !== "single-medium")) {
    setRate(entry.link);
    traces.set(entry.key, await tracePerToken(cluster, entry.server, entry.model.arch.vocabSize));
  }
  setRate(LINKS[0]);
  return traces;
}

// ---------------------------------------------------------------- projections
function projectCases(
  cases: readonly Case[],
  measured: ReadonlyMap<string, Rates>,
  bandwidthGBps: number,
  endpoints: string[],
  linkOf: (link: LinkCase) => LinkSpec,
): { fit: ReturnType<typeof fitCpuFactors>; projected: Map<string, ReturnType<typeof projection>> } {
  const calibrationCase = (entry: Case): CalibrationCase => {
    const unit = projection(entry.model, entry.args, bandwidthGBps, UNIT_CPU_FACTORS);
    return {
      label: entry.modelLabel,
      layers: entry.model.arch.layers,
      measured: measured.get(entry.key)!,
      unit: unit.estimate.projection,
      unitPrefill: unit.prefill,
    };
  };
  const fit = fitCpuFactors(
    calibrationCase(cases[1]!),
    calibrationCase(cases[0]!),
    catalog.efficiency.cpu.decodeSecondsPerLayer.value,
    (labels) => `fitted on this machine by npm run bench:rpc (single host, -t 1: ${labels})`,
  );
  const projected = new Map(
    cases.map((entry) => [
      entry.key,
      entry.link
        ? projection(entry.model, entry.args, bandwidthGBps, fit.factors, { endpoints, link: linkOf(entry.link) })
        : projection(entry.model, entry.args, bandwidthGBps, fit.factors),
    ]),
  );
  return { fit, projected };
}

/** Everything the report and the results file read. */
interface Results extends LinkMeasurement {
  started: number;
  timedMs: number;
  splitModel: LocalModel;
  endpoints: string[];
  cases: Case[];
  split: HeadServer;
  splitBuffers: ReturnType<typeof parseBuffers>;
  bandwidths: number[];
  bandwidthGBps: number;
  load: Load;
  measured: Map<string, Rates>;
  traces: Map<string, PerToken>;
  commands: CommandCounts[];
  fit: ReturnType<typeof fitCpuFactors>;
  projected: Map<string, ReturnType<typeof projection>>;
}

/** Link, heads, interleaved rounds, traces, then (the timed cluster stopped) the command count and the projections. */
async function measureAll(cluster: RpcCluster, models: Models, started: number): Promise<Results> {
  const splitModel = models.large;
  const endpoints = cluster.workers.map((worker) => worker.endpoint);
  const splitArgs = [...FLAGS, ...SPLIT, "--rpc", endpoints.join(",")];
  const setRate = rateSetter(cluster);
  const link = await measureLinks(cluster, setRate);
  const { cases, split, splitBuffers } = await startHeads(cluster, models, endpoints, splitArgs);
  for (const entry of cases) {
    setRate(entry.link);
    await entry.server.complete(completionBody(entry.model.arch.vocabSize, ROUNDS, 8));
  }
  const { bandwidths, load } = await runRounds(cluster, cases, setRate);
  const bandwidthGBps = median(bandwidths);
  const measured = new Map(
    cases.map((entry) => [
      entry.key,
      { decode: median(entry.runs.map((run) => run.decode)), prefill: median(entry.runs.map((run) => run.prefill)) },
    ]),
  );
  const traces = await traceCases(cluster, cases, setRate);
  const timedMs = Date.now() - started;
  await cluster.stop();
  const commands = await countCommands(splitModel, [...FLAGS, ...SPLIT]);
  const { fit, projected } = projectCases(cases, measured, bandwidthGBps, endpoints, link.linkOf);
  return {
    ...link,
    started,
    timedMs,
    splitModel,
    endpoints,
    cases,
    split,
    splitBuffers,
    bandwidths,
    bandwidthGBps,
    load,
    measured,
    traces,
    commands,
    fit,
    projected,
  };
}

// ---------------------------------------------------------------- report
/** The machine, its load, the split's model and the fitted factors; then the link table. */
function reportSetup(lines: string[], r: Results): void {
  const { bandwidthGBps, load, splitModel, fit, roundTrips, linkOf } = r;
  lines.push(
    `Machine: ${machine.cores} cores, ${(machine.ramBytes / 1024 ** 3).toFixed(1)} GiB; read bandwidth ${fixed(bandwidthGBps)} GB/s (tools/membw.c, ${machine.cores} threads, median of one probe per round). Every process -t 1.`,
  );
  lines.push(
    `While the rounds' requests ran (${fixed(load.wallSeconds, 0)} s): the machine's ${machine.cores} cores were busy ${fixed(load.busySeconds / load.wallSeconds, 2)} cores on average, this bench's processes ${fixed(load.ownSeconds / load.wallSeconds, 2)}, other processes ${fixed(Math.max(0, load.busySeconds - load.ownSeconds) / load.wallSeconds, 2)}; steal ${fixed(load.stealSeconds / load.wallSeconds, 2)} cores. A split's processes wake each other many times a token (wake-ups below), and each wake-up waits when the cores are taken, so other processes slow the split more than the single host.`,
  );
  lines.push(
    `Model of the split: large q2-experts (${splitModel.arch.llamaCppArch}, ${splitModel.arch.layers} layers, hidden ${splitModel.arch.hiddenSize}, ${fixed(splitModel.bytes / MiB)} MiB). Head flags: ${FLAGS.join(" ")}; split adds ${SPLIT.join(" ")} --rpc <w1>,<w2>.`,
  );
  lines.push(
    `CPU factors (bench/lib/calibrate.ts, on the two single-host cases): decode ${fixed(fit.factors.decodeEfficiency!, 3)} of the measured bandwidth + ${fixed(fit.perLayerSeconds * 1e6, 0)} µs per layer per token${fit.fitted ? "" : " (catalog/efficiency.yaml: the two-case fit was not physical)"}; prefill ${fixed(fit.factors.prefillEfficiency!, 4)} of fp32 peak.`,
  );
  lines.push("");
  lines.push("### Link (head → worker, TCP with Nagle off, 1-byte request and reply; median of 400, p10–p90)");
  lines.push("");
  lines.push("| link | round trip to w1 µs | round trip to w2 µs | projection's link |");
  lines.push("|---|---:|---:|---|");
  for (const link of LINKS) {
    const [a, b] = roundTrips.get(link)!;
    const cell = (trip: RoundTrip) =>
      `${fixed(trip.medianMicroseconds)} (${fixed(trip.p10Microseconds)}–${fixed(trip.p90Microseconds)})`;
    lines.push(`| ${link.name} | ${cell(a!)} | ${cell(b!)} | ${linkOf(link).basis} |`);
  }
}

/** Measured vs projected speed of every configuration. */
function reportSpeed(lines: string[], r: Results): void {
  lines.push("");
  lines.push(
    `### Speed: measured (llama-server timings, median of ${ROUNDS} interleaved rounds) vs estimate() of the same command line`,
  );
  lines.push("");
  lines.push(
    `Decode: ${GENERATED_TOKENS} tokens after a ${PROMPT_TOKENS}-token prompt (projected at depth ${DECODE_DEPTH}); prefill: the ${PROMPT_TOKENS}-token prompt. Ratio = projected ÷ measured.`,
  );
  lines.push("");
  lines.push("| configuration | measured decode t/s | projected | ratio | measured prefill t/s | projected | ratio |");
  lines.push("|---|---:|---:|---:|---:|---:|---:|");
  for (const entry of r.cases) {
    const m = r.measured.get(entry.key)!;
    const p = r.projected.get(entry.key)!;
    lines.push(
      `| ${entry.label} | ${fixed(m.decode)} | ${fixed(p.decode)} | ${ratioCell(p.decode, m.decode)} | ${fixed(m.prefill)} | ${fixed(p.prefill)} | ${ratioCell(p.prefill, m.prefill)} |`,
    );
  }
}

/** The gated table: split ÷ single host, projected vs measured, at every link rate; a miss is a failure. */
function reportSplitRatio(lines: string[], r: Results, failures: string[]): void {
  const singleMeasured = r.measured.get("single-large")!;
  const singleProjected = r.projected.get("single-large")!;
  lines.push("");
  lines.push(
    `### Split ÷ single host (large q2-experts): the planner's verdicts rest on this. Gate: projected within ±${GATE * 100}% of measured, decode and prefill, at every link rate.`,
  );
  lines.push("");
  lines.push(
    "| link | decode measured | decode projected | off by | prefill measured | prefill projected | off by | gate |",
  );
  lines.push("|---|---:|---:|---:|---:|---:|---:|---|");
  for (const link of LINKS) {
    const key = `split ${link.name}`;
    const m = r.measured.get(key)!;
    const p = r.projected.get(key)!;
    const decodeMeasured = m.decode / singleMeasured.decode;
    const decodeProjected = p.decode / singleProjected.decode;
    const prefillMeasured = m.prefill / singleMeasured.prefill;
    const prefillProjected = p.prefill / singleProjected.prefill;
    const decodeOff = decodeProjected / decodeMeasured - 1;
    const prefillOff = prefillProjected / prefillMeasured - 1;
    const missed: string[] = [];
    if (Math.abs(decodeOff) > GATE) missed.push("decode");
    if (Math.abs(prefillOff) > GATE) missed.push("prefill");
    for (const phase of missed)
      failures.push(
        `split ÷ single ${phase} at ${link.name}: projected ${fixed(phase === "decode" ? decodeProjected : prefillProjected, 3)} vs measured ${fixed(phase === "decode" ? decodeMeasured : prefillMeasured, 3)} (more than ${GATE * 100}% off)`,
      );
    const pct = (value: number) => `${value >= 0 ? "+" : ""}${fixed(value * 100)}%`;
    lines.push(
      `| ${link.name} | ${fixed(decodeMeasured, 3)} | ${fixed(decodeProjected, 3)} | ${pct(decodeOff)} | ${fixed(prefillMeasured, 3)} | ${fixed(prefillProjected, 3)} | ${pct(prefillOff)} | ${missed.length === 0 ? "pass" : `MISSED (${missed.join(", ")})`} |`,
    );
  }
}

/** A decoded token's projected network seconds in a case. */
function projectedNetworkSeconds(r: Results, key: string): number {
  return r.projected
    .get(key)!
    .estimate.projection.decodeTraffic.reduce((sum, traffic) => sum + (traffic.networkSecondsPerToken ?? 0), 0);
}

/** Per decoded token: measured time, CPU, run-queue wait, wake-ups and segments of each traced case. */
function reportTokenTime(lines: string[], r: Results): void {
  const singleMeasured = r.measured.get("single-large")!;
  lines.push("");
  lines.push("### Where a decoded token's time goes (large q2-experts)");
  lines.push("");
  lines.push(
    `Measured ms/token: the rounds' median. The rest: kernel counters differenced over a 1-token and a ${1 + TRACE_TOKENS}-token request after a ${TRACE_PROMPT_TOKENS}-token prompt, per decoded token: CPU time, run-queue wait (runnable, no core free) and wake-ups (threads switched in) of each process from /proc/PID/task/*/schedstat; data segments (sent + received) from ss -tin on the head's connection to each worker.`,
  );
  lines.push("");
  lines.push(
    "| configuration | measured ms/token | − single | projected network | CPU head / w1 / w2 | CPU all − single | run-queue wait head / w1 / w2 | wake-ups head / w1 / w2 | data segments w1, w2 |",
  );
  lines.push("|---|---:|---:|---:|---|---:|---|---|---|");
  const singleTrace = r.traces.get("single-large")!;
  const cpuAll = (trace: PerToken) => trace.head.cpuSeconds + trace.w1.cpuSeconds + trace.w2.cpuSeconds;
  for (const entry of r.cases.filter((item) => r.traces.has(item.key))) {
    const trace = r.traces.get(entry.key)!;
    const seconds = 1 / r.measured.get(entry.key)!.decode;
    const network = projectedNetworkSeconds(r, entry.key);
    const segments = trace.tcp.map((tcp) => fixed(tcp.dataSegsOut + tcp.dataSegsIn)).join(", ");
    const three = (pick: (counters: SchedCounters) => number, format: (value: number) => string) =>
      [trace.head, trace.w1, trace.w2].map((counters) => format(pick(counters))).join(" / ");
    lines.push(
      `| ${entry.label} | ${ms(seconds)} | ${ms(seconds - 1 / singleMeasured.decode)} | ${ms(network)} | ${three((c) => c.cpuSeconds, ms)} | ${ms(cpuAll(trace) - cpuAll(singleTrace))} | ${three((c) => c.runqueueWaitSeconds, ms)} | ${three(
        (c) => c.switches,
        (v) => fixed(v),
      )} | ${entry.link ? segments : "-"} |`,
    );
  }
  lines.push("", "(All times in ms per decoded token.)");
}

/** The RPC commands each worker serves per decode step, and what the projection leaves unexplained per command. */
function reportCommands(lines: string[], r: Results): void {
  const { commands } = r;
  const singleMeasured = r.measured.get("single-large")!;
  lines.push("");
  lines.push(
    `RPC commands each worker serves per decode step (GGML_RPC_DEBUG=1, a separate run of the same command line, last ${COUNT_STEPS} steps of a ${COUNT_REQUEST_TOKENS}-token request; payload bytes per step in brackets). set_tensor and graph_recompute have no reply; get_tensor waits for the worker's compute and its reply.`,
  );
  lines.push("");
  const commandTotal = commands.reduce(
    (sum, worker) => sum + Object.values(worker.perStep).reduce((a, b) => a + b, 0),
    0,
  );
  for (const [index, worker] of commands.entries()) {
    lines.push(
      `- RPC${index} (w${index + 1}): ${Object.entries(worker.perStep)
        .map(
          ([name, count]) =>
            `${name} ${fixed(count, 2)}${worker.bytesPerStep[name] ? ` [${fixed(worker.bytesPerStep[name]!, 0)} B]` : ""}`,
        )
        .join(", ")}`,
    );
  }
  const splitProjection = r.projected.get(`split ${LINKS[0]!.name}`)!.estimate.projection;
  const roundTripsProjected = splitProjection.decodeTraffic.filter((traffic) => isRpcDevice(traffic.device)).length;
  lines.push(
    `- per token, both workers: ${fixed(commandTotal, 2)} commands; the projection charges ${roundTripsProjected} round trips (one per visit), the bytes, and each command's host time (rpc.tcpSecondsPerCommand, catalog/efficiency.yaml).`,
  );
  for (const link of LINKS) {
    const key = `split ${link.name}`;
    const gap = 1 / r.measured.get(key)!.decode - 1 / singleMeasured.decode;
    const network = projectedNetworkSeconds(r, key);
    lines.push(
      `- ${link.name}: measured split − single ${ms(gap)} ms/token, projected network ${ms(network)} ms/token; what the projection leaves unexplained, ${ms(gap - network)} ms, is ${fixed(((gap - network) / commandTotal) * 1e6)} µs per command on top of the catalog's.`,
    );
  }
}

/** The split head's buffers per device, estimate() vs llama-server's log. */
function reportBuffers(lines: string[], r: Results): void {
  const { splitBuffers } = r;
  lines.push("");
  lines.push("### Buffers per device of the split head (estimate() vs llama-server -lv 4), MiB");
  lines.push("");
  lines.push("| device | model (pred / log) | KV (pred / log) | compute (pred / log) | compute off by |");
  lines.push("|---|---:|---:|---:|---:|");
  const splitEstimate = r.projected.get(`split ${LINKS[0]!.name}`)!.estimate;
  for (const device of ["CPU", ...r.endpoints.map(rpcDeviceName)]) {
    const planned = splitEstimate.devices.find((entry) => entry.device === device);
    if (!planned) continue;
    const model =
      (device === "CPU"
        ? (splitBuffers.model.CPU ?? 0) + (splitBuffers.model.CPU_Mapped ?? 0)
        : (splitBuffers.model[device] ?? 0)) / MiB;
    const predictedModel =
      (planned.mappedBytes > 0 ? planned.mappedBytes : planned.modelBytes + planned.repackBytes) / MiB;
    const kv = (splitBuffers.kv[device] ?? 0) / MiB;
    const compute = (splitBuffers.compute[device] ?? 0) / MiB;
    const predictedCompute = planned.computeBytes / MiB;
    lines.push(
      `| ${device} | ${fixed(predictedModel, 2)} / ${fixed(model, 2)} | ${fixed(planned.kvBytes / MiB, 2)} / ${fixed(kv, 2)} | ${fixed(predictedCompute, 2)} / ${fixed(compute, 2)} | ${compute > 0 ? `${fixed((predictedCompute / compute - 1) * 100)}%` : "-"} |`,
    );
  }
  if (/pipeline parallelism enabled/.test(r.split.log()))
    lines.push(
      "",
      '(llama.cpp logged "pipeline parallelism enabled" for the split: its scheduler keeps several copies of the split inputs.)',
    );
}

/** The whole markdown report; a missed gate is added to failures. */
function reportText(r: Results, failures: string[]): string {
  const lines: string[] = [];
  reportSetup(lines, r);
  reportSpeed(lines, r);
  reportSplitRatio(lines, r, failures);
  reportTokenTime(lines, r);
  reportCommands(lines, r);
  reportBuffers(lines, r);
  lines.push("");
  lines.push(
    `Runtime: ${fixed((Date.now() - r.started) / 1000, 0)} s (${fixed(r.timedMs / 1000, 0)} s up to the end of the timed cluster, then the command count).`,
  );
  lines.push("");
  lines.push(
    failures.length === 0
      ? "Gates: all passed."
      : `Gates: ${failures.length} MISSED:\n${failures.map((failure) => `- ${failure}`).join("\n")}`,
  );
  return lines.join("\n");
}

function writeResults(r: Results, failures: string[]): void {
  const { measured, projected } = r;
  // Results are run output, not source: an ignored folder by default (.gitignore: bench/out/).
  const out = options.out ?? join(__dirname, "out", "rpc.json");
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(
    out,
    `${JSON.stringify(
      {
        generatedAt: new Date().toISOString(),
        rounds: ROUNDS,
        bandwidthGBps: r.bandwidthGBps,
        bandwidths: r.bandwidths,
        vethGbit: r.vethGbit,
        load: r.load,
        cpuFactors: r.fit.factors,
        gate: GATE,
        failures,
        roundTrips: Object.fromEntries(LINKS.map((link) => [link.name, r.roundTrips.get(link)])),
        cases: r.cases.map((entry) => ({
          key: entry.key,
          args: entry.args,
          runs: entry.runs,
          measured: measured.get(entry.key),
          projected: {
            decode: projected.get(entry.key)!.decode,
            prefill: projected.get(entry.key)!.prefill,
            decodeTraffic: projected.get(entry.key)!.estimate.projection.decodeTraffic,
          },
          perToken: r.traces.get(entry.key),
        })),
        commands: r.commands,
        buffers: r.splitBuffers,
      },
      null,
      1,
    )}\n`,
  );
}

async function main(): Promise<void> {
  const unavailable = netnsUnavailable();
  if (unavailable) {
    console.error(`bench:rpc cannot run here: ${unavailable}`);
    process.exitCode = 1;
    return;
  }
  const started = Date.now();
  const workDir = benchModelsDir();
  mkdirSync(workDir, { recursive: true });
  const models = await prepareModels(workDir);

  const cluster = await startRpcCluster({ threads: 1 });
  const failures: string[] = [];
  try {
    const results = await measureAll(cluster, models, started);
    console.log(reportText(results, failures));
    writeResults(results, failures);
  } finally {
    // Idempotent: the timed cluster may already be stopped.
    await cluster.stop();
  }
  if (failures.length > 0) process.exitCode = 1;
}

main().catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});
