// A live queue table fed by /ws queue events, shared by the approver and supervisor pages.
import { h, fill, waitingClock, departmentName } from '../core.js';
import { t } from '../i18n.js';

export function queueTable({ showDepartment, onAccept }) {
  const body = h('div', { class: 'queue', id: 'queue' });
  const items = new Map();
  const table = {
    el: body,
    received: false,
    snapshot(list) {
      items.clear();
      for (const item of list) items.set(item.case_id, item);
      draw();
    },
    add(item) { items.set(item.case_id, item); draw(); },
    remove(id) { items.delete(id); draw(); },
    handle(msg) {
      if (msg.type === 'queue.snapshot') { table.received = true; table.snapshot(msg.items); }
      if (msg.type === 'queue.added') table.add(msg.item);
      if (msg.type === 'queue.taken' || msg.type === 'queue.cancelled') table.remove(msg.case_id);
    },
  };
  function draw() {
    const sorted = [...items.values()].sort((a, b) => a.queued_at.localeCompare(b.queued_at));
    if (!sorted.length) { fill(body, h('p', { class: 'muted empty' }, t('queue.empty'))); return; }
    fill(body, sorted.map((item) => {
      const slot = h('div', { class: 'row-message' });
      const accept = onAccept ? h('button', { type: 'button', class: 'primary accept' }, t('queue.accept')) : null;
      accept?.addEventListener('click', () => onAccept(item, accept, slot));
      return h('div', { class: 'queue-item', dataset: { caseId: String(item.case_id), sla: '' } },
        h('div', { class: 'q-main' },
          h('span', { class: 'number', translate: 'no' }, item.number),
          h('strong', {}, item.item_name),
          item.simple ? h('span', { class: 'tag' }, t('item.simple')) : null,
          showDepartment ? h('span', { class: 'tag dept' }, departmentName(item.department_id)) : null),
        h('div', { class: 'q-where muted' }, `${item.point_name}（${item.township}）· ${t('queue.applicant')} ${item.applicant_name}`),
        h('div', { class: 'q-wait' }, t('case.waiting_for'), ' ', waitingClock(item.queued_at, item.simple)),
        accept, slot);
    }));
  }
  draw();
  return table;
}
