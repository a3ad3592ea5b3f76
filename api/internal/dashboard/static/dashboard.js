// kube-git-deploy dashboard: keeps the server-rendered pages live.
//
// It follows the repository's Skaffold v2 event stream
// (GET /v2/events?repository=owner/name&sequence=true, NDJSON lines
// {"result": Event} or {"error": Status}) with fetch() and a
// ReadableStream, resuming after the last sequence number it applied
// (since=N) whenever the stream ends. A repository's page adds a row for
// each job that starts and updates its status; a job's page updates the
// pipeline, appends the log and shows the outcome. Jobs are read from the
// job history API's JSON routes; operators' buttons post JSON to them.
// Everything untrusted is written with textContent, never as HTML.
'use strict';

(() => {
  const main = document.getElementById('main');
  if (!main || !window.fetch || !window.ReadableStream || !window.TextDecoderStream) {
    return;
  }
  const data = main.dataset;

  const FINISHED = ['succeeded', 'failed', 'canceled'];
  // The v2 Event's oneof fields, as the gateway names them (proto field
  // names), with their snake_case spellings too.
  const EVENT_TYPES = {
    metaEvent: 'meta', meta_event: 'meta',
    taskEvent: 'task', task_event: 'task',
    skaffoldLogEvent: 'log', skaffold_log_event: 'log',
    buildSubtaskEvent: 'build', build_subtask_event: 'build',
    deploySubtaskEvent: 'deploy', deploy_subtask_event: 'deploy',
    statusCheckSubtaskEvent: 'statusCheck', status_check_subtask_event: 'statusCheck',
  };

  // --- small helpers -------------------------------------------------

  function field(o, ...names) {
    if (!o) {
      return undefined;
    }
    for (const n of names) {
      if (o[n] !== undefined && o[n] !== null) {
        return o[n];
      }
    }
    return undefined;
  }

  function sleep(ms) {
    return new Promise((resolve) => setTimeout(resolve, ms));
  }

  function splitRepository(full) {
    const i = full.indexOf('/');
    return [full.slice(0, i), full.slice(i + 1)];
  }

  function repositoryPath(full) {
    const [owner, name] = splitRepository(full);
    return encodeURIComponent(owner) + '/' + encodeURIComponent(name);
  }

  function jobPageURL(job) {
    return '/ui/repos/' + repositoryPath(job.repository) + '/jobs/' + encodeURIComponent(job.id);
  }

  function jobAPIURL(repository, id) {
    return '/kgd/v1/repositories/' + repositoryPath(repository) + '/jobs/' + encodeURIComponent(id);
  }

  function jobName(job) {
    return job.iteration > 0 ? '#' + job.iteration : job.id;
  }

  function refName(job) {
    return job.branch || job.tag || (job.ref || '').replace(/^refs\/(heads|tags)\//, '');
  }

  function formatWhen(iso) {
    const d = new Date(iso);
    return isNaN(d) ? '' : d.toISOString().replace('T', ' ').slice(0, 19) + ' UTC';
  }

  function formatDuration(from, to) {
    if (!from || !to) {
      return '';
    }
    let s = Math.round((new Date(to) - new Date(from)) / 1000);
    if (!(s >= 0)) {
      return '';
    }
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    s %= 60;
    if (h > 0) {
      return h + 'h ' + m + 'm';
    }
    return m > 0 ? m + 'm ' + s + 's' : s + 's';
  }

  // setTime writes a <time> (or "—") into el.
  function setTime(el, iso) {
    if (!el) {
      return;
    }
    el.replaceChildren();
    if (!iso) {
      const none = document.createElement('span');
      none.className = 'none';
      none.textContent = '—';
      el.append(none);
      return;
    }
    const t = document.createElement('time');
    t.dateTime = iso;
    t.textContent = formatWhen(iso);
    el.append(t);
  }

  // The badge's words, class and symbol, as the server renders them.
  function statusLabel(s) {
    if (!s || s === 'NotStarted') {
      return 'not started';
    }
    if (s === 'NotRun') {
      return 'not run';
    }
    return s === 'InProgress' ? 'in progress' : s.toLowerCase();
  }

  function statusClass(s) {
    switch ((s || '').toLowerCase()) {
      case 'succeeded': case 'complete': return 'ok';
      case 'failed': return 'bad';
      case 'running': case 'inprogress': case 'in progress': case 'started': return 'run';
      case 'canceled': case 'terminated': return 'off';
      default: return 'wait';
    }
  }

  const ICONS = { ok: '✓', bad: '✗', run: '●', off: '⊘', wait: '◷' };

  // setBadge updates the badge inside el to status s.
  function setBadge(el, s) {
    const badge = el && (el.classList.contains('badge') ? el : el.querySelector('.badge'));
    if (!badge) {
      return;
    }
    const cls = statusClass(s);
    badge.className = 'badge badge-' + cls;
    badge.dataset.status = s || '';
    badge.querySelector('.icon').textContent = ICONS[cls];
    badge.querySelector('.label').textContent = statusLabel(s);
  }

  function announce(id, text) {
    const el = document.getElementById(id);
    if (el) {
      el.textContent = text;
    }
  }

  function setConnection(text) {
    const el = document.getElementById('connection');
    if (el) {
      el.hidden = !text;
      el.textContent = text;
    }
  }

  // apiError reads the google.rpc.Status JSON of a failed response.
  async function apiError(resp) {
    let msg = resp.status + ' ' + resp.statusText;
    try {
      const body = await resp.json();
      if (body && body.message) {
        msg = body.message;
      }
    } catch (e) {
      // not JSON: keep the status line
    }
    const err = new Error(msg);
    err.status = resp.status;
    return err;
  }

  async function fetchJob(repository, id) {
    const resp = await fetch(jobAPIURL(repository, id), { headers: { Accept: 'application/json' }, cache: 'no-store' });
    if (!resp.ok) {
      throw await apiError(resp);
    }
    return resp.json();
  }

  // eventOf returns the type ('meta', 'task', 'log', ...) and payload of
  // a v2 Event.
  function eventOf(ev) {
    const inner = field(ev, 'event') || ev; // tolerate an enveloped event
    for (const k of Object.keys(inner)) {
      if (EVENT_TYPES[k] && inner[k]) {
        return [EVENT_TYPES[k], inner[k]];
      }
    }
    return ['', null];
  }

  // --- the event stream ----------------------------------------------

  class StreamError extends Error {
    constructor(status) {
      super(field(status, 'message') || 'stream failed');
      this.code = field(status, 'code');
    }
  }

  // readLines calls fn with each JSON line of body.
  async function readLines(body, fn) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) {
        break;
      }
      buf += value;
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i).trim();
        buf = buf.slice(i + 1);
        if (line) {
          fn(JSON.parse(line));
        }
      }
    }
    if (buf.trim()) {
      fn(JSON.parse(buf));
    }
  }

  // follow streams the repository's v2 events to onEvent, from after
  // sequence number since ('' for the recent window), reconnecting with
  // the last number received until stop() is called. onEvent gets each
  // event once, in order: events at or below the last applied number
  // (a replay after a reconnect) are skipped.
  function follow(repository, since, onEvent) {
    let last = Number(since) || 0;
    let resume = since ? String(since) : '';
    let stopped = false;
    let aborter = null;
    let delay = 1000;
    const run = async () => {
      while (!stopped) {
        const q = new URLSearchParams({ repository: repository, sequence: 'true' });
        if (resume) {
          q.set('since', resume);
        }
        aborter = new AbortController();
        try {
          const resp = await fetch('/v2/events?' + q.toString(), {
            headers: { Accept: 'application/json' }, cache: 'no-store', signal: aborter.signal,
          });
          if (!resp.ok) {
            throw await apiError(resp);
          }
          setConnection('Live');
          delay = 1000;
          await readLines(resp.body, (msg) => {
            if (msg.error) {
              throw new StreamError(msg.error);
            }
            const ev = msg.result;
            if (!ev) {
              return;
            }
            const seq = Number(field(ev, 'kgd_sequence', 'kgdSequence') || 0);
            if (seq) {
              if (seq <= last) {
                return;
              }
              last = seq;
              resume = String(seq);
            }
            onEvent(ev);
          });
        } catch (e) {
          aborter.abort(); // end the response a failed read left open
          if (stopped) {
            return;
          }
          if (e.status === 404 || e.code === 5) {
            setConnection('Updates stopped: ' + e.message);
            return;
          }
          if (e.status === 401 || e.status === 403 || e.code === 7 || e.code === 16) {
            setConnection('Updates stopped: ' + e.message);
            return;
          }
          if (e.status === 400 || e.code === 11) {
            // The resume position is gone (expired events): take the
            // recent window; already applied events are skipped.
            resume = '';
          }
          setConnection('Reconnecting…');
        }
        if (stopped) {
          return;
        }
        await sleep(delay);
        delay = Math.min(delay * 2, 30000);
      }
    };
    run();
    return {
      stop() {
        stopped = true;
        if (aborter) {
          aborter.abort();
        }
        setConnection('');
      },
    };
  }

  // --- a repository's jobs -------------------------------------------

  function followRepository() {
    const repository = data.repository;
    const rows = document.getElementById('job-rows');
    const template = document.getElementById('job-row-template');
    if (!rows || !template) {
      return;
    }
    const byIteration = new Map();
    for (const tr of rows.querySelectorAll('tr[data-job]')) {
      if (Number(tr.dataset.iteration) > 0) {
        byIteration.set(Number(tr.dataset.iteration), tr.dataset.job);
      }
    }
    const rowOf = (id) => rows.querySelector('tr[data-job="' + CSS.escape(id) + '"]');
    const statusOf = (tr) => (tr.querySelector('.job-status .badge') || { dataset: {} }).dataset.status || '';

    // setRowStatus shows a row's status and announces a change.
    const setRowStatus = (tr, status) => {
      const before = statusOf(tr);
      if (before === status) {
        return;
      }
      setBadge(tr.querySelector('.job-status'), status);
      const name = tr.querySelector('.job-link').textContent;
      announce('announce', name + (before ? ' ' + status : ' started: ' + status));
    };

    const fill = (tr, job) => {
      tr.id = 'job-' + job.id;
      tr.dataset.job = job.id;
      tr.dataset.iteration = String(job.iteration || 0);
      const link = tr.querySelector('.job-link');
      link.href = jobPageURL(job);
      link.textContent = 'Job ' + jobName(job);
      setRowStatus(tr, job.status);
      tr.querySelector('.job-commit').textContent = (job.commit || '').slice(0, 7);
      tr.querySelector('.job-ref').textContent = refName(job);
      tr.querySelector('.job-trigger').textContent = job.trigger || '';
      tr.querySelector('.job-actor').textContent = job.actor || '';
      setTime(tr.querySelector('.job-created'), job.created_at);
      tr.querySelector('.job-took').textContent = formatDuration(job.started_at, job.finished_at);
    };

    // olderThanRows reports whether iteration it precedes every row's.
    const olderThanRows = (it) => {
      const its = Array.from(rows.querySelectorAll('tr[data-job]'), (tr) => Number(tr.dataset.iteration) || 0);
      return it > 0 && its.length > 0 && its.every((other) => other === 0 || other > it) && its.some((other) => other > 0);
    };

    // place inserts a new row for job in iteration order (queued jobs,
    // without an iteration, first); a job older than every row belongs
    // to an older page and is left out.
    const place = (job) => {
      const it = job.iteration || 0;
      const existing = Array.from(rows.querySelectorAll('tr[data-job]'));
      const before = existing.find((tr) => {
        const other = Number(tr.dataset.iteration) || 0;
        return other > 0 && (it === 0 || other < it);
      });
      if (!before && existing.length > 0 && it > 0) {
        return null;
      }
      const tr = template.content.firstElementChild.cloneNode(true);
      fill(tr, job);
      tr.classList.add('new');
      rows.insertBefore(tr, before || null);
      const none = document.getElementById('no-jobs');
      if (none) {
        none.hidden = true;
      }
      return tr;
    };

    // refresh reads the job and shows it, adding its row if missing;
    // with end it reads again until the record says how the job ended
    // (the record may trail the job's last event by a moment). Calls for
    // a job being read already are folded into that read.
    const wanted = new Map();
    const refresh = (id, end) => {
      let w = wanted.get(id);
      if (w) {
        w.dirty = true;
        w.end = w.end || end;
        return;
      }
      w = { dirty: true, end: end };
      wanted.set(id, w);
      (async () => {
        let attempt = 0;
        try {
          while (w.dirty) {
            w.dirty = false;
            const job = await fetchJob(repository, id);
            if (job.iteration > 0) {
              byIteration.set(job.iteration, job.id);
            }
            let tr = rowOf(id);
            if (!tr) {
              place(job);
            } else if (!w.end || FINISHED.includes(job.status)) {
              fill(tr, job); // (a record that has not caught up with the end would turn it back)
            }
            if (w.end && !FINISHED.includes(job.status) && attempt < 8) {
              attempt++;
              w.dirty = true;
              await sleep(500 * attempt);
            }
          }
        } catch (e) {
          setConnection('Could not read job ' + id + ': ' + e.message);
        } finally {
          wanted.delete(id);
        }
      })();
    };

    follow(repository, data.since || '', (ev) => {
      const [type, e] = eventOf(ev);
      if (type === 'meta') {
        const add = field(e.metadata, 'additional') || {};
        const id = add.job_id;
        if (!id) {
          return;
        }
        if (Number(add.iteration) > 0) {
          byIteration.set(Number(add.iteration), id);
        }
        const tr = rowOf(id);
        if (!tr && olderThanRows(Number(add.iteration) || 0)) {
          return; // replayed: a job of an older page
        }
        if (!tr || !FINISHED.includes(statusOf(tr))) {
          refresh(id, false);
        }
      } else if (type === 'task' && e.task === 'DevLoop') {
        const id = byIteration.get(Number(e.iteration));
        if (!id) {
          return;
        }
        // The row may not be there yet: its job is still being read.
        const tr = rowOf(id);
        if (e.status === 'InProgress') {
          if (tr && !FINISHED.includes(statusOf(tr))) {
            setRowStatus(tr, 'running');
          }
        } else if (!tr || !FINISHED.includes(statusOf(tr))) {
          if (tr) {
            setRowStatus(tr, (e.status || '').toLowerCase());
          }
          refresh(id, true);
        }
      }
    });
  }

  // --- log lines -----------------------------------------------------

  // The job phase of a v2 task id ("Build-3" → "build"), as the job
  // history API's JobLog names it.
  function phaseOfTaskID(id) {
    const task = (id || '').split('-')[0];
    return { DevLoop: 'devloop', Build: 'build', Deploy: 'deploy', StatusCheck: 'status-check' }[task] || '';
  }

  function statusWord(s) {
    return { InProgress: 'in progress', Succeeded: 'succeeded', Failed: 'failed' }[s] || (s || '').toLowerCase();
  }

  function errorOf(e) {
    return field(field(e, 'actionableErr', 'actionable_err'), 'message') || '';
  }

  // lineOf is the log line of a v2 event exactly as the job history API's
  // JobLog writes it (so live lines read like the rendered ones), or null
  // for an event that makes none.
  function lineOf(ev, type, e) {
    const l = { time: ev.timestamp || '', phase: '', unit: '', level: 'INFO', text: '', status: '' };
    const err = errorOf(e);
    const suffix = err ? ': ' + err : '';
    switch (type) {
      case 'meta': {
        const md = field(e.metadata, 'additional') || {};
        l.phase = 'devloop';
        l.text = 'Job ' + (md.job_id || '') + ' of ' + (md.repository || '') + ': commit ' + (md.commit || '').slice(0, 12) +
          ' (' + (md.branch || md.tag || '') + '), iteration ' + (md.iteration || '') + ', ' + (md.trigger || '');
        return l;
      }
      case 'log': {
        const subtask = field(e, 'subtask_id', 'subtaskId') || '';
        l.phase = phaseOfTaskID(field(e, 'task_id', 'taskId'));
        l.unit = subtask === '-1' || subtask === '0' ? '' : subtask;
        l.text = (e.message || '').replace(/\n+$/, '');
        if (e.level === 'WARN') {
          l.level = 'WARN';
        } else if (['ERROR', 'FATAL', 'PANIC'].includes(e.level)) {
          l.level = 'ERROR';
        }
        return l;
      }
      case 'task':
        if (e.task === 'Render' || (e.task === 'DevLoop' && e.status === 'InProgress')) {
          return null;
        }
        l.phase = phaseOfTaskID(e.id);
        l.status = e.status || '';
        l.text = e.task === 'DevLoop' ? 'Job ' + (e.status || '').toLowerCase() + suffix
          : (e.description || '') + ' ' + statusWord(e.status) + suffix;
        break;
      case 'build':
        if (e.step !== 'Build') {
          return null;
        }
        l.phase = 'build';
        l.unit = e.artifact || '';
        l.status = e.status || '';
        l.text = 'Build ' + l.unit + ' ' + statusWord(e.status) + suffix;
        break;
      case 'deploy':
        l.phase = 'deploy';
        l.status = e.status || '';
        l.text = 'Helm deploy ' + statusWord(e.status) + suffix;
        break;
      case 'statusCheck':
        l.phase = 'status-check';
        l.unit = e.resource || '';
        l.status = e.status || '';
        l.text = (l.unit + ': ' + (e.message || '') + suffix).trim();
        break;
      default:
        return null;
    }
    if (l.status === 'Failed') {
      l.level = 'ERROR';
    }
    return l;
  }

  // unitMessage is what a status check line says of its resource.
  function unitMessage(l) {
    if (l.phase !== 'status-check') {
      return '';
    }
    return l.text.startsWith(l.unit + ': ') ? l.text.slice(l.unit.length + 2) : l.text;
  }

  // --- one job -------------------------------------------------------

  function followJob() {
    const repository = data.repository;
    const jobID = data.job;
    let iteration = Number(data.iteration) || 0;
    const log = document.getElementById('log');
    const logLine = document.getElementById('log-line-template');
    const unitTemplate = document.getElementById('unit-template');
    const maxLines = 5000;
    let stream = null;
    let ended = false;

    const phaseEl = (name) => document.querySelector('.phase[data-phase="' + name + '"]');

    const setPhase = (name, status) => {
      const el = phaseEl(name);
      if (!el) {
        return;
      }
      const badge = el.querySelector('.phase-status .badge');
      if (badge && badge.dataset.status !== status) {
        setBadge(badge, status);
        announce('pipeline-announce', el.querySelector('h3').textContent + ': ' + statusLabel(status));
      }
    };

    const setUnit = (phase, unit, status, message) => {
      const el = phaseEl(phase);
      if (!el || !unit || !unitTemplate) {
        return;
      }
      let li = Array.from(el.querySelectorAll('.unit')).find((u) => u.dataset.unit === unit);
      if (!li) {
        li = unitTemplate.content.firstElementChild.cloneNode(true);
        li.dataset.unit = unit;
        li.querySelector('.unit-name').textContent = unit;
        el.querySelector('.units').append(li);
      }
      if (status) {
        setBadge(li.querySelector('.unit-status'), status);
      }
      if (message) {
        li.querySelector('.unit-message').textContent = message;
      }
    };

    const appendLog = (l, seq) => {
      if (!log || !logLine) {
        return;
      }
      const nearBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
      const line = logLine.content.firstElementChild.cloneNode(true);
      line.classList.add('lvl-' + l.level.toLowerCase());
      if (seq) {
        line.dataset.seq = String(seq);
      }
      const t = line.querySelector('time');
      if (l.time) {
        t.dateTime = l.time;
        t.textContent = formatWhen(l.time).slice(11, 19);
      }
      line.querySelector('.tag').textContent = l.phase;
      line.querySelector('.unit').textContent = l.unit;
      line.querySelector('.text').textContent = l.text;
      log.append(line);
      while (log.childElementCount > maxLines) {
        log.firstElementChild.remove();
      }
      const empty = document.getElementById('log-empty');
      if (empty) {
        empty.hidden = true;
      }
      if (nearBottom) {
        log.scrollTop = log.scrollHeight;
      }
    };

    const setJobStatus = (status) => {
      const el = document.getElementById('job-status');
      const badge = el && el.querySelector('.badge');
      if (badge && badge.dataset.status !== status) {
        setBadge(badge, status);
        announce('pipeline-announce', 'Job ' + statusLabel(status));
      }
    };

    const showError = (status, message) => {
      const box = document.getElementById('job-error');
      if (!box || !message) {
        return;
      }
      document.getElementById('job-error-heading').textContent =
        status === 'canceled' ? 'Why it was canceled' : 'Why it failed';
      document.getElementById('job-error-text').textContent = message;
      box.hidden = false;
    };

    // show applies the job's record: the authoritative status, times,
    // error and what its buttons may do.
    const show = (job) => {
      if (ended && !FINISHED.includes(job.status)) {
        return; // the events said it ended; this record is older news
      }
      if (job.iteration > 0) {
        iteration = job.iteration;
        document.getElementById('job-name').textContent = jobName(job);
        document.title = 'Job ' + jobName(job) + ' of ' + repository + ' · kube-git-deploy';
      }
      setJobStatus(job.status);
      setTime(document.getElementById('job-started'), job.started_at);
      setTime(document.getElementById('job-finished'), job.finished_at);
      const took = document.getElementById('job-took');
      const d = formatDuration(job.started_at, job.finished_at);
      if (took && d) {
        took.textContent = d;
      }
      for (const p of job.phases || []) {
        setPhase(p.name, p.status);
      }
      if (FINISHED.includes(job.status)) {
        for (const badge of document.querySelectorAll('.phase-status .badge')) {
          if (!badge.dataset.status || badge.dataset.status === 'NotStarted') {
            setBadge(badge, 'NotRun');
          }
        }
      }
      if (job.error) {
        showError(job.status, job.error);
      }
      const canRollback = job.status === 'succeeded' && Object.keys(job.images || {}).length > 0;
      for (const id of ['rollback', 'rollback-help']) {
        const el = document.getElementById(id);
        if (el) {
          el.hidden = !canRollback;
        }
      }
    };

    // finish reads the job's record until it tells how the job ended,
    // then stops following.
    const finish = async () => {
      if (ended) {
        return;
      }
      ended = true;
      if (stream) {
        stream.stop();
      }
      for (let attempt = 0; attempt < 8; attempt++) {
        try {
          const job = await fetchJob(repository, jobID);
          show(job);
          if (FINISHED.includes(job.status)) {
            return;
          }
        } catch (e) {
          setConnection('Could not read the job: ' + e.message);
        }
        await sleep(500 * (attempt + 1));
      }
    };

    const ofIteration = (e) => {
      if (e.iteration !== undefined) {
        return Number(e.iteration) === iteration;
      }
      const task = field(e, 'task_id', 'taskId') || '';
      return task.endsWith('-' + iteration);
    };

    const onEvent = (ev) => {
      const [type, e] = eventOf(ev);
      if (!type) {
        return;
      }
      if (type === 'meta') {
        const add = field(e.metadata, 'additional') || {};
        if (add.job_id !== jobID) {
          return;
        }
        iteration = Number(add.iteration) || iteration;
        setJobStatus('running');
        fetchJob(repository, jobID).then(show, () => {});
      } else if (!iteration || !ofIteration(e)) {
        return;
      }
      const line = lineOf(ev, type, e);
      if (!line) {
        return;
      }
      appendLog(line, field(ev, 'kgd_sequence', 'kgdSequence'));
      if (type === 'task') {
        if (e.task === 'DevLoop') {
          const status = (e.status || '').toLowerCase();
          setJobStatus(status);
          showError(status, errorOf(e));
          finish();
        } else if (line.phase) {
          setPhase(line.phase, e.status);
        }
      } else if (line.unit && line.status && line.phase) {
        setUnit(line.phase, line.unit, line.status, unitMessage(line));
      }
    };

    if (data.ended === 'true') {
      if (!FINISHED.includes(data.status)) {
        finish(); // the log ended; the record catches up
      }
      return;
    }
    stream = follow(repository, data.since || '', onEvent);
  }

  // --- operators' buttons --------------------------------------------

  function setupActions() {
    const say = (text) => announce('action-status', text);
    const buttons = [
      ['rerun', 'Starting a rerun…', null],
      ['rollback', 'Starting a rollback…', 'Deploy the images of this job again (roll back)?'],
    ];
    for (const [id, starting, question] of buttons) {
      const button = document.getElementById(id);
      if (!button) {
        continue;
      }
      button.addEventListener('click', async () => {
        if (question && !window.confirm(question)) {
          return;
        }
        button.disabled = true;
        button.setAttribute('aria-busy', 'true');
        say(starting);
        try {
          const resp = await fetch(button.dataset.url, {
            method: 'POST',
            headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
            body: '{}',
            cache: 'no-store',
          });
          if (!resp.ok) {
            throw await apiError(resp);
          }
          const job = await resp.json();
          say('Started job ' + jobName(job) + '; opening it…');
          window.location.assign(jobPageURL(job));
        } catch (e) {
          say('Could not start it: ' + e.message);
          button.disabled = false;
          button.removeAttribute('aria-busy');
        }
      });
    }
  }

  if (data.page === 'repository') {
    followRepository();
  } else if (data.page === 'job') {
    setupActions();
    followJob();
  }
})();
