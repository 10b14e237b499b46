/**
 * Pulumi mocks for the component tests: records every registered resource (type, name, inputs) and,
 * through a `transformations` option on the root component (applied in-process to every descendant),
 * each resource's parent and dependsOn. Call installMocks() before importing any component.
 */
import { createHash } from "node:crypto";
import { createRequire } from "node:module";
import * as pulumi from "@pulumi/pulumi";
import { fakeAws } from "./aws-fake";

export const GENERATED_KEY = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
export const PROBE_STDOUT =
  "ram_bytes=412316860416\nphysical_cores=16\ngpu_count=0\nllama_image_variant=cpu\nshortfalls=\n";
export const BANDWIDTH_STDOUT =
  "read_bandwidth_gbps=87.50\nthreads=16\nblock_bytes=67108864\nseconds=10\nnuma_interleave=no\ntool=sysbench 1.0.20\n";
export const SMOKE_STDOUT =
  'waiting for health\n{"timings":{"prompt_n":20,"prompt_per_second":41.5,"predicted_n":16,"predicted_per_second":9.25}}\n';
/** What the cloud host's `ssh-keygen` step prints: the private key, then the public line. */
export const HOST_KEY_PAIR =
  "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAAtestonly\n-----END OPENSSH PRIVATE KEY-----\nssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKimiKitCloudHostKeyForUnitTests0000000000 kimi-kit-host\n";
/** A syntactically valid pinned host key for the stacks that do not carry one. */
export const HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKimiKitTestHostKeyOnlyForUnitTests000000000";

/** What the mocked key step named `stepName` (a Gateway's `<name>-key-<team>`) prints. */
export function teamKeyFor(stepName: string): string {
  return createHash("sha256").update(stepName).digest("hex");
}

export interface Registered {
  type: string;
  name: string;
  inputs: Record<string, unknown>;
  custom: boolean;
}

export interface Edge {
  type: string;
  name: string;
  parent: string | undefined;
  dependsOn: string[];
}

export const registered: Registered[] = [];

const NANOS_PER_UNIT: Record<string, number> = { ns: 1, us: 1e3, µs: 1e3, ms: 1e6, s: 1e9, m: 60e9, h: 3600e9 };

/** Go's time.ParseDuration (the Docker provider parses health-check durations with it). */
export function parseGoDuration(text: string): number {
  const parts = [...text.matchAll(/(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)/g)];
  if (text === "0") return 0;
  if (parts.length === 0 || parts.map((part) => part[0]).join("") !== text)
    throw new Error(`time: invalid duration ${JSON.stringify(text)}`);
  return Math.round(parts.reduce((total, part) => total + Number(part[1]) * NANOS_PER_UNIT[part[2]!]!, 0));
}

/** Go's time.Duration.String(), which the provider stores when it reads a container back from Docker. */
export function formatGoDuration(nanos: number): string {
  if (nanos === 0) return "0s";
  const trim = (value: number, decimals: number) => value.toFixed(decimals).replace(/\.?0+$/, "");
  if (nanos < 1e3) return `${nanos}ns`;
  if (nanos < 1e6) return `${trim(nanos / 1e3, 3)}µs`;
  if (nanos < 1e9) return `${trim(nanos / 1e6, 6)}ms`;
  const hours = Math.floor(nanos / 3600e9);
  const minutes = Math.floor((nanos % 3600e9) / 60e9);
  const seconds = trim((nanos % 60e9) / 1e9, 9);
  return hours > 0 ? `${hours}h${minutes}m${seconds}s` : minutes > 0 ? `${minutes}m${seconds}s` : `${seconds}s`;
}

/**
 * What @pulumi/docker keeps in the state after creating a container: Docker's own view, read back
 * (terraform-provider-docker's container read), where health-check durations come back in Go's
 * canonical form. A kit input that differs from this shows as `~healthcheck` on every `up`.
 */
export function dockerContainerReadBack(inputs: Record<string, unknown>): Record<string, unknown> {
  const healthcheck = inputs.healthcheck as Record<string, unknown> | undefined;
  if (!healthcheck) return { ...inputs };
  const canonical = Object.fromEntries(
    Object.entries(healthcheck).map(([key, value]) => [
      key,
      ["interval", "timeout", "startPeriod", "startInterval"].includes(key) && typeof value === "string"
        ? formatGoDuration(parseGoDuration(value))
        : value,
    ]),
  );
  return { ...inputs, healthcheck: canonical };
}

export function installMocks(preview = false): Promise<void> {
  return pulumi.runtime.setMocks(
    {
      newResource(args: pulumi.runtime.MockResourceArgs) {
        registered.push({ type: args.type, name: args.name, inputs: args.inputs, custom: args.custom ?? false });
        const state: Record<string, unknown> = { ...args.inputs };
        if (args.type === "command:remote:Command") {
          state.stdout = args.name.endsWith("-probe")
            ? PROBE_STDOUT
            : args.name.endsWith("-prep-bandwidth")
              ? BANDWIDTH_STDOUT
              : args.name.endsWith("-smoke")
                ? SMOKE_STDOUT
                : "ok\n";
          state.stderr = "";
        }
        // Each team's key is its own (the gateway refuses two teams with one key), as /dev/urandom's would be.
        if (args.type === "command:local:Command")
          state.stdout = args.name.endsWith("-host-key")
            ? HOST_KEY_PAIR
            : /-key-[^-]/.test(args.name)
              ? teamKeyFor(args.name)
              : GENERATED_KEY;
        // AWS resources: a fake EC2/EBS account that answers as the provider documents (aws-fake.ts).
        const awsResult = args.type.startsWith("aws:") ? fakeAws.newResource(args, preview) : undefined;
        if (awsResult) return awsResult;
        if (args.type === "docker:index/remoteImage:RemoteImage") state.imageId = args.inputs.name;
        if (args.type === "docker:index/container:Container")
          Object.assign(state, dockerContainerReadBack(args.inputs));
        return { id: `${args.name}-id`, state };
      },
      call(args: pulumi.runtime.MockCallArgs) {
        if (args.token.startsWith("aws:")) return fakeAws.call(args);
        return args.inputs;
      },
    },
    "kimi-kit",
    "test",
    preview,
  );
}

/** Records parent and dependsOn of every resource created under the component it is given to. */
export function edgeRecorder(): { transformation: pulumi.ResourceTransformation; edges: Edge[] } {
  const names = new Map<pulumi.Resource, string>();
  const edges: Edge[] = [];
  const transformation: pulumi.ResourceTransformation = (args) => {
    names.set(args.resource, args.name);
    const dependsOn = args.opts.dependsOn;
    const list = (Array.isArray(dependsOn) ? dependsOn : dependsOn ? [dependsOn] : []) as pulumi.Resource[];
    const edge: Edge = { type: args.type, name: args.name, parent: undefined, dependsOn: [] };
    edges.push(edge);
    // Names resolve lazily: a dependency is always registered before its dependent.
    Object.defineProperty(edge, "parent", {
      enumerable: true,
      get: () => (args.opts.parent ? names.get(args.opts.parent) : undefined),
    });
    Object.defineProperty(edge, "dependsOn", {
      enumerable: true,
      get: () => list.map((resource) => names.get(resource) ?? "?"),
    });
    return undefined;
  };
  return { transformation, edges };
}

export function promiseOf<T>(output: pulumi.Output<T>): Promise<T> {
  return new Promise((resolve) => output.apply(resolve));
}

export async function isSecret<T>(output: pulumi.Output<T>): Promise<boolean> {
  return (output as unknown as { isSecret: Promise<boolean> }).isSecret;
}

/**
 * @pulumi/pulumi's own wait for its RPC queue (runtime/settings.js waitForRPCs, which disconnect()
 * calls before it ends a program; internal, so not in the package's .d.ts): every registration is an
 * RPC kept alive until the monitor answers, and the wait repeats while new ones start meanwhile.
 */
const runtimeSettings = createRequire(__filename)("@pulumi/pulumi/runtime/settings") as {
  waitForRPCs: () => Promise<void>;
};

/** Waits until the mock monitor has answered every registration started so far, and those they start. */
export async function settle(): Promise<void> {
  await runtimeSettings.waitForRPCs();
}
