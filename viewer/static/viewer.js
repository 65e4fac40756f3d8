// Slide page: OpenSeadragon over /slides/{id}.dzi plus scale bar, magnification, ruler,
// keyboard panning, a deep link (?x_um=&y_um=&mag=) and an overlay layer.
//
// Coordinate planes: "image" = level-0 pixels of the slide (x right, y down); "element" = CSS
// pixels inside the viewer element; "viewport" = OpenSeadragon's world units. All conversions
// go through the slide's TiledImage (world item 0), never the multi-image viewport helpers.
(function () {
  "use strict";

  const cfg = JSON.parse(document.getElementById("viewer-config").textContent);
  const $ = (id) => document.getElementById(id);
  const OSD = window.OpenSeadragon;

  // Exposed for the browser tests and for debugging from the console.
  const iain = {
    slide: null, viewer: null, mpp: null, overlay: null, annotations: null,
    measurement: null, // last finished measure: {kind, points, lengthUm, areaMm2}
    settled, centreImage, imageZoom, setMagnification,
  };
  window.iain = iain;

  function showError(message) {
    const box = $("error");
    box.textContent = message;
    box.hidden = false;
    document.body.dataset.state = "error";
  }

  function mppOf(slide) {
    const m = slide.mpp;
    let x = null;
    let y = null;
    if (typeof m === "number") { x = m; y = m; }
    else if (m && typeof m.x === "number" && typeof m.y === "number") { x = m.x; y = m.y; }
    else if (typeof slide.mpp_x === "number" && typeof slide.mpp_y === "number") {
      x = slide.mpp_x; y = slide.mpp_y;
    }
    // A DPI-derived 352 µm/px is no microscope: treat anything outside 0.01..100 as unknown.
    if (x === null || !(x > 0.01 && x < 100 && y > 0.01 && y < 100)) return null;
    return { x, y };
  }

  const base = () => iain.viewer.world.getItemAt(0);

  /** Screen (CSS) pixels per level-0 image pixel, now or at the animation's target. */
  function imageZoom(current = true) {
    return base().viewportToImageZoom(iain.viewer.viewport.getZoom(current));
  }

  /** Centre of the view in level-0 image pixels. */
  function centreImage(current = true) {
    const c = base().viewportToImageCoordinates(iain.viewer.viewport.getCenter(current));
    return { x: c.x, y: c.y };
  }

  /** Magnification as pathologists say it: ×40 is 0.25 µm per screen pixel. */
  function magnification(zoom) {
    return iain.mpp ? (10 * zoom) / iain.mpp.x : null;
  }

  function setImageZoom(zoom, immediately = false) {
    iain.viewer.viewport.zoomTo(base().imageToViewportZoom(zoom), null, immediately);
  }

  function setMagnification(mag, immediately = false) {
    if (iain.mpp) setImageZoom((mag * iain.mpp.x) / 10, immediately);
  }

  /** Resolves once the view stopped moving and every tile it needs is drawn. */
  function settled() {
    return new Promise((resolve) => {
      let frames = 0;
      const tick = () => {
        const v = iain.viewer;
        const count = v ? v.world.getItemCount() : 0;
        let done = count > 0 && frames >= 2 && !v.isAnimating();
        for (let i = 0; done && i < count; i++) done = v.world.getItemAt(i).getFullyLoaded();
        if (done) resolve(true);
        else { frames += 1; requestAnimationFrame(tick); }
      };
      requestAnimationFrame(tick);
    });
  }

  // ------------------------------------------------------------------ scale bar + magnification
  const NICE = [1, 2, 5];

  function formatLength(um) {
    if (um >= 1000) return `${+(um / 1000).toPrecision(3)} mm`;
    return `${+um.toPrecision(3)} µm`;
  }

  function updateHud() {
    const zoom = imageZoom();
    const mag = magnification(zoom);
    $("mag").textContent = mag === null ? `${(zoom * 100).toFixed(zoom < 0.1 ? 1 : 0)} %`
      : `×${mag < 10 ? mag.toFixed(1) : mag.toFixed(0)}`;
    $("mag").dataset.value = mag === null ? "" : String(mag);
    const bar = $("scalebar");
    if (!iain.mpp) { bar.hidden = true; return; }
    const umPerPx = iain.mpp.x / zoom;
    const maxUm = 180 * umPerPx;
    let best = null;
    for (let exp = Math.floor(Math.log10(maxUm)) - 1; exp <= Math.ceil(Math.log10(maxUm)); exp++) {
      for (const n of NICE) {
        const um = n * 10 ** exp;
        if (um <= maxUm && (best === null || um > best)) best = um;
      }
    }
    if (best === null) { bar.hidden = true; return; }
    bar.hidden = false;
    bar.querySelector(".bar").style.width = `${best / umPerPx}px`;
    bar.querySelector(".label").textContent = formatLength(best);
    bar.dataset.um = String(best);
    bar.dataset.px = String(best / umPerPx);
  }

  // ------------------------------------------------------------------ deep link
  // ?x_um=&y_um=&mag= when the mpp is known (the same tissue at the same magnification on any
  // screen); ?x_px=&y_px=&zoom= otherwise. Centre measured from the slide's top-left corner.
  function readLink() {
    const q = new URLSearchParams(window.location.search);
    const num = (k) => (q.has(k) && Number.isFinite(Number(q.get(k))) ? Number(q.get(k)) : null);
    if (iain.mpp && num("x_um") !== null && num("y_um") !== null) {
      return { x: num("x_um") / iain.mpp.x, y: num("y_um") / iain.mpp.y,
        zoom: num("mag") !== null && num("mag") > 0 ? (num("mag") * iain.mpp.x) / 10 : null };
    }
    if (num("x_px") !== null && num("y_px") !== null) {
      return { x: num("x_px"), y: num("y_px"),
        zoom: num("zoom") !== null && num("zoom") > 0 ? num("zoom") : null };
    }
    return null;
  }

  function applyLink(link) {
    const vp = iain.viewer.viewport;
    if (link.zoom !== null) setImageZoom(link.zoom, true);
    vp.panTo(base().imageToViewportCoordinates(new OSD.Point(link.x, link.y)), true);
  }

  function writeLink() {
    const c = centreImage(false);
    const zoom = imageZoom(false);
    const q = new URLSearchParams();
    if (iain.mpp) {
      q.set("x_um", (c.x * iain.mpp.x).toFixed(1));
      q.set("y_um", (c.y * iain.mpp.y).toFixed(1));
      q.set("mag", magnification(zoom).toPrecision(5));
    } else {
      q.set("x_px", c.x.toFixed(1));
      q.set("y_px", c.y.toFixed(1));
      q.set("zoom", zoom.toPrecision(5));
    }
    history.replaceState(null, "", `${window.location.pathname}?${q}`);
  }

  // ------------------------------------------------------------------ ruler (length / area)
  const SVG = "http://www.w3.org/2000/svg";
  const ruler = { mode: null, points: [], cursor: null, done: [] };

  function lengthUm(points, closed) {
    const mx = iain.mpp ? iain.mpp.x : 1;
    const my = iain.mpp ? iain.mpp.y : 1;
    let total = 0;
    const n = points.length;
    for (let i = 0; i < (closed ? n : n - 1); i++) {
      const a = points[i];
      const b = points[(i + 1) % n];
      total += Math.hypot((b.x - a.x) * mx, (b.y - a.y) * my);
    }
    return total;
  }

  function areaMm2(points) {
    let twice = 0;
    for (let i = 0; i < points.length; i++) {
      const a = points[i];
      const b = points[(i + 1) % points.length];
      twice += a.x * b.y - b.x * a.y;
    }
    const mx = iain.mpp ? iain.mpp.x : 1;
    const my = iain.mpp ? iain.mpp.y : 1;
    return (Math.abs(twice) / 2) * mx * my / 1e6;
  }

  function setMode(mode) {
    ruler.mode = ruler.mode === mode ? null : mode;
    ruler.points = [];
    $("btn-ruler").setAttribute("aria-pressed", String(ruler.mode === "length"));
    $("btn-area").setAttribute("aria-pressed", String(ruler.mode === "area"));
    document.body.classList.toggle("measuring", ruler.mode !== null);
    iain.viewer.setMouseNavEnabled(true);
    iain.viewer.gestureSettingsMouse.clickToZoom = ruler.mode === null;
    iain.viewer.gestureSettingsMouse.dblClickToZoom = ruler.mode === null;
    drawRuler();
  }

  function showResult(m) {
    const out = $("measure");
    const unit = iain.mpp ? "µm" : "px";
    out.textContent = "";
    if (m.kind === "length") {
      out.textContent = `${m.lengthUm.toFixed(1)} ${unit}`;
    } else {
      out.textContent = iain.mpp ? `${m.areaMm2.toFixed(4)} mm²` : `${(m.areaMm2 * 1e6).toFixed(0)} px²`;
      const small = document.createElement("small");
      small.textContent = `perimeter ${m.lengthUm.toFixed(1)} ${unit}`;
      out.appendChild(small);
    }
    out.dataset.lengthUm = String(m.lengthUm);
    out.dataset.areaMm2 = m.kind === "area" ? String(m.areaMm2) : "";
  }

  function finish() {
    const pts = ruler.points;
    const kind = ruler.mode;
    if (kind === "length" && pts.length >= 2) {
      const m = { kind, points: pts, lengthUm: lengthUm(pts, false), areaMm2: null };
      ruler.done.push(m);
      iain.measurement = m;
      showResult(m);
    } else if (kind === "area" && pts.length >= 3) {
      const m = { kind, points: pts, lengthUm: lengthUm(pts, true), areaMm2: areaMm2(pts) };
      ruler.done.push(m);
      iain.measurement = m;
      showResult(m);
    }
    ruler.points = [];
    drawRuler();
  }

  function toElement(p) {
    return base().imageToViewerElementCoordinates(new OSD.Point(p.x, p.y));
  }

  function addShape(svg, m, live) {
    if (m.points.length === 0) return;
    const pts = live && ruler.cursor ? m.points.concat([ruler.cursor]) : m.points;
    const screen = pts.map(toElement);
    const shape = document.createElementNS(SVG, m.kind === "area" && !live ? "polygon" : "polyline");
    shape.setAttribute("points", screen.map((p) => `${p.x},${p.y}`).join(" "));
    svg.appendChild(shape);
    for (const p of screen.slice(0, m.points.length)) {
      const dot = document.createElementNS(SVG, "circle");
      dot.setAttribute("cx", p.x);
      dot.setAttribute("cy", p.y);
      dot.setAttribute("r", 3.5);
      svg.appendChild(dot);
    }
    if (!live) {
      const last = screen[screen.length - 1];
      const label = document.createElementNS(SVG, "text");
      label.setAttribute("x", last.x + 8);
      label.setAttribute("y", last.y - 8);
      label.textContent = m.kind === "area" && iain.mpp ? `${m.areaMm2.toFixed(4)} mm²`
        : `${m.lengthUm.toFixed(1)} ${iain.mpp ? "µm" : "px"}`;
      svg.appendChild(label);
    }
  }

  function drawRuler() {
    const svg = $("ruler-layer");
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    if (!iain.viewer || iain.viewer.world.getItemCount() === 0) return;
    for (const m of ruler.done) addShape(svg, m, false);
    if (ruler.mode) addShape(svg, { kind: ruler.mode, points: ruler.points }, true);
  }

  function onClick(event) {
    if (!ruler.mode || !event.quick) return;
    event.preventDefaultAction = true;
    const p = base().viewerElementToImageCoordinates(event.position);
    const pts = ruler.points;
    if (pts.length > 0) {
      const last = toElement(pts[pts.length - 1]);
      if (Math.hypot(last.x - event.position.x, last.y - event.position.y) < 4) return;
      const first = toElement(pts[0]);
      if (ruler.mode === "area" && pts.length >= 3 &&
          Math.hypot(first.x - event.position.x, first.y - event.position.y) < 8) {
        finish();
        return;
      }
    }
    pts.push({ x: p.x, y: p.y });
    if (ruler.mode === "length" && pts.length === 2) finish();
    else drawRuler();
  }

  // ------------------------------------------------------------------ signed tile grants
  // Where the server hands out grants (SHARE_TILE_GRANTS=1, share/tile_grants.py), whole
  // stored chunks are fetched as /tiles/{id}/{level}/{row}/{col}: a short-lived signed cookie
  // authorises them, so nginx (iain nginx-conf) can send them as files. Edge tiles, levels
  // the pyramid does not store and everything after the grant lapses use the DeepZoom URLs.
  // The grant is renewed while the view moves; an idle viewer lets it lapse (and the session
  // idle out), and the next move falls back to DeepZoom URLs until the new grant arrives.
  const grant = { prefix: null, until: 0, ttl: 0, pending: null, url: null };
  // ?placeholders=1 keeps OpenSeadragon's coarse placeholders on pans (benchmarks compare).
  const placeholders = new URLSearchParams(window.location.search).get("placeholders");
  iain.grant = grant;

  function requestGrant() {
    if (!grant.url || grant.pending) return grant.pending;
    grant.pending = fetch(grant.url, { credentials: "same-origin" })
      .then((r) => (r.ok ? r.json() : null))
      .then((g) => {
        if (g && g.prefix) {
          grant.prefix = g.prefix;
          grant.ttl = g.ttl_s * 1000;
          grant.until = performance.now() + grant.ttl - 10000;  // a margin for slow requests
        } else {
          grant.url = null;  // this server or slide has no grants: stop asking
        }
      })
      .catch(() => {})
      .finally(() => { grant.pending = null; });
    return grant.pending;
  }

  function renewGrant() {
    if (grant.url && grant.until - performance.now() < grant.ttl / 2) requestGrant();
  }

  function useGrants(source, slide) {
    const dims = slide.level_dimensions || [];
    const size = slide.tile_size;
    const deepZoomUrl = source.getTileUrl.bind(source);
    source.getTileUrl = (level, x, y) => {
      const stored = source.maxLevel - level;
      if (grant.prefix && performance.now() < grant.until && stored >= 0 && stored < dims.length) {
        const [w, h] = dims[stored];
        if ((x + 1) * size <= w && (y + 1) * size <= h) return `${grant.prefix}/${stored}/${y}/${x}`;
      }
      return deepZoomUrl(level, x, y);
    };
  }

  // ------------------------------------------------------------------ no placeholders on pans
  // While the best level of an area not seen before is loading, OpenSeadragon also fetches
  // every coarser level of that area as a blurry placeholder: on a pan at x20 that was ~37 % of
  // the bytes (benchmarks/RESULTS.md, emulated WAN). At a steady zoom the best level arrives
  // within a round trip or two (and the prefetch has usually cached it), so tiles coarser than
  // the level the screen needs are not fetched then; during a zoom they still are. The slide
  // drawn so far stays on screen. (Wraps TiledImage#_loadTile: OpenSeadragon 6.1.1 is pinned
  // by package-lock.json.)
  function skipPlaceholders(item) {
    const load = item._loadTile;
    if (typeof load !== "function") return;
    item._loadTile = function (tile, time) {
      const vp = iain.viewer.viewport;
      const steady = Math.abs(vp.getZoom(true) - vp.getZoom(false)) < 1e-9 * vp.getZoom(false);
      if (steady) {
        const zoom = item.viewportToImageZoom(vp.getZoom(true));
        const best = Math.min(item.source.maxLevel,
          Math.floor(item.source.maxLevel - Math.log2(iain.viewer.minPixelRatio / zoom)));
        if (tile.level < best) return;  // asked again next frame; dropped once the best level covers
      }
      return load.call(this, tile, time);
    };
  }

  // ------------------------------------------------------------------ prefetch ahead
  // After a pan comes to rest, fetch the tiles of the next screen in the same direction, so
  // that a reader moving across the tissue finds it already in the browser cache. One screen
  // ahead only: steady panning costs no extra bytes, a change of direction one screen.
  // ?prefetch=0 turns it off (benchmarks compare both).
  const prefetch = {
    enabled: new URLSearchParams(window.location.search).get("prefetch") !== "0",
    anchor: null, timer: null, images: new Set(), requested: 0,
  };
  iain.prefetch = prefetch;

  function prefetchTiles(dirX, dirY) {
    const item = base();
    const drawn = item.getTilesToDraw().map((info) => info.tile);
    if (drawn.length === 0) return;
    const level = Math.max(...drawn.map((t) => t.level));
    const source = item.source;
    const scale = source.getLevelScale(level);  // level px per level-0 image px
    const tileW = source.getTileWidth(level);
    const tileH = source.getTileHeight(level);
    const grid = source.getNumTiles(level);
    const b = iain.viewer.viewport.getBounds(true);
    const tl = item.viewportToImageCoordinates(
      new OSD.Point(b.x + dirX * b.width, b.y + dirY * b.height));
    const br = item.viewportToImageCoordinates(
      new OSD.Point(b.x + (dirX + 1) * b.width, b.y + (dirY + 1) * b.height));
    const c0 = Math.max(0, Math.floor((tl.x * scale) / tileW));
    const c1 = Math.min(grid.x - 1, Math.floor((br.x * scale) / tileW));
    const r0 = Math.max(0, Math.floor((tl.y * scale) / tileH));
    const r1 = Math.min(grid.y - 1, Math.floor((br.y * scale) / tileH));
    for (let col = c0; col <= c1; col++) {
      for (let row = r0; row <= r1; row++) {
        const img = new Image();
        const done = () => prefetch.images.delete(img);
        img.onload = done;
        img.onerror = done;
        prefetch.images.add(img);  // keep a reference until it arrives
        img.src = source.getTileUrl(level, col, row);
        prefetch.requested += 1;
      }
    }
  }

  function maybePrefetch() {
    const c = centreImage(true);
    const zoom = imageZoom(true);
    const last = prefetch.anchor;
    prefetch.anchor = { x: c.x, y: c.y, zoom };
    if (!last || Math.abs(last.zoom - zoom) / zoom > 0.01) return;  // zoomed: no direction
    const size = iain.viewer.viewport.getContainerSize();
    const dx = ((c.x - last.x) * zoom) / size.x;  // in screens
    const dy = ((c.y - last.y) * zoom) / size.y;
    const dirX = Math.abs(dx) > 0.3 ? Math.sign(dx) : 0;
    const dirY = Math.abs(dy) > 0.3 ? Math.sign(dy) : 0;
    if (dirX !== 0 || dirY !== 0) prefetchTiles(dirX, dirY);
  }

  function schedulePrefetch() {
    if (!prefetch.enabled) return;
    clearTimeout(prefetch.timer);
    prefetch.timer = setTimeout(() => settled().then(maybePrefetch), 50);
  }

  // ------------------------------------------------------------------ keyboard
  function onKey(e) {
    if (!iain.viewer || e.ctrlKey || e.metaKey || e.altKey) return;
    const target = e.target;
    if (target && /^(INPUT|SELECT|TEXTAREA)$/.test(target.tagName)) return;
    if (e.key === "Escape") { ruler.points = []; drawRuler(); return; }
    if (e.key === "Enter" && ruler.mode) { finish(); e.preventDefault(); return; }
    // Inside the canvas OpenSeadragon's own smooth keyboard navigation handles the rest.
    if (iain.viewer.canvas.contains(target)) return;
    const vp = iain.viewer.viewport;
    const step = e.shiftKey ? 0.5 : 0.15;
    const size = vp.getContainerSize();
    const moves = {
      ArrowLeft: [-1, 0], a: [-1, 0], ArrowRight: [1, 0], d: [1, 0],
      ArrowUp: [0, -1], w: [0, -1], ArrowDown: [0, 1], s: [0, 1],
    };
    const key = e.key.length === 1 ? e.key.toLowerCase() : e.key;
    if (moves[key]) {
      const [dx, dy] = moves[key];
      vp.panBy(vp.deltaPointsFromPixels(new OSD.Point(dx * step * size.x, dy * step * size.y)));
    } else if (key === "+" || key === "=") vp.zoomBy(1.5);
    else if (key === "-" || key === "_") vp.zoomBy(1 / 1.5);
    else if (key === "0") vp.goHome();
    else return;
    vp.applyConstraints();
    e.preventDefault();
  }

  // ------------------------------------------------------------------ overlay layer
  function setupOverlays(overlays) {
    if (!Array.isArray(overlays) || overlays.length === 0) return;
    $("overlay-panel").hidden = false;
    const select = $("overlay-select");
    overlays.forEach((o, i) => {
      const opt = document.createElement("option");
      opt.value = String(i);
      opt.textContent = o.name || `overlay ${i + 1}`;
      select.appendChild(opt);
    });
    const opacity = () => ($("overlay-on").checked ? Number($("overlay-opacity").value) / 100 : 0);
    const show = (index) => {
      if (iain.overlay) { iain.viewer.world.removeItem(iain.overlay); iain.overlay = null; }
      const spec = overlays[index];
      const bounds = base().getBounds();
      iain.viewer.addTiledImage({
        tileSource: spec.dzi_url || spec.url,
        x: bounds.x, y: bounds.y, width: bounds.width,
        opacity: opacity(),
        success: (e) => {
          iain.overlay = e.item;
          // overlay.js draws the layer's outlines and its validation badge
          document.dispatchEvent(new CustomEvent("iain:overlay", { detail: spec }));
        },
        error: () => showError(`Overlay "${spec.name || index}" could not be opened.`),
      });
    };
    const initial = overlays[0].opacity;
    if (typeof initial === "number") $("overlay-opacity").value = String(Math.round(initial * 100));
    $("overlay-opacity-value").textContent = `${$("overlay-opacity").value} %`;
    select.addEventListener("change", () => show(Number(select.value)));
    const restyle = () => {
      $("overlay-opacity-value").textContent = `${$("overlay-opacity").value} %`;
      if (iain.overlay) iain.overlay.setOpacity(opacity());
    };
    $("overlay-opacity").addEventListener("input", restyle);
    $("overlay-on").addEventListener("change", restyle);
    show(0);
  }

  // ------------------------------------------------------------------ annotation layer
  // annotations.js draws and edits; the page says where its API lives (data-annotations-base),
  // so a page for a slide of another centre can point it at a proxy instead.
  function attachAnnotations() {
    const panel = $("annotations-panel");
    if (!panel || !window.iainAnnotations || !panel.dataset.annotationsBase) return;
    iain.annotations = window.iainAnnotations.attach(iain.viewer, {
      base: panel.dataset.annotationsBase, canEdit: panel.dataset.canEdit === "true", panel,
    });
  }

  // ------------------------------------------------------------------ start
  function start(slide) {
    iain.slide = slide;
    iain.mpp = mppOf(slide);
    document.title = `IAIN — ${slide.name || slide.id}`;
    $("slide-name").textContent = slide.name || slide.id;
    const facts = [`${slide.width.toLocaleString("en")} × ${slide.height.toLocaleString("en")} px`];
    if (slide.vendor) facts.push(slide.vendor);
    facts.push(iain.mpp ? `${iain.mpp.x.toFixed(3)} µm/px` : "no mpp: lengths in pixels");
    $("slide-meta").textContent = facts.join(" · ");

    const viewer = OSD({
      element: $("osd"),
      prefixUrl: cfg.osdPrefix,
      tileSources: slide.tileSource || slide.dzi || slide.dzi_url ||
        `/slides/${encodeURIComponent(slide.id)}.dzi`,
      drawer: "canvas",
      showNavigator: true,
      navigatorPosition: "TOP_RIGHT",
      showNavigationControl: false,
      maxZoomPixelRatio: 4,
      visibilityRatio: 0.2,
      animationTime: 0.6,
      springStiffness: 9,
      preserveImageSizeOnResize: true,
      // Straight to the level the screen needs: no coarse-level tiles on the way (fewer bytes
      // and round trips per pan); the navigator and cached levels still cover the gap.
      immediateRender: true,
      // A 1920x1080 screen needs ~50 tiles of 256 px; OpenSeadragon's default starts one tile
      // request per frame, which alone costs ~1 s per screen. Ask for a screenful at once.
      maxTilesPerFrame: 24,
    });
    iain.viewer = viewer;
    viewer.addHandler("open", () => {
      if (grant.url) useGrants(viewer.world.getItemAt(0).source, slide);
      if (placeholders !== "1") skipPlaceholders(viewer.world.getItemAt(0));
      const link = readLink();
      if (link) applyLink(link);
      updateHud();
      setupOverlays(slide.overlays);
      attachAnnotations();
      schedulePrefetch();  // sets the anchor once the first view is drawn
      viewer.canvas.focus();
      document.body.dataset.state = "open";
    });
    viewer.addHandler("open-failed", () => showError("The slide's tiles could not be opened."));
    viewer.addHandler("update-viewport", () => {
      updateHud(); drawRuler(); schedulePrefetch(); renewGrant();
    });
    viewer.addHandler("animation-finish", writeLink);
    viewer.addHandler("canvas-click", onClick);
    viewer.addHandler("canvas-double-click", (e) => {
      if (ruler.mode) { e.preventDefaultAction = true; finish(); }
    });
    $("osd").addEventListener("pointermove", (e) => {
      if (!ruler.mode || ruler.points.length === 0) return;
      const r = $("osd").getBoundingClientRect();
      const p = base().viewerElementToImageCoordinates(new OSD.Point(e.clientX - r.left, e.clientY - r.top));
      ruler.cursor = { x: p.x, y: p.y };
      drawRuler();
    });
    $("btn-1to1").addEventListener("click", () => setImageZoom(1));
    $("btn-home").addEventListener("click", () => viewer.viewport.goHome());
    for (const b of document.querySelectorAll("button[data-mag]")) {
      b.disabled = !iain.mpp;
      b.addEventListener("click", () => setMagnification(Number(b.dataset.mag)));
    }
    $("btn-ruler").addEventListener("click", () => setMode("length"));
    $("btn-area").addEventListener("click", () => setMode("area"));
    $("btn-clear").addEventListener("click", () => {
      ruler.done = []; ruler.points = []; iain.measurement = null;
      $("measure").textContent = "";
      drawRuler();
    });
    document.addEventListener("keydown", onKey);
  }

  if (!OSD) {
    showError("The viewer library is missing on the server (run `npm ci` there).");
    return;
  }
  // A page may point the viewer elsewhere (a slide shared by another centre: shared.js sets
  // cfg.infoUrl and window.iainHooks.adaptSlide, which supplies the tile source).
  const hooks = window.iainHooks || {};
  if (cfg.tileGrants && !cfg.infoUrl) {  // ask for a grant beside the slide's facts
    grant.url = `/api/slides/${encodeURIComponent(cfg.slideId)}/tile-grant`;
    requestGrant();
  }
  fetch(cfg.infoUrl || `/api/slides/${encodeURIComponent(cfg.slideId)}`)
    .then((r) => {
      if (r.status === 404) throw new Error("No such slide.");
      if (!r.ok) throw new Error(`The slide could not be loaded (HTTP ${r.status}).`);
      return r.json();
    })
    .then((slide) => Promise.resolve(grant.pending).then(() => slide))
    .then((slide) => start(hooks.adaptSlide ? hooks.adaptSlide(slide) : slide))
    .catch((err) => showError(err.message));
})();
