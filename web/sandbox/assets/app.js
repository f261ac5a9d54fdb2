// app.js — the hikyaku sandbox UI (issue 13). Vanilla JS, no framework,
// no build step. It talks to the Mailpit-compatible API of the http
// process (docs/ARCHITECTURE.md, "Sandbox" and "Web UI").
//
// Captured mail is hostile. Every value from a message is put into the page
// with textContent or as an attribute value set through the DOM (never
// innerHTML); the HTML part is shown only in an <iframe sandbox> without
// allow-scripts, from /view/{ID}.html, which the server sends with its own
// script-less CSP. The page's CSP (src/obs/web.c) forbids inline script.
//
// The inbox is chosen by a token kept in sessionStorage and sent as
// "Authorization: Bearer"; requests that change state send
// Content-Type: application/json (the server's CSRF rule). The live list
// reads Server-Sent Events from /api/events with fetch() and a stream
// reader, not EventSource, so that the Authorization header can be sent.
"use strict";

(function () {
  const PAGE = 50;
  const TOKEN_KEY = "hikyaku.sandbox.token";

  const state = {
    token: sessionStorage.getItem(TOKEN_KEY) || "",
    start: 0,
    total: 0,
    query: "",
    items: [],
    current: null, // the open message (API object)
    currentRead: false,
    tab: "html",
    remote: false,
    events: null, // AbortController of the event stream
    reloadTimer: null,
    generation: 0, // bumps when the inbox changes: late answers are dropped
  };

  const $ = (id) => document.getElementById(id);

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  function status(text, isError) {
    const s = $("status");
    s.textContent = text || "";
    s.classList.toggle("error", !!isError);
  }

  function authHeaders() {
    const h = {};
    if (state.token) h["Authorization"] = "Bearer " + state.token;
    return h;
  }

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  // One API call. body (an object) is sent as JSON; as: "json", "text",
  // "blob" or "none".
  async function api(method, path, body, as) {
    const init = { method, headers: authHeaders(), credentials: "same-origin", cache: "no-store" };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const r = await fetch(path, init);
    if (!r.ok) {
      let msg = r.status + " " + r.statusText;
      try {
        const j = await r.json();
        if (j && typeof j.error === "string") msg = j.error;
      } catch (e) {
        /* not JSON */
      }
      if (r.status === 401) msg = "The inbox token was not accepted (" + msg + ")";
      throw new ApiError(r.status, msg);
    }
    if (as === "text") return r.text();
    if (as === "blob") return r.blob();
    if (as === "none") return null;
    return r.json();
  }

  function addr(a) {
    if (!a) return "";
    const name = a.Name || "";
    const address = a.Address || "";
    if (name && address) return name + " <" + address + ">";
    return name || address;
  }

  function addrs(list) {
    return Array.isArray(list) ? list.map(addr).join(", ") : "";
  }

  function fmtSize(n) {
    n = Number(n) || 0;
    if (n < 1024) return n + " B";
    if (n < 1024 * 1024) return (n / 1024).toFixed(1) + " kB";
    return (n / 1024 / 1024).toFixed(1) + " MB";
  }

  function fmtDate(s) {
    const d = new Date(s);
    return isNaN(d.getTime()) ? String(s || "") : d.toLocaleString();
  }

  // ---- the list ----

  function listPath() {
    const p = "start=" + state.start + "&limit=" + PAGE;
    if (state.query) return "/api/v1/search?query=" + encodeURIComponent(state.query) + "&" + p;
    return "/api/v1/messages?" + p;
  }

  async function loadList() {
    const gen = state.generation;
    let j;
    try {
      j = await api("GET", listPath());
    } catch (e) {
      if (gen === state.generation) status(e.message, true);
      return;
    }
    if (gen !== state.generation) return;
    state.items = Array.isArray(j.messages) ? j.messages : [];
    state.total = Number(j.messages_count !== undefined ? j.messages_count : j.total) || 0;
    if (state.start > 0 && state.items.length === 0 && state.total > 0) {
      state.start = Math.max(0, Math.floor((state.total - 1) / PAGE) * PAGE);
      return loadList();
    }
    renderList(j);
  }

  function renderList(j) {
    const ul = $("list");
    clear(ul);
    for (const m of state.items) {
      const li = el("li", "item" + (m.Read ? "" : " unread"));
      li.dataset.id = String(m.ID);
      li.tabIndex = 0;
      if (state.current && state.current.ID === m.ID) li.classList.add("selected");
      const top = el("div", "row1");
      top.appendChild(el("span", "dot", m.Read ? "" : "\u25cf"));
      top.appendChild(el("span", "from", addr(m.From) || "(no sender)"));
      top.appendChild(el("span", "when", fmtDate(m.Created)));
      li.appendChild(top);
      const row2 = el("div", "row2");
      row2.appendChild(el("span", "subject", m.Subject || "(no subject)"));
      if (Number(m.Attachments) > 0) {
        const n = Number(m.Attachments);
        const clip = el("span", "clip", n + (n === 1 ? " file" : " files"));
        clip.title = n + (n === 1 ? " attachment" : " attachments");
        row2.appendChild(clip);
      }
      li.appendChild(row2);
      li.appendChild(el("div", "to", "To: " + addrs(m.To)));
      li.appendChild(el("div", "snippet", m.Snippet || ""));
      li.addEventListener("click", () => openMessage(String(m.ID), !m.Read));
      li.addEventListener("keydown", (ev) => {
        if (ev.key === "Enter") openMessage(String(m.ID), !m.Read);
      });
      ul.appendChild(li);
    }
    $("empty").hidden = state.items.length > 0;
    const total = Number(j.total) || 0;
    const unread = Number(j.unread) || 0;
    $("counts").textContent =
      (state.query ? state.total + " found, " : "") + total + " messages, " + unread + " unread";
    const first = state.items.length ? state.start + 1 : 0;
    $("range").textContent = first + "\u2013" + (state.start + state.items.length) + " of " + state.total;
    $("prev").disabled = state.start === 0;
    $("next").disabled = state.start + state.items.length >= state.total;
  }

  function scheduleReload() {
    if (state.reloadTimer) return;
    state.reloadTimer = setTimeout(() => {
      state.reloadTimer = null;
      loadList();
    }, 150);
  }

  // ---- live updates: Server-Sent Events over fetch ----

  function setLive(on) {
    const s = $("live");
    s.textContent = on ? "live" : "offline";
    s.classList.toggle("off", !on);
  }

  function handleEvent(type, data) {
    if (type === "new" || type === "delete" || type === "update" || type === "message") {
      scheduleReload();
      if (type === "new") {
        try {
          const m = JSON.parse(data);
          status("New message: " + (m.Subject || "(no subject)"));
        } catch (e) {
          /* only a hint */
        }
      }
    }
  }

  async function runEvents(ctl) {
    let delay = 500;
    while (!ctl.signal.aborted) {
      try {
        const r = await fetch("/api/events", {
          headers: Object.assign({ Accept: "text/event-stream" }, authHeaders()),
          cache: "no-store",
          signal: ctl.signal,
        });
        if (!r.ok || !r.body) throw new ApiError(r.status, "events: " + r.status);
        setLive(true);
        delay = 500;
        scheduleReload(); // whatever arrived while we were away
        const reader = r.body.getReader();
        const dec = new TextDecoder();
        let buf = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += dec.decode(value, { stream: true });
          if (buf.length > 1 << 20) buf = ""; // a runaway event: drop it
          let i;
          while ((i = buf.search(/\r?\n\r?\n/)) >= 0) {
            const block = buf.slice(0, i);
            buf = buf.slice(i).replace(/^\r?\n\r?\n/, "");
            let type = "message";
            const data = [];
            for (const line of block.split(/\r?\n/)) {
              if (line.startsWith(":")) continue;
              const c = line.indexOf(":");
              const field = c < 0 ? line : line.slice(0, c);
              let v = c < 0 ? "" : line.slice(c + 1);
              if (v.startsWith(" ")) v = v.slice(1);
              if (field === "event") type = v;
              else if (field === "data") data.push(v);
            }
            if (data.length) handleEvent(type, data.join("\n"));
          }
        }
      } catch (e) {
        if (ctl.signal.aborted) return;
      }
      setLive(false);
      if (ctl.signal.aborted) return;
      await new Promise((res) => setTimeout(res, delay));
      delay = Math.min(delay * 2, 10000);
    }
  }

  function startEvents() {
    if (state.events) state.events.abort();
    state.events = new AbortController();
    runEvents(state.events);
  }

  // ---- one message ----

  function msgPath(id) {
    return "/api/v1/message/" + encodeURIComponent(id);
  }

  async function openMessage(id, wasUnread) {
    const gen = state.generation;
    let m;
    try {
      m = await api("GET", msgPath(id));
    } catch (e) {
      status(e.message, true);
      return;
    }
    if (gen !== state.generation) return;
    state.current = m;
    state.remote = false;
    for (const li of $("list").children) li.classList.toggle("selected", li.dataset.id === id);
    $("view").hidden = false;
    $("release-form").hidden = true;
    $("m-from").textContent = addr(m.From);
    $("m-to").textContent = addrs(m.To);
    $("m-cc").textContent = addrs(m.Cc);
    $("m-cc").hidden = $("m-cc-t").hidden = !(Array.isArray(m.Cc) && m.Cc.length);
    $("m-subject").textContent = m.Subject || "";
    $("m-date").textContent = fmtDate(m.Date);
    $("m-size").textContent = fmtSize(m.Size);
    $("text").textContent = m.Text || "";
    renderParts(m);
    showTab(m.HTML ? state.tab : state.tab === "html" ? "text" : state.tab);
    if (wasUnread) {
      try {
        await api("PUT", "/api/v1/messages", { IDs: [id], Read: true }, "none");
      } catch (e) {
        status(e.message, true);
      }
      scheduleReload();
    }
  }

  function showTab(name) {
    state.tab = name;
    for (const b of document.querySelectorAll(".tabs [data-tab]")) {
      const on = b.dataset.tab === name;
      b.classList.toggle("active", on);
      b.setAttribute("aria-selected", on ? "true" : "false");
    }
    for (const t of document.querySelectorAll(".tab")) t.hidden = t.id !== "tab-" + name;
    if (!state.current) return;
    if (name === "html") renderHtml();
    else if (name === "headers") loadHeaders();
    else if (name === "raw") loadRaw();
    else if (name === "checks") loadChecks();
  }

  function viewUrl(id) {
    return "/view/" + encodeURIComponent(id) + ".html" + (state.remote ? "?remote=1" : "");
  }

  // The HTML part in a sandboxed frame: no allow-scripts, no
  // allow-same-origin (an opaque origin: it cannot reach the UI, its
  // storage or the API). Links may open in a new tab, outside the sandbox.
  function makeFrame() {
    const f = document.createElement("iframe");
    f.setAttribute("sandbox", "allow-popups allow-popups-to-escape-sandbox");
    f.setAttribute("referrerpolicy", "no-referrer");
    f.setAttribute("title", "Message HTML");
    f.className = "msg-frame";
    return f;
  }

  async function renderHtml() {
    const m = state.current;
    const box = $("frame-box");
    clear(box);
    $("no-html").hidden = !!m.HTML;
    $("btn-remote").disabled = state.remote || !m.HTML;
    $("remote-note").textContent = state.remote ? "Remote images are shown." : "Remote images are blocked.";
    if (!m.HTML) return;
    const f = makeFrame();
    if (!state.token) {
      // The server serves the frame itself, with its own strict CSP.
      f.src = viewUrl(String(m.ID));
      box.appendChild(f);
      return;
    }
    // A frame's request cannot carry the Authorization header: fetch the
    // (server-sanitized) document and show it with srcdoc. A srcdoc frame
    // inherits this page's CSP (no inline script at all), on top of the
    // sandbox attribute.
    const gen = state.generation;
    try {
      const html = await api("GET", viewUrl(String(m.ID)), undefined, "text");
      if (gen !== state.generation || state.current !== m) return;
      f.srcdoc = html;
      box.appendChild(f);
    } catch (e) {
      status(e.message, true);
    }
  }

  async function loadHeaders() {
    const m = state.current;
    const tb = $("headers");
    clear(tb);
    let h;
    try {
      h = await api("GET", msgPath(String(m.ID)) + "/headers");
    } catch (e) {
      status(e.message, true);
      return;
    }
    if (state.current !== m) return;
    for (const name of Object.keys(h)) {
      const vals = Array.isArray(h[name]) ? h[name] : [h[name]];
      for (const v of vals) {
        const tr = el("tr");
        tr.appendChild(el("th", "", name));
        tr.appendChild(el("td", "", v));
        tb.appendChild(tr);
      }
    }
  }

  async function loadRaw() {
    const m = state.current;
    try {
      const t = await api("GET", msgPath(String(m.ID)) + "/raw", undefined, "text");
      if (state.current === m) $("raw").textContent = t;
    } catch (e) {
      status(e.message, true);
    }
  }

  function renderParts(m) {
    const tb = $("parts");
    clear(tb);
    const rows = [];
    for (const p of Array.isArray(m.Inline) ? m.Inline : []) rows.push(["inline", p]);
    for (const p of Array.isArray(m.Attachments) ? m.Attachments : []) rows.push(["attachment", p]);
    if (rows.length === 0) {
      const tr = el("tr");
      const td = el("td", "empty", "No attachments or inline parts.");
      td.colSpan = 6;
      tr.appendChild(td);
      tb.appendChild(tr);
    }
    for (const [kind, p] of rows) {
      const tr = el("tr");
      tr.appendChild(el("td", "", p.PartID));
      tr.appendChild(el("td", "", kind));
      tr.appendChild(el("td", "", p.ContentType));
      tr.appendChild(el("td", "", p.FileName));
      tr.appendChild(el("td", "", fmtSize(p.Size)));
      const td = el("td");
      const a = el("a", "download", "Download");
      const url = msgPath(String(m.ID)) + "/part/" + encodeURIComponent(String(p.PartID));
      a.href = url;
      a.setAttribute("download", p.FileName || "part-" + p.PartID);
      a.addEventListener("click", (ev) => {
        if (!state.token) return; // the browser fetches it itself
        ev.preventDefault();
        download(url, p.FileName || "part-" + p.PartID);
      });
      td.appendChild(a);
      tr.appendChild(td);
      tb.appendChild(tr);
    }
  }

  // With a token the browser's own download cannot authenticate: fetch
  // the part and hand it over as a blob.
  async function download(url, name) {
    try {
      const b = await api("GET", url, undefined, "blob");
      const u = URL.createObjectURL(b);
      const a = document.createElement("a");
      a.href = u;
      a.download = name;
      document.body.appendChild(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(u), 60000);
    } catch (e) {
      status(e.message, true);
    }
  }

  function resultClass(r) {
    r = String(r || "").toLowerCase();
    if (r === "pass") return "pass";
    if (r === "fail" || r === "permerror" || r === "softfail") return "fail";
    return "neutral";
  }

  async function loadChecks() {
    const m = state.current;
    let c;
    try {
      c = await api("GET", msgPath(String(m.ID)) + "/check");
    } catch (e) {
      status(e.message, true);
      return;
    }
    if (state.current !== m) return;
    const auth = $("auth");
    clear(auth);
    const ar = c.authResults;
    for (const method of ["spf", "dkim", "dmarc", "arc"]) {
      const rs = ar && Array.isArray(ar[method]) ? ar[method] : [];
      const tr = el("tr");
      tr.appendChild(el("th", "", method.toUpperCase()));
      const td = el("td");
      if (rs.length === 0) td.appendChild(el("span", "result neutral", "none"));
      for (const r of rs) {
        const span = el("span", "result " + resultClass(r.result), r.result);
        td.appendChild(span);
        const props = r.props && typeof r.props === "object" ? r.props : {};
        const bits = Object.keys(props).map((k) => k + "=" + props[k]);
        if (r.reason) bits.push("(" + r.reason + ")");
        if (bits.length) td.appendChild(el("span", "props", " " + bits.join(" ")));
      }
      tr.appendChild(td);
      auth.appendChild(tr);
    }
    {
      // the content filter's verdict (rspamd or SpamAssassin, through a milter)
      const sp = c.spam;
      const tr = el("tr");
      tr.appendChild(el("th", "", "SPAM"));
      const td = el("td");
      if (!sp) {
        td.appendChild(el("span", "result neutral", "no score"));
      } else {
        const verdict = sp.isSpam === true ? "spam" : sp.isSpam === false ? "ham" : "scored";
        td.appendChild(el("span", "result " + (sp.isSpam === true ? "fail" : sp.isSpam === false ? "pass" : "neutral"), verdict));
        const bits = [];
        if (typeof sp.score === "number") bits.push("score " + sp.score + (typeof sp.threshold === "number" ? " / " + sp.threshold : ""));
        bits.push("(" + sp.header + ")");
        td.appendChild(el("span", "props", " " + bits.join(" ")));
      }
      tr.appendChild(td);
      auth.appendChild(tr);
    }
    if (!ar) {
      const tr = el("tr");
      const td = el("td", "empty", "No Authentication-Results header.");
      td.colSpan = 2;
      tr.appendChild(td);
      auth.appendChild(tr);
    }
    const w = $("warnings");
    clear(w);
    const warns = Array.isArray(c.warnings) ? c.warnings : [];
    for (const x of warns) w.appendChild(el("li", "warn " + (x.severity === "error" ? "fail" : "neutral"), x.text));
    if (Array.isArray(c.missingHeaders) && c.missingHeaders.length)
      w.appendChild(el("li", "warn neutral", "Missing header fields: " + c.missingHeaders.join(", ")));
    w.appendChild(
      el("li", "info", "Size " + fmtSize(c.size) + "; longest line " + (c.maxLineLength || 0) + " octets" +
        "; lines over 998: " + (c.linesOver998 || 0) + ", over 78: " + (c.linesOver78 || 0))
    );
    const lt = $("links");
    clear(lt);
    const links = Array.isArray(c.links) ? c.links : [];
    for (const l of links) {
      const tr = el("tr", l.malformed ? "malformed" : "");
      tr.appendChild(el("td", "url", l.url)); // text, never a live link
      tr.appendChild(el("td", "", l.text));
      tr.appendChild(el("td", "", l.source));
      tr.appendChild(el("td", l.malformed ? "result fail" : "result pass",
        l.malformed ? "malformed" + (l.reason ? ": " + l.reason : "") : "ok"));
      lt.appendChild(tr);
    }
    if (links.length === 0) {
      const tr = el("tr");
      const td = el("td", "empty", "No links.");
      td.colSpan = 4;
      tr.appendChild(td);
      lt.appendChild(tr);
    }
    if (c.linksTruncated) status("Only the first links are listed.");
  }

  // ---- actions ----

  async function markUnread() {
    const m = state.current;
    if (!m) return;
    try {
      await api("PUT", "/api/v1/messages", { IDs: [String(m.ID)], Read: false }, "none");
      status("Marked unread.");
    } catch (e) {
      status(e.message, true);
    }
    scheduleReload();
  }

  async function deleteCurrent() {
    const m = state.current;
    if (!m) return;
    try {
      await api("DELETE", "/api/v1/messages", { IDs: [String(m.ID)] }, "none");
      status("Deleted.");
      closeView();
    } catch (e) {
      status(e.message, true);
    }
    scheduleReload();
  }

  function closeView() {
    state.current = null;
    $("view").hidden = true;
    clear($("frame-box"));
  }

  function openRelease() {
    const m = state.current;
    if (!m) return;
    const to = [].concat(m.To || [], m.Cc || [], m.Bcc || []).map((a) => a && a.Address).filter(Boolean);
    $("release-to").value = to.join(", ");
    $("release-form").hidden = false;
    $("release-to").focus();
  }

  async function release(ev) {
    ev.preventDefault();
    const m = state.current;
    if (!m) return;
    const to = $("release-to").value.split(/[\s,;]+/).filter(Boolean);
    if (to.length === 0) {
      status("Type at least one address.", true);
      return;
    }
    try {
      await api("POST", msgPath(String(m.ID)) + "/release", { To: to }, "none");
      status("Released to " + to.join(", ") + ".");
      $("release-form").hidden = true;
    } catch (e) {
      status(e.message, true);
    }
  }

  function useToken(t) {
    state.token = t;
    if (t) sessionStorage.setItem(TOKEN_KEY, t);
    else sessionStorage.removeItem(TOKEN_KEY);
    state.generation++;
    state.start = 0;
    closeView();
    clear($("list"));
    status("");
    startEvents();
    loadList();
  }

  function init() {
    $("token").value = state.token;
    $("token-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      useToken($("token").value.trim());
    });
    $("search-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      state.query = $("search").value.trim();
      state.start = 0;
      loadList();
    });
    $("search-clear").addEventListener("click", () => {
      $("search").value = "";
      state.query = "";
      state.start = 0;
      loadList();
    });
    $("prev").addEventListener("click", () => {
      state.start = Math.max(0, state.start - PAGE);
      loadList();
    });
    $("next").addEventListener("click", () => {
      state.start += PAGE;
      loadList();
    });
    for (const b of document.querySelectorAll(".tabs [data-tab]"))
      b.addEventListener("click", () => showTab(b.dataset.tab));
    $("btn-remote").addEventListener("click", () => {
      state.remote = true;
      renderHtml();
    });
    $("btn-unread").addEventListener("click", markUnread);
    $("btn-delete").addEventListener("click", deleteCurrent);
    $("btn-release").addEventListener("click", openRelease);
    $("release-cancel").addEventListener("click", () => {
      $("release-form").hidden = true;
    });
    $("release-form").addEventListener("submit", release);
    startEvents();
    loadList();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
