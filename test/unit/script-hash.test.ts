/**
 * A remote step's trigger hashes what its script runs: a script that sources lib-common.sh re-runs
 * when the library changes, not only when its own text does.
 */
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { SCRIPTS_DIR, scriptSha256 } from "../../components/host/host-prep";

const plainSha256 = (script: string) =>
  createHash("sha256")
    .update(readFileSync(join(SCRIPTS_DIR, script)))
    .digest("hex");

describe("scriptSha256", () => {
  it("covers the shared library for every script that sources it", () => {
    for (const script of ["fetch-gguf.sh", "llama-container.sh", "install-docker.sh", "gateway.sh"]) {
      expect(readFileSync(join(SCRIPTS_DIR, script), "utf8")).toContain("lib-common.sh");
      expect(scriptSha256(script), script).not.toBe(plainSha256(script));
    }
  });

  it("is the file's own hash for the library itself", () => {
    expect(scriptSha256("lib-common.sh")).toBe(plainSha256("lib-common.sh"));
  });
});
