// sic-share app: the slide (OpenSeadragon) and the embedding scatter, linked; seeds in, annotation out.
// Plain JavaScript, no framework. Arrays arrive as one binary body (see sic_share/app/_binary.py).
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const S = {
    ready: false, info: null, n: 0, W: 1, grid: null,
    coords: null, col: null, row: null, rgb: null, layout: null, cell: null,
    labels: null, seeds: null, confidence: null, unsure: null, least: null, classes: [], revision: -1,
    current: 0, tool: "click", lastLatency: null, lastServer: null, tilesLoaded: 0, overlayDraws: 0,
  };
  window.sicApp = S;
  // Each change carries the token the server wrote into this page (no other site can read it) and is
  // JSON: the server refuses a change without either (sic_share/app/_guard.py).
  const TOKEN = document.querySelector('meta[name="sic-token"]').content;

  // -- binary bodies -------------------------------------------------------------------------------
  const TYPED = { int8: Int8Array, uint8: Uint8Array, int16: Int16Array, uint16: Uint16Array,
                  int32: Int32Array, uint32: Uint32Array, float32: Float32Array, float64: Float64Array };

  function unpack(buffer) {
    const n = new DataView(buffer).getUint32(0, true);
    const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 4, n)));
    const start = 4 + n, arrays = {};
    for (const [name, spec] of Object.entries(header.arrays)) {
      const count = spec.shape.reduce((a, b) => a * b, 1);
      arrays[name] = new TYPED[spec.dtype](buffer, start + spec.offset, count);
    }
    return { meta: header.meta, arrays };
  }

  async function request(url, options) {
    const response = await fetch(url, options);
    if (!response.ok) {
      let text = await response.text();
      try { text = JSON.parse(text).error || text; } catch (e) { /* plain text */ }
      throw new Error(text);
    }
    return response;
  }

  // -- state from the server -----------------------------------------------------------------------
  let queue = Promise.resolve();

  function post(url, body) {
    const started = performance.now();
    const options = { method: "POST", headers: { "Content-Type": "application/json", "X-Sic-Token": TOKEN },
                      body: JSON.stringify(body || {}) };
    queue = queue.then(async () => {
      try {
        const response = await request(url, options);
        const warning = response.headers.get("X-Sic-Warning");
        const body = unpack(await response.arrayBuffer());
        const handled = /dur=([0-9.]+)/.exec(response.headers.get("Server-Timing") || "");
        S.timings = { response: performance.now() - started, handler: handled ? Number(handled[1]) : null };
        applyState(body, started);
        if (warning) showMessage(warning);
      } catch (err) {
        showMessage(err.message);
      }
    });
    return queue;
  }

  function applyState(body, started) {
    const m = body.meta;
    S.labels = body.arrays.labels;
    S.seeds = body.arrays.seeds;
    S.confidence = body.arrays.confidence || null;
    S.unsure = body.arrays.unsure || null;
    S.least = m.confidence || null;  // the tiers' numbers and the places to seed next, as 'sic-share sic' names them
    S.classes = m.classes.map((c) => ({ ...c, rgb: hexToRgb(c.color) }));
    S.revision = m.revision;
    S.lastServer = m.seconds;
    if (S.current >= S.classes.length) S.current = 0;
    $("undo").disabled = !m.can_undo;
    $("redo").disabled = !m.can_redo;
    $("method").value = m.method;
    const described = S.info.methods.find((x) => x.name === m.method);
    $("method-label").textContent = described ? described.label : "";
    fillRules(m.method, m.rule);
    $("show-confidence").disabled = !m.has_confidence;
    const waiting = / to start$/.test(m.message || "");  // not an error: the first steps, said in the hint line
    showMessage(waiting ? "" : m.message || "");
    showHint(m, waiting);
    const step = (name, fn) => { const t = performance.now(); fn(); if (S.timings) S.timings[name] = performance.now() - t; };
    step("classes", renderClasses);
    step("overlay", drawOverlay);
    step("seeds", drawSeeds);
    step("confidence", drawConfidence);
    step("next", drawNext);
    showLegend();
    step("scatter", drawScatter);
    requestAnimationFrame(() => {
      if (started !== undefined) S.lastLatency = performance.now() - started;
      const rounds = m.rounds === null || m.rounds === undefined ? "" : `, ${m.rounds} refinement(s)`;
      $("status").textContent = `${S.n.toLocaleString()} patches · method ${(m.seconds * 1000).toFixed(0)} ms` +
        (S.lastLatency !== null ? ` · click to overlay ${S.lastLatency.toFixed(0)} ms` : "") + rounds;
      S.overlayDraws += 1;
    });
  }

  function showMessage(text) { $("message").textContent = text || ""; }

  // The line under the title that says what to do next (and that a reload found an earlier session).
  function showHint(m, waiting) {
    let text;
    if (m.restored) {
      text = `Session restored: ${m.n_seeds} seed${m.n_seeds === 1 ? "" : "s"} and the classes below were kept by ` +
        "the app from before the page was reloaded. \"clear all seeds\" starts over.";
    } else if (!m.n_seeds) {
      text = "Pick a class on the left, then click the tissue: each click seeds one patch with that class.";
    } else if (waiting) {
      text = `${m.message[0].toUpperCase()}${m.message.slice(1)}: the annotation appears once two classes have seeds.`;
    } else if (S.least && S.least.regions.length) {
      const r = S.least.regions[0];
      text = `Least sure now: the dashed box (${r.patches} patch${r.patches === 1 ? "" : "es"}; the ringed one is at ` +
        `x=${r.x}, y=${r.y}). A seed there, with the class it should be, helps most; or click wherever the annotation ` +
        "is wrong.";
    } else {
      text = "Click where the annotation is wrong, with the class it should be: it updates after each click.";
    }
    $("hint").textContent = text;
    $("show-next").hidden = !(S.least && S.least.regions.length && !m.restored && m.n_seeds && !waiting);
  }

  // The confidence layer's key: what each colour marks, with its share, patch count and confidence range.
  function showLegend() {
    const box = $("confidence-legend");
    box.hidden = !(S.least && $("show-confidence").checked);
    if (box.hidden) return;
    const swatches = [...TIERS.map((c) => `rgba(${c[0]}, ${c[1]}, ${c[2]}, ${c[3] / 255})`), "transparent"];
    box.replaceChildren(...S.least.legend.map((line, i) => {
      const row = document.createElement("div");
      const swatch = document.createElement("span");
      swatch.className = "swatch"; swatch.style.background = swatches[i] || "transparent";
      const text = document.createElement("span");
      text.textContent = line;
      row.append(swatch, text);
      return row;
    }));
    const note = document.createElement("div");
    note.className = "muted";
    note.textContent = "Confidence: the chosen class's probability minus the next one's (0: a toss-up, 1: sure). " +
      "The scale is this result's own: the least certain patches, whatever their values.";
    box.append(note);
  }

  function hexToRgb(hex) {
    const v = parseInt(hex.slice(1), 16);
    return [(v >> 16) & 255, (v >> 8) & 255, v & 255];
  }

  // -- the class list ------------------------------------------------------------------------------
  function renderClasses() {
    const list = $("classes");
    list.replaceChildren();
    S.classes.forEach((c, i) => {
      const li = document.createElement("li");
      li.dataset.index = i;
      li.className = i === S.current ? "current" : "";
      const colour = document.createElement("input");
      colour.type = "color"; colour.value = c.color; colour.title = "colour";
      colour.addEventListener("change", () => post("/api/classes", { op: "rename", index: i, name: c.name, color: colour.value }));
      const name = document.createElement("span");
      name.className = "name"; name.textContent = c.name; name.title = "double-click to rename";
      name.addEventListener("dblclick", () => startRename(li, name, i, c));
      const count = document.createElement("span");
      count.className = "count";
      count.textContent = `${c.count.toLocaleString()} · ${c.seeds} seed${c.seeds === 1 ? "" : "s"}`;
      li.append(colour, name, count);
      li.addEventListener("click", (e) => { if (e.target.tagName !== "INPUT") pickClass(i); });
      list.append(li);
    });
  }

  function startRename(li, span, i, c) {
    const input = document.createElement("input");
    input.className = "rename"; input.value = c.name;
    span.replaceWith(input);
    input.focus(); input.select();
    const done = (commit) => {
      if (commit && input.value.trim() && input.value.trim() !== c.name) {
        post("/api/classes", { op: "rename", index: i, name: input.value.trim() });
      } else { renderClasses(); }
    };
    input.addEventListener("keydown", (e) => { if (e.key === "Enter") done(true); if (e.key === "Escape") done(false); });
    input.addEventListener("blur", () => done(true), { once: true });
  }

  // Only the highlight moves: rebuilding the list here put a new name under the pointer between the two
  // clicks of a double-click, so a real double-click never reached the name it started on.
  function pickClass(i) {
    S.current = i;
    document.querySelectorAll("#classes li").forEach((li) => li.classList.toggle("current", Number(li.dataset.index) === i));
  }

  // -- seeding ---------------------------------------------------------------------------------------
  function seedPatches(indices) {
    if (!indices.length) return Promise.resolve();
    if (S.tool === "erase") return post("/api/seeds", { op: "remove", indices });
    return post("/api/seeds", { op: "add", class: S.current, indices });
  }

  function patchAt(x, y) {
    const g = S.grid;
    const c = Math.floor((x - g.x0) / g.stride), r = Math.floor((y - g.y0) / g.stride);
    if (c < 0 || r < 0 || c >= g.cols || r >= g.rows) return -1;
    return S.cell[r * g.cols + c];
  }

  function insidePolygon(px, py, poly) {
    let inside = false;
    for (let i = 0, j = poly.length - 1; i < poly.length; j = i++) {
      const [xi, yi] = poly[i], [xj, yj] = poly[j];
      if ((yi > py) !== (yj > py) && px < ((xj - xi) * (py - yi)) / (yj - yi) + xi) inside = !inside;
    }
    return inside;
  }

  function selectInPolygon(poly, xOf, yOf) {
    let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
    for (const [x, y] of poly) { x0 = Math.min(x0, x); y0 = Math.min(y0, y); x1 = Math.max(x1, x); y1 = Math.max(y1, y); }
    const picked = [];
    for (let i = 0; i < S.n; i++) {
      const x = xOf(i), y = yOf(i);
      if (x < x0 || x > x1 || y < y0 || y > y1) continue;
      if (insidePolygon(x, y, poly)) picked.push(i);
    }
    return picked;
  }

  // -- lasso drawing (page coordinates) ------------------------------------------------------------
  const lassoCanvas = $("lasso");
  let lasso = null;

  function lassoStart(pageX, pageY) {
    lasso = [[pageX, pageY]];
    lassoCanvas.hidden = false;
    lassoCanvas.width = window.innerWidth; lassoCanvas.height = window.innerHeight;
  }

  function lassoAdd(pageX, pageY) {
    if (!lasso) return;
    lasso.push([pageX, pageY]);
    const ctx = lassoCanvas.getContext("2d");
    ctx.clearRect(0, 0, lassoCanvas.width, lassoCanvas.height);
    ctx.beginPath();
    lasso.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
    ctx.closePath();
    ctx.fillStyle = "rgba(40, 90, 200, 0.15)"; ctx.fill();
    ctx.strokeStyle = "#1f4fbf"; ctx.lineWidth = 1.5; ctx.setLineDash([5, 3]); ctx.stroke();
  }

  function lassoEnd() {
    const poly = lasso;
    lasso = null;
    lassoCanvas.hidden = true;
    return poly && poly.length >= 3 ? poly : null;
  }

  // -- the slide view --------------------------------------------------------------------------------
  let viewer = null;
  const layers = {};
  let hoverMark = null;
  let nextMark = null;
  let nextSpot = null;  // the patch the hint names, inside the box

  function makeLayer(width, height) {
    const canvas = document.createElement("canvas");
    canvas.width = width; canvas.height = height;
    canvas.className = "layer";
    return canvas;
  }

  const NAVIGATOR = 0.16;  // the navigator's share of the viewer's width

  function setupSlide() {
    const info = S.info;
    const mapWidth = info.map.width * info.map.scale;
    if (!info.image) $("opacity").value = 0.85;  // over the colourful map the classes need more ink
    S.W = info.image ? info.image.width : mapWidth;
    // The navigator shows the slide's image: without one (the map is drawn on the page's own layers, which the
    // navigator does not show) it would be an empty dark box, so it is left out.
    const navigator = Boolean(info.image);
    viewer = OpenSeadragon({
      id: "slide", prefixUrl: "/static/openseadragon/images/", showNavigator: navigator, navigatorPosition: "BOTTOM_RIGHT",
      // the navigator sits in a margin of its own rather than over the slide's corner
      // and the zoom buttons above the slide's top edge, where a click meant for a patch cannot reach them
      navigatorSizeRatio: NAVIGATOR,
      viewportMargins: { top: 36, right: navigator ? Math.round($("slide").clientWidth * NAVIGATOR) + 8 : 0 },
      // 2-D canvas, not WebGL: without a GPU (remote desktops, headless tests) WebGL is emulated in software,
      // which took 0.6 s to start and most of a core while redrawing; a slide and a few layers need no WebGL.
      drawer: "canvas",
      gestureSettingsMouse: { clickToZoom: false, dblClickToZoom: true }, maxZoomPixelRatio: 8,
      animationTime: 0.4, showRotationControl: false,
      tileSources: info.image ? info.image.dzi : { type: "image", url: info.map.url, buildPyramid: true },
    });
    viewer.addHandler("tile-loaded", () => { S.tilesLoaded += 1; });
    viewer.addHandler("open", () => {
      if (info.image) $("map-toggle").hidden = false;
      else viewer.world.getItemAt(0).setOpacity(0);  // the map PNG only sizes the world: its cells are drawn below
      // The embedding map is drawn by the page on the same patch cells as the annotation (one pixel a cell), so
      // the two line up exactly: the PNG spans the slide from (0, 0) with cells of its own rounding.
      const g = S.grid;
      const rect = new OpenSeadragon.Rect(g.x0 / S.W, g.y0 / S.W, (g.cols * g.stride) / S.W, (g.rows * g.stride) / S.W);
      layers.map = makeLayer(g.cols, g.rows);
      layers.map.hidden = Boolean(info.image);
      layers.overlay = makeLayer(g.cols, g.rows);
      layers.confidence = makeLayer(g.cols, g.rows);
      layers.seeds = makeLayer(g.cols * 7, g.rows * 7);
      for (const name of ["map", "overlay", "confidence", "seeds"]) {
        viewer.addOverlay({ element: layers[name], location: rect });
      }
      drawMap();
      hoverMark = document.createElement("div");
      hoverMark.className = "hover-mark"; hoverMark.hidden = true;
      viewer.addOverlay({ element: hoverMark, location: new OpenSeadragon.Rect(0, 0, g.stride / S.W, g.stride / S.W) });
      nextMark = document.createElement("div");
      nextMark.className = "next-mark"; nextMark.hidden = true;
      nextMark.innerHTML = "<span>next</span>";
      viewer.addOverlay({ element: nextMark, location: new OpenSeadragon.Rect(0, 0, g.stride / S.W, g.stride / S.W) });
      nextSpot = document.createElement("div");
      nextSpot.className = "next-spot"; nextSpot.hidden = true;
      viewer.addOverlay({ element: nextSpot, location: new OpenSeadragon.Rect(0, 0, g.stride / S.W, g.stride / S.W) });
      applyOpacity();
      drawOverlay(); drawSeeds(); drawConfidence(); drawNext();
      S.viewerOpen = true;
      mark("viewerOpen");
    });

    const toLevel0 = (position) => {
      const p = viewer.viewport.pointFromPixel(position);
      return [p.x * S.W, p.y * S.W];
    };
    viewer.addHandler("canvas-click", (e) => {
      if (!e.quick || S.tool === "lasso") return;
      const [x, y] = toLevel0(e.position);
      const i = patchAt(x, y);
      if (i >= 0) { e.preventDefaultAction = true; seedPatches([i]); }
    });
    viewer.addHandler("canvas-press", (e) => {
      if (S.tool !== "lasso") return;
      const box = viewer.element.getBoundingClientRect();
      lassoStart(box.left + e.position.x, box.top + e.position.y);
    });
    viewer.addHandler("canvas-drag", (e) => {
      if (S.tool !== "lasso" || !lasso) return;
      e.preventDefaultAction = true;
      const box = viewer.element.getBoundingClientRect();
      lassoAdd(box.left + e.position.x, box.top + e.position.y);
    });
    viewer.addHandler("canvas-release", () => {
      if (S.tool !== "lasso") return;
      const poly = lassoEnd();
      if (!poly) return;
      const box = viewer.element.getBoundingClientRect();
      const level0 = poly.map(([x, y]) => toLevel0(new OpenSeadragon.Point(x - box.left, y - box.top)));
      seedPatches(selectInPolygon(level0, (i) => S.coords[2 * i], (i) => S.coords[2 * i + 1]));
    });
    new OpenSeadragon.MouseTracker({
      element: viewer.canvas,
      moveHandler: (e) => {
        if (!S.grid) return;
        const [x, y] = toLevel0(e.position);
        hover(patchAt(x, y), "slide");
      },
      leaveHandler: () => hover(-1, "slide"),
    });
  }

  function paintCells(canvas, colourOf) {
    if (!canvas || !S.labels) return;
    const g = S.grid, ctx = canvas.getContext("2d");
    const image = ctx.createImageData(g.cols, g.rows);
    const px = image.data;
    for (let i = 0; i < S.n; i++) {
      const rgba = colourOf(i);
      if (!rgba) continue;
      const o = 4 * (S.row[i] * g.cols + S.col[i]);
      px[o] = rgba[0]; px[o + 1] = rgba[1]; px[o + 2] = rgba[2]; px[o + 3] = rgba[3];
    }
    ctx.putImageData(image, 0, 0);
  }

  function drawMap() {
    if (!layers.map) return;
    const g = S.grid, ctx = layers.map.getContext("2d");
    const image = ctx.createImageData(g.cols, g.rows), px = image.data;
    for (let i = 0; i < S.n; i++) {
      const o = 4 * (S.row[i] * g.cols + S.col[i]);
      px[o] = S.rgb[3 * i]; px[o + 1] = S.rgb[3 * i + 1]; px[o + 2] = S.rgb[3 * i + 2]; px[o + 3] = 255;
    }
    ctx.putImageData(image, 0, 0);
  }

  function drawOverlay() {
    const colours = S.classes.map((c) => [...c.rgb, 255]);
    paintCells(layers.overlay, (i) => (S.labels[i] >= 0 ? colours[S.labels[i]] : null));
  }

  // The least certain patches of this result (sic_share/viz/_confidence.py): the 5 % least certain opaque
  // yellow, the next 15 % half-transparent, the rest clear; the colours of `sic-share sic --confidence-png`.
  const TIERS = [[255, 214, 0, 235], [255, 214, 0, 120]];

  function drawConfidence() {
    const canvas = layers.confidence;
    if (!canvas) return;
    const show = S.unsure && $("show-confidence").checked;
    if (!show) { canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height); return; }
    paintCells(canvas, (i) => (S.unsure[i] >= 0 ? TIERS[S.unsure[i]] : null));
  }

  // A dashed box around the largest group of unsure patches: where the hint says to click next.
  function nextBox() {
    const r = S.least && S.least.regions.length ? S.least.regions[0] : null;
    if (!r) return null;
    const g = S.grid, half = g.stride / 2;
    return new OpenSeadragon.Rect((r.box[0] - half) / S.W, (r.box[1] - half) / S.W,
                                  (r.box[2] - r.box[0] + g.stride) / S.W, (r.box[3] - r.box[1] + g.stride) / S.W);
  }

  function drawNext() {
    if (!nextMark) return;
    const box = nextBox();
    nextMark.hidden = nextSpot.hidden = !box || !$("show-next-box").checked;
    if (!box) return;
    viewer.updateOverlay(nextMark, box);
    const r = S.least.regions[0], g = S.grid;
    const x = g.x0 + S.col[r.patch] * g.stride, y = g.y0 + S.row[r.patch] * g.stride;
    viewer.updateOverlay(nextSpot, new OpenSeadragon.Rect(x / S.W, y / S.W, g.stride / S.W, g.stride / S.W));
  }

  function drawSeeds() {
    const canvas = layers.seeds;
    if (!canvas || !S.seeds) return;
    const g = S.grid, ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    if (!$("show-seeds").checked) return;
    for (let i = 0; i < S.n; i++) {
      const c = S.seeds[i];
      if (c < 0) continue;
      const x = S.col[i] * 7, y = S.row[i] * 7;
      ctx.fillStyle = "#000"; ctx.fillRect(x + 1, y + 1, 5, 5);
      ctx.fillStyle = S.classes[c].color; ctx.fillRect(x + 2, y + 2, 3, 3);
    }
  }

  function applyOpacity() {
    if (layers.overlay) layers.overlay.style.opacity = $("opacity").value;
  }

  // -- the scatter -----------------------------------------------------------------------------------
  const scatter = $("scatter"), scatterTop = $("scatter-top");
  const SC = { px: null, py: null, w: 0, h: 0, buckets: null, bucketSize: 8, hovered: -1 };

  function layoutScatter() {
    const box = scatter.getBoundingClientRect();
    const ratio = window.devicePixelRatio || 1;
    SC.w = Math.max(1, Math.round(box.width * ratio)); SC.h = Math.max(1, Math.round(box.height * ratio));
    for (const c of [scatter, scatterTop]) { c.width = SC.w; c.height = SC.h; }
    SC.ratio = ratio;
    let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
    for (let i = 0; i < S.n; i++) {
      const x = S.layout[2 * i], y = S.layout[2 * i + 1];
      if (x < x0) x0 = x; if (x > x1) x1 = x; if (y < y0) y0 = y; if (y > y1) y1 = y;
    }
    const margin = 12 * ratio;
    const scale = Math.min((SC.w - 2 * margin) / (x1 - x0 || 1), (SC.h - 2 * margin) / (y1 - y0 || 1));
    const ox = (SC.w - scale * (x1 - x0)) / 2, oy = (SC.h - scale * (y1 - y0)) / 2;
    SC.px = new Float32Array(S.n); SC.py = new Float32Array(S.n);
    const bs = SC.bucketSize * ratio, bw = Math.ceil(SC.w / bs) + 1;
    const buckets = new Map();
    for (let i = 0; i < S.n; i++) {
      const x = ox + scale * (S.layout[2 * i] - x0), y = SC.h - (oy + scale * (S.layout[2 * i + 1] - y0));
      SC.px[i] = x; SC.py[i] = y;
      const key = Math.floor(y / bs) * bw + Math.floor(x / bs);
      if (!buckets.has(key)) buckets.set(key, []);
      buckets.get(key).push(i);
    }
    SC.buckets = buckets; SC.bw = bw; SC.bs = bs;
  }

  function nearestPoint(x, y, radius) {
    const bs = SC.bs, cx = Math.floor(x / bs), cy = Math.floor(y / bs);
    let best = -1, bestD = radius * radius;
    for (let dy = -1; dy <= 1; dy++) {
      for (let dx = -1; dx <= 1; dx++) {
        const list = SC.buckets.get((cy + dy) * SC.bw + (cx + dx));
        if (!list) continue;
        for (const i of list) {
          const d = (SC.px[i] - x) ** 2 + (SC.py[i] - y) ** 2;
          if (d <= bestD) { bestD = d; best = i; }
        }
      }
    }
    return best;
  }

  function drawScatter() {
    if (!SC.px || !S.labels) return;
    const ctx = scatter.getContext("2d");
    const image = ctx.createImageData(SC.w, SC.h);
    const px = image.data;
    px.fill(255);
    const byAnnotation = $("scatter-colour").value === "annotation";
    const size = Math.round((S.n <= 20000 ? 4 : S.n <= 200000 ? 3 : 2) * Math.max(1, SC.ratio));
    for (let i = 0; i < S.n; i++) {
      let r, g, b;
      const label = S.labels[i];
      if (byAnnotation && label >= 0) { [r, g, b] = S.classes[label].rgb; }
      else if (byAnnotation) { r = g = b = 170; }
      else { r = S.rgb[3 * i]; g = S.rgb[3 * i + 1]; b = S.rgb[3 * i + 2]; }
      const x0 = Math.round(SC.px[i]), y0 = Math.round(SC.py[i]);
      for (let dy = 0; dy < size; dy++) {
        const y = y0 + dy;
        if (y < 0 || y >= SC.h) continue;
        for (let dx = 0; dx < size; dx++) {
          const x = x0 + dx;
          if (x < 0 || x >= SC.w) continue;
          const o = 4 * (y * SC.w + x);
          px[o] = r; px[o + 1] = g; px[o + 2] = b;
        }
      }
    }
    ctx.putImageData(image, 0, 0);
    drawScatterTop();
  }

  function drawScatterTop() {
    const ctx = scatterTop.getContext("2d");
    ctx.clearRect(0, 0, SC.w, SC.h);
    if (!SC.px || !S.seeds) return;
    const r = 4 * SC.ratio;
    if ($("show-seeds").checked) {
      for (let i = 0; i < S.n; i++) {
        const c = S.seeds[i];
        if (c < 0) continue;
        ctx.beginPath(); ctx.arc(SC.px[i], SC.py[i], r, 0, 2 * Math.PI);
        ctx.fillStyle = S.classes[c].color; ctx.fill();
        ctx.lineWidth = 1.5 * SC.ratio; ctx.strokeStyle = "#000"; ctx.stroke();
      }
    }
    if (SC.hovered >= 0) {
      ctx.beginPath(); ctx.arc(SC.px[SC.hovered], SC.py[SC.hovered], 2 * r, 0, 2 * Math.PI);
      ctx.lineWidth = 2 * SC.ratio; ctx.strokeStyle = "#000"; ctx.stroke();
    }
  }

  function hover(i, from) {
    if (SC.hovered === i) return;
    SC.hovered = i;
    drawScatterTop();
    if (!hoverMark) return;
    if (i < 0) { hoverMark.hidden = true; return; }
    const g = S.grid;
    const x = g.x0 + S.col[i] * g.stride, y = g.y0 + S.row[i] * g.stride;
    viewer.updateOverlay(hoverMark, new OpenSeadragon.Rect(x / S.W, y / S.W, g.stride / S.W, g.stride / S.W));
    hoverMark.hidden = false;
    if (from === "scatter" && $("follow") && $("follow").checked) viewer.viewport.panTo(new OpenSeadragon.Point(x / S.W, y / S.W));
  }

  function setupScatter() {
    layoutScatter();
    const local = (e) => {
      const box = scatterTop.getBoundingClientRect();
      return [(e.clientX - box.left) * SC.ratio, (e.clientY - box.top) * SC.ratio];
    };
    let pressed = false, moved = false;
    scatterTop.addEventListener("mousedown", (e) => {
      pressed = true; moved = false;
      if (S.tool === "lasso") lassoStart(e.clientX, e.clientY);
    });
    scatterTop.addEventListener("mousemove", (e) => {
      if (pressed) moved = true;
      if (pressed && lasso) { lassoAdd(e.clientX, e.clientY); return; }
      const [x, y] = local(e);
      hover(nearestPoint(x, y, 8 * SC.ratio), "scatter");
    });
    scatterTop.addEventListener("mouseleave", () => hover(-1, "scatter"));
    window.addEventListener("mouseup", (e) => {
      if (!pressed) return;
      pressed = false;
      if (lasso) {
        const poly = lassoEnd();
        if (!poly) return;
        const box = scatterTop.getBoundingClientRect();
        const local = poly.map(([x, y]) => [(x - box.left) * SC.ratio, (y - box.top) * SC.ratio]);
        seedPatches(selectInPolygon(local, (i) => SC.px[i], (i) => SC.py[i]));
        return;
      }
      if (e.target !== scatterTop || moved) return;
      const [x, y] = local(e);
      const i = nearestPoint(x, y, 8 * SC.ratio);
      if (i >= 0) seedPatches([i]);
    });
    window.addEventListener("resize", () => { layoutScatter(); drawScatter(); });
  }

  // -- controls --------------------------------------------------------------------------------------
  function fillRules(method, rule) {
    const spec = S.info.methods.find((m) => m.name === method);
    const select = $("rule");
    const wanted = spec ? spec.rules : [];
    if (select.dataset.method !== method) {
      select.replaceChildren(...wanted.map((r) => new Option(`rule: ${r}`, r)));
      select.dataset.method = method;
    }
    select.hidden = wanted.length === 0;
    if (rule) select.value = rule;
  }

  async function download(url) {
    try {
      const response = await request(url);
      const disposition = response.headers.get("Content-Disposition") || "";
      const name = (disposition.match(/filename="([^"]+)"/) || [])[1] || "download";
      const link = document.createElement("a");
      link.href = URL.createObjectURL(await response.blob());
      link.download = name;
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(link.href), 10000);
    } catch (err) {
      showMessage(err.message);
    }
  }

  const TOOL_KEYS = { c: "click", l: "lasso", e: "erase" };

  function setupControls() {
    // the menu holds the short names (the CLI's --method); the chosen one's description is the line below it
    for (const m of S.info.methods) $("method").append(new Option(m.name, m.name));
    $("method").addEventListener("change", () => post("/api/method", { method: $("method").value }));
    $("rule").addEventListener("change", () => post("/api/method", { method: $("method").value, rule: $("rule").value }));
    document.querySelectorAll("input[name=tool]").forEach((el) =>
      el.addEventListener("change", () => { S.tool = el.value; }));
    $("undo").addEventListener("click", () => post("/api/undo"));
    $("clear-seeds").addEventListener("click", () => post("/api/seeds", { op: "clear" }));
    $("redo").addEventListener("click", () => post("/api/redo"));
    $("opacity").addEventListener("input", applyOpacity);
    $("show-seeds").addEventListener("change", () => { drawSeeds(); drawScatterTop(); });
    $("show-confidence").addEventListener("change", () => { drawConfidence(); showLegend(); });
    $("show-next-box").addEventListener("change", drawNext);
    $("show-next").addEventListener("click", () => {
      const box = nextBox();
      if (!box) return;
      $("show-next-box").checked = true; drawNext();
      const pad = Math.max(box.width, box.height);  // the box and as much around it: the tissue on both sides
      viewer.viewport.fitBounds(new OpenSeadragon.Rect(box.x - pad, box.y - pad, box.width + 2 * pad, box.height + 2 * pad));
    });
    $("show-map").addEventListener("change", () => { if (layers.map) layers.map.hidden = !$("show-map").checked; });
    $("scatter-colour").addEventListener("change", drawScatter);
    $("add-class-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const name = $("new-class").value.trim();
      if (!name) return;
      $("new-class").value = "";
      post("/api/classes", { op: "add", name }).then(() => pickClass(S.classes.length - 1));
    });
    $("save-seeds-geojson").addEventListener("click", () => download("/api/seeds/save?format=geojson"));
    $("save-seeds-csv").addEventListener("click", () => download("/api/seeds/save?format=csv"));
    $("load-seeds").addEventListener("change", async () => {
      const file = $("load-seeds").files[0];
      if (!file) return;
      await post("/api/seeds/load", { name: file.name, text: await file.text() });
      $("load-seeds").value = "";
    });
    document.querySelectorAll("[data-export]").forEach((button) =>
      button.addEventListener("click", () =>
        download(`/api/export?format=${button.dataset.export}${button.dataset.tiles ? "&tiles=1" : ""}`)));
    window.addEventListener("keydown", (e) => {
      if (e.target.tagName === "INPUT" && e.target.type !== "radio" && e.target.type !== "checkbox") return;
      const key = e.key.toLowerCase();
      if ((e.ctrlKey || e.metaKey) && key === "z") { e.preventDefault(); post(e.shiftKey ? "/api/redo" : "/api/undo"); }
      else if ((e.ctrlKey || e.metaKey) && key === "y") { e.preventDefault(); post("/api/redo"); }
      else if (/^[1-9]$/.test(e.key) && Number(e.key) <= S.classes.length) pickClass(Number(e.key) - 1);
      else if (!e.ctrlKey && !e.metaKey && TOOL_KEYS[key]) {
        const radio = document.querySelector(`input[name=tool][value=${TOOL_KEYS[key]}]`);
        radio.checked = true; S.tool = radio.value;
      }
    });
  }

  // -- for tests and benchmarks: where a patch is on screen, and what the overlay shows --------------
  S.slidePointOf = (i) => {
    const g = S.grid;
    const x = g.x0 + (S.col[i] + 0.5) * g.stride, y = g.y0 + (S.row[i] + 0.5) * g.stride;
    const p = viewer.viewport.pixelFromPoint(new OpenSeadragon.Point(x / S.W, y / S.W), true);
    const box = viewer.element.getBoundingClientRect();
    return [box.left + p.x, box.top + p.y];
  };
  S.slideCellPixels = () => {
    const a = viewer.viewport.pixelFromPoint(new OpenSeadragon.Point(0, 0), true);
    const b = viewer.viewport.pixelFromPoint(new OpenSeadragon.Point(S.grid.stride / S.W, 0), true);
    return b.x - a.x;
  };
  S.scatterPointOf = (i) => {
    const box = scatterTop.getBoundingClientRect();
    return [box.left + SC.px[i] / SC.ratio, box.top + SC.py[i] / SC.ratio];
  };
  S.layerPixel = (name, i) => Array.from(layers[name].getContext("2d").getImageData(S.col[i], S.row[i], 1, 1).data);
  S.overlayCounts = () => {
    const canvas = layers.overlay, g = S.grid;
    const data = canvas.getContext("2d").getImageData(0, 0, g.cols, g.rows).data;
    const counts = Object.fromEntries(S.classes.map((c) => [c.name, 0]));
    const byColour = new Map(S.classes.map((c) => [c.rgb.join(","), c.name]));
    for (let o = 0; o < data.length; o += 4) {
      if (data[o + 3] === 0) continue;
      const name = byColour.get(`${data[o]},${data[o + 1]},${data[o + 2]}`);
      if (name !== undefined) counts[name] += 1;
    }
    return counts;
  };

  // -- start ---------------------------------------------------------------------------------------
  // ms from start() to each step of the first view (the viewer opens last, once the map has loaded)
  S.startMarks = {};
  let t0 = 0;
  function mark(name) { S.startMarks[name] = performance.now() - t0; }

  async function start() {
    t0 = performance.now();
    const [info, arrays, state] = await Promise.all([
      request("/api/info").then((r) => r.json()),
      request("/api/arrays.bin").then((r) => r.arrayBuffer()),
      request("/api/state.bin").then((r) => r.arrayBuffer()),
    ]);
    mark("fetched");
    S.info = info;
    S.grid = info.grid;
    const a = unpack(arrays).arrays;
    S.n = info.n_patches;
    Object.assign(S, { coords: a.coords, col: a.col, row: a.row, rgb: a.rgb, layout: a.layout });
    S.cell = new Int32Array(S.grid.cols * S.grid.rows).fill(-1);
    for (let i = 0; i < S.n; i++) S.cell[S.row[i] * S.grid.cols + S.col[i]] = i;
    $("slide-name").textContent = info.slide_id;
    $("slide-info").textContent = `${info.source} · ${info.n_patches.toLocaleString()} patches · ${info.model} (${info.dim}-d)` +
      (info.image ? ` · image ${info.image.name}` : " · no pixels: embedding map") + ` · ${info.projection}`;
    $("about-counts").textContent = info.work_dim < info.dim
      ? `Counts can differ a little from 'sic-share sic' with the same seeds: on a slide this large the app clusters ` +
        `the ${info.work_dim}-d principal subspace of the ${info.dim}-d embeddings (cached, for speed); on small ` +
        "slides, and with at most 64 dimensions, it uses the embeddings themselves and the counts are the same."
      : "With the same seeds, method and classes, the counts are those of 'sic-share sic'.";
    mark("unpacked");
    setupControls();
    mark("controls");
    setupSlide();
    mark("slide");
    setupScatter();
    mark("scatter");
    applyState(unpack(state));
    S.startupMs = performance.now() - t0;
    mark("drawn");
    S.ready = true;
  }

  start().catch((err) => { showMessage(`the app could not start: ${err.message}`); });
})();
