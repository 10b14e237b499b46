/**
 * LlmDeployment against Pulumi mocks (an update, not a preview), for every stack in stacks/:
 * the resource graph, the order probe → prep → shards → server → smoke, the container's args,
 * where the API key may (stdin) and may not (everything else) appear, and the refusals. A split
 * that fits (kimi-kit:hosts) is deployed in rpc-worker.test.ts, with its workers; a fleet in fleet.test.ts.
 */
import { tmpdir } from "node:os";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import * as pulumi from "@pulumi/pulumi";
import { listStacks, readStackValues } from "../../planner/stack-file";
import { parseStackConfig } from "../../planner/config";
import { buildPlan } from "../../planner/plan";
import {
  BANDWIDTH_STDOUT,
  dockerContainerReadBack,
  edgeRecorder,
  GENERATED_KEY,
  HOST_KEY,
  installMocks,
  isSecret,
  promiseOf,
  registered,
  settle,
  type Edge,
} from "./mocks";

// The component modules register nothing when imported; resources are only created (in beforeAll
// and the tests) after the mocks are in place.
import { LlmDeployment, deployStack } from "../../components/llm-deployment";
import * as spec from "../../components/serving/container-spec";
import { parseMeasuredBandwidth, remoteScript } from "../../components/host/host-prep";
import { loadCatalog } from "../../planner/catalog";
import { reprojectWithBandwidth } from "../../planner/reproject";
import { shellQuote } from "../../planner/shell";

beforeAll(() => installMocks(false));

const CONFIGURED_KEY = "sk-configured-Zq9vX2mTk4";

function valuesWithHostKey(stack: string): Record<string, unknown> {
  const raw = structuredClone(readStackValues(stack));
  // One host, or a split's hosts (all bare metal).
  const hosts = (raw.hosts ?? [raw.host]) as { kind: string; ssh?: Record<string, unknown> }[];
  for (const host of hosts) if (host.kind === "bare-metal" && host.ssh) host.ssh.hostPublicKey ??= HOST_KEY;
  return raw;
}

const stacks = listStacks();
const kinds = Object.fromEntries(
  stacks.map((stack) => {
    const config = parseStackConfig(stack, valuesWithHostKey(stack));
    if (config.host.kind === "cloud") return [stack, "cloud"];
    const plan = buildPlan(stack, config);
    const fleet = (plan.fleet?.replicas ?? 1) > 1 || (plan.teams?.length ?? 0) > 0;
    return [
      stack,
      plan.fits && fleet ? "fleet" : plan.fits && config.cluster ? "split" : plan.fits ? "fits" : "refused",
    ];
  }),
) as Record<string, "cloud" | "fits" | "split" | "fleet" | "refused">;

it("covers the expected stacks", () => {
  expect(kinds).toMatchObject({
    "cpu-ddr5": "fits",
    "cpu-ddr5-q4": "refused",
    "aws-r7i": "cloud",
    "cpu-ddr5-q4-split": "split",
    "cpu-ddr5-fleet": "fleet",
  });
});

const withoutStdin = (value: unknown): unknown =>
  JSON.parse(JSON.stringify(value, (key, inner: unknown) => (key === "stdin" ? undefined : inner)));

for (const stack of stacks.filter((name) => kinds[name] === "fits")) {
  for (const engine of ["docker-cli", "docker-provider"] as const) {
    for (const keySource of ["generated", "configured"] as const) {
      describe(`${stack} / ${engine} / ${keySource} key`, () => {
        const name = `k-${stack}-${engine}-${keySource}`;
        const config = parseStackConfig(stack, valuesWithHostKey(stack));
        const plan = buildPlan(stack, config);
        const key = keySource === "configured" ? CONFIGURED_KEY : GENERATED_KEY;
        const { transformation, edges } = edgeRecorder();
        let deployment: LlmDeployment;
        const mine = () =>
          registered.filter((resource) => resource.name === name || resource.name.startsWith(`${name}-`));
        const edge = (suffix: string): Edge => {
          const found = edges.find((candidate) => candidate.name === `${name}-${suffix}`);
          if (!found) throw new Error(`no resource ${name}-${suffix}; have ${edges.map((e) => e.name).join(", ")}`);
          return found;
        };
        const input = (suffix: string) => mine().find((resource) => resource.name === `${name}-${suffix}`)!.inputs;

        beforeAll(async () => {
          deployment = new LlmDeployment(
            name,
            {
              stack,
              config,
              engine,
              apiKey: keySource === "configured" ? pulumi.secret(CONFIGURED_KEY) : undefined,
              sshPrivateKey: pulumi.secret(
                "-----BEGIN OPENSSH PRIVATE KEY-----\ntest\n-----END OPENSSH PRIVATE KEY-----\n",
              ),
              sshFilesDir: join(tmpdir(), "kimi-kit-test-ssh", name),
            },
            { transformations: [transformation] },
          );
          await promiseOf(pulumi.all([deployment.urn, deployment.measuredDecodeTokensPerSecond]));
          await settle();
        });

        it("registers the component graph", () => {
          const gpus = plan.host.gpus.length > 0;
          const expected = [
            `kimi-kit:index:LlmDeployment ${name}`,
            `kimi-kit:host:Host ${name}-host`,
            ...(keySource === "generated" ? [`command:local:Command ${name}-api-key`] : []),
            `kimi-kit:host:HostPrep ${name}-prep`,
            `command:remote:Command ${name}-prep-scripts-dir`,
            `command:remote:CopyToRemote ${name}-prep-scripts`,
            `command:remote:Command ${name}-prep-probe`,
            `command:remote:Command ${name}-prep-bandwidth`,
            `command:remote:Command ${name}-prep-docker`,
            ...(gpus ? [`command:remote:Command ${name}-prep-nvidia`] : []),
            `command:remote:Command ${name}-prep-tune`,
            `kimi-kit:model:GgufShards ${name}-shards`,
            `command:remote:Command ${name}-shards-fetch`,
            `kimi-kit:serving:LlamaServer ${name}-server`,
            ...(engine === "docker-cli"
              ? [`command:remote:Command ${name}-server-container`]
              : [
                  `pulumi:providers:docker ${name}-server-docker`,
                  `command:remote:Command ${name}-server-api-key`,
                  `docker:index/remoteImage:RemoteImage ${name}-server-image`,
                  `docker:index/container:Container ${name}-server-container`,
                ]),
            `command:remote:Command ${name}-smoke`,
          ];
          expect(
            mine()
              .map((resource) => `${resource.type} ${resource.name}`)
              .sort(),
          ).toEqual(expected.sort());
          expect(mine().some((resource) => /aws/i.test(resource.type))).toBe(false);
        });

        it("parents every resource under its component", () => {
          expect(edge("prep-probe").parent).toBe(`${name}-prep`);
          expect(edge("shards-fetch").parent).toBe(`${name}-shards`);
          expect(edge("server-container").parent).toBe(`${name}-server`);
          for (const component of ["host", "prep", "shards", "server", "smoke"])
            expect(edge(component).parent).toBe(name);
        });

        it("orders probe → prep → shards → server → smoke", () => {
          const gpus = plan.host.gpus.length > 0;
          expect(edge("prep-scripts").dependsOn).toEqual([`${name}-prep-scripts-dir`]);
          expect(edge("prep-probe").dependsOn).toEqual([`${name}-prep-scripts`]);
          expect(edge("prep-bandwidth").dependsOn).toEqual([`${name}-prep-probe`]);
          expect(edge("prep-docker").dependsOn).toEqual([`${name}-prep-bandwidth`]);
          if (gpus) expect(edge("prep-nvidia").dependsOn).toEqual([`${name}-prep-docker`]);
          expect(edge("prep-tune").dependsOn).toEqual([`${name}-prep-${gpus ? "nvidia" : "docker"}`]);
          expect(edge("shards-fetch").dependsOn).toContain(`${name}-prep`);
          expect(edge("server-container").dependsOn).toContain(`${name}-shards-fetch`);
          expect(edge("smoke").dependsOn).toEqual([`${name}-server-container`]);
        });

        it("runs the scripts with the plan's requirements", () => {
          const probe = String(input("prep-probe").create);
          expect(probe).toContain(`--min-ram-bytes ${Math.round(plan.host.memory.totalBytes * 0.97)}`);
          expect(probe).toContain(`--min-physical-cores ${plan.host.cpu.cores}`);
          expect(probe).toContain(`--min-gpus ${plan.host.gpus.length}`);
          expect(String(input("prep-tune").create)).toContain(`--numa-nodes ${plan.host.cpu.numaNodes}`);
          expect(input("prep-probe").triggers).toEqual([expect.stringMatching(/^[0-9a-f]{64}$/)]);
          expect(input("prep-probe").addPreviousOutputInEnv).toBe(false);
          // The bandwidth step: the copied script with every physical core the plan counts on, its
          // own time bound, best effort; re-run when the script changes.
          expect(String(input("prep-bandwidth").create)).toBe(
            remoteScript("measure-bandwidth.sh", [
              "--threads",
              String(plan.host.cpu.cores),
              "--seconds",
              "10",
              "--best-effort",
            ]),
          );
          expect(input("prep-bandwidth").triggers).toEqual([expect.stringMatching(/^[0-9a-f]{64}$/)]);
          expect(input("prep-bandwidth").logging).toBe("stdoutAndStderr");
          const fetch = String(input("shards-fetch").create);
          expect(fetch).toContain(`--dest ${config.deployment.modelDir}`);
          expect(fetch).toContain(`--repo ${plan.model.repo}`);
          expect(fetch).toMatch(plan.shards.source === "lock" ? /--manifest / : /--resolve /);
          const fetchDelete = String(input("shards-fetch").delete);
          if (config.deployment.purgeModels)
            expect(fetchDelete).toContain(`${config.deployment.modelDir}/${plan.shards.paths[0]}`);
          else expect(fetchDelete).toContain("kimi-kit: keeping");
          // Both steps with a delete are owned (a newer step's creation stops an older step's delete).
          for (const owned of ["shards-fetch", ...(engine === "docker-cli" ? ["server-container"] : [])]) {
            expect(String(input(owned).create)).toMatch(/\/var\/lib\/kimi-kit\/owners\//);
            expect(String(input(owned).delete)).toMatch(/^owner=\$\(cat /);
          }
          expect(input("shards-fetch").logging).toBe("stdoutAndStderr");
        });

        it("gives the container exactly plan.llamaServerArgs", () => {
          const container = input("server-container");
          if (engine === "docker-cli") {
            const containerSpec = spec.containerSpecFromPlan(plan);
            expect(String(container.create)).toContain(
              `\n${remoteScript("llama-container.sh", spec.llamaContainerUpArgv(containerSpec))}\n`,
            );
            expect(String(container.create)).toContain(` -- ${shellQuote(plan.llamaServerArgs)}\n`);
            expect(String(container.delete)).toContain(`llama-container.sh down --name ${containerSpec.name}`);
          } else {
            expect(container.command).toEqual(plan.llamaServerArgs);
            expect(container.image).toBe(plan.image);
            expect(container.networkMode).toBe("host");
            expect(container.gpus).toBe(plan.host.gpus.length > 0 ? "all" : undefined);
            // A second `up` is a no-op only if what Docker reports back equals what the kit sends.
            expect(dockerContainerReadBack(container).healthcheck).toEqual(container.healthcheck);
            expect(container.healthcheck).toMatchObject({
              interval: "30s",
              timeout: "10s",
              startPeriod: expect.stringMatching(/^\d+m0s$/),
            });
          }
        });

        it("never puts the API key anywhere but stdin", async () => {
          expect(JSON.stringify(withoutStdin(mine().map((resource) => resource.inputs)))).not.toContain(key);
          const carrier = engine === "docker-cli" ? "server-container" : "server-api-key";
          expect(JSON.stringify(input(carrier).stdin)).toContain(key);
          expect(JSON.stringify(input("smoke").stdin)).toContain(key);
          expect(await promiseOf(deployment.apiKey)).toBe(key);
          expect(await isSecret(deployment.apiKey)).toBe(true);
        });

        it("exports projected-from-plan, projected-from-measured-bandwidth and measured speed side by side", async () => {
          // The mock bandwidth step prints 87.50 GB/s; the re-projection is estimate() on the plan's flags at that
          // figure.
          expect(parseMeasuredBandwidth(BANDWIDTH_STDOUT)).toBe(87.5);
          expect(await promiseOf(deployment.measuredBandwidthGBps)).toBe(87.5);
          const again = reprojectWithBandwidth(plan, 87.5, loadCatalog());
          const decode = await promiseOf(deployment.projectedFromMeasuredBandwidthDecodeTokensPerSecond);
          const prefill = await promiseOf(deployment.projectedFromMeasuredBandwidthPrefillTokensPerSecond);
          expect(decode).toBe(again.decodeTokensPerSecond);
          expect(prefill).toBe(again.prefillTokensPerSecond);
          // Decode follows the bandwidth: slower where 87.5 GB/s is below the plan's figure, faster where above.
          expect(Math.sign(decode! - plan.projection.decodeTokensPerSecond)).toBe(
            Math.sign(87.5 - plan.host.memory.achievableBandwidth / 1e9),
          );
          expect(await promiseOf(deployment.speedSideBySide)).toMatchObject({
            bandwidthGBps: {
              plan: plan.host.memory.achievableBandwidth / 1e9,
              planBasis: plan.host.memory.basis,
              measured: 87.5,
            },
            decodeTokensPerSecond: {
              projectedFromPlan: plan.projection.decodeTokensPerSecond,
              projectedFromMeasuredBandwidth: decode,
              measured: 9.25,
            },
            prefillTokensPerSecond: {
              projectedFromPlan: plan.projection.prefillTokensPerSecond,
              projectedFromMeasuredBandwidth: prefill,
              measured: 41.5,
            },
          });
        });

        it("exports the plan, projections and measured timings", async () => {
          const host = config.host.kind === "bare-metal" ? config.host.ssh!.host : "";
          const address = config.serving.bindAddress === "0.0.0.0" ? host : config.serving.bindAddress;
          expect(await promiseOf(deployment.endpoint)).toBe(`http://${address}:${config.serving.port}/v1`);
          expect(await promiseOf(deployment.planSummary)).toMatchObject({
            mode: plan.placement.mode,
            image: plan.image,
            args: plan.llamaServerArgs,
          });
          expect(await promiseOf(deployment.projectedDecodeTokensPerSecond)).toBe(
            plan.projection.decodeTokensPerSecond,
          );
          expect(await promiseOf(deployment.projectedTtft32kSeconds)).toBe(plan.projection.ttftSeconds);
          expect(await promiseOf(deployment.measuredDecodeTokensPerSecond)).toBe(9.25);
          expect(await promiseOf(deployment.measuredPrefillTokensPerSecond)).toBe(41.5);
          expect(await promiseOf(deployment.monthlyCostUsd)).toBe(plan.cost!.monthlyUsd);
          expect(await promiseOf(deployment.breakEvenTokensPerMonth)).toBe(plan.cost!.breakEvenTokensPerMonth);
        });
      });
    }
  }
}

describe("refusals register nothing", () => {
  const count = () => registered.length;

  for (const stack of stacks.filter((name) => kinds[name] === "refused")) {
    it(`${stack}: RunError with the plan's refusal before any resource`, async () => {
      await settle();
      const before = count();
      const config = parseStackConfig(stack, valuesWithHostKey(stack));
      expect(() => deployStack(stack, valuesWithHostKey(stack), {}, `r-${stack}`)).toThrow(pulumi.RunError);
      // A split can fit and still be refused (too slow, or one host would do): its own reason.
      expect(() => deployStack(stack, valuesWithHostKey(stack), {}, `r-${stack}`)).toThrow(
        config.cluster ? buildPlan(stack, config).refusal! : /does not fit/,
      );
      await settle();
      expect(count()).toBe(before);
    });
  }

  for (const stack of stacks.filter((name) => kinds[name] === "cloud")) {
    it(`${stack}: an update creates the instance, a CIDR-only security group, a kept model volume, and pins a generated host key`, async () => {
      const name = `c-${stack}`;
      const deployment = deployStack(stack, valuesWithHostKey(stack), { apiKey: pulumi.secret(CONFIGURED_KEY) }, name);
      await settle();
      const mine = registered.filter((resource) => resource.name.startsWith(name));
      const byType = (type: string) => mine.find((resource) => resource.type === type);
      const instance = byType("aws:ec2/instance:Instance")!;
      expect(instance.inputs.instanceType).toBe("r7i.12xlarge");
      const group = byType("aws:ec2/securityGroup:SecurityGroup")!;
      const ingress = group.inputs.ingress as { fromPort: number; cidrBlocks: string[] }[];
      expect(ingress.map((rule) => rule.fromPort).sort((a, b) => a - b)).toEqual([22, 8080]);
      for (const rule of ingress) expect(rule.cidrBlocks).toEqual(["203.0.113.0/24"]);
      const volume = byType("aws:ebs/volume:Volume")!;
      expect(volume.inputs.size).toBe(466); // 500 GB as configured, in GiB
      expect(byType("aws:ec2/volumeAttachment:VolumeAttachment")).toBeDefined();
      expect(JSON.stringify(instance.inputs)).toContain("ssh_keys");
      expect(JSON.stringify(withoutStdin(mine.map((resource) => resource.inputs)))).not.toContain(CONFIGURED_KEY);
      // Remote steps connect with the instance's key, generated by the kit: never "accept anything".
      const probe = mine.find((resource) => resource.name === `${name}-prep-probe`)!;
      expect(JSON.stringify(probe.inputs.connection)).toMatch(/"hostKey":"ssh-ed25519 /);
      expect(await promiseOf(deployment.monthlyCostUsd)).toBeCloseTo(3.1752 * 730 + 500 * 0.08, 6);
    });

    it(`${stack}: refuses a cloud host without allowed CIDRs`, () => {
      const raw = valuesWithHostKey(stack);
      (raw.host as Record<string, unknown>).allowedCidrs = [];
      expect(() => deployStack(stack, raw, { apiKey: pulumi.secret(CONFIGURED_KEY) }, `nocidr-${stack}`)).toThrow(
        /host\.allowedCidrs: found \[\]; allowed: the CIDRs that may reach SSH/,
      );
    });
  }

  it("a broken config throws a RunError naming the key", async () => {
    await settle();
    const before = count();
    const raw = valuesWithHostKey("cpu-ddr5");
    (raw.host as { memory: { total: unknown } }).memory.total = "lots";
    let error: unknown;
    try {
      deployStack("cpu-ddr5", raw, {}, "broken");
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(pulumi.RunError);
    expect((error as Error).message).toContain("host.memory.total");
    await settle();
    expect(count()).toBe(before);
  });

  it("a bare-metal host without a pinned key throws a RunError pointing at ssh-keyscan", () => {
    const raw = structuredClone(readStackValues("cpu-ddr5"));
    delete (raw.host as { ssh: Record<string, unknown> }).ssh.hostPublicKey;
    expect(() => deployStack("cpu-ddr5", raw, {}, "nokey")).toThrow(/ssh-keyscan/);
  });
});
