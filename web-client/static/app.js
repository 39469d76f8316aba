// Login and session display. The full agent, approver, supervisor and auditor pages build on this.
const ROLE = { agent: '代办员', approver: '审批员', expert: '专家', supervisor: '督导员', auditor: '审计员', admin: '管理员' };
const MESSAGES = {
  unauthenticated: '用户名或密码错误',
  account_locked: '账号因多次登录失败已被临时锁定，请稍后再试',
  account_disabled: '账号已停用，请联系管理员',
};

async function show() {
  const res = await fetch('/api/me');
  const logged = res.ok;
  document.getElementById('login').hidden = logged;
  document.getElementById('session').hidden = !logged;
  if (logged) {
    const me = await res.json();
    sessionStorage.setItem('csrf', me.csrf_token);
    document.getElementById('who').textContent = `${me.user.display_name}（${ROLE[me.user.role] || me.user.role}）已登录`;
  }
}

document.getElementById('login').addEventListener('submit', async (e) => {
  e.preventDefault();
  const form = new FormData(e.target);
  const message = document.getElementById('message');
  message.textContent = '';
  try {
    const res = await fetch('/api/auth/login', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ username: form.get('username'), password: form.get('password') }),
    });
    if (!res.ok) {
      const err = await res.json().catch(() => ({}));
      message.textContent = MESSAGES[err.code] || err.message || '登录失败，请重试';
      return;
    }
    await show();
  } catch {
    message.textContent = '无法连接服务器，请检查网络后重试';
  }
});

document.getElementById('logout').addEventListener('click', async () => {
  await fetch('/api/auth/logout', { method: 'POST', headers: { 'X-CSRF-Token': sessionStorage.getItem('csrf') || '' } });
  await show();
});

show();
