/**
 * What llama.cpp's RPC backend costs on the wire (ggml/src/ggml-rpc/ggml-rpc.cpp, protocol 7), for
 * estimate() and project(): the devices a head's --rpc list adds, and the bytes and round trips a
 * token or a ubatch spends crossing the link.
 *
 * Per graph split on an RPC device the head queues SET_TENSOR for the split's inputs and
 * GRAPH_RECOMPUTE (both without a reply), then GET_TENSOR for its output, which waits for the
 * worker to finish: one round trip per visit. Each of those commands also costs host time on the
 * critical path: the head's thread hands it to the endpoint's dispatcher thread and, for a
 * SET_TENSOR, waits until it is written (rpc_dispatcher::send), three send() calls over TCP, and
 * the worker wakes to read it (visitCommands, catalog/efficiency.yaml rpc.tcpSecondsPerCommand).
 * Activations never use the hash cache, and a copy from one worker to the next is staged in the
 * head's RAM (GET from one, SET to the other), so every boundary crosses the head's link. Weights
 * cross once, at load.
 */
import type { Architecture } from "./catalog";
import type { HostSpec } from "./host";
import type { DeviceName } from "./memory";

export type RpcDeviceName = `RPC${number}[${string}]`;

/** The private link of a split, as the projection charges it. */
export interface LinkSpec {
  bytesPerSecond: number;
  roundTripSeconds: number;
  transport: "tcp" | "rdma";
  basis: string;
}

/** One ggml-rpc-server the head lists in --rpc: a CPU-only worker host serving one device. */
export interface RpcWorkerSpec {
  /** host:port exactly as in --rpc. */
  endpoint: string;
  host: HostSpec;
  /** ggml-rpc-server -t: the threads of its CPU device. */
  threads: number;
}

/**
 * The name llama.cpp gives a worker's device in its buffer lines: RPC<n>[host:port], where n is the
 * device's index on that server, not in --rpc (ggml-rpc.cpp), so a CPU ggml-rpc-server's one device
 * is always RPC0[10.0.0.2:50052]; the endpoint tells workers apart.
 */
export function rpcDeviceName(endpoint: string): RpcDeviceName {
  return `RPC0[${endpoint}]`;
}

/** The endpoint inside an RPC device name. */
export function endpointOf(device: RpcDeviceName): string {
  return device.slice(device.indexOf("[") + 1, -1);
}

export function isRpcDevice(device: DeviceName): device is RpcDeviceName {
  return device.startsWith("RPC");
}

/** -ot's buffer name for an RPC device: RPC[host:port] (common/arg.cpp lists each device's default buffer type). */
export function rpcBufferName(endpoint: string): string {
  return `RPC[${endpoint}]`;
}

const F32_BYTES = 4;
/**
 * The attention mask a split receives: F16 under flash attention (llama-graph.cpp), one entry per visible cell per
 * token.
 */
const MASK_BYTES_PER_CELL = 2;

/**
 * Bytes one visit to an RPC device moves for `tokens` tokens of a ubatch: the residual stream in,
 * the mask over the visible cells in, and out either the residual stream for the next device or,
 * on the device holding the output layer, the logits of the tokens that need them.
 */
export function visitBytes(
  arch: Architecture,
  tokens: number,
  visibleCells: number,
  holdsOutput: boolean,
  outputTokens: number,
): number {
  const activationIn = tokens * arch.hiddenSize * F32_BYTES;
  const maskIn = tokens * visibleCells * MASK_BYTES_PER_CELL;
  const out = holdsOutput ? outputTokens * arch.vocabSize * F32_BYTES : tokens * arch.hiddenSize * F32_BYTES;
  return activationIn + maskIn + out;
}

/**
 * Commands one visit sends, one after another: a SET_TENSOR for each input of the device's graph
 * split — the residual stream, the positions, the KV slot indices (K only under MLA, K and V under
 * GQA), the attention mask, and on the device holding the output layer the output ids — then
 * GRAPH_RECOMPUTE, then the GET_TENSOR whose reply ends the visit. Counted on ggml-rpc-server's own
 * log (GGML_RPC_DEBUG=1, npm run bench:rpc): 6 a token to a middle deepseek2 worker, 7 to the last.
 */
export function visitCommands(arch: Architecture, holdsOutput: boolean): number {
  const kvIndices = arch.attention?.kind === "gqa" ? 2 : 1;
  const inputs = 1 + 1 + kvIndices + 1 + (holdsOutput ? 1 : 0);
  return inputs + 2;
}

/** Seconds one visit spends on the link: one round trip, its bytes at the link's rate, and each command's host time. */
export function visitSeconds(link: LinkSpec, bytes: number, commands: number, secondsPerCommand: number): number {
  return link.roundTripSeconds + bytes / link.bytesPerSecond + commands * secondsPerCommand;
}

/** The link a stack states, in the units the projection uses. */
export function linkSpec(gbitPerSecond: number, roundTripMicroseconds: number, transport: "tcp" | "rdma"): LinkSpec {
  return {
    bytesPerSecond: (gbitPerSecond * 1e9) / 8,
    roundTripSeconds: roundTripMicroseconds / 1e6,
    transport,
    basis: `${gbitPerSecond} Gbit/s ${transport.toUpperCase()}, ${roundTripMicroseconds} µs round trip`,
  };
}
