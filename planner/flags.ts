/**
 * llama-server's flags as data: ONE table of every flag llama-server v0.5.0 accepts (names, value
 * hint and environment twin exactly as its --help prints them; a unit test holds the table against
 * test/fixtures/llama-server-help-v0.5.0.txt), with a column saying which typed field a flag sets
 * when it changes memory or speed. A typed FlagSet is rendered to argv through it and parsed from
 * argv through it, so the kit's own command line and a user's command line are read the same way.
 * Why a table and not a parser per flag: an unknown flag, a flag this release removed and a flag
 * that does not matter for sizing must each be told apart by name, which needs every name.
 */
import { ConfigError } from "./errors";
import { KV_CACHE_TYPES, type KvCacheType } from "./ggml-types";

export type LoadMode = "auto" | "none" | "mmap" | "mlock" | "mmap+mlock" | "dio";
export type SplitMode = "none" | "layer" | "row" | "tensor";
export type NumaMode = "distribute" | "isolate" | "numactl";
export type FlashAttn = "on" | "off" | "auto";

/** An -ot rule: a regex searched in each tensor name (first match wins) and the buffer it forces. */
export interface OverrideRule {
  pattern: string;
  /** "CPU", "CUDA0", … or "RPC[host:port]", as llama.cpp names a device's default buffer. */
  device: string;
}

/** "pattern=DEVICE" as -ot writes a rule; the device never contains "=". */
export function overrideRuleOf(text: string): OverrideRule {
  const at = text.lastIndexOf("=");
  return { pattern: text.slice(0, at), device: text.slice(at + 1) };
}

/** Every flag that changes what llama-server allocates or how fast it runs; unset = llama-server's default. */
export interface SizingFlags {
  ctxSize?: number;
  /** -1 = auto: 4 slots sharing one unified KV cache (tools/server/server.cpp). */
  parallel?: number;
  batch?: number;
  ubatch?: number;
  /** -1 = llama-server's default, one per physical core. */
  threads?: number;
  threadsBatch?: number;
  gpuLayers?: number | "auto" | "all";
  splitMode?: SplitMode;
  tensorSplit?: number[];
  overrideTensor?: OverrideRule[];
  cpuMoe?: boolean;
  nCpuMoe?: number;
  cacheTypeK?: KvCacheType;
  cacheTypeV?: KvCacheType;
  flashAttn?: FlashAttn;
  repack?: boolean;
  loadMode?: LoadMode;
  /** MiB; -1 = no limit, 0 = off. */
  cacheRamMiB?: number;
  opOffload?: boolean;
  numa?: NumaMode;
  swaFull?: boolean;
  ctxCheckpoints?: number;
  kvUnified?: boolean;
  /** --rpc: ggml-rpc-server endpoints (host:port), each one device placed before the local GPUs. */
  rpc?: string[];
}
export type SizingKey = keyof SizingFlags;

/** A flag that does not change sizing, by its canonical (first long) name, with its values. */
export interface OtherFlag {
  flag: string;
  values: string[];
}

export interface FlagSet {
  sizing: SizingFlags;
  other: OtherFlag[];
}

export interface ParsedFlags extends FlagSet {
  /** Flags accepted but left out of the estimate, as the user wrote them. */
  ignoredForSizing: string[];
  /** Of those, the ones that do change memory or speed in llama-server but are not modelled (yet): a warning. */
  notModelled: string[];
}

/**
 * Flags (canonical names) that change what llama-server allocates or how fast it runs, but that
 * estimate() does not model: they are still accepted, and named in a warning instead of passing as
 * harmless. Each would need its own rule in planner/estimate.ts.
 */
export const NOT_MODELLED: ReadonlySet<string> = new Set([
  "--kv-offload", // -nkvo keeps the KV cache in RAM
  "--no-host", // lets CPU_REPACK apply beside a GPU
  "--device", // restricts the GPUs used
  "--n-cpu-ffn", // dense FFNs of the first N layers on the CPU
  "--main-gpu", // which GPU -sm none/row uses
  "--kv-unified-per-slot",
  "--lazy-mode", // >4 GiB tensors read on demand
  "--mmproj", // a vision projector's weights and buffers
  "--spec-draft-model", // a draft model's weights, KV and buffers
  "--spec-type",
  "--spec-draft-ngl",
  "--lora",
  "--lora-scaled",
  "--cont-batching",
  "--checkpoint-min-step",
]);

export interface FlagRow {
  /** Every spelling --help lists, in its order. */
  names: readonly string[];
  /** --help's value hint; null for a switch (including on/off pairs like --repack, --no-repack). */
  valueHint: string | null;
  /** How many argv words the value takes (only --control-vector-layer-range takes two). */
  valueWords: number;
  env: string | null;
  sizing: SizingKey | null;
}

function row(names: string, valueHint: string | null, env: string | null, sizing: SizingKey | null = null): FlagRow {
  return {
    names: names.split(" "),
    valueHint,
    valueWords: valueHint === null ? 0 : valueHint === "START END" ? 2 : 1,
    env,
    sizing,
  };
}

/** Generated from llama-server v0.5.0 --help (order kept); the last column added by hand. */
export const LLAMA_SERVER_FLAGS: readonly FlagRow[] = [
  row("-h --help --usage", null, null),
  row("--version", null, null),
  row("-cl --cache-list", null, null),
  row("--completion-bash", null, null),
  row("-t --threads", "N", "LLAMA_ARG_THREADS", "threads"),
  row("-tb --threads-batch", "N", null, "threadsBatch"),
  row("-C --cpu-mask", "M", null),
  row("-Cr --cpu-range", "lo-hi", null),
  row("--cpu-strict", "<0|1>", null),
  row("--prio", "N", null),
  row("--poll", "<0...100>", null),
  row("-Cb --cpu-mask-batch", "M", null),
  row("-Crb --cpu-range-batch", "lo-hi", null),
  row("--cpu-strict-batch", "<0|1>", null),
  row("--prio-batch", "N", null),
  row("--poll-batch", "<0|1>", null),
  row("-c --ctx-size", "N", "LLAMA_ARG_CTX_SIZE", "ctxSize"),
  row("-n --predict --n-predict", "N", "LLAMA_ARG_N_PREDICT"),
  row("-b --batch-size", "N", "LLAMA_ARG_BATCH", "batch"),
  row("-ub --ubatch-size", "N", "LLAMA_ARG_UBATCH", "ubatch"),
  row("--keep", "N", null),
  row("--swa-full", null, "LLAMA_ARG_SWA_FULL", "swaFull"),
  row("-fa --flash-attn", "[on|off|auto]", "LLAMA_ARG_FLASH_ATTN", "flashAttn"),
  row("--perf --no-perf", null, "LLAMA_ARG_PERF"),
  row("-e --escape --no-escape", null, null),
  row("--rope-scaling", "{none,linear,yarn}", "LLAMA_ARG_ROPE_SCALING_TYPE"),
  row("--rope-scale", "N", "LLAMA_ARG_ROPE_SCALE"),
  row("--rope-freq-base", "N", "LLAMA_ARG_ROPE_FREQ_BASE"),
  row("--rope-freq-scale", "N", "LLAMA_ARG_ROPE_FREQ_SCALE"),
  row("--yarn-orig-ctx", "N", "LLAMA_ARG_YARN_ORIG_CTX"),
  row("--yarn-ext-factor", "N", "LLAMA_ARG_YARN_EXT_FACTOR"),
  row("--yarn-attn-factor", "N", "LLAMA_ARG_YARN_ATTN_FACTOR"),
  row("--yarn-beta-slow", "N", "LLAMA_ARG_YARN_BETA_SLOW"),
  row("--yarn-beta-fast", "N", "LLAMA_ARG_YARN_BETA_FAST"),
  row("-kvo --kv-offload -nkvo --no-kv-offload", null, "LLAMA_ARG_KV_OFFLOAD"),
  row("--repack -nr --no-repack", null, "LLAMA_ARG_REPACK", "repack"),
  row("--no-host", null, "LLAMA_ARG_NO_HOST"),
  row("-ctk --cache-type-k", "TYPE", "LLAMA_ARG_CACHE_TYPE_K", "cacheTypeK"),
  row("-ctv --cache-type-v", "TYPE", "LLAMA_ARG_CACHE_TYPE_V", "cacheTypeV"),
  row("-dt --defrag-thold", "N", "LLAMA_ARG_DEFRAG_THOLD"),
  // Listed by a build with GGML_RPC=ON (the kit's): layers placed on other hosts' ggml-rpc-server devices.
  row("--rpc", "SERVERS", "LLAMA_ARG_RPC", "rpc"),
  row("-lm --load-mode", "MODE", "LLAMA_ARG_LOAD_MODE", "loadMode"),
  row("-lzm --lazy-mode", "MODE", "LLAMA_ARG_LAZY_MODE"),
  row("--numa", "TYPE", "LLAMA_ARG_NUMA", "numa"),
  row("-dev --device", "<dev1,dev2,..>", "LLAMA_ARG_DEVICE"),
  row("--list-devices", null, null),
  row(
    "-ot --override-tensor",
    "<tensor name pattern>=<buffer type>,...",
    "LLAMA_ARG_OVERRIDE_TENSOR",
    "overrideTensor",
  ),
  row("-cmoe --cpu-moe", null, "LLAMA_ARG_CPU_MOE", "cpuMoe"),
  row("-ncmoe --n-cpu-moe", "N", "LLAMA_ARG_N_CPU_MOE", "nCpuMoe"),
  row("-ncffn --n-cpu-ffn", "N", "LLAMA_ARG_N_CPU_FFN"),
  row("-ngl --gpu-layers --n-gpu-layers", "N", "LLAMA_ARG_N_GPU_LAYERS", "gpuLayers"),
  row("-sm --split-mode", "{none,layer,row,tensor}", "LLAMA_ARG_SPLIT_MODE", "splitMode"),
  row("-ts --tensor-split", "N0,N1,N2,...", "LLAMA_ARG_TENSOR_SPLIT", "tensorSplit"),
  row("-mg --main-gpu", "INDEX", "LLAMA_ARG_MAIN_GPU"),
  row("-fit --fit", "[on|off]", "LLAMA_ARG_FIT"),
  row("-fitt --fit-target", "MiB0,MiB1,MiB2,...", "LLAMA_ARG_FIT_TARGET"),
  row("-fitc --fit-ctx", "N", "LLAMA_ARG_FIT_CTX"),
  row("--check-tensors", null, null),
  row("--override-kv", "KEY=TYPE:VALUE,...", null),
  row("--op-offload --no-op-offload", null, null, "opOffload"),
  row("--lora", "FNAME", null),
  row("--lora-scaled", "FNAME:SCALE,...", null),
  row("--control-vector", "FNAME", null),
  row("--control-vector-scaled", "FNAME:SCALE,...", null),
  row("--control-vector-layer-range", "START END", null),
  row("-m --model", "FNAME", "LLAMA_ARG_MODEL"),
  row("-mu --model-url", "MODEL_URL", "LLAMA_ARG_MODEL_URL"),
  row("-dr --docker-repo", "[<repo>/]<model>[:quant]", "LLAMA_ARG_DOCKER_REPO"),
  row("-hf -hfr --hf-repo", "<user>/<model>[:quant]", "LLAMA_ARG_HF_REPO"),
  row("-hff --hf-file", "FILE", "LLAMA_ARG_HF_FILE"),
  row("-hft --hf-token", "TOKEN", "HF_TOKEN"),
  row("--log-disable", null, null),
  row("--log-file", "FNAME", "LLAMA_ARG_LOG_FILE"),
  row("--log-jsonl --no-log-jsonl", null, "LLAMA_ARG_LOG_JSONL"),
  row("--log-colors", "[on|off|auto]", "LLAMA_ARG_LOG_COLORS"),
  row("-v --verbose --log-verbose", null, null),
  row("--offline", null, "LLAMA_ARG_OFFLINE"),
  row("-lv --verbosity --log-verbosity", "N", "LLAMA_ARG_LOG_VERBOSITY"),
  row("--log-prefix --no-log-prefix", null, "LLAMA_ARG_LOG_PREFIX"),
  row("--log-timestamps --no-log-timestamps", null, "LLAMA_ARG_LOG_TIMESTAMPS"),
  row("--spec-draft-type-k -ctkd --cache-type-k-draft", "TYPE", "LLAMA_ARG_SPEC_DRAFT_CACHE_TYPE_K"),
  row("--spec-draft-type-v -ctvd --cache-type-v-draft", "TYPE", "LLAMA_ARG_SPEC_DRAFT_CACHE_TYPE_V"),
  row("--samplers", "SAMPLERS", null),
  row("-s --seed", "SEED", null),
  row("--sampler-seq --sampling-seq", "SEQUENCE", null),
  row("--ignore-eos", null, null),
  row("--temp --temperature", "N", "LLAMA_ARG_TEMPERATURE"),
  row("--top-k", "N", "LLAMA_ARG_TOP_K"),
  row("--top-p", "N", "LLAMA_ARG_TOP_P"),
  row("--min-p", "N", "LLAMA_ARG_MIN_P"),
  row("--top-nsigma --top-n-sigma", "N", null),
  row("--xtc-probability", "N", null),
  row("--xtc-threshold", "N", null),
  row("--typical --typical-p", "N", null),
  row("--repeat-last-n", "N", null),
  row("--repeat-penalty", "N", "LLAMA_ARG_REPEAT_PENALTY"),
  row("--presence-penalty", "N", "LLAMA_ARG_PRESENCE_PENALTY"),
  row("--frequency-penalty", "N", "LLAMA_ARG_FREQUENCY_PENALTY"),
  row("--dry-multiplier", "N", null),
  row("--dry-base", "N", null),
  row("--dry-allowed-length", "N", null),
  row("--dry-penalty-last-n", "N", null),
  row("--dry-sequence-breaker", "STRING", null),
  row("--adaptive-target", "N", null),
  row("--adaptive-decay", "N", null),
  row("--dynatemp-range", "N", null),
  row("--dynatemp-exp", "N", null),
  row("--mirostat", "N", null),
  row("--mirostat-lr", "N", null),
  row("--mirostat-ent", "N", null),
  row("-l --logit-bias", "TOKEN_ID(+/-)BIAS", null),
  row("--grammar", "GRAMMAR", null),
  row("--grammar-file", "FNAME", null),
  row("-j --json-schema", "SCHEMA", null),
  row("-jf --json-schema-file", "FILE", null),
  row("-bs --backend-sampling", null, "LLAMA_ARG_BACKEND_SAMPLING"),
  row("--spec-draft-hf -hfd -hfrd --hf-repo-draft", "<user>/<model>[:quant]", "LLAMA_ARG_SPEC_DRAFT_HF_REPO"),
  row("--spec-draft-threads -td --threads-draft", "N", null),
  row("--spec-draft-threads-batch -tbd --threads-batch-draft", "N", null),
  row("--spec-draft-cpu-mask -Cd --cpu-mask-draft", "M", null),
  row("--spec-draft-cpu-range -Crd --cpu-range-draft", "lo-hi", null),
  row("--spec-draft-cpu-strict --cpu-strict-draft", "<0|1>", null),
  row("--spec-draft-prio --prio-draft", "N", null),
  row("--spec-draft-poll --poll-draft", "<0|1>", null),
  row("--spec-draft-cpu-mask-batch -Cbd --cpu-mask-batch-draft", "M", null),
  row("--spec-draft-cpu-strict-batch --cpu-strict-batch-draft", "<0|1>", null),
  row("--spec-draft-prio-batch --prio-batch-draft", "N", null),
  row("--spec-draft-poll-batch --poll-batch-draft", "<0|1>", null),
  row("--spec-draft-override-tensor -otd --override-tensor-draft", "<tensor name pattern>=<buffer type>,...", null),
  row("--spec-draft-cpu-moe -cmoed --cpu-moe-draft", null, "LLAMA_ARG_SPEC_DRAFT_CPU_MOE"),
  row("--spec-draft-n-cpu-moe --spec-draft-ncmoe -ncmoed --n-cpu-moe-draft", "N", "LLAMA_ARG_SPEC_DRAFT_N_CPU_MOE"),
  row("--spec-draft-n-max", "N", "LLAMA_ARG_SPEC_DRAFT_N_MAX"),
  row("--spec-draft-n-min", "N", "LLAMA_ARG_SPEC_DRAFT_N_MIN"),
  row("--spec-synth-len", "L", "LLAMA_ARG_SPEC_SYNTH_LEN"),
  row("--spec-synth-rates", "P0,P1,...", "LLAMA_ARG_SPEC_SYNTH_RATES"),
  row("--spec-draft-p-split --draft-p-split", "P", "LLAMA_ARG_SPEC_DRAFT_P_SPLIT"),
  row("--spec-draft-p-min --draft-p-min", "P", "LLAMA_ARG_SPEC_DRAFT_P_MIN"),
  row("--spec-draft-backend-sampling --no-spec-draft-backend-sampling", null, "LLAMA_ARG_SPEC_DRAFT_BACKEND_SAMPLING"),
  row("--spec-draft-device -devd --device-draft", "<dev1,dev2,..>", null),
  row("--spec-draft-ngl -ngld --gpu-layers-draft --n-gpu-layers-draft", "N", "LLAMA_ARG_N_GPU_LAYERS_DRAFT"),
  row("--spec-draft-model -md --model-draft", "FNAME", "LLAMA_ARG_SPEC_DRAFT_MODEL"),
  row(
    "--spec-type",
    "none,draft-simple,draft-eagle3,draft-mtp,draft-dflash,draft-dspark,ngram-simple,ngram-map-k,ngram-map-k4v,ngram-mod,ngram-cache",
    "LLAMA_ARG_SPEC_TYPE",
  ),
  row("--spec-ngram-mod-n-min", "N", null),
  row("--spec-ngram-mod-n-max", "N", null),
  row("--spec-ngram-mod-n-match", "N", null),
  row("--spec-ngram-simple-size-n", "N", null),
  row("--spec-ngram-simple-size-m", "N", null),
  row("--spec-ngram-simple-min-hits", "N", null),
  row("--spec-ngram-map-k-size-n", "N", null),
  row("--spec-ngram-map-k-size-m", "N", null),
  row("--spec-ngram-map-k-min-hits", "N", null),
  row("--spec-ngram-map-k4v-size-n", "N", null),
  row("--spec-ngram-map-k4v-size-m", "N", null),
  row("--spec-ngram-map-k4v-min-hits", "N", null),
  row("--draft --draft-n --draft-max", "N", "LLAMA_ARG_DRAFT_MAX"),
  row("--draft-min --draft-n-min", "N", "LLAMA_ARG_DRAFT_MIN"),
  row("--spec-ngram-size-n", "N", null),
  row("--spec-ngram-size-m", "N", null),
  row("--spec-ngram-min-hits", "N", null),
  row("-lcs --lookup-cache-static", "FNAME", null),
  row("-lcd --lookup-cache-dynamic", "FNAME", null),
  row("--kv-unified-per-slot", "N", "LLAMA_ARG_KV_UNIFIED_PER_SLOT"),
  row("-ctxcp --ctx-checkpoints --swa-checkpoints", "N", "LLAMA_ARG_CTX_CHECKPOINTS", "ctxCheckpoints"),
  row("-cms --checkpoint-min-step", "N", "LLAMA_ARG_CHECKPOINT_MIN_SPACING_NT"),
  row("-cram --cache-ram", "N", "LLAMA_ARG_CACHE_RAM", "cacheRamMiB"),
  row("-kvu --kv-unified -no-kvu --no-kv-unified", null, "LLAMA_ARG_KV_UNIFIED", "kvUnified"),
  row("--cache-idle-slots --no-cache-idle-slots", null, "LLAMA_ARG_CACHE_IDLE_SLOTS"),
  row("--context-shift --no-context-shift", null, "LLAMA_ARG_CONTEXT_SHIFT"),
  row("-r --reverse-prompt", "PROMPT", null),
  row("-sp --special", null, null),
  row("--warmup --no-warmup", null, null),
  row("--spm-infill", null, null),
  row("--pooling", "{none,mean,cls,last,rank}", "LLAMA_ARG_POOLING"),
  row("-np --parallel", "N", "LLAMA_ARG_N_PARALLEL", "parallel"),
  row("-cb --cont-batching -nocb --no-cont-batching", null, "LLAMA_ARG_CONT_BATCHING"),
  row("-mm --mmproj", "FILE", "LLAMA_ARG_MMPROJ"),
  row("-mmu --mmproj-url", "URL", "LLAMA_ARG_MMPROJ_URL"),
  row("--mmproj-auto --no-mmproj --no-mmproj-auto", null, "LLAMA_ARG_MMPROJ_AUTO"),
  row("--mmproj-offload --no-mmproj-offload", null, "LLAMA_ARG_MMPROJ_OFFLOAD"),
  row("-mmdev --mmproj-device", "DEVICE", "MTMD_BACKEND_DEVICE"),
  row("--image-min-tokens", "N", "LLAMA_ARG_IMAGE_MIN_TOKENS"),
  row("--image-max-tokens", "N", "LLAMA_ARG_IMAGE_MAX_TOKENS"),
  row("--mtmd-batch-max-tokens", "N", "LLAMA_ARG_MTMD_BATCH_MAX_TOKENS"),
  row("--video-fps", "N", "LLAMA_ARG_VIDEO_FPS"),
  row("--video-timestamp-interval", "N", "LLAMA_ARG_VIDEO_TIMESTAMP_INTERVAL"),
  row("--video-ffmpeg-dir", "DIR", "LLAMA_ARG_VIDEO_FFMPEG_DIR"),
  row("-a --alias", "STRING", "LLAMA_ARG_ALIAS"),
  row("--tags", "STRING", "LLAMA_ARG_TAGS"),
  row("--embd-normalize", "N", null),
  row("--host", "HOST", "LLAMA_ARG_HOST"),
  row("--port", "PORT", "LLAMA_ARG_PORT"),
  row("--reuse-port", null, "LLAMA_ARG_REUSE_PORT"),
  row("--path", "PATH", "LLAMA_ARG_STATIC_PATH"),
  row("--cors-origins", "ORIGINS", "LLAMA_ARG_CORS_ORIGINS"),
  row("--cors-methods", "METHODS", "LLAMA_ARG_CORS_METHODS"),
  row("--cors-headers", "HEADERS", "LLAMA_ARG_CORS_HEADERS"),
  row("--cors-credentials --no-cors-credentials", null, "LLAMA_ARG_CORS_CREDENTIALS"),
  row("--api-prefix", "PREFIX", "LLAMA_ARG_API_PREFIX"),
  row("--ui-config --webui-config", "JSON", "LLAMA_ARG_UI_CONFIG"),
  row("--ui-config-file --webui-config-file", "PATH", "LLAMA_ARG_UI_CONFIG_FILE"),
  row("--ui-mcp-proxy --webui-mcp-proxy --no-ui-mcp-proxy --no-webui-mcp-proxy", null, "LLAMA_ARG_UI_MCP_PROXY"),
  row("--tools", "TOOL1,TOOL2,...", "LLAMA_ARG_TOOLS"),
  row("--tools-runtime", "OPTION", "LLAMA_ARG_TOOLS_RUNTIME"),
  row("--mcp-servers-config", "PATH", "LLAMA_ARG_MCP_SERVERS_CONFIG"),
  row("--mcp-servers-json", "JSON", "LLAMA_ARG_MCP_SERVERS_JSON"),
  row("-ag --agent -no-ag --no-agent", null, "LLAMA_ARG_AGENT"),
  row("--ui --webui --no-ui --no-webui", null, "LLAMA_ARG_UI"),
  row("--embedding --embeddings", null, "LLAMA_ARG_EMBEDDINGS"),
  row("--rerank --reranking", null, "LLAMA_ARG_RERANKING"),
  row("--api-key", "KEY", "LLAMA_API_KEY"),
  row("--api-key-file", "FNAME", "LLAMA_ARG_API_KEY_FILE"),
  row("--ssl-key-file", "FNAME", "LLAMA_ARG_SSL_KEY_FILE"),
  row("--ssl-cert-file", "FNAME", "LLAMA_ARG_SSL_CERT_FILE"),
  row("--chat-template-kwargs", "STRING", "LLAMA_ARG_CHAT_TEMPLATE_KWARGS"),
  row("-to --timeout", "N", "LLAMA_ARG_TIMEOUT"),
  row("--sse-ping-interval", "N", "LLAMA_ARG_SSE_PING_INTERVAL"),
  row("--threads-http", "N", "LLAMA_ARG_THREADS_HTTP"),
  row("--cache-prompt --no-cache-prompt", null, "LLAMA_ARG_CACHE_PROMPT"),
  row("--cache-reuse", "N", "LLAMA_ARG_CACHE_REUSE"),
  row("--metrics", null, "LLAMA_ARG_ENDPOINT_METRICS"),
  row("--props", null, "LLAMA_ARG_ENDPOINT_PROPS"),
  row("--slots --no-slots", null, "LLAMA_ARG_ENDPOINT_SLOTS"),
  row("--slot-save-path", "PATH", null),
  row("--media-path", "PATH", null),
  row("--models-dir", "PATH", "LLAMA_ARG_MODELS_DIR"),
  row("--models-preset", "PATH", "LLAMA_ARG_MODELS_PRESET"),
  row("--models-max", "N", "LLAMA_ARG_MODELS_MAX"),
  row("--models-autoload --no-models-autoload", null, "LLAMA_ARG_MODELS_AUTOLOAD"),
  row("--jinja --no-jinja", null, "LLAMA_ARG_JINJA"),
  row("--reasoning-format", "FORMAT", "LLAMA_ARG_THINK"),
  row("-rea --reasoning", "[on|off|auto]", "LLAMA_ARG_REASONING"),
  row("--reasoning-effort", "LEVEL", "LLAMA_ARG_REASONING_EFFORT"),
  row("--reasoning-budget", "N", "LLAMA_ARG_THINK_BUDGET"),
  row("--reasoning-budget-message", "MESSAGE", "LLAMA_ARG_THINK_BUDGET_MESSAGE"),
  row("--reasoning-preserve --no-reasoning-preserve", null, "LLAMA_ARG_REASONING_PRESERVE"),
  row("--chat-template", "JINJA_TEMPLATE", "LLAMA_ARG_CHAT_TEMPLATE"),
  row("--chat-template-file", "JINJA_TEMPLATE_FILE", "LLAMA_ARG_CHAT_TEMPLATE_FILE"),
  row("--skip-chat-parsing --no-skip-chat-parsing", null, "LLAMA_ARG_SKIP_CHAT_PARSING"),
  row("--prefill-assistant --no-prefill-assistant", null, "LLAMA_ARG_PREFILL_ASSISTANT"),
  row("-sps --slot-prompt-similarity", "SIMILARITY", null),
  row("--lora-init-without-apply", null, null),
  row("--sleep-idle-seconds", "SECONDS", null),
  row("--log-prompts-dir", "PATH", null),
  row("--embd-gemma-default", null, null),
  row("--fim-qwen-1.5b-default", null, null),
  row("--fim-qwen-3b-default", null, null),
  row("--fim-qwen-7b-default", null, null),
  row("--fim-qwen-7b-spec", null, null),
  row("--fim-qwen-14b-spec", null, null),
  row("--fim-qwen-30b-default", null, null),
  row("--gpt-oss-20b-default", null, null),
  row("--gpt-oss-120b-default", null, null),
  row("--vision-gemma-4b-default", null, null),
  row("--vision-gemma-12b-default", null, null),
  row("--spec-default", null, null),
];

/** Flags older releases had and v0.5.0 removed, with what replaced them (common/arg.cpp, v0.5.0). */
export const REMOVED_FLAGS: Readonly<Record<string, string>> = {
  "--mmap": "--load-mode mmap",
  "--no-mmap": "--load-mode none",
  "--mlock": "--load-mode mlock (or mmap+mlock)",
  "--direct-io": "--load-mode dio",
  "-dio": "--load-mode dio",
};

const BY_NAME = new Map<string, FlagRow>(
  LLAMA_SERVER_FLAGS.flatMap((flag) => flag.names.map((name) => [name, flag] as const)),
);

export function flagRow(name: string): FlagRow | undefined {
  return BY_NAME.get(name);
}

/** The name the kit writes: the first long spelling --help lists. */
export function canonicalName(flag: FlagRow): string {
  return flag.names.find((name) => name.startsWith("--") && !isNegative(name)) ?? flag.names[0]!;
}

/** The "off" spelling of an on/off pair (--no-repack, --no-op-offload, …). */
function negativeName(flag: FlagRow): string | undefined {
  return flag.names.find((name) => name.startsWith("--no-")) ?? flag.names.find(isNegative);
}

const SHORT_NEGATIVES = new Set(["-nr", "-nkvo", "-nocb", "-no-kvu", "-no-ag"]);
function isNegative(name: string): boolean {
  return name.startsWith("--no-") || SHORT_NEGATIVES.has(name);
}

const SIZING_ROW = new Map<SizingKey, FlagRow>(
  LLAMA_SERVER_FLAGS.filter((flag) => flag.sizing !== null).map((flag) => [flag.sizing!, flag]),
);

export function sizingRow(key: SizingKey): FlagRow {
  const found = SIZING_ROW.get(key);
  if (!found) throw new Error(`planner/flags.ts: no table row for sizing field ${key}`);
  return found;
}

// ------------------------------------------------------------------ values

type Problem = string;
const problem = (name: string, found: string, allowed: string): Problem =>
  `${name}: found ${JSON.stringify(found)}; allowed: ${allowed}`;

function integer(name: string, text: string, min: number, max = Number.MAX_SAFE_INTEGER, what = ""): number | Problem {
  const value = /^-?\d+$/.test(text.trim()) ? Number(text) : Number.NaN;
  if (!Number.isSafeInteger(value) || value < min || value > max)
    return problem(
      name,
      text,
      `an integer ${max === Number.MAX_SAFE_INTEGER ? `≥ ${min}` : `${min} to ${max}`}${what}`,
    );
  return value;
}

function oneOf<T extends string>(name: string, text: string, values: readonly T[]): T | Problem {
  return (values as readonly string[]).includes(text)
    ? (text as T)
    : problem(name, text, `one of ${values.join(", ")}`);
}

const isProblem = (value: unknown): value is Problem => typeof value === "string" && value.includes("; allowed: ");

/** An integer ≥ 1, or -1 for llama.cpp's automatic choice (0 is refused). */
function positiveOrAuto(name: string, text: string, allowed: string): number | Problem {
  const value = integer(name, text, -1);
  return typeof value !== "number" || value === 0 ? problem(name, text, allowed) : value;
}

/** --tensor-split: proportions per device, separated by , or /. */
function tensorSplitValue(name: string, text: string): number[] | Problem {
  const parts = text.split(/[,/]/);
  const values = parts.map(Number);
  if (
    parts.some((part) => part.trim() === "") ||
    values.some((value) => !Number.isFinite(value) || value < 0) ||
    values.every((value) => value === 0)
  ) {
    return problem(name, text, "non-negative proportions separated by , or / (not all zero)");
  }
  return values;
}

/** --override-tensor: PATTERN=BUFFER rules, appended to those of earlier occurrences. */
function overrideTensorValue(name: string, text: string, earlier: readonly OverrideRule[]): OverrideRule[] | Problem {
  const rules: OverrideRule[] = [...earlier];
  for (const part of text.split(",")) {
    const at = part.lastIndexOf("=");
    const pattern = part.slice(0, at);
    const device = part.slice(at + 1);
    if (at <= 0 || !/^(CPU|CUDA\d+|RPC\[[^\]]+\])$/.test(device))
      return problem(name, part, "PATTERN=BUFFER where BUFFER is CPU, CUDA0, CUDA1, … or RPC[host:port]");
    try {
      new RegExp(pattern);
    } catch {
      return problem(name, part, "a pattern that is a valid regular expression");
    }
    rules.push({ pattern, device });
  }
  return rules;
}

/** --rpc: the RPC servers' endpoints. */
function rpcValue(name: string, text: string): string[] | Problem {
  // common/arg.cpp splits on "," and each server must be host:port (ggml_backend_rpc_add_server).
  const endpoints = text.split(",");
  if (endpoints.some((endpoint) => !/^[A-Za-z0-9.-]+:\d{1,5}$/.test(endpoint)))
    return problem(name, text, "host:port endpoints separated by ,");
  return endpoints;
}

/** Reads one flag's value into the typed field it sets (common/arg.cpp's rules for v0.5.0). */
function parseSizingValue(key: SizingKey, name: string, text: string, into: SizingFlags): Problem | undefined {
  const set = <K extends SizingKey>(field: K, value: SizingFlags[K] | Problem): Problem | undefined => {
    if (isProblem(value)) return value;
    into[field] = value as SizingFlags[K];
    return undefined;
  };
  switch (key) {
    case "ctxSize":
      return set(key, integer(name, text, 0, Number.MAX_SAFE_INTEGER, " (0 = the model's trained context)"));
    case "parallel":
      return set(key, positiveOrAuto(name, text, "an integer ≥ 1, or -1 (auto)"));
    case "batch":
    case "ubatch":
      return set(key, integer(name, text, 1));
    case "threads":
    case "threadsBatch":
      return set(key, positiveOrAuto(name, text, "an integer ≥ 1, or -1 (one per physical core)"));
    case "gpuLayers":
      if (text === "auto" || text === "all") return set(key, text);
      return set(key, integer(name, text, 0, Number.MAX_SAFE_INTEGER, ", auto or all"));
    case "splitMode":
      return set(key, oneOf<SplitMode>(name, text, ["none", "layer", "row", "tensor"]));
    case "tensorSplit":
      return set(key, tensorSplitValue(name, text));
    case "overrideTensor":
      return set(key, overrideTensorValue(name, text, into.overrideTensor ?? []));
    case "rpc":
      return set(key, rpcValue(name, text));
    case "nCpuMoe":
    case "ctxCheckpoints":
      return set(key, integer(name, text, 0));
    case "cacheTypeK":
    case "cacheTypeV":
      return set(key, oneOf<KvCacheType>(name, text, KV_CACHE_TYPES));
    case "flashAttn":
      return set(key, oneOf<FlashAttn>(name, text, ["on", "off", "auto"]));
    case "loadMode":
      return set(key, oneOf<LoadMode>(name, text, ["auto", "none", "mmap", "mlock", "mmap+mlock", "dio"]));
    case "cacheRamMiB":
      return set(key, integer(name, text, -1, Number.MAX_SAFE_INTEGER, " MiB (-1 = no limit, 0 = off)"));
    case "numa":
      return set(key, oneOf<NumaMode>(name, text, ["distribute", "isolate", "numactl"]));
    case "cpuMoe":
    case "swaFull":
    case "repack":
    case "opOffload":
    case "kvUnified":
      return problem(name, text, "no value (a switch)");
  }
}

function renderSizingValue(key: SizingKey, value: NonNullable<SizingFlags[SizingKey]>): string[] | boolean {
  if (typeof value === "boolean") return value;
  if (key === "overrideTensor") return (value as OverrideRule[]).map((rule) => `${rule.pattern}=${rule.device}`);
  if (key === "tensorSplit" || key === "rpc") return [(value as (number | string)[]).join(",")];
  return [String(value)];
}

// ------------------------------------------------------------------ argv

/** What a flag's value may be: the sizing parser's own wording (what a bad value is told), else the --help metavar. */
function allowedValues(flag: FlagRow, name: string): string {
  const trouble = flag.sizing === null ? undefined : parseSizingValue(flag.sizing, name, "", {});
  return trouble?.split("; allowed: ")[1] ?? flag.valueHint ?? "a value";
}

/** A word that is no flag, where a flag was expected. */
function strayValueProblem(argv: readonly string[], index: number): string {
  const word = argv[index]!;
  const previous = BY_NAME.get(argv[index - 1] ?? "");
  const after = previous?.valueWords === 0 ? ` (${argv[index - 1]} is a switch and takes no value)` : "";
  return `${JSON.stringify(word)}: a value with no flag before it${after}; allowed: flags as llama-server v0.5.0 --help lists them, each followed by its value`;
}

/** A flag the sizing ignores: kept for the command line, and noted when it would change sizing. */
function recordUnsizedFlag(
  flag: FlagRow,
  name: string,
  values: string[],
  into: Pick<ParsedFlags, "other" | "ignoredForSizing" | "notModelled">,
): void {
  into.ignoredForSizing.push(name);
  const canonical = canonicalName(flag);
  // A switch pair changes sizing only when turned off (-nkvo, -nocb); --no-host is its own "off".
  if (NOT_MODELLED.has(canonical) && (flag.valueWords > 0 || isNegative(name))) into.notModelled.push(name);
  if (flag.valueWords === 0 && isNegative(name)) into.other.push({ flag: negativeName(flag) ?? name, values: [] });
  else into.other.push({ flag: canonical, values });
}

/**
 * Reads a llama-server command line (without the program name). Every problem — unknown or
 * removed flag, missing or out-of-range value — is collected and thrown as one ConfigError whose
 * problems each name the flag; `source` says where the command line came from.
 */
export function parseFlags(argv: readonly string[], source = "--args"): ParsedFlags {
  const sizing: SizingFlags = {};
  const other: OtherFlag[] = [];
  const ignoredForSizing: string[] = [];
  const notModelled: string[] = [];
  const problems: string[] = [];
  for (let index = 0; index < argv.length; index++) {
    const word = argv[index]!;
    const equals = word.startsWith("--") ? word.indexOf("=") : -1;
    const name = equals > 0 ? word.slice(0, equals) : word;
    const inline = equals > 0 ? word.slice(equals + 1) : undefined;
    if (!name.startsWith("-")) {
      problems.push(strayValueProblem(argv, index));
      continue;
    }
    const removed = REMOVED_FLAGS[name];
    if (removed) {
      problems.push(`${name}: removed in llama-server v0.5.0; allowed: ${removed}`);
      continue;
    }
    const flag = BY_NAME.get(name);
    if (!flag) {
      problems.push(
        `${name}: not a llama-server v0.5.0 flag; allowed: the flags its --help lists (test/fixtures/llama-server-help-v0.5.0.txt)`,
      );
      continue;
    }
    let values: string[] = [];
    if (flag.valueWords === 0) {
      if (inline !== undefined) {
        problems.push(problem(name, inline, "no value (a switch)"));
        continue;
      }
    } else if (inline !== undefined) {
      values = [inline];
    } else {
      values = argv.slice(index + 1, index + 1 + flag.valueWords);
      index += flag.valueWords;
      if (values.length < flag.valueWords) {
        problems.push(`${name}: found nothing (missing value); allowed: ${allowedValues(flag, name)}`);
        continue;
      }
    }
    if (flag.sizing === null) {
      recordUnsizedFlag(flag, name, values, { other, ignoredForSizing, notModelled });
      continue;
    }
    if (flag.valueWords === 0) {
      (sizing as Record<SizingKey, unknown>)[flag.sizing] = !isNegative(name);
      continue;
    }
    const trouble = parseSizingValue(flag.sizing, name, values.join(" "), sizing);
    if (trouble) problems.push(trouble);
  }
  if (problems.length > 0) throw new ConfigError(source, problems);
  return { sizing, other, ignoredForSizing, notModelled };
}

/** Splits a shell-like command line: whitespace separates words, single and double quotes group them. */
export function splitCommandLine(text: string): string[] {
  const words: string[] = [];
  let current = "";
  let quote: string | null = null;
  let started = false;
  for (const char of text) {
    if (quote) {
      if (char === quote) quote = null;
      else current += char;
    } else if (char === "'" || char === '"') {
      quote = char;
      started = true;
    } else if (/\s/.test(char)) {
      if (started) words.push(current);
      current = "";
      started = false;
    } else {
      current += char;
      started = true;
    }
  }
  if (quote) throw new ConfigError("--args", [`--args: found an unclosed ${quote} quote; allowed: balanced quotes`]);
  if (started) words.push(current);
  return words;
}

export interface RenderedFlag {
  flag: string;
  env: string | null;
  values: string[];
}

/**
 * Renders a FlagSet as llama-server flags, one entry per flag (a repeated flag such as -ot has
 * several values and is written once per value). `order` lists canonical names to write first, in
 * that order — the kit keeps its explained order — and the rest follow in --help's order.
 */
export function renderFlags(set: FlagSet, order: readonly string[] = []): RenderedFlag[] {
  const rendered = new Map<string, RenderedFlag>();
  for (const flag of LLAMA_SERVER_FLAGS) {
    if (flag.sizing === null) continue;
    const value = set.sizing[flag.sizing];
    if (value === undefined) continue;
    const shown = renderSizingValue(flag.sizing, value);
    if (typeof shown === "boolean") {
      const name = shown ? canonicalName(flag) : negativeName(flag)!;
      rendered.set(canonicalName(flag), { flag: name, env: flag.env, values: [] });
    } else rendered.set(canonicalName(flag), { flag: canonicalName(flag), env: flag.env, values: shown });
  }
  for (const entry of set.other) {
    const flag = BY_NAME.get(entry.flag);
    if (!flag) throw new Error(`planner/flags.ts: ${entry.flag} is not in the flag table`);
    if (flag.sizing !== null)
      throw new Error(`planner/flags.ts: ${entry.flag} sets ${flag.sizing}; put it in FlagSet.sizing`);
    rendered.set(canonicalName(flag), { flag: entry.flag, env: flag.env, values: entry.values });
  }
  const tableOrder = LLAMA_SERVER_FLAGS.map(canonicalName);
  const rank = (name: string) => {
    const position = order.indexOf(name);
    return position >= 0 ? position : order.length + tableOrder.indexOf(name);
  };
  return [...rendered.entries()].sort(([a], [b]) => rank(a) - rank(b)).map(([, value]) => value);
}

/** argv words for rendered flags: a switch alone, a valued flag once per value. */
export function toArgv(flags: readonly RenderedFlag[]): string[] {
  return flags.flatMap((flag) => {
    if (flag.values.length === 0) return [flag.flag];
    // --control-vector-layer-range START END is the one flag whose value is two words.
    if (BY_NAME.get(flag.flag)?.valueWords === 2) return [flag.flag, ...flag.values];
    return flag.values.flatMap((value) => [flag.flag, value]);
  });
}

export function renderArgv(set: FlagSet, order: readonly string[] = []): string[] {
  return toArgv(renderFlags(set, order));
}
