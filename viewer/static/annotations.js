// Annotation layer: draw, select, edit, export and import annotations on ONE canvas over
// OpenSeadragon (SVG or one DOM node per shape stops being smooth long before 10^5 shapes).
//
//   window.iainAnnotations.attach(viewer, {base, canEdit, panel, user, classesUrl, meUrl})
//     -> layer (iain.annotations on the slide page: idle(), reload(), drawn, mode, ...)
//
// (annotation-geometry.js is loaded first: records, Path2D batches, tool shapes, hit tests.)
// `base` is the annotation API (".../annotations": GET viewport, /density, POST, PUT/DELETE
// /{id}, /export.geojson, /import); the page names it, so a slide proxied from another centre
// uses the same layer. Coordinates sent and received are level-0 image pixels (x right, y down).
//
// Loading: a density query over the view comes first; beyond MAX_SHAPES in view the density
// raster is drawn instead of shapes. Otherwise the view is cut into square cells (a power of
// two of image pixels, about a quarter of the screen, halved while the density says a cell
// would hold more than one query returns); each cell is one viewport query, cached, so a pan
// only asks for the cells coming into view, and a request no longer needed is aborted.
// Drawing: shapes become one Path2D per colour and cell (image coordinates), rasterised into
// a canvas a margin larger than the screen; a frame of a pan only sets that canvas's CSS
// transform (re-rasterised when the pan leaves the margin or a zoom comes to rest).
(function () {
  "use strict";

  const TOOLS = [
    ["select", "Select"], ["point", "Point"], ["line", "Line"], ["rectangle", "Rectangle"],
    ["ellipse", "Ellipse"], ["polygon", "Polygon"], ["freehand", "Freehand"],
  ];
  // Offered when the server has no class yet (a class is created by its first annotation).
  const DEFAULT_CLASSES = [
    { name: "Tumour", color: "#d62728" }, { name: "Stroma", color: "#1f77b4" },
    { name: "Immune cells", color: "#2ca02c" }, { name: "Necrosis", color: "#8c564b" },
    { name: "Other", color: "#ffcc00" },
  ];
  const CELL_LIMIT = 25000;   // per viewport query (the server caps one query at 50,000)
  const MAX_SHAPES = 150000;  // more than this in view: density raster instead of shapes
  const DEBOUNCE_MS = 100;
  const MARGIN_PX = 384;      // bitmap margin around the screen, in CSS pixels
  const HEAVY_SHAPES = 5000;  // more shapes on screen: hairline outlines, no fill
  const DENSITY_CELL_PX = 16; // one density cell per 16 screen pixels (smoothed when drawn)

  const { csrf, el } = window.iainCommon;

  const { record, batches, draftGeometry, hits, pos } = window.iainAnnotationGeometry;

  // ------------------------------------------------------------------ the layer
  function attach(viewer, opts) {
    const OSD = window.OpenSeadragon;
    const base = String(opts.base).replace(/\/$/, "");
    const panel = opts.panel || document.getElementById("annotations-panel");
    const layer = {
      base, canEdit: opts.canEdit !== false, user: opts.user || null,
      classes: [], classColors: new Map(),
      tool: null, draft: null, selected: null, maxShapes: opts.maxShapes || MAX_SHAPES,
      rasterised: 0, visible: true,
      mode: "shapes", cells: new Map(), cellSize: 0, needed: [], shown: [], drawn: 0,
      density: null, pending: 0, timer: null, densityAbort: null,
      bitmap: null, dirty: true, frameRequested: false, frames: 0,
      redraw: requestFrame, refresh: scheduleRefresh, reload, idle, select, setTool,
    };
    const item = () => viewer.world.getItemAt(0);

    // ---------------------------------------------------------------- canvases
    // "annotation-layer" holds the rasterised shapes (or the density raster) for the screen
    // plus MARGIN_PX on each side; between rasterisations a frame only sets its CSS transform,
    // which the compositor applies (no canvas work per frame). "annotation-edit", screen
    // sized, holds what changes with the mouse: the selection and the shape being drawn.
    const canvas = el("canvas", { id: "annotation-layer", class: "annotation-layer" });
    canvas.style.left = canvas.style.top = `${-MARGIN_PX}px`;
    canvas.style.transformOrigin = `${MARGIN_PX}px ${MARGIN_PX}px`;
    const edit = el("canvas", { id: "annotation-edit", class: "annotation-edit" });
    viewer.canvas.append(canvas, edit);
    const ectx = edit.getContext("2d");

    function size() {
      const dpr = window.devicePixelRatio || 1;
      const w = viewer.canvas.clientWidth, h = viewer.canvas.clientHeight;
      if (edit.width !== Math.round(w * dpr) || edit.height !== Math.round(h * dpr)) {
        edit.width = Math.round(w * dpr);
        edit.height = Math.round(h * dpr);
        layer.dirty = true;
      }
      return { w, h, dpr };
    }

    /** Image -> element: x_el = ox + s * x_img (no rotation in this viewer). */
    function transform() {
      const it = item();
      const p0 = it.imageToViewerElementCoordinates(new OSD.Point(0, 0));
      const p1 = it.imageToViewerElementCoordinates(new OSD.Point(1000, 1000));
      return { s: (p1.x - p0.x) / 1000, ox: p0.x, oy: p0.y };
    }

    const toImage = (p) => item().viewerElementToImageCoordinates(p);

    function visibleRect(t, w, h) {
      return { x: -t.ox / t.s, y: -t.oy / t.s, w: w / t.s, h: h / t.s };
    }

    function requestFrame() {
      if (layer.frameRequested) return;
      layer.frameRequested = true;
      requestAnimationFrame(frame);
    }

    function rasterise(t, w, h, dpr) {
      const started = performance.now();
      const bw = Math.ceil((w + 2 * MARGIN_PX) * dpr), bh = Math.ceil((h + 2 * MARGIN_PX) * dpr);
      if (canvas.width !== bw || canvas.height !== bh) {
        canvas.width = bw; canvas.height = bh;
        canvas.style.width = `${bw / dpr}px`;
        canvas.style.height = `${bh / dpr}px`;
      }
      const g = canvas.getContext("2d");
      g.setTransform(1, 0, 0, 1, 0, 0);
      g.clearRect(0, 0, bw, bh);
      layer.bitmap = { t, w, h };
      layer.dirty = false;
      layer.rasterised += 1;
      if (layer.mode === "density") {
        const d = layer.density;
        g.setTransform(dpr, 0, 0, dpr, dpr * MARGIN_PX, dpr * MARGIN_PX);
        if (d) g.drawImage(d.canvas, t.ox + t.s * d.x, t.oy + t.s * d.y, t.s * d.w, t.s * d.h);
        layer.rasterMs = performance.now() - started;
        return;
      }
      g.setTransform(dpr * t.s, 0, 0, dpr * t.s, dpr * (t.ox + MARGIN_PX), dpr * (t.oy + MARGIN_PX));
      // Many shapes: outlines one device pixel wide and no fill. Skia draws those as
      // hairlines, ~25x faster than a 1.5 px stroke (2 s -> 75 ms for 10^5 hexagons in
      // software); a tint under 10^4 outlines would hide the tissue anyway.
      // A shape crossing cells comes with each of them: harmless for an opaque outline, but a
      // tint drawn twice is darker, so the few shapes that get a tint are drawn once each.
      const unique = shownRecords();
      const heavy = unique.size > HEAVY_SHAPES;
      g.lineWidth = heavy ? 1 / (t.s * dpr) : 1.5 / t.s;
      g.lineJoin = "round";
      const groups = heavy ? layer.shown.map((cell) => cell.batches)
        : [batches([...unique.values()])];
      const points = [];
      for (const group of groups) {
        for (const [color, batch] of group) {
          if (!heavy) {
            g.fillStyle = color + "26";  // ~15 % alpha
            g.fill(batch.areas, "evenodd");
          }
          g.strokeStyle = color;
          g.stroke(batch.areas);
          g.stroke(batch.lines);
          if (batch.points.length) points.push([color, batch.points]);
        }
      }
      g.setTransform(dpr, 0, 0, dpr, dpr * MARGIN_PX, dpr * MARGIN_PX);
      g.lineWidth = 1.5;
      for (const [color, pts] of points) {
        const path = new Path2D();
        for (const c of pts) {
          const x = t.ox + t.s * c[0], y = t.oy + t.s * c[1];
          path.moveTo(x + 4, y);
          path.arc(x, y, 4, 0, 2 * Math.PI);
        }
        g.fillStyle = color;
        g.fill(path);
        g.strokeStyle = "#000";
        g.stroke(path);
      }
      layer.rasterMs = performance.now() - started;
      layer.drawn = unique.size;
    }

    /** Each shown annotation once, by id (kept until the shown cells or their records change). */
    function shownRecords() {
      if (!layer.unique) {
        layer.unique = new Map();
        for (const cell of layer.shown) for (const r of cell.records) layer.unique.set(r.id, r);
      }
      return layer.unique;
    }

    function frame() {
      layer.frameRequested = false;
      if (viewer.world.getItemCount() === 0) return;
      const { w, h, dpr } = size();
      const t = transform();
      canvas.style.display = layer.visible ? "" : "none";
      if (layer.visible) {
        let b = layer.bitmap;
        const k = b ? t.s / b.t.s : 0;
        const dx = b ? t.ox - k * b.t.ox : 0, dy = b ? t.oy - k * b.t.oy : 0;
        const covered = b && Math.abs(dx) <= MARGIN_PX && Math.abs(dy) <= MARGIN_PX;
        const sameZoom = b && Math.abs(k - 1) < 1e-6;
        if (layer.dirty || !b || b.w !== w || b.h !== h || !covered ||
            (!sameZoom && !viewer.isAnimating())) {
          rasterise(t, w, h, dpr);
          b = layer.bitmap;
        }
        // element = dx + k * (bitmap px - MARGIN): what was drawn at (ox0, s0) shown at (ox, s)
        const kk = t.s / b.t.s;
        canvas.style.transform =
          `translate(${t.ox - kk * b.t.ox}px, ${t.oy - kk * b.t.oy}px) scale(${kk})`;
      }
      ectx.setTransform(1, 0, 0, 1, 0, 0);
      ectx.clearRect(0, 0, edit.width, edit.height);
      if (layer.visible) {
        ectx.setTransform(dpr, 0, 0, dpr, 0, 0);
        drawSelection(t);
        drawDraft(t);
      }
      layer.frames += 1;
    }

    function tracePath(g, geometry, t) {
      const P = (c) => [t.ox + t.s * c[0], t.oy + t.s * c[1]];
      const ring = (r) => {
        r.forEach((c, i) => { const [x, y] = P(c); if (i) g.lineTo(x, y); else g.moveTo(x, y); });
      };
      const type = geometry.type, c = geometry.coordinates;
      if (type === "Polygon") c.forEach((r) => { ring(r); g.closePath(); });
      else if (type === "MultiPolygon") c.forEach((p) => p.forEach((r) => { ring(r); g.closePath(); }));
      else if (type === "LineString") ring(c);
      else {
        for (const p of type === "Point" ? [c] : c) {
          const [x, y] = P(p);
          g.moveTo(x + 6, y);
          g.arc(x, y, 6, 0, 2 * Math.PI);
        }
      }
    }

    function drawSelection(t) {
      const r = layer.selected;
      if (!r) return;
      ectx.beginPath();
      tracePath(ectx, r.geometry, t);
      ectx.lineWidth = 5;
      ectx.strokeStyle = "rgba(255, 255, 255, 0.9)";
      ectx.stroke();
      ectx.lineWidth = 2.5;
      ectx.strokeStyle = r.color;
      ectx.stroke();
    }

    function drawDraft(t) {
      const d = layer.draft;
      if (!d || d.points.length === 0) return;
      const pts = d.cursor && layer.tool === "polygon" ? d.points.concat([d.cursor]) : d.points;
      const geometry = draftGeometry(layer.tool, pts) ||
        { type: "LineString", coordinates: pts.map(pos) };
      ectx.beginPath();
      tracePath(ectx, geometry, t);
      ectx.setLineDash([6, 4]);
      ectx.lineWidth = 2;
      ectx.strokeStyle = currentClass().color;
      ectx.stroke();
      ectx.setLineDash([]);
    }

    // ---------------------------------------------------------------- loading
    function scheduleRefresh() {
      clearTimeout(layer.timer);
      layer.timer = setTimeout(refresh, DEBOUNCE_MS);
    }

    async function getJson(url, signal) {
      layer.pending += 1;
      try {
        const r = await fetch(url, { signal, headers: { Accept: "application/json" } });
        if (!r.ok) throw new Error(`HTTP ${r.status}`);
        return await r.json();
      } finally { layer.pending -= 1; }
    }

    const query = (x, y, w, h) =>
      `x=${x.toFixed(1)}&y=${y.toFixed(1)}&width=${w.toFixed(1)}&height=${h.toFixed(1)}`;

    async function refresh() {
      layer.timer = null;
      if (viewer.world.getItemCount() === 0) return;
      const { w, h } = size();
      const t = transform();
      const v = visibleRect(t, w, h);
      const cellSize = 2 ** Math.max(8, Math.ceil(Math.log2(Math.max(v.w, v.h) / 4)));
      // the cells of the view plus half a cell around it
      const cx0 = Math.floor((v.x - cellSize / 2) / cellSize);
      const cy0 = Math.floor((v.y - cellSize / 2) / cellSize);
      const cx1 = Math.floor((v.x + v.w + cellSize / 2) / cellSize);
      const cy1 = Math.floor((v.y + v.h + cellSize / 2) / cellSize);
      const region = { x: cx0 * cellSize, y: cy0 * cellSize,
        w: (cx1 - cx0 + 1) * cellSize, h: (cy1 - cy0 + 1) * cellSize };
      if (layer.densityAbort) layer.densityAbort.abort();
      const abort = layer.densityAbort = new AbortController();
      const cols = Math.max(1, Math.min(512, Math.round((region.w * t.s) / DENSITY_CELL_PX)));
      const rows = Math.max(1, Math.min(512, Math.round((region.h * t.s) / DENSITY_CELL_PX)));
      let grid;
      try {
        grid = await getJson(`${base}/density?${query(region.x, region.y, region.w, region.h)}` +
          `&cols=${cols}&rows=${rows}`, abort.signal);
      } catch (err) {
        if (err.name !== "AbortError") status(`Annotations could not be loaded (${err.message}).`);
        return;
      }
      let total = 0;
      for (const row of grid.counts) for (const n of row) total += n;
      if (total > layer.maxShapes) {
        setDensity(region, grid);
        return;
      }
      if (layer.mode !== "shapes") layer.dirty = true;
      layer.mode = "shapes";
      layer.density = null;
      layer.grid = { region, grid };
      // Halve the cells (same power-of-two grid) until none holds more than a query returns.
      let cell = cellSize;
      while (cell > 256 && densest(grid, region, cell) > CELL_LIMIT * 0.8) cell /= 2;
      // Cells outside the image are not asked for: a shape lying wholly off the slide is
      // not shown (the export still has it).
      const dims = item().source.dimensions;
      const m = Math.max(v.w, v.h) / 8;
      const needed = [];
      const lo = (a) => Math.floor(Math.max(a, 0) / cell);
      for (let cy = lo(v.y - m); cy <= Math.floor(Math.min(v.y + v.h + m, dims.y) / cell); cy++) {
        for (let cx = lo(v.x - m); cx <= Math.floor(Math.min(v.x + v.w + m, dims.x) / cell); cx++) {
          needed.push(`${cell}:${cx}:${cy}`);
        }
      }
      const keep = new Set(needed);
      for (const [key, cell] of layer.cells) {  // abort what is no longer in view; evict
        if (keep.has(key)) continue;
        if (cell.abort) cell.abort.abort();
        if (!cell.records || !layer.shown.includes(cell)) layer.cells.delete(key);
      }
      layer.cellSize = cell;
      layer.needed = needed;
      const loads = needed.filter((k) => !layer.cells.has(k)).map((key) => loadCell(key));
      showCells(needed);
      await Promise.all(loads);
    }

    /** Most annotations (by bbox centre) that one cell of ``size`` would hold. */
    function densest(grid, region, size_) {
      const gw = region.w / grid.cols, gh = region.h / grid.rows;
      const buckets = new Map();
      let max = 0;
      grid.counts.forEach((row, j) => row.forEach((n, i) => {
        if (!n) return;
        const key = Math.floor((region.x + (i + 0.5) * gw) / size_) * 65536 +
          Math.floor((region.y + (j + 0.5) * gh) / size_);
        const sum = (buckets.get(key) || 0) + n;
        buckets.set(key, sum);
        max = Math.max(max, sum);
      }));
      return max;
    }

    function showCells(keys) {
      const cells = keys.map((k) => layer.cells.get(k));
      let shown;
      if (cells.every((c) => c && c.records)) {
        shown = cells;
        for (const [key, cell] of layer.cells) {
          if (!keys.includes(key) && cell.records) layer.cells.delete(key);
        }
      } else {  // keep what is on screen until every cell of the new view is in
        const extra = cells.filter((c) => c && c.records && !layer.shown.includes(c));
        shown = layer.shown.concat(extra);
      }
      const same = shown.length === layer.shown.length &&
        shown.every((c) => layer.shown.includes(c));
      layer.shown = shown;
      if (!same) {
        layer.unique = null;
        layer.dirty = true;
        requestFrame();
      }
    }

    async function loadCell(key) {
      const [size_, cx, cy] = key.split(":").map(Number);
      const cell = { key, abort: new AbortController(), records: null, batches: null };
      layer.cells.set(key, cell);
      let doc;
      try {
        doc = await getJson(`${base}?${query(cx * size_, cy * size_, size_, size_)}` +
          `&limit=${CELL_LIMIT}`, cell.abort.signal);
      } catch (err) {
        if (layer.cells.get(key) === cell) layer.cells.delete(key);
        if (err.name !== "AbortError") status(`Annotations could not be loaded (${err.message}).`);
        return;
      }
      cell.abort = null;
      if (doc.truncated && layer.grid) {  // more than one query returns: never show a part
        layer.cells.delete(key);
        setDensity(layer.grid.region, layer.grid.grid);
        return;
      }
      setRecords(cell, doc.features.map((f) => record(f, layer.classColors)));
      if (layer.needed.includes(key)) showCells(layer.needed);
    }

    function setRecords(cell, records) {
      cell.records = records;
      cell.batches = batches(records);
      layer.unique = null;
      layer.dirty = true;
    }

    function setDensity(region, grid) {
      const c = document.createElement("canvas");
      c.width = grid.cols; c.height = grid.rows;
      const g = c.getContext("2d");
      const img = g.createImageData(grid.cols, grid.rows);
      let max = 1;
      for (const row of grid.counts) for (const n of row) max = Math.max(max, n);
      grid.counts.forEach((row, y) => row.forEach((n, x) => {
        if (!n) return;
        const i = 4 * (y * grid.cols + x);
        img.data[i] = 255; img.data[i + 1] = 120; img.data[i + 2] = 0;
        img.data[i + 3] = Math.round(255 * (0.15 + 0.5 * Math.sqrt(n / max)));
      }));
      g.putImageData(img, 0, 0);
      layer.mode = "density";
      layer.density = { canvas: c, x: region.x, y: region.y, w: region.w, h: region.h, max };
      layer.dirty = true;
      requestFrame();
    }

    /** Drop every cached cell and load the view again (after an import or a 409). */
    function reload() {
      for (const cell of layer.cells.values()) if (cell.abort) cell.abort.abort();
      layer.cells.clear();
      layer.shown = [];
      layer.unique = null;
      layer.selected = null;
      layer.dirty = true;
      showSelection();
      return refresh();
    }

    /** Resolves when no request is running or due and the last frame is drawn. */
    function idle() {
      return new Promise((resolve) => {
        const tick = () => {
          if (layer.pending === 0 && layer.timer === null && !layer.frameRequested &&
              !viewer.isAnimating()) resolve(true);
          else setTimeout(tick, 20);
        };
        tick();
      });
    }

    // Local edits patch the loaded cells: no reload of the view after each save.
    function patch(id, replacement) {
      for (const cell of layer.cells.values()) {
        if (!cell.records) continue;
        let records = cell.records.filter((r) => r.id !== id);
        const removed = records.length !== cell.records.length;
        const b = replacement && replacement.box;
        const [size_, cx, cy] = cell.key.split(":").map(Number);
        const added = b && b[0] <= (cx + 1) * size_ && b[2] >= cx * size_ &&
          b[1] <= (cy + 1) * size_ && b[3] >= cy * size_;
        if (added) records = records.concat([replacement]);
        if (removed || added) setRecords(cell, records);
      }
      requestFrame();
    }

    // ---------------------------------------------------------------- the panel
    const ui = {};
    function buildPanel() {
      panel.hidden = false;
      const tools = el("div", { class: "buttons annotation-tools", role: "toolbar",
        "aria-label": "annotation tools" });
      for (const [tool, label] of TOOLS) {
        if (tool !== "select" && !layer.canEdit) continue;
        const b = el("button", { type: "button", "data-tool": tool, "aria-pressed": "false" }, label);
        b.addEventListener("click", () => setTool(layer.tool === tool ? null : tool));
        tools.appendChild(b);
      }
      const show = el("label", { class: "row" });
      ui.visible = el("input", { type: "checkbox", id: "annotations-on", checked: "" });
      ui.visible.addEventListener("change", () => {
        layer.visible = ui.visible.checked;
        requestFrame();
      });
      show.append(ui.visible, "Show annotations");
      ui.cls = el("select", { id: "annotation-class" });
      ui.comment = el("textarea", { id: "annotation-comment", rows: "2", maxlength: "10000",
        placeholder: "comment" });
      const clsRow = el("label", { class: "row" }, "Class ");
      clsRow.appendChild(ui.cls);
      ui.selected = el("div", { id: "annotation-selected", class: "annotation-selected" });
      ui.selected.hidden = true;
      ui.owner = el("p", { id: "annotation-owner", class: "annotation-owner" });
      const edit = el("div", { class: "buttons" });
      ui.save = el("button", { type: "button", id: "annotation-save" }, "Save changes");
      ui.del = el("button", { type: "button", id: "annotation-delete" }, "Delete");
      ui.save.addEventListener("click", saveSelected);
      ui.del.addEventListener("click", deleteSelected);
      edit.append(ui.save, ui.del);
      ui.selected.append(ui.owner, edit);
      const io = el("div", { class: "buttons" });
      const exp = el("button", { type: "button", id: "annotation-export" }, "Export GeoJSON");
      exp.addEventListener("click", exportGeojson);
      io.appendChild(exp);
      if (layer.canEdit) {
        ui.file = el("input", { type: "file", id: "annotation-import-file", hidden: "",
          accept: ".geojson,.json,application/geo+json,application/json" });
        const imp = el("button", { type: "button", id: "annotation-import" }, "Import GeoJSON");
        imp.addEventListener("click", () => ui.file.click());
        ui.file.addEventListener("change", importGeojson);
        io.append(imp, ui.file);
      }
      ui.status = el("output", { id: "annotation-status", class: "annotation-status" });
      panel.append(show, tools, clsRow, ui.comment, ui.selected, io, ui.status);
    }

    function status(message, kind) {
      ui.status.textContent = message;
      ui.status.dataset.kind = kind || "error";
    }

    function fillClasses(list) {
      const merged = new Map(DEFAULT_CLASSES.map((c) => [c.name, c.color]));
      for (const c of list) merged.set(c.name, c.color);
      layer.classes = [...merged].map(([name, color]) => ({ name, color }));
      layer.classColors = merged;
      ui.cls.textContent = "";
      for (const c of layer.classes) {
        const o = el("option", { value: c.name }, `■ ${c.name}`);
        o.style.color = c.color;
        ui.cls.appendChild(o);
      }
    }

    function currentClass() {
      const name = ui.cls.value;
      return { name, color: layer.classColors.get(name) || "#ffcc00" };
    }

    function setTool(tool) {
      layer.tool = tool;
      layer.draft = null;
      for (const b of panel.querySelectorAll("button[data-tool]")) {
        b.setAttribute("aria-pressed", String(b.dataset.tool === tool));
      }
      const drawing = tool !== null;
      viewer.gestureSettingsMouse.clickToZoom = !drawing;
      viewer.gestureSettingsMouse.dblClickToZoom = !drawing;
      document.body.classList.toggle("annotating", drawing && tool !== "select");
      requestFrame();
    }

    const isOwn = (r) => r && layer.canEdit && layer.user !== null && r.owner === layer.user;

    function select(r) {
      layer.selected = r || null;
      showSelection();
      requestFrame();
    }

    function showSelection() {
      const r = layer.selected;
      ui.selected.hidden = !r;
      if (!r) return;
      const own = isOwn(r);
      ui.owner.textContent = `${r.kind} by ${r.owner} · version ${r.version}` +
        (own ? "" : " (read only)");
      ui.selected.dataset.id = String(r.id);
      ui.save.disabled = ui.del.disabled = !own;
      if (r.cls && layer.classColors.has(r.cls)) ui.cls.value = r.cls;
      ui.comment.value = r.comment;
    }

    // ---------------------------------------------------------------- API calls
    async function send(method, url, body, type) {
      const headers = { "X-CSRF-Token": csrf() };
      if (body !== undefined) headers["Content-Type"] = type || "application/json";
      const r = await fetch(url, { method, headers,
        body: body === undefined ? undefined : (type ? body : JSON.stringify(body)) });
      let payload = null;
      try { payload = await r.json(); } catch (_) { payload = null; }
      return { status: r.status, ok: r.ok, payload };
    }

    function failure(res, what) {
      const detail = res.payload && res.payload.detail ? `: ${res.payload.detail}` : "";
      if (res.status === 409) {
        status(`${what}: this annotation was changed by someone else meanwhile. ` +
          "The view was reloaded; apply your change again.", "conflict");
        reload();
        return;
      }
      if (res.status === 403) { status(`${what}: not allowed${detail}.`); return; }
      status(`${what} failed (HTTP ${res.status})${detail}.`);
    }

    async function create(tool, geometry) {
      const cls = currentClass();
      const body = { geometry, kind: tool, class_name: cls.name, color: cls.color,
        comment: ui.comment.value };
      const res = await send("POST", base, body);
      if (!res.ok) { failure(res, "Saving"); return; }
      const r = record(res.payload, layer.classColors);
      patch(r.id, r);
      status(`Saved ${tool} #${r.id}.`, "ok");
      document.dispatchEvent(new CustomEvent("iain:annotation-saved", { detail: r }));
    }

    async function saveSelected() {
      const r = layer.selected;
      if (!isOwn(r)) return;
      const cls = currentClass();
      const body = { geometry: r.geometry, kind: r.kind, class_name: cls.name, color: cls.color,
        comment: ui.comment.value, layer: r.layer, version: r.version };
      const res = await send("PUT", `${base}/${r.id}`, body);
      if (!res.ok) { failure(res, "Saving"); return; }
      const updated = record(res.payload, layer.classColors);
      patch(updated.id, updated);
      select(updated);
      status(`Saved #${updated.id} (version ${updated.version}).`, "ok");
    }

    async function deleteSelected() {
      const r = layer.selected;
      if (!isOwn(r)) return;
      const res = await send("DELETE", `${base}/${r.id}?version=${r.version}`);
      if (!res.ok) { failure(res, "Deleting"); return; }
      patch(r.id, null);
      select(null);
      status(`Deleted #${r.id}.`, "ok");
    }

    function exportGeojson() {
      const a = el("a", { href: `${base}/export.geojson`, download: "" });
      document.body.appendChild(a);
      a.click();
      a.remove();
    }

    async function importGeojson() {
      const file = ui.file.files && ui.file.files[0];
      if (!file) return;
      status(`Importing ${file.name}…`, "busy");
      const res = await send("POST", `${base}/import`, await file.text(), "application/json");
      ui.file.value = "";
      if (!res.ok) { failure(res, `Importing ${file.name}`); return; }
      status(`Imported ${res.payload.imported} annotations from ${file.name}.`, "ok");
      await reload();
    }

    // ---------------------------------------------------------------- pointer input
    const DRAG_TOOLS = new Set(["line", "rectangle", "ellipse", "freehand"]);

    function finishDraft() {
      const d = layer.draft;
      const tool = layer.tool;
      layer.draft = null;
      requestFrame();
      if (!d) return;
      const geometry = draftGeometry(tool, d.points);
      if (geometry) create(tool, geometry);
    }

    function elementPoint(event) {
      const p = toImage(event.position);
      return { x: p.x, y: p.y, ex: event.position.x, ey: event.position.y };
    }

    viewer.addHandler("canvas-press", (e) => {
      if (!DRAG_TOOLS.has(layer.tool)) return;
      layer.draft = { points: [elementPoint(e)], dragged: false };
    });
    viewer.addHandler("canvas-drag", (e) => {
      if (!DRAG_TOOLS.has(layer.tool)) return;
      e.preventDefaultAction = true;  // draw, do not pan
      const d = layer.draft;
      if (!d) return;
      const p = elementPoint(e);
      const last = d.points[d.points.length - 1];
      if (layer.tool === "freehand") {
        if (Math.hypot(p.ex - last.ex, p.ey - last.ey) >= 3) d.points.push(p);
      } else d.points = [d.points[0], p];
      d.dragged = true;
      requestFrame();
    });
    viewer.addHandler("canvas-release", (e) => {
      if (!DRAG_TOOLS.has(layer.tool) || !layer.draft) return;
      if (layer.draft.dragged) {
        if (layer.tool !== "freehand") layer.draft.points[1] = elementPoint(e);
        finishDraft();
      } else layer.draft = null;
    });
    viewer.addHandler("canvas-click", (e) => {
      if (!layer.tool || !e.quick) return;
      e.preventDefaultAction = true;
      const p = elementPoint(e);
      if (layer.tool === "point") { layer.draft = { points: [p] }; finishDraft(); return; }
      if (layer.tool === "polygon") {
        const d = layer.draft || (layer.draft = { points: [] });
        const first = d.points[0];
        if (first && d.points.length >= 3 && Math.hypot(first.ex - p.ex, first.ey - p.ey) < 8) {
          finishDraft();
          return;
        }
        const last = d.points[d.points.length - 1];
        if (!last || Math.hypot(last.ex - p.ex, last.ey - p.ey) >= 3) d.points.push(p);
        requestFrame();
        return;
      }
      if (layer.tool === "select") {
        const tol = 6 / transform().s;
        let best = null;
        for (const cell of layer.shown) {
          for (const r of cell.records) {
            if (!hits(r, p, tol)) continue;
            const area = (r.box[2] - r.box[0]) * (r.box[3] - r.box[1]);
            if (!best || area < best.area) best = { r, area };
          }
        }
        select(best ? best.r : null);
      }
    });
    viewer.addHandler("canvas-double-click", (e) => {
      if (layer.tool !== "polygon") return;
      e.preventDefaultAction = true;
      finishDraft();
    });
    viewer.canvas.addEventListener("pointermove", (e) => {
      if (layer.tool !== "polygon" || !layer.draft) return;
      const r = viewer.canvas.getBoundingClientRect();
      const p = toImage(new OSD.Point(e.clientX - r.left, e.clientY - r.top));
      layer.draft.cursor = { x: p.x, y: p.y };
      requestFrame();
    });
    document.addEventListener("keydown", (e) => {
      if (e.target && /^(INPUT|SELECT|TEXTAREA)$/.test(e.target.tagName)) return;
      if (e.key === "Escape" && (layer.draft || layer.selected)) {
        layer.draft = null;
        select(null);
      } else if (e.key === "Enter" && layer.tool === "polygon" && layer.draft) {
        finishDraft();
        e.preventDefault();
      } else if (e.key === "Delete" && isOwn(layer.selected)) {
        deleteSelected();
        e.preventDefault();
      }
    });

    // ---------------------------------------------------------------- start
    buildPanel();
    for (const event of ["update-viewport", "animation", "resize"]) {
      viewer.addHandler(event, requestFrame);
    }
    viewer.addHandler("viewport-change", scheduleRefresh);
    viewer.addHandler("resize", scheduleRefresh);
    viewer.addHandler("animation-finish", () => { requestFrame(); scheduleRefresh(); });
    const me = layer.user ? Promise.resolve({ username: layer.user })
      : getJson(opts.meUrl || "/api/me").catch(() => ({ username: null }));
    const classes = getJson(opts.classesUrl || "/api/annotation-classes").catch(() => []);
    Promise.all([me, classes]).then(([who, list]) => {
      layer.user = who.username;
      fillClasses(Array.isArray(list) ? list : []);
      return refresh();
    });
    return layer;
  }

  window.iainAnnotations = { attach };
})();
