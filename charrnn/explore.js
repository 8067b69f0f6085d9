// charrnn explore: the page's code. It reads the JSON in #charrnn-data (see charrnn/explore.py, page_data) and
// builds everything from it; it fetches nothing. Positions are characters (code points) of the text, and the
// state at position t is the state after reading character t, as in inspect-cells.
"use strict";
(function () {
  const D = JSON.parse(document.getElementById("charrnn-data").textContent);
  const N = D.n, H = D.hidden, G = D.groups.length, U = G * H;
  const MIN_SUPPORT = 20; // as inspect-cells: fewer positive (or negative) positions and a score is no finding

  function bytes(b64) {
    const s = atob(b64), out = new Uint8Array(s.length);
    for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
    return out;
  }
  const codes = bytes(D.codes);
  const nextIds = D.next_wide ? new Uint32Array(bytes(D.next_ids).buffer) : new Uint16Array(bytes(D.next_ids).buffer);
  const nextProbs = new Uint16Array(bytes(D.next_probs).buffer);
  const nll = new Float32Array(bytes(D.nll).buffer);
  const K = N ? nextProbs.length / N : 0;
  const chars = Array.from(D.text);

  // Per unit u = group * H + index: dequantisation (value = offset + scale * code) and colouring (mean, sd).
  const offset = new Float64Array(U), scale = new Float64Array(U), mean = new Float64Array(U), sd = new Float64Array(U);
  const unitLayer = new Int32Array(U), unitGroup = new Int32Array(U);
  D.groups.forEach((g, k) => {
    for (let j = 0; j < H; j++) {
      const u = k * H + j;
      offset[u] = g.offset[j]; scale[u] = g.scale[j]; mean[u] = g.mean[j]; sd[u] = g.std[j];
      unitLayer[u] = g.layer; unitGroup[u] = k;
    }
  });
  const stateOf = (u) => D.groups[unitGroup[u]].state;
  const unitName = (u) => `L${unitLayer[u]} ${stateOf(u)}[${u % H}]`;
  const value = (u, t) => offset[u] + scale[u] * codes[u * N + t];
  const unitOf = (layer, state, j) => D.groups.findIndex((g) => g.layer === layer && g.state === state) * H + j;

  // The colour scale of inspect-cells (charrnn.html.activation_colour): blue -1, white 0, red +1.
  function colour(v) {
    if (!Number.isFinite(v)) v = 0;
    v = Math.max(-1, Math.min(1, v));
    const a = Math.abs(v), fade = (c) => Math.trunc(255 - (255 - c) * a);
    return v > 0 ? `rgb(${fade(214)}, ${fade(39)}, ${fade(40)})` : `rgb(${fade(31)}, ${fade(119)}, ${fade(180)})`;
  }
  const shown = (u, t) => (sd[u] > 0 ? (value(u, t) - mean[u]) / (2 * sd[u]) : 0);
  const glyph = (c) => (c === "\n" ? "↵" : c === "\t" ? "→" : c === " " ? "␣" : c === "\r" ? "␍" : c);

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined) continue;
      if (k === "class") e.className = v; else if (k === "text") e.textContent = v; else e.setAttribute(k, v);
    }
    for (const c of children) e.append(c);
    return e;
  }
  let hovered = -1, matchMarked = [];
  const fmt = (x, d = 3) => (x === null || x === undefined || !Number.isFinite(x) ? "—" : x.toFixed(d));

  // --- layout ---------------------------------------------------------------------------------------------------
  const m = D.model, src = D.source;
  document.body.append(
    el("header", {}, el("h1", { text: D.title || "charrnn explore" }),
      el("p", { text: `${m.num_layers}-layer ${m.cell.toUpperCase()}, ${m.hidden_size} units; ${N.toLocaleString("en")} characters of ` +
        `${src.source || src.path || "a text"}` + (src.truncated_from ? ` (of ${src.truncated_from.toLocaleString("en")})` : "") +
        (src.skipped_chars ? `, ${src.skipped_chars} skipped (not in the vocabulary)` : "") +
        `; loss ${fmt(D.loss_nats, 4)} nats/char (${fmt(D.loss_nats / Math.LN2, 3)} bpc). ` +
        "Arrow keys move between units; hover a character for the model's guesses." })));
  const sortSelect = el("select", { id: "sort" }), stateFilter = el("select", { id: "state-filter" });
  const unitList = el("div", { id: "unit-list", role: "listbox", "aria-label": "units" });
  const unitInfo = el("section", { id: "unit-info" });
  const textEl = el("div", { id: "text" });
  const hoverEl = el("section", { id: "hover" }, el("h2", { text: "Character" }),
    el("p", { class: "note", text: "Hover or tap a character." }));
  const tools = el("aside", { id: "tools" }, hoverEl);
  document.body.append(el("div", { id: "app" },
    el("aside", { id: "units-pane" }, el("label", { for: "sort", text: "Sort units by" }), sortSelect,
      el("label", { for: "state-filter", text: "Show" }), stateFilter, unitList),
    el("main", {}, unitInfo, textEl), tools));

  // --- the text ---------------------------------------------------------------------------------------------------
  const spans = new Array(N);
  {
    const frag = document.createDocumentFragment();
    for (let t = 0; t < N; t++) {
      const s = document.createElement("span");
      s.textContent = chars[t] === "\n" ? "↵\n" : chars[t] === "\t" ? "→" : chars[t];
      s.dataset.i = t;
      spans[t] = s;
      frag.append(s);
    }
    textEl.append(frag);
  }

  // --- units: list, sorting, the chosen unit ----------------------------------------------------------------------
  const featureScores = new Map(); // name -> {kind, signed: Float64Array(U) (AUROC, or Spearman for counts)}
  for (const f of D.features) {
    const signed = new Float64Array(U).fill(NaN);
    for (const [key, values] of Object.entries(f.scores)) {
      const [layer, state] = key.split("/");
      const u0 = unitOf(+layer, state, 0);
      values.forEach((v, j) => { signed[u0 + j] = v === null ? NaN : v; });
    }
    featureScores.set(f.name, { kind: f.kind, signed, description: f.description });
  }
  const strength = (f, u) => (f.kind === "count" ? Math.abs(f.signed[u]) : Math.max(f.signed[u], 1 - f.signed[u]));
  const direction = (f, u) => (f.kind === "count" ? (f.signed[u] >= 0 ? "+" : "−") : (f.signed[u] >= 0.5 ? "+" : "−"));

  sortSelect.append(el("option", { value: "", text: "unit (layer, state, index)" }));
  for (const name of featureScores.keys()) sortSelect.append(el("option", { value: name, text: name }));
  stateFilter.append(el("option", { value: "", text: "all states" }));
  for (const s of new Set(D.groups.map((g) => g.state))) stateFilter.append(el("option", { value: s, text: `${s} only` }));

  const rows = new Array(U);
  for (let u = 0; u < U; u++) {
    const score = el("span", { class: "score" });
    rows[u] = el("div", { class: "row", role: "option", "data-unit": u }, el("span", { text: unitName(u) }), score);
    rows[u].score = score;
  }
  unitList.addEventListener("click", (e) => {
    const row = e.target.closest(".row");
    if (row) chooseUnit(+row.dataset.unit);
  });

  let order = [], current = -1;
  function sortUnits() {
    const f = featureScores.get(sortSelect.value), state = stateFilter.value;
    order = [];
    for (let u = 0; u < U; u++) if (!state || stateOf(u) === state) order.push(u);
    if (f) order.sort((a, b) => (strength(f, b) || 0) - (strength(f, a) || 0) || a - b);
    for (const u of order) rows[u].score.textContent = f ? `${fmt(strength(f, u))} ${direction(f, u)}` : "";
    unitList.replaceChildren(...order.map((u) => rows[u]));
    if (current >= 0) rows[current].scrollIntoView({ block: "nearest" });
  }
  sortSelect.addEventListener("change", sortUnits);
  stateFilter.addEventListener("change", sortUnits);

  const histogram = el("canvas", { id: "histogram", width: 260, height: 70 });
  function drawHistogram(u) {
    const ctx = histogram.getContext("2d"), bins = new Float64Array(64);
    for (let t = 0; t < N; t++) bins[codes[u * N + t] >> 2] += 1;
    const top = Math.max(...bins) || 1, w = histogram.width / 64, h = histogram.height - 12;
    ctx.clearRect(0, 0, histogram.width, histogram.height);
    for (let b = 0; b < 64; b++) {
      const centre = offset[u] + scale[u] * (b * 4 + 1.5);
      ctx.fillStyle = colour(sd[u] > 0 ? (centre - mean[u]) / (2 * sd[u]) : 0);
      ctx.fillRect(b * w, h - (h * bins[b]) / top, w - 0.5, (h * bins[b]) / top);
      ctx.strokeStyle = "#999"; ctx.lineWidth = 0.5;
      ctx.strokeRect(b * w, h - (h * bins[b]) / top, w - 0.5, (h * bins[b]) / top);
    }
    ctx.fillStyle = "#333"; ctx.font = "10px system-ui, sans-serif";
    ctx.fillText(fmt(offset[u]), 0, histogram.height - 1);
    const hi = fmt(offset[u] + 255 * scale[u]);
    ctx.fillText(hi, histogram.width - ctx.measureText(hi).width, histogram.height - 1);
  }

  function unitFindings(u) {
    const out = [];
    for (const [name, findings] of Object.entries(D.findings)) {
      for (const f of findings) if (unitOf(f.layer, f.state, f.unit) === u) out.push([name, f]);
    }
    return out;
  }

  function chooseUnit(u) {
    if (u < 0 || u >= U) return;
    if (current >= 0) { rows[current].classList.remove("current"); rows[current].removeAttribute("aria-selected"); }
    current = u;
    rows[u].classList.add("current");
    rows[u].setAttribute("aria-selected", "true");
    rows[u].scrollIntoView({ block: "nearest" });
    for (let t = 0; t < N; t++) spans[t].style.backgroundColor = colour(shown(u, t));
    drawHistogram(u);
    const found = unitFindings(u);
    const scoreRows = [];
    for (const [name, f] of featureScores) {
      if (Number.isFinite(f.signed[u])) scoreRows.push([name, strength(f, u), direction(f, u)]);
    }
    scoreRows.sort((a, b) => b[1] - a[1]);
    unitInfo.replaceChildren(
      el("div", {}, el("h2", { id: "unit-name", text: unitName(u) }),
        el("div", { class: "stats", text: `mean ${fmt(mean[u])}, sd ${fmt(sd[u])}, range ${fmt(offset[u])} to ${fmt(offset[u] + 255 * scale[u])}` }),
        histogram, legend()),
      el("div", {}, el("div", { class: "stats", text: "best scores of this unit" }),
        table(["feature", "score", "dir"], scoreRows.slice(0, 4).map(([n, s, d]) => [n, fmt(s), d]))),
      found.length ? el("div", {}, el("div", { class: "stats", text: "inspect-cells finding: ablation (held at its mean)" }),
        table(["feature", "score", "Δloss on", "Δloss off", "verdict"], found.map(([n, f]) => [n, `${fmt(f.score)} ${f.direction}`,
          f.ablation ? fmt(f.ablation.delta_nats_on, 4) : "—", f.ablation ? fmt(f.ablation.delta_nats_off, 4) : "—",
          f.ablation ? f.ablation.verdict : "—"]))) : el("div", { class: "stats", text: "No inspect-cells finding for this unit, so no ablation." }));
    if (hovered >= 0) showHover(hovered);
  }

  function legend() {
    const swatch = (v) => { const s = el("span", { class: "swatch" }); s.style.backgroundColor = colour(v); return s; };
    return el("div", { class: "legend" }, swatch(-1), " −2 sd  ", swatch(0), " mean  ", swatch(1), " +2 sd");
  }

  function table(header, body, left = [0]) {
    const cls = (i) => (left.includes(i) ? "l" : "");
    return el("table", {}, el("thead", {}, el("tr", {}, ...header.map((h, i) => el("th", { class: cls(i), text: h })))),
      el("tbody", {}, ...body.map((r) => el("tr", {}, ...r.map((c, i) => el("td", { class: cls(i), text: String(c) }))))));
  }

  document.addEventListener("keydown", (e) => {
    if (e.target.closest && e.target.closest("input, select, textarea, button")) return;
    if (e.altKey || e.ctrlKey || e.metaKey) return;
    const step = { ArrowDown: 1, ArrowRight: 1, ArrowUp: -1, ArrowLeft: -1 }[e.key];
    if (!step || !order.length) return;
    e.preventDefault();
    const at = order.indexOf(current);
    chooseUnit(order[Math.max(0, Math.min(order.length - 1, at < 0 ? 0 : at + step))]);
  });

  // --- hover: the model's guesses at a character ------------------------------------------------------------------
  function showHover(t) {
    if (hovered >= 0) spans[hovered].classList.remove("hover");
    hovered = t;
    spans[t].classList.add("hover");
    const guesses = [];
    for (let k = 0; k < K; k++) {
      const id = nextIds[t * K + k];
      guesses.push([glyph(D.vocab[id]), fmt(nextProbs[t * K + k] / 65535), t + 1 < N && chars[t + 1] === D.vocab[id] ? "← next" : ""]);
    }
    const parts = [el("h2", { text: "Character" }),
      el("div", {}, el("span", { class: "glyph", text: glyph(chars[t]) }), ` at position ${t.toLocaleString("en")}`),
      el("div", { class: "stats", text: t > 0 ? `loss of this character: ${fmt(nll[t - 1], 3)} nats` : "first character: nothing predicted it" }),
      el("div", { class: "stats", id: "hover-value", text: `${unitName(current)} after it: ${fmt(value(current, t))}` }),
      el("div", { class: "stats", text: `after it, the ${K} likeliest next characters:` }),
      table(["next", "p", ""], guesses)];
    if (t + 1 < N) parts.push(el("div", { class: "stats", text: `actual next ${glyph(chars[t + 1])}: loss ${fmt(nll[t], 3)} nats` }));
    hoverEl.replaceChildren(...parts);
  }
  textEl.addEventListener("mouseover", (e) => { if (e.target.dataset && e.target.dataset.i !== undefined) showHover(+e.target.dataset.i); });
  textEl.addEventListener("click", (e) => { if (e.target.dataset && e.target.dataset.i !== undefined) showHover(+e.target.dataset.i); });

  // --- Select and Match (as LSTMVis) ------------------------------------------------------------------------------
  const num = (id, v, step, min) => el("input", { type: "number", id, value: v, step, min });
  const selState = el("select", { id: "select-state" }, el("option", { value: "", text: "all states" }),
    ...[...new Set(D.groups.map((g) => g.state))].map((s) => el("option", { value: s, text: s })));
  selState.value = "h";
  const threshold = num("threshold", "0.3", "0.05"), setSize = num("set-size", "10", "1", "1");
  const offBefore = el("input", { type: "checkbox", id: "off-before" });
  const negated = el("input", { type: "checkbox", id: "negated" });
  negated.checked = true;
  const selectButton = el("button", { id: "select-go", type: "button", text: "Select" });
  const selectMessage = el("div", { class: "message", id: "select-message" });
  const selectList = el("div", { class: "list", id: "select-units" }), matchList = el("div", { class: "list", id: "matches" });
  tools.append(el("section", { id: "select" }, el("h2", { text: "Select and match" }),
    el("p", { class: "note", text: "Select a span of the text with the mouse, then press Select: the units above the threshold over the whole span, ranked by how far above their mean they sit there; then the other places where the same set is on." }),
    el("div", { class: "controls" }, el("label", {}, "state ", selState), el("label", {}, "threshold ", threshold),
      el("label", {}, offBefore, " off just before"), el("label", {}, negated, " below −threshold too"),
      el("label", {}, "set of ", setSize, " units"), selectButton),
    selectMessage, selectList, el("div", { class: "stats", text: "Matches (ranked by overlap with the set):" }), matchList));

  let lastSpan = null;
  function indexAt(node, off, isEnd) {
    if (node === textEl) return Math.max(0, Math.min(N - 1, isEnd ? off - 1 : off));
    let e = node.nodeType === 3 ? node.parentElement : node;
    while (e && e.parentElement !== textEl) e = e.parentElement;
    if (!e || e.dataset.i === undefined) return -1;
    let i = +e.dataset.i;
    if (node.nodeType === 3 && isEnd && off === 0) i -= 1;
    if (node.nodeType === 3 && !isEnd && off >= node.length) i += 1;
    return i;
  }
  document.addEventListener("selectionchange", () => {
    const sel = document.getSelection();
    if (!sel || sel.rangeCount === 0 || sel.isCollapsed) return;
    const r = sel.getRangeAt(0);
    if (!textEl.contains(r.startContainer) || !textEl.contains(r.endContainer)) return;
    const a = indexAt(r.startContainer, r.startOffset, false), b = indexAt(r.endContainer, r.endOffset, true);
    if (a >= 0 && b >= a) lastSpan = [a, b];
  });

  let marked = [];
  function mark(a, b, cls) {
    for (const t of marked) spans[t].classList.remove(cls);
    marked = [];
    for (let t = a; t <= b; t++) { spans[t].classList.add(cls); marked.push(t); }
  }

  function runSelect() {
    selectMessage.textContent = "";
    if (!lastSpan) { selectMessage.textContent = "Select a span of the text first."; return; }
    const [a, b] = lastSpan, theta = +threshold.value, state = selState.value;
    if (!Number.isFinite(theta)) { selectMessage.textContent = "The threshold must be a number."; return; }
    const found = [];
    for (let u = 0; u < U; u++) {
      if (state && stateOf(u) !== state) continue;
      for (const s of negated.checked ? [1, -1] : [1]) {
        let on = true, sum = 0;
        for (let t = a; t <= b && on; t++) { const v = s * value(u, t); on = v >= theta; sum += v; }
        if (!on || (offBefore.checked && a > 0 && s * value(u, a - 1) >= theta)) continue;
        found.push({ u, s, score: sd[u] > 0 ? (sum / (b - a + 1) - s * mean[u]) / sd[u] : 0 });
      }
    }
    found.sort((x, y) => y.score - x.score || x.u - y.u);
    const chosen = found.slice(0, Math.max(1, +setSize.value || 10));
    selectList.replaceChildren(el("div", { class: "stats", text: `${found.length} unit${found.length === 1 ? "" : "s"} on over characters ${a}–${b}` +
      (found.length ? "; the set (click one to show it):" : ": lower the threshold or choose another state.") }),
      ...chosen.map((f) => {
        const item = el("div", { class: "item", "data-unit": f.u, "data-sign": f.s, text: `${unitName(f.u)} ${f.s > 0 ? "+" : "−"}  ${fmt(f.score, 2)} sd above mean` });
        item.addEventListener("click", () => chooseUnit(f.u));
        return item;
      }));
    mark(a, b, "chosen");
    runMatch(chosen, theta, a, b);
  }
  selectButton.addEventListener("click", runSelect);

  function runMatch(set, theta, a, b) {
    matchList.replaceChildren();
    if (!set.length) return;
    const count = new Int32Array(N);
    for (const { u, s } of set) for (let t = 0; t < N; t++) if (s * value(u, t) >= theta) count[t] += 1;
    const need = Math.max(1, Math.ceil(set.length / 2)), runs = [];
    for (let t = 0; t < N; ) {
      if (count[t] < need) { t++; continue; }
      let end = t, sum = 0;
      while (end < N && count[end] >= need) sum += count[end++];
      runs.push({ start: t, end: end - 1, overlap: sum / (end - t) / set.length });
      t = end;
    }
    const length = b - a + 1;
    runs.sort((x, y) => y.overlap - x.overlap || Math.abs(x.end - x.start + 1 - length) - Math.abs(y.end - y.start + 1 - length) || x.start - y.start);
    const shownRuns = runs.filter((r) => r.end < a || r.start > b).slice(0, 25);
    if (!shownRuns.length) matchList.append(el("div", { class: "stats", text: "No other place has at least half the set on." }));
    for (const r of shownRuns) {
      const lo = Math.max(0, r.start - 12), hi = Math.min(N, r.end + 13), cut = (x, y) => chars.slice(x, y).join("").replace(/\n/g, "↵");
      const item = el("div", { class: "item", "data-start": r.start, "data-end": r.end }, `${fmt(r.overlap, 2)} `,
        cut(lo, r.start), el("mark", { text: cut(r.start, Math.min(r.end + 1, r.start + 60)) }), r.end + 1 - r.start > 60 ? "…" : "", cut(r.end + 1, hi));
      item.addEventListener("click", () => {
        for (const t of matchMarked) spans[t].classList.remove("match");
        matchMarked = [];
        for (let t = r.start; t <= r.end; t++) { spans[t].classList.add("match"); matchMarked.push(t); }
        spans[r.start].scrollIntoView({ block: "center" });
        showHover(r.start);
      });
      matchList.append(item);
    }
  }

  // --- a feature defined in the page ------------------------------------------------------------------------------
  // UTF-16 offset -> character (code point) index, since regular expressions report UTF-16 offsets.
  const cpIndex = new Int32Array(D.text.length + 1);
  for (let i = 0, c = 0; i <= D.text.length; c++) {
    cpIndex[i] = c;
    const code = D.text.charCodeAt(i);
    if (code >= 0xd800 && code < 0xdc00 && i + 1 < D.text.length) { cpIndex[i + 1] = c; i += 2; } else i += 1;
  }
  const regexName = el("input", { type: "text", id: "regex-name", value: "my_feature", "aria-label": "feature name" });
  const regexInput = el("input", { type: "text", id: "regex", placeholder: "a regular expression, e.g. \\([^)]*\\)", "aria-label": "regular expression" });
  const regexButton = el("button", { id: "regex-go", type: "button", text: "Score units" });
  const regexMessage = el("div", { class: "message", id: "regex-message", role: "status" });
  const regexList = el("div", { class: "list", id: "regex-units" });
  tools.append(el("section", { id: "regex-feature" }, el("h2", { text: "A feature of your own" }),
    el("p", { class: "note", text: "On at every character inside a match (multiline, as inspect-cells --feature NAME=REGEX, in JavaScript's regular expression syntax). Every unit is scored by AUROC on the recorded activations." }),
    regexName, regexInput, el("div", { class: "controls" }, regexButton), regexMessage, regexList));

  function featureMask(pattern) {
    let re;
    try { re = new RegExp(pattern, "gmu"); } catch (unicodeError) {
      try { re = new RegExp(pattern, "gm"); } catch (error) { return { error: `That regular expression does not compile: ${error.message}` }; }
    }
    const mask = new Uint8Array(N);
    for (const match of D.text.matchAll(re)) {
      if (!match[0].length) continue;
      const a = cpIndex[match.index], b = cpIndex[match.index + match[0].length];
      for (let t = a; t < b; t++) mask[t] = 1;
    }
    return { mask };
  }

  // AUROC of every unit as a detector of mask: the Mann-Whitney statistic on the quantised values, ties half.
  function aurocAll(mask) {
    let P = 0;
    for (let t = 0; t < N; t++) P += mask[t];
    const Q = N - P, out = new Float64Array(U), pos = new Float64Array(256), neg = new Float64Array(256);
    for (let u = 0; u < U; u++) {
      pos.fill(0); neg.fill(0);
      const base = u * N;
      for (let t = 0; t < N; t++) (mask[t] ? pos : neg)[codes[base + t]] += 1;
      let below = 0, sum = 0;
      for (let q = 0; q < 256; q++) { sum += pos[q] * (below + 0.5 * neg[q]); below += neg[q]; }
      out[u] = sum / (P * Q);
    }
    return { auroc: out, P, Q };
  }

  function runRegex() {
    regexMessage.textContent = "";
    regexList.replaceChildren();
    const name = regexName.value.trim() || "my_feature", pattern = regexInput.value;
    if (!pattern) { regexMessage.textContent = "Type a regular expression first."; return; }
    const { mask, error } = featureMask(pattern);
    if (error) { regexMessage.textContent = error; return; }
    const { auroc, P, Q } = aurocAll(mask);
    if (P === 0 || Q === 0) { regexMessage.textContent = P === 0 ? "It matches nowhere in this text." : "It matches everywhere in this text."; return; }
    if (P < MIN_SUPPORT || Q < MIN_SUPPORT) regexMessage.textContent = `Only ${Math.min(P, Q)} ${P < Q ? "positive" : "negative"} positions: inspect-cells would not score it.`;
    const key = `regex: ${name}`;
    if (!featureScores.has(key)) sortSelect.append(el("option", { value: key, text: key }));
    featureScores.set(key, { kind: "binary", signed: auroc, description: `inside a match of /${pattern}/` });
    const f = featureScores.get(key), best = Array.from({ length: U }, (_, u) => u).sort((a, b) => strength(f, b) - strength(f, a) || a - b);
    regexList.append(el("div", { class: "stats", text: `${P.toLocaleString("en")} of ${N.toLocaleString("en")} characters on; best units (AUROC):` }),
      ...best.slice(0, 10).map((u) => {
        const item = el("div", { class: "item", "data-unit": u, "data-auroc": String(auroc[u]), text: `${unitName(u)}  ${fmt(strength(f, u))} ${direction(f, u)}` });
        item.addEventListener("click", () => chooseUnit(u));
        return item;
      }));
    sortSelect.value = key;
    sortUnits();
  }
  regexButton.addEventListener("click", runRegex);
  regexInput.addEventListener("keydown", (e) => { if (e.key === "Enter") runRegex(); });

  // --- probes ---------------------------------------------------------------------------------------------------
  if (D.probes.length) {
    tools.append(el("section", { id: "probes" }, el("h2", { text: "One unit or many?" }),
      el("p", { class: "note", text: "A linear probe over all units of each layer (h, and c for an LSTM), fitted on the first half of the text and scored on the second, beside the best single unit chosen on the first half. A probe far above its unit: the feature is spread over many units." }),
      table(["feature", "L", "probe", "R²", "best unit", "unit"], D.probes.map((p) => [p.feature, p.layer, fmt(p.score),
        p.r2 === undefined ? "—" : fmt(p.r2), `${p.best_unit.state}[${p.best_unit.unit}] ${p.best_unit.direction === "+" ? "+" : "−"}`, fmt(p.best_unit.score)]))));
  }
  if (Object.keys(D.unscored).length) {
    tools.append(el("section", {}, el("h2", { text: "Not scored" }),
      ...Object.entries(D.unscored).map(([n, why]) => el("div", { class: "note", text: `${n}: ${why}` }))));
  }

  // --- start: sorted by the first feature with a finding, showing its best unit -----------------------------------
  const firstFinding = Object.entries(D.findings).find(([, f]) => f.length);
  if (firstFinding) sortSelect.value = firstFinding[0];
  sortUnits();
  chooseUnit(firstFinding ? unitOf(firstFinding[1][0].layer, firstFinding[1][0].state, firstFinding[1][0].unit) : 0);
  document.body.dataset.ready = "1";
  window.charrnnReadyMs = performance.now();
})();
