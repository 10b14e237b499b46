/**
 * Replicas and teams (planner/fleet.ts): aggregate decode with several slots busy, worked by hand from
 * the roofline (a step reads the weights once for all slots and does every slot's arithmetic), replicas
 * auto, the fleet's cost, the chargeback arithmetic, and every bad input the stack shape refuses.
 */
import { describe, expect, it } from "vitest";
import { loadCatalog } from "../../planner/catalog";
import { parseStackConfig } from "../../planner/config";
import { aggregateDecodeTokensPerSecond, chargebackOf, teamPlan } from "../../planner/fleet";
import { buildPlan, type Plan } from "../../planner/plan";
import { planToJson, renderPlan } from "../../planner/report";
import { readStackValues } from "../../planner/stack-file";
import { configProblems } from "../support/config-errors";

const catalog = loadCatalog();

const problemsOf = configProblems;

type Raw = Record<string, unknown> & {
  hosts?: Record<string, unknown>[];
  teams?: Record<string, unknown>[];
  fleet?: Record<string, unknown>;
};
function raw(stack: string, change: (values: Raw) => void = () => {}): Raw {
  const values = structuredClone(readStackValues(stack)) as Raw;
  change(values);
  return values;
}
const planOf = (stack: string, values: Raw): Plan =>
  buildPlan(stack, parseStackConfig(stack, values), { catalog, lock: null });

/**
 * The roofline by hand for a CPU-only plan at depth 0 (no KV read): a step with N slots streams the
 * dense weights once, each routed expert unless no slot picked it (1 − (1 − k/E)^N of them), the
 * embedding rows the slots look up, and does N tokens' 2 FLOPs per active weight; plus the per-layer cost.
 */
function byHand(plan: Plan, slots: number): number {
  const arch = plan.model.architecture;
  const traffic = plan.projection.decodeTraffic[0]!;
  const factor = (name: string) => plan.projection.factors.find((entry) => entry.name === name)!.value;
  const expertShare = arch.activeExperts / arch.routedExperts;
  let bytes = 0;
  let flops = 0;
  for (const tensor of plan.tensors) {
    const share = tensor.cls === "routedExperts" ? expertShare : tensor.cls === "embedding" ? 1 / arch.vocabSize : 1;
    bytes += tensor.bytes * (1 - (1 - share) ** slots);
    if (tensor.cls !== "norms" && tensor.cls !== "embedding" && !tensor.name.includes("exp_probs_b"))
      flops += 2 * tensor.elements * share * slots;
  }
  const compute =
    plan.host.cpu.cores *
    plan.host.cpu.allCoreGHz *
    1e9 *
    plan.host.cpu.fp32FlopsPerCycle *
    factor("cpu.decodeComputeEfficiency");
  const step =
    Math.max(bytes / traffic.effectiveBandwidth, flops / compute) + arch.layers * factor("cpu.decodeSecondsPerLayer");
  return slots / step;
}

describe("aggregate decode with N slots busy follows the roofline", () => {
  // Depth 0: no KV read, so the weights and the arithmetic alone set the step.
  const seed = planOf(
    "cpu-ddr5",
    raw("cpu-ddr5", (values) => {
      values.projection = { decodeDepthTokens: 0, ttftPromptTokens: 4096 };
    }),
  );
  it("one slot is the plan's own decode figure", () => {
    expect(aggregateDecodeTokensPerSecond(seed.placement.estimate.speedInputs, 1)).toBeCloseTo(
      seed.projection.decodeTokensPerSecond,
      9,
    );
  });
  it("the seed box (16 cores) is compute-bound: more slots add almost nothing", () => {
    for (const slots of [1, 2, 4])
      expect(aggregateDecodeTokensPerSecond(seed.placement.estimate.speedInputs, slots)).toBeCloseTo(
        byHand(seed, slots),
        6,
      );
    const gain =
      aggregateDecodeTokensPerSecond(seed.placement.estimate.speedInputs, 4) /
      aggregateDecodeTokensPerSecond(seed.placement.estimate.speedInputs, 1);
    // Only a fixed per-layer cost would be shared by the batch, and the corpus fit puts it at 0 on
    // published servers: at the cores' arithmetic, four slots decode what one does.
    expect(gain).toBeGreaterThanOrEqual(1);
    expect(gain).toBeLessThan(1.1);
  });
  it("a 96-core host is memory-bound at one slot: four slots decode more, but less than 4× (more experts read)", () => {
    const big = planOf(
      "cpu-ddr5",
      raw("cpu-ddr5", (values) => {
        values.projection = { decodeDepthTokens: 0, ttftPromptTokens: 4096 };
        (values.host as Record<string, unknown>).cpu = { platform: "epyc-9124", cores: 96 };
      }),
    );
    const inputs = big.placement.estimate.speedInputs;
    for (const slots of [1, 2, 4])
      expect(aggregateDecodeTokensPerSecond(inputs, slots)).toBeCloseTo(byHand(big, slots), 6);
    const gain = aggregateDecodeTokensPerSecond(inputs, 4) / aggregateDecodeTokensPerSecond(inputs, 1);
    expect(gain).toBeGreaterThan(1.2);
    expect(gain).toBeLessThan(4);
  });
  it("refuses a slot count that is not a positive integer", () => {
    expect(() => aggregateDecodeTokensPerSecond(seed.placement.estimate.speedInputs, 0)).toThrow(/concurrentSlots/);
  });
});

describe("the fleet stack: two replicas of the seed box and two teams", () => {
  const plan = planOf("cpu-ddr5-fleet", raw("cpu-ddr5-fleet"));
  const fleet = plan.fleet!;
  it("takes the replicas from hosts, prices them as 2 × one box from estimateCost", () => {
    expect(plan.fits).toBe(true);
    expect(fleet.replicas).toBe(2);
    expect(fleet.hosts.map((host) => host.id)).toEqual(["replica-1", "replica-2"]);
    // $5000 ÷ 36 + 350 W × 730 h × $0.15/kWh = 138.89 + 38.325, twice.
    expect(fleet.cost!.monthlyUsd).toBeCloseTo(2 * (5000 / 36 + 0.35 * 730 * 0.15), 6);
    expect(fleet.aggregateDecodeTokensPerSecond).toBeCloseTo(2 * fleet.replica.aggregateDecodeTokensPerSecond, 9);
  });
  it("chargeback: a replica-second's price over the prefill and decode rates, blended at the 3:1 mix", () => {
    const { chargeback, cost, replica } = fleet;
    const usdPerSecond = cost!.monthlyUsd / (2 * 730 * 3600 * 0.5);
    expect(chargeback!.usdPerMillionInput).toBeCloseTo((usdPerSecond / replica.prefillTokensPerSecond) * 1e6, 9);
    expect(chargeback!.usdPerMillionOutput).toBeCloseTo(
      (usdPerSecond / replica.aggregateDecodeTokensPerSecond) * 1e6,
      9,
    );
    expect(chargeback!.usdPerMillionAtMix).toBeCloseTo(
      0.75 * chargeback!.usdPerMillionInput + 0.25 * chargeback!.usdPerMillionOutput,
      9,
    );
    // The blend is the fleet's monthly cost over its monthly capacity: the two views agree.
    expect(chargeback!.usdPerMillionAtMix).toBeCloseTo((cost!.monthlyUsd / cost!.capacityTokensPerMonth) * 1e6, 6);
    expect(chargeback!.apiUsdPerMillionAtMix).toBeCloseTo(0.75 * 0.95 + 0.25 * 4, 9);
  });
  it("a budget buys budget ÷ the blended price tokens, here and at the API", () => {
    const platform = plan.teams!.find((team) => team.name === "platform")!;
    expect(platform.budgetTokensPerMonth).toBeCloseTo((150 / fleet.chargeback!.usdPerMillionAtMix) * 1e6, 3);
    expect(platform.apiTokensForBudget).toBeCloseTo((150 / 1.7125) * 1e6, 3);
    const plain = teamPlan(
      { name: "x", rpm: 1, monthlyBudgetUsd: 10 },
      chargebackOf(
        { monthlyUsd: 730, utilization: 1, inputShare: 0.5 },
        1,
        { prefillTokensPerSecond: 10, aggregateDecodeTokensPerSecond: 1 },
        { usdPerMillionInput: 1, usdPerMillionOutput: 3 },
      ),
    );
    // $730/month over 730 h = $1/h = $1/3600 per second; input 1/36000 $/token, output 1/3600: at 1:1, $152.78/1M.
    expect(plain.budgetTokensPerMonth).toBeCloseTo(10 / (0.5 / 36000 + 0.5 / 3600), 3);
    expect(plain.apiTokensForBudget).toBeCloseTo((10 / 2) * 1e6, 3);
  });
  it("shows the fleet and the teams in the report, the JSON and the summary", () => {
    const text = renderPlan(plan);
    expect(text).toMatch(/Fleet: 2 replica\(s\)/);
    expect(text).toMatch(/chargeback {3}per 1M tokens: input \$/);
    expect(text).toMatch(
      /platform +30 requests\/min, 60\.0K tokens\/min \(enforced after the fact: blocked within ~25 s of crossing it\); budget \$150\.00\/month buys/,
    );
    const json = planToJson(plan);
    expect(json.fleet?.replicas).toBe(2);
    expect(json.fleet?.monthlyUsd).toBeCloseTo(fleet.cost!.monthlyUsd, 9);
    expect(json.teams?.map((team) => team.name)).toEqual(["platform", "research"]);
    expect(json.teams?.[1]?.tpm).toBeNull();
  });
  it("a stack without fleet or teams has neither", () => {
    const single = planOf("cpu-ddr5", raw("cpu-ddr5"));
    expect(single.fleet).toBeUndefined();
    expect(planToJson(single).fleet).toBeUndefined();
    expect(renderPlan(single)).not.toMatch(/^Fleet:/m);
  });
});

describe("replicas: auto", () => {
  const autoStack = (fleet: Record<string, unknown>, usage?: Record<string, unknown>) =>
    planOf(
      "cpu-ddr5",
      raw("cpu-ddr5", (values) => {
        values.fleet = fleet;
        if (usage) (values.costs as Record<string, unknown>).usage = usage;
      }),
    );
  it("sizes for the volume: ceil(tokens/month ÷ one replica's capacity)", () => {
    const plan = autoStack(
      { replicas: "auto" },
      { tokensPerMonth: 20e6, mix: { input: 3, output: 1 }, utilization: 0.5 },
    );
    const perReplica = plan.fleet!.cost!.replicaCapacityTokensPerMonth;
    expect(plan.fleet!.replicas).toBe(Math.ceil(20e6 / perReplica));
    expect(plan.fleet!.replicas).toBeGreaterThan(1);
    expect(plan.fleet!.sizedBy).toBe("auto");
  });
  it("sizes for the peak: each replica carries the slots whose answers finish inside the target", () => {
    // One slot on the seed box: 400 tokens at ~4 tok/s ≈ 100 s, inside 150 s; 7 at once need 7 replicas.
    const plan = autoStack(
      { replicas: "auto", peakConcurrentRequests: 7, latencyTargetSeconds: 150, tokensPerAnswer: 400 },
      { tokensPerMonth: 0, mix: { input: 3, output: 1 }, utilization: 0.5 },
    );
    expect(plan.fleet!.slotsWithinLatency).toBe(1);
    expect(plan.fleet!.replicas).toBe(7);
  });
  it("refuses a latency target no replica count meets", () => {
    const plan = autoStack({
      replicas: "auto",
      peakConcurrentRequests: 2,
      latencyTargetSeconds: 10,
      tokensPerAnswer: 400,
    });
    expect(plan.fits).toBe(false);
    expect(plan.refusal).toMatch(/latencyTargetSeconds: 10 s cannot be met by any number of replicas/);
  });
});

describe("bad input is refused before anything is planned, one line each", () => {
  it("duplicate team names", () => {
    const problems = problemsOf(() =>
      parseStackConfig(
        "cpu-ddr5-fleet",
        raw("cpu-ddr5-fleet", (values) => {
          values.teams![1]!.name = "platform";
        }),
      ),
    );
    expect(problems).toEqual([
      expect.stringMatching(/^teams\[1\]\.name: .*a name no other team has \(teams\[0\] is platform too\)/),
    ]);
  });
  it("negative limits", () => {
    const problems = problemsOf(() =>
      parseStackConfig(
        "cpu-ddr5-fleet",
        raw("cpu-ddr5-fleet", (values) => {
          values.teams![0]!.rpm = -1;
          values.teams![1]!.monthlyBudgetUsd = -5;
        }),
      ),
    );
    expect(problems).toHaveLength(2);
    expect(problems[0]).toMatch(/^teams\[0\]\.rpm: /);
    expect(problems[1]).toMatch(/^teams\[1\]\.monthlyBudgetUsd: /);
  });
  it("a team name outside [a-z0-9-]", () => {
    const problems = problemsOf(() =>
      parseStackConfig(
        "cpu-ddr5-fleet",
        raw("cpu-ddr5-fleet", (values) => {
          values.teams![0]!.name = "Platform Team";
        }),
      ),
    );
    expect(problems).toEqual([expect.stringMatching(/^teams\[0\]\.name: .*a-z 0-9 -/)]);
  });
  it("replicas of different specs, naming the replica that differs", () => {
    const problems = problemsOf(() =>
      parseStackConfig(
        "cpu-ddr5-fleet",
        raw("cpu-ddr5-fleet", (values) => {
          values.hosts![1]!.memory = { total: "768GiB" };
        }),
      ),
    );
    expect(problems).toEqual([
      expect.stringMatching(
        /^hosts\[1\]\.memory: .*the same memory as the first replica replica-1 \(hosts\[0\]\); replica replica-2 differs/,
      ),
    ]);
  });
  it("teams without costs", () => {
    const problems = problemsOf(() =>
      parseStackConfig(
        "cpu-ddr5-fleet",
        raw("cpu-ddr5-fleet", (values) => {
          delete values.costs;
        }),
      ),
    );
    expect(problems).toEqual([expect.stringMatching(/^costs: .*required with teams/)]);
  });
  it("a split and replicas together: one at a time", () => {
    const problems = problemsOf(() =>
      parseStackConfig(
        "cpu-ddr5-q4-split",
        raw("cpu-ddr5-q4-split", (values) => {
          values.fleet = { replicas: 2 };
        }),
      ),
    );
    expect(problems).toEqual([expect.stringMatching(/^hosts: .*one at a time/)]);
  });
  it("a replica count that disagrees with the hosts listed", () => {
    const problems = problemsOf(() =>
      parseStackConfig(
        "cpu-ddr5-fleet",
        raw("cpu-ddr5-fleet", (values) => {
          values.fleet = { ...values.fleet, replicas: 3 };
        }),
      ),
    );
    expect(problems).toEqual([expect.stringMatching(/^fleet\.replicas: .*allowed: 2/)]);
  });
  it("replicas auto with nothing to size from, and a peak without a target", () => {
    const noCosts = problemsOf(() =>
      parseStackConfig(
        "cpu-ddr5",
        raw("cpu-ddr5", (values) => {
          delete values.costs;
          values.fleet = { replicas: "auto" };
        }),
      ),
    );
    expect(noCosts).toEqual([expect.stringMatching(/^fleet\.replicas: .*auto only with something to size from/)]);
    const peakOnly = problemsOf(() =>
      parseStackConfig(
        "cpu-ddr5",
        raw("cpu-ddr5", (values) => {
          values.fleet = { replicas: 2, peakConcurrentRequests: 4 };
        }),
      ),
    );
    expect(peakOnly).toEqual([
      expect.stringMatching(/^fleet: .*peakConcurrentRequests and latencyTargetSeconds together/),
    ]);
  });
});

describe("where the fleet runs (planner/fleet-serving.ts)", () => {
  it("two replicas: the gateway on the first, each usage exporter on its private address, llama-server one port up on loopback", () => {
    const plan = planOf("cpu-ddr5-fleet", raw("cpu-ddr5-fleet"));
    const serving = plan.fleetServing!;
    expect(serving.notDeployable).toBeUndefined();
    expect(serving.gateway.hostId).toBe("replica-1");
    expect(serving.gateway.input.listen).toEqual({ address: "0.0.0.0", port: 8080 });
    expect(serving.gateway.input.backends).toEqual([
      { name: "replica-1", address: "10.0.0.11", port: 8081 },
      { name: "replica-2", address: "10.0.0.12", port: 8081 },
    ]);
    expect(serving.gateway.firewall!.allow).toEqual([
      { port: 8080, cidrs: ["198.51.100.0/24"] },
      { port: 8405, cidrs: ["10.0.0.11/32"] },
    ]);
    for (const replica of serving.replicas) {
      expect(replica.listen).toEqual({ address: "127.0.0.1", port: 8082 });
      const at = replica.llamaServerArgs.indexOf("--host");
      expect(replica.llamaServerArgs.slice(at, at + 4)).toEqual(["--host", "127.0.0.1", "--port", "8082"]);
      expect(replica.usage.upstream).toEqual(replica.listen);
      expect(replica.firewall!.allow.every((rule) => rule.cidrs.join() === "10.0.0.11/32")).toBe(true);
    }
    // Everything else on the command line is the fleet plan's own.
    const strip = (args: string[]) =>
      args.filter(
        (_, index) =>
          !["--host", "--port"].includes(args[index - 1] ?? "") && !["--host", "--port"].includes(args[index]!),
      );
    expect(strip(serving.replicas[1]!.llamaServerArgs)).toEqual(strip(plan.llamaServerArgs));
    expect(plan.hostConfigPath).toBe("hosts[0]");
  });

  it("teams on one host: the gateway takes the front door's place and everything stays on loopback", () => {
    const plan = planOf(
      "cpu-ddr5",
      raw("cpu-ddr5", (values) => {
        values.teams = [{ name: "platform", rpm: 20 }];
        values.serving = {
          ...(values.serving as object),
          bindAddress: "0.0.0.0",
          allowedCidrs: ["192.0.2.0/24"],
          port: 443,
        };
        values.costs ??= structuredClone(readStackValues("cpu-ddr5-fleet").costs);
      }),
    );
    const serving = plan.fleetServing!;
    expect(serving.notDeployable).toBeUndefined();
    expect(serving.replicas).toHaveLength(1);
    expect(serving.replicas[0]!.firewall).toBeUndefined();
    expect(serving.replicas[0]!.usage.listen).toEqual({ address: "127.0.0.1", port: 444 });
    expect(serving.replicas[0]!.listen).toEqual({ address: "127.0.0.1", port: 445 });
    expect(serving.gateway.input.stats.address).toBe("127.0.0.1");
  });

  it("replicas: 2 on one `host` is planned but names why it cannot be deployed", () => {
    const plan = planOf(
      "cpu-ddr5",
      raw("cpu-ddr5", (values) => (values.fleet = { replicas: 2, tokensPerAnswer: 400 })),
    );
    expect(plan.fleet!.replicas).toBe(2);
    expect(plan.fleetServing!.notDeployable).toMatch(
      /list the replicas under kimi-kit:hosts \(role: replica, each with ssh and privateAddress\)/,
    );
    expect(renderPlan(plan)).toContain("not deployable: kimi-kit:fleet replicas 2 on one `host`");
  });

  it("refuses serving ports that clash with the fleet's own listeners, naming each key", () => {
    const values = raw(
      "cpu-ddr5-fleet",
      (v) => (v.serving = { ...(v.serving as object), port: 9190, backendPort: 9101 }),
    );
    expect(() => planOf("cpu-ddr5-fleet", values)).toThrow(
      /serving\.port: found 9190, which Prometheus uses on a fleet's hosts[\s\S]*serving\.backendPort: found 9101, which the usage exporter's \/metrics uses/,
    );
  });

  it("llama-server's port never lands on the public port, the exporter's or the gateway's stats port", () => {
    const plan = planOf(
      "cpu-ddr5-fleet",
      raw(
        "cpu-ddr5-fleet",
        (values) => (values.serving = { ...(values.serving as object), port: 8082, backendPort: 8081 }),
      ),
    );
    expect(plan.fleetServing!.replicas[0]!.listen.port).not.toBe(8082);
    expect(plan.fleetServing!.replicas[0]!.listen.port).toBe(8083);
  });
});
