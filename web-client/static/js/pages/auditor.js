// The auditor: find cases, read a case's audit trail as plain lines and export it, download each
// of the case's signed archives (the decision and what was sealed after it) and have the server's
// verifier (the same as `cloudhelp verify`) check one or any archive file, as a report in plain
// words that can be printed, and read the transparency log's signed checkpoint with what it proves.
import { h, fill, api, say, errorText, fmtDateTime, field, session, ApiError } from '../core.js';
import { t } from '../i18n.js';
import { stateBadge } from './case.js';

/** Every check the verifier can report, in its order, so that each has a name in plain words. */
export const CHECKS = [
  'archive.open', 'receipt.format', 'zip.container', 'zip.entry_names', 'bag.entries', 'zip.contents',
  'bag.declaration', 'bag.payload_manifest', 'bag.tag_manifest', 'statement.canonical', 'bag.info',
  'statement.tag_manifest_digest', 'statement.files', 'statement.decision', 'keys.file', 'keys.approver',
  'statement.continuation', 'keys.seal', 'signature.approver', 'signature.seal', 'log.checkpoint',
  'log.statement_inclusion', 'log.approver_key_registered', 'log.approver_key_not_revoked',
  'log.seal_key_registered', 'log.seal_key_not_revoked', 'chain.previous', 'chain.files',
];

/** Detail fields of audit events, in the order they are read out. */
const DETAIL_ORDER = ['reason', 'methods', 'to', 'department', 'expert_id', 'score', 'comment', 'outcome', 'filename',
  'media_type', 'size', 'kind', 'sequence', 'log_index', 'approver_key', 'followup_id', 'due_at'];

function detailValue(key, value) {
  if (value === null || value === undefined || value === '') return null;
  if (key === 'methods' && Array.isArray(value)) return value.map((m) => t(`identity.${m}`, {}, m)).join('、');
  if (key === 'kind') return t(`chain.${value}`, {}, String(value));
  if (key === 'due_at') return fmtDateTime(value);
  if (/sha256$/.test(key) && typeof value === 'string') return `${value.slice(0, 12)}…`;
  if (typeof value === 'object') return JSON.stringify(value);
  return String(value);
}

/** Detail values said in words (the rest are codes, names and digests, shown as they are). */
const WORDED = new Set(['methods', 'kind', 'due_at', 'consented', 'consent', 'recording']);

/** An audit event's details as one readable line: 「理由：…；评分：…」 (nodes for a table cell). */
export function describeDetails(details) {
  if (!details || typeof details !== 'object') return [];
  const keys = Object.keys(details).sort((a, b) => {
    const [x, y] = [DETAIL_ORDER.indexOf(a), DETAIL_ORDER.indexOf(b)];
    return (x < 0 ? 99 : x) - (y < 0 ? 99 : y) || a.localeCompare(b);
  });
  const parts = [];
  for (const k of keys) {
    const v = typeof details[k] === 'boolean' ? t(details[k] ? 'common.yes' : 'common.no') : detailValue(k, details[k]);
    if (v === null) continue;
    const label = t(`detail.${k}`, {}, null);
    if (parts.length) parts.push('；');
    parts.push(label ?? h('span', { translate: 'no' }, k), '：',
      WORDED.has(k) || typeof details[k] === 'boolean' ? v : h('span', { translate: 'no' }, v));
  }
  return parts;
}

/** Who did it: 「王审批（审批员）」, or 系统. */
function actorText(e) {
  if (!e.actor_role) return t('auditor.system');
  const role = t(`role.${e.actor_role}`);
  return e.actor_name ? `${e.actor_name}（${role}）` : `${role} #${e.actor_id}`;
}

/** The signed checkpoint note, read: origin, size, root hash, signer key names. */
export function readCheckpoint(note) {
  const [body, signatures = ''] = note.split('\n\n');
  const [origin, size, root] = body.split('\n');
  const signers = signatures.split('\n').filter((l) => l.startsWith('— ')).map((l) => l.slice(2).split(' ')[0]);
  return { origin, size: Number(size), root, signers };
}

export async function renderAuditor(view, params) {
  const search = h('input', { type: 'search', name: 'search', placeholder: t('auditor.search_hint') });
  const state = h('select', { name: 'state' }, h('option', { value: '' }, t('auditor.any_state')),
    ['waiting', 'in_call', 'awaiting_material', 'approved', 'rejected', 'issued', 'cancelled'].map((s) => h('option', { value: s }, t(`state.${s}`))));
  const results = h('div', { class: 'case-list', id: 'audit-cases' });
  const detail = h('div', { id: 'audit-detail' });
  const detailCard = h('section', { class: 'card', id: 'audit-detail-card', hidden: true }, detail);
  const message = h('div');
  let cases = [];
  const archiveSlot = h('div', { id: 'archive-case' }, h('p', { class: 'muted' }, t('auditor.archive_pick')));
  const report = h('div', { id: 'verify-report' });
  const checkpoint = h('div', { id: 'log-checkpoint', hidden: true });
  const fileInput = h('input', { type: 'file', accept: '.zip,.json,application/zip,application/json', name: 'archive-file' });
  fileInput.addEventListener('change', () => {
    const file = fileInput.files[0];
    if (file) verify(file, { source: file.name });
  });
  const checkpointButton = h('button', { type: 'button', id: 'show-checkpoint' }, t('auditor.log_checkpoint'));
  checkpointButton.addEventListener('click', showCheckpoint);
  const archiveCard = h('section', { class: 'card', id: 'archive-card' },
    h('h2', {}, t('auditor.archive_title')),
    archiveSlot,
    field(t('auditor.archive_file'), fileInput),
    report,
    h('div', { class: 'row' }, checkpointButton),
    checkpoint);

  /** The log's current checkpoint, explained: what it is, what it proves, and the note itself. */
  async function showCheckpoint() {
    try {
      const note = await api('GET', '/log/checkpoint');
      const cp = readCheckpoint(note);
      fill(checkpoint,
        h('h3', {}, t('auditor.cp_title')),
        h('dl', { class: 'facts' },
          h('dt', {}, t('auditor.cp_origin')), h('dd', { translate: 'no' }, cp.origin),
          h('dt', {}, t('auditor.cp_size')), h('dd', { id: 'checkpoint-size' }, t('auditor.cp_entries', { n: cp.size })),
          h('dt', {}, t('auditor.cp_root')), h('dd', {}, h('code', { translate: 'no' }, cp.root)),
          h('dt', {}, t('auditor.cp_signed_by')), h('dd', { translate: 'no' }, cp.signers.join('、')),
          h('dt', {}, t('auditor.cp_fetched')), h('dd', {}, fmtDateTime(new Date().toISOString()))),
        h('p', { id: 'checkpoint-meaning' }, t('auditor.cp_meaning', { n: cp.size })),
        h('p', { class: 'muted' }, t('auditor.cp_keep', { cmd: 'cloudhelp log consistency' })),
        h('details', {}, h('summary', {}, t('auditor.cp_raw')), h('pre', { translate: 'no' }, note)));
      checkpoint.hidden = false;
    } catch (err) {
      say(report, 'error', errorText(err));
    }
  }

  /** Sends an archive to the server's verifier and shows every check in plain words. */
  async function verify(blob, about) {
    say(report, 'info', t('auditor.verifying'));
    try {
      const res = await fetch('/api/verify', { method: 'POST', body: blob, credentials: 'same-origin', headers: { 'X-CSRF-Token': session.csrf, 'Content-Type': 'application/zip' } });
      if (!res.ok) {
        const err = await res.json().catch(() => ({}));
        throw new ApiError(res.status, err.code || `http_${res.status}`, err.message);
      }
      const result = await res.json();
      const sha256 = await digest(blob);
      const at = new Date().toISOString();
      const printButton = h('button', { type: 'button', id: 'print-report' }, t('auditor.print'));
      printButton.addEventListener('click', () => window.print());
      fill(report,
        h('div', { class: 'print-report', id: 'verification-report' },
          h('h3', {}, t('auditor.report_title')),
          h('dl', { class: 'facts' },
            h('dt', {}, t('auditor.report_file')), h('dd', { translate: 'no' }, about.source),
            about.what ? [h('dt', {}, t('auditor.report_what')), h('dd', {}, about.what)] : null,
            h('dt', {}, 'SHA-256'), h('dd', {}, h('code', { translate: 'no', id: 'report-sha256' }, sha256)),
            h('dt', {}, t('auditor.report_at')), h('dd', {}, fmtDateTime(at)),
            h('dt', {}, t('auditor.report_by')), h('dd', {}, session.user.display_name)),
          h('p', { class: `notice ${result.valid ? 'ok' : 'error'}`, id: 'verify-verdict', dataset: { valid: String(result.valid) } },
            result.valid ? t('auditor.valid') : t('auditor.invalid')),
          h('div', { class: 'table-wrap' }, h('table', { class: 'trail', id: 'verify-checks' },
            h('thead', {}, h('tr', {}, [t('auditor.check_result'), t('auditor.check_name'), t('auditor.check_proves')].map((x) => h('th', {}, x)))),
            h('tbody', {}, result.checks.map((c) => h('tr', { class: c.passed ? 'pass' : 'fail', dataset: { check: c.name } },
              h('td', {}, c.passed ? `✔ ${t('auditor.pass')}` : `✘ ${t('auditor.fail')}`),
              h('td', {}, t(`check.${c.name}`, {}, c.name)),
              h('td', {}, t(`check_proves.${c.name}`, {}, ''),
                h('details', { class: 'technical' }, h('summary', {}, t('auditor.technical')),
                  h('code', { translate: 'no' }, c.name), ' ', h('span', { translate: 'no', lang: 'en' }, c.detail)),
                // On paper there is no switch: the detail is printed under each check.
                h('span', { class: 'technical-print', translate: 'no', lang: 'en' }, `${c.name}: ${c.detail}`))))))),
          h('p', { class: 'muted' }, t('auditor.report_offline', { cmd: `cloudhelp verify ${about.source} --trust trust.json` }))),
        h('div', { class: 'row no-print' }, printButton));
    } catch (err) {
      say(report, 'error', errorText(err));
    }
  }

  /** The case's sealed archives: its decision and each step sealed after it, to download or verify. */
  async function showArchives(c) {
    fill(archiveSlot, h('p', { class: 'muted' }, t('common.loading')));
    try {
      const full = await api('GET', `/cases/${c.id}`);
      if (!full.statements.length) {
        fill(archiveSlot, h('p', { class: 'muted' }, t('auditor.no_archive')));
        return;
      }
      const newest = full.statements[full.statements.length - 1];
      fill(archiveSlot,
        h('p', {}, t('auditor.chain_intro', { number: c.number, n: full.statements.length })),
        h('ol', { class: 'chain', id: 'archive-chain' }, full.statements.map((s) => {
          const stem = s.sequence === 1 ? c.number : `${c.number}-${s.sequence}-${s.kind}`;
          const what = `${t(`chain.${s.kind}`)} · ${t('case.chain_detail', { index: s.log_index, at: fmtDateTime(s.sealed_at) })}`;
          const verifyButton = h('button', { type: 'button', class: s === newest ? 'primary' : '', dataset: { verifySequence: String(s.sequence) } },
            s === newest ? t('auditor.verify_newest') : t('auditor.archive_verify'));
          verifyButton.addEventListener('click', async () => {
            const blob = await download(c, s);
            if (blob) verify(blob, { source: `${stem}.zip`, what });
          });
          const downloadButton = h('button', { type: 'button', dataset: { downloadSequence: String(s.sequence) } }, t('auditor.archive_download'));
          downloadButton.addEventListener('click', async () => {
            const blob = await download(c, s);
            if (!blob) return;
            const a = h('a', { href: URL.createObjectURL(blob), download: `${stem}.zip` });
            document.body.append(a);
            a.click();
            a.remove();
          });
          return h('li', { dataset: { kind: s.kind } }, h('strong', {}, t(`chain.${s.kind}`)), ' ',
            h('span', { class: 'muted', translate: 'no' }, t('case.chain_detail', { index: s.log_index, at: fmtDateTime(s.sealed_at) })), ' ',
            downloadButton, ' ', verifyButton);
        })),
        h('p', { class: 'muted' }, t('auditor.chain_hint')));
    } catch (err) {
      say(archiveSlot, 'error', errorText(err));
    }
  }

  async function download(c, s) {
    const res = await fetch(`/api/cases/${c.id}/archive?sequence=${s.sequence}`, { credentials: 'same-origin' }).catch(() => null);
    if (!res || !res.ok) {
      say(report, 'error', res?.status === 404 ? t('auditor.no_archive') : t('err.network'));
      return null;
    }
    return res.blob();
  }

  fill(view,
    h('section', { class: 'card no-print' },
      h('h1', {}, t('auditor.title')),
      h('div', { class: 'row' }, field(t('auditor.search'), search), field(t('auditor.state'), state)),
      message, results),
    detailCard,
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
    showArchives(c);
    detailCard.hidden = false;
    fill(detail, h('p', { class: 'muted' }, t('common.loading')));
    try {
      const text = await api('GET', `/audit?case_id=${c.id}`);
      const events = text.split('\n').filter(Boolean).map((line) => JSON.parse(line));
      const blob = new Blob([text], { type: 'application/x-ndjson' });
      const url = URL.createObjectURL(blob);
      fill(detail,
        h('div', { class: 'row spread' }, h('h2', {}, t('auditor.trail'), ' ', h('span', { translate: 'no' }, c.number)),
          h('a', { class: 'button primary no-print', href: url, download: `audit-${c.number}.jsonl`, id: 'export-trail' }, t('auditor.export'))),
        h('div', { class: 'table-wrap' }, h('table', { class: 'trail', id: 'audit-trail' },
          h('thead', {}, h('tr', {}, [t('auditor.at'), t('auditor.actor'), t('auditor.event'), t('auditor.details')].map((x) => h('th', {}, x)))),
          h('tbody', {}, events.map((e) => h('tr', { dataset: { kind: e.kind } },
            h('td', {}, fmtDateTime(e.at)),
            h('td', { class: 'actor' }, actorText(e)),
            h('td', {}, t(`event.${e.kind}`, {}, null) || h('code', { translate: 'no' }, e.kind)),
            h('td', { class: 'details', title: JSON.stringify(e.details) }, describeDetails(e.details))))))));
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

/** SHA-256 of a blob, hex, for the printed report. */
async function digest(blob) {
  const bytes = await crypto.subtle.digest('SHA-256', await blob.arrayBuffer());
  return Array.from(new Uint8Array(bytes), (b) => b.toString(16).padStart(2, '0')).join('');
}
