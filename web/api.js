// The session and the API client. Tokens live in sessionStorage only (gone when the tab
// closes); the access token is refreshed a minute before it expires, and a 401 is retried once
// after a refresh. Refresh tokens rotate, so a refresh that finishes after a logout is dropped.
// Every call goes to this same origin.
const KEY = 'kasad_session';
let session = JSON.parse(sessionStorage.getItem(KEY) || 'null');
let timer = null;
let refreshing = null;
let generation = 0; // bumped at logout: answers for an older session are ignored
let onLogout = () => {};

/** An error answer of the API: `status` and the body (`error_code`, `message`, …). */
export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
  }
}

export const loggedIn = () => session !== null;
export const whenLoggedOut = (f) => { onLogout = f; };

function save(t) {
  session = { access: t.access_token, refresh: t.refresh_token, expires_at: Date.now() + t.expires_in * 1000 };
  sessionStorage.setItem(KEY, JSON.stringify(session));
  schedule();
}

function schedule() {
  clearTimeout(timer);
  if (!session) return;
  const wait = Math.max(5000, session.expires_at - Date.now() - 60000);
  timer = setTimeout(() => refresh().catch(() => {}), wait);
}

function clear() {
  generation += 1;
  session = null;
  sessionStorage.removeItem(KEY);
  clearTimeout(timer);
  onLogout();
}

async function request(path, { method = 'GET', body, auth = true, signal } = {}) {
  const headers = {};
  if (auth && session) headers.Authorization = `Bearer ${session.access}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let r;
  try {
    r = await fetch(path, { method, headers, signal, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, { message: `kasad cannot be reached (${e.message})` });
  }
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = { message: text }; }
  if (!r.ok) throw new ApiError(r.status, data);
  return data;
}

/** Whether the first administrator is still to be made, and making it with the setup code. */
export const setupRequired = async () => (await request('/api/setup', { auth: false })).required;
export const setup = (body) => request('/api/setup', { method: 'POST', body, auth: false });

export async function login(username, password) {
  const g = generation;
  const t = await request('/api/auth/login', { method: 'POST', body: { username, password }, auth: false });
  if (g === generation) save(t);
}

/** Trades the refresh token for a new pair; one at a time. A refused token ends the session. */
export function refresh() {
  if (!session) return Promise.reject(new ApiError(401, { message: 'not logged in' }));
  const g = generation;
  refreshing ??= request('/api/auth/refresh', { method: 'POST', body: { refresh_token: session.refresh }, auth: false })
    .then((t) => { if (g === generation) save(t); })
    .catch((e) => {
      if (g === generation && e instanceof ApiError && [400, 401].includes(e.status)) clear();
      else schedule(); // offline or busy: try again later
      throw e;
    })
    .finally(() => { refreshing = null; });
  return refreshing;
}

/** Revokes both tokens on the server (refreshing first if the access token is about to lapse). */
export async function logout() {
  try {
    if (refreshing) await refreshing;
    if (session && session.expires_at - Date.now() < 10000) await refresh();
    if (session) await request('/api/auth/logout', { method: 'POST', body: { refresh_token: session.refresh } });
  } catch { /* the local session ends anyway */ }
  if (session) clear();
}

/** Calls the API; resolves to the JSON body or rejects with an ApiError. */
export async function api(path, opts = {}) {
  try {
    return await request(path, opts);
  } catch (e) {
    if (!(e instanceof ApiError) || e.status !== 401 || !session) throw e;
    await refresh();
    return request(path, opts);
  }
}

schedule();
