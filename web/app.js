// Minimal live view over the JSON API; the full web pages are built on the same API.
// The access token lives in sessionStorage only (gone when the tab closes).
let token = sessionStorage.getItem('kasad_token');
const api = (path, opts = {}) => fetch(path, { ...opts, headers: { ...(opts.headers || {}), Authorization: `Bearer ${token}` } });
const form = document.getElementById('login');
form.addEventListener('submit', async (e) => {
  e.preventDefault();
  const r = await fetch('/api/auth/login', { method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ username: document.getElementById('user').value, password: document.getElementById('pass').value }) });
  const body = await r.json();
  if (!r.ok) { document.getElementById('login-error').textContent = body.message; return; }
  token = body.access_token;
  sessionStorage.setItem('kasad_token', token);
  form.hidden = true;
  refresh();
});
const esc = (s) => String(s ?? '').replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
async function latest(id) {
  const r = await api(`/api/devices/${encodeURIComponent(id)}/readings?start=${new Date(Date.now() - 120000).toISOString()}`);
  if (!r.ok) return null;
  const rows = (await r.json()).readings;
  return rows.length ? rows[rows.length - 1] : null;
}
async function refresh() {
  try {
    const resp = await api('/api/devices');
    if (resp.status === 401) { form.hidden = false; document.getElementById('status').textContent = 'please log in'; return; }
    const { devices } = await resp.json();
    const cards = await Promise.all(devices.map(async (d) => {
      const r = await latest(d.device_id);
      const power = r && r.power_w != null ? `${r.power_w.toFixed(1)} W` : (r ? (r.is_on ? 'on' : 'off') : '—');
      return `<div class="card ${d.device_type === 'strip_outlet' ? 'outlet' : ''}">
        <h2>${esc(d.device_name)}</h2>
        <div class="power">${esc(power)}</div>
        <div class="muted">${esc(d.model)} · ${esc(d.device_type)} · ${esc(d.device_ip)}</div>
        <div class="muted"><span class="${d.online ? 'online' : 'offline'}">${esc(d.status)}</span> · ${d.data_points} readings</div>
      </div>`;
    }));
    document.getElementById('devices').innerHTML = cards.join('');
    document.getElementById('status').textContent = `${devices.length} devices · updated ${new Date().toLocaleTimeString()}`;
  } catch (e) {
    document.getElementById('status').textContent = `cannot reach kasad: ${e}`;
  }
}
refresh();
setInterval(refresh, 5000);
