/** Renders Plans: the full text report, the --compare offer table, and the --json objects. */
import { loadLine } from "./cluster";
import { shellQuote } from "./shell";
import type { DeviceMemory } from "./memory";
import { hostInputs, type HostInput } from "./inputs";
import type { Chargeback } from "./fleet";
import type { FleetServing } from "./fleet-serving";
import type { Plan } from "./plan";
import { formatBytes, formatDuration, formatGiB, formatTokens, formatUsd } from "./units";

export interface PlanJson {
  stack: string;
  fits: boolean;
  refusal?: string;
  model: { repo: string; tier: string; bytes: number; tensorSource: string };
  host: { label: string; kind: string; ramBytes: number; gpus: string[]; memoryBandwidthBytesPerSecond: number };
  /** Each host input with its source; `assumption` marks catalog and default figures. */
  hostInputs: HostInput[];
  mode: string;
  devices: {
    name: string;
    label: string;
    capacityBytes: number;
    plannedBytes: number;
    modelBytes: number;
    repackBytes: number;
    kvBytes: number;
    recurrentBytes: number;
    checkpointBytes: number;
    computeBytes: number;
    promptCacheBytes: number;
    headroomBytes: number;
  }[];
  llamaServerArgs: string[];
  image: string;
  shards: { count: number; firstShard: string; verified: boolean };
  projection: {
    decodeTokensPerSecond: number;
    decodeDepthTokens: number;
    prefillTokensPerSecond: number;
    ttft32kSeconds: number;
    decodeByDepth: { depthTokens: number; tokensPerSecond: number }[];
    // Added for the HTML report; optional because a plan JSON written by an older checkout (a diff's
    // "before" side) lacks it.
    /** The prompt length prefillTokensPerSecond was projected for. */
    prefillPromptTokens?: number;
    /** The prompt length ttft32kSeconds was projected for (the stack's projection.ttftPromptTokens). */
    ttftPromptTokens?: number;
    prefillByPrompt?: { promptTokens: number; seconds: number; tokensPerSecond: number }[];
  };
  /** null when the stack sets no costs; costOmitted then says so. */
  cost: {
    monthlyUsd: number;
    usdPerMillionOutputTokens: number;
    capacityTokensPerMonth: number;
    breakEvenTokensPerMonth: number | null;
    breakEvenReason: string;
    apiMonthlyUsdAtExpected: number;
    // Added for the HTML report's cost chart (the API line's slope and the expected volume); optional
    // for the same reason as projection.prefillByPrompt.
    /** What the API charges per 1M tokens at the stack's input:output mix. */
    apiUsdPerMillionTokensAtMix?: number;
    /** What self-hosting costs per 1M tokens at that mix, the host serving its full capacity. */
    usdPerMillionTokensAtMix?: number;
    /** The stack's costs.usage.tokensPerMonth. */
    expectedTokensPerMonth?: number;
    /** The share of the month the capacity assumes the host busy (costs.usage.utilization). */
    utilization?: number;
  } | null;
  costOmitted?: string;
  alternatives?: { tiersThatFit: string[]; maxContextPerSlotThatFits: number | null };
  seedChecks: Plan["seedChecks"];
  cluster?: {
    head: { id: string; privateAddress: string; layers: number };
    link: { gbitPerSecond: number; roundTripMicroseconds: number; transport: string };
    workers: {
      id: string;
      endpoint: string;
      device: string;
      layers: number;
      holdsOutput: boolean;
      plannedBytes: number;
      capacityBytes: number;
      fits: boolean;
    }[];
    shippedBytes: number;
    loadSeconds: number;
    networkSecondsPerToken: number;
  };
  /** Replicas behind one endpoint (planner/fleet.ts); absent when the stack sets neither fleet nor teams. */
  fleet?: FleetJson;
  teams?: TeamJson[];
}

export interface FleetJson {
  replicas: number;
  sizedBy: "stack" | "auto";
  basis: string[];
  slotsPerReplica: number;
  perReplica: {
    aggregateDecodeTokensPerSecond: number;
    perSlotDecodeTokensPerSecond: number;
    singleStreamDecodeTokensPerSecond: number;
    prefillTokensPerSecond: number;
    capacityTokensPerMonth: number | null;
    monthlyUsd: number | null;
  };
  aggregateDecodeTokensPerSecond: number;
  capacityTokensPerMonth: number | null;
  monthlyUsd: number | null;
  tokensPerAnswer: number;
  answerSecondsAtFullLoad: number;
  peakConcurrentRequests: number | null;
  latencyTargetSeconds: number | null;
  slotsWithinLatency: number | null;
  hosts: { id: string; privateAddress: string }[];
  chargeback: Chargeback | null;
}

/** Budget figures are null without a budget (or without costs); Infinity never reaches JSON. */
export interface TeamJson {
  name: string;
  rpm: number;
  tpm: number | null;
  monthlyBudgetUsd: number | null;
  budgetTokensPerMonth: number | null;
  apiTokensForBudget: number | null;
}

export function fleetToJson(plan: Pick<Plan, "fleet" | "teams">): { fleet?: FleetJson; teams?: TeamJson[] } {
  const finite = (value: number | undefined) => (value !== undefined && Number.isFinite(value) ? value : null);
  const { fleet, teams } = plan;
  return {
    ...(fleet
      ? {
          fleet: {
            replicas: fleet.replicas,
            sizedBy: fleet.sizedBy,
            basis: fleet.basis,
            slotsPerReplica: fleet.replica.slots,
            perReplica: {
              aggregateDecodeTokensPerSecond: fleet.replica.aggregateDecodeTokensPerSecond,
              perSlotDecodeTokensPerSecond: fleet.replica.perSlotDecodeTokensPerSecond,
              singleStreamDecodeTokensPerSecond: fleet.replica.singleStreamDecodeTokensPerSecond,
              prefillTokensPerSecond: fleet.replica.prefillTokensPerSecond,
              capacityTokensPerMonth: finite(fleet.cost?.replicaCapacityTokensPerMonth),
              monthlyUsd: finite(fleet.cost?.replicaMonthlyUsd),
            },
            aggregateDecodeTokensPerSecond: fleet.aggregateDecodeTokensPerSecond,
            capacityTokensPerMonth: finite(fleet.cost?.capacityTokensPerMonth),
            monthlyUsd: finite(fleet.cost?.monthlyUsd),
            tokensPerAnswer: fleet.tokensPerAnswer,
            answerSecondsAtFullLoad: fleet.answerSecondsAtFullLoad,
            peakConcurrentRequests: fleet.peakConcurrentRequests ?? null,
            latencyTargetSeconds: fleet.latencyTargetSeconds ?? null,
            slotsWithinLatency: fleet.slotsWithinLatency ?? null,
            hosts: fleet.hosts.map((host) => ({ id: host.id, privateAddress: host.privateAddress })),
            chargeback: fleet.chargeback ?? null,
          },
        }
      : {}),
    ...(teams
      ? {
          teams: teams.map((team) => ({
            name: team.name,
            rpm: team.rpm,
            tpm: team.tpm ?? null,
            monthlyBudgetUsd: team.monthlyBudgetUsd ?? null,
            budgetTokensPerMonth: finite(team.budgetTokensPerMonth),
            apiTokensForBudget: finite(team.apiTokensForBudget),
          })),
        }
      : {}),
  };
}

/** Where the fleet runs: the gateway, each replica's listener and firewall, Prometheus. */
function renderFleetServing(serving: FleetServing): string[] {
  const { gateway, replicas, monitoring } = serving;
  const listen = `${gateway.input.listen.address}:${gateway.input.listen.port}`;
  const admits = gateway.firewall
    ? `, admits ${gateway.firewall.allow[0]!.cidrs.join(", ")}`
    : " (loopback: through an SSH tunnel)";
  const out = [
    `  gateway      HAProxy on ${gateway.hostId}, the only public listener: ${gateway.endpointScheme} on ${listen} (TLS ${gateway.tlsSource})${admits}; team keys checked at the edge, requests/min per team, ${gateway.input.balance ?? "leastconn"} with health checks over ${replicas.length} replica(s)`,
  ];
  for (const replica of replicas) {
    const usage = replica.usage;
    const firewall = replica.firewall
      ? `; ports ${replica.firewall.allow.map((rule) => rule.port).join(", ")} admit only ${replica.firewall.allow[0]!.cidrs.join(", ")} (nftables table ${replica.firewall.table})`
      : " (loopback, on the gateway's host)";
    out.push(
      `  ${replica.id.padEnd(12)} usage exporter on ${usage.listen.address}:${usage.listen.port} (per-team tokens, /metrics on ${usage.metrics.port}) → llama-server on ${replica.listen.address}:${replica.listen.port}${firewall}`,
    );
  }
  out.push(
    `  monitoring   Prometheus on ${gateway.hostId} ${monitoring.listen.address}:${monitoring.listen.port}: every replica's /metrics, the usage exporters and the gateway's exporter (${gateway.input.stats.address}:${gateway.input.stats.port}); alerts: replica down, slots saturated, deferred requests, decode below 70% of the projection, team budgets`,
  );
  if (serving.notDeployable) out.push(`  not deployable: ${serving.notDeployable}`);
  return out;
}

/** The fleet and teams section of the text report; empty when the stack sets neither. */
export function renderFleet(plan: Pick<Plan, "fleet" | "teams" | "fleetServing">): string[] {
  const { fleet, teams, fleetServing } = plan;
  const out: string[] = [];
  if (fleet) {
    const replica = fleet.replica;
    out.push(
      `Fleet: ${fleet.replicas} replica(s) of this host${fleet.sizedBy === "auto" ? " (sized by the planner: replicas auto)" : ""}${fleet.hosts.length > 0 ? ` — ${fleet.hosts.map((host) => `${host.id} ${host.privateAddress}`).join(", ")}` : ""}`,
    );
    out.push(
      `  per replica  ${replica.aggregateDecodeTokensPerSecond.toFixed(2)} tok/s decode with ${replica.slots} slot(s) busy (${replica.perSlotDecodeTokensPerSecond.toFixed(2)} per slot; ${replica.singleStreamDecodeTokensPerSecond.toFixed(2)} alone)` +
        (replica.bySlots.length > 1
          ? `; by slots busy: ${replica.bySlots.map((entry) => `${entry.slots} → ${entry.aggregateDecodeTokensPerSecond.toFixed(2)}`).join(", ")}`
          : ""),
    );
    out.push(
      `  fleet        ${fleet.aggregateDecodeTokensPerSecond.toFixed(2)} tok/s decode, ${fleet.replicas * replica.slots} request(s) at once; an answer of ${fleet.tokensPerAnswer} tokens takes ${formatDuration(fleet.answerSecondsAtFullLoad)} with every slot busy (decode only; TTFT above)`,
    );
    for (const line of fleet.basis) out.push(`  sizing       ${line}`);
    if (fleet.cost) {
      out.push(
        `  cost         ${formatUsd(fleet.cost.monthlyUsd)}/month = ${fleet.replicas} × ${formatUsd(fleet.cost.replicaMonthlyUsd)}; capacity ${formatTokens(fleet.cost.capacityTokensPerMonth)} tokens/month (${formatTokens(fleet.cost.replicaCapacityTokensPerMonth)} per replica) at ${Math.round(fleet.cost.utilization * 100)}% utilization`,
      );
    }
    if (fleet.chargeback) {
      const charge = fleet.chargeback;
      out.push(
        `  chargeback   per 1M tokens: input ${formatUsd(charge.usdPerMillionInput)}, output ${formatUsd(charge.usdPerMillionOutput)}, ${formatUsd(charge.usdPerMillionAtMix)} at the stack's mix — API: input ${formatUsd(charge.apiUsdPerMillionInput)}, output ${formatUsd(charge.apiUsdPerMillionOutput)}, ${formatUsd(charge.apiUsdPerMillionAtMix)} at the mix`,
      );
    }
  }
  if (fleetServing) out.push(...renderFleetServing(fleetServing));
  if (teams) {
    out.push(`Teams (${teams.length}):`);
    for (const team of teams) {
      // HAProxy never sees token counts: tpm is enforced after the fact from Prometheus' counters
      // (tools/token-limiter.ts).
      const limits = `${team.rpm} requests/min${team.tpm !== undefined ? `, ${formatTokens(team.tpm)} tokens/min (enforced after the fact: blocked within ~25 s of crossing it)` : ""}`;
      const budget =
        team.monthlyBudgetUsd === undefined
          ? "no budget"
          : `budget ${formatUsd(team.monthlyBudgetUsd)}/month buys ${team.budgetTokensPerMonth === undefined ? "?" : Number.isFinite(team.budgetTokensPerMonth) ? formatTokens(team.budgetTokensPerMonth) : "unlimited"} tokens/month here (${team.apiTokensForBudget === undefined ? "?" : Number.isFinite(team.apiTokensForBudget) ? formatTokens(team.apiTokensForBudget) : "unlimited"} at the API)`;
      out.push(`  ${team.name.padEnd(16)} ${limits}; ${budget}`);
    }
  }
  return out;
}

export function planToJson(plan: Plan): PlanJson {
  return {
    stack: plan.stack,
    fits: plan.fits,
    ...(plan.refusal ? { refusal: plan.refusal } : {}),
    model: { repo: plan.model.repo, tier: plan.tier.name, bytes: plan.modelBytes, tensorSource: plan.tensorSource },
    host: {
      label: plan.host.label,
      kind: plan.host.kind,
      ramBytes: plan.host.memory.totalBytes,
      gpus: plan.host.gpus.map((gpu) => gpu.name),
      memoryBandwidthBytesPerSecond: plan.host.memory.achievableBandwidth,
    },
    hostInputs: hostInputs(plan),
    mode: plan.placement.mode,
    devices: devicesToJson(plan),
    llamaServerArgs: plan.llamaServerArgs,
    image: plan.image,
    shards: { count: plan.shards.count, firstShard: plan.shards.firstShard, verified: plan.shards.verified },
    projection: projectionToJson(plan),
    cost: costToJson(plan),
    ...(plan.costOmitted ? { costOmitted: plan.costOmitted } : {}),
    ...(plan.alternatives ? { alternatives: plan.alternatives } : {}),
    seedChecks: plan.seedChecks,
    ...(plan.cluster ? { cluster: clusterToJson(plan.cluster) } : {}),
    ...fleetToJson(plan),
  };
}

function devicesToJson(plan: Plan): PlanJson["devices"] {
  return plan.placement.memory.map((device) => ({
    name: device.device,
    label: device.label,
    capacityBytes: device.capacityBytes,
    plannedBytes: device.plannedBytes,
    modelBytes: device.modelBytes,
    repackBytes: device.repackBytes,
    kvBytes: device.kvBytes,
    recurrentBytes: device.recurrentBytes,
    checkpointBytes: device.checkpointBytes,
    computeBytes: device.computeBytes,
    promptCacheBytes: device.promptCacheBytes,
    headroomBytes: device.headroomBytes,
  }));
}

function projectionToJson(plan: Plan): PlanJson["projection"] {
  return {
    decodeTokensPerSecond: plan.projection.decodeTokensPerSecond,
    decodeDepthTokens: plan.projection.decodeDepthTokens,
    prefillTokensPerSecond: plan.projection.prefillTokensPerSecond,
    ttft32kSeconds: plan.projection.ttftSeconds,
    decodeByDepth: plan.projection.decodeByDepth,
    prefillPromptTokens: plan.projection.prefillPromptTokens,
    ttftPromptTokens: plan.projection.ttftPromptTokens,
    prefillByPrompt: plan.projection.prefillByPrompt,
  };
}

function costToJson(plan: Plan): PlanJson["cost"] {
  return plan.cost
    ? {
        monthlyUsd: plan.cost.monthlyUsd,
        usdPerMillionOutputTokens: plan.cost.usdPerMillionOutputTokens,
        capacityTokensPerMonth: plan.cost.capacityTokensPerMonth,
        breakEvenTokensPerMonth: plan.cost.breakEvenTokensPerMonth,
        breakEvenReason: plan.cost.breakEvenReason,
        apiMonthlyUsdAtExpected: plan.cost.apiMonthlyUsdAtExpected,
        apiUsdPerMillionTokensAtMix: plan.cost.apiUsdPerMillionTokensAtMix,
        // Infinite when the host serves nothing; JSON would turn that into null, so it is left out.
        ...(Number.isFinite(plan.cost.usdPerMillionTokensAtMix)
          ? { usdPerMillionTokensAtMix: plan.cost.usdPerMillionTokensAtMix }
          : {}),
        expectedTokensPerMonth: plan.cost.expectedTokensPerMonth,
        utilization: plan.cost.utilization,
      }
    : null;
}

function clusterToJson(cluster: NonNullable<Plan["cluster"]>): NonNullable<PlanJson["cluster"]> {
  return {
    head: {
      id: cluster.head.id,
      privateAddress: cluster.head.privateAddress,
      layers: cluster.head.layers.length,
    },
    link: {
      gbitPerSecond: cluster.link.gbitPerSecond,
      roundTripMicroseconds: cluster.link.roundTripMicroseconds,
      transport: cluster.link.transport,
    },
    workers: cluster.workers.map((worker) => ({
      id: worker.id,
      endpoint: worker.endpoint,
      device: worker.device,
      layers: worker.layers.length,
      holdsOutput: worker.holdsOutput,
      plannedBytes: worker.memory.plannedBytes,
      capacityBytes: worker.memory.capacityBytes,
      fits: worker.memory.fits,
    })),
    shippedBytes: cluster.shippedBytes,
    loadSeconds: cluster.loadSeconds,
    networkSecondsPerToken: cluster.networkSecondsPerToken,
  };
}

export function renderCommandLine(plan: Plan): string {
  const lines: string[] = ["llama-server"];
  let current = "";
  for (const arg of plan.llamaServerArgs) {
    if (arg.startsWith("--")) {
      if (current) lines.push(current);
      current = `  ${arg}`;
    } else current += ` ${shellQuote([arg])}`; // the -ot rules carry regex metacharacters
  }
  if (current) lines.push(current);
  return lines.join(" \\\n");
}

function table(rows: string[][], alignRight: boolean[] = []): string {
  const widths = rows[0]!.map((_, column) => Math.max(...rows.map((row) => (row[column] ?? "").length)));
  return rows
    .map((row, index) => {
      const line = row
        .map((cell, column) => (alignRight[column] ? cell.padStart(widths[column]!) : cell.padEnd(widths[column]!)))
        .join("  ");
      return index === 0 ? `${line}\n${widths.map((width) => "-".repeat(width)).join("  ")}` : line;
    })
    .join("\n")
    .replace(/ +$/gm, "");
}

/** Per-device bytes by kind, the table the plan and `--args`/`--gguf` estimates both print. */
export function renderMemoryTable(devices: readonly DeviceMemory[]): string {
  // Hybrid and sliding-window models get their recurrent state and context checkpoints as columns of
  // their own; other models' tables stay as they were.
  const recurrent = devices.some((device) => device.recurrentBytes > 0);
  const checkpoints = devices.some((device) => device.checkpointBytes > 0);
  const row = (cells: { kv: string; rs: string; cp: string }, before: string[], after: string[]) => [
    ...before,
    cells.kv,
    ...(recurrent ? [cells.rs] : []),
    ...after.slice(0, 2),
    ...(checkpoints ? [cells.cp] : []),
    ...after.slice(2),
  ];
  return table(
    [
      row(
        { kv: "KV", rs: "recurrent", cp: "checkpoints" },
        ["device", "capacity", "weights", "repacked"],
        ["compute", "prompt cache", "headroom", "planned", "fits"],
      ),
      ...devices.map((device) =>
        row(
          {
            kv: formatGiB(device.kvBytes, 2),
            rs: formatGiB(device.recurrentBytes, 2),
            cp: formatGiB(device.checkpointBytes),
          },
          [
            `${device.device} ${device.label}`,
            formatGiB(device.capacityBytes),
            `${formatGiB(device.modelBytes)}${device.mappedBytes > 0 ? ` (mmap span ${formatGiB(device.mappedBytes)})` : ""}`,
            formatGiB(device.repackBytes),
          ],
          [
            formatGiB(device.computeBytes, 2),
            formatGiB(device.promptCacheBytes),
            formatGiB(device.headroomBytes),
            formatGiB(device.plannedBytes),
            device.fits ? "yes" : "NO",
          ],
        ),
      ),
    ],
    row({ kv: "r", rs: "r", cp: "r" }, ["l", "r", "r", "r"], ["r", "r", "r", "r", "l"]).map((align) => align === "r"),
  );
}

/** "0–30" for a run of layers, "none" for no layer. */
function rangeText(layers: readonly number[]): string {
  if (layers.length === 0) return "none";
  const runs: string[] = [];
  let start = layers[0]!;
  for (let i = 1; i <= layers.length; i++) {
    if (layers[i] !== layers[i - 1]! + 1) {
      runs.push(start === layers[i - 1] ? `${start}` : `${start}–${layers[i - 1]}`);
      start = layers[i]!;
    }
  }
  return runs.join(", ");
}

export function renderPlan(plan: Plan): string {
  const out: string[] = [];
  pushHeader(out, plan);
  if (plan.cluster) pushCluster(out, plan.cluster);
  pushPlacement(out, plan);
  pushLaunch(out, plan);
  pushProjection(out, plan);
  pushCost(out, plan);
  const fleetLines = renderFleet(plan);
  if (fleetLines.length > 0) out.push("", ...fleetLines);
  pushSeedChecks(out, plan);
  return out.join("\n");
}

/** The verdict in one line: FITS (mode), REFUSED or DOES NOT FIT with the reason (`npm run plan` and new-stack alike). */
export function verdictLine(plan: Plan): string {
  // A split that fits in memory can still be refused (one host would do, or it is too slow).
  return plan.fits
    ? `Verdict: FITS (${plan.placement.mode})`
    : plan.placement.fits
      ? `Verdict: REFUSED — ${plan.refusal}`
      : `Verdict: DOES NOT FIT — ${plan.refusal}`;
}

/** The stack line, the verdict, the host and where each of its inputs came from. */
function pushHeader(out: string[], plan: Plan): void {
  const { host } = plan;
  out.push(
    `Stack ${plan.stack}: ${plan.model.name} ${plan.tier.name} (${formatBytes(plan.modelBytes)}, tensors from the ${plan.tensorSource}) on ${host.label}`,
  );
  out.push(verdictLine(plan));
  out.push("");
  out.push(
    `Host: ${host.cpu.name}, ${host.cpu.cores} cores, ${host.cpu.numaNodes} NUMA node(s), ${formatGiB(host.memory.totalBytes)} RAM${host.gpus.length ? `, ${host.gpus.length}× ${host.gpus[0]!.name} (${host.gpus[0]!.pcie})` : ""}`,
  );
  out.push(`Memory bandwidth: ${host.memory.basis}`);
  out.push(
    "Host inputs (ASSUMED = a catalog or default figure, not this host's: state or measure it; HostPrep measures the bandwidth at deploy time and re-projects):",
  );
  for (const input of hostInputs(plan)) {
    out.push(
      `  ${input.assumption ? "ASSUMED " : input.source === "measured" ? "measured" : "stated  "}  ${input.what}: ${input.value} — ${input.basis}${input.assumption && input.key.startsWith("host.") ? ` (set ${input.key})` : ""}`,
    );
  }
}

/** The hosts of an RPC split: the head, each worker with its layers and firewall, load and network time. */
function pushCluster(out: string[], cluster: NonNullable<Plan["cluster"]>): void {
  out.push("");
  out.push(
    `Split over ${cluster.workers.length + 1} hosts (llama.cpp RPC; ${cluster.link.spec.basis}; hosts must agree on image ${cluster.image}):`,
  );
  out.push(
    `  head      ${cluster.head.id} ${cluster.head.privateAddress}: llama-server, token embeddings and layers ${rangeText(cluster.head.layers)}`,
  );
  for (const worker of cluster.workers) {
    out.push(
      `  worker    ${worker.id} ${worker.endpoint} (${worker.device}): ggml-rpc-server ${worker.rpcServerArgs.join(" ")}, layers ${rangeText(worker.layers)}${worker.holdsOutput ? " and the output layer" : ""}; ` +
        `admits only ${worker.firewall.allowFrom.join(", ")} to port ${worker.firewall.port} (nftables table inet ${worker.firewall.table})`,
    );
  }
  out.push(`  load      ${loadLine(cluster)}`);
  out.push(
    `  network   ${(cluster.networkSecondsPerToken * 1e3).toFixed(3)} ms per decoded token (per worker: one round trip, the activations in and out, each command's host time; the logits from the last)`,
  );
}

/** The memory map, what would fit instead, and the reasons for the placement. */
function pushPlacement(out: string[], plan: Plan): void {
  const { placement } = plan;
  out.push("");
  out.push("Memory map (resident under the chosen load mode):");
  out.push(renderMemoryTable(placement.memory));
  if (plan.alternatives) {
    out.push("");
    out.push(
      `What would fit: tiers ${plan.alternatives.tiersThatFit.join(", ") || "none"} at this context; ${plan.tier.name} up to ${plan.alternatives.maxContextPerSlotThatFits ?? "no"} tokens per slot.`,
    );
  }
  out.push("");
  out.push(`Why this placement:`);
  for (const reason of placement.reasons) out.push(`  - ${reason}`);
}

/** The image, the shards and the llama-server command line. */
function pushLaunch(out: string[], plan: Plan): void {
  out.push("");
  out.push(
    `Container image: ${plan.image}; shards: ${plan.shards.count} (${plan.shards.verified ? "verified by a lock" : "count and names unverified until `npm run lock`"}), first ${plan.shards.firstShard}`,
  );
  out.push(renderCommandLine(plan));
  out.push("  (API key: read from a file mounted at the --api-key-file path, never an argument)");
}

/** Decode, prefill, TTFT, their error bands and the efficiency factors behind them. */
function pushProjection(out: string[], plan: Plan): void {
  const { placement, projection } = plan;
  out.push("");
  out.push(`Projection (${placement.mode}):`);
  out.push(
    `  decode   ${projection.decodeTokensPerSecond.toFixed(1)} tok/s at depth ${projection.decodeDepthTokens} — ${projection.decodeTraffic.map((t) => `${t.device} reads ${(t.bytesPerToken / 1e9).toFixed(2)} GB/token at ${(t.effectiveBandwidth / 1e9).toFixed(0)} GB/s effective${t.computeBasis ? ` (${t.computeBasis})` : ""}${t.networkSecondsPerToken ? `, plus ${(t.networkSecondsPerToken * 1e3).toFixed(3)} ms on the link` : ""}`).join(" + ")}`,
  );
  out.push(
    `           by depth: ${projection.decodeByDepth.map((point) => `${formatTokens(point.depthTokens)} → ${point.tokensPerSecond.toFixed(1)}`).join(", ")} tok/s`,
  );
  out.push(
    `  prefill  ${projection.prefillTokensPerSecond.toFixed(1)} tok/s for a ${projection.prefillPromptTokens}-token prompt — ${projection.prefillBasis}`,
  );
  out.push(
    `  TTFT     ${formatDuration(projection.ttftSeconds)} for a ${formatTokens(projection.ttftPromptTokens)}-token prompt`,
  );
  for (const [phase, rate] of [
    ["decode", projection.decodeTokensPerSecond],
    ["prefill", projection.prefillTokensPerSecond],
  ] as const) {
    const band = projection.errorBands[phase];
    out.push(
      band
        ? `  band     ${phase} ${(rate * band.low).toFixed(1)}–${(rate * band.high).toFixed(1)} tok/s: published runs measured between ${band.low.toFixed(2)}× and ${band.high.toFixed(2)}× their leave-one-source-out projection (p10–p90 of ${band.runs} ${band.hardwareClass === "all" ? "runs of every class" : `${band.hardwareClass} runs`}; npm run bench:published)`
        : `  band     ${phase}: uncalibrated (no published runs in catalog/efficiency.yaml cpu.corpusFit)`,
    );
  }
  out.push(
    `  factors: ${projection.factors.map((factor) => `${factor.name}=${factor.value > 0 && factor.value < 0.01 ? factor.value.toExponential(2) : factor.value.toFixed(3)}`).join(", ")} (sources: catalog/efficiency.yaml)`,
  );
}

/** The monthly cost, capacity, the API's price at the expected volume and the break-even. */
function pushCost(out: string[], plan: Plan): void {
  const { cost } = plan;
  out.push("");
  if (cost) {
    out.push(
      `Monthly cost: ${formatUsd(cost.monthlyUsd)} (${cost.lines.map((line) => `${line.item} ${formatUsd(line.monthlyUsd)}: ${line.basis}`).join("; ")})`,
    );
    out.push(
      `  capacity ${formatTokens(cost.capacityTokensPerMonth)} tokens/month at ${Math.round(cost.utilization * 100)}% utilization and ${Math.round(cost.inputShare * 100)}% input; ${formatUsd(cost.usdPerMillionOutputTokens)} per 1M output tokens`,
    );
    out.push(
      `  API at the expected ${formatTokens(cost.expectedTokensPerMonth)} tokens/month: ${formatUsd(cost.apiMonthlyUsdAtExpected)} ($${cost.apiUsdPerMillionTokensAtMix.toFixed(3)} per 1M at this mix)`,
    );
    out.push(
      `  break-even: ${cost.breakEvenTokensPerMonth === null ? "none" : `${formatTokens(cost.breakEvenTokensPerMonth)} tokens/month`} — ${cost.breakEvenReason}`,
    );
  } else out.push(`Monthly cost: omitted — ${plan.costOmitted}`);
}

function pushSeedChecks(out: string[], plan: Plan): void {
  // Only for a host that is the build a seed claim describes (plan.ts seedChecks); absent otherwise.
  if (plan.seedChecks.length > 0) {
    out.push("");
    out.push(
      `Seed figures, checked (this host matches ${[...new Set(plan.seedChecks.map((check) => check.hardware))].join("; ")}):`,
    );
    for (const check of plan.seedChecks) {
      out.push(
        `  - "${check.claim}": seed ${check.seedFigure}; kit ${check.kitFigure} (${check.agrees ? "agrees" : "differs"}) — ${check.why}`,
      );
    }
  }
}

/** A stack `--compare` could not plan: it still gets a row, so a broken stack is never silently missing. */
export interface InvalidStack {
  stack: string;
  problems: string[];
}

export function renderComparison(plans: Plan[], invalid: readonly InvalidStack[] = []): string {
  // Stacks without costs sort after those with, among plans that fit alike.
  const monthly = (plan: Plan) => plan.cost?.monthlyUsd ?? Number.POSITIVE_INFINITY;
  const sorted = [...plans].sort((a, b) => Number(b.fits) - Number(a.fits) || monthly(a) - monthly(b));
  const rows = sorted.map((plan) => [
    plan.stack,
    plan.host.label,
    `${plan.model.name} ${plan.tier.name}`,
    plan.fits ? plan.placement.mode : plan.placement.fits ? "refused" : "does not fit",
    // Each figure names where it was taken, and prefill is the TTFT prompt's own rate, so the
    // prefill and TTFT columns of one row always agree.
    plan.fits
      ? `${plan.projection.decodeTokensPerSecond.toFixed(1)} @${formatTokens(plan.projection.decodeDepthTokens)}`
      : "-",
    plan.fits
      ? `${(plan.projection.ttftPromptTokens / plan.projection.ttftSeconds).toFixed(1)} @${formatTokens(plan.projection.ttftPromptTokens)}`
      : "-",
    plan.fits
      ? `${formatDuration(plan.projection.ttftSeconds)} @${formatTokens(plan.projection.ttftPromptTokens)}`
      : "-",
    plan.cost ? formatUsd(plan.cost.monthlyUsd) : "no costs",
    plan.fits && plan.cost ? formatUsd(plan.cost.usdPerMillionOutputTokens) : "-",
    plan.fits && plan.cost
      ? plan.cost.breakEvenTokensPerMonth === null
        ? "none"
        : formatTokens(plan.cost.breakEvenTokensPerMonth)
      : "-",
  ]);
  const invalidRows = invalid.map((entry) => [
    entry.stack,
    "-",
    "-",
    `INVALID CONFIG (${entry.problems.length} problem${entry.problems.length === 1 ? "" : "s"}, see below)`,
    "-",
    "-",
    "-",
    "-",
    "-",
    "-",
  ]);
  return table(
    [
      [
        "stack",
        "host",
        "model and tier",
        "verdict",
        "decode tok/s @depth",
        "prefill tok/s @prompt",
        "TTFT @prompt",
        "$/month",
        "$/1M out",
        "break-even tok/mo",
      ],
      ...rows,
      ...invalidRows,
    ],
    [false, false, false, false, true, true, true, true, true, true],
  );
}
