/**
 * The `local` stack: this machine plays the customer's bare-metal host (a real sshd on 127.0.0.1)
 * and a loopback HTTP server plays Hugging Face with generated deepseek2 shards. `localStackValues`
 * writes the stack's `kimi-kit:*` values; `localHost` brings up everything the stack stands on.
 */
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { buildLock } from "../../hub/lock-builder";
import { thisMachine } from "../../lab/this-machine";
import { ensureDockerd, type Dockerd } from "./dockerd";
import { startHfServer, type HfServer } from "./hf-server";
import { buildLlamaServerImage, type LlamaServerImage } from "./llama-image";
import { generateDeepseek2Model, splitGguf } from "../../lab/models";
import { freePort } from "../../lab/net";
import { measureReadBandwidthGBps } from "../../tools/bandwidth";
import { startLoopbackSshd, type LoopbackSshd } from "./sshd";

export const LOCAL_REPO = "kimi-kit-test/deepseek2-moe-GGUF";
export const LOCAL_TIER = "F32";
export const HF_TOKEN = "hf_local_test_token";

export interface LocalHost {
  dir: string;
  sshd: LoopbackSshd;
  dockerd: Dockerd;
  image: LlamaServerImage;
  hf: HfServer;
  lockFile: string;
  modelDir: string;
  shards: string[];
  servingPort: number;
  stop(): Promise<void>;
}

export async function startLocalHost(): Promise<LocalHost> {
  const dir = mkdtempSync(join(tmpdir(), "kimi-kit-local-"));
  const repoRoot = join(dir, "hub");
  const model = generateDeepseek2Model(join(dir, "src"));
  const shards = splitGguf(model, join(repoRoot, LOCAL_TIER, `deepseek2-moe-${LOCAL_TIER}`), 16);
  const sshd = await startLoopbackSshd();
  const dockerd = await ensureDockerd();
  const image = buildLlamaServerImage();
  const hf = await startHfServer({ root: repoRoot, repo: LOCAL_REPO, token: HF_TOKEN });
  const lock = await buildLock({
    repo: LOCAL_REPO,
    tier: LOCAL_TIER,
    baseUrl: hf.baseUrl,
    revision: "main",
    token: HF_TOKEN,
  });
  const lockFile = join(dir, "local.lock.json");
  writeFileSync(lockFile, JSON.stringify(lock));
  const modelDir = join(dir, "host-models");
  mkdirSync(modelDir, { recursive: true });
  return {
    dir,
    sshd,
    dockerd,
    image,
    hf,
    lockFile,
    modelDir,
    shards,
    servingPort: await freePort(),
    async stop() {
      await hf.stop();
      await sshd.stop();
      await dockerd.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** The `local` stack's `kimi-kit:*` values for a running LocalHost (what stacks/Pulumi.local.yaml holds). */
export function localStackValues(host: LocalHost, overrides: { contextLength?: number } = {}): Record<string, unknown> {
  const machine = thisMachine();
  return {
    host: {
      kind: "bare-metal",
      name: "loopback host (this machine)",
      ssh: { host: "127.0.0.1", port: host.sshd.port, user: host.sshd.user, hostPublicKey: host.sshd.hostPublicKey },
      cpu: {
        cores: machine.cores,
        allCoreGHz: Number(machine.ghz.toFixed(2)),
        fp32FlopsPerCycle: 32,
        avx512: machine.avx512,
      },
      memory: { total: `${machine.ramBytes}B`, measuredBandwidthGBps: measureReadBandwidthGBps(machine.cores) },
    },
    model: { repo: LOCAL_REPO, tier: LOCAL_TIER },
    serving: {
      contextLength: overrides.contextLength ?? 256,
      parallelSlots: 1,
      kvCacheType: "f16",
      port: host.servingPort,
      bindAddress: "127.0.0.1",
    },
    costs: {
      hardware: { priceUsd: 0, amortizationMonths: 1, powerWatts: 0, usdPerKwh: 0 },
      api: { usdPerMillionInput: 0.95, usdPerMillionOutput: 4.0 },
      usage: { tokensPerMonth: 1000000, mix: { input: 3, output: 1 } },
    },
    deployment: {
      image: host.image.name,
      modelDir: host.modelDir,
      containerEngine: "docker-cli",
      huggingFaceBaseUrl: host.hf.baseUrl,
      lockFile: host.lockFile,
      containerName: `kimi-kit-local-${host.servingPort}`,
      healthCommand: host.image.hasShell
        ? `wget -q -O /dev/null http://127.0.0.1:${host.servingPort}/health`
        : undefined,
    },
  };
}

/** curl on this machine, returning status and body. */
export function http(
  url: string,
  options: { method?: string; key?: string; body?: unknown } = {},
): { status: number; body: string } {
  const args = ["-s", "-o", "-", "-w", "\n%{http_code}", "-X", options.method ?? "GET", url];
  if (options.key) args.push("-H", `Authorization: Bearer ${options.key}`);
  if (options.body !== undefined)
    args.push("-H", "Content-Type: application/json", "--data-binary", JSON.stringify(options.body));
  const out = execFileSync("curl", args, { maxBuffer: 16 * 1024 * 1024 }).toString();
  const cut = out.lastIndexOf("\n");
  return { status: Number(out.slice(cut + 1)), body: out.slice(0, cut) };
}
