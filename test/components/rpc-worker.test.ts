/**
 * A split (stacks/Pulumi.cpu-ddr5-q4-split.yaml: a head and worker-1 on 10.20.0.0/24) against
 * Pulumi mocks: one RpcWorker per worker with its firewall (only the head may reach the RPC port),
 * its ggml-rpc-server container from the split's image and its image-ID step; the head's container
 * after the workers; both executors. Then what stops an `up`: hosts holding different image IDs,
 * and a worker whose container no longer runs (asked on every update, never in preview). A failed
 * check surfaces as Pulumi's language host sees it, an unhandled RunError, and the head's
 * container is never registered.
 */
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import * as pulumi from "@pulumi/pulumi";
import { readStackValues } from "../../planner/stack-file";
import { parseStackConfig, type StackConfig } from "../../planner/config";
import { buildPlan, type Plan } from "../../planner/plan";
import {
  BANDWIDTH_STDOUT,
  edgeRecorder,
  HOST_KEY,
  PROBE_STDOUT,
  promiseOf,
  settle,
  SMOKE_STDOUT,
  type Edge,
} from "./mocks";

// The status check runs ssh from the program itself; here it answers from the connection's key.
const status = vi.hoisted(() => ({
  calls: [] as { host: string; script: string }[],
  answer(privateKey: string | undefined): string {
    const state = privateKey?.includes("worker-down") ? "exited" : "running";
    return `name=kimi-kit-rpc-worker-1\nstate=${state}\nhealth=none\nspec_sha256=ab\nid=cd\nimage=local/llama.cpp:server-rpc-v0.5.0\nstarted_at=\nexit_code=${state === "running" ? 0 : 139}\nrestart_count=0\n`;
  },
}));
vi.mock("../../components/exec/remote-exec", async (importOriginal) => {
  const original = await importOriginal<typeof import("../../components/exec/remote-exec")>();
  return {
    ...original,
    runRemoteNow: (connection: { host: string; privateKey?: string }, script: string) => {
      status.calls.push({ host: connection.host, script });
      return status.answer(connection.privateKey);
    },
  };
});

import { LlmDeployment } from "../../components/llm-deployment";
import { remoteScript } from "../../components/host/host-prep";
import { RPC_WORKERS_LABEL } from "../../components/serving/container-spec";
import { rpcServerUpArgv } from "../../components/fleet/rpc-worker";

const STACK = "cpu-ddr5-q4-split";
const SAME_ID = `sha256:${"a".repeat(64)}`;
const OTHER_ID = `sha256:${"b".repeat(64)}`;
/** The kit's own SSH provider's steps (remote-exec.ts SshCommand, a dynamic resource). */
const SSH_COMMAND = "pulumi-nodejs:dynamic/kimi-kit:SshCommand";
const PRIVATE_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\ntest\n-----END OPENSSH PRIVATE KEY-----\n";

interface Registered {
  type: string;
  name: string;
  inputs: Record<string, unknown>;
}
const registered: Registered[] = [];

/** Which step prints which image ID: every host the same, except a deployment named mismatch-*'s worker. */
function imageIdOf(name: string): string {
  return name.startsWith("mismatch") && name.includes("-rpc-") ? OTHER_ID : SAME_ID;
}

function mocks(preview: boolean): Promise<void> {
  return pulumi.runtime.setMocks(
    {
      newResource(args) {
        registered.push({ type: args.type, name: args.name, inputs: args.inputs });
        const state: Record<string, unknown> = { ...args.inputs };
        const stdoutOf = (name: string) =>
          name.endsWith("-image")
            ? `${imageIdOf(name)}\n`
            : name.endsWith("-probe")
              ? PROBE_STDOUT
              : name.endsWith("-prep-bandwidth")
                ? BANDWIDTH_STDOUT
                : name.endsWith("-smoke")
                  ? SMOKE_STDOUT
                  : "ok\n";
        // Both executors' steps: the command plugin's and the kit's dynamic provider's. In preview
        // too, as for steps that exist unchanged (a preview then sees their last outputs).
        if (args.type === "command:remote:Command" || args.type === SSH_COMMAND) state.stdout = stdoutOf(args.name);
        if (args.type === "docker:index/remoteImage:RemoteImage") state.imageId = args.inputs.name;
        return { id: `${args.name}-id`, state };
      },
      call: (args) => args.inputs,
    },
    "kimi-kit",
    "test",
    preview,
  );
}

/**
 * Unhandled rejections, as Pulumi's language host receives them (it prints a RunError's message and fails the update).
 */
const rejections: unknown[] = [];
let firstRejection: (reason: unknown) => void = () => {};
let vitestListeners: NodeJS.UnhandledRejectionListener[] = [];
const capture = (reason: unknown) => {
  rejections.push(reason);
  firstRejection(reason);
};

beforeAll(async () => {
  vitestListeners = process.listeners("unhandledRejection");
  process.removeAllListeners("unhandledRejection");
  process.on("unhandledRejection", capture);
  await mocks(false);
});

afterAll(async () => {
  await settle();
  process.off("unhandledRejection", capture);
  for (const listener of vitestListeners) process.on("unhandledRejection", listener);
});

function stackValues(): Record<string, unknown> {
  const raw = structuredClone(readStackValues(STACK));
  for (const host of raw.hosts as { ssh: Record<string, unknown> }[]) host.ssh.hostPublicKey = HOST_KEY;
  return raw;
}

function withDeployment(config: StackConfig, deployment: Partial<StackConfig["deployment"]>): StackConfig {
  return { ...config, deployment: { ...config.deployment, ...deployment } };
}

const baseConfig = parseStackConfig(STACK, stackValues());
const plan: Plan = buildPlan(STACK, baseConfig);

function deploy(
  name: string,
  options: { engine?: "docker-cli" | "docker-provider"; config?: StackConfig; sshPrivateKey?: string } = {},
) {
  const { transformation, edges } = edgeRecorder();
  const deployment = new LlmDeployment(
    name,
    {
      stack: STACK,
      config: options.config ?? baseConfig,
      engine: options.engine ?? "docker-cli",
      apiKey: pulumi.secret("sk-split-test-0123456789abcdef"),
      sshPrivateKey: pulumi.secret(options.sshPrivateKey ?? PRIVATE_KEY),
    },
    { transformations: [transformation] },
  );
  const mine = () => registered.filter((resource) => resource.name === name || resource.name.startsWith(`${name}-`));
  const input = (suffix: string) => {
    const found = mine().find((resource) => resource.name === `${name}-${suffix}`);
    if (!found)
      throw new Error(
        `no resource ${name}-${suffix}; have ${mine()
          .map((resource) => resource.name)
          .join(", ")}`,
      );
    return found.inputs;
  };
  const edge = (suffix: string): Edge => {
    const found = edges.find((candidate) => candidate.name === `${name}-${suffix}`);
    if (!found) throw new Error(`no edge ${name}-${suffix}`);
    return found;
  };
  return { deployment, mine, input, edge };
}

/** The first unhandled rejection from here on: a check that fails. */
function nextRejection(): Promise<unknown> {
  return new Promise((resolve) => (firstRejection = resolve));
}

it("plans the stack as a split with one worker on 10.20.0.2", () => {
  expect(plan.fits).toBe(true);
  expect(plan.cluster?.workers.map((worker) => [worker.id, worker.endpoint])).toEqual([
    ["worker-1", "10.20.0.2:50052"],
  ]);
});

for (const engine of ["docker-cli", "docker-provider"] as const) {
  describe(`${STACK} / ${engine}`, () => {
    const name = `split-${engine}`;
    const worker = `${name}-rpc-worker-1`;
    let d: ReturnType<typeof deploy>;
    beforeAll(async () => {
      d = deploy(name, { engine });
      await promiseOf(pulumi.all([d.deployment.urn, d.deployment.measuredDecodeTokensPerSecond]));
      await settle();
    });

    it("registers one RpcWorker per worker, with its prep, firewall, container and image steps under it", () => {
      const under = d.mine().filter((resource) => resource.name === worker || resource.name.startsWith(`${worker}-`));
      expect(under.map((resource) => `${resource.type} ${resource.name}`).sort()).toEqual(
        [
          `kimi-kit:fleet:RpcWorker ${worker}`,
          `command:remote:Command ${worker}-scripts-dir`,
          `command:remote:CopyToRemote ${worker}-scripts`,
          `command:remote:Command ${worker}-probe`,
          `command:remote:Command ${worker}-docker`,
          `command:remote:Command ${worker}-firewall`,
          `command:remote:Command ${worker}-container`,
          `command:remote:Command ${worker}-image`,
        ].sort(),
      );
      expect(d.edge("rpc-worker-1").parent).toBe(name);
      for (const step of ["scripts-dir", "scripts", "probe", "docker", "firewall", "container", "image"])
        expect(d.edge(`rpc-worker-1-${step}`).parent).toBe(worker);
      expect(d.edge("head-image").parent).toBe(name);
    });

    it("admits only the head to the RPC port in the kit's own table, and removes that table on destroy", () => {
      const firewall = d.input("rpc-worker-1-firewall");
      expect(String(firewall.create)).toContain(
        remoteScript("firewall.sh", ["apply", "--table", "kimi_kit_rpc", "--allow", "50052=10.20.0.1/32"]),
      );
      expect(String(firewall.create)).toContain("--allow 50052=10.20.0.1/32");
      expect(String(firewall.delete)).toContain(remoteScript("firewall.sh", ["remove", "--table", "kimi_kit_rpc"]));
    });

    it("runs ggml-rpc-server from the split's image on the worker's private address, after the firewall", () => {
      const container = d.input("rpc-worker-1-container");
      const create = String(container.create);
      expect(create).toContain(
        `llama-container.sh up --name kimi-kit-rpc-worker-1 --image ${plan.cluster!.image} --entrypoint /app/ggml-rpc-server --restart unless-stopped`,
      );
      expect(create).toContain("--entrypoint /app/ggml-rpc-server");
      // The stack's link is TCP: RDMA is ruled out on the worker (either peer setting it suffices).
      expect(create).toContain("--env GGML_RPC_NO_RDMA=1");
      expect(create).toContain(` -- --host 10.20.0.2 --port 50052 --threads 16\n`);
      expect(String(container.delete)).toContain("llama-container.sh down --name kimi-kit-rpc-worker-1");
      expect(d.edge("rpc-worker-1-scripts").dependsOn).toEqual([`${worker}-scripts-dir`]);
      expect(d.edge("rpc-worker-1-probe").dependsOn).toEqual([`${worker}-scripts`]);
      expect(d.edge("rpc-worker-1-docker").dependsOn).toEqual([`${worker}-probe`]);
      expect(d.edge("rpc-worker-1-firewall").dependsOn).toEqual([`${worker}-docker`]);
      expect(d.edge("rpc-worker-1-container").dependsOn).toEqual([`${worker}-firewall`]);
      expect(d.edge("rpc-worker-1-image").dependsOn).toEqual([`${worker}-container`]);
    });

    it("probes the worker against its own RAM and cores, over its own pinned connection", () => {
      const probe = String(d.input("rpc-worker-1-probe").create);
      const host = plan.cluster!.workers[0]!.host;
      expect(probe).toContain(
        `--min-ram-bytes ${Math.round(host.memory.totalBytes * 0.97)} --min-physical-cores ${host.cpu.cores} --min-gpus 0`,
      );
      expect(probe).not.toContain("--model-dir");
      const connection = JSON.stringify(d.input("rpc-worker-1-container").connection);
      expect(connection).toContain('"host":"203.0.113.11"');
      expect(connection).toContain(`"hostKey":"${HOST_KEY}"`);
      expect(connection).toContain("OPENSSH PRIVATE KEY");
      expect(JSON.stringify(d.input("prep-probe").connection)).toContain('"host":"203.0.113.10"');
    });

    it("reads each host's image ID: the worker's after its container, the head's after its preparation", () => {
      expect(String(d.input("rpc-worker-1-image").create)).toContain(
        `docker image inspect --format '{{.Id}}' ${plan.cluster!.image}`,
      );
      expect(String(d.input("head-image").create)).toContain(
        `docker image inspect --format '{{.Id}}' ${plan.cluster!.image}`,
      );
      expect(d.edge("head-image").dependsOn).toEqual([`${name}-prep-tune`]);
    });

    it("starts the head's llama-server after the workers, from the same image, with --rpc", async () => {
      expect(d.edge("server-container").dependsOn).toContain(worker);
      expect(d.edge("server-container").dependsOn).toContain(`${name}-shards-fetch`);
      const container = d.input("server-container");
      if (engine === "docker-cli") {
        expect(String(container.create)).toContain(`--image ${plan.cluster!.image}`);
        expect(String(container.create)).toContain("--rpc 10.20.0.2:50052");
        expect(String(container.create)).toContain(`--label ${RPC_WORKERS_LABEL}=`);
        expect(String(container.create)).toContain("--env GGML_RPC_NO_RDMA=1");
      } else {
        expect(d.input("server-image").name).toBe(plan.cluster!.image);
        expect(container.command).toContain("--rpc");
        expect(container.envs).toEqual(["GGML_RPC_NO_RDMA=1"]);
        expect(JSON.stringify(container.labels)).toContain(RPC_WORKERS_LABEL);
      }
      expect(await promiseOf(d.deployment.workers[0]!.imageId)).toBe(SAME_ID);
      expect(await promiseOf(d.deployment.workers[0]!.containerState)).toBe("running");
      expect(status.calls).toContainEqual({
        host: "203.0.113.11",
        script: remoteScript("llama-container.sh", ["status", "--name", "kimi-kit-rpc-worker-1"]),
      });
    });

    it("exports the cluster: each worker's endpoint, layers and planned bytes", async () => {
      const worker1 = plan.cluster!.workers[0]!;
      expect(await promiseOf(d.deployment.cluster)).toEqual({
        image: plan.cluster!.image,
        head: { id: "head", privateAddress: "10.20.0.1", layers: plan.cluster!.head.layers.length },
        workers: [
          {
            id: "worker-1",
            endpoint: "10.20.0.2:50052",
            layers: worker1.layers.length,
            holdsOutput: worker1.holdsOutput,
            plannedBytes: worker1.memory.plannedBytes,
          },
        ],
      });
      expect(worker1.layers.length).toBeGreaterThan(0);
    });

    it("re-projects a split with the head's measured bandwidth, the workers keeping the plan's figure, and says so", async () => {
      expect(await promiseOf(d.deployment.measuredBandwidthGBps)).toBe(87.5);
      const reprojected = await promiseOf(d.deployment.projectedFromMeasuredBandwidthDecodeTokensPerSecond);
      // 87.5 GB/s is below the plan's 230 GB/s for the head: the head's half of each token can only get slower.
      expect(reprojected).not.toBeNull();
      expect(reprojected!).toBeLessThanOrEqual(plan.projection.decodeTokensPerSecond);
      expect((await promiseOf(d.deployment.speedSideBySide)).notes.join("\n")).toContain(
        "the workers' layers keep the plan's figure",
      );
    });

    it("fails nothing", () => {
      expect(rejections).toEqual([]);
    });
  });
}

describe(`${STACK} / kimi-dynamic executor`, () => {
  const name = "split-dynamic";
  let d: ReturnType<typeof deploy>;
  beforeAll(async () => {
    d = deploy(name, { config: withDeployment(baseConfig, { remoteExecutor: "kimi-dynamic" }) });
    await promiseOf(pulumi.all([d.deployment.urn, d.deployment.measuredDecodeTokensPerSecond]));
    await settle();
  });

  it("runs the worker's steps with the kit's own SSH provider, the firewall before the container", () => {
    const steps = d.mine().filter((resource) => resource.name.startsWith(`${name}-rpc-worker-1-`));
    expect(steps.length).toBe(7);
    expect(new Set(steps.map((resource) => resource.type))).toEqual(new Set([SSH_COMMAND]));
    expect(String(d.input("rpc-worker-1-firewall").create)).toContain("--allow 50052=10.20.0.1/32");
    expect(String(d.input("rpc-worker-1-container").create)).toContain("--entrypoint /app/ggml-rpc-server");
    expect(d.edge("rpc-worker-1-container").dependsOn).toEqual([`${name}-rpc-worker-1-firewall`]);
    expect(d.edge("server-container").dependsOn).toContain(`${name}-rpc-worker-1`);
    expect(rejections).toEqual([]);
  });
});

describe("what stops an update", () => {
  it("different image IDs on the head and a worker: a RunError naming each host and its ID, and no head container", async () => {
    const name = "mismatch-ids";
    const failed = nextRejection();
    const d = deploy(name);
    const error = await failed;
    expect(pulumi.RunError.isInstance(error)).toBe(true);
    const message = (error as Error).message;
    expect(message).toContain(`head head: ${SAME_ID}`);
    expect(message).toContain(`worker worker-1 (10.20.0.2:50052): ${OTHER_ID}`);
    expect(message).toContain("the hosts of the split hold different images");
    expect(d.mine().some((resource) => resource.name === `${name}-server-container`)).toBe(false);
  });

  it("a worker whose container no longer runs: the next update fails naming it, and the head is not started", async () => {
    const name = "worker-down";
    const failed = nextRejection();
    const d = deploy(name, { sshPrivateKey: `${PRIVATE_KEY}worker-down\n` });
    const error = await failed;
    expect(pulumi.RunError.isInstance(error)).toBe(true);
    expect((error as Error).message).toContain(
      "worker worker-1 (10.20.0.2:50052): ggml-rpc-server container not running (container kimi-kit-rpc-worker-1: exited, exit code 139",
    );
    // How to bring it back: the very command the container step ran.
    expect((error as Error).message).toContain(
      `Start it again on that host with \`${remoteScript("llama-container.sh", rpcServerUpArgv(plan, plan.cluster!.workers[0]!))}\``,
    );
    expect(d.mine().some((resource) => resource.name === `${name}-server-container`)).toBe(false);
  });

  it("every unhandled rejection is one of those RunErrors", async () => {
    await settle();
    expect(rejections.length).toBeGreaterThan(0);
    for (const reason of rejections) {
      expect(pulumi.RunError.isInstance(reason)).toBe(true);
      expect((reason as Error).message).toMatch(/hold different images|ggml-rpc-server container not running/);
    }
  });
});

describe("preview", () => {
  beforeAll(() => mocks(true));

  it("asks no worker anything, even where the container step's last output is known", async () => {
    const before = status.calls.length;
    const d = deploy("split-preview");
    expect(await promiseOf(d.deployment.workers[0]!.containerState)).toBe("not checked in preview");
    await settle();
    expect(d.mine().some((resource) => resource.type === "kimi-kit:fleet:RpcWorker")).toBe(true);
    expect(status.calls.length).toBe(before);
    expect(rejections.every((reason) => !String(reason).includes("split-preview"))).toBe(true);
  });
});
