/**
 * Usage: npm run reliability [-- --check]
 *
 * Runs the tests named in test/reliability.yaml (vitest, JSON reporter), and when every one of them
 * passed, writes the README's reliability table (between the reliability markers) from that file.
 * --check only compares the README with the file, running nothing (test/unit/reliability.test.ts
 * does the same in CI). Exit 1 when a listed test is missing or failed, or the README is stale.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parse } from "yaml";
import { z } from "zod";

export const ROOT = resolve(__dirname, "..");
const START = "<!-- reliability:start (npm run reliability writes this table) -->";
const END = "<!-- reliability:end -->";

const rowSchema = z.strictObject({
  fault: z.string(),
  did: z.string(),
  lost: z.string(),
  file: z.string(),
  test: z.string(),
});
export type ReliabilityRow = z.infer<typeof rowSchema>;

export function readRows(): ReliabilityRow[] {
  return z.array(rowSchema).parse(parse(readFileSync(join(ROOT, "test", "reliability.yaml"), "utf8")));
}

const cell = (text: string) => text.replaceAll("|", "\\|");

export function renderTable(rows: readonly ReliabilityRow[]): string {
  const lines = ["| fault tried | what the kit did | nothing lost | proved by (passing) |", "|---|---|---|---|"];
  for (const row of rows)
    lines.push(`| ${cell(row.fault)} | ${cell(row.did)} | ${cell(row.lost)} | \`${row.file}\`: ${cell(row.test)} |`);
  return `${START}\n${lines.join("\n")}\n${END}`;
}

export function readmeTable(readme: string): string | undefined {
  const start = readme.indexOf(START);
  const end = readme.indexOf(END);
  return start >= 0 && end > start ? readme.slice(start, end + END.length) : undefined;
}

interface JsonReport {
  testResults: { name: string; assertionResults: { title: string; status: string }[] }[];
}

function main(): number {
  const rows = readRows();
  const readmePath = join(ROOT, "README.md");
  const readme = readFileSync(readmePath, "utf8");
  const current = readmeTable(readme);
  if (process.argv.includes("--check")) {
    if (current === renderTable(rows)) return 0;
    console.error("README.md's reliability table is stale: run `npm run reliability`");
    return 1;
  }
  const dir = mkdtempSync(join(tmpdir(), "kimi-kit-reliability-"));
  try {
    const out = join(dir, "results.json");
    const files = [...new Set(rows.map((row) => row.file))];
    spawnSync("npx", ["vitest", "run", ...files, "--reporter=json", `--outputFile=${out}`], {
      cwd: ROOT,
      stdio: ["ignore", "ignore", "inherit"],
    });
    const report = JSON.parse(readFileSync(out, "utf8")) as JsonReport;
    const failures = rows.filter((row) => {
      const file = report.testResults.find((result) => result.name.endsWith(row.file));
      return file?.assertionResults.find((result) => result.title === row.test)?.status !== "passed";
    });
    for (const row of failures) console.error(`not passing: ${row.file}: ${row.test}`);
    if (failures.length > 0) return 1;
    const table = renderTable(rows);
    writeFileSync(
      readmePath,
      current === undefined ? `${readme.trimEnd()}\n\n${table}\n` : readme.replace(current, table),
    );
    console.log(`README.md: reliability table written, ${rows.length} rows, every test passing`);
    return 0;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (require.main === module) process.exit(main());
