// The app shell: session on load (/api/me), hash routes per role, the header with navigation and
// the language switch, the connection banner, and a visible message for any unexpected error.
import { h, fill, api, session, whenSessionEnds, notice, errorText } from './core.js';
import { t, lang, setLang } from './i18n.js';
import { Live } from './live.js';
import { renderLogin } from './pages/login.js';
import { renderAgentHome, renderNewCase } from './pages/agent.js';
import { renderQueue } from './pages/approver.js';
import { renderCase } from './pages/case.js';
import { renderExpertHome } from './pages/expert.js';
import { renderSupervisor } from './pages/supervisor.js';
import { renderAuditor } from './pages/auditor.js';
import { renderAdmin } from './pages/admin.js';
import { renderInvite, renderResident } from './pages/resident.js';

const view = document.getElementById('view');
const top = document.getElementById('top');
const banner = document.getElementById('conn-banner');
const globalError = document.getElementById('global-error');

/** Routes: hash pattern → [roles allowed, render]. A render returns a cleanup function. */
const ROUTES = [
  ['#/agent', ['agent'], renderAgentHome],
  ['#/agent/new', ['agent'], renderNewCase],
  ['#/queue', ['approver'], renderQueue],
  ['#/expert', ['expert'], renderExpertHome],
  ['#/supervisor', ['supervisor'], renderSupervisor],
  ['#/auditor', ['auditor'], renderAuditor],
  ['#/admin', ['admin'], renderAdmin],
  ['#/case/:id', ['agent', 'approver', 'expert', 'supervisor', 'auditor'], renderCase],
  ['#/resident', ['resident'], renderResident],
];

const HOME = { agent: '#/agent', approver: '#/queue', expert: '#/expert', supervisor: '#/supervisor', auditor: '#/auditor', admin: '#/admin', resident: '#/resident' };

const NAV = {
  agent: [['#/agent', 'nav.agent_cases'], ['#/agent/new', 'nav.new_case']],
  approver: [['#/queue', 'nav.queue']],
  expert: [['#/expert', 'nav.expert_cases']],
  supervisor: [['#/supervisor', 'nav.supervisor']],
  auditor: [['#/auditor', 'nav.auditor']],
  admin: [['#/admin', 'nav.admin']],
};

let cleanup = null;
let loginMessage = '';
let connected = true;

export const live = new Live((ok) => {
  connected = ok;
  banner.hidden = ok;
  banner.textContent = ok ? '' : t('live.reconnecting');
  if (!ok) checkSessionStillValid();
});

// For tests and for the call work: the live channel of this tab.
window.cloudhelp = { live, session };

/** A socket that keeps failing may mean the session ended (the upgrade answers 401). */
async function checkSessionStillValid() {
  try {
    const res = await fetch('/api/me', { credentials: 'same-origin' });
    if (res.status === 401) endSession('expired');
  } catch { /* server unreachable: keep reconnecting */ }
}

function endSession(reason) {
  if (!session.user) return;
  session.user = null;
  session.csrf = '';
  session.catalogue = null;
  live.stop();
  loginMessage = reason === 'expired' ? t('login.expired') : '';
  // The hash change renders the login page (with the message); render here only if it was there.
  if (location.hash === '#/login') route(); else location.hash = '#/login';
}
whenSessionEnds(endSession);

function match(fullHash) {
  const [hash, query = ''] = fullHash.split('?');
  for (const [pattern, roles, render] of ROUTES) {
    const names = [];
    const re = new RegExp(`^${pattern.replace(/:(\w+)/g, (_, n) => { names.push(n); return '([^/]+)'; })}$`);
    const m = hash.match(re);
    if (m) {
      const params = Object.fromEntries(new URLSearchParams(query));
      names.forEach((n, i) => { params[n] = decodeURIComponent(m[i + 1]); });
      return { roles, render, params };
    }
  }
  return null;
}

function renderHeader() {
  const user = session.user;
  const langButton = h('button', {
    type: 'button', class: 'link lang', lang: lang() === 'zh' ? 'en' : 'zh-CN',
    onclick: () => { setLang(lang() === 'zh' ? 'en' : 'zh'); renderHeader(); if (!connected) banner.textContent = t('live.reconnecting'); route(); },
  }, lang() === 'zh' ? 'English' : '中文');
  fill(top,
    h('div', { class: 'brand' }, h('a', { href: user ? HOME[user.role] : '#/login' }, h('strong', {}, t('app.name'))), h('span', { class: 'sub' }, t('app.tagline'))),
    user ? h('nav', {}, (NAV[user.role] || []).map(([href, key]) => h('a', { href, class: location.hash === href ? 'current' : '' }, t(key)))) : null,
    h('div', { class: 'who' },
      user ? h('span', {}, `${user.display_name} · ${t(`role.${user.role}`)}`) : null,
      langButton,
      user ? h('button', { type: 'button', class: 'link', onclick: logout }, t('nav.logout')) : null));
  document.documentElement.lang = lang() === 'zh' ? 'zh-CN' : 'en';
  document.title = t('app.name');
}

async function logout() {
  try { await api('POST', '/auth/logout'); } catch { /* the session is gone either way */ }
  session.user = null;
  session.csrf = '';
  session.catalogue = null;
  live.stop();
  location.hash = '#/login';
}

/** Loads the catalogue once per login (every page names items, departments and points). */
export async function catalogue() {
  if (!session.catalogue) session.catalogue = await api('GET', '/catalogue');
  return session.catalogue;
}

async function route() {
  if (cleanup) { try { cleanup(); } catch { /* a page's cleanup must not block the next page */ } cleanup = null; }
  fill(globalError);
  const hash = location.hash || '#/';
  // An invitation link opens its page for anyone, with or without a session.
  const invite = hash.match(/^#\/invite\/([A-Za-z0-9_-]+)$/);
  if (invite) {
    renderHeader();
    fill(view, h('p', { class: 'muted' }, t('common.loading')));
    cleanup = await renderInvite(view, { token: invite[1] }, { onAccepted: onLoggedIn });
    return;
  }
  if (!session.user) {
    renderHeader();
    if (hash !== '#/login') { location.hash = '#/login'; return; }
    const message = loginMessage;
    loginMessage = '';
    cleanup = renderLogin(view, { message, onLoggedIn });
    return;
  }
  const found = match(hash);
  if (!found || !found.roles.includes(session.user.role)) {
    location.hash = HOME[session.user.role] || '#/login';
    return;
  }
  renderHeader();
  fill(view, h('p', { class: 'muted' }, t('common.loading')));
  try {
    // A resident reaches its own case only (no catalogue).
    if (session.user.role !== 'resident') await catalogue();
    cleanup = (await found.render(view, found.params, { live, catalogue: session.catalogue })) || null;
  } catch (err) {
    fill(view, notice('error', errorText(err)), h('p', {}, h('button', { type: 'button', onclick: route }, t('common.retry'))));
  }
}

async function onLoggedIn(me) {
  session.user = me.user;
  session.csrf = me.csrf_token;
  session.catalogue = null;
  live.start();
  const target = HOME[me.user.role] || '#/login';
  if (location.hash === target) route(); else location.hash = target;
}

// Nothing fails silently: an unexpected error shows a message on the page, not only in the console.
function showUnexpected(err) {
  fill(globalError, notice('error', `${t('err.unexpected')}${err?.message ? `（${err.message}）` : ''}`));
}
window.addEventListener('error', (e) => showUnexpected(e.error || e));
window.addEventListener('unhandledrejection', (e) => showUnexpected(e.reason));
window.addEventListener('hashchange', route);

(async function boot() {
  fill(view, h('p', { class: 'muted' }, t('common.loading')));
  let reachable = true;
  try {
    const res = await fetch('/api/me', { credentials: 'same-origin' });
    if (res.ok) {
      const me = await res.json();
      session.user = me.user;
      session.csrf = me.csrf_token;
      live.start();
    }
  } catch {
    reachable = false;
  }
  if (!reachable) {
    renderHeader();
    fill(view, notice('error', t('err.network')), h('p', {}, h('button', { type: 'button', onclick: () => location.reload() }, t('common.retry'))));
    return;
  }
  if (session.user && (!location.hash || location.hash === '#/login' || location.hash === '#/')) {
    location.hash = HOME[session.user.role];
    return; // hashchange renders
  }
  route();
})();

