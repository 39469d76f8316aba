// One case, as each role sees it: the facts, the call panel (js/call.js), the
// agent's camera and uploads, the materials viewer, and the actions the caller may take.
import { h, fill, api, say, notice, errorText, field, fmtDateTime, fmtDuration, waitingClock, session, uploadMaterial, sha256Hex, busy, departmentName, ApiError } from '../core.js';
import { t } from '../i18n.js';
import { CameraPanel } from '../media.js';
import { mountCallPanel } from '../call.js';
import { decide } from '../decision.js';
import { InvitationCard } from './resident.js';
import { SignaturePad, signatureAsk } from '../signature.js';
import { watermark } from '../watermark.js';

const FINAL = ['issued', 'rejected', 'cancelled'];
const OPEN_FOR_MATERIALS = ['waiting', 'in_call', 'awaiting_material'];

/** A coloured label of a case state. */
export function stateBadge(state) {
  return h('span', { class: `badge state-${state}`, dataset: { state } }, t(`state.${state}`));
}

export async function renderCase(view, { id }, { live, catalogue }) {
  const role = session.user.role;
  const caseId = Number(id);
  if (!Number.isInteger(caseId) || caseId <= 0) {
    fill(view, notice('error', t('err.case_not_found')));
    return null;
  }
  let current;
  try {
    current = await api('GET', `/cases/${caseId}`);
  } catch (err) {
    fill(view, h('section', { class: 'card' },
      notice('error', err instanceof ApiError && err.status === 404 ? t('err.case_not_found') : errorText(err)),
      h('p', {}, h('a', { href: '#/', class: 'button' }, t('common.back_home')))));
    return null;
  }

  const facts = h('section', { class: 'card case-facts' });
  const callSlot = h('section', { class: 'card call-slot' }, h('h2', {}, t('call.title')), h('div', { class: 'call-panel' }));
  const actions = h('section', { class: 'card case-actions' });
  const materialsCard = h('section', { class: 'card materials' });
  const pageMessage = h('div', { class: 'page-message' });
  const seesMaterials = role !== 'supervisor';
  // The approver holding the case may draw on a material in the call (标注).
  const annotate = role === 'approver'
    ? (materialId, slot) => call?.annotateMaterial(materialId).catch((err) => say(slot, 'error', errorText(err)))
    : null;
  const viewer = seesMaterials ? new MaterialsViewer(caseId, materialsCard, annotate) : null;
  let camera = null;
  let uploads = null;
  let call = null;
  let actionsKey = '';

  const layout = h('div', { class: 'case-page' }, pageMessage, facts, callSlot);
  // The case's agent or the approver holding it may invite the applicant to join from home.
  const mayInvite = (c) => OPEN_FOR_MATERIALS.includes(c.state)
    && ((role === 'agent' && c.agent.id === session.user.id) || (role === 'approver' && c.approver?.id === session.user.id));
  const invitations = role === 'agent' || role === 'approver' ? new InvitationCard(caseId) : null;
  if (invitations) layout.append(invitations.el);
  // The applicant signs on the agent's device when the approver asks for it there.
  const pad = role === 'agent' && current.agent.id === session.user.id ? new SignaturePad(caseId, 'agent') : null;
  if (pad) layout.append(pad.el);
  if (role === 'agent') {
    camera = new CameraPanel();
    uploads = new UploadList(caseId, () => viewer?.load());
    const captureButton = h('button', { type: 'button', class: 'primary', id: 'capture' }, t('media.capture'));
    const fileInput = h('input', { type: 'file', accept: 'image/jpeg,image/png,image/webp,image/heic,image/tiff,application/pdf', multiple: true, id: 'file-input' });
    const captureSlot = h('div');
    captureButton.addEventListener('click', () => busy(captureButton, captureSlot, async () => {
      const blob = await camera.capture();
      // The agent is holding a document to the camera: let the call show it legibly too.
      call?.showDocument?.();
      uploads.add(blob, captureName());
    }));
    fileInput.addEventListener('change', () => {
      for (const file of fileInput.files) uploads.add(file, file.name);
      fileInput.value = '';
    });
    layout.append(h('section', { class: 'card camera-card' },
      h('h2', {}, t('media.title')),
      camera.el,
      h('div', { class: 'row' }, captureButton, h('label', { class: 'button file-button' }, t('media.upload_file'), fileInput)),
      captureSlot,
      uploads.el));
    camera.start();
  }
  layout.append(actions);
  if (viewer) layout.append(materialsCard);
  else layout.append(h('section', { class: 'card' }, h('p', { class: 'muted' }, t('materials.not_for_supervisor'))));
  fill(view, layout);

  let shownState = current.state;
  function render() {
    renderFacts(facts, current);
    // Accepting (on this page) may give access to the materials: read them again.
    if (current.state !== shownState) {
      if (shownState === 'waiting') viewer?.load();
      shownState = current.state;
    }
    if (!call) {
      call = mountCallPanel(callSlot.querySelector('.call-panel'), {
        caseView: current, user: session.user, live, localStream: camera?.stream || null, getLocalStream: () => camera?.stream || null,
      });
    } else {
      call.update(current);
    }
    // The actions are drawn again only when what they depend on changed, so that a notice
    // arriving while someone types a reason does not wipe it.
    const key = JSON.stringify([current.state, current.identity_checked, current.approver?.id, current.experts.map((e) => e.id), current.residents?.map((r) => r.id), current.department_id]);
    if (key !== actionsKey) {
      actionsKey = key;
      renderActions(actions, current, { reload, catalogue });
    } else {
      actions.querySelector('#signature-ask')?.refresh();
    }
    pad?.refresh();
    if (camera) camera.el.closest('.camera-card').hidden = !OPEN_FOR_MATERIALS.includes(current.state);
    if (invitations) {
      invitations.el.hidden = !mayInvite(current);
      if (!invitations.el.hidden) invitations.load(); // an invitation accepted or withdrawn
    }
    viewer?.setChecklist(current.required_materials);
  }

  async function reload() {
    try {
      current = await api('GET', `/cases/${caseId}`);
      say(pageMessage, null, '');
      render();
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) {
        say(pageMessage, 'info', t('case.left_view'));
        actions.hidden = true;
      } else {
        say(pageMessage, 'error', errorText(err));
      }
    }
  }

  render();
  viewer?.load();
  const unsubscribe = live.subscribe((msg) => {
    if (msg.type === 'case.updated' && msg.case_id === caseId) reload();
    if (msg.type === 'material.added' && msg.case_id === caseId) viewer?.load();
    if (msg.type === 'live.reconnected') { reload(); viewer?.load(); }
  });
  return () => {
    unsubscribe();
    call?.dispose();
    camera?.stopTracks();
    viewer?.dispose();
  };
}

function captureName() {
  const d = new Date();
  const p = (n) => String(n).padStart(2, '0');
  return `${t('media.capture_prefix')}-${d.getFullYear()}${p(d.getMonth() + 1)}${p(d.getDate())}-${p(d.getHours())}${p(d.getMinutes())}${p(d.getSeconds())}.jpg`;
}

function renderFacts(el, c) {
  const rows = [
    [t('case.item'), h('span', {}, c.item_name, c.simple ? h('span', { class: 'tag' }, t('item.simple')) : null)],
    [t('case.department'), c.department_name],
    [t('case.point'), `${c.point_name}（${c.township}）`],
    [t('case.applicant'), h('span', { class: c.applicant_masked ? 'masked' : 'unmasked', id: 'applicant' }, c.applicant_name, ' ', h('span', { translate: 'no' }, c.applicant_id_number))],
    [t('case.agent'), c.agent.display_name],
    [t('case.approver'), c.approver?.display_name || '—'],
    c.experts.length ? [t('case.experts'), c.experts.map((e) => e.display_name).join('、')] : null,
    c.residents?.length ? [t('case.resident_remote'), h('span', { id: 'case-resident-remote' }, t('case.resident_joined'))] : null,
    [t('case.opened_at'), fmtDateTime(c.opened_at)],
    c.state === 'waiting'
      ? [t('case.waiting'), h('span', { dataset: { sla: '' }, class: 'wait' }, waitingClock(c.queued_at, c.simple))]
      : [t('case.waited'), fmtDuration(c.waiting_seconds)],
    c.queue_place ? [t('case.queue_place'), queuePlace(c.queue_place)] : null,
    c.note ? [t('case.note'), c.note] : null,
    [t('case.identity'), c.identity_checked ? t('case.identity_done') : t('case.identity_not_yet')],
    c.decision_reason ? [c.state === 'awaiting_material' ? t('case.material_reason') : t('case.reason'), c.decision_reason] : null,
    c.seal ? [t('case.seal'), h('span', { id: 'case-seal', dataset: { logIndex: String(c.seal.log_index) } },
      h('strong', { class: 'ok' }, t('case.sealed')), ' ',
      h('span', { class: 'muted', translate: 'no' }, t('case.seal_detail', { index: c.seal.log_index, key: c.seal.approver_key, at: fmtDateTime(c.seal.sealed_at) })), ' ',
      h('a', { id: 'case-receipt', href: `/api/cases/${c.id}/receipt`, download: `${c.number}-receipt.json` }, t('case.receipt')),
      c.applicant_masked ? null : [' ', h('a', { id: 'case-archive', href: `/api/cases/${c.id}/archive`, download: `${c.number}.zip` }, t('case.archive'))])] : null,
    c.statements.length > 1 ? [t('case.chain'), chainList(c)] : null,
    c.ended_at ? [t('case.ended_at'), fmtDateTime(c.ended_at)] : null,
  ].filter(Boolean);
  fill(el,
    h('div', { class: 'row spread' },
      h('h1', {}, h('span', { translate: 'no', class: 'number' }, c.number)),
      stateBadge(c.state)),
    c.state === 'awaiting_material' && session.user.role === 'agent' ? notice('info', t('case.agent_material_requested', { reason: c.decision_reason || '' })) : null,
    h('dl', { class: 'facts' }, rows.map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)])));
}

/** Where a waiting case stands: how many are ahead, and the wait expected from recent figures. */
export function queuePlace(place) {
  const ahead = place.position - 1;
  const minutes = place.expected_wait_seconds == null ? null : Math.max(1, Math.round(place.expected_wait_seconds / 60));
  return h('span', { id: 'queue-place', dataset: { position: String(place.position) } },
    ahead > 0 ? t('case.queue_ahead', { n: ahead }) : t('case.queue_next'), '，',
    minutes == null ? t('case.expected_unknown') : t('case.expected_wait', { m: minutes }));
}

/** The steps sealed after the decision (出件, 评价, 整改反馈), each with its receipt and archive. */
function chainList(c) {
  return h('ol', { class: 'chain', id: 'case-chain' }, c.statements.slice(1).map((s) => {
    const stem = `${c.number}-${s.sequence}-${s.kind}`;
    return h('li', { dataset: { kind: s.kind, logIndex: String(s.log_index) } },
      h('strong', {}, t(`chain.${s.kind}`)), ' ', h('span', { class: 'ok' }, t('case.chain_sealed')), ' ',
      h('span', { class: 'muted', translate: 'no' }, t('case.chain_detail', { index: s.log_index, at: fmtDateTime(s.sealed_at) })), ' ',
      h('a', { href: `/api/cases/${c.id}/receipt?sequence=${s.sequence}`, download: `${stem}-receipt.json` }, t('case.receipt_short')),
      c.applicant_masked ? null : [' ', h('a', { href: `/api/cases/${c.id}/archive?sequence=${s.sequence}`, download: `${stem}.zip` }, t('case.archive_short'))]);
  }));
}

/** What the caller may do now, as the server's dry run of the workflow lists it (`c.actions`):
 * the page shows those and keeps no copy of the workflow's rules. */
function actionsOf(c) {
  const listed = new Map((c.actions || []).map((a) => [a.action, a]));
  return { has: (name) => listed.has(name), get: (name) => listed.get(name) };
}

function renderActions(el, c, ctx) {
  el.hidden = false;
  const role = session.user.role;
  const may = actionsOf(c);
  let parts = [];
  if (role === 'agent' && c.agent?.id !== session.user.id) parts = [h('p', { class: 'muted', id: 'colleague-case' }, t('agent.colleague_case', { name: c.agent.display_name }))];
  else if (role === 'agent') parts = agentActions(c, ctx, may);
  else if (may.has('accept')) parts = [acceptAction(c, ctx)];
  else if (role === 'approver' && c.approver?.id === session.user.id) parts = approverActions(c, ctx, may);
  else if (role === 'expert') parts = [h('p', { class: 'muted' }, t('expert.read_only'))];
  else if (role === 'auditor') parts = [h('a', { class: 'button', href: `#/auditor?case=${c.id}` }, t('auditor.trail_of_case'))];
  el.hidden = parts.length === 0;
  fill(el, h('h2', {}, t('actions.title')), parts);
}

/** A small form: a reason box and a button that runs `work(reason)`. */
function reasonForm({ id, label, button, required, work, kind = '' }) {
  const input = h('textarea', { rows: 2, maxlength: 500, name: `${id}-reason` });
  const slot = h('div');
  const go = h('button', { type: 'submit', class: kind }, button);
  const form = h('form', { class: 'action', id }, field(label, input), go, slot);
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    if (required && !input.value.trim()) { say(slot, 'error', t('actions.reason_required')); return; }
    busy(go, slot, () => work(input.value.trim()));
  });
  return form;
}

function simpleAction({ id, button, work, kind = '' }) {
  const slot = h('div');
  const go = h('button', { type: 'button', class: kind, id }, button);
  go.addEventListener('click', () => busy(go, slot, work));
  return h('div', { class: 'action' }, go, slot);
}

function agentActions(c, { reload }, may) {
  const parts = [];
  if (may.has('resume')) {
    parts.push(simpleAction({ id: 'resume', kind: 'primary', button: t('actions.material_supplied'), work: async () => { await api('POST', `/cases/${c.id}/actions/resume`); await reload(); } }));
  }
  if (may.has('cancel')) {
    parts.push(reasonForm({ id: 'cancel', label: t('actions.cancel_reason'), button: t('actions.cancel'), kind: 'danger', work: async (reason) => { await api('POST', `/cases/${c.id}/actions/cancel`, { reason }); await reload(); } }));
  }
  if (may.has('rate')) parts.push(ratingForm(c));
  return parts;
}

function ratingForm(c) {
  let score = 0;
  const stars = [1, 2, 3, 4, 5].map((n) => h('button', {
    type: 'button', class: 'star', 'aria-label': t('rating.stars', { n }), dataset: { score: String(n) },
    onclick: () => { score = n; stars.forEach((s, i) => s.classList.toggle('on', i < n)); },
  }, '★'));
  const comment = h('textarea', { rows: 2, maxlength: 1000, name: 'comment' });
  const slot = h('div');
  const go = h('button', { type: 'submit', class: 'primary' }, t('rating.submit'));
  const form = h('form', { class: 'action rating', id: 'rating' },
    h('h3', {}, t('rating.title')),
    h('p', { class: 'muted' }, t('rating.hint')),
    h('div', { class: 'stars', role: 'group', 'aria-label': t('rating.title') }, stars),
    field(t('rating.comment'), comment), go, slot);
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    if (!score) { say(slot, 'error', t('rating.pick')); return; }
    busy(go, slot, async () => {
      const res = await api('POST', `/cases/${c.id}/rating`, { score, comment: comment.value.trim() });
      fill(form, notice('ok', res.followup_id ? t('rating.saved_followup') : t('rating.saved')));
    });
  });
  return form;
}

function acceptAction(c, { reload }) {
  const slot = h('div');
  const go = h('button', { type: 'button', class: 'primary', id: 'accept' }, t('queue.accept'));
  go.addEventListener('click', () => busy(go, slot, async () => {
    try {
      await api('POST', `/cases/${c.id}/actions/accept`);
      await reload();
    } catch (err) {
      if (err instanceof ApiError && err.code === 'already_taken') say(slot, 'error', t('err.already_taken'));
      else throw err;
    }
  }));
  return h('div', { class: 'action' }, go, slot);
}

function approverActions(c, { reload, catalogue }, may) {
  const act = async (name, body) => {
    try {
      await api('POST', `/cases/${c.id}/actions/${name}`, body);
    } catch (err) {
      // A transfer succeeds and takes the case out of this approver's view (409 no_longer_visible).
      if (!(err instanceof ApiError && err.code === 'no_longer_visible')) throw err;
    }
    await reload();
  };
  const parts = [];
  if (c.state === 'awaiting_material') parts.push(notice('info', t('actions.waiting_for_material')));
  if (may.has('identity-check')) {
    // 可信身份认证
    const methods = ['id_card_shown', 'id_card_captured', 'face_compared'].map((m) => h('label', { class: 'check' }, h('input', { type: 'checkbox', value: m, name: 'method' }), t(`identity.${m}`)));
    const idSlot = h('div');
    const idGo = h('button', { type: 'submit' }, t('identity.record'));
    const idForm = h('form', { class: 'action', id: 'identity-check' },
      h('h3', {}, t('identity.title')),
      c.identity_checked ? notice('ok', t('case.identity_done')) : h('p', { class: 'muted' }, t('identity.hint')),
      h('div', { class: 'checks' }, methods), idGo, idSlot);
    idForm.addEventListener('submit', (e) => {
      e.preventDefault();
      const chosen = [...idForm.querySelectorAll('input[name=method]:checked')].map((i) => i.value);
      if (!chosen.length) { say(idSlot, 'error', t('identity.pick')); return; }
      busy(idGo, idSlot, () => act('identity-check', { methods: chosen }));
    });
    parts.push(idForm);
  }
  if (c.state === 'in_call') parts.push(signatureAsk(c));
  if (may.has('approve')) parts.push(decisionForm(c, reload, may));
  else if (may.has('reject')) {
    parts.push(reasonForm({ id: 'reject', label: t('decision.reason'), button: t('decision.reject'), required: true, kind: 'danger', work: async (reason) => { await decide(c.id, 'reject', reason); await reload(); } }));
  }
  if (may.has('request-material')) {
    parts.push(reasonForm({ id: 'request-material', label: t('actions.material_reason'), button: t('actions.request_material'), required: true, work: (reason) => act('request-material', { reason }) }));
  }
  if (may.has('invite')) parts.push(inviteForm(c, act));
  if (may.has('transfer')) {
    const departments = catalogue.departments.filter((d) => d.id !== c.department_id);
    const dept = h('select', { name: 'department' }, departments.map((d) => h('option', { value: d.code }, d.name)));
    const trSlot = h('div');
    const trGo = h('button', { type: 'submit' }, t('actions.transfer'));
    const trForm = h('form', { class: 'action', id: 'transfer' }, field(t('actions.transfer_to'), dept), trGo, trSlot);
    trForm.addEventListener('submit', (e) => { e.preventDefault(); busy(trGo, trSlot, () => act('transfer', { department: dept.value })); });
    parts.push(trForm);
  }
  if (may.has('resume')) parts.push(simpleAction({ id: 'resume', button: t('actions.resume'), work: () => act('resume') }));
  if (may.has('issue')) {
    parts.push(notice('info', t('next.issue')));
    parts.push(simpleAction({ id: 'issue', kind: 'primary', button: t('actions.issue'), work: () => act('issue') }));
  }
  if (!parts.length && FINAL.includes(c.state)) parts.push(h('p', { class: 'muted' }, t('actions.none_final')));
  return parts;
}

/** The decision step (审批决定). The signing step will be added inside `decide`. */
function decisionForm(c, reload, may) {
  const reason = h('textarea', { rows: 2, maxlength: 500, name: 'decision-reason' });
  const slot = h('div');
  const approve = h('button', { type: 'button', class: 'primary', id: 'approve' }, t('decision.approve'));
  const reject = h('button', { type: 'button', class: 'danger', id: 'reject' }, t('decision.reject'));
  // The server's dry run says whether approving waits for something (the identity check).
  approve.disabled = !may.get('approve').allowed;
  reject.hidden = !may.has('reject');
  const run = (decision, button) => {
    if (decision === 'reject' && !reason.value.trim()) { say(slot, 'error', t('actions.reason_required')); return; }
    busy(button, slot, async () => {
      say(slot, 'info', t('decision.signing'));
      await decide(c.id, decision, reason.value.trim());
      await reload();
    });
  };
  approve.addEventListener('click', () => run('approve', approve));
  reject.addEventListener('click', () => run('reject', reject));
  return h('div', { class: 'action decision', id: 'decision' },
    h('h3', {}, t('decision.title')),
    may.get('approve').allowed ? null : h('p', { class: 'muted' }, t('decision.needs_identity')),
    field(t('decision.reason'), reason),
    h('div', { class: 'row' }, approve, reject), slot);
}

function inviteForm(c, act) {
  const select = h('select', { name: 'expert' }, h('option', { value: '' }, t('common.loading')));
  const slot = h('div');
  const go = h('button', { type: 'submit' }, t('actions.invite'));
  const form = h('form', { class: 'action', id: 'invite' }, field(t('actions.invite_expert'), select), go, slot);
  api('GET', '/experts').then((experts) => {
    const invited = new Set(c.experts.map((e) => e.id));
    fill(select, experts.filter((e) => !invited.has(e.id)).map((e) => h('option', { value: String(e.id) }, `${e.display_name}（${departmentName(e.department_id)}）`)));
    if (!select.options.length) { fill(select, h('option', { value: '' }, t('actions.no_experts'))); go.disabled = true; }
  }).catch((err) => say(slot, 'error', errorText(err)));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    if (!select.value) return;
    busy(go, slot, () => act('invite', { expert_id: Number(select.value) }));
  });
  return form;
}

/** Uploads in progress or failed, each with a progress bar and a retry button. */
export class UploadList {
  constructor(caseId, onStored) {
    this.caseId = caseId;
    this.onStored = onStored;
    this.el = h('ul', { class: 'uploads', id: 'uploads' });
  }

  add(blob, filename) {
    const bar = h('progress', { max: 1, value: 0 });
    const status = h('span', { class: 'status' }, t('upload.sending'));
    const retry = h('button', { type: 'button', class: 'small', hidden: true }, t('upload.retry'));
    const row = h('li', { class: 'upload' }, h('span', { class: 'name', translate: 'no' }, filename), bar, status, retry);
    this.el.prepend(row);
    const send = async () => {
      retry.hidden = true;
      row.dataset.state = 'sending';
      status.textContent = t('upload.sending');
      bar.value = 0;
      try {
        const stored = await uploadMaterial(this.caseId, blob, filename, (p) => { bar.value = p; }, (state) => {
          row.dataset.state = state;
          status.textContent = t(`upload.${state}`);
        }).promise;
        bar.value = 1;
        row.dataset.state = 'done';
        row.dataset.sha256 = stored.sha256;
        status.textContent = t('upload.done');
        this.onStored?.(stored);
      } catch (err) {
        row.dataset.state = 'failed';
        status.textContent = `${t('upload.failed')}${errorText(err)}`;
        // Retrying a refused type or size would fail the same way.
        retry.hidden = ['unsupported_media_type', 'too_large', 'too_many_materials', 'invalid_transition'].includes(err.code);
      }
    };
    retry.addEventListener('click', send);
    send();
  }
}

/** The materials of a case: thumbnails, a viewer with zoom and rotation beside the checklist of
 * required materials, and each file's SHA-256 checked against the one the server stored. */
class MaterialsViewer {
  constructor(caseId, el, annotate = null) {
    this.caseId = caseId;
    this.el = el;
    this.annotate = annotate;
    this.urls = new Map(); // material id → object URL
    this.checks = new Map(); // material id → 'ok' | 'mismatch'
    this.hashes = new Map();
    this.thumbs = h('div', { class: 'thumbs', id: 'material-list' });
    this.stage = h('div', { class: 'stage' }, h('p', { class: 'muted' }, t('materials.pick')));
    this.checklist = h('div', { class: 'checklist' });
    this.message = h('div');
    this.zoom = 1;
    this.rotation = 0;
    this.selected = null;
    const tools = h('div', { class: 'tools row' },
      h('button', { type: 'button', class: 'small', id: 'zoom-in', onclick: () => this.transform(this.zoom * 1.25, this.rotation) }, t('materials.zoom_in')),
      h('button', { type: 'button', class: 'small', id: 'zoom-out', onclick: () => this.transform(this.zoom / 1.25, this.rotation) }, t('materials.zoom_out')),
      h('button', { type: 'button', class: 'small', id: 'rotate', onclick: () => this.transform(this.zoom, (this.rotation + 90) % 360) }, t('materials.rotate')),
      h('button', { type: 'button', class: 'small', onclick: () => this.transform(1, 0) }, t('materials.reset')),
      this.annotate ? h('button', { type: 'button', class: 'small', id: 'annotate-material', onclick: () => { if (this.selected) this.annotate(this.selected, this.message); } }, t('materials.annotate')) : null);
    fill(el, h('h2', {}, t('materials.title')), this.message, this.thumbs,
      h('div', { class: 'viewer' }, h('div', { class: 'viewer-main' }, tools, this.stage), h('aside', { class: 'viewer-side' }, h('h3', {}, t('new.required_materials')), this.checklist)));
  }

  setChecklist(required) {
    // What the item needs, to compare the materials with; a plain list, since ticks in one
    // browser would be seen by no one else.
    fill(this.checklist, h('ul', {}, required.map((m) => h('li', {}, m))));
  }

  async load() {
    let list;
    try {
      list = await api('GET', `/cases/${this.caseId}/materials`);
      say(this.message, null, '');
    } catch (err) {
      say(this.message, 'error', errorText(err));
      return;
    }
    if (!list.length) { fill(this.thumbs, h('p', { class: 'muted' }, t('materials.none'))); return; }
    fill(this.thumbs, list.map((m) => this.thumb(m)));
    if (!this.selected && list.length) this.show(list[list.length - 1]);
  }

  thumb(m) {
    const img = h('div', { class: 'thumb-img' }, m.media_type === 'application/pdf' ? 'PDF' : '…');
    const check = h('span', { class: 'check-result' });
    const el = h('button', { type: 'button', class: 'thumb', dataset: { materialId: String(m.id), sha256: m.sha256 }, onclick: () => this.show(m) },
      img, h('span', { class: 'name', translate: 'no' }, m.filename), h('span', { class: 'muted' }, `${fmtDateTime(m.uploaded_at)} · ${formatSize(m.size)}`), check);
    this.fetchBytes(m).then(() => {
      if (m.media_type.startsWith('image/')) fill(img, h('img', { src: this.urls.get(m.id), alt: m.filename }));
      this.showCheck(check, m);
    }).catch((err) => fill(check, notice('error', errorText(err))));
    return el;
  }

  /** Downloads a material once and checks its SHA-256 against the server's `x-content-sha256`. */
  async fetchBytes(m) {
    if (this.urls.has(m.id)) return;
    let res;
    try {
      res = await fetch(`/api/cases/${this.caseId}/materials/${m.id}`, { credentials: 'same-origin' });
    } catch {
      throw new ApiError(0, 'network', '');
    }
    if (!res.ok) { const b = await res.json().catch(() => ({})); throw new ApiError(res.status, b.code || `http_${res.status}`, b.message); }
    const stored = res.headers.get('x-content-sha256');
    const buffer = await res.arrayBuffer();
    const local = await sha256Hex(buffer);
    this.hashes.set(m.id, local);
    this.checks.set(m.id, local === stored && local === m.sha256 ? 'ok' : 'mismatch');
    this.urls.set(m.id, URL.createObjectURL(new Blob([buffer], { type: m.media_type })));
  }

  showCheck(el, m) {
    const ok = this.checks.get(m.id) === 'ok';
    fill(el, h('span', { class: ok ? 'ok' : 'bad', dataset: { check: ok ? 'ok' : 'mismatch' } }, ok ? t('materials.hash_ok') : t('materials.hash_bad')));
  }

  async show(m) {
    this.selected = m.id;
    this.transform(1, 0);
    try { await this.fetchBytes(m); } catch (err) { fill(this.stage, notice('error', errorText(err))); return; }
    const url = this.urls.get(m.id);
    const ok = this.checks.get(m.id) === 'ok';
    const content = m.media_type.startsWith('image/')
      ? h('div', { class: 'zoom-box' }, h('img', { src: url, alt: m.filename, id: 'viewer-image' }))
      : h('p', {}, h('a', { href: url, target: '_blank', rel: 'noopener', download: m.filename }, t('materials.open_pdf')));
    fill(this.stage, content,
      h('p', { class: 'hash', id: 'viewer-hash' }, 'SHA-256：', h('code', { translate: 'no', dataset: { sha256: this.hashes.get(m.id) } }, this.hashes.get(m.id)), ' ',
        h('span', { class: ok ? 'ok' : 'bad' }, ok ? t('materials.hash_ok') : t('materials.hash_bad'))));
    // Whoever looks at a material is named over it (a screenshot of an ID card says who took it).
    watermark(this.stage);
    this.transform(this.zoom, this.rotation);
  }

  transform(zoom, rotation) {
    this.zoom = Math.min(8, Math.max(0.25, zoom));
    this.rotation = rotation;
    const img = this.stage.querySelector('img');
    if (img) img.style.transform = `rotate(${this.rotation}deg) scale(${this.zoom})`;
  }

  dispose() {
    for (const url of this.urls.values()) URL.revokeObjectURL(url);
    this.urls.clear();
  }
}

function formatSize(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(0)} KB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}
