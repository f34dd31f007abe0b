/**
 * Per-machine parameters resolved (docs/secrets.md, "Per-machine
 * parameters"): an agent's effective values are its graph's defaults, then
 * each label-selected group its operator labels match (in the order the
 * groups were created), then its own; a later layer replaces an earlier
 * one's value. A pure function of state rows, so the desired answer, the
 * watch and `ferry agents show` cannot disagree.
 */
import { FerryError } from '../../protocol/errors.js';
import { resolveParams, type EffectiveParam, type ParamLayer, type ParamSource } from '../../protocol/api/params.js';
import { labelsMatch, parseWhere, type WhereClause } from './selectors.js';
import type { AgentRow, ParamRow } from './state.js';

/**
 * A group's clauses, parsed; refuses (INVALID) a clause that does not
 * parse or that names anything but operator labels: an agent's facts and
 * fields are its own word, and a parameter is what the operator says the
 * machine gets (as for rules, coordinator/domain/rules.ts).
 */
export function parseGroupWhere(where: readonly string[]): WhereClause[] {
  const clauses = parseWhere(where);
  for (const clause of clauses) {
    if (clause.source !== 'labels') throw new FerryError('INVALID', `--where ${JSON.stringify(clause.text)}: a parameter group selects on operator labels only (labels.KEY…)`);
  }
  return clauses;
}

/** A group's clauses, or undefined when they no longer parse (a later, stricter parser): such a group matches nothing. */
function groupClauses(where: readonly string[]): WhereClause[] | undefined {
  try {
    return parseGroupWhere(where);
  } catch {
    return undefined;
  }
}

/** Whether a layer row holds any value (an emptied layer applies nothing). */
export function layerInUse(row: ParamRow): boolean {
  return Object.keys(row.values).length > 0;
}

/** How resolution reads the layers: by id (a graph's, an agent's), and the groups in use, oldest first. */
export interface ParamLayers {
  get(id: string): ParamRow | undefined;
  groups(): readonly ParamRow[];
}

/** The groups in use among `rows`, oldest first: what ParamLayers.groups answers. */
export function groupsOf(rows: readonly ParamRow[]): ParamRow[] {
  return rows.filter((row) => 'where' in row.layer && layerInUse(row)).sort((a, b) => a.createdSeq - b.createdSeq);
}

/**
 * `agent`'s effective parameters, each with the layer it came from
 * (protocol/api/params.ts resolveParams): the graph it follows (also when
 * pinned: the pin is a config of it), each group its labels match, oldest
 * first, then its own.
 */
export function effectiveParams(layers: ParamLayers, agent: AgentRow): EffectiveParam[] {
  const found: { source: ParamSource; values: Record<string, string> }[] = [];
  const graph = agent.desiredGraph ? layers.get(`graph:${agent.desiredGraph}`) : undefined;
  if (graph && agent.desiredGraph) found.push({ source: { layer: 'graph', graph: agent.desiredGraph }, values: graph.values });
  for (const group of layers.groups()) {
    if (!('where' in group.layer)) continue;
    const clauses = groupClauses(group.layer.where);
    if (clauses && labelsMatch(agent.labels, clauses)) found.push({ source: { layer: 'group', where: group.layer.where }, values: group.values });
  }
  const own = layers.get(`agent:${agent.id}`);
  if (own) found.push({ source: { layer: 'agent' }, values: own.values });
  return resolveParams(found);
}

/** Effective parameters as the desired answer carries them (key → value), or undefined when there are none. */
export function paramsMap(effective: readonly EffectiveParam[]): Record<string, string> | undefined {
  return effective.length === 0 ? undefined : Object.fromEntries(effective.map(({ key, value }) => [key, value]));
}

/** A layer as given, canonical: a group's clauses sorted (the same group however they were ordered on the command line). */
export function canonicalLayer(layer: ParamLayer): ParamLayer {
  return 'where' in layer ? { where: [...layer.where].sort() } : layer;
}
