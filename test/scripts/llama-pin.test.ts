/**
 * The llama.cpp pin, stated once and checked: catalog/llama-cpp.yaml names the release; the --help
 * fixture the flag table is tested against is that release's; the source the build script builds
 * (node-llama-cpp's llama.cpp.info.json, copied beside the build) is that tag; and the binary the tests
 * build prints the same flags and environment names as the fixture.
 */
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { loadCatalog } from "../../planner/catalog";
import { llamaBinDir, llamaTool } from "../../lab/llama-cpp";

const release = loadCatalog().llamaCpp.release;
const fixturePath = resolve(__dirname, "..", "fixtures", `llama-server-help-${release}.txt`);

/** Every flag name and env name a --help text lists ("-t,    --threads N … (env: LLAMA_ARG_THREADS)"). */
function helpSurface(help: string): { flags: string[]; envs: string[] } {
  const flags = new Set<string>();
  for (const line of help.split("\n")) {
    if (!line.startsWith("-") || line.startsWith("-----")) continue;
    const head = line.replace(/,\s+(?=-)/g, ", ").split(/\s{2,}/)[0]!;
    for (const part of head.split(", ")) flags.add(part.split(" ")[0]!);
  }
  const envs = new Set([...help.matchAll(/\(env: ([A-Z0-9_]+)\)/g)].map((match) => match[1]!));
  return { flags: [...flags].sort(), envs: [...envs].sort() };
}

describe(`the llama.cpp pin (${release})`, () => {
  it("has a --help fixture named for the catalog's release", () => {
    expect(existsSync(fixturePath), fixturePath).toBe(true);
  });

  it("builds the catalog's release: the source's own tag, as node-llama-cpp ships it", () => {
    const info = JSON.parse(readFileSync(join(llamaBinDir(), "..", "..", "llama.cpp.info.json"), "utf8")) as {
      tag: string;
    };
    expect(info.tag).toBe(release);
  });

  it("the built llama-server's --help lists exactly the fixture's flags and environment names", () => {
    const help = execFileSync(llamaTool("llama-server"), ["--help"], {
      stdio: ["ignore", "pipe", "pipe"],
      maxBuffer: 8 * 1024 * 1024,
    }).toString();
    const built = helpSurface(help);
    const fixture = helpSurface(readFileSync(fixturePath, "utf8"));
    expect(built.flags.length).toBeGreaterThan(100);
    expect(built.flags).toEqual(fixture.flags);
    expect(built.envs).toEqual(fixture.envs);
  });
});
