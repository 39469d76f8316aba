// The call panel of a case: where the remote videos will go. The call work (media relay) fills
// it; until then it is an empty, clearly labelled area so that the layout is final.
//
// Contract for the call work:
// - `mountCallPanel(container, { caseView, user, live, localStream })` is called once when the
//   case page opens; `localStream` is the agent's camera stream (null for other roles, or when
//   the camera is refused), and `getLocalStream()` gives the current one after a device change.
// - It returns `{ update(caseView), dispose() }`: `update` on every change of the case (state,
//   approver, experts), `dispose` when the page is left. A call must survive `update`.
// - Call signaling goes over the same /ws (`live.subscribe`; a `send` is to be added to Live).
import { h, fill } from './core.js';
import { t } from './i18n.js';

export function mountCallPanel(container, { caseView }) {
  const remote = h('div', { class: 'remote-videos' });
  const note = h('p', { class: 'muted' });
  fill(container, h('div', { class: 'call-area', dataset: { callArea: String(caseView.id) } }, remote, note));
  const update = (view) => {
    note.textContent = view.state === 'in_call' ? t('call.coming') : t('call.idle');
  };
  update(caseView);
  return { update, dispose: () => {} };
}
