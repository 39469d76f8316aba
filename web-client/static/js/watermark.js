// A faint watermark tiled over a picture (水印): the viewer's name and the time, so that a
// screenshot of an ID card or a face names who took it and when. On the material viewer always;
// on remote video when the server says so (`call.config.watermark`). It is an overlay that takes no
// clicks; the picture itself is not altered.
import { h, session } from './core.js';

/** How often the time in the watermark is renewed. */
const RENEW_MS = 30_000;

const overlays = new Set();
let timer = null;

function label() {
  const d = new Date();
  const p = (n) => String(n).padStart(2, '0');
  const who = session.user?.display_name || '';
  return `${who} ${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}`;
}

/** One tile of the pattern: the label, rotated, faint, as a PNG data URL. */
function tile(text) {
  const canvas = document.createElement('canvas');
  canvas.width = 320;
  canvas.height = 180;
  const ctx = canvas.getContext('2d');
  ctx.translate(160, 90);
  ctx.rotate(-Math.PI / 9);
  ctx.font = '600 18px sans-serif';
  ctx.textAlign = 'center';
  ctx.textBaseline = 'middle';
  ctx.fillStyle = 'rgba(255, 255, 255, 0.22)';
  ctx.fillText(text, 0, 0);
  ctx.fillStyle = 'rgba(0, 0, 0, 0.16)';
  ctx.fillText(text, 1, 1);
  return canvas.toDataURL('image/png');
}

function paint(el) {
  const text = label();
  el.dataset.watermark = text;
  el.style.backgroundImage = `url("${tile(text)}")`;
}

function renewAll() {
  for (const el of overlays) {
    if (el.isConnected) paint(el); else overlays.delete(el);
  }
  if (!overlays.size) { clearInterval(timer); timer = null; }
}

/** Puts a watermark over `container` (which must be positioned); returns the overlay. */
export function watermark(container) {
  const existing = container.querySelector(':scope > .watermark');
  if (existing) return existing;
  const el = h('div', { class: 'watermark', 'aria-hidden': 'true' });
  paint(el);
  container.append(el);
  overlays.add(el);
  timer ??= setInterval(renewAll, RENEW_MS);
  return el;
}

/** Takes the watermark off `container`, if it has one. */
export function unwatermark(container) {
  const el = container.querySelector(':scope > .watermark');
  if (!el) return;
  overlays.delete(el);
  el.remove();
}
