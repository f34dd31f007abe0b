/**
 * The coordinator's reader of parameter layers (domain/params.ts
 * ParamLayers): a graph's and an agent's layer by id from the state, the
 * groups (at most MAX_PARAM_GROUPS) kept in memory until the next
 * param.* event, so resolving an agent's parameters for its desired answer
 * does not read the whole table (it has a row per agent with its own).
 */
import type { Coordinator } from '../coordinator.js';
import { effectiveParams, groupsOf, paramsMap, type ParamLayers } from '../domain/params.js';
import type { AgentRow, ParamRow } from '../domain/state.js';
import type { EffectiveParam } from '../../protocol/api/params.js';

const readers = new WeakMap<Coordinator, ParamLayers>();

/** The layers of `coordinator`'s state (one reader per coordinator, its groups cache cleared by each param.* event). */
export function paramLayers(coordinator: Coordinator): ParamLayers {
  let reader = readers.get(coordinator);
  if (!reader) {
    let groups: ParamRow[] | undefined;
    coordinator.commits.subscribe((event) => {
      if (event.action === 'param.set' || event.action === 'param.unset') groups = undefined;
    });
    reader = {
      get: (id) => coordinator.state.get('params', id),
      groups: () => (groups ??= groupsOf(coordinator.state.all('params'))),
    };
    readers.set(coordinator, reader);
  }
  return reader;
}

/** `agent`'s effective parameters with their layers (`ferry agents show`). */
export function agentParams(coordinator: Coordinator, agent: AgentRow): EffectiveParam[] {
  return effectiveParams(paramLayers(coordinator), agent);
}

/** `agent`'s effective parameters as its desired answer carries them; undefined: none. */
export function agentDesiredParams(coordinator: Coordinator, agent: AgentRow): Record<string, string> | undefined {
  return paramsMap(agentParams(coordinator, agent));
}
