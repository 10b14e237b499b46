/**
 * Pulumi mocks for the component tests: records every registered resource (type, name, inputs) and,
 * through a `transformations` option on the root component (applied in-process to every descendant),
 * each resource's parent and dependsOn. Call installMocks() before importing any component.
 */
import * as pulumi from "@pulumi/pulumi";

export const GENERATED_KEY = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
export const PROBE_STDOUT = "ram_bytes=412316860416\nphysical_cores=16\ngpu_count=0\nllama_image_variant=cpu\nshortfalls=\n";
export const SMOKE_STDOUT = 'waiting for health\n{"timings":{"prompt_n":20,"prompt_per_second":41.5,"predicted_n":16,"predicted_per_second":9.25}}\n';
/** What the cloud host's `ssh-keygen` step prints: the private key, then the public line. */
export const HOST_KEY_PAIR =
  "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAAtestonly\n-----END OPENSSH PRIVATE KEY-----\nssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKimiKitCloudHostKeyForUnitTests0000000000 kimi-kit-host\n";
/** A syntactically valid pinned host key for the stacks that do not carry one. */
export const HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKimiKitTestHostKeyOnlyForUnitTests000000000";

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

export function installMocks(preview = false): Promise<void> {
  return pulumi.runtime.setMocks(
    {
      newResource(args: pulumi.runtime.MockResourceArgs) {
        registered.push({ type: args.type, name: args.name, inputs: args.inputs, custom: args.custom ?? false });
        const state: Record<string, unknown> = { ...args.inputs };
        if (args.type === "command:remote:Command") {
          state.stdout = args.name.endsWith("-probe") ? PROBE_STDOUT : args.name.endsWith("-smoke") ? SMOKE_STDOUT : "ok\n";
          state.stderr = "";
        }
        if (args.type === "command:local:Command") state.stdout = args.name.endsWith("-host-key") ? HOST_KEY_PAIR : GENERATED_KEY;
        if (args.type === "aws:ec2/instance:Instance") Object.assign(state, { publicIp: "198.51.100.7", availabilityZone: "us-east-1a" });
        if (args.type === "docker:index/remoteImage:RemoteImage") state.imageId = args.inputs.name;
        return { id: `${args.name}-id`, state };
      },
      call(args: pulumi.runtime.MockCallArgs) {
        if (args.token === "aws:ec2/getAmi:getAmi") return { ...args.inputs, id: "ami-0kimikit0000test" };
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
    Object.defineProperty(edge, "parent", { enumerable: true, get: () => (args.opts.parent ? names.get(args.opts.parent) : undefined) });
    Object.defineProperty(edge, "dependsOn", { enumerable: true, get: () => list.map((resource) => names.get(resource) ?? "?") });
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

/** Waits until the mock monitor has seen every registration started so far. */
export async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise((resolve) => setTimeout(resolve, 10));
}
