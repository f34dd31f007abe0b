/**
 * The viewer's HTML, rendered on the server with hono/html (every
 * interpolation escaped): the shells of the audit log page and of the live
 * fleet page, which their client scripts fill in, and the page shown to
 * someone without a session.
 */
import { html } from 'hono/html';
import type { HtmlEscapedString } from 'hono/utils/html';

type Html = HtmlEscapedString | Promise<HtmlEscapedString>;

function layout(base: string, title: string, body: Html, mode: 'live' | 'file', script: 'viewer' | 'live' | null): Html {
  return html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${title}</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="${base}/assets/viewer.css">
${script ? html`<script src="${base}/assets/${script}.js" defer></script>` : ''}
</head>
<body data-base="${base}/" data-mode="${mode}">
${body}
</body>
</html>`;
}

/** The viewer page: header with the verification status, the replay controls, timeline, event, fleet. */
export function viewerPage(base: string, name: string, mode: 'live' | 'file'): Html {
  const body = html`<header id="top">
  <div class="brand"><strong>Ferry audit log</strong> · <span id="name">${name}</span> <span class="mode">${mode === 'live' ? 'live coordinator' : 'offline export (read-only)'}</span></div>
  <div id="verification" class="badge pending" role="status" aria-live="polite">checking the chain…</div>
  <button type="button" id="reverify" title="Re-verify the whole chain and the signed checkpoints now">Verify now</button>
  ${mode === 'live' ? html`<a id="to-live" href="${base}/live">Live fleet</a>` : ''}
  <a id="logout" href="${base}/logout">Log out</a>
</header>
<section id="player" aria-label="Replay">
  <div class="controls">
    <button type="button" id="first" title="Before the first event (Home)">|◀ First</button>
    <button type="button" id="back" title="Step back (←)">◀ Step</button>
    <button type="button" id="play" title="Play / pause (space)">▶ Play</button>
    <button type="button" id="forward" title="Step forward (→)">Step ▶</button>
    <button type="button" id="last" title="The latest event (End)">Last ▶|</button>
    <label>speed <select id="speed"><option value="1000">1/s</option><option value="250" selected>4/s</option><option value="50">20/s</option></select></label>
    <form id="goto"><input id="goto-input" name="at" placeholder="seq or ISO time" size="22" autocomplete="off"><button type="submit">Go</button></form>
    <span id="position" aria-live="polite">…</span>
  </div>
  <input type="range" id="scrubber" min="0" max="0" value="0" aria-label="Position in the log">
  <div id="replay-stop" class="warning" hidden></div>
</section>
<main>
  <section id="timeline-panel" aria-label="Timeline">
    <h2>Timeline</h2>
    <form id="filters">
      <input name="actor" placeholder="actor key or role">
      <select name="action"><option value="">any action</option></select>
      <input name="agent" placeholder="agent id or name">
      <input name="graph" placeholder="graph">
      <label>from <input name="from" type="datetime-local" step="1"></label>
      <label>to <input name="to" type="datetime-local" step="1"></label>
      <input name="q" type="search" placeholder="search payloads">
      <button type="submit">Filter</button> <button type="reset">Clear</button>
    </form>
    <div id="timeline-meta"></div>
    <button type="button" id="older">▲ older</button>
    <ol id="timeline"></ol>
    <button type="button" id="newer">▼ newer</button>
  </section>
  <section id="event-panel" aria-label="Event">
    <h2>Event</h2>
    <div id="event"></div>
  </section>
  <section id="state-panel" aria-label="Fleet state">
    <h2 id="state-title">Fleet</h2>
    <div id="state"></div>
  </section>
</main>`;
  return layout(base, `Ferry audit log · ${name}`, body, mode, 'viewer');
}

/** The live fleet page (live coordinator only): connection status, counts, graphs' rollouts, a page of agents. */
export function livePage(base: string, name: string): Html {
  const body = html`<header id="top">
  <div class="brand"><strong>Ferry live fleet</strong> · <span id="name">${name}</span> <span class="mode">read-only</span></div>
  <div id="live-status" class="badge pending" role="status" aria-live="polite">connecting…</div>
  <a id="to-log" href="${base}/">Audit log</a>
  <a id="logout" href="${base}/logout">Log out</a>
</header>
<main class="live">
  <section aria-label="Fleet">
    <div id="live-counts" class="counts"></div>
    <h2>Graphs</h2>
    <div id="live-graphs-meta" class="meta"></div>
    <table id="live-graphs"><thead><tr><th>graph</th><th>head</th><th>message</th><th>following</th><th>succeeded</th><th>failed</th><th>pending</th><th>unreported</th><th>phases</th><th>presence</th><th>degraded</th><th>fetching</th></tr></thead><tbody></tbody></table>
    <h2>Agents</h2>
    <div class="pager">
      <input type="search" id="live-query" placeholder="name, id, status, phase, graph, presence or health" size="40" autocomplete="off">
      <span id="live-agents-meta"></span>
      <button type="button" id="live-prev">◀</button>
      <button type="button" id="live-next">▶</button>
    </div>
    <table id="live-agents"><thead><tr><th>name</th><th>id</th><th>presence</th><th>last seen</th><th>health</th><th>phase</th><th>graph</th><th>desired</th><th>current</th><th>activity</th><th>last error</th></tr></thead><tbody></tbody></table>
  </section>
</main>`;
  return layout(base, `Ferry live fleet · ${name}`, body, 'live', 'live');
}

/** Shown without a session: how to get in. */
export function loggedOutPage(base: string, mode: 'live' | 'file', notice?: string): Html {
  const how =
    mode === 'live'
      ? html`<p>Run <code>ferry audit view</code> (a key with the <em>viewer</em> role or higher) and open the link it prints. Links are single-use and expire after a few minutes.</p>`
      : html`<p>Open the link that <code>ferry audit view --file …</code> printed when it started.</p>`;
  return layout(base, 'Ferry audit log: log in', html`<main class="logged-out"><h1>Ferry audit log</h1>${notice ? html`<p class="warning">${notice}</p>` : ''}${how}</main>`, mode, null);
}
