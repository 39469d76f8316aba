// Helpers for the browser tests: the real server binary on an ephemeral port, headless system
// Chromium with a fake camera, logins, and the checks shared by several tests.
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, readFileSync, readdirSync, existsSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import assert from 'node:assert/strict';
import { chromium, request } from 'playwright-core';

export const HERE = dirname(fileURLToPath(import.meta.url));
export const ROOT = resolve(HERE, '..', '..');
export const ARTIFACTS = join(ROOT, 'tests', 'artifacts');
mkdirSync(ARTIFACTS, { recursive: true });

export const PASSWORDS = {
  agent: 'demo-agent-2026',
  approver: 'demo-approver-2026',
  approver2: 'demo-approver-2026',
  expert: 'demo-expert-2026',
  supervisor: 'demo-supervisor-2026',
  auditor: 'demo-auditor-2026',
  admin: 'demo-admin-2026',
};

export const ID_NUMBER = '33068219850612321X';
export const APPLICANT = '欧阳春花';

/** The server binary: WEB_E2E_SERVER_BIN (set by tests/web_e2e.rs), else the usual target folders. */
export function binary() {
  if (process.env.WEB_E2E_SERVER_BIN) return process.env.WEB_E2E_SERVER_BIN;
  const target = process.env.CARGO_TARGET_DIR || join(ROOT, 'target');
  const path = join(target, 'debug', 'cloudhelp');
  if (!existsSync(path)) throw new Error(`no server binary at ${path}: build it (cargo build) or set WEB_E2E_SERVER_BIN`);
  return path;
}

// Servers still running when this process ends (a failed or interrupted run) are killed with it.
const running = new Set();
process.on('exit', () => { for (const proc of running) proc.kill('SIGKILL'); });

/** `cloudhelp serve --demo` on a fresh data folder (or `dataDir`), on `port` (0: any free). */
export async function startServer({ dataDir, port = 0, settings = {} } = {}) {
  const data = dataDir || join(mkdtempSync(join(tmpdir(), 'cloudhelp-e2e-')), 'data');
  const proc = spawn(binary(), ['serve', '--demo', '--listen', `127.0.0.1:${port}`, '--data-dir', data], {
    stdio: ['ignore', 'pipe', 'pipe'],
    // Only the log level from CLOUDHELP_*: the server refuses settings it does not know.
    // `settings` become CLOUDHELP_<SETTING> variables, as an operator would set them.
    env: {
      ...Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('CLOUDHELP_'))),
      ...Object.fromEntries(Object.entries(settings).map(([k, v]) => [`CLOUDHELP_${k.toUpperCase()}`, String(v)])),
      CLOUDHELP_LOG: process.env.CLOUDHELP_LOG || 'warn',
    },
  });
  running.add(proc);
  proc.on('exit', () => running.delete(proc));
  let stderr = '';
  proc.stderr.on('data', (d) => { stderr += d; });
  const lines = createInterface({ input: proc.stdout });
  const url = await new Promise((resolveUrl, reject) => {
    const timer = setTimeout(() => reject(new Error(`the server did not start in 30 s: ${stderr}`)), 30000);
    lines.on('line', (line) => {
      const m = line.match(/^cloudhelp listening on (\S+)/);
      if (m) { clearTimeout(timer); resolveUrl(m[1]); }
    });
    proc.on('exit', (code) => { clearTimeout(timer); reject(new Error(`the server exited (${code}): ${stderr}`)); });
  });
  const server = {
    url,
    port: Number(new URL(url).port),
    data,
    proc,
    stderr: () => stderr,
    /** SIGKILL, and wait for the process to be gone. */
    async kill() {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      const gone = new Promise((r) => proc.once('exit', r));
      proc.kill('SIGKILL');
      await gone;
    },
  };
  return server;
}

const FLAGS = [
  '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--use-fake-device-for-media-stream',
  '--allow-loopback-in-peer-connection',
];

/** Headless system Chromium with fake camera and microphone devices. Permission to use them is
 * given per context (see `newContext`), so a context without it sees the browser's refusal.
 * With `screen`, `getDisplayMedia` gets a fake 1280×720 "Entire screen" without a prompt (that
 * flag also accepts every media prompt, so only the screen-share tests use it). */
export async function launchBrowser({ cameras = 1, screen = false, extraArgs = [] } = {}) {
  // `device-count` gives the fake camera siblings (for switching cameras).
  let args = cameras > 1 ? FLAGS.map((f) => (f === '--use-fake-device-for-media-stream' ? `${f}=device-count=${cameras}` : f)) : FLAGS;
  if (screen) args = [...args, '--use-fake-ui-for-media-stream', '--auto-select-desktop-capture-source=Entire screen'];
  args = [...args, ...extraArgs];
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args,
  });
}

/** A browser context (its own cookies, like a separate person's browser). */
export async function newContext(browser, server, { media = true, viewport = { width: 1280, height: 800 } } = {}) {
  const context = await browser.newContext({
    baseURL: server.url,
    ignoreHTTPSErrors: true,
    viewport,
    locale: 'zh-CN',
    timezoneId: 'Asia/Shanghai',
    permissions: media ? ['camera', 'microphone'] : [],
  });
  context.setDefaultTimeout(15000);
  return context;
}

/** A page that records page errors and console errors, so a test can show them when it fails. */
export async function newPage(context) {
  const page = await context.newPage();
  page.problems = [];
  page.on('pageerror', (e) => page.problems.push(`pageerror: ${e.message}`));
  return page;
}

/** Logs in through the login form and waits for the role's start page. */
export async function login(page, username, password = PASSWORDS[username]) {
  await page.goto('/#/login');
  await page.locator('#login input[name=username]').fill(username);
  await page.locator('#login input[name=password]').fill(password);
  await page.locator('#login button[type=submit]').click();
  await page.waitForFunction(() => !location.hash.startsWith('#/login'));
  await page.locator('header .who').waitFor();
}

/** A new page in `context`, logged in as `username`, then at `path` (a hash route) if given. */
export async function pageAs(context, username, path) {
  const page = await newPage(context);
  await login(page, username);
  if (path) await page.goto(path);
  return page;
}

/** An API client for set-up steps, with a bearer token of `username`. */
export async function apiAs(server, username, password = PASSWORDS[username]) {
  const anon = await request.newContext({ baseURL: server.url, ignoreHTTPSErrors: true });
  const res = await anon.post('/api/auth/token', { data: { username, password } });
  if (!res.ok()) throw new Error(`token for ${username}: ${res.status()} ${await res.text()}`);
  const { token } = await res.json();
  await anon.dispose();
  const ctx = await request.newContext({ baseURL: server.url, ignoreHTTPSErrors: true, extraHTTPHeaders: { Authorization: `Bearer ${token}` } });
  const call = async (method, path, data) => {
    const r = await ctx.fetch(`/api${path}`, { method, data });
    const text = await r.text();
    let body = text;
    try { body = JSON.parse(text); } catch { /* not JSON */ }
    return { status: r.status(), body };
  };
  return { call, dispose: () => ctx.dispose() };
}

/** Opens a case through the API, as `agent` (a bearer-token client from `apiAs`). */
export async function openCase(agentApi, item = 'id-loss') {
  const r = await agentApi.call('POST', '/cases', { item, applicant_name: APPLICANT, applicant_id_number: ID_NUMBER, note: '' });
  if (r.status !== 201) throw new Error(`open case: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body;
}

/** Waits until `locator` has text containing `text`. */
export async function waitText(locator, text, timeout = 15000) {
  await locator.filter({ hasText: text }).first().waitFor({ timeout });
}

/** The visible text of the page's main parts, leaving out what is marked as data rather than UI
 * (`translate="no"`: case numbers, file names, digests, device names) and the language switch. */
export async function visibleUiText(page) {
  return page.evaluate(() => {
    const parts = [];
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      const el = node.parentElement;
      if (!el || el.closest('[translate=no], button.lang, script, style, noscript, [hidden]')) continue;
      if (!el.checkVisibility?.() && el.offsetParent === null && el.tagName !== 'OPTION') continue;
      parts.push(node.textContent);
    }
    // Placeholders and labels read out by screen readers are UI too.
    document.querySelectorAll('[placeholder], [aria-label]').forEach((el) => {
      if (!el.closest('[translate=no]')) parts.push(el.getAttribute('placeholder') || '', el.getAttribute('aria-label') || '');
    });
    return parts.join(' ');
  });
}

/** Words of Latin letters allowed on a Chinese page: units, formats and codes, not UI words. */
// Names of formats and standards, written so in Chinese too.
export const ALLOWED_LATIN = new Set(['PDF', 'SHA', 'B', 'KB', 'MB', 'X', 'ID', 'JPEG', 'PNG', 'ZIP', 'CRC', 'BagIt', 'RFC', 'JSON']);

/** English words (two or more letters, not part of a token with digits) outside the allow-list. */
export function untranslatedWords(text) {
  const tokens = text.match(/[A-Za-z0-9_]+/g) || [];
  return [...new Set(tokens.filter((tok) => /^[A-Za-z]{2,}$/.test(tok) && !ALLOWED_LATIN.has(tok)))];
}

/** Every `t('key')` used in the web client's modules. */
export function usedKeys() {
  const dir = join(ROOT, 'web-client', 'static', 'js');
  const files = [];
  const walk = (d) => readdirSync(d, { withFileTypes: true }).forEach((e) => (e.isDirectory() ? walk(join(d, e.name)) : e.name.endsWith('.js') && files.push(join(d, e.name))));
  walk(dir);
  const keys = new Set();
  for (const f of files) {
    for (const m of readFileSync(f, 'utf8').matchAll(/\bt\('([a-z_]+\.[a-z_.]+)'/g)) keys.add(m[1]);
    // Keys named in navigation tables: ['#/…', 'nav.x'].
    for (const m of readFileSync(f, 'utf8').matchAll(/'(nav\.[a-z_]+)'/g)) keys.add(m[1]);
  }
  return keys;
}

/** The call panel's per-participant inbound figures on `page` (`{ 'user-3': { framesDecoded,
 * totalSamplesReceived } }`), from the panel's own RTCPeerConnection (getStats). */
export async function callStats(page) {
  return page.evaluate(async () => (window.cloudhelp.call ? window.cloudhelp.call.stats() : {}));
}

/** Waits until `page` has decoded video (and received audio) from every participant in `from`,
 * and the figures are rising: measured a second apart, `framesDecoded` (and
 * `totalSamplesReceived`) of each must have grown (media is live, not a frozen first frame).
 * Measures again until `timeout`, so that a picture that freezes briefly (a keyframe after an
 * ICE restart) passes once it moves again; one that stays frozen fails with the figures. */
export async function expectMediaFlowing(page, from, { timeout = 30000, audio = true, label = '' } = {}) {
  const started = Date.now();
  let problem = '';
  for (;;) {
    const first = await callStats(page);
    await page.waitForTimeout(1000);
    const second = await callStats(page);
    problem = '';
    for (const p of from) {
      const a = first[p];
      const b = second[p];
      if (!a || !b) problem ||= `nothing from ${p} yet: ${JSON.stringify([first, second])}`;
      else if (!(b.framesDecoded > a.framesDecoded)) problem ||= `video from ${p} is not decoding: ${JSON.stringify([a, b])}`;
      else if (audio && !(b.totalSamplesReceived > a.totalSamplesReceived)) problem ||= `audio from ${p} is not arriving: ${JSON.stringify([a, b])}`;
    }
    if (!problem) return { stats: second, waitedMs: Date.now() - started };
    if (Date.now() - started > timeout) throw new Error(`${label}: ${problem} (after ${timeout} ms)`);
  }
}

/** The agent opens a case of `item` (its page in `agentCtx`, camera ready) and the approver (in
 * `approverCtx`) accepts it on the case page: a call of two. Returns both pages, the case id and
 * both participant ids. */
export async function startCall(server, agentCtx, approverCtx, item = 'id-loss') {
  const opened = await openCase(await apiAs(server, 'agent'), item);
  const agent = await pageAs(agentCtx, 'agent', `/#/case/${opened.id}`);
  await agent.locator('.camera-panel[data-ready]').waitFor();
  const approver = await pageAs(approverCtx, 'approver', `/#/case/${opened.id}`);
  await approver.locator('#accept').click();
  await waitText(approver.locator('.case-facts .badge'), '视频办理中');
  return { caseId: opened.id, agent, approver, ...(await participantIds(server, opened.id)) };
}

/** The remote tile of `participant` on `page` shows a playing video (not paused, with frames). */
export async function expectTilePlaying(page, participant) {
  await page.waitForFunction((p) => {
    const v = document.querySelector(`.call-tile[data-participant="${p}"] video`);
    return v && !v.paused && v.readyState >= 2 && v.videoWidth > 0;
  }, participant, { timeout: 20000 });
}

/** Every page of `parties` (`[[page, participantId], …]`) receives every other party: video
 * decoding and audio arriving, both rising (`expectMediaFlowing`), and the tile playing. */
export async function expectEveryoneReceives(parties) {
  for (const [page, own] of parties) {
    const others = parties.map(([, id]) => id).filter((id) => id !== own);
    await expectMediaFlowing(page, others, { label: `${own} receiving ${others.join(', ')}` });
    for (const other of others) await expectTilePlaying(page, other);
  }
}

/** The approver invites 陈专家 on its case page; the expert logs in (in `expertContext`) and opens
 * the case from its list. Returns the expert's page and participant id (`user-<id>`). */
export async function inviteExpert(server, approver, expertContext, caseId) {
  await approver.locator('#invite select').selectOption({ label: '陈专家（出入境）' });
  await approver.locator('#invite button[type=submit]').click();
  await waitText(approver.locator('.case-facts'), '陈专家');
  const expert = await pageAs(expertContext, 'expert');
  await expert.locator(`.case-row[data-case-id="${caseId}"]`).click();
  await expert.waitForFunction((id) => location.hash === `#/case/${id}`, caseId);
  return { expert, expertId: (await participantIds(server, caseId)).expertIds[0] };
}

/** The call participant ids (`user-<id>`, the tiles' `data-participant`) of a case's agent,
 * approver and invited experts. */
export async function participantIds(server, caseId) {
  const view = (await (await apiAs(server, 'approver')).call('GET', `/cases/${caseId}`)).body;
  return { agentId: `user-${view.agent.id}`, approverId: `user-${view.approver?.id}`, expertIds: view.experts.map((e) => `user-${e.id}`) };
}

/** On the approver's case page: 可信身份认证 (ID card shown, face compared), then 审批通过 with
 * `reason`, which the page signs with the browser's own key (WebCrypto Ed25519, js/decision.js). */
export async function checkIdentityAndApprove(approver, reason = '材料齐全，身份核验一致') {
  await approver.locator('#identity-check input[value=id_card_shown]').check();
  await approver.locator('#identity-check input[value=face_compared]').check();
  await approver.locator('#identity-check button[type=submit]').click();
  await waitText(approver.locator('.case-facts'), '已完成可信身份认证');
  await approver.locator('textarea[name=decision-reason]').fill(reason);
  await approver.locator('#approve').click();
  await waitText(approver.locator('.case-facts .badge'), '已审批通过');
}

/** The approver's signing key as its browser keeps it (IndexedDB, js/decision.js): the key id the
 * server registered, and whether the private half could be exported. */
export async function browserSigningKey(page) {
  return page.evaluate(() => new Promise((resolve, reject) => {
    const open = indexedDB.open('cloudhelp-signing', 1);
    open.onerror = () => reject(open.error);
    open.onsuccess = () => {
      const all = open.result.transaction('keys', 'readonly').objectStore('keys').getAll();
      all.onerror = () => reject(all.error);
      all.onsuccess = () => {
        open.result.close();
        resolve(all.result.map((k) => ({ keyId: k.keyId, extractable: k.privateKey.extractable })));
      };
    };
  }));
}

/** On the agent's page of an issued case: the resident's rating (好差评) of `score` stars with
 * `comment`; returns the page's answer. */
export async function rateOnPage(agent, score, comment) {
  await agent.locator(`#rating button.star[data-score="${score}"]`).click();
  await agent.locator('#rating textarea[name=comment]').fill(comment);
  await agent.locator('#rating button[type=submit]').click();
  const saved = agent.locator('#rating .notice.ok');
  await saved.waitFor();
  return saved.innerText();
}

/** One file of a zip (the archive's entries are stored, but read it properly all the same). */
export function readZipEntry(zipPath, name) {
  const script = 'import sys, zipfile; sys.stdout.buffer.write(zipfile.ZipFile(sys.argv[1]).read(sys.argv[2]))';
  return execFileSync('python3', ['-c', script, zipPath, name]).toString('utf8');
}

/** `cloudhelp verify ZIP --trust trust.json --json`, the real binary, with the trust file the
 * server publishes, no data folder, no network and no environment; returns its JSON report. */
export async function verifyOffline(server, zipPath) {
  const folder = mkdtempSync(join(tmpdir(), 'cloudhelp-offline-'));
  const trust = await (await apiAs(server, 'auditor')).call('GET', '/log/trust');
  if (trust.status !== 200) throw new Error(`trust file: ${trust.status}`);
  writeFileSync(join(folder, 'trust.json'), JSON.stringify(trust.body));
  let out;
  try {
    out = execFileSync(binary(), ['verify', zipPath, '--trust', join(folder, 'trust.json'), '--json'], { env: {} });
  } catch (err) {
    // It exits non-zero when a check fails: the report (stdout) says which.
    if (!err.stdout?.length) throw err;
    out = err.stdout;
  }
  return JSON.parse(out.toString());
}

/** Where a call page shows its own picture (self-view) beside the picture of `remoteId`. With
 * `overlay` (phone width): a small picture, less than half as wide and high as the other's,
 * lying inside it and drawn over it (the topmost element at its centre). Without: a tile of its
 * own that does not overlap the other. */
export async function expectSelfView(page, remoteId, { overlay }) {
  await page.locator('.call-tile.self').scrollIntoViewIfNeeded();
  const { self, remote, selfOnTop } = await page.evaluate((id) => {
    const box = (el) => { const r = el.getBoundingClientRect(); return { left: r.left, top: r.top, right: r.right, bottom: r.bottom, width: r.width, height: r.height }; };
    const selfTile = document.querySelector('.call-tile.self');
    const s = box(selfTile);
    const top = document.elementFromPoint((s.left + s.right) / 2, (s.top + s.bottom) / 2)?.closest('.call-tile');
    return { self: s, remote: box(document.querySelector(`.call-tile[data-participant="${id}"]`)), selfOnTop: top === selfTile };
  }, remoteId);
  const boxes = JSON.stringify({ self, remote });
  assert.ok(self.width > 0 && self.height > 0, `the self-view is not shown: ${boxes}`);
  const inside = self.left >= remote.left && self.top >= remote.top && self.right <= remote.right && self.bottom <= remote.bottom;
  const overlaps = self.left < remote.right && remote.left < self.right && self.top < remote.bottom && remote.top < self.bottom;
  if (overlay) {
    assert.ok(self.width < remote.width / 2 && self.height < remote.height / 2, `the self-view is not small beside the other's picture: ${boxes}`);
    assert.ok(inside, `the self-view does not lie within the other's picture: ${boxes}`);
    assert.ok(selfOnTop, `the self-view is hidden under another element: ${boxes}`);
  } else {
    assert.ok(!overlaps, `the self-view covers the other's picture: ${boxes}`);
  }
}

/** A free UDP port on loopback (for the relay, so that a proxy can stand in front of it). */
export async function freeUdpPort() {
  const { createSocket } = await import('node:dgram');
  const socket = createSocket('udp4');
  await new Promise((r) => socket.bind(0, '127.0.0.1', r));
  const { port } = socket.address();
  await new Promise((r) => socket.close(r));
  return port;
}

/** `cloudhelp impair` in front of `target` (host:port): returns its port, the events it has
 * reported (`events`), `send(command)` (`profile NAME`, `rebind`, `stats`), `waitFor(predicate)`
 * for an event, `stats()` and `stop()`. */
export async function startImpairment(target, profile = 'clean') {
  const proc = spawn(binary(), ['impair', '--target', target, '--profile', profile], { stdio: ['pipe', 'pipe', 'pipe'] });
  running.add(proc);
  proc.on('exit', () => running.delete(proc));
  let stderr = '';
  proc.stderr.on('data', (d) => { stderr += d; });
  const events = [];
  const waiters = new Set();
  createInterface({ input: proc.stdout }).on('line', (line) => {
    const event = { ...JSON.parse(line), seenAt: Date.now() };
    events.push(event);
    for (const w of waiters) if (w.predicate(event)) { waiters.delete(w); w.resolve(event); }
  });
  const waitFor = (predicate, timeout = 30000) => {
    const seen = events.find(predicate);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const w = { predicate, resolve };
      waiters.add(w);
      setTimeout(() => { if (waiters.delete(w)) reject(new Error(`the impairment proxy did not report it in ${timeout} ms: ${stderr}`)); }, timeout);
    });
  };
  const listening = await waitFor((e) => e.event === 'listening', 10000);
  const send = (command) => proc.stdin.write(`${command}\n`);
  return {
    port: Number(listening.address.split(':').pop()),
    events,
    send,
    waitFor,
    /** The next counters (offered, delivered, lost, queue_drops, blocked_drops per way). */
    async stats() {
      const after = events.length;
      send('stats');
      return waitFor((e) => e.event === 'stats' && events.indexOf(e) >= after);
    },
    /** Switches to a named profile (or a JSON file of one named `named`) and waits for its
     * first phase. */
    async profile(nameOrFile, named = nameOrFile) {
      const after = events.length;
      send(`profile ${nameOrFile}`);
      return waitFor((e) => e.event === 'phase' && e.profile === named && events.indexOf(e) >= after);
    },
    async stop() {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      const gone = new Promise((r) => proc.once('exit', r));
      proc.kill('SIGKILL');
      await gone;
    },
  };
}

/** Makes every page of `context` reach the relay (its UDP port `relayPort`) only through the
 * proxy at `proxyPort`, as if the proxy were the network between this browser and the relay: the
 * relay's candidates are rewritten to the proxy's port, and the browser's own candidates are kept
 * from the relay (it learns the proxy's address from the browser's checks instead). */
export async function behindProxy(context, relayPort, proxyPort) {
  await context.addInitScript(({ relayPort, proxyPort }) => {
    const pattern = new RegExp(`(127\\.0\\.0\\.1 )${relayPort}( typ host)`, 'g');
    const rewrite = (text) => text.replace(pattern, `$1${proxyPort}$2`);
    const setRemote = RTCPeerConnection.prototype.setRemoteDescription;
    RTCPeerConnection.prototype.setRemoteDescription = function (desc) {
      return setRemote.call(this, desc?.sdp ? { type: desc.type, sdp: rewrite(desc.sdp) } : desc);
    };
    const addCandidate = RTCPeerConnection.prototype.addIceCandidate;
    RTCPeerConnection.prototype.addIceCandidate = function (init) {
      return addCandidate.call(this, init?.candidate ? { ...init, candidate: rewrite(init.candidate) } : init);
    };
    const send = WebSocket.prototype.send;
    WebSocket.prototype.send = function (data) {
      if (typeof data === 'string' && data.includes('"call.')) {
        const msg = JSON.parse(data);
        if (msg.type === 'call.candidate') return undefined;
        if (typeof msg.sdp === 'string') {
          msg.sdp = msg.sdp.split('\r\n').filter((l) => !l.startsWith('a=candidate:')).join('\r\n');
          return send.call(this, JSON.stringify(msg));
        }
      }
      return send.call(this, data);
    };
  }, { relayPort, proxyPort });
}

/** What the call panel's connection says about the link, summed over streams: inbound video
 * (freezes, frames received, decoded and dropped, keyframes, NACKs and PLIs sent, width,
 * loss), inbound audio (concealed and received samples, codecs), outbound video (bytes, width,
 * what limits it, each simulcast layer's size and rate), outbound audio (bytes, codecs), and the
 * selected pair (available outgoing bitrate, RTT). */
export async function linkFigures(page) {
  return page.evaluate(async () => {
    const pc = window.cloudhelp.call?.pc;
    const f = {
      at: performance.now(),
      video: { freezeCount: 0, totalFreezesDuration: 0, framesDecoded: 0, frameWidth: 0, packetsLost: 0, packetsReceived: 0, bytesReceived: 0, framesReceived: 0, framesDropped: 0, keyFramesDecoded: 0, nackCount: 0, pliCount: 0 },
      audio: { concealedSamples: 0, totalSamplesReceived: 0, packetsLost: 0, packetsReceived: 0, codecs: [] },
      sent: { videoBytes: 0, audioBytes: 0, frameWidth: 0, qualityLimitationReason: 'none', audioCodecs: [], layers: [] },
      pair: { availableOutgoingBitrate: 0, currentRoundTripTime: 0 },
    };
    if (!pc) return f;
    const report = await pc.getStats();
    const codec = (s) => report.get(s.codecId)?.mimeType;
    report.forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'video') {
        for (const k of Object.keys(f.video)) if (k !== 'frameWidth') f.video[k] += s[k] || 0;
        f.video.frameWidth = Math.max(f.video.frameWidth, s.frameWidth || 0);
      } else if (s.type === 'inbound-rtp' && s.kind === 'audio') {
        for (const k of ['concealedSamples', 'totalSamplesReceived', 'packetsLost', 'packetsReceived']) f.audio[k] += s[k] || 0;
        if (codec(s)) f.audio.codecs.push(codec(s));
      } else if (s.type === 'outbound-rtp' && s.kind === 'video') {
        f.sent.layers.push(`${s.rid || '-'}: ${s.frameWidth || 0} px, ${s.framesPerSecond || 0} frames/s`);
        f.sent.videoBytes += s.bytesSent || 0;
        if ((s.frameWidth || 0) >= f.sent.frameWidth) {
          f.sent.frameWidth = s.frameWidth || 0;
          f.sent.qualityLimitationReason = s.qualityLimitationReason || 'none';
        }
      } else if (s.type === 'outbound-rtp' && s.kind === 'audio') {
        f.sent.audioBytes += s.bytesSent || 0;
        if (codec(s)) f.sent.audioCodecs.push(codec(s));
      } else if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') {
        f.pair.availableOutgoingBitrate = s.availableOutgoingBitrate || 0;
        f.pair.currentRoundTripTime = s.currentRoundTripTime || 0;
      }
    });
    return f;
  });
}

/** A free TCP port on loopback. */
export async function freeTcpPort() {
  const { createServer } = await import('node:net');
  const server = createServer();
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address();
  await new Promise((r) => server.close(r));
  return port;
}

/** Debian's coturn on loopback, reachable only over TLS on `tlsPort` (no plain UDP or TCP
 * listener: what a network that lets only HTTPS out leaves), with the shared `secret`, the
 * certificate and key at `cert`/`key`; relays to loopback peers. Returns `stop()` and the log. */
export async function startCoturn({ tlsPort, secret, cert, key }) {
  const dir = mkdtempSync(join(tmpdir(), 'cloudhelp-coturn-'));
  const config = [
    'listening-ip=127.0.0.1', 'relay-ip=127.0.0.1', `tls-listening-port=${tlsPort}`,
    // The plain listener is on a port nothing is told about; UDP and DTLS are off.
    `listening-port=${tlsPort + 1}`, 'no-udp', 'no-dtls',
    `min-port=${30000 + (tlsPort % 1000) * 10}`, `max-port=${30009 + (tlsPort % 1000) * 10}`,
    'use-auth-secret', `static-auth-secret=${secret}`, 'realm=cloudhelp', 'fingerprint', 'no-cli',
    'allow-loopback-peers', 'allowed-peer-ip=127.0.0.1', `cert=${cert}`, `pkey=${key}`,
    `userdb=${join(dir, 'turndb')}`, `pidfile=${join(dir, 'turn.pid')}`, `log-file=${join(dir, 'turn.log')}`, 'simple-log',
  ].join('\n');
  writeFileSync(join(dir, 'turnserver.conf'), `${config}\n`);
  const proc = spawn('turnserver', ['-c', join(dir, 'turnserver.conf')], { stdio: 'ignore' });
  running.add(proc);
  proc.on('exit', () => running.delete(proc));
  // Ready when its TLS port takes connections.
  const { connect } = await import('node:net');
  const deadline = Date.now() + 10000;
  for (;;) {
    const ok = await new Promise((r) => {
      const socket = connect(tlsPort, '127.0.0.1', () => { socket.destroy(); r(true); });
      socket.on('error', () => r(false));
    });
    if (ok) break;
    if (Date.now() > deadline || proc.exitCode !== null) throw new Error(`coturn did not start on ${tlsPort}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    log: () => { try { return readFileSync(join(dir, 'turn.log'), 'utf8'); } catch { return ''; } },
    async stop() {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      const gone = new Promise((r) => proc.once('exit', r));
      proc.kill('SIGKILL');
      await gone;
    },
  };
}

/** The base64 SHA-256 of a PEM certificate's public key (Chromium's
 * `--ignore-certificate-errors-spki-list`, to trust a self-signed TURN server). */
export async function spkiHash(certPem) {
  const { X509Certificate, createHash } = await import('node:crypto');
  const spki = new X509Certificate(certPem).publicKey.export({ type: 'spki', format: 'der' });
  return createHash('sha256').update(spki).digest('base64');
}

/** Writes a Y4M file (1920×1080, 2 frames at 5 frames/s, which Chromium's fake camera loops) of
 * a document: `id` printed large, and lines of small text under it; rendered by `browser`.
 * Returns its path. */
export async function documentY4m(browser, id) {
  const page = await browser.newPage();
  try {
    const planes = await page.evaluate((id) => {
      const [w, h] = [1920, 1080];
      const canvas = document.createElement('canvas');
      canvas.width = w;
      canvas.height = h;
      const g = canvas.getContext('2d');
      g.fillStyle = '#fff';
      g.fillRect(0, 0, w, h);
      g.fillStyle = '#000';
      g.font = 'bold 64px monospace';
      g.fillText(id, 360, 420);
      g.font = '28px monospace';
      for (let i = 0; i < 6; i++) g.fillText(`Line ${i + 1}: issued by the county public security bureau, valid ten years`, 360, 520 + i * 44);
      const rgba = g.getImageData(0, 0, w, h).data;
      // BT.601 full-range I420 (the C420jpeg of the header).
      const y = new Uint8Array(w * h);
      const u = new Uint8Array((w / 2) * (h / 2));
      const v = new Uint8Array((w / 2) * (h / 2));
      for (let j = 0; j < h; j++) {
        for (let i = 0; i < w; i++) {
          const k = (j * w + i) * 4;
          y[j * w + i] = Math.round(0.299 * rgba[k] + 0.587 * rgba[k + 1] + 0.114 * rgba[k + 2]);
        }
      }
      for (let j = 0; j < h / 2; j++) {
        for (let i = 0; i < w / 2; i++) {
          const k = (2 * j * w + 2 * i) * 4;
          const [r, gr, b] = [rgba[k], rgba[k + 1], rgba[k + 2]];
          u[j * (w / 2) + i] = Math.round(128 - 0.168736 * r - 0.331264 * gr + 0.5 * b);
          v[j * (w / 2) + i] = Math.round(128 + 0.5 * r - 0.418688 * gr - 0.081312 * b);
        }
      }
      const b64 = (a) => { let s = ''; for (let i = 0; i < a.length; i += 0x8000) s += String.fromCharCode(...a.subarray(i, i + 0x8000)); return btoa(s); };
      return [b64(y), b64(u), b64(v)];
    }, id);
    const frame = Buffer.concat([Buffer.from('FRAME\n'), ...planes.map((p) => Buffer.from(p, 'base64'))]);
    const path = join(mkdtempSync(join(tmpdir(), 'cloudhelp-doc-')), 'document.y4m');
    writeFileSync(path, Buffer.concat([Buffer.from('YUV4MPEG2 W1920 H1080 F5:1 Ip A1:1 C420jpeg\n'), frame, frame]));
    return path;
  } finally {
    await page.close();
  }
}

/** Reads the text in a PNG with Debian's tesseract (English model, one block of text). */
export function ocr(pngPath) {
  return execFileSync('tesseract', [pngPath, 'stdout', '--psm', '6'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
}
