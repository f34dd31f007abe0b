/**
 * The live fleet page's browser script, served as /viewer/assets/live.js
 * (client-script.ts; compiled as viewer.browser.ts is, and checked against
 * the same descriptions: protocol/api/viewer-views.ts, types only).
 *
 * It opens one EventSource on /viewer/live/stream with the page's query
 * (a filter and a page of agents: in the URL, `#q=…&offset=N`, so a view
 * can be shared) and redraws the page from each `fleet` message, a whole
 * LiveFleet: no message depends on an earlier one. It only reads: the
 * stream and the page are GETs. An `closed` message (logout, session
 * ended, the coordinator stopping) ends it without reconnecting; a broken
 * connection reconnects on its own (EventSource), and one refused (401,
 * 429) stays closed.
 */
import type { LiveAgent, LiveFleet, LiveGraph } from '../../../protocol/api/viewer-views.js';
import { $, cell, clear, h, idCell, short, when } from './dom.browser.js';

interface Query {
  offset: number;
  limit: number;
  q: string;
}

const body = document.body;
const base = body.dataset.base ?? '/';

let source: EventSource | null = null;
let latest: LiveFleet | null = null;
let updates = 0;

function queryFromHash(): Query {
  const params = new URLSearchParams(window.location.hash.slice(1));
  const offset = Number(params.get('offset'));
  return { offset: Number.isSafeInteger(offset) && offset > 0 ? offset : 0, limit: 100, q: params.get('q') ?? '' };
}
let query = queryFromHash();

function setStatus(state: 'connecting' | 'live' | 'reconnecting' | 'closed', text: string): void {
  const el = $('live-status');
  el.className = 'badge ' + (state === 'live' ? 'ok' : state === 'closed' ? 'broken' : 'pending');
  el.dataset.state = state;
  el.textContent = text;
}

/** (Re)opens the stream for the current query: the first message is the fleet now. */
function connect(): void {
  source?.close();
  const params = new URLSearchParams();
  if (query.offset) params.set('agentOffset', String(query.offset));
  params.set('agentLimit', String(query.limit));
  if (query.q) params.set('agentQuery', query.q);
  setStatus('connecting', 'connecting…');
  const opened = new EventSource(base + 'live/stream?' + params.toString());
  source = opened;
  opened.addEventListener('fleet', (event) => {
    if (source !== opened) return;
    latest = JSON.parse((event as MessageEvent<string>).data) as LiveFleet;
    render(latest);
    setStatus('live', '● live · updated ' + when(latest.at) + ' · audit seq ' + latest.seq);
  });
  opened.addEventListener('closed', (event) => {
    opened.close();
    if (source !== opened) return;
    setStatus('closed', 'stream closed: ' + (JSON.parse((event as MessageEvent<string>).data) as string) + ' · reload the page to reconnect');
  });
  opened.addEventListener('error', () => {
    if (source !== opened) return;
    // CLOSED: refused (no session, too many streams); otherwise the browser reconnects by itself.
    if (opened.readyState === EventSource.CLOSED) setStatus('closed', 'disconnected: the coordinator refused the stream (logged out?) · reload the page to retry');
    else setStatus('reconnecting', 'reconnecting…' + (latest ? ' (showing ' + when(latest.at) + ')' : ''));
  });
}

function setQuery(next: Partial<Query>): void {
  query = { ...query, ...next };
  const params = new URLSearchParams();
  if (query.q) params.set('q', query.q);
  if (query.offset) params.set('offset', String(query.offset));
  const hash = params.toString();
  // replaceState: the query is part of the URL for sharing, not a step of history (and no navigation).
  history.replaceState(null, '', hash ? '#' + hash : window.location.pathname);
  connect();
}

// --- rendering ---------------------------------------------------------------------
const mib = (bytes: number): string => (bytes / 2 ** 20).toFixed(1);

/** How long ago `ms` was, by the coordinator's clock at the reading (`at`): the browser's clock may differ. */
function ago(ms: number | null, at: number): string {
  if (ms === null) return 'never';
  const s = Math.max(0, Math.round((at - ms) / 1000));
  if (s < 90) return s + ' s ago';
  if (s < 90 * 60) return Math.round(s / 60) + ' min ago';
  if (s < 36 * 3600) return Math.round(s / 3600) + ' h ago';
  return Math.round(s / 86400) + ' d ago';
}

function countsText(counts: Partial<Record<string, number>>): string {
  return Object.entries(counts)
    .map(([name, count]) => count + ' ' + name)
    .join(', ');
}

function renderCounts(fleet: LiveFleet): void {
  const c = fleet.counts;
  const thresholds = 'stale after ' + Math.round(fleet.thresholds.staleAfterMs / 1000) + ' s, offline after ' + Math.round(fleet.thresholds.offlineAfterMs / 1000) + ' s without a word';
  clear($('live-counts')).append(
    h('span', null, h('b', null, c.agents), ' agents' + (c.agents ? ' (' + countsText(c.byStatus) + ')' : '')),
    h('span', { id: 'live-presence', title: thresholds }, 'enrolled: ', ['online', 'stale', 'offline'].map((p) => h('span', { class: 'presence-' + p, data: { presence: p } }, h('b', null, c.byPresence[p as keyof typeof c.byPresence] ?? 0), ' ' + p + ' '))),
    h('span', { id: 'live-health' }, h('b', { class: 'health-healthy' }, c.byHealth.healthy), ' healthy, ', h('b', { class: 'health-degraded' }, c.byHealth.degraded), ' degraded, ', h('b', null, c.byHealth.unchecked), ' unchecked'),
  );
}

function graphRow(g: LiveGraph): HTMLElement {
  const total = g.rollout.succeeded + g.rollout.failed + g.rollout.pending + g.rollout.unreported;
  const fetching = g.fetching.agents ? g.fetching.agents + (g.fetching.bytesTotal ? ' · ' + mib(g.fetching.bytesDone) + '/' + mib(g.fetching.bytesTotal) + ' MiB' : '') : '';
  return h(
    'tr',
    { data: { graph: g.id, head: g.head } },
    cell(g.id, 'graph'),
    idCell(g.head, 'head'),
    cell(g.headMessage, 'message'),
    cell(g.following, 'following'),
    h('td', { class: 'succeeded', title: total ? Math.round((100 * g.rollout.succeeded) / total) + '% of ' + total : '' }, String(g.rollout.succeeded)),
    cell(g.rollout.failed, 'failed' + (g.rollout.failed ? ' bad' : '')),
    cell(g.rollout.pending, 'pending'),
    cell(g.rollout.unreported, 'unreported'),
    cell(countsText(g.phases), 'phases'),
    cell(countsText(g.presence), 'presence'),
    cell(g.degraded, 'degraded' + (g.degraded ? ' bad' : '')),
    cell(fetching, 'fetching'),
  );
}

function healthCell(a: LiveAgent, at: number): HTMLElement {
  if (!a.health) return h('td', { class: 'health health-none' }, '-');
  const detail = a.health + ' (config ' + short(a.healthConfig) + (a.healthAt ? ', ' + ago(a.healthAt, at) : '') + ')' + (a.healthReason ? ': ' + a.healthReason : '');
  const reason = a.healthReason ? (a.healthReason.length > 60 ? a.healthReason.slice(0, 60) + '…' : a.healthReason) : '';
  return h('td', { class: 'health health-' + a.health, title: detail, data: { health: a.health } }, h('b', null, a.health), reason ? h('span', { class: 'reason' }, ' ' + reason) : null);
}

function activityText(a: LiveAgent): string {
  const act = a.activity;
  if (!act) return '';
  return act.phase + (act.bytesTotal ? ' ' + mib(act.bytesDone) + '/' + mib(act.bytesTotal) + ' MiB' : '') + (act.objectsTotal ? ' · ' + act.objectsDone + '/' + act.objectsTotal + ' objects' : '');
}

function agentRow(a: LiveAgent, at: number): HTMLElement {
  const recorded = a.recordedPresence && a.recordedPresence !== a.presence ? ' (log: ' + a.recordedPresence + ')' : '';
  return h(
    'tr',
    { data: { agentId: a.id, presence: a.presence } },
    cell(a.name, 'name'),
    idCell(a.id, 'agent'),
    h('td', { class: 'presence presence-' + a.presence, title: a.lastSeen ? 'last heard from ' + when(a.lastSeen) : 'never heard from' }, a.presence + recorded),
    h('td', { class: 'last-seen', title: a.lastSeen ? when(a.lastSeen) : '' }, ago(a.lastSeen, at)),
    healthCell(a, at),
    cell(a.phase ?? (a.status === 'enrolled' ? 'none' : a.status), 'phase phase-' + (a.phase ?? 'none')),
    cell(a.desiredGraph, 'graph'),
    idCell(a.desiredConfig, 'desired'),
    idCell(a.currentConfig, 'current'),
    cell(activityText(a), 'activity'),
    cell(a.lastError, 'last-error' + (a.lastError ? ' bad' : '')),
  );
}

function render(fleet: LiveFleet): void {
  renderCounts(fleet);
  clear($('live-graphs').querySelector('tbody')!).append(...fleet.graphs.rows.map(graphRow));
  $('live-graphs-meta').textContent =
    fleet.graphs.total === 0 ? 'no graphs yet' : fleet.graphs.rows.length < fleet.graphs.total ? 'the first ' + fleet.graphs.rows.length + ' of ' + fleet.graphs.total + ' graphs' : '';
  const a = fleet.agents;
  clear($('live-agents').querySelector('tbody')!).append(...a.rows.map((agent) => agentRow(agent, fleet.at)));
  $('live-agents-meta').textContent = a.matching === 0 ? 'no agents' + (query.q ? ' match' : '') : 'agents ' + (a.offset + 1) + '–' + (a.offset + a.rows.length) + ' of ' + a.matching + (a.matching < a.total ? ' matching (' + a.total + ' in all)' : '');
  $<HTMLButtonElement>('live-prev').disabled = a.offset === 0;
  $<HTMLButtonElement>('live-next').disabled = a.offset + a.rows.length >= a.matching;
  // What the tests and the curious read: which reading is shown, and how many have been.
  updates++;
  body.dataset.liveSeq = String(fleet.seq);
  body.dataset.liveUpdates = String(updates);
}

// --- controls ------------------------------------------------------------------------
const filter = $<HTMLInputElement>('live-query');
filter.value = query.q;
filter.addEventListener('change', () => setQuery({ q: filter.value.trim(), offset: 0 }));
$('live-prev').addEventListener('click', () => setQuery({ offset: Math.max(0, query.offset - query.limit) }));
$('live-next').addEventListener('click', () => setQuery({ offset: query.offset + query.limit }));
window.addEventListener('hashchange', () => {
  query = queryFromHash();
  filter.value = query.q;
  connect();
});
// Pages the browser keeps in its back-forward cache must not hold a stream meanwhile.
window.addEventListener('pagehide', () => source?.close());
window.addEventListener('pageshow', (event) => {
  if (event.persisted) connect();
});

connect();
