// SVG charts for the dashboard: no dependencies, redrawn at the container's pixel width so that text
// stays readable from phone to laptop widths. Used by the job page and the compare page.

const SVG = "http://www.w3.org/2000/svg";
const PALETTE = ["#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563"];
const MARGIN = { top: 12, right: 16, bottom: 44, left: 64 };
const MAX_CIRCLES = 200;
let chartCount = 0;

function ensureStyles() {
  if (document.querySelector("link[data-charts-css]")) return;
  const link = document.createElement("link");
  link.rel = "stylesheet";
  link.href = new URL("./charts.css", import.meta.url).href;
  link.dataset.chartsCss = "";
  document.head.append(link);
}

/** Default colour of the i-th series (the palette cycles). */
export function seriesColor(i) {
  return PALETTE[i % PALETTE.length];
}

function svgEl(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined && v !== null) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

/** Readable number: 3 significant digits, thousands as k/M, tiny or huge values in e-notation. */
export function formatNumber(v) {
  if (!Number.isFinite(v)) return String(v);
  const a = Math.abs(v);
  if (a === 0) return "0";
  if (a >= 1e9 || a < 1e-3) return v.toExponential(1).replace("e+", "e").replace(".0e", "e");
  if (a >= 1e6) return `${+(v / 1e6).toPrecision(3)}M`;
  if (a >= 1e4) return `${+(v / 1e3).toPrecision(3)}k`;
  return String(+v.toPrecision(3));
}

/** Labels of a set of ticks, consistent with each other (all in e-notation when any is tiny). */
export function tickLabels(ticks) {
  const tiny = ticks.some((t) => t !== 0 && Math.abs(t) < 1e-3);
  if (!tiny) return ticks.map(formatNumber);
  for (let digits = 0; digits <= 4; digits += 1) {
    const labels = ticks.map((t) => (t === 0 ? "0" : t.toExponential(digits).replace("e+", "e")));
    if (new Set(labels).size === ticks.length) return labels;
  }
  return ticks.map((t) => t.toExponential(4));
}

const SUPERSCRIPT = { "-": "⁻", 0: "⁰", 1: "¹", 2: "²", 3: "³", 4: "⁴", 5: "⁵", 6: "⁶", 7: "⁷", 8: "⁸", 9: "⁹" };

/** 0.001 → "10⁻³" (labels of a logarithmic axis). */
export function powerOfTen(v) {
  const e = Math.round(Math.log10(v));
  return `10${[...String(e)].map((c) => SUPERSCRIPT[c]).join("")}`;
}

/** "Nice" linear ticks covering [lo, hi]: steps of 1, 2 or 5 × 10^k, about `count` of them. */
export function niceTicks(lo, hi, count = 5) {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / Math.max(count, 1);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const steps = [0.5, 1, 2, 2.5, 5, 10].map((m) => m * mag);
  const step = steps.reduce((best, s) => (Math.abs((hi - lo) / s - count) < Math.abs((hi - lo) / best - count) ? s : best));
  const ticks = [];
  for (let t = Math.ceil(lo / step - 1e-9) * step; t <= hi + step * 1e-9; t += step) {
    ticks.push(Math.abs(t) < step * 1e-9 ? 0 : +t.toPrecision(12));
  }
  return ticks;
}

function logTicks(lo, hi) {
  const a = Math.floor(Math.log10(lo)), b = Math.ceil(Math.log10(hi));
  const every = Math.max(1, Math.ceil((b - a) / 6));
  const ticks = [];
  for (let e = a; e <= b; e += every) ticks.push(10 ** e);
  return ticks.filter((t) => t >= lo * 0.999 && t <= hi * 1.001);
}

function minMax(values) {
  let lo = Infinity, hi = -Infinity;
  for (const v of values) {
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  return [lo, hi];
}

function extent(values, pad) {
  let [lo, hi] = minMax(values);
  if (lo === hi) {
    const d = lo === 0 ? 1 : Math.abs(lo) * 0.1;
    lo -= d;
    hi += d;
  } else if (pad) {
    const d = (hi - lo) * 0.05;
    lo -= d;
    hi += d;
  }
  return [lo, hi];
}

// Many points: keep each pixel bucket's first, min and max point so that spikes stay visible.
function thin(points, width) {
  if (points.length <= width * 2) return points;
  const x0 = points[0][0], span = points[points.length - 1][0] - x0 || 1;
  const out = [];
  let bucket = -1, lo = null, hi = null;
  const push = () => {
    if (lo) out.push(...(lo === hi ? [lo] : lo[0] < hi[0] ? [lo, hi] : [hi, lo]));
  };
  for (const p of points) {
    const b = Math.floor(((p[0] - x0) / span) * width);
    if (b !== bucket) {
      push();
      bucket = b;
      lo = hi = p;
    } else {
      if (p[1] < lo[1]) lo = p;
      if (p[1] > hi[1]) hi = p;
    }
  }
  push();
  return out;
}

/**
 * An SVG line chart with axes, "nice" ticks, axis labels with units and a legend.
 *
 * @param {HTMLElement} container Element the chart is drawn into (its content is replaced).
 * @param {object} options
 * @param {{name: string, points: Array<[number, number]>, color?: string, dashed?: boolean}[]} options.series
 * @param {string} options.xLabel Label of the x axis (e.g. "step").
 * @param {string} options.yLabel Label of the y axis (e.g. "loss").
 * @param {string} [options.yUnit] Unit shown after the y label, e.g. "MB".
 * @param {string} [options.title] Accessible name (default: "yLabel vs xLabel").
 * @param {boolean} [options.logY] Logarithmic y axis (points with y <= 0 are not drawn).
 * @param {number} [options.height] Height in pixels (default 220).
 * @param {number} [options.yMin] Fixed lower end of the y axis.
 * @param {number} [options.yMax] Fixed upper end of the y axis.
 * @param {boolean} [options.legendValues] Show each series' last value in the legend (default true).
 * @returns {{update: (series: object[]) => void, destroy: () => void, svg: () => SVGElement}}
 */
export function lineChart(container, options) {
  ensureStyles();
  const opts = { height: 220, ...options };
  const id = `chart-${++chartCount}`;
  let series = opts.series || [];
  let svg = null;
  let lastWidth = 0;
  container.classList.add("chart");
  container.textContent = "";
  const figure = document.createElement("div");
  figure.className = "chart-plot";
  const legend = document.createElement("ul");
  legend.className = "chart-legend";
  legend.setAttribute("aria-label", "Legend");
  container.append(figure, legend);

  function draw() {
    const width = Math.max(260, Math.round(container.clientWidth || 560));
    lastWidth = width;
    const height = opts.height;
    const title = opts.title || `${opts.yLabel} vs ${opts.xLabel}`;
    const clean = series.map((s, i) => ({
      ...s,
      color: s.color || seriesColor(i),
      points: (s.points || [])
        .filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y) && (!opts.logY || y > 0))
        .sort((a, b) => a[0] - b[0]),
    }));
    const all = clean.flatMap((s) => s.points);
    const total = all.length;
    const next = svgEl("svg", {
      width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-labelledby": `${id}-title`,
      class: "chart-svg",
    });
    const summary = clean.map((s) => `${s.name}: ${s.points.length} points` +
      (s.points.length ? `, last ${formatNumber(s.points[s.points.length - 1][1])}` : "")).join("; ");
    next.append(svgEl("title", { id: `${id}-title` }, `${title}. ${total ? summary : "No data yet"}.`));
    const pw = width - MARGIN.left - MARGIN.right, ph = height - MARGIN.top - MARGIN.bottom;
    const yText = opts.yUnit ? `${opts.yLabel} (${opts.yUnit})` : opts.yLabel;
    next.append(
      svgEl("text", { class: "chart-axis-label", x: MARGIN.left + pw / 2, y: height - 6, "text-anchor": "middle", "font-size": 12 }, opts.xLabel),
      svgEl("text", {
        class: "chart-axis-label", x: 0, y: 0, "text-anchor": "middle", "font-size": 12,
        transform: `translate(13 ${MARGIN.top + ph / 2}) rotate(-90)`,
      }, yText),
    );
    if (!total) {
      next.append(svgEl("rect", { class: "chart-frame", x: MARGIN.left, y: MARGIN.top, width: pw, height: ph, fill: "none", stroke: "#c5ccd6" }));
      next.append(svgEl("text", { class: "chart-empty", x: MARGIN.left + pw / 2, y: MARGIN.top + ph / 2, "text-anchor": "middle", fill: "#5a6474" }, "No data yet"));
    } else {
      const [x0, x1] = extent(all.map((p) => p[0]), false);
      let [y0, y1] = opts.logY ? minMax(all.map((p) => p[1])) : extent(all.map((p) => p[1]), true);
      if (opts.yMin !== undefined) y0 = Math.min(opts.yMin, y0);
      if (opts.yMax !== undefined) y1 = Math.max(opts.yMax, y1);
      if (opts.logY) {
        if (y0 === y1) { y0 /= 10; y1 *= 10; }
        y0 = 10 ** Math.floor(Math.log10(y0) + 1e-9);
        y1 = 10 ** Math.ceil(Math.log10(y1) - 1e-9);
      }
      const ly = (v) => (opts.logY ? Math.log10(v) : v);
      const sx = (x) => MARGIN.left + ((x - x0) / (x1 - x0)) * pw;
      const sy = (y) => MARGIN.top + ph - ((ly(y) - ly(y0)) / (ly(y1) - ly(y0))) * ph;
      const grid = svgEl("g", { class: "chart-gridlines" });
      const yTicks = opts.logY ? logTicks(y0, y1) : niceTicks(y0, y1, Math.max(2, Math.round(ph / 40)));
      const yLabels = opts.logY ? yTicks.map(powerOfTen) : tickLabels(yTicks);
      for (const [i, t] of yTicks.entries()) {
        const y = sy(t);
        if (y < MARGIN.top - 0.5 || y > MARGIN.top + ph + 0.5) continue;
        grid.append(svgEl("line", { x1: MARGIN.left, x2: MARGIN.left + pw, y1: y, y2: y, stroke: "#e6e9ee" }));
        grid.append(svgEl("text", { class: "chart-tick", x: MARGIN.left - 6, y: y + 4, "text-anchor": "end", fill: "#5a6474", "font-size": 11 }, yLabels[i]));
      }
      const integerX = all.every((p) => Number.isInteger(p[0]));
      const xTicks = niceTicks(x0, x1, Math.max(2, Math.round(pw / 90))).filter((t) => !integerX || Number.isInteger(t));
      const xLabels = tickLabels(xTicks);
      for (const [i, t] of xTicks.entries()) {
        const x = sx(t);
        if (x < MARGIN.left - 0.5 || x > MARGIN.left + pw + 0.5) continue;
        grid.append(svgEl("line", { class: "chart-xgrid", x1: x, x2: x, y1: MARGIN.top, y2: MARGIN.top + ph, stroke: "#f0f2f5" }));
        grid.append(svgEl("text", { class: "chart-tick", x, y: MARGIN.top + ph + 16, "text-anchor": "middle", fill: "#5a6474", "font-size": 11 }, xLabels[i]));
      }
      next.append(grid, svgEl("rect", { class: "chart-frame", x: MARGIN.left, y: MARGIN.top, width: pw, height: ph, fill: "none", stroke: "#c5ccd6" }));
      for (const s of clean) {
        if (!s.points.length) continue;
        const g = svgEl("g", { class: "chart-series", "data-series": s.name });
        const pts = thin(s.points, pw);
        const d = pts.map(([x, y], i) => `${i ? "L" : "M"}${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join("");
        g.append(svgEl("path", {
          class: "chart-line", d, stroke: s.color, fill: "none", "stroke-width": 2,
          "stroke-dasharray": s.dashed ? "6 4" : null,
        }));
        if (s.points.length <= MAX_CIRCLES && !s.dashed) {
          for (const [x, y] of s.points) {
            const c = svgEl("circle", { class: "chart-point", cx: sx(x).toFixed(1), cy: sy(y).toFixed(1), r: 2.5, fill: s.color });
            c.append(svgEl("title", {}, `${s.name}: ${formatNumber(y)} at ${opts.xLabel} ${formatNumber(x)}`));
            g.append(c);
          }
        }
        next.append(g);
      }
    }
    if (svg) svg.replaceWith(next);
    else figure.append(next);
    svg = next;
    legend.textContent = "";
    for (const s of clean) {
      const li = document.createElement("li");
      const swatch = document.createElement("span");
      swatch.className = `chart-swatch${s.dashed ? " dashed" : ""}`;
      swatch.style.setProperty("--swatch", s.color);
      swatch.setAttribute("aria-hidden", "true");
      const last = s.points.length && opts.legendValues !== false ? ` — ${formatNumber(s.points[s.points.length - 1][1])}` : "";
      li.append(swatch, document.createTextNode(`${s.name}${last}`));
      legend.append(li);
    }
  }

  const observer = typeof ResizeObserver === "function"
    ? new ResizeObserver(() => {
      const w = Math.round(container.clientWidth || 0);
      if (w && Math.abs(w - lastWidth) > 2) draw();
    })
    : null;
  if (observer) observer.observe(container);
  draw();
  return {
    update(nextSeries) {
      series = nextSeries || [];
      draw();
    },
    destroy() {
      if (observer) observer.disconnect();
    },
    svg: () => svg,
  };
}

/**
 * Eigenvalue spectra on a log y axis, each normalized to its largest value (index 1 = largest).
 *
 * @param {HTMLElement} container
 * @param {{name: string, values: number[], color?: string, dashed?: boolean}[]} spectra Descending eigenvalues.
 * @param {{title?: string, height?: number, floor?: number}} [options] `floor`: relative values below it
 *   (numerical zeros) are not drawn; default 1e-12.
 * @returns {{update: (series: object[]) => void, destroy: () => void, svg: () => SVGElement}}
 */
export function spectrumChart(container, spectra, options = {}) {
  const floor = options.floor ?? 1e-12;
  const series = spectra.map((s) => {
    const top = Math.max(minMax(s.values.filter(Number.isFinite))[1], 0);
    const points = top > 0 ? s.values.map((v, i) => [i + 1, v / top]).filter(([, v]) => v >= floor) : [];
    return { name: s.name, color: s.color, dashed: s.dashed, points };
  });
  return lineChart(container, {
    series, xLabel: "eigenvalue index (largest first)", yLabel: "λ / λmax", yUnit: "log scale", logY: true,
    height: options.height || 220, title: options.title, legendValues: false,
  });
}
