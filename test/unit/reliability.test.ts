/** The README's reliability table matches test/reliability.yaml, and every test it cites exists. */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { expect, it } from "vitest";
import { readmeTable, readRows, renderTable, ROOT } from "../../tools/reliability-table";

it("the README's reliability table is the one `npm run reliability` writes from test/reliability.yaml", () => {
  const readme = readFileSync(join(ROOT, "README.md"), "utf8");
  expect(readmeTable(readme), "stale: run `npm run reliability`").toBe(renderTable(readRows()));
});

it("every cited test exists in its file, by its exact title", () => {
  for (const row of readRows()) {
    const source = readFileSync(join(ROOT, row.file), "utf8");
    const quoted = [`"${row.test}"`, `'${row.test}'`, `\`${row.test}\``].some((literal) => source.includes(literal));
    expect(quoted, `${row.file}: no test titled ${JSON.stringify(row.test)}`).toBe(true);
  }
});
