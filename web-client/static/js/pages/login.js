// Login: plain messages for a wrong password, a locked or disabled account, an ended session.
import { h, fill, notice, field, busy, ApiError } from '../core.js';
import { t } from '../i18n.js';

export function renderLogin(view, { message, onLoggedIn }) {
  const slot = h('div', { class: 'message-slot' }, message ? notice('info', message) : null);
  const username = h('input', { name: 'username', autocomplete: 'username', required: true });
  const password = h('input', { name: 'password', type: 'password', autocomplete: 'current-password', required: true });
  const submit = h('button', { type: 'submit', class: 'primary wide' }, t('login.submit'));
  const form = h('form', { id: 'login', class: 'card narrow', autocomplete: 'on' },
    h('h1', {}, t('login.title')),
    slot,
    field(t('login.username'), username),
    field(t('login.password'), password),
    submit);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const loggedIn = await busy(submit, slot, async () => {
      let res;
      try {
        res = await fetch('/api/auth/login', {
          method: 'POST',
          headers: { 'Content-Type': 'application/json' },
          body: JSON.stringify({ username: username.value.trim(), password: password.value }),
          credentials: 'same-origin',
        });
      } catch {
        throw new ApiError(0, 'network', '');
      }
      const body = await res.json().catch(() => ({}));
      if (!res.ok) {
        const code = body.code === 'unauthenticated' ? 'wrong_password' : body.code || `http_${res.status}`;
        throw new ApiError(res.status, code, body.message);
      }
      await onLoggedIn(body);
      return true;
    });
    if (!loggedIn) {
      password.value = '';
      password.focus();
    }
  });
  fill(view, form);
  username.focus();
}
