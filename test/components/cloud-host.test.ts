/**
 * The AWS host (components/host/cloud-host.ts) against a fake EC2/EBS account (aws-fake.ts) behind the
 * Pulumi mocks, and its cloud-init mount script run for real (bash, blkid, mkfs.ext4 on image files
 * under a fake /dev/disk/by-id):
 * - a later `up` that finds a newer Ubuntu AMI does not change the instance's AMI;
 * - a replaced instance lands next to the same volume, which is re-attached (detached first);
 * - a volume kept by an earlier destroy is found by its tags and imported, not duplicated;
 * - cloud-init mounts only the volume whose NVMe serial is its EBS id, formats it only when blank,
 *   and fails, naming the volume, when it does not show up in time.
 */
import { spawnSync, spawn } from "node:child_process";
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  truncateSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import * as pulumi from "@pulumi/pulumi";
import { parse as parseYaml } from "yaml";
import { readStackValues } from "../../planner/stack-file";
import { parseStackConfig } from "../../planner/config";
import { buildPlan } from "../../planner/plan";
import { installMocks, registered } from "./mocks";
import { DEFAULT_AMI, fakeAws, type FakeVolume } from "./aws-fake";
import {
  chooseModelVolume,
  CloudHost,
  cloudInit,
  MODEL_TAG,
  PULUMI_STACK_TAG,
  STACK_TAG,
} from "../../components/host/cloud-host";

beforeAll(() => installMocks(false));
beforeEach(() => fakeAws.reset());

const STACK = "aws-r7i";
/** project/stack as the mocks name them (installMocks: project kimi-kit, stack test, no organization). */
const PULUMI_STACK = "kimi-kit/test";

function planFor(mutate?: (raw: Record<string, unknown>) => void) {
  const raw = structuredClone(readStackValues(STACK));
  mutate?.(raw);
  return buildPlan(STACK, parseStackConfig(STACK, raw));
}

/** One `pulumi up` of the cloud host under the mocks: what it registered and with which options. */
interface Run {
  name: string;
  inputs: (suffix: string) => Record<string, unknown>;
  options: (suffix: string) => pulumi.CustomResourceOptions;
}

async function until(condition: () => boolean, what: string): Promise<void> {
  for (let waited = 0; !condition(); waited += 10) {
    if (waited > 5000) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

async function up(name: string, plan = planFor()): Promise<Run> {
  const options = new Map<string, pulumi.CustomResourceOptions>();
  const capture: pulumi.ResourceTransformation = (args) => {
    options.set(args.name, args.opts as pulumi.CustomResourceOptions);
    return undefined;
  };
  new CloudHost(name, { plan }, { transformations: [capture] });
  const mine = (suffix: string) => registered.find((resource) => resource.name === `${name}-${suffix}`);
  // The volume, the instance and the attachment wait on the AWS lookups: wait for the last of them.
  await until(() => mine("models-attach") !== undefined, `${name}-models-attach`);
  return {
    name,
    inputs: (suffix) => mine(suffix)!.inputs,
    options: (suffix) => options.get(`${name}-${suffix}`)!,
  };
}

/**
 * What the engine sends the provider on a later `up`: the program's inputs, except that every
 * property named in ignoreChanges keeps its value from the state (Pulumi's documented ignoreChanges).
 */
function effectiveInputs(
  previous: Record<string, unknown>,
  next: Record<string, unknown>,
  ignoreChanges: string[] | undefined,
): Record<string, unknown> {
  const result = { ...next };
  for (const key of ignoreChanges ?? []) if (key in previous) result[key] = previous[key];
  return result;
}

function userDataOf(run: Run): { bootcmd: string[][] } {
  // The mock monitor hands secrets over in their wire form ({ <signature>, value }).
  const raw = run.inputs("instance").userData as string | { value: string };
  return parseYaml(typeof raw === "string" ? raw : raw.value) as { bootcmd: string[][] };
}

describe("AMI", () => {
  it("a newer Ubuntu image published between two `up`s does not change the instance's AMI", async () => {
    const first = await up("ami-first");
    expect(first.inputs("instance").ami).toBe(DEFAULT_AMI);

    const newer = "ami-0feedfacecafe0001";
    fakeAws.publishImage({
      id: newer,
      name: "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-20260101",
      ownerId: "099720109477",
      creationDate: "2026-01-01T00:00:00.000Z",
    });
    const second = await up("ami-second");
    // The lookup itself does see the newer image: the test would be empty otherwise.
    expect(second.inputs("instance").ami).toBe(newer);
    const sent = effectiveInputs(
      first.inputs("instance"),
      second.inputs("instance"),
      second.options("instance").ignoreChanges,
    );
    expect(sent.ami).toBe(DEFAULT_AMI);
  });

  it("an explicit host.ami is a pin the user changes on purpose: it is sent as it is, not ignored", async () => {
    const pinned = "ami-0123456789abcdef0";
    const run = await up(
      "ami-pinned",
      planFor((raw) => ((raw.host as Record<string, unknown>).ami = pinned)),
    );
    expect(run.inputs("instance").ami).toBe(pinned);
    expect(run.options("instance").ignoreChanges ?? []).not.toContain("ami");
  });
});

describe("model volume across re-creates", () => {
  it("a replaced instance is placed in the volume's zone and the same volume is detached, then re-attached", async () => {
    const first = await up("replace-first");
    // EC2 would put an instance without a zone wherever it likes (the fake takes the next zone).
    const second = await up("replace-second");
    const volumeBefore = first.inputs("models");
    const volumeAfter = effectiveInputs(volumeBefore, second.inputs("models"), second.options("models").ignoreChanges);
    // No input of the volume changes, so the engine neither replaces nor orphans it.
    expect(volumeAfter).toEqual(volumeBefore);
    expect(second.inputs("instance").availabilityZone).toBe(volumeAfter.availabilityZone);
    // Attached to one instance at a time: the old attachment goes before the new one is made, with
    // the old instance stopped so the file system is released.
    expect(second.options("models-attach").deleteBeforeReplace).toBe(true);
    expect(second.inputs("models-attach").stopInstanceBeforeDetaching).toBe(true);
    expect(first.options("models").retainOnDelete).toBe(true);
  });

  it("after a destroy that kept the volume, the next `up` imports that volume (found by stack and model tags) instead of creating a second one", async () => {
    const first = await up("adopt-first");
    const created = [...fakeAws.volumes.values()];
    expect(created).toHaveLength(1);
    const kept = created[0]!;
    expect(kept.tags[STACK_TAG]).toBe(STACK);
    expect(kept.tags[PULUMI_STACK_TAG]).toBe(PULUMI_STACK);
    fakeAws.destroyKeepingVolumes();

    const second = await up("adopt-second");
    expect(second.options("models").import).toBe(kept.id);
    expect([...fakeAws.volumes.keys()]).toEqual([kept.id]);
    // Re-attached to the new instance, and cloud-init mounts exactly that volume.
    const instance = [...fakeAws.instances.values()].at(-1)!;
    expect(kept.attachedTo).toBe(instance.id);
    expect(userDataOf(second).bootcmd[0]!.slice(3, 5)).toEqual(["kimi-model-volume", kept.id]);
    expect(first.inputs("models").tags).toEqual(second.inputs("models").tags);
  });

  it("a kept volume smaller than wanted is imported as it is (an import whose inputs differ fails)", async () => {
    const plan = planFor();
    const kept: FakeVolume = {
      id: "vol-0aaaaaaaaaaaaaaa1",
      availabilityZone: "us-east-1c",
      size: 100,
      type: "gp3",
      iops: 3000,
      throughput: 125,
      tags: {
        Name: `kimi-kit-${STACK}-models`,
        [STACK_TAG]: STACK,
        [PULUMI_STACK_TAG]: PULUMI_STACK,
        [MODEL_TAG]: `${plan.config.model.repo}/${plan.config.model.tier}`,
        owner: "ops",
      },
      status: "available",
    };
    fakeAws.volumes.set(kept.id, kept);
    const run = await up("adopt-small", plan);
    expect(run.options("models").import).toBe(kept.id);
    expect(run.inputs("models")).toMatchObject({
      size: 100,
      availabilityZone: "us-east-1c",
      iops: 3000,
      throughput: 125,
    });
    expect(run.inputs("instance").availabilityZone).toBe("us-east-1c");
    expect(kept.status).toBe("in-use");
  });

  it("volumes of another model or another stack, or still attached, are left alone", async () => {
    const plan = planFor();
    const model = `${plan.config.model.repo}/${plan.config.model.tier}`;
    const decoys: FakeVolume[] = [
      {
        id: "vol-0bbbbbbbbbbbbbbb1",
        availabilityZone: "us-east-1a",
        size: 466,
        type: "gp3",
        iops: 6000,
        throughput: 1000,
        tags: { [STACK_TAG]: STACK, [PULUMI_STACK_TAG]: PULUMI_STACK, [MODEL_TAG]: "other/Repo-GGUF/Q4_K_M" },
        status: "available",
      },
      {
        id: "vol-0bbbbbbbbbbbbbbb2",
        availabilityZone: "us-east-1a",
        size: 466,
        type: "gp3",
        iops: 6000,
        throughput: 1000,
        tags: { [STACK_TAG]: "other-stack", [PULUMI_STACK_TAG]: "kimi-kit/other-stack", [MODEL_TAG]: model },
        status: "available",
      },
      {
        id: "vol-0bbbbbbbbbbbbbbb3",
        availabilityZone: "us-east-1a",
        size: 466,
        type: "gp3",
        iops: 6000,
        throughput: 1000,
        tags: { [STACK_TAG]: STACK, [PULUMI_STACK_TAG]: PULUMI_STACK, [MODEL_TAG]: model },
        status: "in-use",
        attachedTo: "i-0elsewhere",
      },
      // Another team's stack of the same name in the same account.
      {
        id: "vol-0bbbbbbbbbbbbbbb4",
        availabilityZone: "us-east-1a",
        size: 466,
        type: "gp3",
        iops: 6000,
        throughput: 1000,
        tags: { [STACK_TAG]: STACK, [PULUMI_STACK_TAG]: "other-org/kimi-kit/aws-r7i", [MODEL_TAG]: model },
        status: "available",
      },
    ];
    for (const volume of decoys) fakeAws.volumes.set(volume.id, structuredClone(volume));
    const run = await up("decoys", plan);
    expect(run.options("models").import).toBeUndefined();
    expect(fakeAws.volumes.size).toBe(decoys.length + 1);
    for (const volume of decoys) expect(fakeAws.volumes.get(volume.id)).toEqual(volume);
  });

  it("two kept volumes for the same stack and model are refused, naming both", () => {
    const volume = (id: string) => ({
      id,
      availabilityZone: "us-east-1a",
      size: 466,
      volumeType: "gp3",
      iops: 6000,
      throughput: 1000,
      tags: {},
    });
    expect(() =>
      chooseModelVolume({
        stack: STACK,
        instanceType: "r7i.12xlarge",
        region: "us-east-1",
        retained: [volume("vol-01"), volume("vol-02")],
        offeredZones: ["us-east-1a"],
        wantedGiB: 466,
        tags: {},
      }),
    ).toThrow(/vol-01 in us-east-1a, vol-02 in us-east-1a/);
  });

  it("a type offered in no zone of the region is refused before anything is created", () => {
    expect(() =>
      chooseModelVolume({
        stack: STACK,
        instanceType: "p5.48xlarge",
        region: "eu-north-1",
        retained: [],
        offeredZones: [],
        wantedGiB: 466,
        tags: {},
      }),
    ).toThrow(/p5\.48xlarge is not offered in any availability zone of eu-north-1/);
  });
});

// ------------------------------------------------------------------ cloud-init's mount script, run for real

const VOLUME_ID = "vol-0123456789abcdef0";
const hasTools = ["blkid", "mkfs.ext4", "mkswap"].every(
  (tool) => spawnSync("sh", ["-c", `command -v ${tool}`]).status === 0,
);

describe.skipIf(!hasTools)("cloud-init mounts the model volume found by its EBS id", () => {
  const root = mkdtempSync(join(tmpdir(), "kimi-cloud-init-"));
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  const userData = cloudInit({
    hostPrivateKey: "-----BEGIN OPENSSH PRIVATE KEY-----\nx\n-----END OPENSSH PRIVATE KEY-----",
    hostPublicKey: "ssh-ed25519 AAAA",
    sshPublicKey: "ssh-ed25519 BBBB",
    modelDir: "/srv/kimi/models",
    modelVolumeId: VOLUME_ID,
    gpus: false,
  });
  const config = parseYaml(userData) as { bootcmd?: string[][]; write_files: { path: string }[] };
  // The command exactly as cloud-init runs it: bash -c SCRIPT NAME VOLUME_ID MODEL_DIR WAIT_S.
  const bootcmd = config.bootcmd?.[0] ?? [];

  it("runs as the first bootcmd, with the volume id and the model directory, before root's key is written", () => {
    expect(bootcmd.slice(0, 2)).toEqual(["bash", "-c"]);
    expect(bootcmd.slice(3, 6)).toEqual(["kimi-model-volume", VOLUME_ID, "/srv/kimi/models"]);
    expect(Number(bootcmd[6])).toBeGreaterThanOrEqual(600);
    const keys = userData.split("\n");
    expect(keys.indexOf("bootcmd:")).toBeLessThan(keys.indexOf("write_files:"));
    expect(config.write_files.map((file) => file.path)).toContain("/root/.ssh/authorized_keys");
  });

  /** cloud-init's util.shellify: each list entry becomes one line of single-quoted words ('\'' for a quote). */
  const shellify = (commands: string[][]) =>
    `#!/bin/sh\n${commands.map((words) => `${words.map((word) => `'${word.replaceAll("'", "'\\''")}'`).join(" ")}\n`).join("")}`;

  let caseNumber = 0;
  /**
   * A fake host: /dev/disk/by-id links to image files, stubs for mount(8), mountpoint(1) and chattr(1) (no root, no
   * real mounts).
   */
  function fakeHost(devices: Record<string, "blank" | "ext4" | "swap" | "absent">) {
    const dir = join(root, `case-${++caseNumber}`);
    const byId = join(dir, "by-id");
    const bin = join(dir, "bin");
    mkdirSync(byId, { recursive: true });
    mkdirSync(bin);
    const images: Record<string, string> = {};
    for (const [link, kind] of Object.entries(devices)) {
      const image = join(dir, `nvme${Object.keys(images).length}n1`);
      images[link] = image;
      if (kind === "absent") continue;
      writeFileSync(image, "");
      truncateSync(image, 16 * 1024 * 1024);
      if (kind === "ext4") expect(spawnSync("mkfs.ext4", ["-q", "-L", "earlier", image]).status).toBe(0);
      if (kind === "swap") expect(spawnSync("mkswap", [image]).status).toBe(0);
      symlinkSync(image, join(byId, link));
    }
    const mounted = join(dir, "mounted");
    writeFileSync(join(bin, "mount"), `#!/bin/sh\necho "$@" >> ${JSON.stringify(mounted)}\n`);
    writeFileSync(join(bin, "mountpoint"), `#!/bin/sh\n[ -e ${JSON.stringify(mounted)} ]\n`);
    const chattr = join(dir, "chattr.log");
    writeFileSync(join(bin, "chattr"), `#!/bin/sh\necho "$@" >> ${JSON.stringify(chattr)}\n`);
    // resize2fs grows a mounted ext4 online; nothing is mounted here, so the stub records the call.
    const resized = join(dir, "resize2fs.log");
    writeFileSync(join(bin, "resize2fs"), `#!/bin/sh\necho "$@" >> ${JSON.stringify(resized)}\n`);
    for (const stub of ["mount", "mountpoint", "chattr", "resize2fs"]) chmodSync(join(bin, stub), 0o755);
    const fstab = join(dir, "fstab");
    writeFileSync(fstab, "LABEL=cloudimg-rootfs / ext4 discard,errors=remount-ro 0 1\n");
    const modelDir = join(dir, "models");
    // cloud-init's bootcmd module shellifies the entry into a /bin/sh script and runs that; here with a
    // model directory inside the fake host, a shorter wait, and the fake by-id folder and fstab appended.
    const script = join(dir, "bootcmd.sh");
    const command = (waitS: number) => {
      writeFileSync(script, shellify([[...bootcmd.slice(0, 5), modelDir, String(waitS), byId, fstab]]));
      return [script];
    };
    const env = { ...process.env, PATH: `${bin}:${process.env.PATH ?? ""}` };
    return {
      images,
      byId,
      fstab,
      modelDir,
      mounted,
      chattr,
      resized,
      run: (waitS: number) => spawnSync("/bin/sh", command(waitS), { env, encoding: "utf8" }),
      runAsync: (waitS: number) =>
        new Promise<{ status: number | null; stderr: string }>((resolve) => {
          const child = spawn("/bin/sh", command(waitS), { env });
          let stderr = "";
          child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
          child.on("close", (status) => resolve({ status, stderr }));
        }),
    };
  }

  const probe = (image: string) => {
    const result = spawnSync("blkid", ["-p", "-o", "export", image], { encoding: "utf8" });
    return {
      status: result.status,
      fields: Object.fromEntries(
        result.stdout
          .split("\n")
          .filter(Boolean)
          .map((line) => line.split("=", 2) as [string, string]),
      ),
    };
  };
  const OURS = `nvme-Amazon_Elastic_Block_Store_${VOLUME_ID.replace("-", "")}`;
  const ROOT = "nvme-Amazon_Elastic_Block_Store_vol0fedcba98765432100";
  const INSTANCE_STORE = "nvme-Amazon_EC2_NVMe_Instance_Storage_AWS1A2B3C4D5E6F7G8H9";

  it("formats the blank volume it was given and nothing else, even a blank instance-store disk listed after it", () => {
    const host = fakeHost({ [ROOT]: "blank", [OURS]: "blank", [INSTANCE_STORE]: "blank" });
    const result = host.run(5);
    expect(result.status, result.stderr).toBe(0);
    const ours = probe(host.images[OURS]!);
    expect(ours.fields.TYPE).toBe("ext4");
    expect(probe(host.images[INSTANCE_STORE]!).status).toBe(2);
    expect(probe(host.images[ROOT]!).status).toBe(2);
    const fstab = readFileSync(host.fstab, "utf8");
    expect(fstab).toContain("LABEL=cloudimg-rootfs / ext4");
    expect(fstab).toContain(`UUID=${ours.fields.UUID} ${host.modelDir} ext4 defaults,nofail 0 2`);
    expect(readFileSync(host.mounted, "utf8").trim()).toBe(host.modelDir);
  });

  it("never formats a volume that already has a file system, and mounts it by its UUID", () => {
    const host = fakeHost({ [OURS]: "ext4" });
    const before = probe(host.images[OURS]!).fields;
    const result = host.run(5);
    expect(result.status, result.stderr).toBe(0);
    const after = probe(host.images[OURS]!).fields;
    expect(after.UUID).toBe(before.UUID);
    expect(after.LABEL).toBe("earlier");
    expect(readFileSync(host.fstab, "utf8")).toContain(`UUID=${before.UUID} ${host.modelDir} ext4`);
    // Grown to the volume's size once mounted (a volume enlarged since its file system was made).
    expect(readFileSync(host.resized, "utf8").trim()).toBe(host.images[OURS]);
  });

  it("refuses a volume that holds something other than a file system, leaving it as it is", () => {
    const host = fakeHost({ [OURS]: "swap" });
    const result = host.run(5);
    expect(result.status).not.toBe(0);
    expect(result.stderr).toMatch(new RegExp(`${VOLUME_ID} .*not blank`));
    expect(probe(host.images[OURS]!).fields.TYPE).toBe("swap");
    expect(existsSync(host.mounted)).toBe(false);
    expect(readFileSync(host.fstab, "utf8")).not.toContain(host.modelDir);
  });

  it("fails, naming the volume, when it does not appear in time, and touches no other disk", () => {
    const host = fakeHost({ [ROOT]: "blank", [INSTANCE_STORE]: "blank", [OURS]: "absent" });
    const started = Date.now();
    const result = host.run(2);
    expect(result.status).not.toBe(0);
    expect(Date.now() - started).toBeGreaterThanOrEqual(1900);
    expect(result.stderr).toContain(`EBS volume ${VOLUME_ID} did not appear`);
    // The empty model directory was made immutable first, so nothing fills the root disk meanwhile.
    expect(readFileSync(host.chattr, "utf8").trim()).toBe(`+i ${host.modelDir}`);
    expect(probe(host.images[INSTANCE_STORE]!).status).toBe(2);
    expect(probe(host.images[ROOT]!).status).toBe(2);
    expect(existsSync(host.mounted)).toBe(false);
  });

  it("waits for a volume attached after boot", async () => {
    const host = fakeHost({ [OURS]: "absent" });
    const pending = host.runAsync(30);
    await new Promise((resolve) => setTimeout(resolve, 1500));
    writeFileSync(host.images[OURS]!, "");
    truncateSync(host.images[OURS]!, 16 * 1024 * 1024);
    symlinkSync(host.images[OURS]!, join(host.byId, OURS));
    const result = await pending;
    expect(result.status, result.stderr).toBe(0);
    expect(probe(host.images[OURS]!).fields.TYPE).toBe("ext4");
  });

  it("run twice, keeps one fstab entry for the model directory", () => {
    const host = fakeHost({ [OURS]: "blank" });
    expect(host.run(5).status).toBe(0);
    rmSync(host.mounted);
    expect(host.run(5).status).toBe(0);
    const entries = readFileSync(host.fstab, "utf8")
      .split("\n")
      .filter((line) => line.split(/\s+/)[1] === host.modelDir);
    expect(entries).toHaveLength(1);
  });
});
