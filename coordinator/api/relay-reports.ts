/**
 * What agents report of their relays (`ferry relays ls`): derived, when
 * asked, from the events of their activity the coordinator keeps in memory
 * (api/agent-activity.ts: each agent's last events, since this coordinator
 * process started). An agent records `relay` when it fetched through one,
 * `relay-failed` when one failed it and `relay-dropped` when it stopped
 * using one for a while (agent/agent.ts), each naming the relay's id in
 * parentheses.
 *
 * The agents' word, so it decides nothing, and an agent's events count only
 * for a relay the coordinator assigned it now (relaysOf): an agent cannot
 * put failures on a relay that does not serve it. Costs a look at each
 * reporting agent's few events per listing, nothing while nobody asks.
 */
import type { RelayReports } from '../../protocol/api/views.js';
import type { Coordinator } from '../coordinator.js';
import { agentActivities } from './agent-activity.js';
import { relaysOf } from './relay-access.js';

/** How far back (by the events' own times) the reports reach. */
export const RELAY_REPORT_WINDOW_MS = 24 * 60 * 60 * 1000;

/** The relay id an agent's relay event names: `relay <url> (<id>) …`. */
const RELAY_ID_IN_MESSAGE = /\(([0-9a-f]{64})\)/;

/** The reports of every relay agents reported on in the window (a relay none did is absent: emptyRelayReports). */
export function relayReports(coordinator: Coordinator, now = coordinator.now()): Map<string, RelayReports> {
  const since = now - RELAY_REPORT_WINDOW_MS;
  const reports = new Map<string, RelayReports & { served: Set<string> }>();
  for (const [agentId, activity] of agentActivities(coordinator)) {
    const events = activity.events.filter((event) => event.kind.startsWith('relay') && event.at >= since);
    if (events.length === 0) continue;
    const agent = coordinator.state.get('agents', agentId);
    if (!agent) continue;
    const assigned = new Set(relaysOf(coordinator, agent).map((relay) => relay.id));
    for (const event of events) {
      const relayId = RELAY_ID_IN_MESSAGE.exec(event.message)?.[1];
      if (!relayId || !assigned.has(relayId)) continue;
      let report = reports.get(relayId);
      if (!report) reports.set(relayId, (report = { ...emptyRelayReports(), served: new Set() }));
      if (event.kind === 'relay') report.served.add(agentId);
      else if (event.kind === 'relay-failed' || event.kind === 'relay-dropped') {
        if (event.kind === 'relay-failed') report.failures++;
        else report.drops++;
        if (!report.lastFailure || event.at > report.lastFailure.at) report.lastFailure = { agentId: agent.id as NonNullable<RelayReports['lastFailure']>['agentId'], at: event.at, message: event.message };
      }
    }
  }
  const result = new Map<string, RelayReports>();
  for (const [relayId, { served, ...report }] of reports) result.set(relayId, { ...report, agentsServed: served.size });
  return result;
}

export function emptyRelayReports(): RelayReports {
  return { agentsServed: 0, failures: 0, drops: 0, lastFailure: null };
}
