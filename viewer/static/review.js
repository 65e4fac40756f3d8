// Access review (centre admins): GET /api/review/slides, then one slide's accesses and shares;
// "Revoke" is POST /api/shares/{id}/revoke with the session's CSRF token.
(function () {
  "use strict";

  const $ = (id) => document.getElementById(id);

  const el = window.iainCommon.classed;

  function row(cells, header) {
    const tr = el("tr");
    for (const c of cells) {
      const cell = el(header ? "th" : "td");
      if (c instanceof Node) cell.appendChild(c); else cell.textContent = c === null ? "" : String(c);
      tr.appendChild(cell);
    }
    return tr;
  }

  const { csrf } = window.iainCommon;

  function regions(r) {
    if (!r) return "";
    // keys: storage level ("0" = full size) or DeepZoom level ("dz12": tiles of the viewer)
    const name = (k) => (k.startsWith("dz") ? `DeepZoom ${k.slice(2)}` : `level ${k}`);
    return Object.entries(r).map(([k, b]) => `${name(k)}: cols ${b[0]}–${b[2]}, rows ${b[1]}–${b[3]}`)
      .join("; ");
  }

  function showSlide(slideId, name) {
    fetch(`/api/review/slides/${encodeURIComponent(slideId)}`)
      .then((r) => { if (!r.ok) throw new Error(`HTTP ${r.status}`); return r.json(); })
      .then((data) => {
        $("review-slide").hidden = false;
        $("review-title").textContent = name;
        const shares = $("review-shares");
        shares.textContent = "";
        shares.appendChild(row(["Share", "To", "Permission", "Expires", "State", ""], true));
        for (const s of data.shares) {
          const button = el("button", "", "Revoke");
          button.type = "button";
          button.disabled = !s.live;
          button.dataset.share = s.share_id;
          button.addEventListener("click", () => {
            fetch(`/api/shares/${encodeURIComponent(s.share_id)}/revoke`, {
              method: "POST", headers: { "X-CSRF-Token": csrf() },
            }).then((r) => { if (r.ok) showSlide(slideId, name); });
          });
          const to = `${s.recipient.kind} ${s.recipient.name} @ ${s.recipient.centre}`;
          const stateText = s.live ? "live" : (s.revoked_at ? "revoked" : "expired");
          shares.appendChild(row([s.share_id, to, s.permission, s.expires_at, stateText, button]));
        }
        const accesses = $("review-accesses");
        accesses.textContent = "";
        accesses.appendChild(row(["When", "Who", "Centre", "What", "Share", "Request", "Regions"], true));
        for (const a of data.accesses) {
          accesses.appendChild(row([a.since || a.at, a.user, a.centre, `${a.action} (${a.outcome})`,
            a.share_id, a.opinion_id ? `opinion #${a.opinion_id}` : (a.share_note || ""),
            regions(a.regions)]));
        }
        document.body.dataset.state = "slide";
      })
      .catch((err) => { $("status").textContent = `Review could not be loaded (${err.message}).`; });
  }

  fetch("/api/review/slides")
    .then((r) => {
      if (r.status === 403) throw new Error("the access review is for your centre's admin");
      if (!r.ok) throw new Error(`HTTP ${r.status}`);
      return r.json();
    })
    .then((slides) => {
      $("status").textContent = slides.length ? "" : "No slides.";
      const table = $("review-slides");
      table.appendChild(row(["Slide", "Accesses", "Centres", "Last access", "Live shares"], true));
      for (const s of slides) {
        const tr = row([s.name, s.accesses, s.centres.join(", "), s.last_access, s.live_shares]);
        tr.dataset.slide = s.slide_id;
        tr.addEventListener("click", () => showSlide(s.slide_id, s.name));
        table.appendChild(tr);
      }
      document.body.dataset.state = "open";
    })
    .catch((err) => { $("status").textContent = `Review could not be loaded: ${err.message}.`; });
})();
