// The supervisor: today's figures per department and service point with a chart, the live queue
// of every department, and the follow-ups of bad ratings (整改反馈) with overdue marking.
import { h, fill, api, say, errorText, fmtDuration, fmtDateTime, field, busy, notice } from '../core.js';
import { t } from '../i18n.js';
import { queueTable } from './queue.js';

const SVG = 'http://www.w3.org/2000/svg';

/** The day (YYYY-MM-DD) in China Standard Time, as the server's default period. */
function todayCst() {
  return new Date(Date.now() + 8 * 3600e3).toISOString().slice(0, 10);
}

export async function renderSupervisor(view, _params, { live }) {
  const date = h('input', { type: 'date', value: todayCst(), name: 'date' });
  const figures = h('div', { id: 'figures' });
  const followups = h('div', { id: 'followups' });
  const message = h('div');
  const queue = queueTable({ showDepartment: true });
  date.addEventListener('change', loadFigures);
  fill(view,
    h('section', { class: 'card' },
      h('div', { class: 'row spread' }, h('h1', {}, t('sup.title')), field(t('sup.date'), date)),
      message, figures),
    h('section', { class: 'card' }, h('h2', {}, t('sup.queue')), queue.el),
    h('section', { class: 'card' }, h('h2', {}, t('sup.followups')), followups));

  async function loadFigures() {
    const day = date.value || todayCst();
    const from = `${day}T00:00:00+08:00`;
    const next = new Date(`${day}T00:00:00+08:00`).getTime() + 86400e3;
    const to = new Date(next).toISOString();
    try {
      const report = await api('GET', `/stats?from=${encodeURIComponent(from)}&to=${encodeURIComponent(to)}`);
      say(message, null, '');
      fill(figures,
        h('p', { class: 'muted' }, t('sup.target', { m: report.target_minutes })),
        totals(report.total),
        h('h2', {}, t('sup.by_department')), figuresTable(report.by_department, report.target_minutes),
        waitingChart(report.by_department),
        h('h2', {}, t('sup.by_point')), figuresTable(report.by_point, report.target_minutes),
        ratingsChart(report.total.ratings));
    } catch (err) {
      say(message, 'error', errorText(err));
    }
  }

  async function loadFollowups() {
    try {
      const list = await api('GET', '/followups');
      fill(followups, list.length ? list.map((f) => followupRow(f, loadFollowups)) : h('p', { class: 'muted' }, t('sup.followups_none')));
    } catch (err) {
      fill(followups, notice('error', errorText(err)));
    }
  }

  await Promise.all([loadFigures(), loadFollowups()]);
  queue.seed(() => api('GET', '/queue')).catch((err) => say(message, 'error', errorText(err)));
  const refresh = setInterval(() => { loadFigures(); loadFollowups(); }, 60000);
  const unsubscribe = live.subscribe((msg) => {
    queue.handle(msg);
    if (msg.type === 'live.reconnected') { loadFigures(); loadFollowups(); }
  });
  return () => { clearInterval(refresh); unsubscribe(); };
}

function share(x) {
  return x === null || x === undefined ? '—' : `${Math.round(x * 100)}%`;
}

function totals(f) {
  const tile = (label, value) => h('div', { class: 'tile' }, h('span', { class: 'muted' }, label), h('strong', {}, value));
  return h('div', { class: 'tiles' },
    tile(t('sup.cases'), String(f.cases)),
    tile(t('sup.finished'), String(f.finished)),
    tile(t('sup.wait_median'), fmtDuration(f.waiting_median_seconds)),
    tile(t('sup.wait_p90'), fmtDuration(f.waiting_p90_seconds)),
    tile(t('sup.simple_share'), share(f.simple_within_target_share)));
}

function figuresTable(groups, target) {
  const names = Object.keys(groups);
  if (!names.length) return h('p', { class: 'muted' }, t('sup.no_cases'));
  return h('div', { class: 'table-wrap' }, h('table', { class: 'figures' },
    h('thead', {}, h('tr', {}, [t('sup.group'), t('sup.cases'), t('sup.finished'), t('sup.wait_median'), t('sup.wait_p90'), t('sup.handling_median'), t('sup.simple_share_short', { m: target }), t('sup.ratings')].map((c) => h('th', {}, c)))),
    h('tbody', {}, names.map((name) => {
      const f = groups[name];
      return h('tr', {},
        h('th', { scope: 'row' }, name),
        h('td', {}, String(f.cases)), h('td', {}, String(f.finished)),
        h('td', {}, fmtDuration(f.waiting_median_seconds)), h('td', {}, fmtDuration(f.waiting_p90_seconds)),
        h('td', {}, fmtDuration(f.handling_median_seconds)),
        h('td', {}, f.simple_cases ? `${share(f.simple_within_target_share)}（${f.simple_within_target}/${f.simple_cases}）` : '—'),
        h('td', {}, f.ratings.map((n, i) => t('sup.rating_n', { s: i + 1, n })).join(' ')));
    }))));
}

function svg(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  for (const c of children) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

/** Bars of waiting median and p90 per department, in minutes (inline SVG). */
function waitingChart(groups) {
  const names = Object.keys(groups);
  if (!names.length) return null;
  const rowH = 34;
  const left = 110;
  const width = 600;
  const max = Math.max(60, ...names.map((n) => groups[n].waiting_p90_seconds || 0));
  const scale = (s) => ((width - left - 70) * (s || 0)) / max;
  const chart = svg('svg', { viewBox: `0 0 ${width} ${names.length * rowH + 30}`, class: 'chart', role: 'img', 'aria-label': t('sup.chart_wait') });
  names.forEach((name, i) => {
    const f = groups[name];
    const y = i * rowH + 6;
    chart.append(
      svg('text', { x: 0, y: y + 16, class: 'chart-label' }, name),
      svg('rect', { x: left, y, width: Math.max(1, scale(f.waiting_p90_seconds)), height: 12, class: 'bar-p90' }),
      svg('rect', { x: left, y: y + 13, width: Math.max(1, scale(f.waiting_median_seconds)), height: 12, class: 'bar-median' }),
      svg('text', { x: left + scale(f.waiting_p90_seconds) + 6, y: y + 11, class: 'chart-value' }, fmtDuration(f.waiting_p90_seconds)),
      svg('text', { x: left + scale(f.waiting_median_seconds) + 6, y: y + 24, class: 'chart-value' }, fmtDuration(f.waiting_median_seconds)));
  });
  const legendY = names.length * rowH + 20;
  chart.append(
    svg('rect', { x: left, y: legendY - 9, width: 10, height: 10, class: 'bar-median' }), svg('text', { x: left + 14, y: legendY, class: 'chart-value' }, t('sup.wait_median')),
    svg('rect', { x: left + 120, y: legendY - 9, width: 10, height: 10, class: 'bar-p90' }), svg('text', { x: left + 134, y: legendY, class: 'chart-value' }, t('sup.wait_p90')));
  return h('figure', { class: 'chart-box' }, h('figcaption', {}, t('sup.chart_wait')), chart);
}

/** The rating distribution (1–5 stars) of the period. */
function ratingsChart(ratings) {
  const total = ratings.reduce((a, b) => a + b, 0);
  const width = 600;
  const max = Math.max(1, ...ratings);
  const chart = svg('svg', { viewBox: `0 0 ${width} 150`, class: 'chart', role: 'img', 'aria-label': t('sup.chart_ratings') });
  ratings.forEach((n, i) => {
    const barH = (100 * n) / max;
    const x = 40 + i * 110;
    chart.append(
      svg('rect', { x, y: 115 - barH, width: 60, height: Math.max(1, barH), class: i < 2 ? 'bar-bad' : 'bar-good' }),
      svg('text', { x: x + 30, y: 110 - barH, class: 'chart-value', 'text-anchor': 'middle' }, String(n)),
      svg('text', { x: x + 30, y: 135, class: 'chart-label', 'text-anchor': 'middle' }, t('sup.stars', { n: i + 1 })));
  });
  return h('figure', { class: 'chart-box', id: 'ratings-chart', dataset: { total: String(total) } }, h('figcaption', {}, t('sup.chart_ratings'), `（${t('sup.rated', { n: total })}）`), chart);
}

function followupRow(f, reload) {
  const outcome = h('textarea', { rows: 2, maxlength: 2000, name: 'outcome' });
  const slot = h('div');
  const go = h('button', { type: 'submit', class: 'primary' }, t('sup.close'));
  const form = h('form', { class: 'action' }, field(t('sup.outcome'), outcome), go, slot);
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    if (!outcome.value.trim()) { say(slot, 'error', t('sup.outcome_required')); return; }
    busy(go, slot, async () => { await api('POST', `/followups/${f.id}/close`, { outcome: outcome.value.trim() }); await reload(); });
  });
  return h('div', { class: `followup${f.overdue ? ' overdue' : ''}`, dataset: { followupId: String(f.id), caseId: String(f.case_id) } },
    h('div', { class: 'row spread' },
      h('a', { href: `#/case/${f.case_id}`, translate: 'no', class: 'number' }, f.case_number),
      f.overdue ? h('span', { class: 'badge overdue' }, t('sup.overdue')) : h('span', { class: 'muted' }, t('sup.due', { at: fmtDateTime(f.due_at) }))),
    h('p', {}, t('sup.score', { n: f.score }), f.comment ? `：${f.comment}` : ''),
    form);
}
