// The administrator: accounts (list, add, disable).
import { h, fill, api, say, errorText, field, busy, departmentName, session } from '../core.js';
import { t } from '../i18n.js';

const ROLES = ['agent', 'approver', 'expert', 'supervisor', 'auditor', 'admin'];

export async function renderAdmin(view, _params, { catalogue }) {
  const list = h('div', { class: 'table-wrap' });
  const message = h('div');
  const username = h('input', { name: 'username', required: true, autocomplete: 'off' });
  const display = h('input', { name: 'display_name', required: true });
  const role = h('select', { name: 'role' }, ROLES.map((r) => h('option', { value: r }, t(`role.${r}`))));
  const point = h('select', { name: 'point' }, h('option', { value: '' }, '—'), catalogue.points.map((p) => h('option', { value: p.code }, p.name)));
  const dept = h('select', { name: 'department' }, h('option', { value: '' }, '—'), catalogue.departments.map((d) => h('option', { value: d.code }, d.name)));
  const password = h('input', { name: 'password', type: 'password', minlength: 8, required: true, autocomplete: 'new-password' });
  const go = h('button', { type: 'submit', class: 'primary' }, t('admin.add'));
  const formSlot = h('div');
  const form = h('form', { class: 'card', id: 'add-user' }, h('h2', {}, t('admin.add_title')),
    field(t('admin.username'), username), field(t('admin.display_name'), display), field(t('admin.role'), role),
    field(t('admin.point'), point), field(t('admin.department'), dept), field(t('admin.password'), password, t('admin.password_hint')), go, formSlot);
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    busy(go, formSlot, async () => {
      await api('POST', '/admin/users', { username: username.value.trim(), display_name: display.value.trim(), role: role.value, point: point.value || null, department: dept.value || null, password: password.value });
      form.reset();
      say(formSlot, 'ok', t('admin.added'));
      await load();
    });
  });
  fill(view, h('section', { class: 'card' }, h('h1', {}, t('admin.title')), message, list), form);

  async function load() {
    try {
      const users = await api('GET', '/admin/users');
      fill(list, h('table', {}, h('thead', {}, h('tr', {}, [t('admin.username'), t('admin.display_name'), t('admin.role'), t('admin.where'), t('admin.status'), ''].map((x) => h('th', {}, x)))),
        h('tbody', {}, users.map((u) => {
          const where = u.point_id ? catalogue.points.find((p) => p.id === u.point_id)?.name : u.department_id ? departmentName(u.department_id) : '—';
          const disable = !u.disabled && u.id !== session.user.id ? h('button', { type: 'button', class: 'small danger' }, t('admin.disable')) : null;
          disable?.addEventListener('click', () => busy(disable, message, async () => { await api('POST', `/admin/users/${encodeURIComponent(u.username)}/disable`); await load(); }));
          return h('tr', {}, h('td', { translate: 'no' }, u.username), h('td', {}, u.display_name), h('td', {}, t(`role.${u.role}`)), h('td', {}, where || '—'), h('td', {}, u.disabled ? t('admin.disabled') : t('admin.active')), h('td', {}, disable));
        }))));
    } catch (err) {
      say(message, 'error', errorText(err));
    }
  }
  await load();
}
