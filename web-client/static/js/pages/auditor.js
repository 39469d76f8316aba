// The auditor: find cases, read and export a case's audit trail. Archive download, verification
// and the transparency-log checkpoint come with the signed-archive work: their place is marked,
// not imitated.
import { h, fill, api, say, errorText, fmtDateTime, field } from '../core.js';
import { t } from '../i18n.js';
import { stateBadge } from './case.js';

export async function renderAuditor(view, params) {
  const search = h('input', { type: 'search', name: 'search', placeholder: t('auditor.search_hint') });
  const state = h('select', { name: 'state' }, h('option', { value: '' }, t('auditor.any_state')),
    ['waiting', 'in_call', 'awaiting_material', 'approved', 'rejected', 'issued', 'cancelled'].map((s) => h('option', { value: s }, t(`state.${s}`))));
  const results = h('div', { class: 'case-list', id: 'audit-cases' });
  const detail = h('div', { id: 'audit-detail' });
  const message = h('div');
  let cases = [];
  fill(view,
    h('section', { class: 'card' },
      h('h1', {}, t('auditor.title')),
      h('div', { class: 'row' }, field(t('auditor.search'), search), field(t('auditor.state'), state)),
      message, results),
    h('section', { class: 'card' }, detail),
    h('section', { class: 'card coming', id: 'archive-placeholder' },
      h('h2', {}, t('auditor.archive_title')),
      h('p', {}, t('auditor.archive_coming')),
      h('div', { class: 'row' },
        h('button', { type: 'button', disabled: true }, t('auditor.archive_download')),
        h('button', { type: 'button', disabled: true }, t('auditor.archive_verify')),
        h('button', { type: 'button', disabled: true }, t('auditor.log_checkpoint')))));

  function draw() {
    const q = search.value.trim().toLowerCase();
    const shown = cases.filter((c) => !q || [c.number, c.item_name, c.point_name, c.department_name].some((v) => v.toLowerCase().includes(q)));
    fill(results, shown.length ? shown.slice(0, 200).map((c) => h('button', { type: 'button', class: 'case-row', dataset: { caseId: String(c.id) }, onclick: () => showTrail(c) },
      h('span', { class: 'number', translate: 'no' }, c.number), h('span', {}, c.item_name), stateBadge(c.state), h('span', { class: 'muted' }, `${c.point_name} · ${fmtDateTime(c.opened_at)}`))) : h('p', { class: 'muted' }, t('auditor.none')));
  }

  async function load() {
    try {
      cases = await api('GET', `/cases${state.value ? `?state=${state.value}` : ''}`);
      say(message, null, '');
      draw();
    } catch (err) {
      say(message, 'error', errorText(err));
    }
  }

  async function showTrail(c) {
    fill(detail, h('p', { class: 'muted' }, t('common.loading')));
    try {
      const text = await api('GET', `/audit?case_id=${c.id}`);
      const events = text.split('\n').filter(Boolean).map((line) => JSON.parse(line));
      const blob = new Blob([text], { type: 'application/x-ndjson' });
      const url = URL.createObjectURL(blob);
      fill(detail,
        h('div', { class: 'row spread' }, h('h2', {}, t('auditor.trail'), ' ', h('span', { translate: 'no' }, c.number)),
          h('a', { class: 'button primary', href: url, download: `audit-${c.number}.jsonl`, id: 'export-trail' }, t('auditor.export'))),
        h('div', { class: 'table-wrap' }, h('table', { class: 'trail' },
          h('thead', {}, h('tr', {}, [t('auditor.at'), t('auditor.actor'), t('auditor.event'), t('auditor.details')].map((x) => h('th', {}, x)))),
          h('tbody', {}, events.map((e) => h('tr', { dataset: { kind: e.kind } },
            h('td', {}, fmtDateTime(e.at)),
            h('td', {}, e.actor_role ? `${t(`role.${e.actor_role}`)} #${e.actor_id}` : t('auditor.system')),
            h('td', {}, t(`event.${e.kind}`, {}, null) || h('code', { translate: 'no' }, e.kind)),
            h('td', {}, h('code', { translate: 'no', class: 'details' }, JSON.stringify(e.details)))))))));
    } catch (err) {
      say(detail, 'error', errorText(err));
    }
  }

  search.addEventListener('input', draw);
  state.addEventListener('change', load);
  await load();
  if (params.case) {
    const c = cases.find((x) => String(x.id) === params.case);
    if (c) showTrail(c);
  }
}
