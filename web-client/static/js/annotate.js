// Pointing at what is wrong (标注): the approver freezes a frame of someone's camera (or opens a
// material) and draws arrows, circles and short text on it; everyone in the call sees the picture,
// each mark and the approver's pointer at once (`call.annotation`, `call.pointer`); saved, the
// annotated picture becomes a material that names the picture it was drawn on.
//
// One `AnnotationBoard` per call panel: `show(annotation)` on every `call.annotation`,
// `point(msg)` on every `call.pointer`. The approver holding the case draws; the others watch.
import { h, fill, api, say, notice, errorText, busy, blobToBase64 } from './core.js';
import { t } from './i18n.js';

/** How often the approver's pointer goes out, at most. */
const POINTER_EVERY_MS = 50;
/** The longest text label (the server's `annotations::MAX_TEXT_CHARS`). */
const TEXT_MAX = 30;

/** Draws `shapes` (picture coordinates 0–1) on a canvas context of `w`×`h` pixels. */
export function drawShapes(ctx, shapes, w, h) {
  const line = Math.max(3, Math.round(w / 250));
  ctx.lineWidth = line;
  ctx.strokeStyle = '#e02424';
  ctx.fillStyle = '#e02424';
  ctx.lineCap = 'round';
  for (const s of shapes) {
    if (s.kind === 'arrow') {
      const [x1, y1, x2, y2] = [s.x1 * w, s.y1 * h, s.x2 * w, s.y2 * h];
      ctx.beginPath();
      ctx.moveTo(x1, y1);
      ctx.lineTo(x2, y2);
      ctx.stroke();
      const angle = Math.atan2(y2 - y1, x2 - x1);
      const head = line * 5;
      ctx.beginPath();
      ctx.moveTo(x2, y2);
      ctx.lineTo(x2 - head * Math.cos(angle - Math.PI / 7), y2 - head * Math.sin(angle - Math.PI / 7));
      ctx.lineTo(x2 - head * Math.cos(angle + Math.PI / 7), y2 - head * Math.sin(angle + Math.PI / 7));
      ctx.closePath();
      ctx.fill();
    } else if (s.kind === 'circle') {
      ctx.beginPath();
      ctx.arc(s.x * w, s.y * h, Math.max(line, s.r * w), 0, Math.PI * 2);
      ctx.stroke();
    } else if (s.kind === 'text') {
      ctx.font = `700 ${Math.max(16, Math.round(w / 30))}px sans-serif`;
      ctx.textBaseline = 'middle';
      ctx.lineWidth = line;
      ctx.strokeStyle = '#fff';
      ctx.strokeText(s.text, s.x * w, s.y * h);
      ctx.fillText(s.text, s.x * w, s.y * h);
      ctx.strokeStyle = '#e02424';
    }
  }
}

/** A frame of a playing video as a JPEG blob, at its own resolution. */
export async function freezeFrame(video) {
  const canvas = document.createElement('canvas');
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  canvas.getContext('2d').drawImage(video, 0, 0);
  return new Promise((resolve) => canvas.toBlob(resolve, 'image/jpeg', 0.92));
}

export class AnnotationBoard {
  constructor({ caseId, live, mayDraw, nameOf }) {
    this.caseId = caseId;
    this.live = live;
    this.mayDraw = mayDraw; // () => whether this page draws (the approver holding the case)
    this.nameOf = nameOf;
    this.current = null; // the annotation shown
    this.image = null;   // its picture, decoded
    this.tool = 'arrow';
    this.lastPointer = 0;
    this.canvas = h('canvas', { class: 'annotation-canvas', id: 'annotation-canvas' });
    this.pointer = h('div', { class: 'annotation-pointer', id: 'annotation-pointer', hidden: true });
    this.caption = h('figcaption', { class: 'annotation-caption' });
    this.tools = h('div', { class: 'annotation-tools row' });
    this.message = h('div');
    this.el = h('figure', { class: 'annotation-board', id: 'annotation-board', hidden: true },
      h('div', { class: 'annotation-stage' }, this.canvas, this.pointer), this.caption, this.tools, this.message);
    this.canvas.addEventListener('pointerdown', (e) => this.down(e));
    this.canvas.addEventListener('pointerup', (e) => this.up(e));
    this.canvas.addEventListener('pointermove', (e) => this.move(e));
  }

  /** A `call.annotation`: a new picture, new marks, closed or saved. */
  async show(annotation) {
    if (annotation.closed) {
      if (this.current?.id === annotation.id) this.hide(annotation.image_material_id ? t('annotate.saved') : '');
      return;
    }
    const fresh = this.current?.id !== annotation.id;
    this.current = annotation;
    if (fresh) {
      this.image = null;
      this.el.hidden = false;
      this.el.dataset.annotation = String(annotation.id);
      const res = await fetch(`/api/cases/${this.caseId}/annotations/${annotation.id}/base`, { credentials: 'same-origin' });
      if (!res.ok || this.current?.id !== annotation.id) return;
      this.image = await createImageBitmap(await res.blob());
      this.canvas.width = this.image.width;
      this.canvas.height = this.image.height;
      const base = annotation.base;
      this.caption.textContent = base.kind === 'frame'
        ? t('annotate.of_frame', { name: this.nameOf(base.of) })
        : t('annotate.of_material');
      this.renderTools();
    }
    this.el.dataset.shapes = String(annotation.shapes.length);
    this.redraw();
  }

  hide(text) {
    this.current = null;
    this.image = null;
    this.pointer.hidden = true;
    this.el.hidden = true;
    delete this.el.dataset.annotation;
    if (text) say(this.message, 'ok', text);
  }

  redraw() {
    if (!this.image || !this.current) return;
    const ctx = this.canvas.getContext('2d');
    ctx.drawImage(this.image, 0, 0);
    drawShapes(ctx, this.current.shapes, this.canvas.width, this.canvas.height);
  }

  /** A `call.pointer`: where the approver points. */
  point(msg) {
    if (!this.current || msg.annotation_id !== this.current.id) return;
    this.pointer.hidden = false;
    this.pointer.style.left = `${msg.x * 100}%`;
    this.pointer.style.top = `${msg.y * 100}%`;
    this.el.dataset.pointer = `${msg.x.toFixed(3)},${msg.y.toFixed(3)}`;
  }

  renderTools() {
    if (!this.mayDraw()) { fill(this.tools, h('p', { class: 'muted' }, t('annotate.watching'))); return; }
    const tool = (name) => h('label', { class: 'check' },
      h('input', { type: 'radio', name: 'annotation-tool', value: name, checked: this.tool === name, onchange: () => { this.tool = name; } }),
      t(`annotate.tool_${name}`));
    this.text = h('input', { type: 'text', maxlength: TEXT_MAX, id: 'annotation-text', placeholder: t('annotate.text_placeholder') });
    const undo = h('button', { type: 'button', class: 'small', id: 'annotation-undo', onclick: () => this.send(this.current.shapes.slice(0, -1)) }, t('annotate.undo'));
    const save = h('button', { type: 'button', class: 'small primary', id: 'annotation-save' }, t('annotate.save'));
    save.addEventListener('click', () => busy(save, this.message, () => this.save()));
    const close = h('button', { type: 'button', class: 'small', id: 'annotation-close', onclick: () => this.close() }, t('annotate.close'));
    fill(this.tools, tool('arrow'), tool('circle'), tool('text'), this.text, undo, save, close);
  }

  at(e) {
    const box = this.canvas.getBoundingClientRect();
    const clamp = (v) => Math.min(1, Math.max(0, v));
    return { x: clamp((e.clientX - box.left) / box.width), y: clamp((e.clientY - box.top) / box.height) };
  }

  down(e) {
    if (!this.current || !this.mayDraw()) return;
    this.start = this.at(e);
  }

  up(e) {
    if (!this.current || !this.mayDraw() || !this.start) return;
    const a = this.start;
    const b = this.at(e);
    this.start = null;
    let shape = null;
    if (this.tool === 'arrow') shape = { kind: 'arrow', x1: a.x, y1: a.y, x2: b.x, y2: b.y };
    else if (this.tool === 'circle') shape = { kind: 'circle', x: a.x, y: a.y, r: Math.min(1, Math.hypot(b.x - a.x, (b.y - a.y) * this.canvas.height / this.canvas.width)) };
    else {
      const text = this.text?.value.trim();
      if (!text) { say(this.message, 'error', t('annotate.text_first')); return; }
      shape = { kind: 'text', x: a.x, y: a.y, text };
    }
    this.send([...this.current.shapes, shape]);
  }

  /** The pointer goes out at most every POINTER_EVERY_MS; where it stops always goes out last. */
  move(e) {
    if (!this.current || !this.mayDraw()) return;
    this.pending = this.at(e);
    if (this.pointerTimer) return;
    const wait = Math.max(0, this.lastPointer + POINTER_EVERY_MS - performance.now());
    this.pointerTimer = setTimeout(() => {
      this.pointerTimer = null;
      this.lastPointer = performance.now();
      const p = this.pending;
      if (this.current && p) this.live.send({ type: 'call.pointer', case_id: this.caseId, annotation_id: this.current.id, x: p.x, y: p.y });
    }, wait);
  }

  send(shapes) {
    say(this.message, null, '');
    this.live.send({ type: 'call.annotate', case_id: this.caseId, annotation_id: this.current.id, shapes });
  }

  close() {
    if (this.current) this.live.send({ type: 'call.annotation_close', case_id: this.caseId, annotation_id: this.current.id });
  }

  async save() {
    const png = await new Promise((resolve) => this.canvas.toBlob(resolve, 'image/png'));
    await api('POST', `/cases/${this.caseId}/annotations/${this.current.id}/save`, { image_png: await blobToBase64(png) });
  }

  /** A refusal of ours from the server (`call.error` about annotating), in plain words. */
  refused(msg) {
    fill(this.message, notice('error', msg.message ? `${t('annotate.refused')}（${msg.message}）` : t('annotate.refused')));
  }

  /** Starts an annotation on a frame frozen from `video` (participant `of`'s camera). */
  async freeze(video, of) {
    const frame = await freezeFrame(video);
    await api('POST', `/cases/${this.caseId}/annotations/frame?of=${encodeURIComponent(of)}`, frame);
  }

  /** Starts an annotation on material `materialId`. */
  async openMaterial(materialId) {
    await api('POST', `/cases/${this.caseId}/annotations`, { material_id: materialId });
  }

  /** Says why a start failed. */
  failed(err) {
    say(this.message, 'error', errorText(err));
  }
}
