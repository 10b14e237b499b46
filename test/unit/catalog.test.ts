import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { loadCatalog } from "../../planner/catalog";
import { tensorsFromArchitecture, totalBytes } from "../../planner/tensors";

const catalog = loadCatalog();
const kimi = catalog.models.find((model) => model.id === "kimi-k2.6")!;

describe("catalog", () => {
  it("has Kimi K2.6 with the four tiers, each within 3% of its published size", () => {
    const sizes = Object.fromEntries(
      kimi.tiers.map((tier) => [tier.name, totalBytes(tensorsFromArchitecture(kimi.architecture, tier))]),
    );
    expect(Object.keys(sizes)).toEqual(["UD-Q2_K_XL", "UD-Q4_K_XL", "UD-Q8_K_XL", "BF16"]);
    for (const tier of kimi.tiers) {
      expect(Math.abs(sizes[tier.name]! / tier.publishedSizeBytes - 1), tier.name).toBeLessThan(0.03);
    }
    expect(kimi.tiers.find((tier) => tier.name === "UD-Q2_K_XL")!.publishedSizeBytes).toBe(340e9);
  });

  it("derives ~1.03T parameters, ~32B active, from the architecture numbers", () => {
    const tensors = tensorsFromArchitecture(kimi.architecture, kimi.tiers[0]!);
    const params = tensors.reduce((sum, tensor) => sum + tensor.elements, 0);
    const arch = kimi.architecture;
    const active = tensors.reduce(
      (sum, tensor) =>
        sum +
        (tensor.cls === "routedExperts"
          ? (tensor.elements * arch.activeExperts) / arch.routedExperts
          : tensor.cls === "embedding"
            ? 0
            : tensor.elements),
      0,
    );
    expect(params / 1e12).toBeGreaterThan(1.0);
    expect(params / 1e12).toBeLessThan(1.05);
    expect(active / 1e9).toBeGreaterThan(30);
    expect(active / 1e9).toBeLessThan(34);
  });

  it("marks shard counts unverified until a lock confirms them", () => {
    for (const tier of kimi.tiers) expect(tier.shards.verified).toBe(false);
  });

  it("lists the GPUs and cloud instances the kit prices", () => {
    const gpuIds = catalog.gpus.map((gpu) => gpu.id);
    for (const id of [
      "rtx-3090",
      "rtx-4090",
      "rtx-5090",
      "a100-40gb",
      "a100-80gb",
      "h100-sxm",
      "h200",
      "l40s",
      "rtx-pro-6000",
    ])
      expect(gpuIds).toContain(id);
    expect(catalog.gpus.find((gpu) => gpu.id === "rtx-3090")!.memory).toBe(24576 * 1024 ** 2);
    const r7i = catalog.instances.find((instance) => instance.id === "r7i.12xlarge")!;
    expect(r7i.usdPerHour).toBe(3.1752);
    expect(r7i.memory).toBe(384 * 1024 ** 3);
    for (const id of ["x2idn.16xlarge", "g6e.12xlarge", "p4d.24xlarge", "p5.48xlarge"])
      expect(catalog.instances.map((i) => i.id)).toContain(id);
  });

  it("gives every efficiency factor a source", () => {
    const text = JSON.stringify(catalog.efficiency);
    const sources = [...text.matchAll(/"source":"([^"]*)"/g)].map((match) => match[1]!);
    expect(sources.length).toBeGreaterThanOrEqual(9);
    for (const source of sources) expect(source.length).toBeGreaterThan(20);
  });
});

describe("a broken catalog file", () => {
  it("is refused naming the file, the key, the value found and what is allowed", () => {
    const dir = mkdtempSync(join(tmpdir(), "catalog-"));
    try {
      cpSync(join(__dirname, "..", "..", "catalog"), dir, { recursive: true });
      const file = join(dir, "llama-cpp.yaml");
      writeFileSync(file, readFileSync(file, "utf8").replace("since: 2025-04-19", "since: April 2025"));
      expect(() => loadCatalog(dir)).toThrow(
        'catalog/llama-cpp.yaml: llamaCpp.mechanicsChanges[0].since: found "April 2025"; allowed: a date as YYYY-MM-DD',
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
