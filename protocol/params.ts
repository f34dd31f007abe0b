/**
 * Per-machine parameters (docs/secrets.md, "Per-machine parameters"):
 * non-secret values in layers, a graph's defaults < label-selected groups <
 * the agent itself, resolved by the coordinator into each agent's signed
 * desired answer and exposed by the agent to its commands as environment
 * variables. This module holds names, values, bounds and the stamp, what
 * configs and agents need; the layers' API shapes are in api/params.ts.
 */
import { createHash } from 'node:crypto';
import { z } from 'zod';
import { canonicalJson } from './canonical-json.js';
import { environmentKeyRefusal, MAX_ENVIRONMENT_VALUE } from './activation-environment.js';

/** The most parameters one layer may hold. */
export const MAX_LAYER_PARAMS = 256;
/** The most label-selected groups. */
export const MAX_PARAM_GROUPS = 64;
/** The longest value, in characters (an environment variable's bound). */
export const MAX_PARAM_VALUE = MAX_ENVIRONMENT_VALUE;

/**
 * A parameter's name: `[A-Z_][A-Z0-9_]{0,63}`, and one an activation
 * environment may carry (not PATH, LD_*, FERRY_*…: activation-environment.ts),
 * since it becomes a variable of the agent's commands.
 */
export const ParamKeySchema = z
  .string()
  .regex(/^[A-Z_][A-Z0-9_]{0,63}$/, 'a parameter name is [A-Z_][A-Z0-9_]{0,63}')
  .superRefine((key, context) => {
    const refusal = environmentKeyRefusal(key);
    if (refusal) context.addIssue({ code: 'custom', message: `${key} is refused: ${refusal}` });
  });

/** A parameter's value: at most MAX_PARAM_VALUE characters, no NUL (it becomes an environment variable). */
export const ParamValueSchema = z
  .string()
  .max(MAX_PARAM_VALUE, `a parameter value is at most ${MAX_PARAM_VALUE} characters`)
  .refine((value) => !value.includes('\0'), 'a parameter value has no NUL character');

/** A layer's parameters. */
export const ParamValuesSchema = z
  .record(ParamKeySchema, ParamValueSchema)
  .refine((values) => Object.keys(values).length <= MAX_LAYER_PARAMS, `a layer holds at most ${MAX_LAYER_PARAMS} parameters`);
export type ParamValues = z.infer<typeof ParamValuesSchema>;

/** The most parameters an agent can have in effect: a graph's, every group's and its own. */
export const MAX_EFFECTIVE_PARAMS = MAX_LAYER_PARAMS * (MAX_PARAM_GROUPS + 2);

/** The parameters a desired answer carries (key → value): present only when the agent has any, covered by its proof. */
export const DesiredParamsSchema = z
  .record(ParamKeySchema, ParamValueSchema)
  .refine((values) => Object.keys(values).length <= MAX_EFFECTIVE_PARAMS, 'too many parameters');
export type DesiredParams = z.infer<typeof DesiredParamsSchema>;

/**
 * What says whether an agent's effective parameters changed: a digest of
 * them (the empty map has one too, so an agent without any learns of its
 * first). The agent sends it with its watch; the coordinator answers when
 * its own differs.
 */
export function paramsStamp(params: Readonly<Record<string, string>> | undefined): string {
  return createHash('sha256')
    .update(canonicalJson(params ?? {}))
    .digest('hex');
}

export const ParamsStampSchema = z.string().regex(/^[0-9a-f]{64}$/, 'a params stamp is 64 hex digits');
