// The camera and microphone at a service point: preview with device choice, plain messages when
// permission is refused or there is no device, and capturing a document at the camera's full
// resolution. The call work will take the same stream (`CameraPanel.stream`) into the call.
import { h, fill, notice } from './core.js';
import { t } from './i18n.js';

/** An error whose message is meant for the person at the screen. */
function userError(message) {
  return Object.assign(new Error(message), { userMessage: message });
}

/** The message for a getUserMedia failure, in plain words. */
export function mediaErrorText(err) {
  switch (err?.name) {
    case 'NotAllowedError':
    case 'SecurityError':
    case 'PermissionDeniedError':
      return t('media.denied');
    case 'NotFoundError':
    case 'DevicesNotFoundError':
    case 'OverconstrainedError':
      return t('media.none');
    case 'NotReadableError':
    case 'TrackStartError':
    case 'AbortError':
      return t('media.busy');
    default:
      return t('media.failed');
  }
}

/** The camera panel: device choice, preview, and `capture()` of a document photo. */
export class CameraPanel {
  constructor() {
    this.stream = null;
    this.video = h('video', { autoplay: true, muted: true, playsinline: true, class: 'preview' });
    this.video.muted = true;
    // Device names come from the system, not from us: marked so the language checks skip them.
    this.cameraSelect = h('select', { translate: 'no', 'aria-label': t('media.camera'), onchange: () => this.start() });
    this.micSelect = h('select', { translate: 'no', 'aria-label': t('media.microphone'), onchange: () => this.start() });
    this.message = h('div', { class: 'media-message' });
    this.level = h('span', { class: 'resolution' });
    this.el = h('div', { class: 'camera-panel' },
      h('div', { class: 'devices' },
        h('label', { class: 'field inline' }, h('span', { class: 'label' }, t('media.camera')), this.cameraSelect),
        h('label', { class: 'field inline' }, h('span', { class: 'label' }, t('media.microphone')), this.micSelect)),
      this.message,
      h('div', { class: 'preview-box' }, this.video),
      this.level);
  }

  /** Starts (or restarts with the chosen devices) the preview. Resolves to true when it runs. */
  async start() {
    this.stopTracks();
    fill(this.message);
    if (!navigator.mediaDevices?.getUserMedia) {
      fill(this.message, notice('error', t('media.unsupported')));
      return false;
    }
    const video = { width: { ideal: 4096 }, height: { ideal: 2160 } };
    if (this.cameraSelect.value) video.deviceId = { exact: this.cameraSelect.value };
    const audio = this.micSelect.value ? { deviceId: { exact: this.micSelect.value } } : true;
    try {
      this.stream = await navigator.mediaDevices.getUserMedia({ video, audio });
    } catch (err) {
      // A missing microphone should not stop a document capture: try the camera alone.
      if (err?.name === 'NotFoundError') {
        try {
          this.stream = await navigator.mediaDevices.getUserMedia({ video });
          fill(this.message, notice('info', t('media.no_microphone')));
        } catch (err2) {
          fill(this.message, notice('error', mediaErrorText(err2)));
          return false;
        }
      } else {
        fill(this.message, notice('error', mediaErrorText(err)));
        return false;
      }
    }
    this.video.srcObject = this.stream;
    await this.listDevices();
    const settings = this.videoTrack()?.getSettings() || {};
    this.level.textContent = settings.width ? t('media.resolution', { w: settings.width, h: settings.height }) : '';
    this.el.dataset.ready = '1';
    return true;
  }

  async listDevices() {
    const devices = await navigator.mediaDevices.enumerateDevices();
    const current = (kind) => this.stream?.getTracks().find((tr) => tr.kind === kind)?.getSettings().deviceId;
    const options = (kind, label) => devices.filter((d) => d.kind === kind)
      .map((d, i) => h('option', { value: d.deviceId, selected: d.deviceId === current(kind.replace('input', '')) }, d.label || `${label} ${i + 1}`));
    fill(this.cameraSelect, options('videoinput', t('media.camera')));
    fill(this.micSelect, options('audioinput', t('media.microphone')));
  }

  videoTrack() {
    return this.stream?.getVideoTracks()[0] || null;
  }

  /** A JPEG of the current frame at the camera's full resolution: ImageCapture.takePhoto()
   * where the browser has it, else a canvas grab at the track's settings resolution. */
  async capture() {
    const track = this.videoTrack();
    if (!track) throw userError(t('media.none'));
    if (typeof ImageCapture !== 'undefined') {
      try {
        const photo = await new ImageCapture(track).takePhoto();
        if (photo && photo.size > 0) return await toJpeg(photo);
      } catch { /* fake or virtual cameras often refuse takePhoto: fall back to a frame grab */ }
    }
    const settings = track.getSettings();
    const width = settings.width || this.video.videoWidth;
    const height = settings.height || this.video.videoHeight;
    if (!this.video.videoWidth) await new Promise((r) => this.video.addEventListener('loadeddata', r, { once: true }));
    const canvas = h('canvas', { width, height });
    canvas.getContext('2d').drawImage(this.video, 0, 0, width, height);
    return new Promise((resolve, reject) => canvas.toBlob((b) => (b ? resolve(b) : reject(userError(t('media.capture_failed')))), 'image/jpeg', 0.92));
  }

  stopTracks() {
    this.stream?.getTracks().forEach((tr) => tr.stop());
    this.stream = null;
    delete this.el.dataset.ready;
  }
}

/** takePhoto may give PNG (several MB at full resolution): send JPEG, which is a fraction of
 * that over a village point's uplink and plenty for reading a document. */
async function toJpeg(blob) {
  if (blob.type === 'image/jpeg') return blob;
  const bitmap = await createImageBitmap(blob);
  const canvas = h('canvas', { width: bitmap.width, height: bitmap.height });
  canvas.getContext('2d').drawImage(bitmap, 0, 0);
  return new Promise((resolve, reject) => canvas.toBlob((b) => (b ? resolve(b) : reject(new Error('jpeg'))), 'image/jpeg', 0.92));
}
