// The call panel of a case (视频帮办): the agent, the approver holding the case and the invited
// experts see and hear each other through the relay (media-relay), signaled over the tab's /ws
// (docs/signaling.md, "Calls"). One RTCPeerConnection per panel: our first offer publishes the
// camera and microphone; after it the relay is the offerer and we answer. Candidates trickle both
// ways (the relay's may arrive before the description they belong to: they wait in a list).
//
// Contract with the case page: `mountCallPanel(container, { caseView, user, live, localStream,
// getLocalStream })` once; `update(caseView)` on every change of the case (the call survives it;
// it joins when the case is in a call state and we are one of its participants, and leaves when
// that stops being true); `dispose()` when the page is left. The agent's camera is the camera
// card's stream (`getLocalStream()`), cloned, so that muting the call never blacks the capture.
//
// It must not touch the case workflow: it only reads the case view.
import { watermark, unwatermark } from './watermark.js';
import { AnnotationBoard } from './annotate.js';
import { h, fill, busy } from './core.js';
import { t } from './i18n.js';
import { LinkWatch, LINK_WATCH_MS, LINK_LOW_FPS } from './linkwatch.js';

const CALL_STATES = ['in_call', 'awaiting_material'];
/** The server keeps a dropped participant's place for 30 s; after this long we join afresh. */
const RESUME_WINDOW_MS = 25000;
/** A connection not up this long after a join is given up and the call joined afresh once (the
 * server hands a reloaded page the place its old page held, with the relay's old connection,
 * which a new RTCPeerConnection cannot reach); after that, a message and the retry button. */
const CONNECT_DEADLINE_MS = 12000;
/** How long the agent's camera card may take to start before we join receive-only. */
const AGENT_CAMERA_WAIT_MS = 6000;
const KNOWN_ERRORS = ['call_refused', 'room_full', 'bad_message', 'not_joined', 'recording_unavailable', 'chat_too_fast', 'bad_sdp', 'no_usable_codec', 'negotiation_in_progress',
  'unexpected_answer', 'candidate_before_offer', 'bad_candidate', 'unknown_track', 'internal'];
const KNOWN_REMOVALS = ['left', 'vanished', 'connection_lost', 'too_slow', 'room_closed', 'replaced', 'dismissed'];
/** Document mode (材料展示): the camera is sent for legibility — the encoder keeps the
 * resolution and gives up frame rate instead (a document held to the camera barely moves), at
 * most this many frames a second, so a weak link still carries a readable picture. */
const DOCUMENT_FPS = 5;
/** The camera goes out in three simulcast layers, lowest first (a quarter, half and full size):
 * the relay gives each receiver the layer its downlink carries, so one weak link lowers only its
 * own picture; the browser itself sends fewer layers while its uplink is short (the lowest alone
 * on a weak link) and none below its smallest size (a small camera gets fewer). */
const CAMERA_LAYERS = [
  { rid: 'q', scaleResolutionDownBy: 4 },
  { rid: 'h', scaleResolutionDownBy: 2 },
  { rid: 'f', scaleResolutionDownBy: 1 },
];
/** A shared screen: legibility over motion, a few frames a second are enough for a form. */
const SCREEN_FPS = 5;
/** The relay sends a shared screen in a stream of its own, named <participant>~screen. */
const SCREEN_STREAM_SUFFIX = '~screen';
/** After a capture (拍照: the agent is showing a document) document mode stays on this long,
 * unless it was switched on by hand. */
const DOCUMENT_AFTER_CAPTURE_MS = 60000;

export function mountCallPanel(container, options) {
  const panel = new CallPanel(container, options);
  // For the browser tests (getStats of the call) and for debugging in the console.
  if (window.cloudhelp) window.cloudhelp.call = panel;
  return {
    update: (view) => panel.update(view),
    showDocument: () => panel.showDocument(),
    /** Starts marking material `id` (标注), if this page is in the call. */
    annotateMaterial: (id) => (panel.want ? panel.board.openMaterial(id) : Promise.reject(Object.assign(new Error('not in the call'), { userMessage: t('annotate.needs_call') }))),
    dispose: () => {
      panel.dispose();
      if (window.cloudhelp?.call === panel) delete window.cloudhelp.call;
    },
  };
}

/** Whether the case's call is open (the server's `call_open`; older servers: the call states). */
function callOpen(view) {
  return view.call_open ?? CALL_STATES.includes(view.state);
}

/** Whether `user` takes part in the call of `view` (the server checks again: `call_refused`). */
function isParticipant(view, user) {
  if (user.role === 'agent') return view.agent?.id === user.id;
  if (user.role === 'approver') return view.approver?.id === user.id;
  if (user.role === 'expert') return (view.experts || []).some((e) => e.id === user.id);
  if (user.role === 'resident') return (view.residents || []).some((r) => r.id === user.id);
  return false;
}

/** The plain message for a getUserMedia failure in a call (the call still goes on, receive-only). */
function callMediaErrorText(err) {
  switch (err?.name) {
    case 'NotAllowedError':
    case 'SecurityError':
      return t('call.media_denied');
    case 'NotFoundError':
    case 'OverconstrainedError':
      return t('call.media_none');
    case 'NotReadableError':
    case 'AbortError':
      return t('call.media_busy');
    default:
      return t('call.media_failed');
  }
}

class Tile {
  constructor(participantId, { self = false } = {}) {
    this.id = participantId;
    this.self = self;
    this.video = h('video', { autoplay: true, playsinline: true, class: 'call-video' });
    this.video.muted = self; // our own picture never plays our own voice
    this.name = h('span', { class: 'call-name' });
    this.flags = h('span', { class: 'call-flags' });
    this.quality = h('span', { class: 'call-quality', hidden: true });
    this.placeholder = h('div', { class: 'call-placeholder' }, t(self ? 'call.no_local_video' : 'call.waiting_video'));
    this.el = h('div', { class: `call-tile${self ? ' self' : ''}`, dataset: { participant: participantId } },
      this.video, this.placeholder,
      h('div', { class: 'call-label' }, this.name, this.flags, this.quality));
    this.muted = { audio: false, video: false };
    this.stream = null;
  }

  setName(text) { this.name.textContent = text; }

  attach(stream, onAutoplayRefused) {
    if (this.stream === stream && this.video.srcObject === stream) return;
    this.stream = stream;
    this.video.srcObject = stream;
    this.refresh();
    if (!stream) return;
    const played = this.video.play();
    if (played && !this.self) {
      played.catch(() => {
        // The browser refused to play sound without a click: show the picture muted and offer a
        // button that turns the sound on.
        this.video.muted = true;
        this.video.play().catch(() => {});
        onAutoplayRefused();
      });
    }
  }

  refresh() {
    const hasVideo = !!this.stream && this.stream.getVideoTracks().some((tr) => tr.readyState === 'live');
    const audioOnly = this.audioOnly && !this.self;
    const showVideo = hasVideo && !this.muted.video && !audioOnly;
    this.placeholder.hidden = showVideo;
    this.video.classList.toggle('off', !showVideo);
    if (!showVideo) {
      const why = audioOnly ? 'call.audio_only_view' : this.muted.video ? 'call.camera_is_off' : (this.self ? 'call.no_local_video' : 'call.waiting_video');
      this.placeholder.textContent = t(why);
    }
    const flags = [];
    if (this.muted.audio) flags.push(t('call.mic_is_off'));
    this.flags.textContent = flags.join(' ');
    this.flags.hidden = flags.length === 0;
  }

  setMuted(kind, muted) {
    this.muted[kind] = muted;
    this.refresh();
  }

  /** We receive no video (只用语音): the tile says so instead of freezing. */
  setAudioOnly(on) {
    this.audioOnly = on;
    this.refresh();
  }

  setSpeaking(speaking) {
    this.el.classList.toggle('speaking', speaking);
    this.el.dataset.speaking = speaking ? '1' : '0';
  }

  setQuality(grade) {
    if (!['good', 'fair', 'poor'].includes(grade)) return;
    this.quality.hidden = false;
    this.quality.className = `call-quality q-${grade}`;
    this.quality.dataset.grade = grade;
    this.quality.textContent = t(`call.quality.${grade}`);
  }
}

/** A shared screen (同屏), shown large above the camera tiles: someone else's, or our own. */
class Screen {
  constructor(owner, stream) {
    this.owner = owner; // participant id, or 'self'
    // A screen carries no sound.
    this.video = h('video', { autoplay: true, playsinline: true, muted: true, class: 'call-screen-video' });
    this.caption = h('figcaption', { class: 'call-screen-caption' });
    this.el = h('figure', { class: 'call-screen', dataset: { screen: owner } }, this.video, this.caption);
    this.video.srcObject = stream;
    this.video.play().catch(() => {});
  }

  setName(text) { this.caption.textContent = text; }
}

/** The longest chat message the server takes (chat::MAX_CHARS). */
const CHAT_MAX_CHARS = 500;

/** The call's chat (文字交流): the messages of the case's call people, and a line to write one.
 * Each message is kept with the case on the server; a joiner gets the last ones. */
class ChatBox {
  constructor(onSend) {
    this.ids = new Set();
    this.list = h('ol', { class: 'chat-list', id: 'call-chat-list', 'aria-live': 'polite' });
    this.input = h('input', { type: 'text', id: 'call-chat-input', maxlength: CHAT_MAX_CHARS, autocomplete: 'off', placeholder: t('chat.placeholder'), 'aria-label': t('chat.placeholder') });
    this.message = h('p', { class: 'chat-message', role: 'status' });
    const send = h('button', { type: 'submit', id: 'call-chat-send', class: 'small' }, t('chat.send'));
    const form = h('form', { class: 'chat-form' }, this.input, send);
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      const text = this.input.value.trim();
      if (!text) return;
      if (onSend(text)) {
        this.input.value = '';
        this.say('');
      } else {
        this.say(t('chat.not_sent'));
      }
    });
    this.el = h('section', { class: 'call-chat', id: 'call-chat', hidden: true }, h('h3', {}, t('chat.title')), this.list, this.message, form);
  }

  /** Shows the call's messages so far (a join's `call.config`). */
  reset(lines, own) {
    fill(this.list);
    this.ids.clear();
    for (const line of lines || []) this.add(line, own);
  }

  add(line, own) {
    if (!line?.id || this.ids.has(line.id)) return;
    this.ids.add(line.id);
    const time = new Date(line.at);
    const hhmm = `${String(time.getHours()).padStart(2, '0')}:${String(time.getMinutes()).padStart(2, '0')}`;
    const who = t(`call.role_${line.role}`, { name: line.from_name });
    this.list.append(h('li', { class: line.from === own ? 'chat-line own' : 'chat-line', dataset: { chatId: String(line.id) } },
      h('span', { class: 'chat-who' }, who), ' ', h('time', { class: 'chat-time' }, hhmm),
      h('p', { class: 'chat-text' }, line.text)));
    this.list.scrollTop = this.list.scrollHeight;
  }

  say(text) {
    this.message.textContent = text;
  }
}

class CallPanel {
  constructor(container, { caseView, user, live, getLocalStream }) {
    this.view = caseView;
    this.caseId = caseView.id;
    this.user = user;
    this.live = live;
    this.getAgentStream = user.role === 'agent' && getLocalStream ? getLocalStream : null;

    this.want = false;          // we mean to be in the call
    this.phase = 'idle';        // idle | joining | connected | reconnecting | failed | ended | refused
    this.pc = null;
    this.ownId = null;
    this.iceServers = [];
    this.offered = false;       // our first offer went out on this peer connection
    this.resuming = false;      // a call.join after a dropped socket, keeping the peer connection
    this.droppedAt = 0;
    this.pendingCandidates = [];
    this.offerAfterAnswer = null; // options of an own offer to send once the relay's is answered
    this.chain = Promise.resolve(); // signaling steps, one at a time, in arrival order
    this.local = null;          // { stream, source } what we send; source: the agent's camera stream
    this.mediaReady = null;
    this.micOff = false;
    this.cameraOff = false;
    this.audioOnly = false;     // 只用语音: no video either way
    this.cameraOffBeforeAudioOnly = false;
    this.documentMode = false;  // 材料展示: on by hand, or for a while after a capture
    this.documentTimer = null;
    this.tiles = new Map();
    this.screens = new Map();   // participant id ('self' for ours) → Screen
    this.screenTx = null;       // the transceiver our screen goes out on while we share
    this.screenTrackOf = new Map(); // participant id → the relay's id of its screen track
    this.trackOwner = new Map(); // remote track id → participant id (for stats)
    this.videoTrackOf = new Map(); // participant id → the relay's id of its video track
    this.sentSizes = new Map();    // relay track id → "w×h" last told the relay
    this.sizeTimer = null;
    // The size each remote video is shown at goes to the relay (`call.video_size`), which then
    // sends a simulcast publisher's smallest layer that fills it.
    this.sizes = typeof ResizeObserver === 'function' ? new ResizeObserver(() => this.reportSizesSoon()) : null;
    this.timers = [];

    this.grid = h('div', { class: 'remote-videos call-grid' });
    this.reconnecting = h('div', { class: 'call-reconnecting', role: 'status', hidden: true }, t('call.reconnecting'));
    this.message = h('div', { class: 'call-message', role: 'status' });
    // What the link watch did by itself, in plain words (only while it lasts).
    this.linkNotice = h('div', { class: 'notice info call-link-notice', role: 'status', hidden: true });
    this.linkLevel = 'good';
    this.note = h('p', { class: 'muted call-note' });
    this.micButton = h('button', { type: 'button', id: 'call-mute', class: 'small', onclick: () => this.toggleMic() });
    this.cameraButton = h('button', { type: 'button', id: 'call-camera', class: 'small', onclick: () => this.toggleCamera() });
    this.switchButton = h('button', { type: 'button', id: 'call-switch', class: 'small', onclick: () => this.switchCamera() }, t('call.switch_camera'));
    this.documentButton = h('button', { type: 'button', id: 'call-document', class: 'small', onclick: () => this.setDocumentMode(!this.documentMode) });
    this.audioOnlyButton = h('button', { type: 'button', id: 'call-audio-only', class: 'small', onclick: () => this.toggleAudioOnly() });
    this.screenButton = h('button', { type: 'button', id: 'call-screen', class: 'small', onclick: () => (this.screenTx ? this.stopScreenShare() : this.shareScreen()) });
    this.screenButton.hidden = !navigator.mediaDevices?.getDisplayMedia; // phones cannot share a screen
    this.screenArea = h('div', { class: 'call-screens' });
    // 标注: the approver holding the case draws on a frozen frame or a material; all see it.
    this.board = new AnnotationBoard({
      caseId: this.caseId, live, nameOf: (id) => this.nameOf(id),
      mayDraw: () => this.user.role === 'approver' && this.view.approver?.id === this.user.id,
    });
    this.soundButton = h('button', { type: 'button', id: 'call-sound', class: 'small primary', hidden: true, onclick: () => this.enableSound() }, t('call.enable_sound'));
    this.hangUpButton = h('button', { type: 'button', id: 'call-hang-up', class: 'small danger', onclick: () => this.hangUp() }, t('call.hang_up'));
    this.retryButton = h('button', { type: 'button', id: 'call-retry', class: 'small primary', hidden: true, onclick: () => this.retry() }, t('call.retry'));
    // Recording needs everyone's consent (the server records it as an audit event).
    this.consented = false;
    this.consentButton = h('button', { type: 'button', id: 'call-consent', class: 'small', onclick: () => this.toggleConsent() });
    this.recordingBadge = h('span', { class: 'badge recording', id: 'call-recording', hidden: true }, t('call.recording'));
    this.controls = h('div', { class: 'call-controls', hidden: true }, this.micButton, this.cameraButton, this.audioOnlyButton, this.switchButton, this.documentButton, this.screenButton, this.consentButton, this.soundButton, this.recordingBadge, this.hangUpButton);
    this.chat = new ChatBox((text) => this.live.send({ type: 'call.chat', case_id: this.caseId, text }));
    this.area = h('div', { class: 'call-area', dataset: { callArea: String(caseView.id), callState: 'idle' } },
      h('div', { class: 'call-stage' }, this.board.el, this.screenArea, this.grid, this.reconnecting),
      this.note, this.message, this.linkNotice, h('div', { class: 'row call-retry-row' }, this.retryButton), this.controls, this.chat.el);
    fill(container, this.area);
    this.renderControls();

    this.unsubscribe = live.subscribe((msg) => this.onLive(msg));
    this.update(caseView);
  }

  // ---- the case and the panel's life ----

  update(view) {
    this.view = view;
    for (const tile of this.tiles.values()) tile.setName(this.nameOf(tile.id));
    // The server says whether the call is open: in the call, and after the decision until the
    // people hang up or its time limit passes. A closed room stays closed until the case is queued
    // again (a transfer).
    if (view.state === 'waiting') this.roomClosed = false;
    const should = callOpen(view) && isParticipant(view, this.user) && !this.roomClosed && !this.hungUp;
    if (should && !this.want && this.phase !== 'refused') this.start();
    else if (!should && this.want) this.stop(view.state === 'waiting' ? 'idle' : 'ended');
    this.renderNote();
  }

  dispose() {
    this.disposed = true;
    this.unsubscribe();
    if (this.want) this.stop('idle');
    this.stopLocal();
  }

  setPhase(phase) {
    this.phase = phase;
    this.area.dataset.callState = phase;
    this.reconnecting.hidden = phase !== 'reconnecting';
    this.controls.hidden = !['joining', 'connected', 'reconnecting'].includes(phase);
    this.chat.el.hidden = this.controls.hidden;
    this.renderNote();
  }

  renderNote() {
    let key = '';
    if (!isParticipant(this.view, this.user) && callOpen(this.view)) key = 'call.not_participant';
    else if (this.view.state === 'waiting') key = 'call.idle';
    else if (this.phase === 'joining') key = 'call.joining';
    else if (this.phase === 'ended' || this.roomClosed || this.hungUp || !callOpen(this.view)) key = 'call.ended';
    this.note.textContent = key ? t(key) : '';
    this.note.hidden = !key;
  }

  say(kind, text) {
    fill(this.message, text ? h('div', { class: `notice ${kind}` }, text) : null);
  }

  start() {
    this.want = true;
    this.say(null, '');
    this.retryButton.hidden = true;
    if (typeof RTCPeerConnection === 'undefined') {
      this.fail(t('call.webrtc_unavailable'));
      return;
    }
    this.setPhase('joining');
    if (!this.mediaReady) this.mediaReady = this.prepareMedia();
    this.join();
  }

  /** The hang-up button: this page leaves the call and does not join it again by itself (the
   * retry button joins again while the call is open). */
  hangUp() {
    this.hungUp = true;
    this.stop('ended');
    this.retryButton.hidden = !callOpen(this.view);
  }

  /** Leaves the call (the case left the call states, or the page is left). */
  stop(phase) {
    if (this.ownId || this.pc) this.live.send({ type: 'call.leave', case_id: this.caseId });
    this.want = false;
    this.closePeer();
    this.stopLocal();
    this.retryButton.hidden = true;
    if (phase === 'ended') this.say(null, '');
    this.setPhase(phase);
  }

  fail(text) {
    this.closePeer();
    this.say('error', text);
    this.retryButton.hidden = false;
    this.setPhase('failed');
  }

  /** The retry button: a fresh peer connection and a fresh join. */
  retry() {
    this.hungUp = false;
    this.freshJoins = 0;
    this.retryButton.hidden = true;
    this.say(null, '');
    if (this.phase === 'refused') this.phase = 'idle';
    const wasIn = this.want;
    this.closePeer();
    if (wasIn) this.live.send({ type: 'call.leave', case_id: this.caseId });
    this.want = false;
    // A fresh join replaces any place the relay still holds (docs/signaling.md): no wait.
    if (!this.disposed) this.update(this.view);
  }

  join() {
    // When the socket is not open (the page is loading, or it dropped) the join goes out when it
    // opens (`live.connected`).
    // `resume`: the peer connection is still up (only the socket dropped), keep its place; else
    // the server gives up any place still held and joins afresh.
    this.joinPending = !this.live.send({ type: 'call.join', case_id: this.caseId, resume: this.resuming });
  }

  closePeer() {
    for (const timer of this.timers) clearTimeout(timer);
    this.timers = [];
    clearInterval(this.linkWatch);
    this.linkWatch = null;
    this.setLinkLevel('good');
    if (this.pc) {
      this.pc.onicecandidate = null;
      this.pc.ontrack = null;
      this.pc.onconnectionstatechange = null;
      this.pc.close();
    }
    this.pc = null;
    this.ownId = null;
    this.offered = false;
    this.resuming = false;
    this.pendingCandidates = [];
    this.offerAfterAnswer = null;
    if (this.screenTx) {
      this.screenTx.sender.track?.stop();
      this.screenTx = null;
    }
    for (const owner of [...this.screens.keys()]) this.removeScreen(owner);
    this.trackOwner.clear();
    this.videoTrackOf.clear();
    this.sentSizes.clear();
    clearTimeout(this.sizeTimer);
    this.sizes?.disconnect();
    for (const [id, tile] of this.tiles) {
      if (tile.self) continue;
      tile.el.remove();
      this.tiles.delete(id);
    }
    this.soundButton.hidden = true;
    this.renderControls();
  }

  // ---- local media ----

  async prepareMedia() {
    let stream = null;
    let source = null;
    if (this.getAgentStream) {
      // The camera card starts the camera as the page opens; it may not be ready yet.
      const until = Date.now() + AGENT_CAMERA_WAIT_MS;
      while (!(source = this.getAgentStream()) && Date.now() < until) await new Promise((r) => setTimeout(r, 100));
      if (source) stream = source.clone();
      else this.say('info', t('call.receive_only_agent'));
      this.watchAgentCamera();
    } else if (navigator.mediaDevices?.getUserMedia) {
      try {
        stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: { width: { ideal: 1280 }, height: { ideal: 720 } } });
      } catch (err) {
        if (err?.name === 'NotFoundError') {
          // One of the two may be there: a microphone alone still lets the others hear us.
          for (const constraints of [{ audio: true }, { video: true }]) {
            try { stream = await navigator.mediaDevices.getUserMedia(constraints); break; } catch { /* next */ }
          }
        }
        this.say('info', stream ? t('call.partial_media') : callMediaErrorText(err));
      }
    } else {
      this.say('info', t('call.media_unsupported'));
    }
    if (!this.want) { stream?.getTracks().forEach((tr) => tr.stop()); return; }
    this.local = stream ? { stream, source } : null;
    this.applyMuteToTracks();
    const self = this.selfTile();
    self.attach(stream, () => {});
    this.renderControls();
  }

  /** The agent changed camera or microphone in the camera card: send the new devices. */
  watchAgentCamera() {
    clearInterval(this.agentWatch);
    this.agentWatch = setInterval(() => {
      if (!this.want || !this.local) return;
      const source = this.getAgentStream();
      if (!source || source === this.local.source) return;
      const old = this.local.stream;
      const stream = source.clone();
      this.local = { stream, source };
      this.applyMuteToTracks();
      for (const kind of ['audio', 'video']) {
        const sender = this.senderOf(kind);
        const track = stream.getTracks().find((tr) => tr.kind === kind) || null;
        sender?.replaceTrack(track).catch(() => {});
      }
      if (this.documentMode) this.applyVideoSending();
      old.getTracks().forEach((tr) => tr.stop());
      this.selfTile().attach(stream, () => {});
    }, 1000);
  }

  stopLocal() {
    clearInterval(this.agentWatch);
    this.agentWatch = null;
    this.local?.stream.getTracks().forEach((tr) => tr.stop());
    this.local = null;
    this.mediaReady = null;
    const self = this.tiles.get('self');
    if (self) { self.el.remove(); this.tiles.delete('self'); }
  }

  selfTile() {
    let tile = this.tiles.get('self');
    if (!tile) {
      tile = new Tile('self', { self: true });
      tile.setName(t('call.you'));
      this.tiles.set('self', tile);
      this.grid.prepend(tile.el);
    }
    return tile;
  }

  localTrack(kind) {
    return this.local?.stream.getTracks().find((tr) => tr.kind === kind) || null;
  }

  senderOf(kind) {
    return (kind === 'audio' ? this.audioTx : this.videoTx)?.sender || null;
  }

  applyMuteToTracks() {
    const audio = this.localTrack('audio');
    const video = this.localTrack('video');
    if (audio) audio.enabled = !this.micOff;
    if (video) video.enabled = !this.cameraOff;
    const self = this.tiles.get('self');
    if (self) { self.setMuted('audio', this.micOff); self.setMuted('video', this.cameraOff); }
    // A disabled track still sends black frames (~30 kbit/s): with the camera off, nothing.
    this.applyVideoSending();
  }

  toggleConsent() {
    this.consented = !this.consented;
    this.live.send({ type: 'call.consent', case_id: this.caseId, consent: this.consented });
    this.renderControls();
  }

  renderControls() {
    this.consentButton.textContent = t(this.consented ? 'call.consent_withdraw' : 'call.consent_give');
    this.consentButton.setAttribute('aria-pressed', String(this.consented));
    this.micButton.textContent = t(this.micOff ? 'call.unmute' : 'call.mute');
    this.micButton.setAttribute('aria-pressed', String(this.micOff));
    this.micButton.disabled = !this.localTrack('audio');
    this.cameraButton.textContent = t(this.cameraOff ? 'call.camera_on' : 'call.camera_off');
    this.cameraButton.setAttribute('aria-pressed', String(this.cameraOff));
    this.cameraButton.disabled = !this.localTrack('video');
    this.switchButton.disabled = !this.localTrack('video');
    this.audioOnlyButton.textContent = t(this.audioOnly ? 'call.audio_only_end' : 'call.audio_only');
    this.audioOnlyButton.setAttribute('aria-pressed', String(this.audioOnly));
    this.area.dataset.audioOnly = String(this.audioOnly);
    this.documentButton.textContent = t(this.documentMode ? 'call.document_off' : 'call.document_on');
    this.documentButton.setAttribute('aria-pressed', String(this.documentMode));
    this.documentButton.disabled = !this.localTrack('video');
    this.area.dataset.documentMode = String(this.documentMode);
    this.screenButton.textContent = t(this.screenTx ? 'call.screen_share_end' : 'call.screen_share');
    this.screenButton.setAttribute('aria-pressed', String(!!this.screenTx));
    this.screenButton.disabled = !this.pc || !this.offered;
  }

  // ---- screen share (同屏) ----

  /** Shares a screen or window beside the camera: a transceiver of its own (addTrack would reuse
   * the unused sender of a track the relay sends us), sent for legibility; the relay is told which
   * track it is before the offer that carries it, and records the share as a case event. */
  async shareScreen() {
    if (this.screenTx || !this.pc) return;
    let stream;
    try {
      stream = await navigator.mediaDevices.getDisplayMedia({ video: { frameRate: { max: SCREEN_FPS } }, audio: false });
    } catch {
      this.say('info', t('call.screen_refused'));
      return;
    }
    const track = stream.getVideoTracks()[0];
    const pc = this.pc;
    if (!track || !pc || !this.want) { stream.getTracks().forEach((tr) => tr.stop()); return; }
    if ('contentHint' in track) track.contentHint = 'detail';
    track.addEventListener('ended', () => this.stopScreenShare()); // the browser's own "stop sharing"
    this.live.send({ type: 'call.screen_share', case_id: this.caseId, track: track.id });
    this.screenTx = pc.addTransceiver(track, { direction: 'sendonly', streams: [stream] });
    preferVp8(this.screenTx);
    this.showScreen('self', stream);
    this.renderControls();
    this.step(() => this.ownOffer({}));
  }

  /** Stops our screen share: the track ends, the relay is told, and our offer drops it. */
  stopScreenShare() {
    const tx = this.screenTx;
    if (!tx) return;
    this.screenTx = null;
    tx.sender.track?.stop();
    this.removeScreen('self');
    this.renderControls();
    if (!this.pc) return;
    this.live.send({ type: 'call.screen_share', case_id: this.caseId, track: null });
    try { this.pc.removeTrack(tx.sender); } catch { /* the connection closed meanwhile */ }
    this.step(() => this.ownOffer({}));
  }

  /** Encoder settings for the screen once negotiated: resolution over frame rate. */
  async applyScreenParameters() {
    const sender = this.screenTx?.sender;
    if (!sender?.track) return;
    const params = sender.getParameters();
    if (!params.encodings?.length) return;
    params.degradationPreference = 'maintain-resolution';
    for (const encoding of params.encodings) encoding.maxFramerate = SCREEN_FPS;
    try { await sender.setParameters(params); } catch { /* applied again after the next answer */ }
  }

  showScreen(owner, stream) {
    let screen = this.screens.get(owner);
    if (screen && screen.video.srcObject !== stream) { this.removeScreen(owner); screen = null; }
    if (!screen) {
      screen = new Screen(owner, stream);
      this.markTile(screen.el, owner === 'self');
      this.screens.set(owner, screen);
      this.screenArea.append(screen.el);
    }
    screen.setName(owner === 'self' ? t('call.screen_own') : t('call.screen_of', { name: this.nameOf(owner) }));
    this.area.dataset.screens = String(this.screens.size);
  }

  removeScreen(owner) {
    const screen = this.screens.get(owner);
    if (!screen) return;
    this.sizes?.unobserve(screen.video);
    screen.video.srcObject = null;
    screen.el.remove();
    this.screens.delete(owner);
    this.screenTrackOf.delete(owner);
    this.area.dataset.screens = String(this.screens.size);
  }

  /** Switches document mode by hand (it then stays until switched off). */
  setDocumentMode(on) {
    clearTimeout(this.documentTimer);
    this.documentTimer = null;
    this.documentMode = on;
    this.applyVideoSending();
    this.renderControls();
  }

  /** A capture was taken: the agent is showing a document, so send it legibly for a while. */
  showDocument() {
    if (this.documentMode && !this.documentTimer) return; // on by hand: leave it so
    this.documentMode = true;
    clearTimeout(this.documentTimer);
    this.documentTimer = setTimeout(() => {
      this.documentTimer = null;
      this.documentMode = false;
      this.applyVideoSending();
      this.renderControls();
    }, DOCUMENT_AFTER_CAPTURE_MS);
    this.applyVideoSending();
    this.renderControls();
  }

  /** The camera's sending parameters: nothing while the camera is off; document mode (detail,
   * resolution kept, DOCUMENT_FPS, the full-size layer alone), or the link watch's lower frame
   * rate on a weak uplink, or the browser's own balance. Applied again after each negotiation and
   * camera change, since a new sender or track starts from the defaults. */
  async applyVideoSending() {
    const track = this.localTrack('video');
    if (track && 'contentHint' in track) track.contentHint = this.documentMode ? 'detail' : '';
    const sender = this.senderOf('video');
    if (!sender?.track) return;
    const params = sender.getParameters();
    if (!params.encodings?.length) return; // not negotiated yet: applied after the answer
    params.degradationPreference = this.documentMode ? 'maintain-resolution' : 'balanced';
    const fps = this.documentMode ? DOCUMENT_FPS : (this.linkLevel === 'low' ? LINK_LOW_FPS : null);
    // A document is only worth the full size: the lower layers pause, so every receiver gets the
    // full-size layer, at a few frames a second and as sharp as the link allows.
    const top = params.encodings.length - 1;
    params.encodings.forEach((encoding, i) => {
      encoding.active = !this.cameraOff && (!this.documentMode || i === top);
      if (fps) encoding.maxFramerate = fps;
      else delete encoding.maxFramerate;
    });
    try { await sender.setParameters(params); } catch { /* a renegotiation raced it: applied again after it */ }
  }

  toggleMic() {
    this.micOff = !this.micOff;
    this.applyMuteToTracks();
    this.live.send({ type: 'call.mute', case_id: this.caseId, kind: 'audio', muted: this.micOff });
    this.renderControls();
  }

  toggleCamera() {
    this.linkStoppedCamera = false; // the user's choice from now on
    this.setCameraOff(!this.cameraOff);
  }

  setCameraOff(off) {
    this.cameraOff = off;
    this.applyMuteToTracks();
    this.live.send({ type: 'call.mute', case_id: this.caseId, kind: 'video', muted: this.cameraOff });
    this.renderControls();
  }

  /** The next camera (front/back on a phone): a new track in place of the old, no renegotiation. */
  async switchCamera() {
    const current = this.localTrack('video');
    if (!current) return;
    this.switchButton.disabled = true;
    try {
      const cameras = (await navigator.mediaDevices.enumerateDevices()).filter((d) => d.kind === 'videoinput');
      if (cameras.length < 2) { this.say('info', t('call.one_camera')); return; }
      const now = current.getSettings().deviceId;
      const next = cameras[(cameras.findIndex((c) => c.deviceId === now) + 1) % cameras.length];
      const fresh = await navigator.mediaDevices.getUserMedia({ video: { deviceId: { exact: next.deviceId }, width: { ideal: 1280 }, height: { ideal: 720 } } });
      const track = fresh.getVideoTracks()[0];
      track.enabled = !this.cameraOff;
      await this.senderOf('video')?.replaceTrack(track);
      this.local.stream.removeTrack(current);
      this.local.stream.addTrack(track);
      current.stop();
      if (this.documentMode) this.applyVideoSending();
      this.selfTile().attach(new MediaStream(this.local.stream.getTracks()), () => {});
      this.say(null, '');
    } catch (err) {
      this.say('error', callMediaErrorText(err));
    } finally {
      this.renderControls();
    }
  }

  enableSound() {
    this.soundButton.hidden = true;
    for (const tile of this.tiles.values()) {
      if (tile.self) continue;
      tile.video.muted = false;
      tile.video.play().catch(() => {});
    }
  }

  // ---- signaling ----

  onLive(msg) {
    if (msg.type === 'live.disconnected') {
      if (this.want && this.pc) {
        this.droppedAt = Date.now();
        this.setPhase('reconnecting');
      }
      return;
    }
    if (msg.type === 'live.connected') {
      if (!this.want) return;
      if (!msg.again) {
        if (this.joinPending) this.join();
        return;
      }
      if (this.pc && this.offered && Date.now() - this.droppedAt < RESUME_WINDOW_MS) {
        this.resuming = true;
        this.join();
      } else {
        this.rejoinFresh();
      }
      return;
    }
    if (!msg.type?.startsWith('call.') || msg.case_id !== this.caseId || !this.want) return;
    switch (msg.type) {
      case 'call.config': this.onConfig(msg); break;
      case 'call.joined': this.onJoined(msg); break;
      case 'call.offer': this.step(() => this.answerOffer(msg.sdp)); break;
      case 'call.answer': this.step(() => this.takeAnswer(msg.sdp)); break;
      case 'call.candidate': this.step(() => this.addRemoteCandidate(msg.candidate)); break;
      case 'call.participant_joined': this.tileOf(msg.participant_id); break;
      case 'call.participant_left': this.removeTile(msg.participant_id); this.removeScreen(msg.participant_id); break;
      case 'call.track_published': this.onTrackPublished(msg); break;
      case 'call.track_unpublished':
        if (this.videoTrackOf.get(msg.participant_id) === msg.track_id) this.videoTrackOf.delete(msg.participant_id);
        if (this.screenTrackOf.get(msg.participant_id) === msg.track_id) this.removeScreen(msg.participant_id);
        this.tiles.get(msg.participant_id)?.refresh();
        break;
      case 'call.track_muted': this.tileOf(msg.participant_id).setMuted(msg.kind, !!msg.muted); break;
      case 'call.speaking': this.tileOf(msg.participant_id).setSpeaking(!!msg.speaking); break;
      case 'call.connection_quality': this.tileOf(msg.participant_id).setQuality(msg.quality?.grade); break;
      case 'call.recording': this.recordingBadge.hidden = !msg.recording; break;
      case 'call.chat': this.chat.add(msg, this.user.id); break;
      case 'call.annotation': this.board.show(msg.annotation).catch((err) => this.board.failed(err)); break;
      case 'call.pointer': this.board.point(msg); break;
      case 'call.removed': this.onRemoved(msg.reason); break;
      case 'call.error': this.onError(msg); break;
      default: break;
    }
  }

  /** Runs signaling steps one after another, so that a candidate never overtakes its offer. */
  step(work) {
    this.chain = this.chain.then(work).catch((err) => {
      console.warn('call signaling step failed', err);
      if (!this.want || !this.pc) return;
      // E.g. a resume offered to a relay that restarted (its new connection answers with another
      // certificate): one fresh join, then the message.
      this.freshJoins = (this.freshJoins || 0) + 1;
      if (this.freshJoins > 1) this.fail(t('call.negotiation_failed'));
      else this.rejoinFresh();
    });
    return this.chain;
  }

  /** The place is gone or the connection cannot be resumed: leave and join with a new connection. */
  rejoinFresh() {
    this.closePeer();
    this.live.send({ type: 'call.leave', case_id: this.caseId });
    this.setPhase('joining');
    // A join without `resume` gets a new place for the new peer connection: the relay replaces
    // the one it still holds in the same turn.
    if (this.want && !this.pc) this.join();
  }

  onConfig(msg) {
    this.iceServers = Array.isArray(msg.ice_servers) ? msg.ice_servers : [];
    this.ownId = msg.participant_id || this.ownId;
    // Whoever joins a recorded call sees so at once, and whether they have consented.
    this.recordingBadge.hidden = !msg.recording;
    if (typeof msg.consented === 'boolean') this.consented = msg.consented;
    this.chat.reset(msg.chat, this.user.id);
    this.watermarkVideo = !!msg.watermark;
    for (const tile of this.tiles.values()) this.markTile(tile.el, tile.self);
    for (const screen of this.screens.values()) this.markTile(screen.el, screen.owner === 'self');
    this.renderControls();
    if (this.pc && this.resuming) {
      try { this.pc.setConfiguration({ ...this.pc.getConfiguration(), iceServers: this.iceServers }); } catch { /* keep the old servers */ }
      return;
    }
    this.closePeer();
    this.ownId = msg.participant_id || null;
    try {
      this.createPeer();
    } catch (err) {
      console.warn('RTCPeerConnection', err);
      this.fail(t('call.webrtc_unavailable'));
    }
  }

  createPeer() {
    const pc = new RTCPeerConnection({ iceServers: this.iceServers, bundlePolicy: 'max-bundle' });
    this.pc = pc;
    pc.onicecandidate = (e) => {
      if (!e.candidate || !e.candidate.candidate) return;
      const { candidate, sdpMid, sdpMLineIndex } = e.candidate;
      this.live.send({ type: 'call.candidate', case_id: this.caseId, candidate: { candidate, sdpMid, sdpMLineIndex } });
    };
    pc.ontrack = (e) => {
      const stream = e.streams[0];
      if (!stream) return;
      if (stream.id.endsWith(SCREEN_STREAM_SUFFIX)) {
        // A shared screen comes in a stream of its own: <participant>~screen.
        const owner = stream.id.slice(0, -SCREEN_STREAM_SUFFIX.length);
        if (!this.tiles.has(owner) || owner === this.ownId) return;
        this.trackOwner.set(e.track.id, owner);
        this.showScreen(owner, stream);
        const screen = this.screens.get(owner);
        this.sizes?.observe(screen.video);
        this.reportSizesSoon();
        e.track.addEventListener('ended', () => { if (this.screens.get(owner) === screen) this.removeScreen(owner); });
        return;
      }
      const participant = stream.id; // the publisher's participant id (user-<id>)
      // Only tracks of participants the relay announced (joined, participant_joined,
      // track_published come before the offer that carries their tracks): an m-section answered
      // without a stream of ours (e.g. a stale one after a relay restart) makes no tile.
      const tile = this.tiles.get(participant);
      if (!tile || tile.self) return;
      this.trackOwner.set(e.track.id, participant);
      tile.attach(stream, () => { this.soundButton.hidden = false; });
      tile.refresh();
      const refresh = () => tile.refresh();
      e.track.addEventListener('ended', refresh);
      e.track.addEventListener('unmute', refresh);
      stream.addEventListener('removetrack', refresh);
    };
    pc.onconnectionstatechange = () => {
      if (this.pc !== pc) return;
      const state = pc.connectionState;
      if (state === 'connected') {
        this.freshJoins = 0;
        this.watchLink();
        if (this.phase !== 'reconnecting') this.setPhase('connected');
        if (this.message.querySelector('.notice.error')) this.say(null, '');
        this.retryButton.hidden = true;
      } else if (state === 'failed' && this.phase !== 'reconnecting') {
        this.fail(t('call.ice_failed'));
      }
    };
  }

  onJoined(msg) {
    this.ownId = msg.participant_id || this.ownId;
    for (const other of msg.others || []) this.tileOf(other);
    this.sentSizes.clear(); // a new place on the relay (or a resumed one) hears them again
    this.reportSizesSoon();
    if (!this.pc) return;
    if (this.resuming && !msg.resumed) {
      // A new place (the relay restarted, or the grace period ran out): it needs a new
      // connection, since the old one's streams were set up with a relay that is gone.
      this.resuming = false;
      this.rejoinFresh();
      return;
    }
    if (this.resuming) {
      this.resuming = false;
      this.resendMutes(); // pressed while the socket was down, they never reached the relay
      this.setPhase(this.pc.connectionState === 'connected' ? 'connected' : 'joining');
      // Same peer connection, maybe a new network: restart ICE (after any relay offer).
      this.step(() => this.ownOffer({ iceRestart: true }));
      this.connectDeadline();
      return;
    }
    if (!this.offered) {
      this.step(() => this.firstOffer());
      this.connectDeadline();
    }
  }

  connectDeadline() {
    const pc = this.pc;
    this.timers.push(setTimeout(() => {
      if (this.pc !== pc || !this.want || pc.connectionState === 'connected') return;
      this.freshJoins = (this.freshJoins || 0) + 1;
      if (this.freshJoins > 1) this.fail(t('call.ice_failed'));
      else this.rejoinFresh();
    }, CONNECT_DEADLINE_MS));
  }

  async firstOffer() {
    await this.mediaReady;
    const pc = this.pc;
    if (!pc || !this.want || this.offered) return;
    const stream = this.local?.stream || null;
    const audio = this.localTrack('audio');
    const video = this.localTrack('video');
    // Always one audio and one video m-section: receive-only when we have nothing to send, so
    // that the offer names Opus and VP8 either way.
    this.audioTx = pc.addTransceiver(audio || 'audio', { direction: audio ? 'sendrecv' : 'recvonly', streams: stream ? [stream] : [] });
    this.videoTx = pc.addTransceiver(video || 'video', {
      direction: video ? 'sendrecv' : 'recvonly',
      streams: stream ? [stream] : [],
      sendEncodings: CAMERA_LAYERS.map((layer) => ({ ...layer })),
    });
    preferVp8(this.videoTx);
    preferRed(this.audioTx);
    this.offered = true;
    this.renderControls();
    await this.sendOffer({});
    this.resendMutes(); // a new place on the relay starts unmuted
  }

  onTrackPublished(msg) {
    const tile = this.tileOf(msg.participant_id);
    if (msg.kind !== 'video' || tile.self) return;
    if (msg.source === 'screen') {
      this.screenTrackOf.set(msg.participant_id, msg.track_id);
      this.reportSizesSoon();
      return;
    }
    this.videoTrackOf.set(msg.participant_id, msg.track_id);
    this.sizes?.observe(tile.video);
    this.reportSizesSoon();
  }

  /** Tells the relay, a moment after tiles settle, the size each remote video is shown at. */
  reportSizesSoon() {
    clearTimeout(this.sizeTimer);
    this.sizeTimer = setTimeout(() => this.reportSizes(), 300);
  }

  reportSizes() {
    if (!this.ownId) return; // not in the call: sizes go out after the join
    const scale = window.devicePixelRatio || 1;
    const shown = [...this.videoTrackOf].map(([participant, trackId]) => [this.tiles.get(participant)?.video, trackId])
      .concat([...this.screenTrackOf].map(([participant, trackId]) => [this.screens.get(participant)?.video, trackId]));
    for (const [video, trackId] of shown) {
      if (!video) continue;
      const width = Math.round(video.clientWidth * scale);
      const height = Math.round(video.clientHeight * scale);
      const size = `${width}x${height}`;
      if (this.sentSizes.get(trackId) === size) continue;
      if (this.live.send({ type: 'call.video_size', case_id: this.caseId, track_id: trackId, width, height })) {
        this.sentSizes.set(trackId, size);
      }
    }
  }

  /** Starts the link watch (once per connection): linkwatch.js decides, from the readings. */
  watchLink() {
    if (this.linkWatch) return;
    this.linkDecider = new LinkWatch();
    this.linkWatch = setInterval(() => this.readLink(), LINK_WATCH_MS);
  }

  async readLink() {
    const pc = this.pc;
    if (!pc || !this.localTrack('video')) return;
    if (pc.connectionState !== 'connected') {
      this.linkDecider.disconnected();
      return;
    }
    let bps = null;
    let rtt = 0;
    let loss = 0;
    (await pc.getStats()).forEach((s) => {
      if (s.type === 'candidate-pair' && s.nominated && s.availableOutgoingBitrate) {
        bps = s.availableOutgoingBitrate;
        rtt = Math.max(rtt, s.currentRoundTripTime || 0);
      }
      if (s.type === 'remote-inbound-rtp' && s.kind === 'audio') loss = Math.max(loss, s.fractionLost || 0);
    });
    if (bps === null || this.pc !== pc) return;
    const level = this.linkDecider.reading({ bps, rtt, loss }, Date.now());
    if (level) this.setLinkLevel(level);
  }

  /** good → the browser's own balance; low → LINK_LOW_FPS; audio → the camera is not sent
   * (as camera off, which the others see) and the panel says why, until the link recovers. A
   * camera the user turned off, or 只用语音 pressed by hand, is left as it is. */
  setLinkLevel(level) {
    if (level === this.linkLevel) return;
    const was = this.linkLevel;
    this.linkLevel = level;
    if (level === 'audio' && !this.audioOnly && !this.cameraOff) {
      this.linkStoppedCamera = true;
      this.setCameraOff(true);
    } else if (was === 'audio' && this.linkStoppedCamera) {
      this.linkStoppedCamera = false;
      this.setCameraOff(false);
    }
    this.linkNotice.textContent = level === 'audio' ? t('call.link_audio_only') : '';
    this.linkNotice.hidden = level !== 'audio';
    this.area.dataset.link = level;
    this.applyVideoSending();
  }

  /** 只用语音: on a link too weak for video, send and receive audio only (our camera goes off, and
   * the relay stops sending us the others' video); off again, both come back (video on a
   * keyframe). */
  toggleAudioOnly() {
    this.audioOnly = !this.audioOnly;
    if (this.audioOnly) {
      this.cameraOffBeforeAudioOnly = this.cameraOff;
      if (!this.cameraOff) this.toggleCamera();
    } else if (!this.cameraOffBeforeAudioOnly && this.cameraOff) {
      this.toggleCamera();
    }
    this.live.send({ type: 'call.receive_video', case_id: this.caseId, enabled: !this.audioOnly });
    for (const tile of this.tiles.values()) tile.setAudioOnly(this.audioOnly);
    this.renderControls();
  }

  resendMutes() {
    if (this.audioOnly) this.live.send({ type: 'call.receive_video', case_id: this.caseId, enabled: false });
    if (this.micOff) this.live.send({ type: 'call.mute', case_id: this.caseId, kind: 'audio', muted: true });
    if (this.cameraOff) this.live.send({ type: 'call.mute', case_id: this.caseId, kind: 'video', muted: true });
  }

  async sendOffer(options) {
    const pc = this.pc;
    const offer = await pc.createOffer(options);
    if (this.pc !== pc) return;
    await pc.setLocalDescription(offer);
    this.live.send({ type: 'call.offer', case_id: this.caseId, sdp: pc.localDescription.sdp });
  }

  /** An own offer after the first (ICE restart): only when no relay offer is being answered. */
  async ownOffer(options) {
    if (!this.pc || !this.offered) return;
    if (this.pc.signalingState !== 'stable') { this.offerAfterAnswer = options; return; }
    await this.sendOffer(options);
  }

  async answerOffer(sdp) {
    const pc = this.pc;
    if (!pc) return;
    // A relay offer that crossed our own (refused with negotiation_in_progress): ours is dropped
    // (Chromium rolls back implicitly) and sent again after this answer.
    if (pc.signalingState === 'have-local-offer') {
      this.offerAfterAnswer = this.offerAfterAnswer || {};
      await pc.setLocalDescription({ type: 'rollback' });
    }
    await pc.setRemoteDescription({ type: 'offer', sdp });
    await this.flushCandidates();
    const answer = await pc.createAnswer();
    if (this.pc !== pc) return;
    await pc.setLocalDescription(answer);
    this.live.send({ type: 'call.answer', case_id: this.caseId, sdp: pc.localDescription.sdp });
    if (this.offerAfterAnswer) {
      const options = this.offerAfterAnswer;
      this.offerAfterAnswer = null;
      await this.sendOffer(options);
    }
  }

  async takeAnswer(sdp) {
    const pc = this.pc;
    if (!pc || pc.signalingState !== 'have-local-offer') return;
    await pc.setRemoteDescription({ type: 'answer', sdp });
    await this.flushCandidates();
    await this.applyVideoSending(); // camera off, document mode, the link watch: set after each negotiation
    if (this.screenTx) await this.applyScreenParameters();
  }

  async addRemoteCandidate(candidate) {
    if (!candidate?.candidate) return; // end of candidates
    const init = { candidate: candidate.candidate, sdpMLineIndex: candidate.sdpMLineIndex ?? 0 };
    if (candidate.sdpMid) init.sdpMid = candidate.sdpMid;
    if (!this.pc?.remoteDescription) { this.pendingCandidates.push(init); return; }
    await this.pc.addIceCandidate(init).catch((err) => console.warn('remote candidate refused', err));
  }

  async flushCandidates() {
    const list = this.pendingCandidates;
    this.pendingCandidates = [];
    for (const init of list) await this.pc?.addIceCandidate(init).catch((err) => console.warn('remote candidate refused', err));
  }

  onRemoved(reason) {
    if (reason === 'room_closed') {
      // Said once, by the panel's note ('call.ended').
      this.roomClosed = true;
      this.stop('ended');
      return;
    }
    this.closePeer();
    this.say('error', t(`call.removed.${KNOWN_REMOVALS.includes(reason) ? reason : 'other'}`));
    this.retryButton.hidden = false;
    this.setPhase('failed');
  }

  onError(msg) {
    const code = msg.code;
    if (code === 'negotiation_in_progress') {
      // Answer the relay first, then offer again (docs/relay.md: no glare).
      this.step(async () => {
        if (!this.pc) return;
        if (this.pc.signalingState === 'have-local-offer') {
          await this.pc.setLocalDescription({ type: 'rollback' });
          this.offerAfterAnswer = this.offerAfterAnswer || {};
        } else if (this.pc.signalingState === 'stable' && !this.offerAfterAnswer) {
          this.offerAfterAnswer = {};
        }
      });
      return;
    }
    if (code === 'not_joined' && !this.pc) return; // a leave that crossed the end of the call
    if (code === 'candidate_before_offer' || code === 'bad_candidate') return; // ICE copes without it
    // A size report for a track the relay has not offered yet (a slow camera prompt): it is sent
    // again when the tile shows the track, so there is nothing to tell the user.
    if (code === 'unknown_track') return;
    const text = t(`call.err.${KNOWN_ERRORS.includes(code) ? code : 'internal'}`);
    if (code === 'chat_too_fast') { this.chat.say(text); return; }
    if (code === 'call_refused' || code === 'room_full') {
      this.closePeer();
      this.say('error', text);
      this.retryButton.hidden = false;
      this.setPhase(code === 'call_refused' ? 'refused' : 'failed');
      return;
    }
    if (code === 'not_joined') { this.rejoinFresh(); return; }
    this.say('error', text);
    this.retryButton.hidden = false;
  }

  // ---- tiles ----

  nameOf(participantId) {
    if (participantId === 'self') return t('call.you');
    const id = Number(String(participantId).replace(/^user-/, ''));
    const v = this.view;
    if (v.agent?.id === id) return t('call.role_agent', { name: v.agent.display_name });
    if (v.approver?.id === id) return t('call.role_approver', { name: v.approver.display_name });
    const expert = (v.experts || []).find((e) => e.id === id);
    if (expert) return t('call.role_expert', { name: expert.display_name });
    if ((v.residents || []).some((r) => r.id === id)) return t('call.role_resident');
    return t('call.someone');
  }

  /** The viewer's name and the time over someone else's picture, when the server asks for it. */
  markTile(el, own) {
    if (this.watermarkVideo && !own) watermark(el); else unwatermark(el);
  }

  tileOf(participantId) {
    if (!participantId || participantId === this.ownId) return this.selfTile();
    let tile = this.tiles.get(participantId);
    if (!tile) {
      tile = new Tile(participantId);
      tile.setName(this.nameOf(participantId));
      tile.setAudioOnly(this.audioOnly);
      this.markTile(tile.el, false);
      if (this.user.role === 'approver') {
        const freeze = h('button', { type: 'button', class: 'small tile-annotate', dataset: { annotate: participantId } }, t('annotate.freeze'));
        freeze.addEventListener('click', () => busy(freeze, this.board.message, () => this.board.freeze(tile.video, participantId)));
        tile.el.append(freeze);
      }
      this.tiles.set(participantId, tile);
      this.grid.append(tile.el);
    }
    return tile;
  }

  removeTile(participantId) {
    const tile = this.tiles.get(participantId);
    if (!tile || tile.self) return;
    this.sizes?.unobserve(tile.video);
    this.videoTrackOf.delete(participantId);
    tile.video.srcObject = null;
    tile.el.remove();
    this.tiles.delete(participantId);
  }

  /** Per remote participant: video frames decoded and audio samples received so far (tests). */
  async stats() {
    const out = {};
    if (!this.pc) return out;
    const report = await this.pc.getStats();
    report.forEach((s) => {
      if (s.type !== 'inbound-rtp') return;
      const who = this.trackOwner.get(s.trackIdentifier) || s.trackIdentifier || '?';
      out[who] = out[who] || { framesDecoded: 0, totalSamplesReceived: 0 };
      if (s.kind === 'video') out[who].framesDecoded += s.framesDecoded || 0;
      if (s.kind === 'audio') out[who].totalSamplesReceived += s.totalSamplesReceived || 0;
    });
    return out;
  }
}

/**
 * Opus RED first: the browser then sends each audio packet with a copy of the one before, so a
 * listener who loses one plays the copy instead of a gap (at about twice the audio bitrate; the
 * relay gives listeners that did not take RED the newest frame alone).
 */
function preferRed(transceiver) {
  try {
    const codecs = RTCRtpReceiver.getCapabilities?.('audio')?.codecs || [];
    const red = codecs.filter((c) => /^audio\/red$/i.test(c.mimeType));
    const opus = codecs.filter((c) => /^audio\/opus$/i.test(c.mimeType));
    if (red.length && opus.length) transceiver.setCodecPreferences([...red, ...opus]);
  } catch { /* the browser's default order then: plain Opus */ }
}

/** The relay forwards VP8 only: put it first (and drop the rest) where the browser lets us. */
function preferVp8(transceiver) {
  try {
    const codecs = RTCRtpReceiver.getCapabilities?.('video')?.codecs || [];
    const vp8 = codecs.filter((c) => /^video\/(VP8|rtx)$/i.test(c.mimeType));
    if (vp8.some((c) => /VP8/i.test(c.mimeType))) transceiver.setCodecPreferences(vp8);
  } catch { /* the browser's default order then; the relay picks VP8 from it */ }
}
