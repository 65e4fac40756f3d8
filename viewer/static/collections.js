// Teaching collections: GET /api/collections, then each one's slides and pinned regions, with
// links that open the tumour-board view on a slide's regions or on one region. Text goes in
// through textContent only (captions are free text).
(function () {
  "use strict";

  const status = document.getElementById("status");
  const list = document.getElementById("collections");

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function link(text, href) {
    const a = el("a", "", text);
    a.href = href;
    return a;
  }

  function render(c) {
    const section = el("section");
    section.dataset.collection = String(c.id);
    section.appendChild(el("h2", "", c.title));
    const shown = c.audience.length ? `shown to ${c.audience.join(", ")}` : "own centre only";
    section.appendChild(el("p", "meta", `${c.owner_centre} · ${shown}`));
    if (c.description) section.appendChild(el("p", "", c.description));
    const items = el("ol");
    c.items.forEach((item, i) => {
      const li = el("li");
      li.dataset.pseudonym = item.pseudonym;
      const base = `/rcp?collection=${encodeURIComponent(c.id)}&item=${i}`;
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

  fetch("/api/collections")
    .then((r) => { if (!r.ok) throw new Error(`HTTP ${r.status}`); return r.json(); })
    .then((heads) => Promise.all(heads.map((h) =>
      fetch(`/api/collections/${encodeURIComponent(h.id)}`).then((r) => (r.ok ? r.json() : null)))))
    .then((collections) => {
      const shown = collections.filter(Boolean);
      status.textContent = shown.length ? "" : "No teaching collection is shared with you.";
      for (const c of shown) list.appendChild(render(c));
      document.body.dataset.state = "open";
    })
    .catch((err) => { status.textContent = `Collections could not be loaded (${err.message}).`; });
})();
