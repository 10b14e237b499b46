/**
 * The plan JSON's per-device byte fields and the `data-kind` each is drawn as in the HTML/SVG
 * report: the kinds issue 15 lists, written here from the JSON's field names rather than read from
 * the renderer, so the report tests check the renderer against an independent mapping.
 */
export const KIND_FIELDS = {
  weights: "modelBytes",
  repacked: "repackBytes",
  kv: "kvBytes",
  recurrent: "recurrentBytes",
  compute: "computeBytes",
  "prompt-cache": "promptCacheBytes",
  checkpoints: "checkpointBytes",
  headroom: "headroomBytes",
} as const;
