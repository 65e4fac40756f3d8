// Teaching collections: GET /api/collections, then each one's slides and pinned regions, with
// links that open the tumour-board view on a slide's regions or on one region. Text goes in
// through textContent only (captions are free text).
(function () {
  "use strict";

  const status = document.getElementById("status");
  const list = document.getElementById("collections");

  const el = window.iainCommon.classed;

  function link(text, href) {
    const a = el("a", "", text);
    a.href = href;
    return a;
  }

  function render(c) {
    const section = el("section");
    section.dataset.collection = String(c.id);
    section.appendChild(el("h2", "", c.title));
    const audience = c.audience || [];
    const shown = c.peer ? `from ${c.peer}` : (audience.length ? `shown to ${audience.join(", ")}` : "own centre only");
    section.appendChild(el("p", "meta", `${c.owner_centre} · ${shown}`));
    if (c.description) section.appendChild(el("p", "", c.description));
    const items = el("ol");
    c.items.forEach((item, i) => {
      const li = el("li");
      li.dataset.pseudonym = item.pseudonym;
      const peer = c.peer ? `&peer=${encodeURIComponent(c.peer)}` : "";
      const base = `/rcp?collection=${encodeURIComponent(c.id)}&item=${i}${peer}`;
      li.appendChild(link(item.pseudonym, base));
      if (item.note) li.append(` — ${item.note}`);
      if (item.regions.length) {
        const regions = el("ul");
        item.regions.forEach((r, j) => {
          const rli = el("li");
          rli.appendChild(link(`region ${j + 1}`, `${base}&region=${j}`));
          if (r.caption) rli.append(`: ${r.caption}`);
          regions.appendChild(rli);
        });
        li.appendChild(regions);
      }
      items.appendChild(li);
    });
    section.appendChild(items);
    return section;
  }

  // Collections of other nodes come whole from /api/shared-collections (404: no federation).
  const remote = fetch("/api/shared-collections")
    .then((r) => (r.ok ? r.json() : { collections: [], unavailable: [] }))
    .catch(() => ({ collections: [], unavailable: [] }));
  fetch("/api/collections")
    .then((r) => { if (!r.ok) throw new Error(`HTTP ${r.status}`); return r.json(); })
    .then((heads) => Promise.all([remote, ...heads.map((h) =>
      fetch(`/api/collections/${encodeURIComponent(h.id)}`).then((r) => (r.ok ? r.json() : null)))]))
    .then(([peers, ...collections]) => {
      const shown = collections.filter(Boolean).concat(peers.collections);
      for (const u of peers.unavailable) {
        list.appendChild(el("p", "status", `Centre ${u.peer} did not answer (${u.error}).`));
      }
      status.textContent = shown.length ? "" : "No teaching collection is shared with you.";
      for (const c of shown) list.appendChild(render(c));
      document.body.dataset.state = "open";
    })
    .catch((err) => { status.textContent = `Collections could not be loaded (${err.message}).`; });
})();
