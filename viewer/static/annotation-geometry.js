// Pure geometry of the annotation layer (no DOM, no viewer): GeoJSON in level-0 image pixels
// -> compact records and per-colour Path2D batches; the tools' drafts -> GeoJSON geometries in
// the shapes the server validates (share/geometry.py: a rectangle is one closed ring of four
// axis-aligned corners, an ellipse a closed 64-gon with kind "ellipse"); hit testing.
(function () {
  "use strict";

  function rgbHex(rgb) {
    return "#" + rgb.map((c) => Number(c).toString(16).padStart(2, "0")).join("");
  }

  function bboxOf(coords, box) {
    if (typeof coords[0] === "number") {
      box[0] = Math.min(box[0], coords[0]); box[1] = Math.min(box[1], coords[1]);
      box[2] = Math.max(box[2], coords[0]); box[3] = Math.max(box[3], coords[1]);
    } else for (const c of coords) bboxOf(c, box);
    return box;
  }

  /** The compact record kept per annotation (the parsed GeoJSON is dropped). */
  function record(feature, classColors) {
    const props = feature.properties || {};
    const info = feature.iain || {};
    const cls = props.classification;
    let color = cls && Array.isArray(cls.color) ? rgbHex(cls.color) : null;
    if (!color) color = (info.class && classColors.get(info.class)) || "#ffcc00";
    const g = feature.geometry;
    return {
      id: info.id, version: info.version, owner: info.owner, kind: info.kind,
      cls: info.class ?? (cls ? cls.name : null), comment: info.comment || "",
      layer: info.layer || "default", color, geometry: g,
      box: bboxOf(g.coordinates, [Infinity, Infinity, -Infinity, -Infinity]),
    };
  }

  function addRings(path, rings) {
    for (const ring of rings) {
      path.moveTo(ring[0][0], ring[0][1]);
      for (let i = 1; i < ring.length; i++) path.lineTo(ring[i][0], ring[i][1]);
      path.closePath();
    }
  }

  function addLine(path, line) {
    path.moveTo(line[0][0], line[0][1]);
    for (let i = 1; i < line.length; i++) path.lineTo(line[i][0], line[i][1]);
  }

  /** Per colour: one Path2D of areas, one of lines, and the points (image coordinates). */
  function batches(records) {
    const out = new Map();
    for (const r of records) {
      let b = out.get(r.color);
      if (!b) { b = { areas: new Path2D(), lines: new Path2D(), points: [] }; out.set(r.color, b); }
      const g = r.geometry;
      if (g.type === "Polygon") addRings(b.areas, g.coordinates);
      else if (g.type === "MultiPolygon") for (const p of g.coordinates) addRings(b.areas, p);
      else if (g.type === "LineString") addLine(b.lines, g.coordinates);
      else if (g.type === "Point") b.points.push(g.coordinates);
      else if (g.type === "MultiPoint") for (const p of g.coordinates) b.points.push(p);
    }
    return out;
  }

  // ------------------------------------------------------------------ geometry of the tools
  const ELLIPSE_SEGMENTS = 64;

  function ellipseRing(a, b) {
    const cx = (a.x + b.x) / 2, cy = (a.y + b.y) / 2;
    const rx = Math.abs(b.x - a.x) / 2, ry = Math.abs(b.y - a.y) / 2;
    const ring = [];
    for (let i = 0; i < ELLIPSE_SEGMENTS; i++) {
      const t = (2 * Math.PI * i) / ELLIPSE_SEGMENTS;
      ring.push([round(cx + rx * Math.cos(t)), round(cy + ry * Math.sin(t))]);
    }
    ring.push(ring[0].slice());
    return ring;
  }

  function round(v) { return Math.round(v * 100) / 100; }
  const pos = (p) => [round(p.x), round(p.y)];

  /** GeoJSON geometry of a finished draft, or null when it is too small to be meant. */
  function draftGeometry(tool, pts) {
    if (tool === "point") return { type: "Point", coordinates: pos(pts[0]) };
    if (tool === "line") {
      return pts.length >= 2 ? { type: "LineString", coordinates: pts.map(pos) } : null;
    }
    if (tool === "rectangle" || tool === "ellipse") {
      const [a, b] = [pts[0], pts[pts.length - 1]];
      if (Math.abs(a.x - b.x) < 1 || Math.abs(a.y - b.y) < 1) return null;
      if (tool === "ellipse") return { type: "Polygon", coordinates: [ellipseRing(a, b)] };
      const [x0, x1] = [round(Math.min(a.x, b.x)), round(Math.max(a.x, b.x))];
      const [y0, y1] = [round(Math.min(a.y, b.y)), round(Math.max(a.y, b.y))];
      return { type: "Polygon", coordinates: [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]] };
    }
    if (pts.length < 3) return null;  // polygon, freehand
    const ring = pts.map(pos);
    ring.push(ring[0].slice());
    return { type: "Polygon", coordinates: [ring] };
  }

  // ------------------------------------------------------------------ hit testing
  function segmentDistance(p, a, b) {
    const dx = b[0] - a[0], dy = b[1] - a[1];
    const len = dx * dx + dy * dy;
    const t = len ? Math.max(0, Math.min(1, ((p.x - a[0]) * dx + (p.y - a[1]) * dy) / len)) : 0;
    return Math.hypot(p.x - a[0] - t * dx, p.y - a[1] - t * dy);
  }

  function insideRing(p, ring) {
    let inside = false;
    for (let i = 0, j = ring.length - 1; i < ring.length; j = i++) {
      const [xi, yi] = ring[i], [xj, yj] = ring[j];
      if ((yi > p.y) !== (yj > p.y) && p.x < ((xj - xi) * (p.y - yi)) / (yj - yi) + xi) {
        inside = !inside;
      }
    }
    return inside;
  }

  function hits(r, p, tol) {
    const b = r.box;
    if (p.x < b[0] - tol || p.x > b[2] + tol || p.y < b[1] - tol || p.y > b[3] + tol) return false;
    const g = r.geometry;
    const polys = g.type === "Polygon" ? [g.coordinates]
      : g.type === "MultiPolygon" ? g.coordinates : null;
    if (polys) {
      return polys.some((rings) => insideRing(p, rings[0]) &&
        !rings.slice(1).some((hole) => insideRing(p, hole)));
    }
    if (g.type === "LineString") {
      const c = g.coordinates;
      for (let i = 1; i < c.length; i++) if (segmentDistance(p, c[i - 1], c[i]) <= tol) return true;
      return false;
    }
    const points = g.type === "Point" ? [g.coordinates] : g.coordinates;
    return points.some((c) => Math.hypot(p.x - c[0], p.y - c[1]) <= tol);
  }

  window.iainAnnotationGeometry = { record, batches, draftGeometry, hits, pos };
})();
