/** What the benches report about the machine they ran on. */
import { thisMachineHost } from "../cli/local-model";

/** Physical cores, clock, AVX-512 and RAM of this machine: the host `npm run plan -- --gguf` assumes. */
export function thisMachine(): { cores: number; ghz: number; avx512: boolean; ramBytes: number } {
  const host = thisMachineHost(0);
  return { cores: host.cpu.cores, ghz: host.cpu.allCoreGHz, avx512: host.cpu.avx512, ramBytes: host.memory.totalBytes };
}
