// AI label layers on the slide page: outlines (GeoJSON, level-0 pixels) drawn as SVG over the
// viewer in each class's colour, a badge saying the layer is AI output and whether a
// pathologist validated it, and accept / reject buttons (the server decides who may).
//
// viewer.js fires "iain:overlay" with the layer's spec ({name, outlines_url, status, review,
// review_url}) once its tiles are open; the "overlay-on" checkbox toggles outlines too.
(function () {
  "use strict";

  const $ = (id) => document.getElementById(id);
  const SVG = "http://www.w3.org/2000/svg";
  const state = { svg: null, group: null, spec: null, features: [] };
  window.iainOverlay = state;

  function badgeText(spec) {
    if (spec.status === "accepted" && spec.review) {
      return `AI output — accepted by ${spec.review.by}`;
    }
    if (spec.status === "rejected" && spec.review) {
      return `AI output — rejected by ${spec.review.by}`;
    }
    return "AI output — pending validation";
  }

  function ensureUi() {
    if ($("ai-badge")) return;
    const badge = document.createElement("p");
    badge.id = "ai-badge";
    badge.className = "ai-badge";
    badge.setAttribute("role", "status");
    const buttons = document.createElement("div");
    buttons.className = "buttons";
    buttons.id = "ai-review";
    for (const [decision, label] of [["accept", "Accept"], ["reject", "Reject"]]) {
      const b = document.createElement("button");
      b.type = "button";
      b.dataset.decision = decision;
      b.textContent = label;
      b.addEventListener("click", () => review(decision));
      buttons.appendChild(b);
    }
    const note = document.createElement("p");
    note.id = "ai-review-note";
    note.className = "measure";
    $("overlay-panel").append(badge, buttons, note);
    // the badge also sits on the image, where the eye is
    const onImage = document.createElement("div");
    onImage.id = "ai-badge-image";
    onImage.className = "ai-badge ai-badge-image";
    $("osd").appendChild(onImage);
  }

  function showStatus(spec) {
    const text = badgeText(spec);
    $("ai-badge").textContent = text;
    $("ai-badge-image").textContent = text;
    for (const el of [$("ai-badge"), $("ai-badge-image")]) el.dataset.status = spec.status;
  }

  const { csrf } = window.iainCommon;

  function review(decision) {
    const spec = state.spec;
    if (!spec || !spec.review_url) return;
    fetch(spec.review_url, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf() },
      body: JSON.stringify({ decision, comment: "" }),
    }).then((r) => {
      if (r.status === 403) throw new Error("Only the centre's pathologists validate AI output.");
      if (!r.ok) throw new Error(`Review not recorded (HTTP ${r.status}).`);
      return r.json();
    }).then((rec) => {
      spec.review = rec;
      spec.status = rec.decision === "accept" ? "accepted" : "rejected";
      showStatus(spec);
      $("ai-review-note").textContent = "";
    }).catch((err) => { $("ai-review-note").textContent = err.message; });
  }

  function ensureSvg(viewer) {
    if (state.svg) return;
    const svg = document.createElementNS(SVG, "svg");
    svg.id = "ai-outlines";
    svg.setAttribute("class", "ai-outlines");
    const group = document.createElementNS(SVG, "g");
    svg.appendChild(group);
    viewer.canvas.appendChild(svg);
    state.svg = svg;
    state.group = group;
    const redraw = () => place(viewer);
    for (const event of ["update-viewport", "animation", "resize", "open"]) {
      viewer.addHandler(event, redraw);
    }
  }

  // Image (level-0) coordinates -> element pixels: one affine transform on the group.
  function place(viewer) {
    if (!state.group || viewer.world.getItemCount() === 0) return;
    const item = viewer.world.getItemAt(0);
    const OSD = window.OpenSeadragon;
    const p0 = item.imageToViewerElementCoordinates(new OSD.Point(0, 0));
    const p1 = item.imageToViewerElementCoordinates(new OSD.Point(1000, 1000));
    const sx = (p1.x - p0.x) / 1000;
    const sy = (p1.y - p0.y) / 1000;
    state.group.setAttribute("transform", `translate(${p0.x} ${p0.y}) scale(${sx} ${sy})`);
  }

  function colour(feature) {
    const c = feature.properties && feature.properties.classification;
    const rgb = c && Array.isArray(c.color) ? c.color : [255, 255, 0];
    return `rgb(${rgb[0]}, ${rgb[1]}, ${rgb[2]})`;
  }

  function drawOutlines(doc) {
    const group = state.group;
    while (group.firstChild) group.removeChild(group.firstChild);
    state.features = (doc && Array.isArray(doc.features)) ? doc.features : [];
    for (const f of state.features) {
      const g = f.geometry;
      if (!g) continue;
      const polygons = g.type === "Polygon" ? [g.coordinates]
        : g.type === "MultiPolygon" ? g.coordinates : [];
      for (const rings of polygons) {
        const path = document.createElementNS(SVG, "path");
        path.setAttribute("d", rings.map((ring) =>
          "M" + ring.map((p) => `${p[0]} ${p[1]}`).join("L") + "Z").join(" "));
        path.setAttribute("fill", "none");
        path.setAttribute("fill-rule", "evenodd");
        path.setAttribute("stroke", colour(f));
        path.setAttribute("stroke-width", "2");
        path.setAttribute("vector-effect", "non-scaling-stroke");
        path.dataset.cls = (f.properties.classification || {}).name || "";
        group.appendChild(path);
      }
    }
  }

  function toggle() {
    if (state.svg) state.svg.style.display = $("overlay-on").checked ? "" : "none";
  }

  document.addEventListener("iain:overlay", (e) => {
    const spec = e.detail || {};
    const viewer = window.iain && window.iain.viewer;
    if (!viewer) return;
    state.spec = spec;
    ensureUi();
    showStatus(spec);
    $("ai-review").style.display = spec.review_url ? "" : "none";
    ensureSvg(viewer);
    $("overlay-on").removeEventListener("change", toggle);
    $("overlay-on").addEventListener("change", toggle);
    if (!spec.outlines_url) { drawOutlines(null); return; }
    fetch(spec.outlines_url)
      .then((r) => (r.ok ? r.json() : null))
      .then((doc) => {
        drawOutlines(doc);
        place(viewer);
        toggle();
        document.body.dataset.outlines = String(state.features.length);
      })
      .catch(() => { document.body.dataset.outlines = "error"; });
  });
})();
