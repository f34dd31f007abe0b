/**
 * Per-machine parameters' commands (docs/secrets.md, "Per-machine
 * parameters"): set values in a layer, unset them. One event per change,
 * operators and admins only (as for a config's environment: what a
 * machine's commands read). The bounds are checked against what the layer
 * would hold afterwards: ≤ MAX_LAYER_PARAMS per layer, ≤ MAX_PARAM_GROUPS
 * groups in use.
 */
import { FerryError } from '../../protocol/errors.js';
import { paramLayerId, SetParamsInput, UnsetParamsInput, type ParamLayer } from '../../protocol/api/params.js';
import { MAX_LAYER_PARAMS, MAX_PARAM_GROUPS } from '../../protocol/params.js';
import { allow, parse, type CommandContext } from './commands.js';
import type { EventDraft } from './events.js';
import { canonicalLayer, layerInUse, parseGroupWhere } from './params.js';

/** Refuses (INVALID) a group whose clauses do not parse or name anything but labels; (NOT_FOUND) an agent that is not one. */
function checkLayer(context: CommandContext, layer: ParamLayer): void {
  if ('where' in layer) parseGroupWhere(layer.where);
  if ('agent' in layer && !context.state.get('agents', layer.agent)) throw new FerryError('NOT_FOUND', `no agent ${layer.agent}`);
}

/**
 * Sets values in one layer (merged into what it holds). Refuses (FORBIDDEN)
 * other roles; (INVALID) what SetParamsInput refuses (names, values, over
 * MAX_LAYER_PARAMS in the input), a group clause on anything but labels, a
 * layer that would hold over MAX_LAYER_PARAMS, a new group past
 * MAX_PARAM_GROUPS; (NOT_FOUND) an unknown agent. A change that changes
 * nothing records nothing (undefined).
 */
export function setParams(context: CommandContext, input: unknown): EventDraft<'param.set'> | undefined {
  allow(context, 'admin', 'operator');
  const parsed = parse(SetParamsInput, input);
  const layer = canonicalLayer(parsed.layer);
  checkLayer(context, layer);
  const id = paramLayerId(layer);
  const previous = context.state.get('params', id);
  const held = previous && layerInUse(previous) ? previous.values : {};
  const changed = Object.fromEntries(Object.entries(parsed.values).filter(([key, value]) => held[key] !== value));
  if (Object.keys(changed).length === 0) return undefined;
  const count = new Set([...Object.keys(held), ...Object.keys(changed)]).size;
  if (count > MAX_LAYER_PARAMS) throw new FerryError('INVALID', `values: layer ${id} would hold ${count} parameters, over ${MAX_LAYER_PARAMS}`);
  if ('where' in layer && Object.keys(held).length === 0) {
    const groups = context.all('params').filter((row) => 'where' in row.layer && layerInUse(row)).length;
    if (groups >= MAX_PARAM_GROUPS) throw new FerryError('INVALID', `layer: ${MAX_PARAM_GROUPS} parameter groups are in use; unset one's parameters first`);
  }
  return { action: 'param.set', subject: id, payload: { layer, values: changed } };
}

/** Removes keys from one layer. Refuses (FORBIDDEN) other roles; (INVALID) bad names; (NOT_FOUND) a key the layer does not hold. */
export function unsetParams(context: CommandContext, input: unknown): EventDraft<'param.unset'> {
  allow(context, 'admin', 'operator');
  const parsed = parse(UnsetParamsInput, input);
  const layer = canonicalLayer(parsed.layer);
  const id = paramLayerId(layer);
  const held = context.state.get('params', id)?.values ?? {};
  const missing = parsed.keys.find((key) => !(key in held));
  if (missing !== undefined) throw new FerryError('NOT_FOUND', `keys: ${missing} is not set in layer ${id}`);
  return { action: 'param.unset', subject: id, payload: { layer, keys: parsed.keys } };
}
