/**
 * The front door of a public llama-server, planned (pure): when serving.bindAddress is not
 * 127.0.0.1 the listener is public, so HAProxy terminates TLS on bindAddress:port
 * (ansible-free-scripts/front-door.sh), llama-server moves to 127.0.0.1:backendPort, and the host
 * firewall admits only serving.allowedCidrs to the port (ansible-free-scripts/firewall.sh, the
 * kit's own nftables table). A loopback listener has no front door: it is reached through an SSH
 * tunnel.
 */
import type { StackConfig } from "./config";

type Serving = StackConfig["serving"];

export interface FrontDoorPlan {
  /** front-door.sh --name: the folder /etc/kimi-kit/front-door/<name>, the systemd unit's name. */
  name: string;
  /** Where HAProxy listens (TLS): the stack's bindAddress and port. */
  listenAddress: string;
  port: number;
  /** Where llama-server listens behind it: loopback only. */
  backendAddress: "127.0.0.1";
  backendPort: number;
  allowedCidrs: string[];
  tlsSource: "internal-ca" | "secrets";
  webUi: boolean;
  /** firewall.sh --table: the kit's nftables table for this stack (inet family). */
  firewallTable: string;
}

export const LOOPBACK = "127.0.0.1";

export function isPublicListener(serving: Pick<Serving, "bindAddress">): boolean {
  return serving.bindAddress !== LOOPBACK;
}

/** serving.backendPort, else the port next to the public one. */
export function backendPortOf(serving: Pick<Serving, "port" | "backendPort">): number {
  return serving.backendPort ?? (serving.port < 65535 ? serving.port + 1 : serving.port - 1);
}

/**
 * Where llama-server itself listens (its --host and --port, the container's health URL, the smoke
 * step): the stack's bindAddress and port for a loopback listener, 127.0.0.1:backendPort behind
 * a front door.
 */
export function llamaServerListen(serving: Pick<Serving, "bindAddress" | "port" | "backendPort">): {
  address: string;
  port: number;
} {
  return isPublicListener(serving)
    ? { address: LOOPBACK, port: backendPortOf(serving) }
    : { address: serving.bindAddress, port: serving.port };
}

/** A stack name as front-door.sh and nftables accept it. */
function kitName(stack: string): string {
  return `kimi-kit-${stack}`.replace(/[^A-Za-z0-9_.-]/g, "-").slice(0, 63);
}

function tableName(stack: string): string {
  return `kimi_kit_${stack.toLowerCase().replace(/[^a-z0-9_]/g, "_")}`.slice(0, 48);
}

/** The front door of a stack, or undefined for a loopback listener. */
export function frontDoorPlan(stack: string, serving: Serving): FrontDoorPlan | undefined {
  if (!isPublicListener(serving)) return undefined;
  return {
    name: kitName(stack),
    listenAddress: serving.bindAddress,
    port: serving.port,
    backendAddress: LOOPBACK,
    backendPort: backendPortOf(serving),
    allowedCidrs: [...serving.allowedCidrs],
    tlsSource: serving.tls.source,
    webUi: serving.webUi,
    firewallTable: tableName(stack),
  };
}

/** argv after `front-door.sh`: `up` for this plan; `sans` are the names clients dial (the host's address). */
export function frontDoorUpArgv(door: FrontDoorPlan, sans: readonly string[]): string[] {
  const argv = ["up", "--name", door.name, "--listen", door.listenAddress, "--port", String(door.port)];
  argv.push(
    "--backend-address",
    door.backendAddress,
    "--backend-port",
    String(door.backendPort),
    "--tls",
    door.tlsSource,
  );
  // front-door.sh takes host names and IPv4 addresses; anything else (an IPv6 literal) is left out.
  for (const san of [...new Set(sans)].filter(
    (name) => /^[A-Za-z0-9][A-Za-z0-9.-]{0,252}$/.test(name) && name !== "0.0.0.0",
  ))
    argv.push("--san", san);
  if (door.webUi) argv.push("--web-ui");
  return argv;
}

export function frontDoorDownArgv(door: FrontDoorPlan): string[] {
  return ["down", "--name", door.name];
}

/** argv after `firewall.sh`: the kit's table admitting only allowedCidrs to the public port. */
export function firewallApplyArgv(door: FrontDoorPlan): string[] {
  return ["apply", "--table", door.firewallTable, "--allow", `${door.port}=${door.allowedCidrs.join(",")}`];
}

export function firewallRemoveArgv(door: FrontDoorPlan): string[] {
  return ["remove", "--table", door.firewallTable];
}

/** The endpoint clients use: https through the front door, http on loopback (through an SSH tunnel). */
export function endpointScheme(serving: Pick<Serving, "bindAddress">): "https" | "http" {
  return isPublicListener(serving) ? "https" : "http";
}
