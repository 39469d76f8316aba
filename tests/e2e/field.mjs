// Calls over impaired links, in Chromium: the agent's browser reaches the relay only through
// `cloudhelp impair` (the impairment proxy), the approver's directly. Each test puts the agent's
// path into a named profile and reads both browsers' getStats(). Run by `cargo test`
// (tests/web_e2e.rs) after run.mjs, or alone: `node tests/e2e/field.mjs` after `cargo build`.
// The figures each test measured are printed as `# field:` lines (docs/field-networks.md).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startServer, launchBrowser, newContext, startCall, expectMediaFlowing, freeUdpPort, startImpairment,
  behindProxy, linkFigures,
} from './lib.mjs';

let server;
let browser;
let relayPort;

before(async () => {
  relayPort = await freeUdpPort();
  server = await startServer({ settings: { relay_udp_addr: `127.0.0.1:${relayPort}` } });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.kill();
});

/** A call of two in which the agent's path goes through a new impairment proxy (clean until a
 * test switches its profile); media flowing both ways before it returns. */
async function impairedCall() {
  const proxy = await startImpairment(`127.0.0.1:${relayPort}`);
  const agentCtx = await newContext(browser, server);
  await behindProxy(agentCtx, relayPort, proxy.port);
  const approverCtx = await newContext(browser, server);
  const call = await startCall(server, agentCtx, approverCtx);
  await expectMediaFlowing(call.approver, [call.agentId], { label: 'approver, clean path' });
  await expectMediaFlowing(call.agent, [call.approverId], { label: 'agent, clean path' });
  // The agent's media really takes the proxy's path.
  const through = await proxy.stats();
  assert.ok(through.flows >= 1 && through.up.delivered > 100 && through.down.delivered > 100, JSON.stringify(through));
  return {
    ...call,
    proxy,
    async close() {
      await agentCtx.close();
      await approverCtx.close();
      await proxy.stop();
    },
  };
}

/** Over `seconds`, on `page`: the share of time its received video was frozen, the share of its
 * received audio that was concealed, the received width at the end, and the sent bitrate. */
async function measure(page, seconds) {
  const a = await linkFigures(page);
  await page.waitForTimeout(seconds * 1000);
  const b = await linkFigures(page);
  const elapsed = (b.at - a.at) / 1000;
  const samples = b.audio.totalSamplesReceived - a.audio.totalSamplesReceived;
  return {
    seconds: Math.round(elapsed),
    videoFrozen: (b.video.totalFreezesDuration - a.video.totalFreezesDuration) / elapsed,
    freezes: b.video.freezeCount - a.video.freezeCount,
    framesPerSecond: (b.video.framesDecoded - a.video.framesDecoded) / elapsed,
    audioConcealed: samples > 0 ? (b.audio.concealedSamples - a.audio.concealedSamples) / samples : 1,
    audioReceived: samples,
    width: b.video.frameWidth,
    videoLoss: lossShare(a.video, b.video),
    audioLoss: lossShare(a.audio, b.audio),
    sentKbps: ((b.sent.videoBytes + b.sent.audioBytes - a.sent.videoBytes - a.sent.audioBytes) * 8) / elapsed / 1000,
    limitedBy: b.sent.qualityLimitationReason,
    availableOutgoingKbps: b.pair.availableOutgoingBitrate / 1000,
  };
}

function lossShare(a, b) {
  const lost = b.packetsLost - a.packetsLost;
  const received = b.packetsReceived - a.packetsReceived;
  return lost + received > 0 ? lost / (lost + received) : 0;
}

const pct = (x) => `${(x * 100).toFixed(1)} %`;

/** The proxy's counters since `before` (a stats event), per way. */
function since(before, after) {
  const way = (a, b) => Object.fromEntries(Object.keys(b).map((k) => [k, b[k] - a[k]]));
  return { up: way(before.up, after.up), down: way(before.down, after.down) };
}

/** How long after `from` (ms since the epoch) video frames and audio samples from `who` rise on
 * `page` again; polls every 250 ms, up to `timeout`. */
async function backAfter(page, who, from, timeout = 30000) {
  let last = null;
  for (;;) {
    const now = await linkFigures(page);
    if (last && now.video.framesDecoded > last.video.framesDecoded && now.audio.totalSamplesReceived > last.audio.totalSamplesReceived
      && now.audio.concealedSamples - last.audio.concealedSamples < (now.audio.totalSamplesReceived - last.audio.totalSamplesReceived) / 2) {
      return Date.now() - from;
    }
    if (Date.now() - from > timeout) throw new Error(`media from ${who} did not come back within ${timeout} ms`);
    last = now;
    await page.waitForTimeout(250);
  }
}

test('congested (300 kbit/s each way, 150 ms RTT, 10 % loss) on the agent\'s path: the proxy impairs it as the profile says, audio keeps arriving both ways, and the figures against the goals are printed', async () => {
  const call = await impairedCall();
  try {
    await call.proxy.profile('congested');
    // The estimators settle on the new link first.
    await call.agent.waitForTimeout(10000);
    const before = await call.proxy.stats();
    const [atApprover, atAgent] = await Promise.all([measure(call.approver, 30), measure(call.agent, 30)]);
    const link = since(before, await call.proxy.stats());
    console.log(`# field: congested, approver receiving the agent: ${JSON.stringify(atApprover)}`);
    console.log(`# field: congested, agent receiving the approver: ${JSON.stringify(atAgent)}`);
    console.log(`# field: congested, the agent's path: ${JSON.stringify(link)}`);
    // The link really was what the profile says: about a tenth lost each way by the loss model,
    // and no more than 300 kbit/s delivered.
    for (const [name, way] of Object.entries(link)) {
      const lostShare = way.lost / way.offered;
      assert.ok(lostShare > 0.07 && lostShare < 0.13, `${name}: the proxy lost ${pct(lostShare)}`);
      assert.ok((way.delivered_bytes * 8) / 30 / 1000 < 330, `${name}: more than 300 kbit/s went through`);
    }
    // The goals (video frozen < 5 %, audio concealed < 2 %) are not met yet
    // (docs/field-networks.md): the call must at least go on, with audio arriving both ways.
    for (const [who, m] of [['approver', atApprover], ['agent', atAgent]]) {
      assert.ok(m.audioReceived > 0 && m.audioConcealed < 0.9, `${who}: no audio (${JSON.stringify(m)})`);
      console.log(`# field: congested, ${who}: video frozen ${pct(m.videoFrozen)} (goal < 5 %), audio concealed ${pct(m.audioConcealed)} (goal < 2 %)`);
    }
  } finally {
    await call.close();
  }
});

test('outage-10s on the agent\'s path: media flows again both ways after the link returns, on the same connection', async () => {
  const call = await impairedCall();
  try {
    await call.agent.evaluate(() => { window.cloudhelp.call.pc.marked = true; });
    await call.proxy.profile('outage-10s');
    const outage = await call.proxy.waitFor((e) => e.event === 'phase' && e.phase === 'outage');
    // Nothing passes while the link is down.
    const during = await call.proxy.stats();
    await call.agent.waitForTimeout(2000);
    const stillDown = since(during, await call.proxy.stats());
    assert.equal(stillDown.up.delivered + stillDown.down.delivered, 0, JSON.stringify(stillDown));
    const back = await call.proxy.waitFor((e) => e.event === 'phase' && e.phase === 'after', 20000);
    const [approverMs, agentMs] = await Promise.all([
      backAfter(call.approver, 'the agent', back.seenAt),
      backAfter(call.agent, 'the approver', back.seenAt),
    ]);
    console.log(`# field: outage-10s (${back.at_ms - outage.at_ms} ms down): the approver receives the agent again ${approverMs} ms after the link returned, the agent the approver ${agentMs} ms after (goal <= 3000)`);
    assert.equal(await call.agent.evaluate(() => window.cloudhelp.call.pc.marked === true), true, 'the call was set up anew instead of going on');
    assert.equal(await call.agent.locator('.call-area').getAttribute('data-call-state'), 'connected');
  } finally {
    await call.close();
  }
});

test('an address change on the agent\'s path (the relay hears it from a new port): media flows again both ways on the same connection', async () => {
  const call = await impairedCall();
  try {
    await call.agent.evaluate(() => { window.cloudhelp.call.pc.marked = true; });
    const moved = await call.proxy.profile('address-change');
    assert.ok(moved);
    const rebound = await call.proxy.waitFor((e) => e.event === 'rebound', 20000);
    const [approverMs, agentMs] = await Promise.all([
      backAfter(call.approver, 'the agent', rebound.seenAt),
      backAfter(call.agent, 'the approver', rebound.seenAt),
    ]);
    console.log(`# field: address change: the approver receives the agent again ${approverMs} ms after the move, the agent the approver ${agentMs} ms after (goal <= 3000)`);
    assert.equal(await call.agent.evaluate(() => window.cloudhelp.call.pc.marked === true), true, 'the call was set up anew instead of going on');
  } finally {
    await call.close();
  }
});
