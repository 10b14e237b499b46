/** container-spec.ts: both engines carry the same container for every stack that fits. */
import { describe, expect, it } from "vitest";
import { listStacks, loadStackConfig, readStackValues } from "../../planner/stack-file";
import { buildPlan, CONTAINER_API_KEY_FILE } from "../../planner/plan";
import {
  containerSpecFromPlan,
  dockerContainerArgs,
  llamaContainerUpArgv,
  viewOfCliArgv,
  viewOfDockerArgs,
  imageForHost,
  goDurationOfSeconds,
} from "../../components/serving/container-spec";
import { shellQuote } from "../../planner/shell";
import { loadCatalog } from "../../planner/catalog";
import { parseStackConfig } from "../../planner/config";

const plans = listStacks()
  .map((stack) => buildPlan(stack, loadStackConfig(stack)))
  .filter((plan) => plan.fits && plan.config.host.kind === "bare-metal");

describe.each(plans.map((plan) => [plan.stack, plan] as const))("%s", (_stack, plan) => {
  const spec = containerSpecFromPlan(plan);
  const cli = viewOfCliArgv(llamaContainerUpArgv(spec));
  const provider = viewOfDockerArgs(dockerContainerArgs(spec));

  it("docker-cli and docker-provider agree on image, args, mounts, gpus, restart, health", () => {
    expect(cli).toEqual(provider);
    expect(cli.image).toBe(plan.image);
    expect(cli.args).toEqual(plan.llamaServerArgs);
    expect(cli.gpus).toBe(plan.host.gpus.length > 0 ? "all" : undefined);
    expect(cli.restart).toBe("unless-stopped");
    expect(cli.mounts).toContain(`${plan.config.deployment.modelDir}:/models:ro`);
    expect(cli.mounts.some((mount) => mount.endsWith(`:${CONTAINER_API_KEY_FILE}:ro`))).toBe(true);
  });

  it("never carries a key, only the key file's path", () => {
    expect(plan.llamaServerArgs).toContain(CONTAINER_API_KEY_FILE);
    // The only environment is a split's RDMA switch: never a key, nor any llama-server setting.
    expect(dockerContainerArgs(spec).envs).toEqual(plan.cluster ? ["GGML_RPC_NO_RDMA=1"] : undefined);
  });
});

it("quotes shell words", () => {
  expect(shellQuote(["a", "b c", "it's", "--x=1"])).toBe("a 'b c' 'it'\\''s' --x=1");
});

it("writes health-check durations the way Docker reads them back (Go's time.Duration.String)", () => {
  // Expected values are Go's own output: fmt.Println(30*time.Second, 30*time.Minute, 90*time.Minute+5*time.Second,
  // 0*time.Second).
  expect([30, 1800, 5405, 0, 3600].map(goDurationOfSeconds)).toEqual(["30s", "30m0s", "1h30m5s", "0s", "1h0m0s"]);
  expect(() => goDurationOfSeconds(1.5)).toThrow(/whole/);
});

describe("image for the probed host", () => {
  const images = loadCatalog().llamaCpp.images;
  const planOf = (stack: string) => buildPlan(stack, parseStackConfig(stack, readStackValues(stack)));
  it("takes the CUDA 13 build only when the driver supports it, the CPU build without GPUs, and a stack's own image always", () => {
    const gpu = planOf("rtx3090x4");
    expect(imageForHost(gpu, "server-cuda13")).toBe(images.cuda13);
    expect(imageForHost(gpu, "server-cuda")).toBe(images.cuda);
    expect(imageForHost(gpu, undefined)).toBe(gpu.image);
    expect(imageForHost(planOf("cpu-ddr5"), "server")).toBe(images.cpu);
    const values = readStackValues("rtx3090x4");
    const deployment = (values.deployment ?? {}) as Record<string, unknown>;
    const own = buildPlan(
      "rtx3090x4",
      parseStackConfig("rtx3090x4", { ...values, deployment: { ...deployment, image: "registry.example/llama:mine" } }),
    );
    expect(own.imageByDriver).toBeUndefined();
    expect(imageForHost(own, "server-cuda13")).toBe("registry.example/llama:mine");
  });
});
