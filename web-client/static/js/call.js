// The call panel of a case: where the remote videos will go. The call work (media relay) fills
// `mountCallPanel`; until then it is an empty, clearly labelled area so the layout is final.
//
// Contract for the call work:
// - `mountCallPanel(container, { caseView, user, live, localStream })` is called by the case
//   page each time it renders; `localStream` is the agent's camera stream (or null).
// - It returns a `dispose()` that the page calls when leaving or re-rendering.
// - Call signaling goes over the same /ws (`live.subscribe`, and a `send` the relay work adds).
import { h, fill } from './core.js';
import { t } from './i18n.js';

export function mountCallPanel(container, { caseView }) {
  const active = ['in_call'].includes(caseView.state);
  fill(container,
    h('div', { class: 'call-area', dataset: { callArea: String(caseView.id) } },
      h('div', { class: 'remote-videos' }),
      h('p', { class: 'muted' }, active ? t('call.coming') : t('call.idle'))));
  return () => {};
}
