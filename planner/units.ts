/** Sizes are bytes everywhere inside the kit; these helpers only print them, always labelled. */

export const GiB = 1024 ** 3;
export const MiB = 1024 ** 2;
export const GB = 1e9;

export function formatGiB(bytes: number, digits = 1): string {
  return `${(bytes / GiB).toFixed(digits)} GiB`;
}

export function formatGB(bytes: number, digits = 1): string {
  return `${(bytes / GB).toFixed(digits)} GB`;
}

export function formatMiB(bytes: number, digits = 2): string {
  return `${(bytes / MiB).toFixed(digits)} MiB`;
}

/** "346.3 GB (322.5 GiB)" — both units, so no reader has to guess which one a vendor meant. */
export function formatBytes(bytes: number): string {
  return `${formatGB(bytes)} (${formatGiB(bytes)})`;
}

export function formatTokens(tokens: number): string {
  if (tokens >= 1e9) return `${(tokens / 1e9).toFixed(2)}B`;
  if (tokens >= 1e6) return `${(tokens / 1e6).toFixed(1)}M`;
  if (tokens >= 1e3) return `${(tokens / 1e3).toFixed(1)}K`;
  return tokens.toFixed(0);
}

export function formatUsd(usd: number): string {
  return `$${usd.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 })}`;
}

export function formatDuration(seconds: number): string {
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  if (seconds < 3600) return `${(seconds / 60).toFixed(1)} min`;
  return `${(seconds / 3600).toFixed(2)} h`;
}

const UNIT_BYTES: Record<string, number> = {
  b: 1,
  kb: 1e3,
  mb: 1e6,
  gb: 1e9,
  tb: 1e12,
  kib: 1024,
  mib: 1024 ** 2,
  gib: 1024 ** 3,
  tib: 1024 ** 4,
};

/**
 * Parses a size: "384GiB", "2 TB", "512MiB" or (unless `requireUnit`) a plain integer of bytes.
 * Stack files require the unit (a bare number is ambiguous); the catalog may state plain bytes.
 * Returns undefined when the text is not a size, so the schema can say what is allowed.
 */
export function parseSize(value: string | number, options: { requireUnit?: boolean } = {}): number | undefined {
  if (typeof value === "number")
    return !options.requireUnit && Number.isSafeInteger(value) && value >= 0 ? value : undefined;
  const match = /^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b|b)?\s*$/i.exec(value);
  if (!match) return undefined;
  if (options.requireUnit && match[2] === undefined) return undefined;
  const amount = Number(match[1]);
  const unit = (match[2] ?? "b").toLowerCase();
  const factor = UNIT_BYTES[unit];
  if (factor === undefined) return undefined;
  const bytes = Math.round(amount * factor);
  return Number.isSafeInteger(bytes) ? bytes : undefined;
}
