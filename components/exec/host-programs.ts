/**
 * The kit's own programs that run on a production host (tools/usage-exporter.ts: the per-team token
 * counter in front of each replica; tools/token-limiter.ts: the gateway's tokens-per-minute loop),
 * each as one plain JavaScript file, since a host has no TypeScript tooling: only Debian packages
 * (bookworm's nodejs is 18). Each tool imports nothing but node: built-ins, so transpiling it alone
 * (typescript's transpileModule: CommonJS, ES2022, which Node 18 runs) gives a self-contained file;
 * ansible-free-scripts/usage-exporter.sh and token-limiter.sh install and run it (`apply --from FILE.js`).
 */
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { builtinModules } from "node:module";
import { join } from "node:path";
import ts from "typescript";

export type HostProgram = "usage-exporter" | "token-limiter";

/** The TypeScript source a program's JavaScript is made from. */
export function hostProgramSource(program: HostProgram): string {
  return join(__dirname, "..", "..", "tools", `${program}.ts`);
}

const cache = new Map<HostProgram, { source: string; javascript: string }>();

/** tools/<program>.ts transpiled to one CommonJS file that Node 18 runs on its own. */
export function hostProgramJavaScript(program: HostProgram): string {
  const path = hostProgramSource(program);
  const source = readFileSync(path, "utf8");
  const cached = cache.get(program);
  if (cached?.source === source) return cached.javascript;
  const output = ts.transpileModule(source, {
    fileName: `${program}.ts`,
    reportDiagnostics: true,
    compilerOptions: {
      module: ts.ModuleKind.CommonJS,
      target: ts.ScriptTarget.ES2022,
      esModuleInterop: true,
      removeComments: false,
      sourceMap: false,
      inlineSourceMap: false,
    },
  });
  const errors = (output.diagnostics ?? []).filter((d) => d.category === ts.DiagnosticCategory.Error);
  if (errors.length > 0) {
    throw new Error(
      `transpiling ${path} failed: ${errors.map((d) => ts.flattenDiagnosticMessageText(d.messageText, "\n")).join("; ")}`,
    );
  }
  // Self-contained means every require() is a Node built-in: a package import would fail on the host.
  const builtins = new Set(builtinModules);
  for (const [, specifier] of output.outputText.matchAll(/\brequire\(\s*["']([^"']+)["']\s*\)/g)) {
    const bare = specifier!.replace(/^node:/, "");
    if (!specifier!.startsWith("node:") && !builtins.has(bare)) {
      throw new Error(`${path} requires '${specifier}', which is not a Node built-in: the host has no node_modules`);
    }
  }
  const javascript = `// Generated from tools/${program}.ts by components/exec/host-programs.ts (do not edit).\n${output.outputText}`;
  cache.set(program, { source, javascript });
  return javascript;
}

/** sha256 (hex) of hostProgramJavaScript(program): changes when the installed file would. */
export function hostProgramJavaScriptSha256(program: HostProgram): string {
  return createHash("sha256").update(hostProgramJavaScript(program)).digest("hex");
}
