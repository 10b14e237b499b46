/**
 * Replacement order, replayed on the real loopback host: @pulumi/command creates the new step
 * first and only then runs the old step's delete. Each step here re-creates the same thing (a file
 * standing for the container or the shards); the old delete must leave the new step's thing alone,
 * while a plain destroy (the current step's delete) still removes it.
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";
import { ownedStepCommands } from "../../components/exec/remote-exec";
import { shellQuote } from "../../planner/shell";
import { startLoopbackSshd, type LoopbackSshd } from "../support/sshd";

let sshd: LoopbackSshd;
let work: string;

beforeAll(async () => {
  sshd = await startLoopbackSshd();
  work = mkdtempSync(join(tmpdir(), "kimi-kit-owned-"));
}, 60_000);

afterAll(async () => {
  await sshd?.stop();
  if (work) rmSync(work, { recursive: true, force: true });
});

function onHost(script: string): { status: number | null; stdout: string } {
  const run = spawnSync("ssh", [...sshd.sshArgs(), script], { encoding: "utf8" });
  return { status: run.status, stdout: run.stdout };
}

/** A step named `name` that makes `thing` and removes it on delete; `generation` stands for its triggers. */
function step(name: string, thing: string, generation: string) {
  return ownedStepCommands(name, shellQuote(["touch", "--", thing]), shellQuote(["rm", "-f", "--", thing]), [
    generation,
  ]);
}

it("replace: create(new), then delete(old) keeps what the new step made; destroy removes it", () => {
  const name = `test-owned-${process.pid}-a`;
  const thing = join(work, "container-a");
  const old = step(name, thing, "spec-1");
  const next = step(name, thing, "spec-2");
  expect(onHost(old.create).status).toBe(0);
  expect(onHost(next.create).status).toBe(0);
  const oldDelete = onHost(old.delete);
  expect(oldDelete.status).toBe(0);
  expect(oldDelete.stdout).toMatch(/created again by a newer step/);
  expect(existsSync(thing)).toBe(true);
  expect(onHost(next.delete).status).toBe(0);
  expect(existsSync(thing)).toBe(false);
});

it("a step whose create never recorded an owner (older kit, failed create) still deletes", () => {
  const name = `test-owned-${process.pid}-b`;
  const thing = join(work, "shards-b");
  onHost(shellQuote(["touch", "--", thing]));
  expect(onHost(step(name, thing, "lock-1").delete).status).toBe(0);
  expect(existsSync(thing)).toBe(false);
});

it("a failing create records no owner and fails the step", () => {
  const name = `test-owned-${process.pid}-c`;
  const failing = ownedStepCommands(name, "exit 7", "true", ["x"]);
  expect(onHost(failing.create).status).toBe(7);
  expect(onHost(`test -e /var/lib/kimi-kit/owners/${name}`).status).not.toBe(0);
});
