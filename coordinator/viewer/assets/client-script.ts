/**
 * The viewer's browser script, served as /viewer/assets/viewer.js: plain
 * hand-written JavaScript (no build step, no dependencies). It only calls
 * the JSON endpoints under /viewer/api/ and builds the page with DOM calls
 * (textContent, never innerHTML), so nothing in a payload is ever markup.
 * The position lives in the URL (`#seq=N`), so a view can be shared.
 * (Kept free of backticks and dollar-brace so it fits in String.raw.)
 */
export const CLIENT_SCRIPT = String.raw`(function () {
  'use strict';
  var body = document.body;
  var base = body.dataset.base;
  var live = body.dataset.mode === 'live';
  function $(id) { return document.getElementById(id); }

  var app = { info: null, seq: 0, token: 0, playing: false, playTimer: null, filter: {}, page: null, agentOffset: 0, agentQuery: '', agentLimit: 100 };

  // --- DOM helpers -----------------------------------------------------------
  function h(tag, props) {
    var el = document.createElement(tag);
    if (props) {
      Object.keys(props).forEach(function (key) {
        var value = props[key];
        if (value === undefined || value === null || value === false) return;
        if (key === 'text') el.textContent = String(value);
        else if (key === 'class') el.className = value;
        else if (key === 'data') Object.keys(value).forEach(function (d) { el.dataset[d] = value[d]; });
        else if (key.slice(0, 2) === 'on') el.addEventListener(key.slice(2), value);
        else el.setAttribute(key, value === true ? '' : String(value));
      });
    }
    for (var i = 2; i < arguments.length; i++) append(el, arguments[i]);
    return el;
  }
  function append(el, child) {
    if (child === null || child === undefined || child === false) return;
    if (Array.isArray(child)) { child.forEach(function (c) { append(el, c); }); return; }
    el.appendChild(typeof child === 'object' ? child : document.createTextNode(String(child)));
  }
  function clear(el) { while (el.firstChild) el.removeChild(el.firstChild); return el; }
  function short(id) { return id ? String(id).slice(0, 12) : '-'; }
  function when(ms) {
    var d = new Date(ms);
    return isNaN(d.getTime()) ? String(ms) : d.toISOString().replace('T', ' ').replace(/\.\d{3}Z$/, 'Z');
  }
  function show(value) {
    if (value === null || value === undefined) return '—';
    return typeof value === 'string' ? value : JSON.stringify(value);
  }
  function idCell(id, cls) { return h('td', { class: 'id ' + (cls || ''), title: id || '', data: { full: id || '' } }, short(id)); }
  function cell(value, cls) { return h('td', { class: cls || '' }, value === null || value === undefined ? '-' : String(value)); }
  /** A collapsed section whose content is built when first opened (keeps each position's page small). */
  function lazy(summary, build) {
    var details = h('details', null, h('summary', null, summary));
    details.addEventListener('toggle', function () {
      if (details.open && !details.dataset.built) { details.dataset.built = '1'; append(details, build()); }
    });
    return details;
  }
  function table(headers, rows, props) {
    return h('table', props || null, h('thead', null, h('tr', null, headers.map(function (x) { return h('th', null, x); }))), h('tbody', null, rows));
  }

  // --- API ---------------------------------------------------------------------
  function api(path, params) {
    var search = new URLSearchParams();
    if (params) Object.keys(params).forEach(function (k) {
      var v = params[k];
      if (v !== undefined && v !== null && v !== '') search.append(k, String(v));
    });
    var qs = search.toString();
    return fetch(base + 'api/' + path + (qs ? '?' + qs : ''), { credentials: 'same-origin', headers: { accept: 'application/json' } }).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (data) {
        if (response.status === 401) window.location.reload();
        if (!response.ok) throw new Error(data && data.error ? data.error.message : 'HTTP ' + response.status);
        return data;
      });
    });
  }
  function errorOf(e) { return { error: e && e.message ? e.message : String(e) }; }

  // --- verification (always visible) -------------------------------------------
  function renderVerification(v) {
    var el = $('verification');
    el.className = 'badge ' + (!v.ok ? 'broken' : v.verifiedThrough < v.lastSeq ? 'pending' : 'ok');
    var cp = v.lastCheckpoint ? 'last signed checkpoint: seq ' + v.lastCheckpoint.seq : 'no signed checkpoint yet';
    var text;
    if (!v.ok) {
      text = '✘ BROKEN at seq ' + v.firstBad.seq + ': ' + v.firstBad.reason + ' · chain verified through seq ' + v.verifiedThrough + ' · ' + cp;
    } else {
      text = '✔ chain verified through seq ' + v.verifiedThrough + ' · ' + cp;
      if (v.lastSeq > v.verifiedThrough) text += ' · ' + (v.lastSeq - v.verifiedThrough) + ' newer event(s) not verified yet';
    }
    el.textContent = text + ' · checked ' + when(v.checkedAt);
    el.dataset.ok = String(v.ok);
    el.dataset.brokenSeq = v.firstBad ? String(v.firstBad.seq) : '';
    el.dataset.verifiedThrough = String(v.verifiedThrough);
    el.title = v.firstBad ? 'Go to the first broken event' : '';
    el.onclick = v.firstBad ? function () { go(v.firstBad.seq); } : null;
  }

  function setInfo(info) {
    app.info = info;
    $('scrubber').max = String(info.lastSeq);
    renderVerification(info.verification);
    var stop = $('replay-stop');
    if (info.stoppedAt) {
      stop.hidden = false;
      stop.textContent = 'Replay stops at event ' + info.stoppedAt.seq + ': ' + info.stoppedAt.message + '. Positions after ' + info.replayableThrough + ' cannot be reconstructed.';
    } else {
      stop.hidden = true;
    }
  }

  // --- position ------------------------------------------------------------------
  function hashSeq() {
    var match = /(?:^#|&)seq=(\d+)/.exec(window.location.hash);
    return match ? Number(match[1]) : null;
  }

  function positionText(result, seq) {
    var total = app.info.lastSeq;
    if (seq === 0) return 'position 0 of ' + total + ' (before the first event)';
    var p = result && result.position;
    return 'position ' + seq + ' of ' + total + (p ? ' · ' + p.action + ' · ' + when(p.wallTime) + ' · HLC ' + p.hlc : '');
  }

  function go(target, options) {
    options = options || {};
    if (!app.info) return Promise.resolve();
    var seq = Math.max(0, Math.min(app.info.lastSeq, Math.floor(Number(target))));
    if (isNaN(seq)) return Promise.resolve();
    app.seq = seq;
    var token = ++app.token;
    var started = performance.now();
    $('scrubber').value = String(seq);
    $('position').textContent = 'loading position ' + seq + '…';
    var hash = '#seq=' + seq;
    if (window.location.hash !== hash) {
      if (options.replace) history.replaceState(null, '', hash);
      else history.pushState(null, '', hash);
    }
    body.removeAttribute('data-rendered-seq');
    // The event first: the server replays to seq - 1 and applies it, leaving its replay at seq for the state.
    var detail = seq > 0 ? api('events/' + seq).catch(errorOf) : Promise.resolve(null);
    var state = api('state', { at: seq, agentOffset: app.agentOffset, agentLimit: app.agentLimit, agentQuery: app.agentQuery }).catch(errorOf);
    var timeline = needTimeline(seq) ? loadTimeline({ around: seq }) : Promise.resolve();
    return Promise.all([state, detail, timeline]).then(function (results) {
      if (token !== app.token) return;
      var fetched = performance.now();
      renderState(results[0], seq);
      renderEvent(results[1], seq);
      markCurrent(true);
      $('position').textContent = results[0] && results[0].error ? 'position ' + seq + ': ' + results[0].error : positionText(results[0], seq);
      // Timings of this position (the benchmark reads them): fetching, then building the page.
      body.dataset.fetchMs = String(Math.round(fetched - started));
      body.dataset.renderMs = String(Math.round(performance.now() - fetched));
      body.dataset.renderedSeq = String(seq);
    });
  }

  // --- timeline ------------------------------------------------------------------
  function needTimeline(seq) {
    var page = app.page;
    if (!page) return true;
    if (page.entries.length === 0) return false;
    return seq < page.entries[0].seq - 1 || seq > page.entries[page.entries.length - 1].seq;
  }

  function loadTimeline(request) {
    var params = Object.assign({ limit: 100 }, app.filter, request);
    return api('events', params).then(function (page) {
      app.page = page;
      renderTimeline();
    }, function (e) {
      app.page = { entries: [], total: 0, hasOlder: false, hasNewer: false };
      clear($('timeline'));
      $('timeline-meta').textContent = 'timeline: ' + e.message;
    });
  }

  function renderTimeline() {
    var list = clear($('timeline'));
    var page = app.page;
    var v = app.info.verification;
    page.entries.forEach(function (e) {
      var cls = [];
      if (v.firstBad && e.seq === v.firstBad.seq) cls.push('broken');
      else if (v.firstBad && e.seq > v.firstBad.seq) cls.push('after-break');
      list.appendChild(h('li', { class: cls.join(' '), data: { seq: String(e.seq) }, title: e.subject, onclick: function () { go(e.seq); } },
        h('span', { class: 'seq' }, '#' + e.seq),
        h('div', null, h('span', { class: 'what' }, e.action), ' ', h('span', { class: 'summary' }, e.summary)),
        h('span', { class: 'meta' }, when(e.wallTime) + ' · ' + e.actorRole + ' ' + short(e.actorKey))));
    });
    var filtered = Object.keys(app.filter).length > 0;
    $('timeline-meta').textContent = page.total + (filtered ? ' matching event(s)' : ' event(s)') + (page.entries.length ? ' · showing #' + page.entries[0].seq + '–#' + page.entries[page.entries.length - 1].seq : '');
    $('older').disabled = !page.hasOlder;
    $('newer').disabled = !page.hasNewer;
    markCurrent(true);
  }

  function markCurrent(scroll) {
    var items = $('timeline').children;
    for (var i = 0; i < items.length; i++) {
      var current = Number(items[i].dataset.seq) === app.seq;
      items[i].classList.toggle('current', current);
      if (current && scroll) items[i].scrollIntoView({ block: 'nearest' });
    }
  }

  // --- event detail ----------------------------------------------------------------
  function verificationText(v) {
    if (v.state === 'verified') return 'verified in the hash chain' + (v.coveredByCheckpoint ? ', covered by the signed checkpoint at seq ' + v.coveredByCheckpoint : ', not yet covered by a signed checkpoint');
    if (v.state === 'broken') return 'BROKEN: ' + v.reason;
    if (v.state === 'after-break') return 'UNVERIFIED: after the break at seq ' + v.brokenAt;
    return 'not verified yet (appended since the last check)';
  }

  function renderEvent(detail, seq) {
    var el = clear($('event'));
    if (seq === 0) { el.appendChild(h('p', null, 'Position 0: before the first event (the empty state).')); return; }
    if (!detail || detail.error) { el.appendChild(h('p', { class: 'error' }, 'Event ' + seq + ': ' + (detail ? detail.error : 'unavailable'))); return; }
    var e = detail.event;
    var v = detail.verification;
    var fields = [
      ['who', e.actorRole + (detail.actorName ? ' ' + detail.actorName : '') + ' · ' + e.actorKey],
      ['what', e.action + ' · ' + e.subject],
      ['when (HLC)', e.hlc],
      ['when (wall)', when(e.wallTime)],
      ['chain', h('span', { id: 'event-verification', class: 'status-' + v.state, data: { state: v.state } }, verificationText(v))],
      ['request signature', detail.requestSignature ? 'recorded (' + detail.requestSignature.slice(0, 16) + '…) and hashed into the chain' : 'none (not recorded from a signed request: the coordinator itself, or in-process)'],
    ];
    if (detail.configSignature) {
      fields.push(['config signature', h('span', { class: detail.configSignature.valid ? 'status-verified' : 'status-broken' }, (detail.configSignature.valid ? '✔ ' : '✘ ') + detail.configSignature.reason + ' (' + short(detail.configSignature.author) + ')')]);
    }
    fields.push(['hash', h('code', { title: e.hash }, short(e.hash) + '… (prev ' + short(e.prevHash) + '…)')]);
    el.appendChild(h('h3', { id: 'event-title' }, '#' + e.seq + ' ' + e.action));
    el.appendChild(h('p', { class: 'summary' }, detail.entry.summary));
    el.appendChild(h('dl', { class: 'fields' }, fields.map(function (f) { return [h('dt', null, f[0]), h('dd', null, f[1])]; })));
    el.appendChild(h('h3', null, 'What it changed'));
    var diff = h('div', { class: 'diff', id: 'diff' });
    if (!detail.diff) diff.appendChild(h('p', { class: 'warning' }, 'Cannot replay this event: ' + detail.replayProblem));
    else if (detail.diff.length === 0) diff.appendChild(h('p', null, 'No state rows changed (e.g. a push: the castore holds the paths; the log records who and what).'));
    else detail.diff.forEach(function (change) {
      diff.appendChild(h('div', { class: 'row kind-' + change.kind, data: { table: change.table, id: change.id } },
        h('div', null, h('b', null, change.table), ' ', h('code', { title: change.id }, change.id.length > 24 ? short(change.id) + '…' + change.id.slice(-4) : change.id), ' — ' + change.kind),
        change.fields.length ? table(['field', 'before', 'after'], change.fields.map(function (f) {
          return h('tr', null, h('td', null, f.field), h('td', { class: 'before' }, change.kind === 'added' ? '—' : show(f.before)), h('td', { class: 'after' }, show(f.after)));
        })) : null));
    });
    el.appendChild(diff);
    el.appendChild(h('h3', null, 'Payload'));
    el.appendChild(h('pre', { id: 'payload' }, JSON.stringify(e.payload, null, 2)));
  }

  // --- fleet state -----------------------------------------------------------------
  function renderState(result, seq) {
    var el = clear($('state'));
    $('state-title').textContent = seq === 0 ? 'Fleet before the first event' : 'Fleet after event ' + seq;
    if (!result || result.error) { el.appendChild(h('p', { class: 'error', id: 'state-error' }, result ? result.error : 'unavailable')); return; }
    var s = result.state;
    var byStatus = Object.keys(s.counts.agentsByStatus).map(function (k) { return s.counts.agentsByStatus[k] + ' ' + k; }).join(', ');
    el.appendChild(h('div', { class: 'counts', id: 'counts' },
      h('span', null, h('b', null, s.counts.agents), ' agents' + (byStatus ? ' (' + byStatus + ')' : '')),
      h('span', null, h('b', null, s.counts.graphs), ' graphs'),
      h('span', null, h('b', null, s.counts.configs), ' configs'),
      h('span', null, h('b', null, s.counts.keys), ' keys'),
      h('span', null, h('b', null, s.counts.tokens), ' tokens'),
      h('span', null, h('b', null, s.counts.agentFacts), ' facts revisions')));

    // Agents
    el.appendChild(h('h3', null, 'Agents'));
    var filter = h('input', { type: 'search', id: 'agent-query', placeholder: 'filter agents', value: app.agentQuery });
    filter.addEventListener('change', function () { app.agentQuery = filter.value; app.agentOffset = 0; go(app.seq, { replace: true }); });
    var a = s.agents;
    var pager = h('div', { class: 'pager' }, filter,
      h('span', null, a.matching === 0 ? 'no agents' : 'agents ' + (a.offset + 1) + '–' + (a.offset + a.rows.length) + ' of ' + a.matching),
      h('button', { type: 'button', disabled: a.offset === 0, onclick: function () { app.agentOffset = Math.max(0, a.offset - app.agentLimit); go(app.seq, { replace: true }); } }, '◀'),
      h('button', { type: 'button', disabled: a.offset + a.rows.length >= a.matching, onclick: function () { app.agentOffset = a.offset + app.agentLimit; go(app.seq, { replace: true }); } }, '▶'));
    el.appendChild(pager);
    el.appendChild(table(['name', 'id', 'status', 'system', 'graph', 'pinned', 'desired', 'current', 'phase', 'last error', 'facts'], a.rows.map(function (agent) {
      return h('tr', { data: { agentId: agent.id } },
        cell(agent.name, 'name'), idCell(agent.id, 'agent'), cell(agent.status, 'status'), cell(agent.system, 'system'), cell(agent.desiredGraph, 'graph'),
        idCell(agent.pinnedConfig, 'pinned'), idCell(agent.desiredConfig, 'desired'), idCell(agent.currentConfig, 'current'),
        cell(agent.phase, 'phase phase-' + agent.phase), cell(agent.lastError, 'error'),
        h('td', { class: 'facts' }, agent.facts ? lazy('rev ' + agent.factsRevision, function () { return h('pre', null, JSON.stringify(agent.facts, null, 2)); }) : '-'));
    }), { id: 'agents' }));

    // Graphs
    el.appendChild(h('h3', null, 'Graphs'));
    if (s.graphs.length === 0) el.appendChild(h('p', null, 'no graphs yet'));
    s.graphs.forEach(function (graph) {
      el.appendChild(h('div', { class: 'graph', data: { graph: graph.id, head: graph.head } },
        h('div', null, h('b', null, 'graph ' + graph.id), ' head ', h('code', { class: 'head', title: graph.head }, short(graph.head)), ' (since seq ' + graph.updatedSeq + ', ' + graph.configCount + ' config(s))'),
        table(['config', 'seq', 'message', ''], graph.history.map(function (c) {
          return h('tr', null, idCell(c.id), cell(c.seq), cell(c.message), h('td', { class: 'head-marker' }, (c.head ? 'HEAD' : '') + (c.forced ? ' forced' : '')));
        })),
        graph.headMoves.length ? lazy('head moves (' + graph.headMoves.length + ')', function () {
          return h('ul', null, graph.headMoves.map(function (m) {
            return h('li', null, h('a', { href: '#seq=' + m.seq }, '#' + m.seq), ' ' + m.action + ' ' + short(m.from) + ' → ' + short(m.to));
          }));
        }) : null));
    });

    // Per-config aggregates
    el.appendChild(h('h3', null, 'Per-config rollout'));
    el.appendChild(table(['config', 'graph', 'seq', 'head', 'succeeded', 'failed', 'pending', 'unreported'], s.configs.rows.map(function (c) {
      return h('tr', { data: { configId: c.id } }, idCell(c.id), cell(c.graph), cell(c.seq), cell(c.head ? 'yes' : ''),
        cell(c.summary.succeeded, 'succeeded'), cell(c.summary.failed, 'failed'), cell(c.summary.pending, 'pending'), cell(c.summary.unreported, 'unreported'));
    }), { id: 'configs' }));

    // Keys and tokens
    el.appendChild(lazy('Keys (' + s.counts.keys + (s.keys.length < s.counts.keys ? ', first ' + s.keys.length : '') + ')', function () {
      return table(['key', 'role', 'label', 'revoked', 'added'], s.keys.map(function (k) {
        return h('tr', null, idCell(k.id), cell(k.role), cell(k.label), cell(k.revoked ? 'revoked' : ''), cell(k.addedSeq));
      }));
    }));
    el.appendChild(lazy('Tokens (' + s.counts.tokens + (s.tokens.length < s.counts.tokens ? ', first ' + s.tokens.length : '') + ')', function () {
      return table(['token', 'label', 'uses left', 'auto-approve', 'expires', 'revoked'], s.tokens.map(function (t) {
        return h('tr', null, cell(t.id, 'id'), cell(t.label), cell(t.usesLeft), cell(t.autoApprove ? 'yes' : ''), cell(when(t.expiresAt)), cell(t.revoked ? 'revoked' : ''));
      }));
    }));
  }

  // --- replay controls ------------------------------------------------------------------
  function pause() {
    app.playing = false;
    clearTimeout(app.playTimer);
    $('play').textContent = '▶ Play';
  }
  function play() {
    if (app.playing) { pause(); return; }
    app.playing = true;
    $('play').textContent = '❚❚ Pause';
    (function step() {
      if (!app.playing) return;
      if (app.seq >= app.info.replayableThrough) { pause(); return; }
      go(app.seq + 1, { replace: true }).then(function () {
        if (app.playing) app.playTimer = setTimeout(step, Number($('speed').value));
      });
    })();
  }

  $('first').addEventListener('click', function () { pause(); go(0); });
  $('back').addEventListener('click', function () { pause(); go(app.seq - 1); });
  $('forward').addEventListener('click', function () { pause(); go(app.seq + 1); });
  $('last').addEventListener('click', function () { pause(); go(app.info.lastSeq); });
  $('play').addEventListener('click', play);
  $('scrubber').addEventListener('input', function () { $('position').textContent = 'go to position ' + this.value; });
  $('scrubber').addEventListener('change', function () { pause(); go(Number(this.value)); });
  $('goto').addEventListener('submit', function (event) {
    event.preventDefault();
    var value = $('goto-input').value.trim();
    pause();
    if (/^\d+$/.test(value)) { go(Number(value)); return; }
    api('state', { at: value, agentLimit: 1 }).then(function (result) { go(result.seq); }, function (e) { $('position').textContent = e.message; });
  });
  document.addEventListener('keydown', function (event) {
    var tag = event.target && event.target.tagName;
    if (tag === 'INPUT' || tag === 'SELECT' || tag === 'TEXTAREA') return;
    if (event.key === 'ArrowLeft') { pause(); go(app.seq - 1); }
    else if (event.key === 'ArrowRight') { pause(); go(app.seq + 1); }
    else if (event.key === ' ') { event.preventDefault(); play(); }
    else if (event.key === 'Home') { pause(); go(0); }
    else if (event.key === 'End') { pause(); go(app.info.lastSeq); }
  });
  function followHash() {
    var seq = hashSeq();
    if (seq !== null && seq !== app.seq) go(seq, { replace: true });
  }
  window.addEventListener('popstate', followHash);
  window.addEventListener('hashchange', followHash);

  // --- filters ----------------------------------------------------------------------------
  $('filters').addEventListener('submit', function (event) {
    event.preventDefault();
    var form = new FormData(this);
    var filter = {};
    ['actor', 'action', 'agent', 'graph', 'q'].forEach(function (name) { var v = String(form.get(name) || '').trim(); if (v) filter[name] = v; });
    ['from', 'to'].forEach(function (name) { var v = String(form.get(name) || ''); if (v) { var ms = new Date(v).getTime(); if (!isNaN(ms)) filter[name] = ms; } });
    app.filter = filter;
    loadTimeline({ around: app.seq });
  });
  $('filters').addEventListener('reset', function () { app.filter = {}; setTimeout(function () { loadTimeline({ around: app.seq }); }, 0); });
  $('older').addEventListener('click', function () { if (app.page && app.page.entries.length) loadTimeline({ before: app.page.entries[0].seq }); });
  $('newer').addEventListener('click', function () { if (app.page && app.page.entries.length) loadTimeline({ after: app.page.entries[app.page.entries.length - 1].seq }); });

  $('reverify').addEventListener('click', function () {
    var button = this;
    button.disabled = true;
    $('verification').textContent = 're-verifying the whole chain…';
    api('verify', { refresh: 1 }).then(function () { return api('info'); }).then(function (info) {
      setInfo(info);
      app.page = null;
      return go(app.seq, { replace: true });
    }).catch(function (e) { $('verification').textContent = 'verification failed: ' + e.message; }).then(function () { button.disabled = false; });
  });

  // --- start, and follow a live log -----------------------------------------------------
  api('info').then(function (info) {
    setInfo(info);
    var select = document.querySelector('#filters select[name=action]');
    info.actions.forEach(function (action) { select.appendChild(h('option', { value: action }, action)); });
    var seq = hashSeq();
    return go(seq !== null ? seq : info.stoppedAt ? info.replayableThrough : info.lastSeq, { replace: true });
  }).catch(function (e) { $('position').textContent = 'cannot load the viewer: ' + e.message; });

  if (live) {
    setInterval(function () {
      if (document.hidden || !app.info) return;
      api('info').then(function (info) {
        var grew = info.lastSeq !== app.info.lastSeq;
        var recheck = info.verification.checkedAt !== app.info.verification.checkedAt;
        if (!grew && !recheck) return;
        setInfo(info);
        if (app.page && !app.page.hasNewer) loadTimeline({ around: app.seq });
      }, function () {});
    }, 5000);
  }
})();
`;
