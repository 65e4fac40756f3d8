// Slide list: one card per slide from GET /api/slides. Text goes in through textContent only.
(function () {
  "use strict";

  const status = document.getElementById("status");
  const cards = document.getElementById("slides");

  function mppOf(slide) {
    const m = slide.mpp;
    if (typeof m === "number") return { x: m, y: m };
    if (m && typeof m.x === "number" && typeof m.y === "number") return { x: m.x, y: m.y };
    if (typeof slide.mpp_x === "number" && typeof slide.mpp_y === "number") {
      return { x: slide.mpp_x, y: slide.mpp_y };
    }
    return null;
  }

  const el = window.iainCommon.classed;

  function card(slide) {
    const id = String(slide.id);
    const link = el("a", "card");
    link.href = "/view/" + encodeURIComponent(id);
    link.dataset.slideId = id;

    const thumb = el("div", "thumb");
    const img = el("img");
    img.loading = "lazy";
    img.alt = "";
    img.src = slide.thumbnail || slide.thumbnail_url ||
      "/api/slides/" + encodeURIComponent(id) + "/thumbnail";
    img.addEventListener("error", () => img.remove());
    thumb.appendChild(img);
    link.appendChild(thumb);

    const body = el("div", "body");
    body.appendChild(el("p", "name", slide.name || id));
    const facts = el("dl");
    const add = (term, value) => {
      facts.appendChild(el("dt", "", term));
      facts.appendChild(el("dd", "", value));
    };
    const mpp = mppOf(slide);
    let size = `${slide.width.toLocaleString("en")} × ${slide.height.toLocaleString("en")} px`;
    if (mpp) {
      size += ` (${((slide.width * mpp.x) / 1000).toFixed(2)} × ` +
        `${((slide.height * mpp.y) / 1000).toFixed(2)} mm)`;
    }
    add("Size", size);
    add("Scanner", slide.vendor || "unknown");
    add("Resolution", mpp ? `${mpp.x.toFixed(3)} µm/px` : "unknown (no mpp)");
    if (slide.objective_power) add("Objective", `×${slide.objective_power}`);
    body.appendChild(facts);
    link.appendChild(body);
    return link;
  }

  fetch("/api/slides")
    .then((r) => {
      if (!r.ok) throw new Error(`HTTP ${r.status}`);
      return r.json();
    })
    .then((slides) => {
      const list = Array.isArray(slides) ? slides : slides.slides || [];
      status.textContent = list.length === 0 ? "No slides yet: convert one with `iain convert`."
        : `${list.length} slide${list.length === 1 ? "" : "s"}`;
      for (const slide of list) cards.appendChild(card(slide));
    })
    .catch((err) => {
      status.textContent = `Could not load the slide list (${err.message}).`;
      status.className = "error";
    });
})();
