/** The human status page: server-rendered HTML, readable without JavaScript, refreshes itself. */
import type { ProviderView, Readiness, ServiceView } from './view.js';

const esc = (s: string | number) =>
  String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);

export function statusPage(p: { version: string; uptimeS: number; readiness: Readiness; services: ServiceView[]; providers: ProviderView[]; refreshS: number }): string {
  const rows = (s: ServiceView) =>
    s.endpoints.length === 0
      ? `<tr><td colspan="9" class="muted">no endpoints</td></tr>`
      : s.endpoints
          .map(
            (e) => `<tr class="${e.eligible ? 'up' : 'down'}">
  <td><a href="/api/v1/endpoints/${encodeURIComponent(e.id)}?service=${encodeURIComponent(s.name)}">${esc(e.id)}</a></td>
  <td>${esc(e.address)}</td>
  <td>${esc(e.sources.join(', '))}</td>
  <td class="state">${e.eligible ? 'UP' : 'OUT'}</td>
  <td>${esc(e.eligible ? '' : e.outReasons.join(', '))}${e.override?.drained ? ` <small>by ${esc(e.override.drained.by)} at ${esc(e.override.drained.at)}</small>` : ''}</td>
  <td class="num">${e.weight}${e.weight !== e.configuredWeight ? ` (of ${e.configuredWeight})` : ''}${e.override?.weight ? ` <small>set by ${esc(e.override.weight.by)}</small>` : ''}</td>
  <td class="num">${e.activeConnections}${e.maxConnections ? ` / ${e.maxConnections}` : ''}</td>
  <td class="num">${e.connectionRate.toFixed(1)}/s</td>
  <td class="num">${e.connectionsTotal} / ${e.failuresTotal}</td>
</tr>`,
          )
          .join('\n');
  const services = p.services
    .map(
      (s) => `<section>
<h2>${esc(s.name)} <small>${esc(s.balance)} · ${s.eligible} of ${s.endpoints.length} in the pick set${s.listeners.length ? ` · listeners: ${esc(s.listeners.join(', '))}` : ''}</small></h2>
<table>
<thead><tr><th>endpoint</th><th>address</th><th>source</th><th>state</th><th>why out</th><th>weight</th><th>open</th><th>new conn rate</th><th>conns / failed</th></tr></thead>
<tbody>
${rows(s)}
</tbody>
</table>
</section>`,
    )
    .join('\n');
  const providers = p.providers
    .map(
      (d) =>
        `<li>${esc(d.name)}: ${d.connected ? 'connected' : '<b class="bad">disconnected (serving the last known endpoints)</b>'}${d.lastSync ? `, last sync ${esc(d.lastSync)}` : ''}${
          d.skipped.length ? `<ul>${d.skipped.map((k) => `<li>skipped ${esc(k.container)}: ${esc(k.reason)}</li>`).join('')}</ul>` : ''
        }</li>`,
    )
    .join('');
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="${p.refreshS}">
<title>berth status</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:20px;margin:0 0 .3em}h2{font-size:16px;margin:1.2em 0 .4em}small,.muted{color:#777;font-weight:normal}
table{border-collapse:collapse;width:100%}th,td{padding:.25em .6em;border-bottom:1px solid #ddd;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums}tr.up .state{color:#137333;font-weight:bold}tr.down .state,.bad{color:#b3261e;font-weight:bold}
.ready{color:#137333}.notready{color:#b3261e}
</style></head>
<body>
<h1>berth ${esc(p.version)}</h1>
<p>${p.readiness.ready ? '<b class="ready">ready</b>' : `<b class="notready">not ready</b>: ${esc(p.readiness.reasons.join('; '))}`}${p.readiness.notes.map((n) => ` · <b class="bad">${esc(n)}</b>`).join('')} · up ${Math.floor(p.uptimeS)} s · refreshes every ${p.refreshS} s · <a href="/metrics">metrics</a> · <a href="/api/v1/services">JSON</a></p>
${p.providers.length ? `<h2>Discovery</h2><ul>${providers}</ul>` : ''}
${services || '<p class="muted">no services</p>'}
</body></html>
`;
}
