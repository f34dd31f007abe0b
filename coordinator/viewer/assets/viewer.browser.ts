/**
 * The viewer's browser script, served as /viewer/assets/viewer.js (a
 * classic script: client-script.ts). Checked by tsc against the shapes the
 * viewer's API returns (tsconfig.browser.json: the DOM, and the types of
 * its description, protocol/api/viewer-views.ts, imported as types only), compiled by esbuild (nix/runnable-module.ts:
 * by the build into build/, from the sources when the coordinator runs from
 * them). No dependencies.
 *
 * It only calls the JSON endpoints under /viewer/api/ and builds the page
 * with DOM calls (textContent, never innerHTML), so nothing in a payload is
 * ever markup. The position lives in the URL (`#seq=N`), so a view can be
 * shared.
 */
import type {
  ConfigAggregate,
  EventDetail,
  EventVerification,
  FieldChange,
  FleetAgent,
  FleetConfig,
  FleetGraph,
  FleetToken,
  HeadMove,
  KeyRow,
  RowChange,
  StateResult,
  TimelineEntry,
  TimelinePage,
  VerificationStatus,
  ViewerInfo,
} from '../../../protocol/api/viewer-views.js';
import type { ViewerOutput } from '../../../protocol/api/viewer-routes.js';
import type { ConfigDiff, SystemDiff } from '../../../protocol/api/config-diff.js';
import { $, append, cell, clear, h, idCell, short, table, when, type Child } from './dom.browser.js';

/** What the API answers at each path (VIEWER_ROUTES; events/N: EventDetail). */
interface ApiReplies {
  info: ViewerOutput<'viewer.info'>;
  events: ViewerOutput<'viewer.events'>;
  state: ViewerOutput<'viewer.state'>;
  verify: ViewerOutput<'viewer.verify'>;
}

/** A request that failed, shown in place of what it would have shown. */
interface Failed {
  error: string;
}

type Params = Record<string, string | number | undefined | null>;

interface App {
  info: ViewerInfo | null;
  seq: number;
  /** Bumped per `go`: an answer for an older position is dropped. */
  token: number;
  playing: boolean;
  playTimer: ReturnType<typeof setTimeout> | undefined;
  filter: Params;
  page: TimelinePage | null;
  agentOffset: number;
  agentQuery: string;
  agentLimit: number;
}

const body = document.body;
const base = body.dataset.base ?? '/';
const live = body.dataset.mode === 'live';


const app: App = { info: null, seq: 0, token: 0, playing: false, playTimer: undefined, filter: {}, page: null, agentOffset: 0, agentQuery: '', agentLimit: 100 };

function show(value: unknown): string {
  if (value === null || value === undefined) return '—';
  return typeof value === 'string' ? value : JSON.stringify(value);
}
/** A collapsed section whose content is built when first opened (keeps each position's page small). */
function lazy(summary: string, build: () => Child): HTMLElement {
  const details = h('details', null, h('summary', null, summary)) as HTMLDetailsElement;
  details.addEventListener('toggle', () => {
    if (details.open && !details.dataset.built) {
      details.dataset.built = '1';
      append(details, build());
    }
  });
  return details;
}

// --- API ---------------------------------------------------------------------
function request<T>(path: string, params?: Params): Promise<T> {
  const search = new URLSearchParams();
  if (params) {
    for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') search.append(k, String(v));
  }
  const qs = search.toString();
  return fetch(base + 'api/' + path + (qs ? '?' + qs : ''), { credentials: 'same-origin', headers: { accept: 'application/json' } }).then((response) =>
    response
      .json()
      .catch(() => ({}))
      .then((data: { error?: { message: string } }) => {
        if (response.status === 401) window.location.reload();
        if (!response.ok) throw new Error(data && data.error ? data.error.message : 'HTTP ' + response.status);
        return data as T;
      }),
  );
}
function api<P extends keyof ApiReplies>(path: P, params?: Params): Promise<ApiReplies[P]> {
  return request<ApiReplies[P]>(path, params);
}
function errorOf(e: unknown): Failed {
  return { error: e instanceof Error ? e.message : String(e) };
}

// --- closure diffs (live only) ------------------------------------------------
function bytesText(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return (unit === 0 ? String(value) : value.toFixed(1)) + ' ' + units[unit];
}

function renderSystemDiff(s: SystemDiff): HTMLElement {
  const f = s.fetch;
  return h(
    'div',
    { class: 'system-diff', data: { system: s.system } },
    h('div', null, h('b', null, s.system), ': ', h('code', null, s.fromTarget ?? '∅'), ' → ', h('code', null, s.toTarget ?? '∅')),
    // The lines of `nix store diff-closures`, as text nodes.
    h('pre', { class: 'diff-lines' }, s.packages.length ? s.packages.map((p) => p.line).join('\n') : '(no package listed)'),
    s.truncated ? h('div', null, '… ' + (s.packageCount - s.packages.length) + ' more packages (ferry config diff --limit)') : null,
    h(
      'div',
      { class: 'diff-summary' },
      'closure: ' + s.before.paths + ' paths, ' + bytesText(s.before.narSize) + ' → ' + s.after.paths + ' paths, ' + bytesText(s.after.narSize) + '; store paths +' + s.addedPaths + ' −' + s.removedPaths +
        (s.unlistedChanged ? '; ' + s.unlistedChanged + ' rebuilt package(s) not listed' : ''),
    ),
    h(
      'div',
      { class: 'diff-fetch', title: 'File bytes, uncompressed, before group deltas: an upper bound' },
      'an agent running the parent fetches ' + f.newBlobs + ' new files, ' + bytesText(f.newBytes) + '; ' + bytesText(f.withTemplates.bytes) + ' with reference-aware dedup (' + f.withTemplates.restoredBlobs + ' restored)',
    ),
  );
}

/** A config's closure diff against its parent, asked for when opened. */
function configDiffSection(configId: string): HTMLElement {
  return lazy('changes', () => {
    const box = h('div', { class: 'config-diff', data: { configId } }, 'loading…');
    request<ConfigDiff>('configs/' + encodeURIComponent(configId) + '/diff').then(
      (diff) => {
        clear(box);
        if (diff.from === null) append(box, h('div', null, 'first config of its graph: compared with nothing'));
        append(box, diff.systems.map(renderSystemDiff));
        if (diff.omittedSystems) append(box, h('div', null, diff.omittedSystems + ' more system(s): ferry config diff --system'));
        box.dataset.loaded = '1';
      },
      (e: unknown) => {
        clear(box);
        append(box, h('span', { class: 'error' }, errorOf(e).error));
      },
    );
    return box;
  });
}

// --- verification (always visible) -------------------------------------------
function renderVerification(v: VerificationStatus): void {
  const el = $('verification');
  el.className = 'badge ' + (!v.ok ? 'broken' : v.verifiedThrough < v.lastSeq ? 'pending' : 'ok');
  const cp = v.lastCheckpoint ? 'last signed checkpoint: seq ' + v.lastCheckpoint.seq : 'no signed checkpoint yet';
  let text;
  if (!v.ok) {
    text = '✘ BROKEN at seq ' + v.firstBad!.seq + ': ' + v.firstBad!.reason + ' · chain verified through seq ' + v.verifiedThrough + ' · ' + cp;
  } else {
    text = '✔ chain verified through seq ' + v.verifiedThrough + ' · ' + cp;
    if (v.lastSeq > v.verifiedThrough) text += ' · ' + (v.lastSeq - v.verifiedThrough) + ' newer event(s) not verified yet';
  }
  el.textContent = text + ' · checked ' + when(v.checkedAt);
  el.dataset.ok = String(v.ok);
  el.dataset.brokenSeq = v.firstBad ? String(v.firstBad.seq) : '';
  el.dataset.verifiedThrough = String(v.verifiedThrough);
  el.title = v.firstBad ? 'Go to the first broken event' : '';
  const firstBad = v.firstBad;
  el.onclick = firstBad ? () => void go(firstBad.seq) : null;
}

function setInfo(info: ViewerInfo): void {
  app.info = info;
  $<HTMLInputElement>('scrubber').max = String(info.lastSeq);
  renderVerification(info.verification);
  const stop = $('replay-stop');
  if (info.stoppedAt) {
    stop.hidden = false;
    stop.textContent = 'Replay stops at event ' + info.stoppedAt.seq + ': ' + info.stoppedAt.message + '. Positions after ' + info.replayableThrough + ' cannot be reconstructed.';
  } else {
    stop.hidden = true;
  }
}

// --- position ------------------------------------------------------------------
function hashSeq(): number | null {
  const match = /(?:^#|&)seq=(\d+)/.exec(window.location.hash);
  return match ? Number(match[1]) : null;
}

function positionText(result: StateResult | Failed, seq: number): string {
  const total = app.info!.lastSeq;
  if (seq === 0) return 'position 0 of ' + total + ' (before the first event)';
  const p = 'position' in result ? result.position : null;
  return 'position ' + seq + ' of ' + total + (p ? ' · ' + p.action + ' · ' + when(p.wallTime) + ' · HLC ' + p.hlc : '');
}

function go(target: number, options: { replace?: boolean } = {}): Promise<void> {
  if (!app.info) return Promise.resolve();
  const seq = Math.max(0, Math.min(app.info.lastSeq, Math.floor(Number(target))));
  if (isNaN(seq)) return Promise.resolve();
  app.seq = seq;
  const token = ++app.token;
  const started = performance.now();
  $<HTMLInputElement>('scrubber').value = String(seq);
  $('position').textContent = 'loading position ' + seq + '…';
  const hash = '#seq=' + seq;
  if (window.location.hash !== hash) {
    if (options.replace) history.replaceState(null, '', hash);
    else history.pushState(null, '', hash);
  }
  body.removeAttribute('data-rendered-seq');
  // The event first: the server replays to seq - 1 and applies it, leaving its replay at seq for the state.
  const detail: Promise<EventDetail | Failed | null> = seq > 0 ? request<EventDetail>('events/' + seq).catch(errorOf) : Promise.resolve(null);
  const state: Promise<StateResult | Failed> = api('state', { at: seq, agentOffset: app.agentOffset, agentLimit: app.agentLimit, agentQuery: app.agentQuery }).catch(errorOf);
  const timeline = needTimeline(seq) ? loadTimeline({ around: seq }) : Promise.resolve();
  return Promise.all([state, detail, timeline]).then(([stateResult, eventResult]) => {
    if (token !== app.token) return;
    const fetched = performance.now();
    renderState(stateResult, seq);
    renderEvent(eventResult, seq);
    markCurrent(true);
    $('position').textContent = 'error' in stateResult ? 'position ' + seq + ': ' + stateResult.error : positionText(stateResult, seq);
    // Timings of this position (the benchmark reads them): fetching, then building the page.
    body.dataset.fetchMs = String(Math.round(fetched - started));
    body.dataset.renderMs = String(Math.round(performance.now() - fetched));
    body.dataset.renderedSeq = String(seq);
  });
}

// --- timeline ------------------------------------------------------------------
function needTimeline(seq: number): boolean {
  const page = app.page;
  if (!page) return true;
  if (page.entries.length === 0) return false;
  return seq < page.entries[0]!.seq - 1 || seq > page.entries[page.entries.length - 1]!.seq;
}

function loadTimeline(pageRequest: Params): Promise<void> {
  const params = Object.assign({ limit: 100 }, app.filter, pageRequest);
  return api('events', params).then(
    (page) => {
      app.page = page;
      renderTimeline();
    },
    (e: Error) => {
      app.page = { entries: [], total: 0, hasOlder: false, hasNewer: false };
      clear($('timeline'));
      $('timeline-meta').textContent = 'timeline: ' + e.message;
    },
  );
}

function renderTimeline(): void {
  const list = clear($('timeline'));
  const page = app.page!;
  const v = app.info!.verification;
  page.entries.forEach((e: TimelineEntry) => {
    const cls = [];
    if (v.firstBad && e.seq === v.firstBad.seq) cls.push('broken');
    else if (v.firstBad && e.seq > v.firstBad.seq) cls.push('after-break');
    list.appendChild(
      h(
        'li',
        { class: cls.join(' '), data: { seq: String(e.seq) }, title: e.subject, onclick: () => void go(e.seq) },
        h('span', { class: 'seq' }, '#' + e.seq),
        h('div', null, h('span', { class: 'what' }, e.action), ' ', h('span', { class: 'summary' }, e.summary)),
        h('span', { class: 'meta' }, when(e.wallTime) + ' · ' + e.actorRole + ' ' + short(e.actorKey)),
      ),
    );
  });
  const filtered = Object.keys(app.filter).length > 0;
  $('timeline-meta').textContent = page.total + (filtered ? ' matching event(s)' : ' event(s)') + (page.entries.length ? ' · showing #' + page.entries[0]!.seq + '–#' + page.entries[page.entries.length - 1]!.seq : '');
  $<HTMLButtonElement>('older').disabled = !page.hasOlder;
  $<HTMLButtonElement>('newer').disabled = !page.hasNewer;
  markCurrent(true);
}

function markCurrent(scroll: boolean): void {
  const items = $('timeline').children;
  for (let i = 0; i < items.length; i++) {
    const item = items[i] as HTMLElement;
    const current = Number(item.dataset.seq) === app.seq;
    item.classList.toggle('current', current);
    if (current && scroll) item.scrollIntoView({ block: 'nearest' });
  }
}

// --- event detail ----------------------------------------------------------------
function verificationText(v: EventVerification): string {
  if (v.state === 'verified') return 'verified in the hash chain' + (v.coveredByCheckpoint ? ', covered by the signed checkpoint at seq ' + v.coveredByCheckpoint : ', not yet covered by a signed checkpoint');
  if (v.state === 'broken') return 'BROKEN: ' + v.reason;
  if (v.state === 'after-break') return 'UNVERIFIED: after the break at seq ' + v.brokenAt;
  return 'not verified yet (appended since the last check)';
}

function renderEvent(detail: EventDetail | Failed | null, seq: number): void {
  const el = clear($('event'));
  if (seq === 0) {
    el.appendChild(h('p', null, 'Position 0: before the first event (the empty state).'));
    return;
  }
  if (!detail || 'error' in detail) {
    el.appendChild(h('p', { class: 'error' }, 'Event ' + seq + ': ' + (detail ? detail.error : 'unavailable')));
    return;
  }
  const e = detail.event;
  const v = detail.verification;
  const fields: [string, Child][] = [
    ['who', e.actorRole + (detail.actorName ? ' ' + detail.actorName : '') + ' · ' + e.actorKey],
    ['what', e.action + ' · ' + e.subject],
    ['when (HLC)', e.hlc],
    ['when (wall)', when(e.wallTime)],
    ['chain', h('span', { id: 'event-verification', class: 'status-' + v.state, data: { state: v.state } }, verificationText(v))],
    ['request signature', detail.requestSignature ? 'recorded (' + detail.requestSignature.slice(0, 16) + '…) and hashed into the chain' : 'none (not recorded from a signed request: the coordinator itself, or in-process)'],
  ];
  const configSignature = detail.configSignature;
  if (configSignature) {
    fields.push(['config signature', h('span', { class: configSignature.valid ? 'status-verified' : 'status-broken' }, (configSignature.valid ? '✔ ' : '✘ ') + configSignature.reason + ' (' + short(configSignature.author) + ')')]);
  }
  fields.push(['hash', h('code', { title: e.hash }, short(e.hash) + '… (prev ' + short(e.prevHash) + '…)')]);
  el.appendChild(h('h3', { id: 'event-title' }, '#' + e.seq + ' ' + e.action));
  el.appendChild(h('p', { class: 'summary' }, detail.entry.summary));
  el.appendChild(h('dl', { class: 'fields' }, fields.map((f) => [h('dt', null, f[0]), h('dd', null, f[1])])));
  el.appendChild(h('h3', null, 'What it changed'));
  const diff = h('div', { class: 'diff', id: 'diff' });
  if (!detail.diff) diff.appendChild(h('p', { class: 'warning' }, 'Cannot replay this event: ' + detail.replayProblem));
  else if (detail.diff.length === 0) diff.appendChild(h('p', null, 'No state rows changed (e.g. a push: the castore holds the paths; the log records who and what).'));
  else
    detail.diff.forEach((change: RowChange) => {
      diff.appendChild(
        h(
          'div',
          { class: 'row kind-' + change.kind, data: { table: change.table, id: change.id } },
          h('div', null, h('b', null, change.table), ' ', h('code', { title: change.id }, change.id.length > 24 ? short(change.id) + '…' + change.id.slice(-4) : change.id), ' — ' + change.kind),
          change.fields.length
            ? table(
                ['field', 'before', 'after'],
                change.fields.map((f: FieldChange) => h('tr', null, h('td', null, f.field), h('td', { class: 'before' }, change.kind === 'added' ? '—' : show(f.before)), h('td', { class: 'after' }, show(f.after)))),
              )
            : null,
        ),
      );
    });
  el.appendChild(diff);
  el.appendChild(h('h3', null, 'Payload'));
  el.appendChild(h('pre', { id: 'payload' }, JSON.stringify(e.payload, null, 2)));
}

// --- fleet state -----------------------------------------------------------------
/** An agent's health as last recorded (of the config it runs: the reducer forgets it when that changes), its reason on hover. */
function healthCell(agent: FleetAgent): HTMLElement {
  const health = agent.health;
  const title = health ? health + (agent.healthReason ? ': ' + agent.healthReason : '') + (agent.healthAt ? ' (' + when(agent.healthAt) + ')' : '') : '';
  return h('td', { class: 'health health-' + (health ?? 'none'), title }, health ?? '-');
}
function renderState(result: StateResult | Failed, seq: number): void {
  const el = clear($('state'));
  $('state-title').textContent = seq === 0 ? 'Fleet before the first event' : 'Fleet after event ' + seq;
  if ('error' in result) {
    el.appendChild(h('p', { class: 'error', id: 'state-error' }, result.error));
    return;
  }
  const s = result.state;
  const byStatus = Object.entries(s.counts.agentsByStatus)
    .map(([status, count]) => count + ' ' + status)
    .join(', ');
  el.appendChild(
    h(
      'div',
      { class: 'counts', id: 'counts' },
      h('span', null, h('b', null, s.counts.agents), ' agents' + (byStatus ? ' (' + byStatus + ')' : '')),
      h('span', null, h('b', null, s.counts.graphs), ' graphs'),
      h('span', null, h('b', null, s.counts.configs), ' configs'),
      h('span', null, h('b', null, s.counts.keys), ' keys'),
      h('span', null, h('b', null, s.counts.tokens), ' tokens'),
      h('span', null, h('b', null, s.counts.agentFacts), ' facts revisions'),
    ),
  );

  // Agents
  el.appendChild(h('h3', null, 'Agents'));
  const filter = h('input', { type: 'search', id: 'agent-query', placeholder: 'filter agents', value: app.agentQuery }) as HTMLInputElement;
  filter.addEventListener('change', () => {
    app.agentQuery = filter.value;
    app.agentOffset = 0;
    void go(app.seq, { replace: true });
  });
  const a = s.agents;
  const pager = h(
    'div',
    { class: 'pager' },
    filter,
    h('span', null, a.matching === 0 ? 'no agents' : 'agents ' + (a.offset + 1) + '–' + (a.offset + a.rows.length) + ' of ' + a.matching),
    h(
      'button',
      {
        type: 'button',
        disabled: a.offset === 0,
        onclick: () => {
          app.agentOffset = Math.max(0, a.offset - app.agentLimit);
          void go(app.seq, { replace: true });
        },
      },
      '◀',
    ),
    h(
      'button',
      {
        type: 'button',
        disabled: a.offset + a.rows.length >= a.matching,
        onclick: () => {
          app.agentOffset = a.offset + app.agentLimit;
          void go(app.seq, { replace: true });
        },
      },
      '▶',
    ),
  );
  el.appendChild(pager);
  el.appendChild(
    table(
      ['name', 'id', 'status', 'system', 'graph', 'pinned', 'desired', 'current', 'phase', 'presence', 'health', 'last error', 'facts'],
      a.rows.map((agent: FleetAgent) =>
        h(
          'tr',
          { data: { agentId: agent.id } },
          cell(agent.name, 'name'),
          idCell(agent.id, 'agent'),
          cell(agent.status, 'status'),
          cell(agent.system, 'system'),
          cell(agent.desiredGraph, 'graph'),
          idCell(agent.pinnedConfig, 'pinned'),
          idCell(agent.desiredConfig, 'desired'),
          idCell(agent.currentConfig, 'current'),
          cell(agent.phase, 'phase phase-' + agent.phase),
          // As the log recorded it by then (agent.presence events); the live page shows presence derived now.
          cell(agent.recordedPresence, 'presence presence-' + agent.recordedPresence),
          healthCell(agent),
          cell(agent.lastError, 'error'),
          h('td', { class: 'facts' }, agent.facts ? lazy('rev ' + agent.factsRevision, () => h('pre', null, JSON.stringify(agent.facts, null, 2))) : '-'),
        ),
      ),
      { id: 'agents' },
    ),
  );

  // Graphs
  el.appendChild(h('h3', null, 'Graphs'));
  if (s.graphs.length === 0) el.appendChild(h('p', null, 'no graphs yet'));
  s.graphs.forEach((graph: FleetGraph) => {
    el.appendChild(
      h(
        'div',
        { class: 'graph', data: { graph: graph.id, head: graph.head } },
        h('div', null, h('b', null, 'graph ' + graph.id), ' head ', h('code', { class: 'head', title: graph.head }, short(graph.head)), ' (since seq ' + graph.updatedSeq + ', ' + graph.configCount + ' config(s))'),
        table(
          ['config', 'seq', 'message', '', live ? 'changes (closure diff against its parent)' : ''],
          graph.history.map((c: FleetConfig) =>
            h(
              'tr',
              null,
              idCell(c.id),
              cell(c.seq),
              cell(c.message),
              h('td', { class: 'head-marker' }, (c.head ? 'HEAD' : '') + (c.forced ? ' forced' : '')),
              // From the coordinator's castore, not the log: a running coordinator only.
              live ? h('td', { class: 'config-diff-cell' }, configDiffSection(c.id)) : h('td', null),
            ),
          ),
        ),
        graph.headMoves.length
          ? lazy('head moves (' + graph.headMoves.length + ')', () =>
              h(
                'ul',
                null,
                graph.headMoves.map((m: HeadMove) => h('li', null, h('a', { href: '#seq=' + m.seq }, '#' + m.seq), ' ' + m.action + ' ' + short(m.from) + ' → ' + short(m.to))),
              ),
            )
          : null,
      ),
    );
  });

  // Per-config aggregates
  el.appendChild(h('h3', null, 'Per-config rollout'));
  el.appendChild(
    table(
      ['config', 'graph', 'seq', 'head', 'succeeded', 'failed', 'pending', 'unreported'],
      s.configs.rows.map((c: ConfigAggregate) =>
        h(
          'tr',
          { data: { configId: c.id } },
          idCell(c.id),
          cell(c.graph),
          cell(c.seq),
          cell(c.head ? 'yes' : ''),
          cell(c.summary.succeeded, 'succeeded'),
          cell(c.summary.failed, 'failed'),
          cell(c.summary.pending, 'pending'),
          cell(c.summary.unreported, 'unreported'),
        ),
      ),
      { id: 'configs' },
    ),
  );

  // Keys and tokens
  el.appendChild(
    lazy('Keys (' + s.counts.keys + (s.keys.length < s.counts.keys ? ', first ' + s.keys.length : '') + ')', () =>
      table(
        ['key', 'role', 'label', 'revoked', 'added'],
        s.keys.map((k: KeyRow) => h('tr', null, idCell(k.id), cell(k.role), cell(k.label), cell(k.revoked ? 'revoked' : ''), cell(k.addedSeq))),
      ),
    ),
  );
  el.appendChild(
    lazy('Tokens (' + s.counts.tokens + (s.tokens.length < s.counts.tokens ? ', first ' + s.tokens.length : '') + ')', () =>
      table(
        ['token', 'label', 'uses left', 'auto-approve', 'expires', 'revoked'],
        s.tokens.map((t: FleetToken) => h('tr', null, cell(t.id, 'id'), cell(t.label), cell(t.usesLeft), cell(t.autoApprove ? 'yes' : ''), cell(when(t.expiresAt)), cell(t.revoked ? 'revoked' : ''))),
      ),
    ),
  );
}

// --- replay controls ------------------------------------------------------------------
function pause(): void {
  app.playing = false;
  clearTimeout(app.playTimer);
  $('play').textContent = '▶ Play';
}
function play(): void {
  if (app.playing) {
    pause();
    return;
  }
  app.playing = true;
  $('play').textContent = '❚❚ Pause';
  (function step() {
    if (!app.playing) return;
    if (app.seq >= app.info!.replayableThrough) {
      pause();
      return;
    }
    void go(app.seq + 1, { replace: true }).then(() => {
      if (app.playing) app.playTimer = setTimeout(step, Number($<HTMLSelectElement>('speed').value));
    });
  })();
}

const scrubber = $<HTMLInputElement>('scrubber');
$('first').addEventListener('click', () => {
  pause();
  void go(0);
});
$('back').addEventListener('click', () => {
  pause();
  void go(app.seq - 1);
});
$('forward').addEventListener('click', () => {
  pause();
  void go(app.seq + 1);
});
$('last').addEventListener('click', () => {
  pause();
  void go(app.info!.lastSeq);
});
$('play').addEventListener('click', play);
scrubber.addEventListener('input', () => {
  $('position').textContent = 'go to position ' + scrubber.value;
});
scrubber.addEventListener('change', () => {
  pause();
  void go(Number(scrubber.value));
});
$('goto').addEventListener('submit', (event) => {
  event.preventDefault();
  const value = $<HTMLInputElement>('goto-input').value.trim();
  pause();
  if (/^\d+$/.test(value)) {
    void go(Number(value));
    return;
  }
  api('state', { at: value, agentLimit: 1 }).then(
    (result) => void go(result.seq),
    (e: Error) => {
      $('position').textContent = e.message;
    },
  );
});
document.addEventListener('keydown', (event) => {
  const tag = event.target instanceof Element ? event.target.tagName : undefined;
  if (tag === 'INPUT' || tag === 'SELECT' || tag === 'TEXTAREA') return;
  if (event.key === 'ArrowLeft') {
    pause();
    void go(app.seq - 1);
  } else if (event.key === 'ArrowRight') {
    pause();
    void go(app.seq + 1);
  } else if (event.key === ' ') {
    event.preventDefault();
    play();
  } else if (event.key === 'Home') {
    pause();
    void go(0);
  } else if (event.key === 'End') {
    pause();
    void go(app.info!.lastSeq);
  }
});
function followHash(): void {
  const seq = hashSeq();
  if (seq !== null && seq !== app.seq) void go(seq, { replace: true });
}
window.addEventListener('popstate', followHash);
window.addEventListener('hashchange', followHash);

// --- filters ----------------------------------------------------------------------------
const filters = $<HTMLFormElement>('filters');
filters.addEventListener('submit', (event) => {
  event.preventDefault();
  const form = new FormData(filters);
  const filter: Params = {};
  for (const name of ['actor', 'action', 'agent', 'graph', 'q']) {
    const v = String(form.get(name) || '').trim();
    if (v) filter[name] = v;
  }
  for (const name of ['from', 'to']) {
    const v = String(form.get(name) || '');
    if (v) {
      const ms = new Date(v).getTime();
      if (!isNaN(ms)) filter[name] = ms;
    }
  }
  app.filter = filter;
  void loadTimeline({ around: app.seq });
});
filters.addEventListener('reset', () => {
  app.filter = {};
  setTimeout(() => void loadTimeline({ around: app.seq }), 0);
});
$('older').addEventListener('click', () => {
  if (app.page && app.page.entries.length) void loadTimeline({ before: app.page.entries[0]!.seq });
});
$('newer').addEventListener('click', () => {
  if (app.page && app.page.entries.length) void loadTimeline({ after: app.page.entries[app.page.entries.length - 1]!.seq });
});

const reverify = $<HTMLButtonElement>('reverify');
reverify.addEventListener('click', () => {
  reverify.disabled = true;
  $('verification').textContent = 're-verifying the whole chain…';
  api('verify', { refresh: 1 })
    .then(() => api('info'))
    .then((info) => {
      setInfo(info);
      app.page = null;
      return go(app.seq, { replace: true });
    })
    .catch((e: Error) => {
      $('verification').textContent = 'verification failed: ' + e.message;
    })
    .then(() => {
      reverify.disabled = false;
    });
});

// --- start, and follow a live log -----------------------------------------------------
api('info')
  .then((info) => {
    setInfo(info);
    const select = document.querySelector('#filters select[name=action]')!;
    info.actions.forEach((action) => select.appendChild(h('option', { value: action }, action)));
    const seq = hashSeq();
    return go(seq !== null ? seq : info.stoppedAt ? info.replayableThrough : info.lastSeq, { replace: true });
  })
  .catch((e: Error) => {
    $('position').textContent = 'cannot load the viewer: ' + e.message;
  });

if (live) {
  setInterval(() => {
    if (document.hidden || !app.info) return;
    api('info').then(
      (info) => {
        const grew = info.lastSeq !== app.info!.lastSeq;
        const recheck = info.verification.checkedAt !== app.info!.verification.checkedAt;
        if (!grew && !recheck) return;
        setInfo(info);
        if (app.page && !app.page.hasNewer) void loadTimeline({ around: app.seq });
      },
      () => {},
    );
  }, 5000);
}
