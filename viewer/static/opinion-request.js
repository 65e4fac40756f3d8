// On a slide of my centre: ask another centre for a second opinion on what is on screen (the
// pinned region is the current viewport, level-0 pixels), and see the requests already made on
// this slide with their answers; the consultants' annotations are in the annotation layer.
(function () {
  "use strict";

  const cfg = JSON.parse(document.getElementById("viewer-config").textContent);
  const panel = document.querySelector("aside.panel");
  if (!panel) return;
  const page = { requests: [], created: null };
  window.iainOpinion = page;

  const { csrf, el } = window.iainCommon;

  function send(url, body) {
    return fetch(url, {
      method: "POST",
      headers: { "content-type": "application/json", "x-csrf-token": csrf() },
      body: JSON.stringify(body || {}),
    }).then((r) => r.json().then((data) => {
      if (!r.ok) throw new Error(data.detail || `HTTP ${r.status}`);
      return data;
    }));
  }

  // ------------------------------------------------------------------ the form
  const section = el("section", { id: "opinion-request" });
  section.appendChild(el("h2", {}, "Second opinion"));
  const form = el("form", { id: "opinion-form", class: "opinion-form" });
  const question = el("textarea", { id: "opinion-question", rows: "3", required: "",
    placeholder: "Clinical question" });
  const centre = el("select", { id: "opinion-centre", "aria-label": "centre" });
  const consultant = el("input", { id: "opinion-consultant", placeholder: "colleague (empty: pool)" });
  const urgency = el("select", { id: "opinion-urgency", "aria-label": "urgency" });
  for (const u of ["routine", "urgent"]) urgency.appendChild(el("option", { value: u }, u));
  const due = el("input", { id: "opinion-due", type: "date", "aria-label": "due date" });
  const tomorrow = new Date(Date.now() + 3 * 86400e3);
  due.value = tomorrow.toISOString().slice(0, 10);
  const submit = el("button", { type: "submit", id: "btn-ask" }, "Ask (pins this view)");
  const out = el("output", { id: "opinion-status", class: "status" });
  form.append(question, centre, consultant, urgency, due, submit, out);
  section.appendChild(form);
  const list = el("div", { id: "opinion-requests" });
  section.appendChild(list);
  panel.insertBefore(section, panel.firstChild);

  // Only on a node that federates with others (and has accounts): otherwise the panel goes.
  const peers = fetch("/api/federation/peers")
    .then((r) => (r.ok ? r.json() : null))
    .catch(() => null)
    .then((answer) => {
      if (!answer) {
        section.remove();
        return false;
      }
      for (const name of answer.peers) centre.appendChild(el("option", { value: name }, name));
      if (answer.peers.length === 0) submit.disabled = true;
      return true;
    });

  function viewportRegion() {
    const viewer = window.iain.viewer;
    const item = viewer.world.getItemAt(0);
    const r = item.viewportToImageRectangle(viewer.viewport.getBounds(true));
    const size = item.getContentSize();
    const x = Math.max(0, Math.floor(r.x));
    const y = Math.max(0, Math.floor(r.y));
    const w = Math.min(size.x, Math.ceil(r.x + r.width)) - x;
    const h = Math.min(size.y, Math.ceil(r.y + r.height)) - y;
    return { slide_id: cfg.slideId, x, y, w: Math.max(1, w), h: Math.max(1, h) };
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const dueAt = new Date(`${due.value}T18:00:00`);
    const draft = {
      slide_ids: [cfg.slideId],
      regions: [viewportRegion()],
      question: question.value,
      urgency: urgency.value,
      due_at: dueAt.toISOString(),
      consultant: { centre: centre.value, username: consultant.value.trim() },
    };
    out.textContent = "Sending…";
    send("/api/opinions", draft)
      .then((created) => send(`/api/opinions/${created.id}/send`))
      .then((sent) => {
        page.created = sent;
        out.textContent = `Request #${sent.id} sent to ${centre.value}.`;
        out.dataset.id = String(sent.id);
        return load();
      })
      .catch((err) => { out.textContent = `Not sent: ${err.message}`; });
  });

  // ------------------------------------------------------------------ requests on this slide
  function render(requests) {
    list.textContent = "";
    for (const o of requests) {
      const item = el("div", { class: "opinion", "data-id": String(o.id), "data-state": o.state });
      const to = o.consultant.name ? `${o.consultant.name} @ ${o.consultant.centre}` : `${o.consultant.centre} pool`;
      item.appendChild(el("p", { class: "opinion-head" }, `#${o.id} → ${to}: ${o.state}`));
      if (o.answer) {
        item.appendChild(el("p", { class: "answer" }, o.answer.text));
        item.appendChild(el("p", { class: "status" },
          `agreement: ${o.answer.agreement}${o.answer.diagnosis ? ` · ${o.answer.diagnosis}` : ""}`));
      }
      list.appendChild(item);
    }
  }

  function load() {
    return fetch("/api/opinions").then((r) => (r.ok ? r.json() : [])).then((all) => {
      page.requests = all.filter((o) => o.role === "requester" &&
        o.slides.some((s) => s.slide_id === cfg.slideId));
      render(page.requests);
      const layer = window.iain && window.iain.annotations;
      return layer && layer.reload ? layer.reload() : null;  // answers bring annotations
    });
  }
  page.reload = load;

  function opened() {
    return new Promise((resolve) => {
      const tick = () => {
        const v = window.iain && window.iain.viewer;
        if (v && v.world.getItemCount() > 0 && document.body.dataset.state === "open") resolve(v);
        else setTimeout(tick, 50);
      };
      tick();
    });
  }

  Promise.all([peers, opened()]).then(([federated]) => {
    if (!federated) return null;
    return load().then(() => { document.body.dataset.opinions = "ready"; });
  }).catch((err) => { out.textContent = err.message; });
})();
