// The auditor: find cases, read and export a case's audit trail, download a case's signed archive
// and have the server's verifier (the same as `cloudhelp verify`) check it or any archive file,
// and read the transparency log's current signed checkpoint.
import { h, fill, api, say, errorText, fmtDateTime, field, session, ApiError } from '../core.js';
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
  const archiveSlot = h('div', { id: 'archive-case' }, h('p', { class: 'muted' }, t('auditor.archive_pick')));
  const report = h('div', { id: 'verify-report' });
  const checkpoint = h('pre', { id: 'log-checkpoint', translate: 'no', hidden: true });
  const fileInput = h('input', { type: 'file', accept: '.zip,.json,application/zip,application/json', name: 'archive-file' });
  fileInput.addEventListener('change', () => { if (fileInput.files[0]) verify(fileInput.files[0]); });
  const checkpointButton = h('button', { type: 'button', id: 'show-checkpoint' }, t('auditor.log_checkpoint'));
  checkpointButton.addEventListener('click', async () => {
    try {
      checkpoint.textContent = await api('GET', '/log/checkpoint');
      checkpoint.hidden = false;
    } catch (err) {
      say(report, 'error', errorText(err));
    }
  });
  const archiveCard = h('section', { class: 'card', id: 'archive-card' },
    h('h2', {}, t('auditor.archive_title')),
    archiveSlot,
    field(t('auditor.archive_file'), fileInput),
    report,
    h('div', { class: 'row' }, checkpointButton),
    checkpoint);

  /** Sends an archive to the server's verifier and shows every check. */
  async function verify(blob) {
    say(report, 'info', t('auditor.verifying'));
    try {
      const res = await fetch('/api/verify', { method: 'POST', body: blob, credentials: 'same-origin', headers: { 'X-CSRF-Token': session.csrf, 'Content-Type': 'application/zip' } });
      if (!res.ok) {
        const err = await res.json().catch(() => ({}));
        throw new ApiError(res.status, err.code || `http_${res.status}`, err.message);
      }
      const result = await res.json();
      fill(report,
        h('p', { class: `notice ${result.valid ? 'ok' : 'error'}`, id: 'verify-verdict', dataset: { valid: String(result.valid) } },
          result.valid ? t('auditor.valid') : t('auditor.invalid')),
        h('div', { class: 'table-wrap' }, h('table', { class: 'trail' },
          h('tbody', {}, result.checks.map((c) => h('tr', { class: c.passed ? 'pass' : 'fail' },
            h('td', {}, c.passed ? '✔' : '✘'),
            h('td', {}, h('code', { translate: 'no' }, c.name)),
            h('td', {}, h('span', { translate: 'no' }, c.detail))))))));
    } catch (err) {
      say(report, 'error', errorText(err));
    }
  }

  /** The archive of the selected case: download, or verify at once. */
  async function showArchive(c) {
    fill(archiveSlot, h('p', { class: 'muted' }, t('common.loading')));
    const res = await fetch(`/api/cases/${c.id}/archive`, { credentials: 'same-origin' }).catch(() => null);
    if (!res || !res.ok) {
      fill(archiveSlot, h('p', { class: 'muted' }, res?.status === 404 ? t('auditor.no_archive') : t('err.network')));
      return;
    }
    const blob = await res.blob();
    const url = URL.createObjectURL(blob);
    const verifyButton = h('button', { type: 'button', class: 'primary', id: 'verify-archive' }, t('auditor.archive_verify'));
    verifyButton.addEventListener('click', () => verify(blob));
    fill(archiveSlot,
      h('p', {}, t('auditor.archive_of'), ' ', h('span', { translate: 'no' }, c.number), ' · SHA-256 ',
        h('code', { translate: 'no', id: 'archive-sha256' }, res.headers.get('x-content-sha256') || '')),
      h('div', { class: 'row' },
        h('a', { class: 'button', href: url, download: `${c.number}.zip`, id: 'download-archive' }, t('auditor.archive_download')),
        verifyButton));
  }

  fill(view,
    h('section', { class: 'card' },
      h('h1', {}, t('auditor.title')),
      h('div', { class: 'row' }, field(t('auditor.search'), search), field(t('auditor.state'), state)),
      message, results),
    h('section', { class: 'card' }, detail),
    archiveCard);

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
    showArchive(c);
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
