/**
 * The HTTP API's parameters routes (docs/secrets.md, "Per-machine
 * parameters"): layers, the changes to them, what `ferry params ls` and
 * `ferry agents show` see.
 */
import { z } from 'zod';
import { GraphNameSchema } from '../config.js';
import { KeyIdSchema } from '../identity.js';
import { MAX_WHERE_CLAUSES, MAX_WHERE_CLAUSE_LENGTH } from '../where.js';
import { MAX_LAYER_PARAMS, ParamKeySchema, ParamValuesSchema } from '../params.js';

/**
 * Which layer: a graph's defaults (for the agents following it), a group
 * of agents by operator labels (`labels.KEY…` clauses, as rules select),
 * or one agent.
 */
export const ParamLayerSchema = z.union([
  z.strictObject({ graph: GraphNameSchema }),
  z.strictObject({ where: z.array(z.string().max(MAX_WHERE_CLAUSE_LENGTH)).min(1).max(MAX_WHERE_CLAUSES) }),
  z.strictObject({ agent: KeyIdSchema }),
]);
export type ParamLayer = z.infer<typeof ParamLayerSchema>;

/** The state's id of a layer: `graph:NAME`, `where:<clauses as JSON>`, `agent:KEYID`. */
export function paramLayerId(layer: ParamLayer): string {
  if ('graph' in layer) return `graph:${layer.graph}`;
  if ('agent' in layer) return `agent:${layer.agent}`;
  return `where:${JSON.stringify(layer.where)}`;
}

/** Where an effective parameter came from: the layer's kind and id (a graph name, the group's clauses, the agent id). */
export const ParamSourceSchema = z.union([
  z.strictObject({ layer: z.literal('graph'), graph: z.string() }),
  z.strictObject({ layer: z.literal('group'), where: z.array(z.string()) }),
  z.strictObject({ layer: z.literal('agent') }),
]);
export type ParamSource = z.infer<typeof ParamSourceSchema>;

/** One effective parameter of an agent, with the layer it came from (`ferry agents show`). */
export const EffectiveParamSchema = z.strictObject({ key: z.string(), value: z.string(), source: ParamSourceSchema });
export type EffectiveParam = z.infer<typeof EffectiveParamSchema>;

/**
 * The one resolution rule: `layers` from lowest to highest (the graph's
 * defaults, then each matching group in the order the groups were first
 * set, then the agent's own); a later layer's value replaces an earlier
 * one's. Sorted by key.
 */
export function resolveParams(layers: readonly { source: ParamSource; values: Readonly<Record<string, string>> }[]): EffectiveParam[] {
  const effective = new Map<string, EffectiveParam>();
  for (const { source, values } of layers) for (const [key, value] of Object.entries(values)) effective.set(key, { key, value, source });
  return [...effective.values()].sort((a, b) => (a.key < b.key ? -1 : 1));
}

/** `ferry params set`: values for one layer (merged into what it holds). */
export const SetParamsInput = z.strictObject({ layer: ParamLayerSchema, values: ParamValuesSchema.refine((values) => Object.keys(values).length >= 1, 'set at least one parameter') });

/** `ferry params unset`: keys removed from one layer. */
export const UnsetParamsInput = z.strictObject({
  layer: ParamLayerSchema,
  keys: z
    .array(ParamKeySchema)
    .min(1)
    .max(MAX_LAYER_PARAMS)
    .refine((keys) => new Set(keys).size === keys.length, 'a parameter is named twice'),
});

/** One layer as `ferry params ls` shows it. */
export const ParamLayerViewSchema = z.strictObject({ layer: ParamLayerSchema, values: z.record(z.string(), z.string()), createdSeq: z.number().int(), updatedSeq: z.number().int() });
