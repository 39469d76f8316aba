// Browser tests of the web client: the real `cloudhelp serve --demo` binary and headless system
// Chromium (fake camera and microphone), driven with playwright-core. Run by `cargo test`
// (tests/web_e2e.rs), or alone: `node tests/e2e/run.mjs` after `cargo build`.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { readFile } from 'node:fs/promises';
import { DICTIONARIES } from '../../web-client/static/js/i18n.js';
import { LinkWatch, LINK_WATCH_MS, LINK_PATIENCE } from '../../web-client/static/js/linkwatch.js';
import {
  ARTIFACTS, APPLICANT, ID_NUMBER, startServer, launchBrowser, newContext, newPage, login, pageAs, apiAs, participantIds,
  openCase, waitText, visibleUiText, untranslatedWords, usedKeys,
  expectMediaFlowing, expectTilePlaying, expectEveryoneReceives, inviteExpert, checkIdentityAndApprove,
  browserSigningKey, rateOnPage, readZipEntry, verifyOffline, expectSelfView, startCall,
} from './lib.mjs';

let server;
let browser;

before(async () => {
  server = await startServer();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.kill();
});

// The link watch's decisions, on virtual time (readings every LINK_WATCH_MS; no browser).
const STARVED = { bps: 80_000, rtt: 0.9, loss: 0.05 };
const HEALTHY_LOW = { bps: 120_000, rtt: 0.1, loss: 0 };
const GOOD = { bps: 800_000, rtt: 0.05, loss: 0 };
/** Feeds `readings` to `watch` from `start` ms on; returns each reading's decision (null: none). */
function feed(watch, readings, start = 0) {
  return readings.map((r, i) => watch.reading(r, start + i * LINK_WATCH_MS));
}
const times = (n, reading) => Array.from({ length: n }, () => reading);

test('the link watch stops the camera after three starved readings, brings it back at the low rate once healthy, and at full once good', () => {
  const watch = new LinkWatch();
  assert.deepEqual(feed(watch, times(3, STARVED)), [null, null, 'audio']);
  const back = feed(watch, times(LINK_PATIENCE, HEALTHY_LOW), 10_000);
  assert.deepEqual(back, [...times(LINK_PATIENCE - 1, null), 'low']);
  const full = feed(watch, times(5, GOOD), 30_000);
  assert.deepEqual(full, [null, null, null, null, 'good']);
});

test('the link watch does not stop the camera for a lossy line with a short round trip: it lowers the frame rate', () => {
  const watch = new LinkWatch();
  // 10 % of the audio lost at random, 0.15 s round trip, Chromium's estimate at its ~70 kbit/s floor.
  assert.deepEqual(feed(watch, times(6, { bps: 70_000, rtt: 0.15, loss: 0.1 })), [null, 'low', null, null, null, null]);
});

test('the link watch does not act on the two readings after an outage: what they say is about the outage', () => {
  const watch = new LinkWatch();
  assert.deepEqual(feed(watch, times(2, STARVED)), [null, null]);
  watch.disconnected();
  // Without the settling, the third starved reading in a row (or the first after the outage,
  // counting on from before it) would stop the camera.
  assert.deepEqual(feed(watch, times(3, STARVED), 20_000), [null, null, null]);
  assert.deepEqual(feed(watch, times(2, STARVED), 26_000), [null, 'audio']);
});

test('the link watch waits twice as long before the next return when a return had to stop again within 20 s', () => {
  const watch = new LinkWatch();
  feed(watch, times(3, STARVED));
  assert.deepEqual(feed(watch, times(LINK_PATIENCE, HEALTHY_LOW), 6_000).at(-1), 'low');
  // Starved again 10 s after coming back: the patience doubles.
  assert.deepEqual(feed(watch, times(3, STARVED), 20_000).at(-1), 'audio');
  const waited = feed(watch, times(2 * LINK_PATIENCE, HEALTHY_LOW), 30_000);
  assert.equal(waited.indexOf('low'), 2 * LINK_PATIENCE - 1, JSON.stringify(waited));
});

test('every string the pages use is in both the Chinese and the English dictionary', () => {
  const keys = usedKeys();
  assert.ok(keys.size > 100, `found only ${keys.size} keys: the scan is broken`);
  for (const language of ['zh', 'en']) {
    const missing = [...keys].filter((k) => !(k in DICTIONARIES[language]));
    assert.deepEqual(missing, [], `missing in ${language}`);
  }
  const extraInEnglish = Object.keys(DICTIONARIES.en).filter((k) => !(k in DICTIONARIES.zh));
  assert.deepEqual(extraInEnglish, []);
  const untranslated = Object.entries(DICTIONARIES.zh).filter(([, v]) => untranslatedWords(v.replace(/\{\w+\}/g, '')).length).map(([k, v]) => `${k}: ${v}`);
  assert.deepEqual(untranslated, [], 'Chinese strings with English words');
});

test("the whole story in one test: the agent opens a case, the approver accepts it from the live queue, each sees and hears the other, a captured document reaches the approver's viewer with the stored SHA-256, an invited expert makes it a call of three, the approver approves and signs, the archive passes cloudhelp verify, and the resident's rating is recorded", async () => {
  // One browser context per person (own cookies, own signing key), all closed at the end.
  const contexts = [];
  const person = async () => {
    const ctx = await newContext(browser, server);
    contexts.push(ctx);
    return ctx;
  };
  try {
    const approver = await pageAs(await person(), 'approver');
    assert.equal(await approver.evaluate(() => location.hash), '#/queue');
    await approver.locator('#queue').waitFor();

    // The agent logs in and opens a case; the required materials show as a list (no ticks that no one else would see).
    const agent = await pageAs(await person(), 'agent');
    await agent.locator('header nav a[href="#/agent/new"]').click();
    await agent.locator('#new-case select[name=item]').selectOption('id-loss');
    assert.deepEqual(await agent.locator('#required-materials li').allInnerTexts(), ['居民身份证号码', '本人现场照片']);
    assert.equal(await agent.locator('#required-materials input[type=checkbox]').count(), 0);
    await agent.locator('input[name=applicant_name]').fill(APPLICANT);
    await agent.locator('input[name=applicant_id_number]').fill(ID_NUMBER);
    await agent.locator('#new-case button[type=submit]').click();
    await agent.waitForFunction(() => /^#\/case\/\d+$/.test(location.hash));
    const caseId = Number((await agent.evaluate(() => location.hash)).split('/')[2]);
    await waitText(agent.locator('.case-facts .badge'), '排队等待受理');
    assert.ok(!(await agent.locator('#applicant').innerText()).includes(APPLICANT), 'the applicant is masked for the agent');

    // The case appears in the approver's queue without a reload (over /ws), with its waiting
    // time; the approver accepts it there and sees the applicant unmasked.
    const row = approver.locator(`.queue-item[data-case-id="${caseId}"]`);
    await row.waitFor();
    assert.match(await row.innerText(), /居民身份证挂失/);
    assert.ok(await row.evaluate((el) => el.classList.contains('sla-green')), 'a fresh simple item is green');
    assert.match(await row.locator('.clock').innerText(), /^\d+秒$/);
    await row.locator('button.accept').click();
    await approver.waitForFunction((id) => location.hash === `#/case/${id}`, caseId);
    await waitText(approver.locator('.case-facts .badge'), '视频办理中');
    await waitText(approver.locator('#applicant'), APPLICANT);
    assert.match(await approver.locator('#applicant').innerText(), new RegExp(ID_NUMBER));

    // The accept starts the call: each page decodes the other's video and hears its audio.
    const { agentId, approverId } = await participantIds(server, caseId);
    await expectEveryoneReceives([[agent, agentId], [approver, approverId]]);

    // During the call the agent captures a document at the camera's full resolution. It reaches
    // the approver's viewer, whose SHA-256 (computed in the browser from the bytes it received)
    // is the one the agent's upload reported and the one the server stored.
    await agent.locator('.camera-panel[data-ready]').waitFor();
    assert.ok(await agent.locator('.camera-panel select').nth(0).locator('option').count() >= 1, 'cameras listed');
    assert.ok(await agent.locator('.camera-panel select').nth(1).locator('option').count() >= 1, 'microphones listed');
    const track = await agent.evaluate(() => {
      const s = document.querySelector('video.preview').srcObject.getVideoTracks()[0].getSettings();
      return { width: s.width, height: s.height };
    });
    await agent.locator('#capture').click();
    const upload = agent.locator('#uploads li.upload').first();
    await upload.locator('xpath=self::*[@data-state="done"]').waitFor();
    const uploadedSha = await upload.getAttribute('data-sha256');
    assert.match(uploadedSha, /^[0-9a-f]{64}$/);
    assert.equal(await upload.locator('progress').evaluate((p) => p.value), 1);
    await approver.locator(`.thumb[data-sha256="${uploadedSha}"] [data-check="ok"]`).waitFor();
    const shown = approver.locator('#viewer-hash code');
    await shown.waitFor();
    assert.equal(await shown.getAttribute('data-sha256'), uploadedSha);
    const stored = await (await apiAs(server, 'auditor')).call('GET', `/cases/${caseId}/materials`);
    assert.equal(stored.status, 200);
    assert.deepEqual(stored.body.map((m) => [m.sha256, m.media_type]), [[uploadedSha, 'image/jpeg']]);
    const image = await approver.locator('#viewer-image').evaluate(async (img) => { await img.decode(); return { width: img.naturalWidth, height: img.naturalHeight }; });
    assert.deepEqual(image, track);
    // The viewer zooms and rotates beside the list of required materials.
    await approver.locator('#rotate').click();
    await approver.locator('#zoom-in').click();
    assert.match(await approver.locator('#viewer-image').evaluate((i) => i.style.transform), /rotate\(90deg\) scale\(1\.25\)/);
    assert.equal(await approver.locator('.viewer-side li').count(), 2);

    // The approver invites an expert, who joins: a call of three, each receiving the other two.
    const { expert, expertId } = await inviteExpert(server, approver, await person(), caseId);
    await expectEveryoneReceives([[agent, agentId], [approver, approverId], [expert, expertId]]);
    assert.match(await agent.locator(`.call-tile[data-participant="${expertId}"] .call-name`).innerText(), /陈专家（专家）/);

    // Before the identity check, 「批准」 is disabled and the page says why; after it, the
    // approval is signed in the approver's browser. The call stays open through the decision
    // and issuing, so the approver can tell the resident the result on video.
    assert.equal(await approver.locator('#approve').isDisabled(), true);
    await waitText(approver.locator('#decision'), '批准前须完成可信身份认证');
    await waitText(approver.locator('#identity-check'), '记录认证结果');
    await checkIdentityAndApprove(approver);
    // 已签章, with the statement's log index, for the approver and the agent.
    for (const p of [approver, agent]) {
      await waitText(p.locator('#case-seal'), '已签章');
      assert.match(await p.locator('#case-seal').getAttribute('data-log-index'), /^\d+$/);
      assert.match(await p.locator('#case-seal').innerText(), /透明日志序号 \d+ · 签章密钥 ed25519:[0-9a-f]{16}/);
    }
    await waitText(approver.locator('.case-actions'), '下一步：点击「出件」');
    for (const p of [agent, approver, expert]) assert.equal(await p.locator('.call-area').getAttribute('data-call-state'), 'connected');
    await expectEveryoneReceives([[agent, agentId], [approver, approverId], [expert, expertId]]);
    await approver.locator('#issue').click();
    await waitText(approver.locator('.case-facts .badge'), '已出件');
    await waitText(agent.locator('.case-facts .badge'), '已出件');
    // Issuing is sealed after the decision, in the case's chain, shown on both pages.
    for (const p of [approver, agent]) await waitText(p.locator('#case-chain li[data-kind="issued"]'), '出件 已封存');
    await expectEveryoneReceives([[agent, agentId], [approver, approverId], [expert, expertId]]);
    // Each hangs up; each page says once that the call ended.
    for (const p of [agent, approver, expert]) {
      await p.locator('#call-hang-up').click();
      await p.locator('.call-area[data-call-state="ended"]').waitFor();
      await waitText(p.locator('.call-area'), '视频帮办已结束');
      assert.equal((await p.locator('.call-area').innerText()).split('视频帮办已结束').length - 1, 1, 'said once');
      assert.equal(await p.locator('.call-tile').count(), 0);
      assert.equal(await p.evaluate(() => window.cloudhelp.call?.pc ?? null), null);
    }

    // The auditor downloads the signed archive. The server's verifier accepts it on the page;
    // so does the offline `cloudhelp verify`. It holds the captured document under the same
    // SHA-256, and its statement is signed by the key the approver's browser made and kept
    // (private half not extractable).
    const auditor = await pageAs(await person(), 'auditor');
    assert.equal(await auditor.locator('#audit-detail-card').isHidden(), true, 'no empty card before a case is picked');
    const caseRow = auditor.locator(`#audit-cases .case-row[data-case-id="${caseId}"]`);
    await caseRow.click();
    // The case's chain: the decision and issuing. Verifying the newest checks the whole case; the
    // report is in plain Chinese words, with the verifier's own words a click away.
    await auditor.locator('#archive-chain li[data-kind="issued"]').waitFor();
    assert.deepEqual(await auditor.locator('#archive-chain li').evaluateAll((li) => li.map((l) => l.dataset.kind)), ['decision', 'issued']);
    await auditor.locator('[data-verify-sequence="2"]').click();
    await auditor.locator('#verify-verdict[data-valid="true"]').waitFor();
    await waitText(auditor.locator('#verification-report h3'), '电子存档验证报告');
    assert.match(await auditor.locator('#report-sha256').innerText(), /^[0-9a-f]{64}$/);
    const chainRow = auditor.locator('#verify-checks tr[data-check="chain.previous"]');
    assert.match(await chainRow.innerText(), /✔ 通过\s+存证链完整/);
    assert.equal(await chainRow.locator('details.technical').isVisible(), true);
    assert.equal(await chainRow.locator('details.technical span').isVisible(), false, 'the English detail waits behind its switch');
    assert.match(await auditor.locator('#verify-checks tr[data-check="statement.continuation"]').innerText(), /后续存证/);
    // Printed, the page is the report alone, with each check's detail spelled out.
    await auditor.emulateMedia({ media: 'print' });
    assert.equal(await auditor.locator('#verification-report').isVisible(), true);
    assert.equal(await auditor.locator('#audit-detail-card').isVisible(), false);
    assert.equal(await auditor.locator('header#top').isVisible(), false);
    assert.equal(await chainRow.locator('.technical-print').isVisible(), true);
    assert.match(await chainRow.locator('.technical-print').innerText(), /^chain\.previous: 2 statements of case/);
    await auditor.emulateMedia({ media: 'screen' });
    // Events read as lines, with people's names.
    const accepted = auditor.locator('#audit-trail tr[data-kind="case.accepted"] td.actor');
    assert.match(await accepted.innerText(), /^\S+（审批员）$/);
    assert.match(await auditor.locator('#audit-trail tr[data-kind="case.sealed"] td.details').first().innerText(), /透明日志序号：\d+/);
    const [zip] = await Promise.all([auditor.waitForEvent('download'), auditor.locator('[data-download-sequence="1"]').click()]);
    const zipPath = await zip.path();
    const report = await verifyOffline(server, zipPath);
    assert.equal(report.valid, true, JSON.stringify(report.checks.filter((c) => !c.passed)));
    assert.ok(report.checks.some((c) => c.name === 'signature.approver' && c.passed), 'the approver signature was checked');
    assert.match(readZipEntry(zipPath, 'manifest-sha256.txt'), new RegExp(`^${uploadedSha}  data/materials/`, 'm'));
    const statement = JSON.parse(readZipEntry(zipPath, 'esign/statement.json'));
    assert.deepEqual(await browserSigningKey(approver), [{ keyId: statement.signers.approver, extractable: false }]);
    await auditor.locator('#show-checkpoint').click();
    await auditor.locator('#log-checkpoint:not([hidden])').waitFor();
    assert.match(await auditor.locator('#checkpoint-size').innerText(), /^\d+ 条$/);
    assert.match(await auditor.locator('#checkpoint-meaning').innerText(), /证明此刻透明日志共有 \d+ 条记录/);
    assert.match(await auditor.locator('#log-checkpoint pre').textContent(), /^cloudhelp\.local\/log\n\d+\n/);

    // The resident rates the service on the agent's page; the rating is in the case's trail,
    // which the auditor exports with every step of the story and no ID number.
    assert.equal(await rateOnPage(agent, 5, '不用跑城里，很方便'), '评价已记录，感谢！');
    await caseRow.click();
    await auditor.locator('table.trail tr[data-kind="case.rated"]').waitFor();
    await auditor.locator('#archive-chain li[data-kind="rated"]').waitFor();
    const [download] = await Promise.all([auditor.waitForEvent('download'), auditor.locator('#export-trail').click()]);
    const trail = (await readFile(await download.path(), 'utf8')).trim().split('\n').map((l) => JSON.parse(l));
    const kinds = trail.map((e) => e.kind);
    for (const kind of ['case.opened', 'case.accepted', 'material.uploaded', 'case.expert_invited', 'case.identity_checked', 'case.approved', 'case.sealed', 'case.issued', 'case.rated']) {
      assert.ok(kinds.includes(kind), `${kind} missing from the exported trail: ${kinds}`);
    }
    assert.deepEqual(trail.find((e) => e.kind === 'case.rated').details, { score: 5, comment: '不用跑城里，很方便' });
    assert.ok(trail.every((e) => e.case_id === caseId));
    assert.ok(!JSON.stringify(trail).includes(ID_NUMBER), 'the trail carries no ID number');

    for (const p of [agent, approver, expert, auditor]) assert.deepEqual(p.problems, []);
  } finally {
    for (const ctx of contexts) await ctx.close();
  }
});

test("a rating of 2 opens a follow-up: the agent's page says so, the supervisor closes it with an outcome and sees the day's figures", async () => {
  const opened = await openCase(await apiAs(server, 'agent'));
  assert.equal((await (await apiAs(server, 'approver')).call('POST', `/cases/${opened.id}/actions/accept`)).status, 200);
  const approverCtx = await newContext(browser, server);
  const agentCtx = await newContext(browser, server);
  const supervisorCtx = await newContext(browser, server);
  try {
    const approver = await pageAs(approverCtx, 'approver', `/#/case/${opened.id}`);
    await checkIdentityAndApprove(approver);
    await approver.locator('#issue').click();
    await waitText(approver.locator('.case-facts .badge'), '已出件');

    const agent = await pageAs(agentCtx, 'agent', `/#/case/${opened.id}`);
    assert.match(await rateOnPage(agent, 2, '等待时间太长'), /差评将由督导员回访整改/);

    // The supervisor sees the follow-up, closes it with an outcome, and sees the figures.
    const supervisor = await pageAs(supervisorCtx, 'supervisor');
    const followup = supervisor.locator(`.followup[data-case-id="${opened.id}"]`);
    await followup.waitFor();
    assert.match(await followup.innerText(), /2星/);
    await followup.locator('textarea[name=outcome]').fill('已回访申请人，调整高峰时段审批力量');
    await followup.locator('button[type=submit]').click();
    await followup.waitFor({ state: 'detached' });
    await waitText(supervisor.locator('#followups'), '没有待办的回访');
    const closed = await (await apiAs(server, 'supervisor')).call('GET', '/followups?open=false');
    assert.ok(closed.body.some((f) => f.case_id === opened.id && f.outcome === '已回访申请人，调整高峰时段审批力量'));
    const figures = supervisor.locator('#figures');
    await waitText(figures, '户政');
    const huzheng = figures.locator('table.figures').first().locator('tr', { hasText: '户政' });
    const cells = await huzheng.locator('td').allInnerTexts();
    assert.ok(Number(cells[0]) >= 1, `cases of 户政: ${cells}`);
    assert.ok(Number(cells[1]) >= 1, `finished of 户政: ${cells}`);
    assert.ok(Number(await supervisor.locator('#ratings-chart').getAttribute('data-total')) >= 1);
    assert.equal(await supervisor.locator('#figures svg.chart').count(), 2);
    for (const p of [approver, agent, supervisor]) assert.deepEqual(p.problems, []);
  } finally {
    await approverCtx.close();
    await agentCtx.close();
    await supervisorCtx.close();
  }
});

test('a wrong password, a locked and a disabled account each get a plain message', async () => {
  const admin = await apiAs(server, 'admin');
  for (const username of ['locked-agent', 'disabled-agent']) {
    const r = await admin.call('POST', '/admin/users', { username, display_name: '测试代办', role: 'agent', point: 'zz-jingwu', department: null, password: 'test-password-1' });
    assert.equal(r.status, 201, JSON.stringify(r.body));
  }
  assert.equal((await admin.call('POST', '/admin/users/disabled-agent/disable')).status < 300, true);
  const ctx = await newContext(browser, server);
  try {
    const page = await newPage(ctx);
    const attempt = async (username, password) => {
      await page.goto('/#/login');
      await page.locator('#login input[name=username]').fill(username);
      await page.locator('#login input[name=password]').fill(password);
      await page.locator('#login button[type=submit]').click();
      const message = page.locator('#login .notice.error');
      await message.waitFor();
      return message.innerText();
    };
    assert.equal(await attempt('agent', 'not-the-password'), '用户名或密码错误，请重新输入。');
    for (let i = 0; i < 5; i += 1) await attempt('locked-agent', 'wrong-password');
    assert.match(await attempt('locked-agent', 'test-password-1'), /暂停在本机登录该账号/);
    assert.match(await attempt('disabled-agent', 'test-password-1'), /账号已停用/);
    assert.equal(await page.evaluate(() => location.hash), '#/login');
  } finally {
    await ctx.close();
  }
});

test('a wrong ID number is refused in plain words; a stale CSRF token is renewed without bothering the agent', async () => {
  const ctx = await newContext(browser, server);
  try {
    const page = await pageAs(ctx, 'agent', '/#/agent/new');
    // As if the page were older than its session: the first request is refused (csrf_failed),
    // the page fetches the token again and repeats it.
    await page.evaluate(() => { window.cloudhelp.session.csrf = 'stale-token'; });
    await page.locator('#new-case select[name=item]').selectOption('id-renew');
    await page.locator('input[name=applicant_name]').fill(APPLICANT);
    await page.locator('input[name=applicant_id_number]').fill('330682198506123210');
    // Said as it is typed, naming the check digit expected.
    await waitText(page.locator('#id-number-check'), '第18位（校验码）应为X，现在是0');
    await page.locator('#new-case button[type=submit]').click();
    await waitText(page.locator('#new-case .notice.error'), '身份证号码不正确');
    assert.notEqual(await page.evaluate(() => window.cloudhelp.session.csrf), 'stale-token');
    await page.locator('input[name=applicant_id_number]').fill(ID_NUMBER.toLowerCase());
    assert.equal(await page.locator('#id-number-check').innerText(), '');
    await page.locator('#new-case button[type=submit]').click();
    await page.waitForFunction(() => /^#\/case\/\d+$/.test(location.hash));
    await waitText(page.locator('.case-facts .badge'), '排队等待受理');
  } finally {
    await ctx.close();
  }
});

test('an ended session sends the page back to the login with a message', async () => {
  const ctx = await newContext(browser, server);
  try {
    const page = await pageAs(ctx, 'agent');
    // Logging out goes to the login page, without the "expired" message.
    await page.locator('header button', { hasText: '退出登录' }).click();
    await page.waitForFunction(() => location.hash === '#/login');
    assert.equal(await page.locator('#login .notice').count(), 0);
    await login(page, 'agent');
    await page.locator('header nav a[href="#/agent/new"]').click();
    await page.locator('#new-case').waitFor();
    await ctx.clearCookies();
    await page.locator('header nav a[href="#/agent"]').click();
    await page.waitForFunction(() => location.hash === '#/login');
    await waitText(page.locator('#login .notice'), '登录已过期');
  } finally {
    await ctx.close();
  }
});

test('when the app cannot load, the page says so instead of staying blank', async () => {
  const ctx = await newContext(browser, server);
  try {
    const page = await newPage(ctx);
    await page.route('**/js/main.js', (route) => route.abort('connectionreset'));
    await page.goto('/');
    await waitText(page.locator('#view .notice.error'), '页面未能加载，请检查网络后刷新页面', 25000);
  } finally {
    await ctx.close();
  }
});

test('a refused camera permission shows a plain message, and files can still be uploaded', async () => {
  const agentApi = await apiAs(server, 'agent');
  const opened = await openCase(agentApi);
  const ctx = await newContext(browser, server, { media: false });
  try {
    const page = await pageAs(ctx, 'agent', `/#/case/${opened.id}`);
    const message = page.locator('.camera-panel .media-message .notice.error');
    await message.waitFor();
    assert.match(await message.innerText(), /没有获得摄像头和麦克风的使用权限/);
    assert.equal(await page.locator('#file-input').count(), 1);
    assert.deepEqual(page.problems, []);
  } finally {
    await ctx.close();
  }
});

test("an agent opening another service point's case sees a not-found message", async () => {
  const admin = await apiAs(server, 'admin');
  const r = await admin.call('POST', '/admin/users', { username: 'agent-zhangzhen', display_name: '章镇代办', role: 'agent', point: 'zz-jingwu', department: null, password: 'test-password-2' });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  const other = await apiAs(server, 'agent-zhangzhen', 'test-password-2');
  const foreign = await openCase(other);
  const ctx = await newContext(browser, server);
  try {
    const page = await pageAs(ctx, 'agent', `/#/case/${foreign.id}`);
    await waitText(page.locator('main .notice.error'), '未找到该事项，或您无权查看');
    assert.equal(await page.locator('#applicant').count(), 0);
    assert.equal(await page.locator('.camera-panel').count(), 0);
  } finally {
    await ctx.close();
  }
});

test('the approver sees 已被他人受理 when another approver accepted first (case page and queue)', async () => {
  const agentApi = await apiAs(server, 'agent');
  const second = await apiAs(server, 'approver2');
  const ctx = await newContext(browser, server);
  try {
    const page = await pageAs(ctx, 'approver');

    // On the case page (which hears nothing of the other approver's accept).
    const first = await openCase(agentApi);
    await page.goto(`/#/case/${first.id}`);
    await page.locator('#accept').waitFor();
    assert.equal((await second.call('POST', `/cases/${first.id}/actions/accept`)).status, 200);
    await page.locator('#accept').click();
    await waitText(page.locator('.case-actions .notice.error'), '已被他人受理');

    // On the queue, when the live notice has not arrived yet (the socket is held back).
    await page.goto('/#/queue');
    const next = await openCase(agentApi);
    const row = page.locator(`.queue-item[data-case-id="${next.id}"]`);
    await row.waitFor();
    await page.evaluate(() => window.cloudhelp.live.stop());
    assert.equal((await second.call('POST', `/cases/${next.id}/actions/accept`)).status, 200);
    await row.locator('button.accept').click();
    await waitText(page.locator('#queue-message .notice.error'), '已被他人受理');
    await row.waitFor({ state: 'detached' });
    assert.equal(await page.evaluate(() => location.hash), '#/queue');
  } finally {
    await ctx.close();
  }
});

test('when the server restarts, the page says it is reconnecting and then shows the live queue again', async () => {
  // Its own server: this test kills it.
  let own = await startServer();
  const ctx = await newContext(browser, own);
  try {
    const page = await pageAs(ctx, 'approver');
    await page.locator('#queue').waitFor();
    await page.waitForFunction(() => window.cloudhelp.live.ws?.readyState === 1);
    const banner = page.locator('#conn-banner');
    assert.equal(await banner.isVisible(), false);

    const { port, data } = own;
    await own.kill();
    await banner.waitFor({ state: 'visible' });
    assert.equal(await banner.innerText(), '连接已断开，正在重连…');

    own = await startServer({ dataDir: data, port });
    await banner.waitFor({ state: 'hidden', timeout: 20000 });
    // The queue is live again: a case opened now appears without a reload.
    const opened = await openCase(await apiAs(own, 'agent'));
    await page.locator(`.queue-item[data-case-id="${opened.id}"]`).waitFor();

    // Closing the socket from the page side recovers the same way.
    await page.evaluate(() => window.cloudhelp.live.ws.close());
    await page.waitForFunction(() => window.cloudhelp.live.ws?.readyState === 1);
    await banner.waitFor({ state: 'hidden' });
    const another = await openCase(await apiAs(own, 'agent'));
    await page.locator(`.queue-item[data-case-id="${another.id}"]`).waitFor();
  } finally {
    await ctx.close();
    await own.kill();
  }
});

test('a failed upload shows the failure and succeeds on retry', async () => {
  const opened = await openCase(await apiAs(server, 'agent'));
  const ctx = await newContext(browser, server);
  try {
    const page = await pageAs(ctx, 'agent');
    let refused = 0;
    await page.route((url) => url.pathname === `/api/cases/${opened.id}/uploads`, (route) => {
      if (route.request().method() === 'POST' && refused === 0) { refused += 1; return route.abort('connectionreset'); }
      return route.continue();
    });
    await page.goto(`/#/case/${opened.id}`);
    await page.locator('.camera-panel[data-ready]').waitFor();
    await page.locator('#capture').click();
    const upload = page.locator('#uploads li.upload').first();
    await upload.locator('xpath=self::*[@data-state="failed"]').waitFor();
    assert.match(await upload.locator('.status').innerText(), /上传失败：无法连接服务器/);
    await upload.locator('button', { hasText: '重新上传' }).click();
    await upload.locator('xpath=self::*[@data-state="done"]').waitFor();
    await page.locator(`.thumb[data-sha256="${await upload.getAttribute('data-sha256')}"]`).waitFor();
    assert.equal(refused, 1);
    // A file of a kind the server refuses says so, and offers no pointless retry.
    await page.locator('#file-input').setInputFiles({ name: '说明.txt', mimeType: 'text/plain', buffer: Buffer.from('不是照片') });
    const refusedFile = page.locator('#uploads li.upload', { hasText: '说明.txt' });
    await refusedFile.locator('xpath=self::*[@data-state="failed"]').waitFor();
    assert.match(await refusedFile.locator('.status').innerText(), /文件类型不支持/);
    assert.equal(await refusedFile.locator('button', { hasText: '重新上传' }).isVisible(), false);
  } finally {
    await ctx.close();
  }
});

test('an upload whose connection drops mid-file says so and continues from where the server acknowledged', async () => {
  const opened = await openCase(await apiAs(server, 'agent'));
  const ctx = await newContext(browser, server);
  try {
    const page = await pageAs(ctx, 'agent');
    // A file of three chunks; the link drops while the second one is on its way.
    const chunks = [];
    let dropped = 0;
    await page.route((url) => url.pathname.startsWith(`/api/cases/${opened.id}/uploads/`), (route) => {
      const request = route.request();
      if (request.method() !== 'PATCH') return route.continue();
      const offset = Number(request.headers()['upload-offset']);
      if (offset > 0 && dropped === 0) { dropped += 1; return route.abort('connectionreset'); }
      chunks.push(offset);
      return route.continue();
    });
    await page.goto(`/#/case/${opened.id}`);
    const pdf = Buffer.concat([Buffer.from('%PDF-1.4\n'), Buffer.alloc(600 * 1024, 0x20), Buffer.from('\n%%EOF\n')]);
    await page.locator('#file-input').setInputFiles({ name: '户口簿.pdf', mimeType: 'application/pdf', buffer: pdf });
    const upload = page.locator('#uploads li.upload', { hasText: '户口簿.pdf' });
    await upload.locator('xpath=self::*[@data-state="continuing"]').waitFor();
    assert.match(await upload.locator('.status').innerText(), /断点续传/);
    await upload.locator('xpath=self::*[@data-state="done"]').waitFor();
    assert.equal(dropped, 1);
    // Each chunk went once, from the offset the server acknowledged: nothing sent twice.
    assert.deepEqual(chunks, [0, 262144, 524288]);
    const stored = await (await apiAs(server, 'agent')).call('GET', `/cases/${opened.id}/materials`);
    assert.equal(stored.body.find((m) => m.filename === '户口簿.pdf').size, pdf.length);
    assert.equal(await upload.getAttribute('data-sha256'), stored.body.find((m) => m.filename === '户口簿.pdf').sha256);
  } finally {
    await ctx.close();
  }
});

test('补正, 会诊 and 转办: the agent sees the request live and supplies the material; the expert reads the case; a transfer leaves the approver', async () => {
  const opened = await openCase(await apiAs(server, 'agent'), 'hukou-move');
  const agentCtx = await newContext(browser, server);
  const approverCtx = await newContext(browser, server);
  const expertCtx = await newContext(browser, server);
  try {
    const agent = await pageAs(agentCtx, 'agent', `/#/case/${opened.id}`);
    const approver = await pageAs(approverCtx, 'approver', `/#/case/${opened.id}`);
    await approver.locator('#accept').click();
    await waitText(approver.locator('.case-facts .badge'), '视频办理中');
    await waitText(agent.locator('.case-facts .badge'), '视频办理中');

    // 补正: the request reaches the agent's page live, with its reason.
    await approver.locator('#request-material textarea').fill('准迁证明原件');
    await approver.locator('#request-material button[type=submit]').click();
    await waitText(approver.locator('.case-facts .badge'), '待补正材料');
    await waitText(agent.locator('.case-facts .notice'), '准迁证明原件');
    // The agent uploads a file (PDF) and resumes.
    await agent.locator('#file-input').setInputFiles({ name: '准迁证明.pdf', mimeType: 'application/pdf', buffer: Buffer.from('%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n') });
    await agent.locator('#uploads li.upload[data-state="done"]').waitFor();
    await approver.locator('.thumb', { hasText: '准迁证明.pdf' }).locator('[data-check="ok"]').waitFor();
    await agent.locator('#resume').click();
    await waitText(approver.locator('.case-facts .badge'), '视频办理中');

    // 会诊: the invited expert sees the case read-only, with its materials.
    const { expert } = await inviteExpert(server, approver, expertCtx, opened.id);
    await waitText(expert.locator('.case-actions'), '专家只查看事项与材料');
    await expert.locator('.thumb', { hasText: '准迁证明.pdf' }).locator('[data-check="ok"]').waitFor();
    assert.equal(await expert.locator('#approve, #accept, #identity-check').count(), 0);
    assert.ok(!(await expert.locator('#applicant').innerText()).includes(APPLICANT), 'masked for the expert');

    // 转办: the case goes to 治安's queue and leaves this approver's view.
    await approver.locator('#transfer select').selectOption({ label: '治安' });
    await approver.locator('#transfer button[type=submit]').click();
    await waitText(approver.locator('.page-message'), '该事项已转出或不再由您办理');
    const supervisorApi = await apiAs(server, 'supervisor');
    const queue = await supervisorApi.call('GET', '/queue');
    const moved = queue.body.find((q) => q.case_id === opened.id);
    assert.ok(moved, 'the transferred case waits in a queue');
    for (const p of [agent, approver, expert]) assert.deepEqual(p.problems, []);
  } finally {
    await agentCtx.close();
    await approverCtx.close();
    await expertCtx.close();
  }
});

test('waiting-time colours follow the thresholds, and an overdue follow-up is marked', async () => {
  const ctx = await newContext(browser, server);
  try {
    const page = await newPage(ctx);
    await page.route('**/api/followups', (route) => route.fulfill({
      json: [{ id: 99, case_id: 1, case_number: 'YB20261126-000001', score: 1, comment: '态度差', opened_at: '2026-11-20T08:00:00+08:00', due_at: '2026-11-23T08:00:00+08:00', overdue: true, closed_at: null, closed_by: null, outcome: null }],
    }));
    await login(page, 'supervisor');
    const overdue = page.locator('.followup[data-followup-id="99"]');
    await overdue.waitFor();
    assert.ok(await overdue.evaluate((el) => el.classList.contains('overdue')));
    await waitText(overdue.locator('.badge'), '已超期');

    const classes = await page.evaluate(async () => {
      const { slaClass } = await import('/js/core.js');
      return [[true, 0], [true, 299], [true, 300], [true, 599], [true, 600], [true, 7200], [false, 7200]].map(([simple, s]) => slaClass(simple, s));
    });
    assert.deepEqual(classes, ['sla-green', 'sla-green', 'sla-amber', 'sla-amber', 'sla-red', 'sla-red', 'sla-none']);
  } finally {
    await ctx.close();
  }
});

test('the administrator adds an agent account, who can then log in at its service point', async () => {
  const ctx = await newContext(browser, server);
  const agentCtx = await newContext(browser, server);
  try {
    const page = await pageAs(ctx, 'admin');
    const form = page.locator('#add-user');
    await form.locator('input[name=username]').fill('agent-shangpu');
    await form.locator('input[name=display_name]').fill('上浦代办');
    await form.locator('select[name=role]').selectOption('agent');
    await form.locator('select[name=point]').selectOption('sp-daiban');
    await form.locator('input[name=password]').fill('shangpu-2026');
    await form.locator('button[type=submit]').click();
    await waitText(form.locator('.notice.ok'), '账号已新增');
    await waitText(page.locator('table tbody'), '上浦代办');
    const agent = await newPage(agentCtx);
    await login(agent, 'agent-shangpu', 'shangpu-2026');
    await waitText(agent.locator('main'), '上浦镇村级代办点');
    assert.deepEqual([...page.problems, ...agent.problems], []);
  } finally {
    await ctx.close();
    await agentCtx.close();
  }
});

test('every page at desktop and phone width: screenshots, no horizontal overflow, no untranslated English', async () => {
  const agentApi = await apiAs(server, 'agent');
  const approverApi = await apiAs(server, 'approver');
  // A case held by the approver with a material, invited expert: every part of the case page shows.
  const shown = await openCase(agentApi, 'hukou-move');
  const png = Buffer.from('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==', 'base64');
  const agentToken = agentApi;
  const up = await agentToken.call('POST', `/cases/${shown.id}/materials?filename=${encodeURIComponent('户口簿.png')}`, png);
  assert.equal(up.status, 201, JSON.stringify(up.body));
  assert.equal((await approverApi.call('POST', `/cases/${shown.id}/actions/accept`)).status, 200);
  const experts = await approverApi.call('GET', '/experts');
  assert.equal((await approverApi.call('POST', `/cases/${shown.id}/actions/invite`, { expert_id: experts.body[0].id })).status, 200);
  const waiting = await openCase(agentApi, 'id-loss');

  const pages = [
    ['login', null, '/#/login'],
    ['agent-home', 'agent', '/#/agent'],
    ['agent-new', 'agent', '/#/agent/new', async (p) => p.locator('select[name=item]').selectOption('hukou-move')],
    ['agent-case', 'agent', `/#/case/${shown.id}`, async (p) => p.locator('.camera-panel[data-ready]').waitFor()],
    ['approver-queue', 'approver', '/#/queue', async (p) => p.locator(`.queue-item[data-case-id="${waiting.id}"]`).waitFor()],
    ['approver-case', 'approver', `/#/case/${shown.id}`, async (p) => p.locator('#viewer-hash').waitFor()],
    ['expert-home', 'expert', '/#/expert', async (p) => p.locator(`.case-row[data-case-id="${shown.id}"]`).waitFor()],
    ['expert-case', 'expert', `/#/case/${shown.id}`, async (p) => p.locator('#viewer-hash').waitFor()],
    ['supervisor', 'supervisor', '/#/supervisor', async (p) => p.locator('#figures table').first().waitFor()],
    ['auditor', 'auditor', `/#/auditor?case=${shown.id}`, async (p) => p.locator('table.trail tbody tr').first().waitFor()],
    ['admin', 'admin', '/#/admin', async (p) => p.locator('table tbody tr').first().waitFor()],
  ];
  const findings = [];
  for (const [width, height, label] of [[1280, 800, 'desktop'], [375, 812, 'phone']]) {
    const contexts = new Map();
    try {
      for (const [name, user, path, ready] of pages) {
        if (!contexts.has(user)) {
          const ctx = await newContext(browser, server, { viewport: { width, height } });
          const p = await newPage(ctx);
          if (user) await login(p, user);
          contexts.set(user, p);
        }
        const page = contexts.get(user);
        await page.goto(path);
        await page.locator('main').waitFor();
        await page.waitForFunction(() => !document.querySelector('main')?.textContent.includes('正在加载'));
        if (ready) await ready(page);
        await page.waitForTimeout(300); // let thumbnails and checks settle
        await page.screenshot({ path: join(ARTIFACTS, `${name}-${label}.png`), fullPage: true });
        const english = untranslatedWords(await visibleUiText(page));
        if (english.length) findings.push(`${name} (${label}): ${english.join(', ')}`);
        const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
        if (overflow > 1) findings.push(`${name} (${label}): ${overflow}px wider than the screen`);
        if (page.problems.length) findings.push(`${name} (${label}): ${page.problems.join('; ')}`);
      }
    } finally {
      for (const p of contexts.values()) await p.context().close();
    }
  }
  assert.deepEqual(findings, []);
});

test('English is a switch away, and the Chinese scan would catch English words', async () => {
  const ctx = await newContext(browser, server);
  try {
    const page = await pageAs(ctx, 'supervisor');
    await page.locator('header button.lang').click();
    await waitText(page.locator('header'), 'Log out');
    await page.locator('#figures').waitFor();
    const words = untranslatedWords(await visibleUiText(page));
    assert.ok(words.includes('Overview') || words.includes('Log'), `the scan found no English on the English page: ${words}`);
    await page.locator('header button.lang').click();
    await waitText(page.locator('header'), '退出登录');
    assert.deepEqual(untranslatedWords(await visibleUiText(page)), []);
  } finally {
    await ctx.close();
  }
});


/** A call of two (`startCall`) on this file's server unless another is given. */
const callOfTwo = (agentCtx, approverCtx, item = 'id-loss', on = server) => startCall(on, agentCtx, approverCtx, item);

test("a call of two: names on the tiles, network quality, the speaker's border, mute and camera off seen on the other side, recording only after both consent, a refused message in plain words; at phone width the own picture is a small overlay in the other's picture; screenshots", async () => {
  const agentCtx = await newContext(browser, server);
  const approverCtx = await newContext(browser, server);
  try {
    const { caseId, agent, approver, agentId, approverId } = await callOfTwo(agentCtx, approverCtx);
    // That each side decodes and hears the other is the whole story's to prove; here the
    // pictures only need to play (for the screenshots).
    await expectTilePlaying(agent, approverId);
    await expectTilePlaying(approver, agentId);
    assert.match(await approver.locator(`.call-tile[data-participant="${agentId}"] .call-name`).innerText(), /（代办员）$/);
    assert.match(await agent.locator(`.call-tile[data-participant="${approverId}"] .call-name`).innerText(), /（审批员）$/);

    // Every 5 s each side learns everyone's connection quality, in words and colour.
    const quality = approver.locator(`.call-tile[data-participant="${agentId}"] .call-quality[data-grade]`);
    await quality.waitFor({ timeout: 15000 });
    assert.match(await quality.innerText(), /^网络质量：(好|一般|差)$/);

    // The fake microphone beeps: the relay's speaking detector marks the agent's tile.
    await approver.locator(`.call-tile.speaking[data-participant="${agentId}"]`).waitFor({ timeout: 15000 });

    // The agent mutes the microphone and turns the camera off: the approver's tile says so.
    await agent.locator('#call-mute').click();
    await waitText(agent.locator('#call-mute'), '取消静音');
    const agentTile = approver.locator(`.call-tile[data-participant="${agentId}"]`);
    await waitText(agentTile.locator('.call-flags'), '已静音');
    await agent.locator('#call-camera').click();
    await waitText(agentTile.locator('.call-placeholder'), '摄像头已关闭');
    // The camera card's capture stream is not the one muted: the preview still runs.
    assert.equal(await agent.evaluate(() => document.querySelector('video.preview').srcObject.getVideoTracks()[0].enabled), true);
    await agent.locator('#call-camera').click();
    await agent.locator('#call-mute').click();
    await agentTile.locator('.call-flags').waitFor({ state: 'hidden' });
    await agentTile.locator('.call-placeholder').waitFor({ state: 'hidden' });
    await expectMediaFlowing(approver, [agentId], { label: 'approver after unmute' });

    // 材料展示: the agent's camera is sent for legibility (detail, resolution kept, frame rate
    // given up, the full-size simulcast layer alone); switched off, the call is a face again, in
    // three layers. A capture turns it on by itself.
    const videoSending = (page) => page.evaluate(() => {
      const sender = window.cloudhelp.call.videoTx.sender;
      const p = sender.getParameters();
      return {
        hint: sender.track.contentHint,
        preference: p.degradationPreference ?? null,
        fps: p.encodings.at(-1).maxFramerate ?? null,
        layers: p.encodings.map((e) => `${e.rid}${e.active ? '' : ' paused'}`).join(' '),
      };
    });
    assert.deepEqual(await videoSending(agent), { hint: '', preference: 'balanced', fps: null, layers: 'q h f' });
    await agent.locator('#call-document').click();
    await waitText(agent.locator('#call-document'), '退出材料展示');
    assert.deepEqual(await videoSending(agent), { hint: 'detail', preference: 'maintain-resolution', fps: 5, layers: 'q paused h paused f' });
    await expectMediaFlowing(approver, [agentId], { label: 'approver in document mode' });
    await agent.locator('#call-document').click();
    await waitText(agent.locator('#call-document'), '材料展示');
    assert.deepEqual(await videoSending(agent), { hint: '', preference: 'balanced', fps: null, layers: 'q h f' });
    await agent.locator('#capture').click();
    await agent.locator('.call-area[data-document-mode="true"]').waitFor();
    assert.equal((await videoSending(agent)).hint, 'detail');
    await agent.locator('#call-document').click(); // back to a face for the rest of the call
    await agent.locator('.call-area[data-document-mode="false"]').waitFor();

    // 文字交流: what the agent types reaches the approver's chat at once, named.
    await agent.locator('#call-chat-input').fill('请把户口簿第二页对准镜头');
    await agent.locator('#call-chat-send').click();
    const line = approver.locator('#call-chat-list .chat-line', { hasText: '请把户口簿第二页对准镜头' });
    await line.waitFor();
    assert.match(await line.locator('.chat-who').innerText(), /（代办员）$/);
    await agent.locator('#call-chat-list .chat-line.own', { hasText: '请把户口簿第二页对准镜头' }).waitFor();
    assert.equal(await agent.locator('#call-chat-input').inputValue(), '');

    // 只用语音: the agent's link is too weak for video — its camera goes off for the approver and
    // its own view of the approver says audio only; back again, video flows both ways.
    await agent.locator('#call-audio-only').click();
    await waitText(agent.locator('#call-audio-only'), '恢复视频');
    await waitText(agent.locator(`.call-tile[data-participant="${approverId}"] .call-placeholder`), '只用语音');
    await waitText(agentTile.locator('.call-placeholder'), '摄像头已关闭');
    await agent.locator('#call-audio-only').click();
    await waitText(agent.locator('#call-audio-only'), '只用语音');
    await agentTile.locator('.call-placeholder').waitFor({ state: 'hidden' });
    await expectMediaFlowing(agent, [approverId], { label: 'agent after audio only' });
    await expectMediaFlowing(approver, [agentId], { label: 'approver after audio only' });

    // Recording needs both: after the agent's consent alone nothing records; after the
    // approver's, both pages show the recording badge.
    await agent.locator('#call-consent').click();
    await waitText(agent.locator('#call-consent'), '撤回录音同意');
    await approver.locator('#call-consent').click();
    for (const page of [agent, approver]) await page.locator('#call-recording:not([hidden])').waitFor();
    // The server's own record of the order: recording started only after the second consent.
    const auditor = await apiAs(server, 'auditor');
    const trail = await auditor.call('GET', `/audit?case_id=${caseId}`);
    await auditor.dispose();
    const kinds = String(trail.body).trim().split('\n').map((l) => JSON.parse(l).kind)
      .filter((k) => k === 'call.recording_consent' || k === 'call.recording_started');
    assert.deepEqual(kinds, ['call.recording_consent', 'call.recording_consent', 'call.recording_started'], 'one consent does not record');

    // The approver's page tells the relay the size it shows the agent's video at
    // (call.video_size), again whenever the tile is resized.
    await approver.evaluate(() => {
      const live = window.cloudhelp.live;
      const send = live.send.bind(live);
      window.videoSizes = [];
      live.send = (m) => { if (m.type === 'call.video_size') window.videoSizes.push(m); return send(m); };
    });
    // The call view at desktop and phone width: screenshots, nothing wider than the screen, no
    // English on the Chinese page.
    for (const [width, height, label] of [[1280, 800, 'desktop'], [375, 812, 'phone']]) {
      for (const [name, page] of [['agent', agent], ['approver', approver]]) {
        await page.setViewportSize({ width, height });
        await page.waitForTimeout(300);
        await page.locator('.call-slot').scrollIntoViewIfNeeded();
        await page.screenshot({ path: join(ARTIFACTS, `call-${name}-${label}.png`), fullPage: true });
        assert.ok(await page.locator('#call-chat-input').isVisible(), `${name} ${label}: the chat can be written`);
        await page.locator('.call-slot').screenshot({ path: join(ARTIFACTS, `call-${name}-${label}-panel.png`) });
        const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
        assert.ok(overflow <= 1, `call view of the ${name} (${label}) is ${overflow}px wider than the screen`);
        await expectSelfView(page, name === 'agent' ? approverId : agentId, { overlay: label === 'phone' });
        assert.deepEqual(untranslatedWords(await visibleUiText(page)), [], `English on the ${name}'s call view (${label})`);
      }
    }
    await approver.waitForFunction((prefix) => window.videoSizes.some((m) => m.track_id.startsWith(prefix) && m.width > 0 && m.width <= 375 * 3), `${agentId}-video-`, { timeout: 5000 }).catch(() => {});
    const sizes = await approver.evaluate(() => window.videoSizes);
    const atPhoneWidth = sizes.filter((m) => m.track_id.startsWith(`${agentId}-video-`) && m.width > 0 && m.width <= 375 * 3);
    assert.ok(atPhoneWidth.length > 0, `no call.video_size for the agent's video at phone width: ${JSON.stringify(sizes)}`);
    assert.ok(atPhoneWidth.every((m) => m.case_id === caseId && m.height > 0), JSON.stringify(atPhoneWidth));
    // A refused message (call.error) is shown in plain words and the call stays up.
    await approver.evaluate((caseId) => window.cloudhelp.live.send({ type: 'call.answer', case_id: caseId, sdp: 'not sdp' }), caseId);
    await waitText(approver.locator('.call-message .notice.error'), '视频通话协商失败');
    await expectMediaFlowing(approver, [agentId], { label: 'approver after a refused message' });
    for (const p of [agent, approver]) assert.deepEqual(p.problems, []);
  } finally {
    await agentCtx.close();
    await approverCtx.close();
  }
});

test('when the expert leaves a call of three, the tiles of the other two follow and their call goes on', async () => {
  const agentCtx = await newContext(browser, server);
  const approverCtx = await newContext(browser, server);
  const expertCtx = await newContext(browser, server);
  try {
    const { caseId, agent, approver, agentId, approverId } = await callOfTwo(agentCtx, approverCtx, 'hukou-move');
    await approver.locator('.call-area[data-call-state="connected"]').waitFor({ timeout: 30000 });
    const { expert, expertId } = await inviteExpert(server, approver, expertCtx, caseId);
    for (const [page, others] of [[agent, [expertId]], [approver, [expertId]], [expert, [agentId, approverId]]]) {
      for (const other of others) await expectTilePlaying(page, other);
    }
    await expert.locator('.call-slot').screenshot({ path: join(ARTIFACTS, 'call-expert-three-desktop-panel.png') });

    // The expert goes back to the list (the panel says call.leave): the others' tiles follow.
    await expert.goto('/#/expert');
    for (const page of [agent, approver]) {
      await page.locator(`.call-tile[data-participant="${expertId}"]`).waitFor({ state: 'detached', timeout: 10000 });
      assert.equal(await page.locator('.call-tile').count(), 2);
    }
    await expectMediaFlowing(agent, [approverId], { label: 'agent after the expert left' });
    await expectMediaFlowing(approver, [agentId], { label: 'approver after the expert left' });
    for (const p of [agent, approver, expert]) assert.deepEqual(p.problems, []);
  } finally {
    await agentCtx.close();
    await approverCtx.close();
    await expertCtx.close().catch(() => {});
  }
});

test('a lost socket during a call: 正在重连… over the call, then the call resumes without a new accept', async () => {
  const agentCtx = await newContext(browser, server);
  const approverCtx = await newContext(browser, server);
  try {
    const { caseId, agent, approver, agentId, approverId } = await callOfTwo(agentCtx, approverCtx);
    await expectMediaFlowing(approver, [agentId], { label: 'approver before' });
    await expectMediaFlowing(agent, [approverId], { label: 'agent before' });
    await agent.evaluate(() => { window.cloudhelp.call.pc.marked = true; });

    // The agent's socket drops, and new sockets fail until the test lets them through.
    await agent.evaluate(() => {
      window.realWebSocket = window.WebSocket;
      window.WebSocket = class { constructor() { this.readyState = 3; setTimeout(() => this.onclose?.({ code: 1006 }), 50); } close() {} send() {} };
      window.WebSocket.OPEN = 1;
      window.cloudhelp.live.ws.close();
    });
    const banner = agent.locator('.call-area[data-call-state="reconnecting"] .call-reconnecting');
    await banner.waitFor({ state: 'visible' });
    assert.equal(await banner.innerText(), '正在重连…');
    // 静音 pressed while the socket is down reaches the relay once it is back.
    await agent.locator('#call-mute').click();
    await agent.waitForTimeout(1500);
    await agent.evaluate(() => { window.WebSocket = window.realWebSocket; });

    await agent.locator('.call-area[data-call-state="connected"]').waitFor({ timeout: 30000 });
    await banner.waitFor({ state: 'hidden' });
    // The same connection, resumed (an ICE restart, not a new call).
    assert.equal(await agent.evaluate(() => window.cloudhelp.call.pc.marked === true), true, 'the call was set up anew instead of resumed');
    // The picture may stall for a moment (a keyframe after the ICE restart); it must move again.
    const after = await expectMediaFlowing(approver, [agentId], { label: 'approver after the reconnect', timeout: 10000, audio: false });
    console.log(`# the approver's picture of the agent moved again ${after.waitedMs} ms after the agent's call was back`);
    await expectMediaFlowing(agent, [approverId], { label: 'agent after the reconnect' });
    await waitText(approver.locator(`.call-tile[data-participant="${agentId}"] .call-flags`), '已静音');
    const view = (await (await apiAs(server, 'approver')).call('GET', `/cases/${caseId}`)).body;
    assert.equal(view.state, 'in_call');
    for (const p of [agent, approver]) assert.deepEqual(p.problems, []);
  } finally {
    await agentCtx.close();
    await approverCtx.close();
  }
});

test('a browser without WebRTC gets a plain message and a retry button', async () => {
  const ctx = await newContext(browser, server);
  try {
    const opened = await openCase(await apiAs(server, 'agent'), 'id-loss');
    assert.equal((await (await apiAs(server, 'approver')).call('POST', `/cases/${opened.id}/actions/accept`)).status, 200);
    await ctx.addInitScript(() => { delete window.RTCPeerConnection; });
    const page = await pageAs(ctx, 'approver', `/#/case/${opened.id}`);
    await page.locator('.call-area[data-call-state="failed"]').waitFor();
    await waitText(page.locator('.call-message .notice.error'), '不能进行视频通话');
    await page.locator('#call-retry').waitFor();
    assert.deepEqual(page.problems, []);
  } finally {
    await ctx.close();
  }
});

test('a reloaded page gets back into the call, and the other side sees it again', async () => {
  const agentCtx = await newContext(browser, server);
  const approverCtx = await newContext(browser, server);
  try {
    const { agent, approver, agentId, approverId } = await callOfTwo(agentCtx, approverCtx);
    await expectMediaFlowing(approver, [agentId], { label: 'approver before' });
    await agent.reload();
    // The server hands the reloaded page the place its old page held (resume, not a fresh
    // join): the panel gives that connection CONNECT_DEADLINE_MS and then joins afresh.
    await expectMediaFlowing(agent, [approverId], { label: 'agent after the reload', timeout: 40000 });
    await expectMediaFlowing(approver, [agentId], { label: 'approver after the reload', timeout: 20000 });
    await expectTilePlaying(approver, agentId);
    assert.equal(await approver.locator('.call-tile').count(), 2, 'one tile for the agent, not two');
    for (const p of [agent, approver]) assert.deepEqual(p.problems, []);
  } finally {
    await agentCtx.close();
    await approverCtx.close();
  }
});

test('when ICE cannot connect (WebRTC blocked by the network), the panel tries once more, then says so with a retry button', async () => {
  const ctx = await newContext(browser, server);
  try {
    const opened = await openCase(await apiAs(server, 'agent'), 'id-loss');
    assert.equal((await (await apiAs(server, 'approver')).call('POST', `/cases/${opened.id}/actions/accept`)).status, 200);
    // Relay-only ICE with no TURN server: no candidate pair can ever form, as behind a firewall
    // that drops all UDP and has no TURN.
    await ctx.addInitScript(() => {
      const Real = window.RTCPeerConnection;
      window.RealRTCPeerConnection = Real;
      window.RTCPeerConnection = function RTCPeerConnection(config) { return new Real({ ...config, iceTransportPolicy: 'relay' }); };
      window.RTCPeerConnection.prototype = Real.prototype;
    });
    const page = await pageAs(ctx, 'approver', `/#/case/${opened.id}`);
    await page.locator('.call-area[data-call-state="failed"]').waitFor({ timeout: 40000 });
    await waitText(page.locator('.call-message .notice.error'), '视频连接没有建立成功');
    // The network is fixed: 重新连接 joins and connects.
    await page.evaluate(() => { window.RTCPeerConnection = window.RealRTCPeerConnection; });
    await page.locator('#call-retry').click();
    await page.locator('.call-area[data-call-state="connected"]').waitFor({ timeout: 20000 });
    await page.locator('.call-message .notice.error').waitFor({ state: 'detached' });
    assert.deepEqual(page.problems, []);
  } finally {
    await ctx.close();
  }
});

test('switching camera mid-call replaces the track without renegotiating, and the other side keeps decoding', async () => {
  // Three fake cameras: Chromium's second fake camera is a 16-bit depth camera that the encoder
  // does not take (no frame is encoded from it), so the test switches twice, to the third.
  const threeCameras = await launchBrowser({ cameras: 3 });
  const agentCtx = await newContext(browser, server);
  const approverCtx = await newContext(threeCameras, server);
  try {
    const { agent, approver, approverId } = await callOfTwo(agentCtx, approverCtx);
    await expectMediaFlowing(agent, [approverId], { label: 'agent before the switch' });
    const sentLabel = () => approver.evaluate(() => window.cloudhelp.call.senderOf('video').track?.label);
    const sdp = await approver.evaluate(() => window.cloudhelp.call.pc.localDescription.sdp);
    assert.equal(await sentLabel(), 'fake_device_0');
    await approver.locator('#call-switch').click();
    await approver.waitForFunction(() => window.cloudhelp.call.senderOf('video').track?.label === 'fake_device_1');
    await approver.locator('#call-switch:not([disabled])').click();
    await approver.waitForFunction(() => window.cloudhelp.call.senderOf('video').track?.label === 'fake_device_2');
    assert.equal(await approver.evaluate(() => window.cloudhelp.call.pc.localDescription.sdp), sdp, 'no new negotiation');
    await expectMediaFlowing(agent, [approverId], { label: 'agent after the switch' });
    assert.equal(await approver.locator('.call-message .notice').count(), 0);
    // The approver's own picture shows the new camera.
    assert.equal(await approver.evaluate(() => document.querySelector('.call-tile.self video').srcObject.getVideoTracks()[0].label), 'fake_device_2');
    for (const p of [agent, approver]) assert.deepEqual(p.problems, []);
  } finally {
    await agentCtx.close();
    await approverCtx.close();
    await threeCameras.close();
  }
});

test('screen share (同屏): the approver\'s uplink estimate climbs on the relay\'s transport-wide feedback; the approver shares a screen, the agent sees it large beside the camera tiles at desktop and phone width, turning the camera off leaves it on, and stopping takes it away; both are case events', async () => {
  const sharing = await launchBrowser({ screen: true });
  const agentCtx = await newContext(browser, server, { viewport: { width: 375, height: 812 } });
  const approverCtx = await newContext(sharing, server);
  try {
    const { caseId, agent, approver, approverId } = await callOfTwo(agentCtx, approverCtx);
    await expectMediaFlowing(agent, [approverId], { label: 'agent before the share' });
    // Uplink congestion control: the relay answered with transport-wide feedback for audio and
    // video, and the browser's own estimator climbs on what it returns: past 1 Mbit/s within 12 s
    // (Chromium starts at 300 kbit/s; the relay sends publishers no REMB, and receiver reports
    // alone grow the estimate by 8 % a second, ~750 kbit/s after 12 s).
    const answer = await approver.evaluate(() => window.cloudhelp.call.pc.remoteDescription.sdp);
    assert.match(answer, /a=rtcp-fb:\d+ transport-cc/);
    assert.match(answer, /a=extmap:\d+ http:\/\/www\.ietf\.org\/id\/draft-holmer-rmcat-transport-wide-cc-extensions-01/);
    await approver.waitForFunction(async () => {
      let rate = 0;
      (await window.cloudhelp.call.pc.getStats()).forEach((s) => {
        if (s.type === 'candidate-pair' && s.availableOutgoingBitrate) rate = Math.max(rate, s.availableOutgoingBitrate);
      });
      return rate > 1_000_000;
    }, null, { timeout: 12000, polling: 500 });
    await approver.locator('#call-screen:not([disabled])').click();
    await waitText(approver.locator('#call-screen'), '停止共享屏幕');
    await waitText(approver.locator('.call-screen[data-screen="self"] figcaption'), '你正在共享的屏幕');
    // The agent sees the screen large, named, playing: a 1280-wide picture, sent for legibility.
    const screen = agent.locator(`.call-screen[data-screen="${approverId}"]`);
    await waitText(screen.locator('figcaption'), '的屏幕');
    await agent.waitForFunction((p) => {
      const v = document.querySelector(`.call-screen[data-screen="${p}"] video`);
      return v && !v.paused && v.readyState >= 2 && v.videoWidth >= 1280;
    }, approverId, { timeout: 20000 });
    assert.equal(await approver.evaluate(() => window.cloudhelp.call.screenTx.sender.track.contentHint), 'detail');
    // The camera tile is still there, beside it.
    await expectTilePlaying(agent, approverId);
    await agent.screenshot({ path: join(ARTIFACTS, 'call-screen-share-phone.png'), fullPage: true });
    await approver.screenshot({ path: join(ARTIFACTS, 'call-screen-share-desktop.png'), fullPage: true });

    // The approver turns the camera off: the screen goes on.
    await approver.locator('#call-camera').click();
    await waitText(agent.locator(`.call-tile[data-participant="${approverId}"] .call-placeholder`), '摄像头已关闭');
    const frames = () => agent.evaluate((p) => document.querySelector(`.call-screen[data-screen="${p}"] video`)?.getVideoPlaybackQuality().totalVideoFrames ?? 0, approverId);
    const before = await frames();
    await agent.waitForFunction(([p, n]) => (document.querySelector(`.call-screen[data-screen="${p}"] video`)?.getVideoPlaybackQuality().totalVideoFrames ?? 0) > n + 3, [approverId, before], { timeout: 10000 });

    // Stopped: the screen leaves the agent's page, the button is back.
    await approver.locator('#call-screen').click();
    await waitText(approver.locator('#call-screen'), '共享屏幕');
    await screen.waitFor({ state: 'detached', timeout: 10000 });
    assert.equal(await approver.locator('.call-screen').count(), 0);

    const { body } = await (await apiAs(server, 'auditor')).call('GET', `/audit?case_id=${caseId}`);
    const events = String(body).trim().split('\n').map((line) => JSON.parse(line)).filter((e) => e.kind === 'call.screen_share');
    assert.deepEqual(events.map((e) => [e.actor_role, e.details.sharing]), [['approver', true], ['approver', false]]);
    for (const p of [agent, approver]) assert.deepEqual(p.problems, []);
  } finally {
    await agentCtx.close();
    await approverCtx.close();
    await sharing.close();
  }
});

test('the applicant joins from home (群众远程接入): the agent makes a one-time link and QR code, the applicant opens it on a phone, consents to the notice, sees and is seen by the approver, uploads a photo that reaches the approver, signs the summary on its phone while the call is recorded; the used link gets a plain page; withdrawn, the applicant is told; screenshots', async () => {
  const agentCtx = await newContext(browser, server);
  const approverCtx = await newContext(browser, server);
  const residentCtx = await newContext(browser, server, { viewport: { width: 375, height: 812 } });
  const strangerCtx = await newContext(browser, server, { viewport: { width: 375, height: 812 } });
  try {
    const { agent, approver, approverId } = await callOfTwo(agentCtx, approverCtx);
    await agent.locator('#invite-resident').click();
    await agent.locator('#invite-qr').waitFor();
    assert.ok(await agent.locator('#invite-qr').evaluate((img) => img.naturalWidth > 0), 'the QR code renders');
    const link = await agent.locator('#invite-link').inputValue();
    assert.match(link, /\/#\/invite\/[A-Za-z0-9_-]{40,}$/);
    await waitText(agent.locator('#invite-list li[data-state=open]'), '待使用');
    await agent.locator('.invite-card').screenshot({ path: join(ARTIFACTS, 'invite-card.png') });

    // On the applicant's phone: the notice first; nothing happens without consent.
    const resident = await newPage(residentCtx);
    await resident.goto(link);
    await waitText(resident.locator('#invite-notice'), '可能被录制');
    await waitText(resident.locator('.invite-page'), '居民身份证挂失');
    assert.equal(await resident.locator('#invite-accept').isDisabled(), true);
    await resident.screenshot({ path: join(ARTIFACTS, 'invite-notice-phone.png'), fullPage: true });
    await resident.locator('#invite-consent').check();
    await resident.locator('#invite-accept').click();
    await resident.waitForFunction(() => location.hash === '#/resident');
    const residentId = `user-${await resident.evaluate(() => window.cloudhelp.session.user.id)}`;

    // In the call: the applicant and the approver see and hear each other; the tile names them.
    await expectMediaFlowing(resident, [approverId], { label: 'resident from the approver' });
    await expectMediaFlowing(approver, [residentId], { label: 'approver from the resident' });
    await waitText(approver.locator(`.call-tile[data-participant="${residentId}"] .call-name`), '申请人（远程）');
    await waitText(agent.locator('#case-resident-remote'), '邀请链接');
    await waitText(agent.locator('#invite-list li[data-state=used]'), '已加入');

    // A photo from home reaches the approver's materials.
    const png = Buffer.from('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==', 'base64');
    await resident.locator('#resident-file').setInputFiles({ name: '户口簿首页.png', mimeType: 'image/png', buffer: png });
    await resident.locator('#uploads li[data-state=done]').waitFor();
    await waitText(approver.locator('#material-list'), '户口簿首页.png');
    await resident.screenshot({ path: join(ARTIFACTS, 'resident-call-phone.png'), fullPage: true });

    // The applicant signs on its phone, while the call is recorded (everyone consents first).
    for (const p of [agent, approver, resident]) await p.locator('#call-consent').click();
    await approver.locator('#call-recording:not([hidden])').waitFor();
    await approver.locator('#signature-signer').selectOption('resident');
    await approver.locator('#ask-signature').click();
    await waitText(resident.locator('#signature-summary'), '申请人签名确认');
    const summary = await resident.locator('#signature-summary').textContent();
    assert.ok(summary.includes('居民身份证挂失') && !summary.includes(APPLICANT), summary);
    await resident.locator('#signature-pad').scrollIntoViewIfNeeded();
    const pad = await resident.locator('#signature-pad').boundingBox();
    await resident.mouse.move(pad.x + 20, pad.y + pad.height / 2);
    await resident.mouse.down();
    for (let i = 1; i <= 30; i++) await resident.mouse.move(pad.x + 20 + i * 10, pad.y + pad.height / 2 + Math.sin(i / 3) * 30, { steps: 3 });
    await resident.mouse.up();
    await resident.screenshot({ path: join(ARTIFACTS, 'resident-signature-phone.png'), fullPage: true });
    await resident.locator('#signature-submit').click();
    await waitText(resident.locator('#signature-card'), '签名已提交');
    await waitText(approver.locator('#signature-list li[data-state=signed]'), '已签名');
    await waitText(approver.locator('#material-list'), '申请人签名');

    // The link again, elsewhere: used, in plain words.
    const stranger = await newPage(strangerCtx);
    await stranger.goto(link);
    await waitText(stranger.locator('#invite-refused[data-code=invitation_used]'), '已使用过');

    // Withdrawn: the applicant is taken out of the call and told so.
    await agent.locator('#invite-list li[data-state=used] [data-revoke]').click();
    await waitText(resident.locator('.call-message'), '工作人员已结束');
    await approver.locator(`.call-tile[data-participant="${residentId}"]`).waitFor({ state: 'detached' });
    for (const p of [agent, approver]) assert.deepEqual(p.problems, []);
  } finally {
    for (const ctx of [agentCtx, approverCtx, residentCtx, strangerCtx]) await ctx.close();
  }
});

test('标注: the approver freezes the agent\'s picture and marks it with an arrow, a circle and a label; the agent at phone width sees each mark and the pointer at once; saved, it is a material; a material can be marked too; screenshots', async () => {
  const agentCtx = await newContext(browser, server, { viewport: { width: 375, height: 812 } });
  const approverCtx = await newContext(browser, server);
  try {
    const { agent, approver, agentId } = await callOfTwo(agentCtx, approverCtx);
    await expectMediaFlowing(approver, [agentId], { label: 'approver before freezing' });
    await approver.locator(`.call-tile[data-participant="${agentId}"] .tile-annotate`).click();
    const board = (p) => p.locator('#annotation-board:not([hidden])');
    await board(approver).waitFor();
    await board(agent).waitFor();
    await waitText(agent.locator('.annotation-caption'), '已定格');
    const canvas = approver.locator('#annotation-canvas');
    await approver.waitForFunction(() => document.querySelector('#annotation-canvas').width > 0);
    const box = await canvas.boundingBox();
    const at = (x, y) => [box.x + box.width * x, box.y + box.height * y];
    const drag = async (from, to) => {
      await approver.mouse.move(...at(...from));
      await approver.mouse.down();
      await approver.mouse.move(...at(...to), { steps: 4 });
      await approver.mouse.up();
    };
    const shapesOn = (p, n) => p.locator(`#annotation-board[data-shapes="${n}"]`).waitFor();
    await drag([0.2, 0.2], [0.45, 0.5]);
    await shapesOn(agent, 1);
    await approver.locator('input[name=annotation-tool][value=circle]').check();
    await drag([0.6, 0.5], [0.7, 0.5]);
    await shapesOn(agent, 2);
    await approver.locator('input[name=annotation-tool][value=text]').check();
    await approver.locator('#annotation-text').fill('这里看不清');
    await drag([0.55, 0.2], [0.55, 0.2]);
    await shapesOn(agent, 3);
    // The pointer follows the approver's cursor on the agent's page.
    await approver.mouse.move(...at(0.3, 0.7), { steps: 3 });
    await agent.locator('#annotation-pointer:not([hidden])').waitFor();
    await agent.waitForFunction(() => {
      const [x, y] = (document.querySelector('#annotation-board').dataset.pointer || '').split(',').map(Number);
      return Math.abs(x - 0.3) < 0.03 && Math.abs(y - 0.7) < 0.03;
    }, null, { timeout: 5000 });
    await agent.locator('#annotation-board').screenshot({ path: join(ARTIFACTS, 'annotation-phone.png') });
    await approver.screenshot({ path: join(ARTIFACTS, 'annotation-desktop.png'), fullPage: true });

    // Saved: a material of the case, and the board goes on both pages.
    await approver.locator('#annotation-save').click();
    await board(agent).waitFor({ state: 'detached' }).catch(() => {});
    await agent.locator('#annotation-board[hidden]').waitFor({ state: 'attached' });
    await waitText(approver.locator('#material-list'), '标注-');

    // A material marked in the call.
    await approver.locator('#material-list .thumb').first().click();
    await approver.locator('#annotate-material').click();
    await board(agent).waitFor();
    await waitText(agent.locator('.annotation-caption'), '材料');
    await approver.locator('#annotation-close').click();
    await agent.locator('#annotation-board[hidden]').waitFor({ state: 'attached' });
    for (const p of [agent, approver]) assert.deepEqual(p.problems, []);
  } finally {
    await agentCtx.close();
    await approverCtx.close();
  }
});

test('a waiting case shows its place in the queue and a wait expected from recent figures, and its place counts down live as cases ahead are taken (phone width)', async () => {
  const agentApi = await apiAs(server, 'agent');
  const approverApi = await apiAs(server, 'approver');
  const ahead = await openCase(agentApi, 'id-loss');
  const mine = await openCase(agentApi, 'id-loss');
  const agentCtx = await newContext(browser, server, { viewport: { width: 375, height: 812 } });
  try {
    const agent = await pageAs(agentCtx, 'agent', `/#/case/${mine.id}`);
    const place = agent.locator('#queue-place');
    await place.waitFor();
    const before = Number(await place.getAttribute('data-position'));
    assert.ok(before >= 2, `position ${before}`);
    await waitText(place, `前面还有 ${before - 1} 件`);
    const accepted = await approverApi.call('POST', `/cases/${ahead.id}/actions/accept`, {});
    assert.equal(accepted.status, 200, JSON.stringify(accepted.body));
    await agent.locator(`#queue-place[data-position="${before - 1}"]`).waitFor();
    assert.match(await place.textContent(), /预计等待约 \d+ 分钟|暂无等待时间估计/);
    await agent.screenshot({ path: join(ARTIFACTS, 'queue-place-phone.png'), fullPage: true });
    // The agent can still cancel while waiting.
    assert.equal(await agent.locator('#cancel, form#cancel').count() > 0, true);
    assert.deepEqual(agent.problems, []);
  } finally {
    await agentCtx.close();
  }
});

test('水印: the material viewer always names its viewer and the time over the picture; with watermark_video the others\' video does too (desktop and phone width), never one\'s own picture; with signature_requires_recording off, the applicant signs on the agent\'s device', async () => {
  const own = await startServer({ settings: { watermark_video: true, signature_requires_recording: false } });
  const agentCtx = await newContext(browser, own, { viewport: { width: 375, height: 812 } });
  const approverCtx = await newContext(browser, own);
  try {
    const { agent, approver, agentId } = await callOfTwo(agentCtx, approverCtx, 'id-loss', own);
    const mark = approver.locator(`.call-tile[data-participant="${agentId}"] .watermark`);
    await mark.waitFor({ state: 'attached' });
    assert.match(await mark.getAttribute('data-watermark'), /^李审批 \d{4}-\d{2}-\d{2} \d{2}:\d{2}$/);
    assert.match(await mark.evaluate((el) => getComputedStyle(el).backgroundImage), /^url\("data:image\/png/);
    assert.equal(await mark.evaluate((el) => getComputedStyle(el).pointerEvents), 'none');
    assert.equal(await approver.locator('.call-tile.self .watermark').count(), 0, 'not over one\'s own picture');
    const png = Buffer.from('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==', 'base64');
    await agent.locator('#file-input').setInputFiles({ name: '户口簿.png', mimeType: 'image/png', buffer: png });
    await approver.locator('#viewer-image').waitFor();
    assert.match(await approver.locator('.stage > .watermark').getAttribute('data-watermark'), /^李审批 /);
    await expectMediaFlowing(approver, [agentId], { label: 'approver under the watermark' });
    await approver.screenshot({ path: join(ARTIFACTS, 'watermark-desktop.png'), fullPage: true });
    // At phone width the agent's view of the approver is marked with the agent's name.
    const agentMark = agent.locator('.call-tile:not(.self) .watermark');
    await agentMark.waitFor({ state: 'attached' });
    assert.match(await agentMark.getAttribute('data-watermark'), /^王代办 /);

    // The applicant signs on the agent's device (no recording needed with this setting).
    await approver.locator('#ask-signature').click();
    await waitText(agent.locator('#signature-summary'), '申请人签名确认');
    await agent.locator('#signature-pad').scrollIntoViewIfNeeded();
    const pad = await agent.locator('#signature-pad').boundingBox();
    await agent.mouse.move(pad.x + 30, pad.y + pad.height / 2);
    await agent.mouse.down();
    for (let i = 1; i <= 20; i++) await agent.mouse.move(pad.x + 30 + i * 12, pad.y + pad.height / 2 - Math.cos(i / 2) * 25, { steps: 3 });
    await agent.mouse.up();
    await agent.locator('#signature-submit').click();
    await waitText(agent.locator('#signature-card'), '签名已提交');
    await waitText(approver.locator('#signature-list li[data-state=signed]'), '代办点设备');
    for (const p of [agent, approver]) assert.deepEqual(p.problems, []);
  } finally {
    await agentCtx.close();
    await approverCtx.close();
    await own.kill();
  }
});

test('a server restart during a call: both pages get back into the call on their own', async () => {
  let own = await startServer();
  const agentCtx = await newContext(browser, own);
  const approverCtx = await newContext(browser, own);
  try {
    const { agent, approver, agentId, approverId } = await callOfTwo(agentCtx, approverCtx, 'id-loss', own);
    await expectMediaFlowing(approver, [agentId], { label: 'approver before' });
    const { port, data } = own;
    await own.kill();
    await agent.locator('.call-area[data-call-state="reconnecting"]').waitFor();
    own = await startServer({ dataDir: data, port });
    await expectMediaFlowing(agent, [approverId], { label: 'agent after the restart', timeout: 40000 });
    await expectMediaFlowing(approver, [agentId], { label: 'approver after the restart', timeout: 20000 });
    assert.equal(await approver.locator('.call-tile').count(), 2);
    for (const p of [agent, approver]) assert.deepEqual(p.problems, []);
  } finally {
    await agentCtx.close();
    await approverCtx.close();
    await own.kill();
  }
});
