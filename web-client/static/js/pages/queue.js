// A live queue table fed by /ws queue events, shared by the approver and supervisor pages.
import { h, fill, waitingClock, departmentName, slaClass, secondsSince } from '../core.js';
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
    /** Fills the table from the API when no snapshot came over the socket (it came when the
     * socket opened, perhaps pages ago). Events that arrive while the request is under way are
     * applied again on top of its answer, which may be older than they are. */
    async seed(fetchItems) {
      const replay = [];
      pending = replay;
      try {
        const list = await fetchItems();
        if (table.received) return;
        table.snapshot(list);
        replay.forEach(apply);
      } finally {
        pending = null;
      }
    },
    handle(msg) {
      pending?.push(msg);
      apply(msg);
    },
  };
  let pending = null;
  function apply(msg) {
    if (msg.type === 'queue.snapshot') { table.received = true; table.snapshot(msg.items); }
    if (msg.type === 'queue.added') table.add(msg.item);
    if (msg.type === 'queue.taken' || msg.type === 'queue.cancelled') table.remove(msg.case_id);
  }
  // Rows are kept by case id and only added, removed or moved, so that an event arriving while
  // someone reaches for 受理 does not replace the button under their finger.
  const rows = new Map();
  const empty = h('p', { class: 'muted empty' }, t('queue.empty'));
  function draw() {
    for (const [id, el] of rows) {
      if (!items.has(id)) { el.remove(); rows.delete(id); }
    }
    const sorted = [...items.values()].sort((a, b) => a.queued_at.localeCompare(b.queued_at));
    const wanted = sorted.map((item) => {
      const existing = rows.get(item.case_id);
      // Back in a queue after a transfer: a new row, its waiting time counted from now.
      if (!existing || existing.dataset.queuedAt !== item.queued_at) {
        existing?.remove();
        rows.set(item.case_id, row(item));
      }
      return rows.get(item.case_id);
    });
    if (!wanted.length) { fill(body, empty); return; }
    empty.remove();
    const current = [...body.children];
    if (wanted.length !== current.length || wanted.some((el, i) => el !== current[i])) {
      wanted.forEach((el, i) => { if (body.children[i] !== el) body.insertBefore(el, body.children[i] || null); });
    }
  }
  function row(item) {
    const slot = h('div', { class: 'row-message' });
    const accept = onAccept ? h('button', { type: 'button', class: 'primary accept' }, t('queue.accept')) : null;
    accept?.addEventListener('click', () => onAccept(item, accept, slot));
    return h('div', { class: `queue-item ${slaClass(item.simple, secondsSince(item.queued_at))}`, dataset: { caseId: String(item.case_id), queuedAt: item.queued_at, sla: '' } },
      h('div', { class: 'q-main' },
        h('span', { class: 'number', translate: 'no' }, item.number),
        h('strong', {}, item.item_name),
        item.simple ? h('span', { class: 'tag' }, t('item.simple')) : null,
        showDepartment ? h('span', { class: 'tag dept' }, departmentName(item.department_id)) : null),
      h('div', { class: 'q-where muted' }, `${item.point_name}（${item.township}）· ${t('queue.applicant')} ${item.applicant_name}`),
      h('div', { class: 'q-wait' }, t('case.waiting_for'), ' ', waitingClock(item.queued_at, item.simple)),
      accept, slot);
  }
  draw();
  return table;
}
