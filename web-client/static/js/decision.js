// The approver's decision on a case, signed in the browser (电子签章).
//
// The approver's Ed25519 key is made here with WebCrypto, non-extractable, and kept in IndexedDB;
// only its public half is sent to the server, which registers it in the transparency log. Each
// decision is two requests: the server packs the case archive and returns the exact bytes of its
// statement to sign; the browser signs them; the server checks the signature, counter-signs with
// its seal key, logs the statement and only then marks the case decided.
import { api, ApiError, session } from './core.js';

const DB = 'cloudhelp-signing';
const STORE = 'keys';

function idb(mode, work) {
  return new Promise((resolve, reject) => {
    const open = indexedDB.open(DB, 1);
    open.onupgradeneeded = () => open.result.createObjectStore(STORE);
    open.onerror = () => reject(open.error);
    open.onsuccess = () => {
      const tx = open.result.transaction(STORE, mode);
      const request = work(tx.objectStore(STORE));
      tx.oncomplete = () => { open.result.close(); resolve(request?.result); };
      tx.onerror = () => { open.result.close(); reject(tx.error); };
    };
  });
}

const slot = () => `user-${session.user.id}@${location.host}`;
const toBase64 = (buffer) => btoa(String.fromCharCode(...new Uint8Array(buffer)));
const fromBase64 = (text) => Uint8Array.from(atob(text), (c) => c.charCodeAt(0));


/** Makes a key pair (private half non-extractable) and registers its public half. */
async function makeKey() {
  let pair;
  try {
    pair = await crypto.subtle.generateKey({ name: 'Ed25519' }, false, ['sign', 'verify']);
  } catch {
    throw new ApiError(0, 'signing_unavailable', '');
  }
  const raw = await crypto.subtle.exportKey('raw', pair.publicKey);
  const registered = await api('POST', '/keys', { public_key: toBase64(raw) });
  const record = { keyId: registered.key_id, privateKey: pair.privateKey };
  await idb('readwrite', (store) => store.put(record, slot()));
  return record;
}

/** This browser's signing key for the logged-in approver, made and registered at first use. */
async function signingKey({ fresh = false } = {}) {
  if (!fresh) {
    const kept = await idb('readonly', (store) => store.get(slot())).catch(() => undefined);
    if (kept?.keyId && kept?.privateKey) return kept;
  }
  return makeKey();
}

/** Approves or rejects case `caseId` with `reason`, signed; resolves to the updated case. */
export async function decide(caseId, decision, reason) {
  if (decision !== 'approve' && decision !== 'reject') throw new Error(`unknown decision ${decision}`);
  let key = await signingKey();
  let prepared;
  try {
    prepared = await api('POST', `/cases/${caseId}/decision`, { decision, reason, key_id: key.keyId });
  } catch (err) {
    // A revoked key, or one the server does not know (its data was reset): make a new one, once.
    const stale = err instanceof ApiError && (err.code === 'key_revoked' || (err.code === 'invalid_field' && /key_id/.test(err.message)));
    if (!stale) throw err;
    key = await signingKey({ fresh: true });
    prepared = await api('POST', `/cases/${caseId}/decision`, { decision, reason, key_id: key.keyId });
  }
  const signature = await crypto.subtle.sign({ name: 'Ed25519' }, key.privateKey, fromBase64(prepared.signing_bytes));
  const sealed = await api('POST', `/cases/${caseId}/decision/seal`, { signature: toBase64(signature) });
  return sealed.case;
}


