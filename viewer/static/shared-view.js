// The shared slide's page, after viewer.js: the consultant's annotations (proxied to the owner's
// node) and, with ?opinion=ID, the second-opinion request: pinned regions, accept / decline,
// the answer form. Every call goes to THIS node, which asks the owner's node as this user.
(function () {
  "use strict";

  const cfg = JSON.parse(document.getElementById("viewer-config").textContent);
  const $ = (id) => document.getElementById(id);
  const query = new URLSearchParams(window.location.search);
  const opinionId = query.get("opinion");
  const page = { opinion: null, annotations: null, permission: null };
  window.iainShared = page;

  const { csrf, el } = window.iainCommon;

  function showError(message) {
    const box = $("error");
    box.textContent = message;
    box.hidden = false;
  }

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

  // ------------------------------------------------------------------ second opinion
  const api = (suffix) => `/api/inbox/opinions/${encodeURIComponent(cfg.peer)}/${opinionId}${suffix}`;

  function post(suffix, body) {
    return fetch(api(suffix), {
      method: "POST",
      headers: { "content-type": "application/json", "x-csrf-token": csrf() },
      body: JSON.stringify(body || {}),
    }).then((r) => {
      if (!r.ok) throw new Error(`the request could not be updated (HTTP ${r.status})`);
      return r.json();
    });
  }

  function pinRegions(viewer, opinion) {
    const item = viewer.world.getItemAt(0);
    const mine = opinion.regions.filter((r) => r.share_id === cfg.shareId);
    viewer.clearOverlays();
    for (const r of mine) {
      const box = el("div", { class: "pinned-region", title: "pinned by the requester" });
      viewer.addOverlay({ element: box, location: item.imageToViewportRectangle(r.x, r.y, r.w, r.h) });
    }
    return mine;
  }

  function render(opinion) {
    page.opinion = opinion;
    const box = $("opinion");
    box.textContent = "";
    document.body.dataset.opinionState = opinion.state;
    const facts = el("dl", { class: "facts" });
    const add = (term, value) => { facts.append(el("dt", {}, term), el("dd", {}, value)); };
    add("From", opinion.requester_centre);
    add("State", opinion.state);
    add("Urgency", opinion.urgency);
    add("Due", new Date(opinion.due_at).toLocaleString());
    box.appendChild(facts);
    box.appendChild(el("p", { class: "question", id: "opinion-question" }, opinion.question));
    if (opinion.state === "sent") {
      const buttons = el("div", { class: "buttons" });
      const accept = el("button", { type: "button", id: "btn-accept" }, "Accept");
      const decline = el("button", { type: "button", id: "btn-decline" }, "Decline");
      accept.addEventListener("click", () => post("/accept").then(render).catch((e) => showError(e.message)));
      decline.addEventListener("click", () => post("/decline", { reason: "" }).then(render)
        .catch((e) => showError(e.message)));
      buttons.append(accept, decline);
      box.appendChild(buttons);
    } else if (opinion.state === "accepted") {
      const form = el("form", { id: "answer-form", class: "answer-form" });
      const text = el("textarea", { id: "answer-text", rows: "5", required: "", placeholder: "Your opinion" });
      const agreement = el("select", { id: "answer-agreement" });
      for (const [value, label] of [["yes", "agree"], ["partly", "partly agree"], ["no", "disagree"]]) {
        agreement.appendChild(el("option", { value }, label));
      }
      const diagnosis = el("input", { id: "answer-diagnosis", placeholder: "Diagnosis (optional)" });
      const send = el("button", { type: "submit", id: "btn-answer" }, "Send answer");
      form.append(text, agreement, diagnosis, send);
      form.addEventListener("submit", (event) => {
        event.preventDefault();
        post("/answer", {
          text: text.value, agreement: agreement.value, diagnosis: diagnosis.value || null,
        }).then(render).catch((e) => showError(e.message));
      });
      box.appendChild(form);
    } else if (opinion.answer) {
      box.appendChild(el("p", { class: "answer", id: "opinion-answer" }, opinion.answer.text));
      box.appendChild(el("p", { class: "status" }, `agreement: ${opinion.answer.agreement}`));
    }
  }

  function loadOpinion(viewer) {
    $("opinion-panel").hidden = false;
    return fetch(api("")).then((r) => {
      if (!r.ok) throw new Error(`The request could not be loaded (HTTP ${r.status}).`);
      return r.json();
    }).then((opinion) => {
      render(opinion);
      const regions = pinRegions(viewer, opinion);
      const linked = query.has("x_px") || query.has("x_um");
      if (regions.length > 0 && !linked) {
        const r = regions[0];
        const rect = viewer.world.getItemAt(0).imageToViewportRectangle(r.x, r.y, r.w, r.h);
        viewer.viewport.fitBounds(rect, true);
      }
    });
  }

  // ------------------------------------------------------------------ annotations
  // The annotation layer (annotations.js), pointed at this node's proxy; at the owner's node the
  // consultant is "<this node>:<username>", which is how the layer knows their own shapes.
  function attachAnnotations(viewer, canEdit) {
    if (!(window.iainAnnotations && window.iainAnnotations.attach)) return Promise.resolve();
    const json = (url) => fetch(url).then((r) => (r.ok ? r.json() : null));
    return Promise.all([json("/api/me"), json("/api/federation/peers")]).then(([me, fed]) => {
      const user = me && fed ? `${fed.node}:${me.username}` : null;
      page.annotations = window.iainAnnotations.attach(viewer, {
        base: cfg.annotationsBase, canEdit, panel: $("annotations-panel"), user,
      });
      window.iain.annotations = page.annotations;
    });
  }

  opened().then((viewer) => {
    const steps = [];
    if (opinionId && /^\d+$/.test(opinionId)) steps.push(loadOpinion(viewer));
    steps.push(fetch(`/shared/${encodeURIComponent(cfg.peer)}`)
      .then((r) => (r.ok ? r.json() : []))
      .then((list) => {
        const share = list.find((s) => s.share_id === cfg.shareId);
        page.permission = share ? share.permission : null;
        return attachAnnotations(viewer, page.permission === "annotate");
      }));
    return Promise.all(steps).then(() => { document.body.dataset.shared = "ready"; });
  }).catch((err) => showError(err.message));
})();
