// "Shared with me": one card per slide another centre shared with me (GET /shared asks every
// peer). Cards show the share's pseudonym only; text goes in through textContent only.
(function () {
  "use strict";

  const status = document.getElementById("status");
  const cards = document.getElementById("shared");
  const down = document.getElementById("unavailable");

  const el = window.iainCommon.classed;

  function card(slide) {
    const link = el("a", "card shared-card");
    link.href = `/shared-view/${encodeURIComponent(slide.peer)}/${encodeURIComponent(slide.share_id)}`;
    link.dataset.shareId = slide.share_id;
    const body = el("div", "body");
    body.appendChild(el("p", "name", slide.pseudonym));
    const facts = el("dl");
    const add = (term, value) => { facts.append(el("dt", "", term), el("dd", "", value)); };
    add("From", slide.owner_centre);
    add("Permission", slide.permission);
    add("Until", new Date(slide.expires_at).toLocaleString());
    if (slide.note) add("Note", slide.note);
    body.appendChild(facts);
    link.appendChild(body);
    return link;
  }

  fetch("/shared")
    .then((r) => {
      if (r.status === 404) throw new Error("sharing between centres is not configured here");
      if (!r.ok) throw new Error(`HTTP ${r.status}`);
      return r.json();
    })
    .then((answer) => {
      const slides = answer.slides || [];
      status.textContent = slides.length === 0 ? "Nothing is shared with you."
        : `${slides.length} shared slide${slides.length === 1 ? "" : "s"}`;
      for (const slide of slides) cards.appendChild(card(slide));
      if ((answer.unavailable || []).length > 0) {
        down.hidden = false;
        down.textContent = "Not reachable now: " + answer.unavailable.map((u) => u.peer).join(", ");
      }
    })
    .catch((err) => {
      status.textContent = `Could not ask the other centres (${err.message}).`;
      status.className = "error";
    });
})();
