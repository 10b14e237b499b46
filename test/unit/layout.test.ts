/**
 * The layout's one-way rules, read from the files themselves: product code, benches and the shared
 * lab tooling never import a test module (tests may import them, not the reverse); components read
 * facts from the Plan only, so none of them loads the catalog.
 */
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { dirname, join, normalize, relative } from "node:path";
import { describe, expect, it } from "vitest";

const repoRoot = join(__dirname, "..", "..");
const IMPORT = /(?:from|import)\s*\(?\s*["'](\.{1,2}\/[^"']+)["']/g;

/** Relative import targets of a TypeScript file, as repo-relative paths. */
function relativeImports(file: string, text: string): string[] {
  return [...text.matchAll(IMPORT)].map((match) => normalize(join(dirname(file), match[1]!)));
}

describe("layout", () => {
  it("no file outside test/ imports from test/", () => {
    const files = execFileSync("git", ["ls-files", "*.ts", "*.mts"], { cwd: repoRoot, encoding: "utf8" })
      .split("\n")
      .filter((file) => file.length > 0 && !file.startsWith("test/"));
    expect(files.length).toBeGreaterThan(50);
    const offenders = files.flatMap((file) =>
      relativeImports(file, readFileSync(join(repoRoot, file), "utf8"))
        .filter((target) => relative("test", target).split("/")[0] !== "..")
        .map((target) => `${file} imports ${target}`),
    );
    expect(offenders).toEqual([]);
  });

  it("no component loads the catalog: it reads facts from the Plan", () => {
    const files = execFileSync("git", ["ls-files", "components/*.ts", "index.ts"], { cwd: repoRoot, encoding: "utf8" })
      .split("\n")
      .filter((file) => file.length > 0);
    expect(files.length).toBeGreaterThan(10);
    const offenders = files.filter((file) => /\bloadCatalog\b/.test(readFileSync(join(repoRoot, file), "utf8")));
    expect(offenders).toEqual([]);
  });

  it("the rule sees a test import when there is one", () => {
    expect(relativeImports("bench/x.ts", 'import { a } from "../test/support/local-stack";')).toEqual([
      "test/support/local-stack",
    ]);
    expect(relativeImports("lab/x.ts", 'import { a } from "./net";')).toEqual(["lab/net"]);
  });
});
