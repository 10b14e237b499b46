import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    pool: "forks",
    // Script and end-to-end tests start real daemons (sshd, dockerd, llama-server); they set
    // their own longer timeouts per test. Unit tests stay in milliseconds.
    testTimeout: 30_000,
    hookTimeout: 600_000,
  },
});
