// dash.js — the delivery analytics dashboard (issue 13): fetches
// /api/v1/analytics/{series,domains,delays,reasons,tls,dmarc} with the API
// token and draws SVG charts. No library, no inline script or style (the
// page's CSP forbids both); every text from the server goes in through
// textContent, never as markup. Each chart's <svg> gets data-points (how
// many values it drew) for the browser test.
"use strict";

(function () {
  const NS = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);
  const KINDS = ["accepted", "delivered", "deferred", "bounced"];
  let timer = null;

  function token() { return sessionStorage.getItem("hikyaku-token") || ""; }

  function status(text) { $("status").textContent = text; }

  function el(parent, name, attrs, text) {
    const e = document.createElementNS(NS, name);
    for (const k in attrs) e.setAttribute(k, String(attrs[k]));
    if (text !== undefined) e.textContent = text;
    parent.appendChild(e);
    return e;
  }

  function clear(svg) {
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    svg.dataset.points = "0";
  }

  function size(svg) {
    const vb = svg.viewBox.baseVal;
    return { w: vb.width, h: vb.height };
  }

  function empty(svg, text) {
    const { w, h } = size(svg);
    el(svg, "text", { x: w / 2, y: h / 2, "text-anchor": "middle", class: "empty" },
      text || "No data in this range");
  }

  function fmtNum(v) {
    if (v >= 1e6) return (v / 1e6).toFixed(1) + "M";
    if (v >= 1e4) return (v / 1e3).toFixed(0) + "k";
    return String(Math.round(v * 10) / 10);
  }

  function fmtMs(ms) {
    if (ms === null || ms === undefined) return "–";
    if (ms < 1000) return ms.toFixed(0) + " ms";
    if (ms < 120000) return (ms / 1000).toFixed(1) + " s";
    if (ms < 7200000) return (ms / 60000).toFixed(1) + " min";
    return (ms / 3600000).toFixed(1) + " h";
  }

  function fmtTime(t, span) {
    const d = new Date(t * 1000);
    const p = (n) => String(n).padStart(2, "0");
    const hm = p(d.getHours()) + ":" + p(d.getMinutes());
    return span > 2 * 86400 ? (d.getMonth() + 1) + "/" + d.getDate() + " " + hm : hm;
  }

  // A line chart over time: series [{name, cls, values: [[t, v|null]]}].
  function lineChart(svg, series, from, to, fmt) {
    clear(svg);
    const pts = series.reduce((n, s) => n + s.values.filter((p) => p[1] !== null).length, 0);
    if (pts === 0) { empty(svg); return; }
    const { w, h } = size(svg);
    const L = 56, R = 12, T = 10, B = 26;
    let max = 0;
    series.forEach((s) => s.values.forEach((p) => { if (p[1] !== null && p[1] > max) max = p[1]; }));
    if (max <= 0) max = 1;
    const span = Math.max(3600, to - from);
    const x = (t) => L + ((t - from) / span) * (w - L - R);
    const y = (v) => h - B - (v / max) * (h - T - B);
    for (let i = 0; i <= 4; i++) {
      const v = (max * i) / 4;
      el(svg, "line", { x1: L, x2: w - R, y1: y(v), y2: y(v), class: "grid-line" });
      el(svg, "text", { x: L - 6, y: y(v) + 4, "text-anchor": "end" }, fmt(v));
    }
    el(svg, "line", { x1: L, x2: w - R, y1: h - B, y2: h - B, class: "axis" });
    for (let i = 0; i <= 4; i++) {
      const t = from + (span * i) / 4;
      el(svg, "text", { x: x(t), y: h - 8, "text-anchor": i === 0 ? "start" : i === 4 ? "end" : "middle" },
        fmtTime(t, span));
    }
    series.forEach((s) => {
      let d = "";
      s.values.forEach((p) => {
        if (p[1] === null) return;
        d += (d === "" ? "M" : "L") + x(p[0]).toFixed(1) + "," + y(p[1]).toFixed(1);
      });
      if (d !== "") el(svg, "path", { d: d, class: "line s-" + s.cls, "data-series": s.name });
      s.values.forEach((p) => {
        if (p[1] === null) return;
        const c = el(svg, "circle", { cx: x(p[0]), cy: y(p[1]), r: 3, class: "point s-" + s.cls });
        el(c, "title", {}, s.name + " " + fmtTime(p[0], span) + ": " + fmt(p[1]));
      });
    });
    svg.dataset.points = String(pts);
  }

  // Horizontal stacked bars: rows [{label, parts: [{cls, v, name}]}].
  function barChart(svg, rows, fmt) {
    clear(svg);
    rows = rows.filter((r) => r.parts.some((p) => p.v > 0));
    if (rows.length === 0) { empty(svg); return; }
    const { w, h } = size(svg);
    const L = Math.min(200, w * 0.42), R = 44, T = 4;
    const bh = Math.max(10, Math.min(24, (h - T) / rows.length - 6));
    const max = Math.max(1, ...rows.map((r) => r.parts.reduce((a, p) => a + p.v, 0)));
    rows.forEach((r, i) => {
      const y0 = T + i * (bh + 6);
      if (y0 + bh > h) return;
      const label = r.label.length > 34 ? r.label.slice(0, 33) + "…" : r.label;
      const lt = el(svg, "text", { x: L - 6, y: y0 + bh / 2 + 4, "text-anchor": "end" }, label);
      el(lt, "title", {}, r.label);
      let x0 = L, total = 0;
      r.parts.forEach((p) => {
        if (p.v <= 0) return;
        const bw = (p.v / max) * (w - L - R);
        const b = el(svg, "rect", { x: x0, y: y0, width: Math.max(1, bw), height: bh,
          class: "bar s-" + p.cls, "data-value": p.v });
        el(b, "title", {}, r.label + " — " + p.name + ": " + fmt(p.v));
        x0 += bw;
        total += p.v;
      });
      el(svg, "text", { x: x0 + 4, y: y0 + bh / 2 + 4 }, fmt(total));
    });
    svg.dataset.points = String(rows.length);
  }

  function legend(id, items) {
    const box = $(id);
    box.textContent = "";
    items.forEach((it) => {
      const s = document.createElement("span");
      s.className = "s-" + it.cls;
      s.textContent = it.name;
      box.appendChild(s);
    });
  }

  async function api(kind, q) {
    const qs = new URLSearchParams(q).toString();
    const r = await fetch("/api/v1/analytics/" + kind + "?" + qs, {
      headers: { Authorization: "Bearer " + token() }, cache: "no-store" });
    let body = null;
    try { body = await r.json(); } catch (e) { body = null; }
    if (!r.ok) {
      const msg = body && body.error ? body.error : "HTTP " + r.status;
      const err = new Error(kind + ": " + msg);
      err.status = r.status;
      throw err;
    }
    return body;
  }

  function drawSeries(s, from, to) {
    lineChart($("chart-series"), KINDS.map((k) => ({
      name: k, cls: k, values: s.hours.map((h) => [h.t + 1800, h[k]]) })), from, to, fmtNum);
    legend("legend-series", KINDS.map((k) => ({ name: k, cls: k })));
  }

  function domainRows(list) {
    return list.slice(0, 10).map((d) => ({ label: d.domain, parts: [
      { cls: "delivered", name: "delivered", v: d.delivered },
      { cls: "deferred", name: "deferred", v: d.deferred },
      { cls: "bounced", name: "bounced", v: d.bounced },
      { cls: "accepted", name: "accepted", v: d.delivered + d.deferred + d.bounced === 0 ? d.accepted : 0 },
    ] }));
  }

  function drawDelays(d, from, to) {
    const ps = [["p50", "p50_ms"], ["p90", "p90_ms"], ["p99", "p99_ms"]];
    lineChart($("chart-delays"), ps.map(([n, k]) => ({
      name: n, cls: n, values: d.hours.map((h) => [h.t + 1800, h[k]]) })), from, to, fmtMs);
    legend("legend-delays", ps.map(([n]) => ({ name: n, cls: n })));
    const a = d.all;
    $("delays-summary").textContent = a.count === 0 ? "No deliveries in this range." :
      a.count + " deliveries: median " + fmtMs(a.p50_ms) + ", p90 " + fmtMs(a.p90_ms) +
      ", p99 " + fmtMs(a.p99_ms) + ".";
  }

  function reasonRows(list, cls) {
    return list.map((r) => ({ label: r.reason, parts: [{ cls: cls, name: "count", v: r.count }] }));
  }

  function drawTls(t) {
    let i = 0;
    barChart($("chart-tls"), t.versions.map((v) => ({ label: v.version, parts: [{
      cls: v.version === "none" ? "none" : "tls" + Math.min(3, i++), name: "transactions",
      v: v.count }] })), fmtNum);
    $("tls-summary").textContent = t.total === 0 ? "No outbound transactions in this range." :
      (100 * t.with_tls / t.total).toFixed(1) + "% of " + t.total +
      " outbound transactions used TLS.";
  }

  function drawDmarc(d) {
    barChart($("chart-dmarc"), d.domains.slice(0, 8).map((x) => ({ label: x.domain, parts: [
      { cls: "pass", name: "pass", v: x.pass }, { cls: "fail", name: "fail", v: x.count - x.pass },
    ] })), fmtNum);
    $("dmarc-summary").textContent = d.total === 0 ? "No DMARC-evaluated messages in this range." :
      d.pass + " of " + d.total + " passed; quarantined " + d.disposition.quarantine +
      ", rejected " + d.disposition.reject + ".";
  }

  async function refresh() {
    if (token() === "") {
      status("Enter the API token (http.token_file) to see the analytics.");
      return;
    }
    const to = Math.floor(Date.now() / 1000);
    const from = to - Number($("range").value) + 1;
    const q = { from: from, to: to };
    const dom = $("domain").value.trim(), snd = $("sender").value.trim();
    if (dom !== "") q.domain = dom;
    if (snd !== "") q.sender_domain = snd;
    const dq = Object.assign({}, q);
    delete dq.sender_domain;
    const jobs = [
      api("series", q).then((s) => drawSeries(s, from, to)),
      api("domains", q).then((d) => {
        barChart($("chart-domains"), domainRows(d.destination), fmtNum);
        barChart($("chart-senders"), domainRows(d.sender), fmtNum);
      }),
      api("delays", q).then((d) => drawDelays(d, from, to)),
      api("reasons", q).then((r) => {
        barChart($("chart-deferred"), reasonRows(r.deferred, "deferred"), fmtNum);
        barChart($("chart-bounced"), reasonRows(r.bounced, "bounced"), fmtNum);
      }),
      api("tls", q).then(drawTls),
      api("dmarc", dq).then(drawDmarc),
    ];
    const res = await Promise.allSettled(jobs);
    const bad = res.filter((r) => r.status === "rejected").map((r) => r.reason);
    if (bad.some((e) => e.status === 401)) status("The API token was refused.");
    else if (bad.length > 0) status(bad.map((e) => e.message).join("; "));
    else status("");
    document.body.dataset.loaded = String(Date.now());
  }

  function schedule() {
    if (timer !== null) clearInterval(timer);
    timer = setInterval(refresh, 30000);
    refresh();
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("token").value = token();
    $("token-form").addEventListener("submit", (e) => {
      e.preventDefault();
      sessionStorage.setItem("hikyaku-token", $("token").value.trim());
      schedule();
    });
    $("controls").addEventListener("submit", (e) => { e.preventDefault(); schedule(); });
    $("range").addEventListener("change", schedule);
    schedule();
  });
})();
