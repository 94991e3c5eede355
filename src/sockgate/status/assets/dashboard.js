"use strict";
const $ = (id) => document.getElementById(id);
function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}
function ms(v) {
  if (v === null || v === undefined) return "-";
  if (v < 10) return v.toFixed(1) + "ms";
  if (v < 10000) return Math.round(v) + "ms";
  return Math.round(v / 1000) + "s";
}
function clock(t) { return new Date(t * 1000).toLocaleTimeString(); }
function procText(p) {
  if (!p) return "-";
  if (p.state === "ELSEWHERE") return "run by the apps process";
  let text = p.next_start_in === null ? p.state :
    "restarting in " + p.next_start_in.toFixed(1) + "s";
  if (p.pid !== null) text += ", pid " + p.pid;
  if (p.on_demand) text += ", on demand";
  text += !p.starts ? ", not started yet" :
    ", started " + (p.starts === 1 ? "once" : p.starts + " times");
  if (p.last_exit) text += "; last exit: " + p.last_exit;
  return text;
}
function appRow(a) {
  const tr = el("tr");
  tr.dataset.app = a.name;
  tr.dataset.state = a.state;
  tr.appendChild(el("td", a.name, "name"));
  // The prefix on this page's own origin, then the app's own origin (its host URL).
  const link = el("a", a.prefix);
  link.href = a.prefix;
  const p = el("td", undefined, "urls"); p.appendChild(link);
  for (const url of (a.urls || []).slice(1)) {
    const own = el("a", url, "host");
    own.href = url;
    const line = el("div"); line.appendChild(own); p.appendChild(line);
  }
  tr.appendChild(p);
  const s = el("td"); s.appendChild(el("code", a.socket)); tr.appendChild(s);
  const st = el("td");
  st.appendChild(el("span", a.state, "state " + (a.state === "up" ? "up" : "down")));
  if (a.state !== "up" && a.detail) st.appendChild(el("div", a.detail, "detail"));
  tr.appendChild(st);
  const proc = a.process || null;
  tr.dataset.process = proc ? proc.state : "";
  tr.appendChild(el("td", procText(proc), "process" + (proc ? " " + proc.state : "")));
  tr.appendChild(el("td", a.requests, "n requests"));
  tr.appendChild(el("td", a.errors, "n errors" + (a.errors ? " bad" : "")));
  const lat = a.latency_ms || {p50: null, p99: null};
  tr.appendChild(el("td", ms(lat.p50), "n p50"));
  tr.appendChild(el("td", ms(lat.p99), "n p99"));
  tr.appendChild(el("td", a.streams.upgrade + " ws, " + a.streams.sse + " sse", "n streams"));
  const e = el("td", a.last_error ? clock(a.last_error.time) + " " + a.last_error.text : "-",
               "err");
  tr.appendChild(e);
  return tr;
}
function render(doc) {
  const me = doc.sockgate;
  $("me").textContent = "sockgate " + me.version + ", pid " + me.pid + ", listening on http://" +
    me.listen + "/, updated " + clock(doc.time);
  $("note").textContent = me.worker === null ? "" : "counts are worker " + me.worker +
    "'s alone, one of " + me.workers +
    " processes (each keeps its own); socket states hold for all";
  $("apps").replaceChildren(...doc.apps.map(appRow));
  if (!doc.apps.length) {
    const tr = el("tr"); tr.appendChild(el("td", "no apps configured")); $("apps").appendChild(tr);
  }
  const recent = doc.apps.flatMap((a) => a.recent.map((r) => ({...r, app: a.name})))
    .sort((x, y) => y.time - x.time).slice(0, RECENT_SHOWN);
  $("recent").replaceChildren(...recent.map((r) => {
    const tr = el("tr");
    tr.appendChild(el("td", clock(r.time)));
    tr.appendChild(el("td", r.app));
    tr.appendChild(el("td", r.status, "n" + (r.status >= 500 ? " bad" : "")));
    tr.appendChild(el("td", r.method));
    const t = el("td"); t.appendChild(el("code", r.target)); tr.appendChild(t);
    tr.appendChild(el("td", ms(r.ms), "n"));
    return tr;
  }));
  document.body.dataset.updated = String(doc.time);
}
render(JSON.parse($("initial").textContent));
const source = new EventSource(document.body.dataset.events);
source.onmessage = (event) => {
  $("live").textContent = "live";
  $("live").className = "";
  render(JSON.parse(event.data));
};
source.onerror = () => {
  $("live").textContent = "disconnected: retrying";
  $("live").className = "off";
};
