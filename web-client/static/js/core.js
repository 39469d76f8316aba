// Shared plumbing: DOM helper, the API client (CSRF, errors in plain words, uploads with
// progress), formatting of dates and durations, the once-a-second ticker, and notices.
import { t, lang } from './i18n.js';

/** Who is logged in, the session's CSRF token and the catalogue (loaded once per login). */
export const session = { user: null, csrf: '', catalogue: null };

/** Creates an element: h('button', {class: 'primary', onclick}, 'text', child…). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else if (key === 'class') el.className = value;
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key in el && typeof value !== 'string') el[key] = value;
    else el.setAttribute(key, value === true ? '' : value);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
}

/** Replaces an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** An error from the server (`{code, message}`) or from the network (`code: 'network'`). */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message || code);
    this.status = status;
    this.code = code;
  }
}

/** Called when the session has ended (401 on a request other than the login). */
let onSessionEnded = () => {};
export function whenSessionEnds(fn) { onSessionEnded = fn; }

/** A JSON request to the API (a `Blob` body is sent as it is, typed by its `type`). State-changing
 * requests carry the CSRF token; a refused token is fetched again from /api/me and the request
 * retried once (the page may be older than the session). */
export async function api(method, path, body, { retried = false } = {}) {
  const headers = {};
  const raw = body instanceof Blob;
  if (body !== undefined) headers['Content-Type'] = raw ? (body.type || 'application/octet-stream') : 'application/json';
  if (method !== 'GET') headers['X-CSRF-Token'] = session.csrf;
  let res;
  try {
    res = await fetch(`/api${path}`, {
      method,
      headers,
      body: body === undefined || raw ? body : JSON.stringify(body),
      credentials: 'same-origin',
    });
  } catch {
    throw new ApiError(0, 'network', '');
  }
  if (res.ok) {
    if (res.status === 204) return null;
    const type = res.headers.get('content-type') || '';
    return type.includes('json') && !type.includes('ndjson') ? res.json() : res.text();
  }
  const err = await res.json().catch(() => ({}));
  const code = err.code || (res.status >= 500 ? 'internal' : `http_${res.status}`);
  if (code === 'csrf_failed' && !retried && (await refreshSession())) {
    return api(method, path, body, { retried: true });
  }
  if (res.status === 401 && !path.startsWith('/auth/login')) onSessionEnded('expired');
  throw new ApiError(res.status, code, err.message);
}

/** Reloads the user and CSRF token; false when there is no session. */
export async function refreshSession() {
  try {
    const res = await fetch('/api/me', { credentials: 'same-origin' });
    if (!res.ok) return false;
    const me = await res.json();
    session.user = me.user;
    session.csrf = me.csrf_token;
    return true;
  } catch {
    return false;
  }
}

/** How long to wait before each new try of a chunk that did not get through; then give up. */
const UPLOAD_RETRY_MS = [500, 1000, 2000, 4000, 8000, 15000, 30000];

/** Codes a chunk may be refused with that end the upload (anything else is tried again). */
const UPLOAD_FATAL = ['digest_mismatch', 'upload_lost', 'too_large', 'not_found', 'unsupported_media_type', 'too_many_materials', 'invalid_transition', 'forbidden'];

/** Sends one chunk at `offset` with XMLHttpRequest (fetch has no upload progress); resolves
 * `{status, body}`, rejects when the connection fails. */
function sendChunk(caseId, id, offset, chunk, onLoaded, keep) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    keep(xhr);
    xhr.open('PATCH', `/api/cases/${caseId}/uploads/${id}`);
    xhr.setRequestHeader('X-CSRF-Token', session.csrf);
    xhr.setRequestHeader('Content-Type', 'application/offset+octet-stream');
    xhr.setRequestHeader('Upload-Offset', String(offset));
    xhr.upload.onprogress = (e) => onLoaded(e.loaded);
    xhr.onload = () => {
      let body = {};
      try { body = JSON.parse(xhr.responseText); } catch { /* not JSON: keep {} */ }
      resolve({ status: xhr.status, body });
    };
    xhr.onerror = () => reject(new ApiError(0, 'network', ''));
    xhr.onabort = () => reject(new ApiError(0, 'aborted', ''));
    xhr.send(chunk);
  });
}

/** Uploads bytes as a material, resumably: the server acknowledges each chunk once it is on its
 * disk, and after a dropped connection the upload asks where it stands and goes on from there
 * (`onState('continuing')`), so a weak link loses at most a chunk. The server checks the
 * SHA-256 computed here. Returns `{promise, abort}`; the promise gives the stored material. */
export function uploadMaterial(caseId, blob, filename, onProgress, onState) {
  let xhr = null;
  let aborted = false;
  const promise = (async () => {
    const sha256 = await sha256Hex(await blob.arrayBuffer());
    const upload = await api('POST', `/cases/${caseId}/uploads`, { filename, size: blob.size, sha256 });
    let offset = upload.offset;
    let tries = 0;
    for (;;) {
      const end = Math.min(offset + upload.chunk_bytes, blob.size);
      const from = offset;
      const answer = await sendChunk(caseId, upload.id, from, blob.slice(from, end),
        (loaded) => onProgress?.((from + loaded) / Math.max(blob.size, 1)), (x) => { xhr = x; })
        .catch((err) => { if (aborted) throw err; return null; });
      if (answer?.status === 201) return answer.body;
      if (answer?.status === 200) {
        offset = answer.body.offset;
        if (tries > 0) onState?.('sending');
        tries = 0;
        continue;
      }
      if (answer?.status === 401) onSessionEnded('expired');
      if (answer && (answer.status === 401 || UPLOAD_FATAL.includes(answer.body.code))) {
        throw new ApiError(answer.status, answer.body.code || `http_${answer.status}`, answer.body.message);
      }
      // The link dropped (or the chunk broke off, or the server was busy): wait, ask where the
      // upload stands, and go on from there.
      if (tries >= UPLOAD_RETRY_MS.length) throw new ApiError(0, 'network', '');
      onState?.('continuing');
      await new Promise((resolve) => { setTimeout(resolve, UPLOAD_RETRY_MS[tries]); });
      tries += 1;
      if (aborted) throw new ApiError(0, 'aborted', '');
      try {
        offset = (await api('GET', `/cases/${caseId}/uploads/${upload.id}`)).offset;
      } catch (err) {
        if (err.status >= 400 && err.status < 500) throw err;
      }
    }
  })();
  return { promise, abort: () => { aborted = true; xhr?.abort(); } };
}

/** The plain-words message for an error. */
export function errorText(err) {
  if (!(err instanceof ApiError)) return err?.userMessage || t('err.generic');
  const code = err.code;
  const known = t(`err.${code}`, {}, null);
  if (known) return known;
  if (err instanceof ApiError && err.status === 403) return t('err.forbidden');
  if (err instanceof ApiError && err.status === 404) return t('err.not_found');
  if (err instanceof ApiError && err.status >= 500) return t('err.internal');
  return t('err.generic');
}

/** A message box: kind is 'error', 'ok' or 'info'. */
export function notice(kind, text) {
  return h('p', { class: `notice ${kind}`, role: kind === 'error' ? 'alert' : 'status' }, text);
}

/** Shows a message in a slot element (replacing what it showed). */
export function say(slot, kind, text) {
  fill(slot, text ? notice(kind, text) : null);
}

const locale = () => (lang() === 'zh' ? 'zh-CN' : 'en-GB');

/** Date and time in local style, e.g. 2026/11/26 14:05 (from RFC 3339 or epoch ms). */
export function fmtDateTime(iso) {
  if (!iso) return '—';
  return new Date(iso).toLocaleString(locale(), {
    year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', hour12: false,
  });
}

/** A duration in seconds as 3分05秒 / 1小时02分. */
export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return '—';
  const s = Math.max(0, Math.round(seconds));
  const hours = Math.floor(s / 3600);
  const minutes = Math.floor((s % 3600) / 60);
  const secs = s % 60;
  if (hours) return t('fmt.hm', { h: hours, m: String(minutes).padStart(2, '0') });
  if (minutes) return t('fmt.ms', { m: minutes, s: String(secs).padStart(2, '0') });
  return t('fmt.s', { s: secs });
}

/** Seconds since an RFC 3339 time (never negative, whatever the clocks say). */
export function secondsSince(iso) {
  return Math.max(0, (Date.now() - new Date(iso).getTime()) / 1000);
}

/** SLA colour of a wait: simple items green < 5 min, amber < 10, red from 10; others neutral. */
export function slaClass(simple, seconds) {
  if (!simple) return 'sla-none';
  if (seconds < 300) return 'sla-green';
  if (seconds < 600) return 'sla-amber';
  return 'sla-red';
}

/** A live waiting-time element, kept current by the ticker. */
export function waitingClock(sinceIso, simple) {
  const el = h('span', { class: 'clock', dataset: { since: sinceIso, simple: simple ? '1' : '' } });
  tickOne(el);
  return el;
}

function tickOne(el) {
  const seconds = secondsSince(el.dataset.since);
  el.textContent = fmtDuration(seconds);
  const row = el.closest('[data-sla]') || el;
  row.classList.remove('sla-green', 'sla-amber', 'sla-red', 'sla-none');
  row.classList.add(slaClass(el.dataset.simple === '1', seconds));
}

setInterval(() => document.querySelectorAll('.clock[data-since]').forEach(tickOne), 1000);

/** Hex SHA-256 of bytes. */
/** A blob's bytes as standard base64 (for JSON bodies carrying a rendered picture). */
export async function blobToBase64(blob) {
  const bytes = new Uint8Array(await blob.arrayBuffer());
  let binary = '';
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary);
}

export async function sha256Hex(buffer) {
  const digest = await crypto.subtle.digest('SHA-256', buffer);
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, '0')).join('');
}

/**
 * What is wrong with a resident ID number (GB 11643) as typed so far, or null: characters other
 * than digits (and a final X), a birth date that does not exist, or the check digit, naming the
 * one expected. A number still being typed is not wrong until it has 18 characters.
 */
export function idNumberProblem(value) {
  const s = value.trim().toUpperCase();
  if (!s) return null;
  if (!/^\d{0,17}$/.test(s.slice(0, 17)) || (s.length === 18 && !/[\dX]$/.test(s))) return { key: 'new.id_chars' };
  if (s.length > 18) return { key: 'new.id_length', params: { n: s.length } };
  if (s.length < 18) return null;
  const year = Number(s.slice(6, 10));
  const month = Number(s.slice(10, 12));
  const day = Number(s.slice(12, 14));
  const date = new Date(Date.UTC(year, month - 1, day));
  if (year < 1900 || date.getUTCFullYear() !== year || date.getUTCMonth() !== month - 1 || date.getUTCDate() !== day) {
    return { key: 'new.id_birth_date', params: { date: s.slice(6, 14) } };
  }
  const weights = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
  const sum = weights.reduce((acc, w, i) => acc + w * Number(s[i]), 0);
  const expected = '10X98765432'[sum % 11];
  if (s[17] !== expected) return { key: 'new.id_check_digit', params: { expected, found: s[17] } };
  return null;
}

/** A labelled form field. */
export function field(label, control, hint) {
  return h('label', { class: 'field' }, h('span', { class: 'label' }, label), control, hint ? h('small', {}, hint) : null);
}

/** Disables a button while `work` runs; shows errors in `slot`. */
export async function busy(button, slot, work) {
  button.disabled = true;
  if (slot) say(slot, null, '');
  try {
    return await work();
  } catch (err) {
    if (slot) say(slot, 'error', errorText(err));
    else throw err;
    return undefined;
  } finally {
    button.disabled = false;
  }
}

/** The name of a department by id, from the catalogue. */
export function departmentName(id) {
  return session.catalogue?.departments.find((d) => d.id === id)?.name ?? String(id);
}
