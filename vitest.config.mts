import { defineConfig } from "vitest/config";

/**
 * Three tiers, each its own project and npm script (`npm test` runs all three):
 * - unit: the planner, the CLI and the components under Pulumi mocks; no root, no daemons, seconds.
 * - system: real sshd, dockerd, llama-server, HAProxy, Prometheus and network namespaces
 *   (test/scripts, test/e2e); they need root, so without it the tier runs one skipped test that says why.
 * - engine: the real Pulumi CLI and language host (test/engine).
 */
const isRoot = process.getuid?.() === 0;
const SYSTEM = ["test/scripts/**/*.test.ts", "test/e2e/**/*.test.ts"];
if (!isRoot) {
  process.stderr.write(
    "vitest: the system tier (test/scripts, test/e2e) is skipped: it starts sshd, dockerd and network namespaces, which need root; run it as root (CI does)\n",
  );
}

export default defineConfig({
  test: {
    pool: "forks",
    // Script and end-to-end tests start real daemons (sshd, dockerd, llama-server); they set
    // their own longer timeouts per test. Unit tests stay in milliseconds.
    testTimeout: 30_000,
    hookTimeout: 600_000,
    projects: [
      { extends: true, test: { name: "unit", include: ["test/unit/**/*.test.ts", "test/components/**/*.test.ts"] } },
      { extends: true, test: { name: "system", include: isRoot ? SYSTEM : ["test/system-needs-root.test.ts"] } },
      { extends: true, test: { name: "engine", include: ["test/engine/**/*.test.ts"] } },
    ],
  },
});
