/**
 * What the system tier shows when it cannot run: vitest.config.mts selects this file instead of
 * test/scripts and test/e2e when the tests do not run as root, so the skip and its reason are in the
 * report rather than an empty run.
 */
import { describe, it } from "vitest";

describe("system tier (test/scripts, test/e2e)", () => {
  it.skip("skipped: it starts sshd, dockerd, llama-server and network namespaces, which need root — run it as root (CI does)", () => {});
});
