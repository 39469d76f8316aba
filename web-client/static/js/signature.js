// The applicant's signature (申请人签名确认): the approver asks (`SignatureAsk`, on its case page),
// the signer signs on a pad (`SignaturePad`: on the agent's case page, or the resident's own page
// at home). The pad shows the summary exactly as the server wrote it, hashes exactly that text and
// sends the hash with the strokes (points with times) and the rendered PNG, so the server can bind
// the signature to what was shown.
import { h, fill, api, say, notice, errorText, busy, sha256Hex, blobToBase64, fmtDateTime } from './core.js';
import { t } from './i18n.js';

/** Points closer in time than this are not kept (a signature has a few hundred). */
const SAMPLE_MS = 8;
/** The pad's drawing size in pixels (shown scaled to the card's width). */
const PAD_WIDTH = 600;
const PAD_HEIGHT = 240;

/** The newest request of a case that waits for `signer` ('agent' or 'resident'), if any. */
async function pendingFor(caseId, signer) {
  const list = await api('GET', `/cases/${caseId}/signatures`);
  return list.find((r) => r.state === 'pending' && r.signer === signer) || null;
}

/** The pad a signer signs on; shown while a request waits for this signer. */
export class SignaturePad {
  constructor(caseId, signer) {
    this.caseId = caseId;
    this.signer = signer;
    this.request = null;
    this.el = h('section', { class: 'card signature-card', id: 'signature-card', hidden: true });
  }

  /** Looks again for a request waiting for this signer (after a case.updated). */
  async refresh() {
    let request;
    try {
      request = await pendingFor(this.caseId, this.signer);
    } catch {
      return; // the next notice tries again
    }
    if (request?.id === this.request?.id) return; // the same request (or still none) is shown
    this.request = request;
    this.el.hidden = !request;
    if (request) this.render(request);
  }

  render(request) {
    const canvas = h('canvas', { width: PAD_WIDTH, height: PAD_HEIGHT, class: 'signature-pad', id: 'signature-pad' });
    const ctx = canvas.getContext('2d');
    const strokes = [];
    let current = null;
    let start = null;
    let last = 0;
    const clearPad = () => {
      strokes.length = 0;
      ctx.fillStyle = '#fff';
      ctx.fillRect(0, 0, PAD_WIDTH, PAD_HEIGHT);
    };
    clearPad();
    const pointOf = (e) => {
      const box = canvas.getBoundingClientRect();
      const now = performance.now();
      start ??= now;
      return {
        x: Math.min(1, Math.max(0, (e.clientX - box.left) / box.width)),
        y: Math.min(1, Math.max(0, (e.clientY - box.top) / box.height)),
        t: Math.round(now - start),
      };
    };
    canvas.addEventListener('pointerdown', (e) => {
      e.preventDefault();
      canvas.setPointerCapture(e.pointerId);
      current = [pointOf(e)];
      last = performance.now();
      strokes.push(current);
    });
    canvas.addEventListener('pointermove', (e) => {
      if (!current || performance.now() - last < SAMPLE_MS) return;
      last = performance.now();
      const p = pointOf(e);
      const q = current[current.length - 1];
      current.push(p);
      ctx.strokeStyle = '#111';
      ctx.lineWidth = 3;
      ctx.lineCap = 'round';
      ctx.beginPath();
      ctx.moveTo(q.x * PAD_WIDTH, q.y * PAD_HEIGHT);
      ctx.lineTo(p.x * PAD_WIDTH, p.y * PAD_HEIGHT);
      ctx.stroke();
    });
    const end = () => { current = null; };
    canvas.addEventListener('pointerup', end);
    canvas.addEventListener('pointercancel', end);
    const slot = h('div');
    const clear = h('button', { type: 'button', id: 'signature-clear', onclick: clearPad }, t('sign.clear'));
    const submit = h('button', { type: 'button', class: 'primary', id: 'signature-submit' }, t('sign.submit'));
    submit.addEventListener('click', () => busy(submit, slot, async () => {
      if (strokes.reduce((n, s) => n + s.length, 0) < 2) { say(slot, 'error', t('sign.empty')); return; }
      const shown = this.el.querySelector('.signature-summary').textContent;
      const summarySha256 = await sha256Hex(new TextEncoder().encode(shown));
      const image = await new Promise((resolve) => canvas.toBlob(resolve, 'image/png'));
      await api('POST', `/cases/${this.caseId}/signatures/${request.id}/sign`, {
        summary_sha256: summarySha256, strokes, image_png: await blobToBase64(image),
      });
      this.request = null;
      fill(this.el, h('h2', {}, t('sign.title')), notice('ok', t('sign.done')));
      this.el.dataset.signed = String(request.id);
    }));
    fill(this.el,
      h('h2', {}, t('sign.title')),
      h('p', { class: 'muted' }, t('sign.hint')),
      h('pre', { class: 'signature-summary', id: 'signature-summary' }, request.summary),
      canvas,
      h('div', { class: 'row' }, clear, submit),
      slot);
  }
}

/** The approver's part: ask for the signature (on the agent's device, or on the phone of the
 * applicant at home) and see each request's state. */
export function signatureAsk(c) {
  const slot = h('div');
  const list = h('ul', { class: 'signature-list', id: 'signature-list' });
  const signer = h('select', { name: 'signer', id: 'signature-signer' },
    h('option', { value: 'agent' }, t('sign.signer_agent')),
    c.residents?.length ? h('option', { value: 'resident' }, t('sign.signer_resident')) : null);
  const go = h('button', { type: 'button', id: 'ask-signature' }, t('sign.ask'));
  const load = async () => {
    try {
      const requests = await api('GET', `/cases/${c.id}/signatures`);
      fill(list, requests.map((r) => h('li', { dataset: { request: String(r.id), state: r.state } },
        h('span', { class: `badge sign-${r.state}` }, t(`sign.state.${r.state}`)), ' ',
        t(`sign.by.${r.signer}`), ' ',
        h('span', { class: 'muted' }, fmtDateTime(r.signed_at || r.requested_at)))));
    } catch (err) {
      say(slot, 'error', errorText(err));
    }
  };
  go.addEventListener('click', () => busy(go, slot, async () => {
    await api('POST', `/cases/${c.id}/signatures`, { signer: signer.value });
    await load();
  }));
  load();
  const el = h('div', { class: 'action', id: 'signature-ask' },
    h('h3', {}, t('sign.title')),
    h('p', { class: 'muted' }, t('sign.ask_hint')),
    h('div', { class: 'row' }, signer, go), slot, list);
  el.refresh = load;
  return el;
}
