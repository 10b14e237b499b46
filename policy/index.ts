/**
 * The kit's policy pack: `pulumi preview --policy-pack ./policy` (and `pulumi up`) checks every
 * deployment against the platform's guardrails before anything runs on a host. Each policy's
 * enforcement level (mandatory, advisory, disabled) and settings come from
 * `--policy-pack-config FILE`; without one every policy is mandatory and uses its defaults
 * (policies.ts). What each policy reads is described in policies.ts and facts.ts.
 */
import { PolicyPack } from "@pulumi/policy";
import { policies } from "./policies";

new PolicyPack("kimi-kit-guardrails", {
  description:
    "kimi-kit guardrails: cost cap, endpoint exposure, pinned host keys, encrypted secrets, the planner's verdict, private RPC, production shards",
  enforcementLevel: "mandatory",
  policies,
});
