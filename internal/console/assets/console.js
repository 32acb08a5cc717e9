// The dashboard's only script: it swaps the view the agent sends, adds
// each new event to the timeline, and sends an operator's action, after a
// confirmation, with the admin token (asked once, kept for the tab).
"use strict";
(() => {
  const self = document.body.dataset.node;
  const live = document.getElementById("live");
  const view = document.getElementById("view");
  const timeline = document.getElementById("timeline");
  const toast = document.getElementById("toast");
  const say = (text) => { toast.textContent = text; toast.hidden = false; clearTimeout(say.t); say.t = setTimeout(() => { toast.hidden = true; }, 8000); };
  const lastID = () => { const li = timeline.querySelector("li"); return li ? li.dataset.id : ""; };

  let es;
  const connect = () => {
    const after = lastID();
    es = new EventSource("api/v1/console/stream" + (after ? "?after=" + encodeURIComponent(after) : ""));
    es.onopen = () => { live.dataset.state = "live"; live.textContent = "live"; };
    es.onerror = () => { live.dataset.state = "lost"; live.textContent = "reconnecting…"; };
    es.addEventListener("view", (m) => { view.innerHTML = m.data; });
    es.addEventListener("event", (m) => {
      const t = document.createElement("template");
      t.innerHTML = m.data.trim();
      const li = t.content.firstElementChild;
      if (!li || timeline.querySelector('li[data-id="' + li.dataset.id + '"]')) return;
      li.classList.add("new");
      // Newest first: an event from a node whose clock is behind goes
      // where its time puts it.
      let before = timeline.firstElementChild;
      while (before && before.dataset.id > li.dataset.id) before = before.nextElementSibling;
      timeline.insertBefore(li, before);
      while (timeline.children.length > 500) timeline.lastElementChild.remove();
    });
  };
  connect();

  document.addEventListener("click", async (e) => {
    const b = e.target.closest("button[data-action]");
    if (!b || !confirm(b.dataset.confirm)) return;
    const node = b.dataset.node;
    const url = node === self ? b.dataset.path.replace(/^\//, "") : "api/v1/nodes/" + encodeURIComponent(node) + b.dataset.path;
    const send = () => {
      const h = {"X-Haven-Operator": "dashboard@" + location.hostname};
      const token = sessionStorage.getItem("haven-token");
      if (token) h.Authorization = "Bearer " + token;
      return fetch(url, {method: b.dataset.action, headers: h});
    };
    b.disabled = true;
    try {
      let r = await send();
      if (r.status === 401) {
        const token = prompt("The admin token (admin.token_file) for this action:");
        if (!token) return;
        sessionStorage.setItem("haven-token", token.trim());
        r = await send();
      }
      const body = await r.json().catch(() => ({}));
      say(r.ok ? "done: " + b.textContent : "refused (" + r.status + "): " + (body.error || r.statusText));
    } catch (err) {
      say("failed: " + err);
    } finally {
      b.disabled = false;
    }
  });
})();
