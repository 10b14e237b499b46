/** IPv4 addresses and CIDR blocks, as much as the policies need (the kit's listeners are IPv4 only). */

/** The address as a 32-bit number, or undefined when it is not a dotted IPv4 address. */
export function ipv4(address: string): number | undefined {
  const match = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(address);
  if (!match) return undefined;
  const octets = match.slice(1, 5).map(Number);
  if (octets.some((octet) => octet > 255)) return undefined;
  return octets.reduce((sum, octet) => sum * 256 + octet, 0);
}

/** A CIDR block as its network number and prefix length, or undefined when malformed. */
export function cidr(block: string): { network: number; prefix: number } | undefined {
  const [address, bits, extra] = block.split("/");
  if (address === undefined || bits === undefined || extra !== undefined || !/^\d{1,2}$/.test(bits)) return undefined;
  const base = ipv4(address);
  const prefix = Number(bits);
  if (base === undefined || prefix > 32) return undefined;
  const size = 2 ** (32 - prefix);
  return { network: base - (base % size), prefix };
}

export function inCidr(address: string, block: string): boolean {
  const number = ipv4(address);
  const range = cidr(block);
  if (number === undefined || range === undefined) return false;
  const size = 2 ** (32 - range.prefix);
  return number - (number % size) === range.network;
}

/** 127.0.0.0/8: reachable from the host itself only. */
export function isLoopback(address: string): boolean {
  return inCidr(address, "127.0.0.0/8");
}

/** A block that admits every address (0.0.0.0/0, or any /0). */
export function isWholeInternet(block: string): boolean {
  return cidr(block)?.prefix === 0;
}

/** RFC 1918's private ranges: the default for where RPC workers may listen. */
export const RFC1918 = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"] as const;
