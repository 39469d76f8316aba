// The applicant from home (群众远程接入, "随时随地办"): the invitation page a link opens (the
// notice and consent, no account), the applicant's own call page, and the card on the case page
// where the case's agent or holding approver issues and withdraws invitations.
import { h, fill, api, say, notice, errorText, fmtDateTime, session, busy, ApiError } from '../core.js';
import { t } from '../i18n.js';
import { mountCallPanel } from '../call.js';
import { UploadList, stateBadge, queuePlace } from './case.js';
import { SignaturePad } from '../signature.js';

/** Why a link cannot be used, in plain words (the server's codes). */
const GONE = ['invitation_used', 'invitation_expired', 'invitation_revoked'];

/** The page an invitation link opens (`#/invite/<token>`): what the call is for, the notice, and
 * consent; then the resident's session and its call page. */
export async function renderInvite(view, { token }, { onAccepted }) {
  let info;
  try {
    info = await api('POST', '/invitations/open', { token });
  } catch (err) {
    const code = err instanceof ApiError && GONE.includes(err.code) ? err.code
      : err instanceof ApiError && err.status === 404 ? 'invitation_unknown' : null;
    fill(view, h('section', { class: 'card invite-page', id: 'invite-refused', dataset: { code: code || 'error' } },
      h('h1', {}, t('invite.title')),
      notice('error', code ? t(`invite.${code}`) : errorText(err))));
    return null;
  }
  const consent = h('input', { type: 'checkbox', id: 'invite-consent' });
  const accept = h('button', { type: 'button', class: 'primary', id: 'invite-accept', disabled: true }, t('invite.accept'));
  const slot = h('div');
  consent.addEventListener('change', () => { accept.disabled = !consent.checked; });
  accept.addEventListener('click', () => busy(accept, slot, async () => {
    const accepted = await api('POST', '/invitations/accept', { token, consent: true });
    onAccepted(accepted);
  }));
  fill(view, h('section', { class: 'card invite-page' },
    h('h1', {}, t('invite.title')),
    h('dl', { class: 'facts' },
      h('dt', {}, t('case.item')), h('dd', {}, info.item_name),
      h('dt', {}, t('case.point')), h('dd', {}, info.point_name),
      h('dt', {}, t('invite.valid_until')), h('dd', {}, fmtDateTime(info.expires_at))),
    h('h2', {}, t('invite.notice_title')),
    h('ul', { class: 'invite-notice', id: 'invite-notice' },
      ['invite.notice_who', 'invite.notice_recording', 'invite.notice_data', 'invite.notice_id'].map((key) => h('li', {}, t(key)))),
    h('label', { class: 'check' }, consent, t('invite.consent')),
    h('div', { class: 'row' }, accept),
    slot));
  return null;
}

/** The resident's own page: its case in a few words, the call, and photos of materials. */
export async function renderResident(view, _params, { live }) {
  let current = await api('GET', '/resident');
  const facts = h('section', { class: 'card case-facts resident-facts' });
  const callSlot = h('section', { class: 'card call-slot' }, h('h2', {}, t('call.title')), h('div', { class: 'call-panel' }));
  const uploads = new UploadList(current.id, null);
  const fileInput = h('input', { type: 'file', accept: 'image/*,application/pdf', capture: 'environment', multiple: true, id: 'resident-file' });
  fileInput.addEventListener('change', () => {
    for (const file of fileInput.files) uploads.add(file, file.name);
    fileInput.value = '';
  });
  const uploadCard = h('section', { class: 'card resident-uploads' },
    h('h2', {}, t('resident.materials_title')),
    h('p', { class: 'muted' }, t('resident.materials_hint')),
    h('label', { class: 'button file-button primary' }, t('resident.add_photo'), fileInput),
    uploads.el);
  const message = h('div');
  const pad = new SignaturePad(current.id, 'resident');
  fill(view, h('div', { class: 'case-page' }, message, facts, callSlot, pad.el, uploadCard));
  let call = null;
  function render() {
    fill(facts,
      h('h1', {}, t('resident.title')),
      h('dl', { class: 'facts' },
        h('dt', {}, t('resident.number')), h('dd', { translate: 'no' }, current.number),
        h('dt', {}, t('case.item')), h('dd', {}, current.item_name),
        h('dt', {}, t('case.point')), h('dd', {}, current.point_name),
        h('dt', {}, t('resident.state')), h('dd', {}, stateBadge(current.state)),
        current.queue_place ? [h('dt', {}, t('case.queue_place')), h('dd', {}, queuePlace(current.queue_place))] : null),
      current.call_open ? null : h('p', { class: 'muted', id: 'resident-waiting' }, t('resident.waiting')));
    uploadCard.hidden = !['waiting', 'in_call', 'awaiting_material'].includes(current.state);
    if (!call) call = mountCallPanel(callSlot.querySelector('.call-panel'), { caseView: current, user: session.user, live });
    else call.update(current);
    pad.refresh();
  }
  async function reload() {
    try {
      current = await api('GET', '/resident');
      say(message, null, '');
      render();
    } catch (err) {
      say(message, 'error', errorText(err));
    }
  }
  render();
  const unsubscribe = live.subscribe((msg) => {
    if ((msg.type === 'case.updated' && msg.case_id === current.id) || msg.type === 'live.reconnected') reload();
  });
  return () => { unsubscribe(); call?.dispose(); };
}

/** On the case page of its agent or holding approver: invite the applicant to join from home
 * (a link and its QR code, once each), see where each invitation stands, withdraw one. */
export class InvitationCard {
  constructor(caseId) {
    this.caseId = caseId;
    this.issued = h('div', { class: 'invite-issued', id: 'invite-issued' });
    this.list = h('ul', { class: 'invite-list', id: 'invite-list' });
    this.message = h('div');
    this.button = h('button', { type: 'button', id: 'invite-resident' }, t('invite.issue'));
    this.button.addEventListener('click', () => busy(this.button, this.message, () => this.issue()));
    this.el = h('section', { class: 'card invite-card' },
      h('h2', {}, t('invite.card_title')),
      h('p', { class: 'muted' }, t('invite.card_hint')),
      h('div', { class: 'row' }, this.button),
      this.message, this.issued, this.list);
  }

  async issue() {
    const issued = await api('POST', `/cases/${this.caseId}/invitations`);
    const link = h('input', { type: 'text', readonly: true, value: issued.url, id: 'invite-link', translate: 'no' });
    const copy = h('button', { type: 'button', class: 'small', onclick: async () => {
      link.select();
      try { await navigator.clipboard.writeText(issued.url); say(this.message, 'info', t('invite.copied')); } catch { /* selected: the user copies it */ }
    } }, t('invite.copy'));
    fill(this.issued,
      h('img', { class: 'invite-qr', id: 'invite-qr', alt: t('invite.qr_alt'), src: `data:image/svg+xml;base64,${btoa(issued.qr_svg)}` }),
      h('div', { class: 'row' }, link, copy),
      h('p', { class: 'muted' }, t('invite.once', { time: fmtDateTime(issued.invitation.expires_at) })));
    await this.load();
  }

  async load() {
    let list;
    try {
      list = await api('GET', `/cases/${this.caseId}/invitations`);
    } catch (err) {
      say(this.message, 'error', errorText(err));
      return;
    }
    fill(this.list, list.map((inv) => {
      const revoke = ['open', 'used'].includes(inv.state)
        ? h('button', { type: 'button', class: 'small danger', dataset: { revoke: String(inv.id) } }, t('invite.revoke'))
        : null;
      revoke?.addEventListener('click', () => busy(revoke, this.message, async () => {
        await api('DELETE', `/cases/${this.caseId}/invitations/${inv.id}`);
        if (inv.state === 'open') fill(this.issued);
        await this.load();
      }));
      return h('li', { dataset: { invitation: String(inv.id), state: inv.state } },
        h('span', { class: `badge invite-${inv.state}` }, t(`invite.state.${inv.state}`)),
        h('span', { class: 'muted' }, fmtDateTime(inv.issued_at)),
        revoke);
    }));
  }
}
