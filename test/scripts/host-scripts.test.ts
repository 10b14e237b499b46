/**
 * The host scripts of ansible-free-scripts/, run the way an operator (or the kit's remote
 * command) runs them: copied to the host and executed over ssh — here a real sshd on loopback,
 * so "the host" is this machine and its real numbers can be checked.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statfsSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { startLoopbackSshd, type LoopbackSshd } from "../support/sshd";
import { ensureDockerd, type Dockerd } from "../support/dockerd";
import { shellQuote } from "../../planner/shell";

const SCRIPTS_DIR = resolve(__dirname, "../../ansible-free-scripts");
const SCRIPTS = [
  "probe-host.sh",
  "install-docker.sh",
  "install-nvidia-container-toolkit.sh",
  "tune-host.sh",
  "llama-container.sh",
];

const q = (word: string) => shellQuote([word]);

interface Result {
  status: number | null;
  stdout: string;
  stderr: string;
}

function keyValues(stdout: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of stdout.split("\n")) {
    const m = /^([a-z_0-9]+)=(.*)$/.exec(line);
    if (m?.[1] !== undefined) out[m[1]] = m[2] ?? "";
  }
  return out;
}

function memTotalBytes(): number {
  const kib = /^MemTotal:\s+(\d+) kB/m.exec(readFileSync("/proc/meminfo", "utf8"))?.[1];
  if (!kib) throw new Error("/proc/meminfo has no MemTotal line");
  return Number(kib) * 1024;
}

let sshd: LoopbackSshd;
let dockerd: Dockerd;
let remoteDir: string;
let localTmp: string;

/** Runs a shell command on the host over ssh. */
function onHost(command: string, input?: string): Result {
  const r = spawnSync("ssh", [...sshd.sshArgs(), command], { input, encoding: "utf8", timeout: 120_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Runs one of the copied scripts on the host. */
function script(name: string, args: string[] = [], env = ""): Result {
  return onHost(`${env} bash ${q(`${remoteDir}/${name}`)} ${args.map(q).join(" ")}`);
}

beforeAll(async () => {
  sshd = await startLoopbackSshd();
  dockerd = await ensureDockerd();
  localTmp = mkdtempSync(join(tmpdir(), "kimi-kit-host-scripts-"));
  remoteDir = sshd.exec("mktemp -d -t kimi-kit-scripts-XXXXXX").trim();
  // lib-common.sh too: the scripts source it from their own folder, as on a host.
  for (const name of [...SCRIPTS, "lib-common.sh"]) {
    sshd.exec(
      `cat > ${q(`${remoteDir}/${name}`)} && chmod 0755 ${q(`${remoteDir}/${name}`)}`,
      readFileSync(join(SCRIPTS_DIR, name), "utf8"),
    );
  }
}, 180_000);

afterAll(async () => {
  if (sshd && remoteDir) onHost(`rm -rf ${q(remoteDir)}`);
  await sshd?.stop();
  await dockerd?.stop();
  if (localTmp) rmSync(localTmp, { recursive: true, force: true });
});

describe("every script", () => {
  it("is shellcheck-clean", () => {
    const r = spawnSync("shellcheck", ["-x", ...SCRIPTS.map((s) => join(SCRIPTS_DIR, s))], { encoding: "utf8" });
    expect(r.stdout + r.stderr).toBe("");
    expect(r.status).toBe(0);
  });

  it.each(SCRIPTS)("%s --help prints its usage and exits 0", (name) => {
    const r = script(name, ["--help"]);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^Usage:/);
    expect(r.stdout).toContain(name);
  });

  it.each(SCRIPTS)("%s rejects an unknown flag with exit 2", (name) => {
    const r = script(name, name === "llama-container.sh" ? ["status", "--bogus"] : ["--bogus"]);
    expect(r.status).toBe(2);
    expect(r.stderr).toContain("--bogus");
  });
});

describe("probe-host.sh", () => {
  it("reports this machine's real numbers as key=value lines", () => {
    const modelDir = join(localTmp, "not", "yet", "models");
    const r = script("probe-host.sh", ["--model-dir", modelDir]);
    expect(r.stderr).toBe("");
    expect(r.status).toBe(0);
    const kv = keyValues(r.stdout);

    const memTotalKiB = memTotalBytes() / 1024;
    expect(Number(kv.ram_bytes)).toBe(memTotalKiB * 1024);

    const nproc = Number(execFileSync("nproc", ["--all"]).toString().trim());
    expect(Number(kv.logical_cpus)).toBe(nproc);
    expect(Number(kv.logical_cpus)).toBe(cpus().length);

    // Independent count of physical cores: distinct (socket, core) pairs from lscpu.
    const topo = execFileSync("lscpu", ["-p=Core,Socket"])
      .toString()
      .split("\n")
      .filter((l) => l && !l.startsWith("#"));
    expect(Number(kv.physical_cores)).toBe(new Set(topo).size);
    expect(Number(kv.sockets)).toBe(new Set(topo.map((l) => l.split(",")[1] ?? "")).size);
    expect(Number(kv.physical_cores)).toBeLessThanOrEqual(Number(kv.logical_cpus));

    const nodes = readdirSync("/sys/devices/system/node").filter((n) => /^node\d+$/.test(n)).length;
    expect(Number(kv.numa_nodes)).toBe(Math.max(nodes, 1));

    const cpuinfo = readFileSync("/proc/cpuinfo", "utf8");
    expect(kv.cpu_model).toBe((/^model name\s*:\s*(.*)$/m.exec(cpuinfo)?.[1] ?? "").trim().replace(/\s+/g, " "));
    expect(kv.cpu_flags_avx512).toBe(/\bavx512f\b/.test(cpuinfo) ? "yes" : "no");

    // No GPU on this machine.
    const hasNvidiaSmi = spawnSync("bash", ["-c", "command -v nvidia-smi"]).status === 0;
    if (!hasNvidiaSmi) {
      expect(kv).toMatchObject({
        gpu_count: "0",
        gpu_names: "",
        gpu_vram_bytes: "",
        nvidia_driver: "none",
        cuda_major_supported: "none",
        llama_image_variant: "server",
      });
    }

    // Free disk of the nearest existing parent of the (absent) model dir.
    expect(kv.model_dir).toBe(modelDir);
    expect(kv.free_disk_path).toBe(localTmp);
    const fs = statfsSync(localTmp);
    const free = fs.bavail * fs.bsize;
    expect(Math.abs(Number(kv.free_disk_bytes) - free)).toBeLessThan(256 * 1024 * 1024);

    const server = execFileSync("docker", ["info", "--format", "{{.ServerVersion}}"]).toString().trim();
    expect(kv.docker).toBe(server);
    expect(kv.shortfalls).toBe("0");
  });

  it("reports every shortfall with both numbers and exits 3", () => {
    const memBytes = memTotalBytes();
    const want = 412316860416; // 384 GiB
    const r = script("probe-host.sh", [
      "--min-ram-bytes",
      String(want),
      "--min-physical-cores",
      "4096",
      "--min-gpus",
      "8",
    ]);
    expect(r.status).toBe(3);
    const ramLine = r.stderr.split("\n").find((l) => l.startsWith("probe: ram:"));
    expect(ramLine).toBeDefined();
    expect(ramLine).toContain(`(${memBytes} bytes)`);
    expect(ramLine).toContain(`${(memBytes / 2 ** 30).toFixed(1)} GiB`);
    expect(ramLine).toContain("the stack says at least 384.0 GiB (412316860416 bytes)");
    expect(r.stderr).toMatch(/^probe: physical_cores: host has \d+ physical cores; the stack says at least 4096$/m);
    expect(r.stderr).toMatch(/^probe: gpus: host has 0 NVIDIA GPUs/m);
    expect(keyValues(r.stdout).shortfalls).toBe("3");
  });

  it("reads GPUs from nvidia-smi and picks the image variant by driver major (CUDA 13 needs >= 580)", () => {
    const fakeBin = join(localTmp, "fake-nvidia");
    const fake = (driver: string, cuda: string) => `#!/usr/bin/env bash
if [[ "$*" == *--query-gpu* ]]; then
  echo "NVIDIA H200, 143771, ${driver}"
  echo "NVIDIA H200, 143771, ${driver}"
else
  echo "| NVIDIA-SMI ${driver}   Driver Version: ${driver}   CUDA Version: ${cuda}     |"
fi
`;
    const cases: Array<[driver: string, cuda: string, variant: string]> = [
      ["580.65.06", "13.0", "server-cuda13"],
      ["550.127.05", "12.4", "server-cuda"],
    ];
    for (const [driver, cuda, variant] of cases) {
      onHost(
        `mkdir -p ${q(fakeBin)} && cat > ${q(`${fakeBin}/nvidia-smi`)} && chmod +x ${q(`${fakeBin}/nvidia-smi`)}`,
        fake(driver, cuda),
      );
      const r = script(
        "probe-host.sh",
        ["--min-gpus", "2", "--min-gpu-vram-bytes", String(200 * 2 ** 30)],
        `PATH=${q(fakeBin)}:"$PATH"`,
      );
      const kv = keyValues(r.stdout);
      expect(kv).toMatchObject({
        gpu_count: "2",
        gpu_names: "NVIDIA H200,NVIDIA H200",
        gpu_vram_bytes: `${143771 * 2 ** 20},${143771 * 2 ** 20}`,
        nvidia_driver: driver,
        cuda_major_supported: cuda.split(".")[0],
        llama_image_variant: variant,
      });
      // Two GPUs satisfy --min-gpus 2; 140 GiB each does not satisfy 200 GiB per GPU.
      expect(r.status).toBe(3);
      expect(r.stderr).not.toContain("probe: gpus:");
      expect(r.stderr).toContain(`probe: gpu_vram: host has 140.4 GiB (${143771 * 2 ** 20} bytes) on its smallest GPU`);
      expect(r.stderr).toContain(`the stack says at least 200.0 GiB (${200 * 2 ** 30} bytes) per GPU`);
    }
  });

  it("rejects a non-numeric requirement with exit 2", () => {
    const r = script("probe-host.sh", ["--min-ram-bytes", "lots"]);
    expect(r.status).toBe(2);
    expect(r.stderr).toContain("--min-ram-bytes wants a non-negative integer, got 'lots'");
  });
});

describe("tune-host.sh on a fake root", () => {
  const makeRoot = (balancing: string) => {
    const root = onHost("mktemp -d -t kimi-kit-root-XXXXXX").stdout.trim();
    onHost(
      `mkdir -p ${q(`${root}/proc/sys/kernel`)} ${q(`${root}/proc/sys/vm`)} && echo ${balancing} > ${q(`${root}/proc/sys/kernel/numa_balancing`)} && echo 0 > ${q(`${root}/proc/sys/vm/drop_caches`)}`,
    );
    return root;
  };
  const read = (path: string) => onHost(`cat ${q(path)}`).stdout;

  it("sets numa_balancing=0 now and persistently, then says unchanged", () => {
    const root = makeRoot("1");
    try {
      const first = script("tune-host.sh", ["--numa-nodes", "2", "--drop-caches", "--root", root]);
      expect(first.stderr).toBe("");
      expect(first.status).toBe(0);
      expect(first.stdout).toContain("kernel.numa_balancing: was 1, now 0");
      expect(first.stdout).toMatch(/tune_result changed=2 unchanged=0/);
      expect(read(`${root}/proc/sys/kernel/numa_balancing`).trim()).toBe("0");
      expect(read(`${root}/etc/sysctl.d/90-kimi-kit.conf`)).toMatch(/^kernel\.numa_balancing = 0$/m);
      expect(read(`${root}/proc/sys/vm/drop_caches`).trim()).toBe("3");
      expect(onHost(`stat -c %a ${q(`${root}/etc/sysctl.d/90-kimi-kit.conf`)}`).stdout.trim()).toBe("644");

      const before = onHost(`stat -c %Y.%i ${q(`${root}/etc/sysctl.d/90-kimi-kit.conf`)}`).stdout;
      const second = script("tune-host.sh", ["--numa-nodes", "2", "--root", root]);
      expect(second.status).toBe(0);
      expect(second.stdout).toContain("kernel.numa_balancing: already 0");
      expect(second.stdout).toContain("already says kernel.numa_balancing = 0; unchanged");
      expect(second.stdout).toMatch(/tune_result changed=0 unchanged=2/);
      expect(onHost(`stat -c %Y.%i ${q(`${root}/etc/sysctl.d/90-kimi-kit.conf`)}`).stdout).toBe(before);
    } finally {
      onHost(`rm -rf ${q(root)}`);
    }
  });

  it("--dry-run says what it would change and changes nothing", () => {
    const root = makeRoot("1");
    try {
      const r = script("tune-host.sh", ["--numa-nodes", "4", "--drop-caches", "--root", root, "--dry-run"]);
      expect(r.status).toBe(0);
      expect(r.stdout).toContain("is 1, want 0; would change");
      expect(r.stdout).toContain("would write kernel.numa_balancing = 0");
      expect(r.stdout).toContain("would sync and write 3");
      expect(read(`${root}/proc/sys/kernel/numa_balancing`).trim()).toBe("1");
      expect(read(`${root}/proc/sys/vm/drop_caches`).trim()).toBe("0");
      expect(onHost(`test -e ${q(`${root}/etc`)} && echo yes || echo no`).stdout.trim()).toBe("no");
    } finally {
      onHost(`rm -rf ${q(root)}`);
    }
  });

  it("leaves a single-NUMA-node host alone", () => {
    const root = makeRoot("1");
    try {
      const r = script("tune-host.sh", ["--numa-nodes", "1", "--root", root]);
      expect(r.status).toBe(0);
      expect(r.stdout).toContain("1 NUMA node(s)");
      expect(read(`${root}/proc/sys/kernel/numa_balancing`).trim()).toBe("1");
      expect(onHost(`test -e ${q(`${root}/etc`)} && echo yes || echo no`).stdout.trim()).toBe("no");
    } finally {
      onHost(`rm -rf ${q(root)}`);
    }
  });
});

describe("install-docker.sh with the engine running", () => {
  const server = () => execFileSync("docker", ["info", "--format", "{{.ServerVersion}}"]).toString().trim();

  it("--check exits 0 and names the server version", () => {
    const r = script("install-docker.sh", ["--check"]);
    expect(r.status).toBe(0);
    expect(r.stdout).toContain(`docker engine already running (server version ${server()})`);
    expect(keyValues(r.stdout)).toMatchObject({ docker_server: server(), action: "unchanged" });
  });

  it("without --check changes nothing", () => {
    const r = script("install-docker.sh");
    expect(r.status).toBe(0);
    expect(keyValues(r.stdout).action).toBe("unchanged");
  });

  it("--check exits 1 when the engine does not answer", () => {
    const r = script("install-docker.sh", ["--check"], `DOCKER_HOST=${q(`unix://${localTmp}/no-such.sock`)}`);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain("the engine does not answer");
    expect(keyValues(r.stdout).docker_server).toBe("none");
  });
});

describe("install-nvidia-container-toolkit.sh without a GPU", () => {
  const hasNvidiaSmi = spawnSync("bash", ["-c", "command -v nvidia-smi"]).status === 0;

  it.skipIf(hasNvidiaSmi).each([[[]], [["--check"]]])("%j says there is nothing to do", (args: string[]) => {
    const r = script("install-nvidia-container-toolkit.sh", args);
    expect(r.status).toBe(0);
    expect(r.stdout).toContain("no NVIDIA GPU/driver found; nothing to do");
    expect(keyValues(r.stdout)).toMatchObject({ nvidia_gpu: "no", action: "none" });
    expect(existsSync("/etc/apt/sources.list.d/nvidia-container-toolkit.list")).toBe(false);
  });
});
