// The approver at the online office (网办中心): the live queue of its department with waiting
// times and SLA colours, accepting a case, and the cases it holds.
import { h, fill, api, say, errorText, session, ApiError, departmentName } from '../core.js';
import { t } from '../i18n.js';
import { caseRow } from './agent.js';
import { queueTable } from './queue.js';

export async function renderQueue(view, _params, { live }) {
  const message = h('div', { id: 'queue-message' });
  const queue = queueTable({
    showDepartment: false,
    onAccept: async (item, button, rowSlot) => {
      button.disabled = true;
      try {
        await api('POST', `/cases/${item.case_id}/actions/accept`);
        location.hash = `#/case/${item.case_id}`;
      } catch (err) {
        if (err instanceof ApiError && err.code === 'already_taken') {
          say(message, 'error', t('err.already_taken'));
          queue.remove(item.case_id);
        } else {
          say(rowSlot, 'error', errorText(err));
          button.disabled = false;
        }
      }
    },
  });
  const mine = h('div', { class: 'case-list', id: 'my-cases' });
  fill(view,
    h('section', { class: 'card' },
      h('h1', {}, t('queue.title', { department: departmentName(session.user.department_id) })),
      h('p', { class: 'muted' }, t('queue.sla_hint')),
      message, queue.el),
    h('section', { class: 'card' }, h('h2', {}, t('queue.mine')), mine));

  async function loadMine() {
    try {
      const cases = await api('GET', '/cases');
      const held = cases.filter((c) => c.approver?.id === session.user.id && !['issued', 'rejected', 'cancelled'].includes(c.state));
      fill(mine, held.length ? held.map(caseRow) : h('p', { class: 'muted' }, t('queue.mine_none')));
    } catch (err) {
      fill(mine, h('p', { class: 'notice error' }, errorText(err)));
    }
  }
  loadMine();
  // The socket sends a snapshot when it (re)connects; until the first arrives, ask the API.
  queue.seed(() => api('GET', '/queue')).catch((err) => say(message, 'error', errorText(err)));
  return live.subscribe((msg) => {
    queue.handle(msg);
    if (msg.type === 'case.updated' || msg.type === 'live.reconnected') loadMine();
  });
}
