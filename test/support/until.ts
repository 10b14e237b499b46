/**
 * Waiting for a condition instead of sleeping: polls `check` until it returns a value (anything but
 * undefined) and returns it, or fails after `timeoutMs` naming what it waited for, the last error or
 * "not yet", and whatever `context()` adds (a server's log tail).
 */
export async function until<T>(
  what: string,
  check: () => Promise<T | undefined> | T | undefined,
  options: { timeoutMs?: number; intervalMs?: number; context?: () => string } = {},
): Promise<T> {
  const deadline = Date.now() + (options.timeoutMs ?? 30_000);
  let last: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined) return value;
      last = "not yet";
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline)
      throw new Error(
        `timed out waiting for ${what} (last: ${String(last)})${options.context ? `\n${options.context()}` : ""}`,
      );
    await new Promise((resolve) => setTimeout(resolve, options.intervalMs ?? 200));
  }
}
