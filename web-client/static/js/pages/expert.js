// The expert (多警种会诊): the cases it is invited to; each opens read-only.
import { h, fill, api, say, errorText } from '../core.js';
import { t } from '../i18n.js';
import { caseRow } from './agent.js';

export async function renderExpertHome(view, _params, { live }) {
  const list = h('div', { class: 'case-list' });
  const slot = h('div');
  fill(view, h('section', { class: 'card' }, h('h1', {}, t('expert.title')), h('p', { class: 'muted' }, t('expert.hint')), slot, list));
  async function load() {
    try {
      const cases = await api('GET', '/cases');
      fill(list, cases.length ? cases.map(caseRow) : h('p', { class: 'muted' }, t('expert.none')));
    } catch (err) {
      say(slot, 'error', errorText(err));
    }
  }
  await load();
  return live.subscribe((msg) => { if (msg.type === 'case.updated' || msg.type === 'live.reconnected') load(); });
}
