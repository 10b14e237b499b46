/**
 * The kit's one shell-quoting helper: every word that reaches a remote or local shell (script
 * paths, tier names, shard paths, model folders) goes through it, never through hand-written quotes.
 */

/** POSIX shell quoting: every word single-quoted unless it is plainly safe. */
export function shellQuote(words: readonly string[]): string {
  return words
    .map((word) => (/^[A-Za-z0-9_@%+=:,./-]+$/.test(word) ? word : `'${word.replaceAll("'", `'\\''`)}'`))
    .join(" ");
}
