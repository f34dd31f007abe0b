/** The viewer's stylesheet, served as /viewer/assets/viewer.css (no build step). */
export const STYLES = String.raw`
:root { --bg: #fafafa; --fg: #1d1f21; --muted: #6a6f75; --line: #dde1e5; --ok: #1b7f3b; --bad: #b42318; --warn: #9a6700; --accent: #2f5fb3; --current: #fff4c2; }
* { box-sizing: border-box; }
body { margin: 0; font: 13px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); background: var(--bg); }
code, pre, .mono, td.id, .seq { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, monospace; font-size: 12px; }
header#top { position: sticky; top: 0; z-index: 2; display: flex; gap: 12px; align-items: center; padding: 8px 12px; background: #fff; border-bottom: 1px solid var(--line); }
header .brand { flex: 0 0 auto; }
header .mode { color: var(--muted); }
header #logout { margin-left: auto; color: var(--muted); }
.badge { flex: 1 1 auto; padding: 4px 10px; border-radius: 4px; border: 1px solid var(--line); }
.badge.ok { background: #e8f5ec; color: var(--ok); border-color: #b7dfc3; }
.badge.broken { background: #fdecea; color: var(--bad); border-color: #f4b4ad; font-weight: 600; cursor: pointer; }
.badge.pending { background: #fff8e1; color: var(--warn); }
#player { padding: 8px 12px; background: #fff; border-bottom: 1px solid var(--line); }
#player .controls { display: flex; flex-wrap: wrap; gap: 8px; align-items: center; }
#player form { display: inline-flex; gap: 4px; }
#scrubber { width: 100%; margin-top: 6px; }
#position { font-weight: 600; }
.warning { color: var(--warn); background: #fff8e1; padding: 4px 8px; border-radius: 4px; margin: 4px 0; }
.error { color: var(--bad); }
main { display: grid; grid-template-columns: minmax(320px, 1.1fr) minmax(320px, 1fr) minmax(360px, 1.3fr); gap: 0; align-items: start; }
main > section { padding: 8px 12px; border-right: 1px solid var(--line); min-width: 0; }
#state { overflow-x: auto; }
td.id, #agents td.name { white-space: nowrap; }
.diff td { overflow-wrap: anywhere; }
#agents td.error { min-width: 140px; }
h2 { font-size: 14px; margin: 4px 0 8px; }
h3 { font-size: 13px; margin: 12px 0 4px; }
#filters { display: flex; flex-wrap: wrap; gap: 4px; margin-bottom: 6px; }
#filters input, #filters select { max-width: 150px; }
#timeline-meta { color: var(--muted); margin: 4px 0; }
#timeline { list-style: none; margin: 4px 0; padding: 0; max-height: 62vh; overflow-y: auto; border: 1px solid var(--line); background: #fff; }
#timeline li { display: grid; grid-template-columns: 56px 1fr; gap: 2px 6px; padding: 3px 6px; border-bottom: 1px solid #f0f1f3; cursor: pointer; }
#timeline li:hover { background: #f3f6fb; }
#timeline li.current { background: var(--current); }
#timeline li.broken { border-left: 4px solid var(--bad); background: #fdecea; }
#timeline li.after-break { border-left: 4px solid #f4b4ad; }
#timeline li .seq { color: var(--muted); grid-row: span 2; }
#timeline li .what { font-weight: 600; }
#timeline li .meta { color: var(--muted); font-size: 11px; }
button { font: inherit; padding: 2px 8px; }
table { border-collapse: collapse; width: 100%; background: #fff; }
th, td { text-align: left; padding: 2px 6px; border-bottom: 1px solid #eef0f2; vertical-align: top; }
th { color: var(--muted); font-weight: 600; }
dl.fields { display: grid; grid-template-columns: max-content 1fr; gap: 2px 10px; margin: 0 0 8px; }
dl.fields dt { color: var(--muted); }
dl.fields dd { margin: 0; overflow-wrap: anywhere; }
.status-verified { color: var(--ok); font-weight: 600; }
.status-broken, .status-after-break { color: var(--bad); font-weight: 600; }
.status-unchecked { color: var(--warn); font-weight: 600; }
.diff .row { margin: 6px 0; border: 1px solid var(--line); background: #fff; }
.diff .row > div { padding: 2px 6px; background: #f3f4f6; }
.diff .kind-added > div { background: #e8f5ec; }
.diff .kind-changed > div { background: #eef3fb; }
.diff td.before { color: var(--bad); }
.diff td.after { color: var(--ok); }
pre { white-space: pre-wrap; word-break: break-all; background: #fff; border: 1px solid var(--line); padding: 6px; max-height: 40vh; overflow: auto; margin: 4px 0; }
.counts { display: flex; flex-wrap: wrap; gap: 6px 14px; margin-bottom: 6px; }
.counts span b { font-size: 14px; }
.pager { display: flex; gap: 6px; align-items: center; margin: 4px 0; }
details summary { cursor: pointer; }
.phase-failed, .phase-rolled-back { color: var(--bad); }
.phase-active { color: var(--ok); }
.head-marker { color: var(--accent); font-weight: 600; }
.logged-out { max-width: 640px; margin: 60px auto; display: block; }
header #to-live, header #to-log { color: var(--accent); }
header #to-log { margin-left: auto; }
header #to-log + #logout { margin-left: 0; }
main.live { display: block; padding: 8px 12px; }
main.live .meta { color: var(--muted); margin: 2px 0; }
main.live table { margin-bottom: 12px; }
.presence-online { color: var(--ok); }
.presence-stale { color: var(--warn); }
.presence-offline { color: var(--bad); }
.health-healthy { color: var(--ok); }
.health-degraded { color: var(--bad); }
td.health .reason { color: var(--muted); }
td.bad { color: var(--bad); font-weight: 600; }
`;
