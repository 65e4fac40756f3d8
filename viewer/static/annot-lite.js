// A small read/draw layer for annotations over an OpenSeadragon viewer, for the pages of
// sharing between centres: shows the features of `${base}?x=&y=&width=&height=` (level-0
// pixels) on an SVG layer and, when canEdit, draws rectangles (two clicks) POSTed to `base`.
// When the full annotation layer (annotations.js, window.iainAnnotations) is on the page, the
// pages use that instead; this one keeps the second-opinion flow working without it.
(function () {
  "use strict";

  const SVG = "http://www.w3.org/2000/svg";

  function csrf() {
    const m = document.cookie.match(/(?:^|;\s*)iain_csrf=([^;]+)/);
    return m ? decodeURIComponent(m[1]) : "";
  }

  function attach(viewer, opts) {
    const svg = opts.layer;
    const state = { features: [], mode: null, corner: null, error: null };
    const item = () => viewer.world.getItemAt(0);

    function rings(geometry) {
      if (geometry.type === "Polygon") return [geometry.coordinates[0]];
      if (geometry.type === "MultiPolygon") return geometry.coordinates.map((p) => p[0]);
      if (geometry.type === "LineString") return [geometry.coordinates];
      if (geometry.type === "Point") return [[geometry.coordinates]];
      return [];
    }

    function draw() {
      while (svg.firstChild) svg.removeChild(svg.firstChild);
      if (!item()) return;
      for (const f of state.features) {
        for (const ring of rings(f.geometry)) {
          const pts = ring.map(([x, y]) => item().imageToViewerElementCoordinates(
            new OpenSeadragon.Point(x, y)));
          const shape = document.createElementNS(SVG, "polygon");
          shape.setAttribute("points", pts.map((p) => `${p.x},${p.y}`).join(" "));
          shape.dataset.owner = (f.iain && f.iain.owner) || "";
          shape.dataset.id = String((f.iain && f.iain.id) || "");
          svg.appendChild(shape);
        }
      }
    }

    function refresh() {
      const size = item().getContentSize();
      const q = new URLSearchParams({ x: 0, y: 0, width: size.x, height: size.y });
      return fetch(`${opts.base}?${q}`)
        .then((r) => {
          if (!r.ok) throw new Error(`annotations: HTTP ${r.status}`);
          return r.json();
        })
        .then((collection) => {
          state.features = collection.features || [];
          draw();
          if (opts.onChange) opts.onChange(state.features);
          return state.features;
        });
    }

    function create(geometry, extra) {
      return fetch(opts.base, {
        method: "POST",
        headers: { "content-type": "application/json", "x-csrf-token": csrf() },
        body: JSON.stringify(Object.assign({ geometry }, extra || {})),
      }).then((r) => {
        if (!r.ok) throw new Error(`annotation not saved: HTTP ${r.status}`);
        return r.json();
      }).then((feature) => refresh().then(() => feature));
    }

    function rectangle(a, b) {
      const x0 = Math.round(Math.min(a.x, b.x));
      const y0 = Math.round(Math.min(a.y, b.y));
      const x1 = Math.round(Math.max(a.x, b.x));
      const y1 = Math.round(Math.max(a.y, b.y));
      return { type: "Polygon",
        coordinates: [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]] };
    }

    if (opts.canEdit && opts.button) {
      const button = opts.button;
      button.hidden = false;
      button.addEventListener("click", () => {
        state.mode = state.mode ? null : "rect";
        state.corner = null;
        button.setAttribute("aria-pressed", String(state.mode !== null));
        viewer.gestureSettingsMouse.clickToZoom = state.mode === null;
      });
      viewer.addHandler("canvas-click", (e) => {
        if (state.mode !== "rect" || !e.quick) return;
        e.preventDefaultAction = true;
        const p = item().viewerElementToImageCoordinates(e.position);
        if (!state.corner) { state.corner = { x: p.x, y: p.y }; return; }
        const geometry = rectangle(state.corner, p);
        state.corner = null;
        state.mode = null;
        button.setAttribute("aria-pressed", "false");
        viewer.gestureSettingsMouse.clickToZoom = true;
        create(geometry, opts.defaults).catch((err) => {
          state.error = err.message;
          if (opts.onError) opts.onError(err);
        });
      });
    } else if (opts.button) {
      opts.button.hidden = true;
    }
    viewer.addHandler("update-viewport", draw);
    return { refresh, create, draw, state };
  }

  window.iainAnnotLite = { attach };
})();
