// The agent at a service point (代办点): the point's cases, and opening a new one for a resident.
import { h, fill, api, say, errorText, field, busy, fmtDateTime, waitingClock, session, idNumberProblem } from '../core.js';
import { t } from '../i18n.js';
import { stateBadge } from './case.js';

export async function renderAgentHome(view, _params, { live }) {
  const list = h('div', { class: 'case-list' });
  const slot = h('div');
  const point = session.catalogue.points.find((p) => p.id === session.user.point_id);
  fill(view,
    h('section', { class: 'card' },
      h('div', { class: 'row spread' },
        h('h1', {}, t('agent.title')),
        h('a', { href: '#/agent/new', class: 'button primary' }, t('nav.new_case'))),
      point ? h('p', { class: 'muted' }, point.name) : null,
      slot, list));
  async function load() {
    try {
      const cases = await api('GET', '/cases');
      fill(list, cases.length ? cases.map(caseRow) : h('p', { class: 'muted' }, t('agent.no_cases')));
    } catch (err) {
      say(slot, 'error', errorText(err));
    }
  }
  await load();
  return live.subscribe((msg) => {
    if (['case.updated', 'live.reconnected'].includes(msg.type)) load();
  });
}

/** One line of a case list. */
export function caseRow(c) {
  return h('a', { class: 'case-row', href: `#/case/${c.id}`, dataset: { caseId: String(c.id) } },
    h('span', { class: 'number', translate: 'no' }, c.number),
    h('span', { class: 'item' }, c.item_name),
    stateBadge(c.state),
    c.state === 'waiting' ? h('span', { class: 'wait', dataset: { sla: '' } }, t('case.waiting_for'), ' ', waitingClock(c.queued_at, c.simple)) : h('span', { class: 'muted' }, fmtDateTime(c.opened_at)));
}

export async function renderNewCase(view, _params, { catalogue }) {
  const itemSelect = h('select', { name: 'item', required: true },
    h('option', { value: '' }, t('new.pick_item')),
    catalogue.departments.map((d) => h('optgroup', { label: d.name },
      catalogue.items.filter((i) => i.department_id === d.id)
        .map((i) => h('option', { value: i.code }, i.simple ? `${i.name}（${t('item.simple')}）` : i.name)))));
  const checklist = h('div', { class: 'checklist', id: 'required-materials' });
  const name = h('input', { name: 'applicant_name', required: true, maxlength: 64, autocomplete: 'off' });
  const idNumber = h('input', { name: 'applicant_id_number', required: true, maxlength: 18, autocomplete: 'off', inputmode: 'text' });
  const idCheck = h('small', { id: 'id-number-check', class: 'field-error', role: 'status', 'aria-live': 'polite' });
  // Checked as it is typed: the page names the check digit expected before anything is sent.
  idNumber.addEventListener('input', () => {
    const problem = idNumberProblem(idNumber.value);
    idCheck.textContent = problem ? t(problem.key, problem.params || {}) : '';
    idNumber.setAttribute('aria-invalid', String(!!problem));
  });
  const note = h('textarea', { name: 'note', rows: 3, maxlength: 2000 });
  const slot = h('div');
  const submit = h('button', { type: 'submit', class: 'primary wide' }, t('new.submit'));

  itemSelect.addEventListener('change', () => {
    const item = catalogue.items.find((i) => i.code === itemSelect.value);
    fill(checklist, item ? [
      h('h2', {}, t('new.required_materials')),
      item.simple ? h('p', { class: 'muted' }, t('new.simple_hint')) : null,
      // A plain list of what the item needs: ticks here would be seen by no one else.
      h('p', { class: 'muted' }, t('new.required_hint')),
      h('ul', {}, item.required_materials.map((m) => h('li', {}, m))),
    ] : null);
  });

  const form = h('form', { class: 'card', id: 'new-case' },
    h('h1', {}, t('new.title')),
    field(t('new.item'), itemSelect),
    checklist,
    field(t('new.applicant_name'), name),
    field(t('new.applicant_id_number'), idNumber, t('new.id_hint')),
    idCheck,
    field(t('new.note'), note),
    slot,
    submit);
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    busy(submit, slot, async () => {
      const created = await api('POST', '/cases', {
        item: itemSelect.value,
        applicant_name: name.value.trim(),
        applicant_id_number: idNumber.value.trim().toUpperCase(),
        note: note.value.trim(),
      });
      location.hash = `#/case/${created.id}`;
    });
  });
  fill(view, form);
}
