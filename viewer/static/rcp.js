// Tumour-board (RCP) view: 2-4 OpenSeadragon viewers side by side, synchronised in physical
// units. Each pane knows its slide's mpp; moving one pane (the "leader": the one the user last
// touched) moves the others to the same centre in µm (plus the pane's offset, see below) at the
// same µm per screen pixel, so slides scanned at different resolutions line up.
//
// Offsets: slides open aligned (offset 0: the same µm window everywhere); a collection slide's
// pinned regions open each on its region, and the offset keeps them apart while they move
// together. Unticking "Synchronise" frees the panes; ticking it again keeps where they are.
// Each pane with an AI label layer has its own overlay toggle.
(function () {
  "use strict";

  const cfg = JSON.parse(document.getElementById("rcp-config").textContent);
  const OSD = window.OpenSeadragon;
  const $ = (id) => document.getElementById(id);
  const panes = [];
  const state = { sync: true, leader: 0, applying: false };
  window.iainRcp = { panes, state, centreUm, umPerPx, settled, setCentreUm };

  function showError(message) {
    const box = $("error");
    box.textContent = message;
    box.hidden = false;
    document.body.dataset.state = "error";
  }

  const el = window.iainCommon.classed;

  function mppOf(x, y) {
    // A DPI-derived 352 µm/px is no microscope: outside 0.01..100 the panes sync in pixels.
    if (typeof x === "number" && typeof y === "number" && x > 0.01 && x < 100 && y > 0.01 && y < 100) {
      return { x, y, known: true };
    }
    return { x: 1, y: 1, known: false };
  }

  const base = (pane) => pane.viewer.world.getItemAt(0);

  /** Centre of pane i's view in µm from the slide's top-left corner. */
  function centreUm(i, current = true) {
    const p = panes[i];
    const c = base(p).viewportToImageCoordinates(p.viewer.viewport.getCenter(current));
    return { x: c.x * p.mpp.x, y: c.y * p.mpp.y };
  }

  /** µm of tissue per screen (CSS) pixel in pane i. */
  function umPerPx(i, current = true) {
    const p = panes[i];
    return p.mpp.x / base(p).viewportToImageZoom(p.viewer.viewport.getZoom(current));
  }

  function show(p, centre, upp, immediately) {
    const item = base(p);
    p.viewer.viewport.zoomTo(item.imageToViewportZoom(p.mpp.x / upp), null, immediately);
    p.viewer.viewport.panTo(
      item.imageToViewportCoordinates(new OSD.Point(centre.x / p.mpp.x, centre.y / p.mpp.y)),
      immediately);
  }

  /** Move pane i (and, synchronised, the others) to a centre in µm. */
  function setCentreUm(i, x, y) {
    state.leader = i;
    show(panes[i], { x, y }, umPerPx(i, false), false);
  }

  function follow(leader) {
    if (!state.sync || state.applying || !panes.every((p) => p.ready)) return;
    const c = centreUm(leader, true);
    const upp = umPerPx(leader, true);
    const lo = panes[leader].offset;
    state.applying = true;
    try {
      panes.forEach((p, i) => {
        if (i === leader) return;
        show(p, { x: c.x - lo.x + p.offset.x, y: c.y - lo.y + p.offset.y }, upp, true);
      });
    } finally {
      state.applying = false;
    }
  }

  function relock() {
    panes.forEach((p, i) => { p.offset = centreUm(i, false); });
  }

  function settled() {
    return new Promise((resolve) => {
      let frames = 0;
      const tick = () => {
        let done = panes.length > 0 && frames >= 2 && panes.every((p) => p.ready);
        for (const p of panes) {
          if (!done) break;
          done = !p.viewer.isAnimating();
          for (let k = 0; done && k < p.viewer.world.getItemCount(); k++) {
            done = p.viewer.world.getItemAt(k).getFullyLoaded();
          }
        }
        if (done) resolve(true);
        else { frames += 1; requestAnimationFrame(tick); }
      };
      requestAnimationFrame(tick);
    });
  }

  function addOverlay(p, overlays, header) {
    if (!Array.isArray(overlays) || overlays.length === 0) return;
    const spec = overlays[0];
    const label = el("label");
    const box = el("input");
    box.type = "checkbox";
    box.checked = true;
    box.className = "rcp-overlay";
    label.append(box, ` AI: ${spec.name || "overlay"}`);
    header.appendChild(label);
    const bounds = base(p).getBounds();
    const opacity = typeof spec.opacity === "number" ? spec.opacity : 0.5;
    p.viewer.addTiledImage({
      tileSource: spec.dzi_url || spec.url,
      x: bounds.x, y: bounds.y, width: bounds.width,
      opacity,
      success: (e) => { p.overlay = e.item; },
    });
    box.addEventListener("change", () => {
      if (p.overlay) p.overlay.setOpacity(box.checked ? opacity : 0);
      p.overlayOn = box.checked;
    });
    p.overlayOn = true;
  }

  function makePane(index, spec) {
    const pane = el("section", "rcp-pane");
    pane.dataset.index = String(index);
    const header = el("header");
    header.appendChild(el("span", "name", spec.title));
    if (spec.caption) header.appendChild(el("span", "caption", spec.caption));
    const stage = el("div", "rcp-osd");
    stage.id = `rcp-osd-${index}`;
    pane.append(header, stage);
    $("rcp-grid").appendChild(pane);
    const p = {
      index, spec, mpp: mppOf(spec.mpp_x, spec.mpp_y), offset: { x: 0, y: 0 },
      ready: false, overlay: null, overlayOn: false, viewer: null,
    };
    p.viewer = OSD({
      element: stage,
      prefixUrl: cfg.osdPrefix,
      tileSources: spec.dzi,
      drawer: "canvas",
      showNavigationControl: false,
      maxZoomPixelRatio: 4,
      visibilityRatio: 0.2,
      animationTime: 0.4,
      immediateRender: true,
      maxTilesPerFrame: 24,
    });
    for (const kind of ["pointerdown", "wheel", "keydown", "focusin"]) {
      stage.addEventListener(kind, () => { state.leader = index; }, true);
    }
    p.viewer.addHandler("viewport-change", () => { if (state.leader === index) follow(index); });
    p.viewer.addHandler("open", () => {
      if (spec.region) {
        const r = spec.region;
        p.viewer.viewport.fitBounds(base(p).imageToViewportRectangle(r.x, r.y, r.w, r.h), true);
      }
      addOverlay(p, spec.overlays, header);
      p.ready = true;
      if (panes.every((q) => q.ready)) start();
    });
    p.viewer.addHandler("open-failed", () => showError(`${spec.title}: the tiles could not be opened.`));
    panes.push(p);
  }

  function start() {
    if (panes.some((p) => p.spec.region)) {
      // Regions: the same µm per pixel everywhere (the coarsest that fits each region),
      // each pane on its own region; the offsets keep them apart while they move together.
      const upp = Math.max(...panes.map((_, i) => umPerPx(i)));
      panes.forEach((p, i) => show(p, centreUm(i), upp, true));
      relock();
    } else {
      state.leader = 0;
      follow(0);
    }
    document.body.dataset.state = "open";
    $("rcp-status").textContent = panes.every((p) => p.mpp.known) ? ""
      : "A slide has no mpp: it follows in pixels.";
  }

  async function json(url) {
    const r = await fetch(url);
    if (r.status === 404) throw new Error("Not found, or not shared with you.");
    if (!r.ok) throw new Error(`Could not load ${url} (HTTP ${r.status}).`);
    return r.json();
  }

  async function fromSlides(ids) {
    const slides = await Promise.all(ids.map((id) => json(`/api/slides/${encodeURIComponent(id)}`)));
    $("rcp-title").textContent = `${slides.length} slides`;
    return slides.map((s) => {
      const m = s.mpp || {};
      return {
        title: s.name || s.id, dzi: s.dzi || `/slides/${encodeURIComponent(s.id)}.dzi`,
        mpp_x: typeof m === "number" ? m : m.x, mpp_y: typeof m === "number" ? m : m.y,
        overlays: s.overlays,
      };
    });
  }

  /** A tile source over this node's proxy of a peer's share (storage level 0 = full size). */
  function sharedSource(url, info) {
    const maxLevel = Math.ceil(Math.log2(Math.max(info.width, info.height)));
    return {
      width: info.width, height: info.height, tileSize: info.tile_width, tileOverlap: 0,
      minLevel: Math.max(0, maxLevel - info.level_count + 1), maxLevel,
      getTileUrl: (level, x, y) => `${url}/tiles/${maxLevel - level}/${x}_${y}.jpeg`,
    };
  }

  async function fromCollection(cid, itemIndex, regionIndex) {
    const url = cfg.peer
      ? `/api/shared-collections/${encodeURIComponent(cfg.peer)}/${encodeURIComponent(cid)}`
      : `/api/collections/${encodeURIComponent(cid)}`;
    const c = await json(url);
    const item = c.items[itemIndex];
    if (!item) throw new Error("No such slide in this collection.");
    $("rcp-title").textContent = c.title;
    const info = item.info || {};
    const dzi = item.shared ? sharedSource(item.shared, info) : item.dzi;
    const common = { dzi, mpp_x: info.mpp_x, mpp_y: info.mpp_y, overlays: [] };
    let regions = item.regions.map((r, j) => ({ r, j }));
    if (regionIndex !== null) regions = regions.filter((x) => x.j === regionIndex);
    if (regions.length === 0) return [{ ...common, title: item.pseudonym }];
    return regions.slice(0, 4).map(({ r, j }) => ({
      ...common, title: `${item.pseudonym} · region ${j + 1}`, caption: r.caption || "", region: r,
    }));
  }

  if (!OSD) { showError("The viewer library is missing on the server (run `npm ci` there)."); return; }
  $("rcp-sync").addEventListener("change", (e) => {
    state.sync = e.target.checked;
    if (state.sync) relock();
  });
  $("rcp-home").addEventListener("click", () => {
    state.leader = 0;
    panes[0].viewer.viewport.goHome();
  });
  const load = cfg.slides.length > 0 ? fromSlides(cfg.slides)
    : fromCollection(cfg.collection, cfg.item, cfg.region);
  load.then((specs) => {
    $("rcp-grid").dataset.panes = String(specs.length);
    specs.forEach((spec, i) => makePane(i, spec));
  }).catch((err) => showError(err.message));
})();
