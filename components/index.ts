export * from "./container-spec";
export * from "./host";
export * from "./host-prep";
export * from "./gguf-shards";
export * from "./llama-server";
export * from "./llm-deployment";
export * from "./rpc-worker";
