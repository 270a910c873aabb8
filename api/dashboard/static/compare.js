/**
 * Compare page (`#/compare?ids=a,b,c`): overlays the jobs' training loss and evaluation curves and tables
 * their final metrics, trainable parameters, step time, throughput and peak memory. Jobs are added and
 * removed with a picker (the URL follows); the data refreshes every 3 s while any job is unfinished.
 * @module compare
 */
import { apiFetch, el, formatNumber, statusBadge, TERMINAL } from "./api.js";
import { lineChart, seriesColor } from "./charts.js";
import { methodLabel } from "./jobs.js";

const REFRESH_MS = 3000;
const TRAIN_NAMES = ["loss", "step_time_s", "tokens_per_s", "peak_memory_mb"];
const PREFERRED_EVAL = ["eval_accuracy", "eval_f1", "eval_matthews", "eval_mcc", "eval_pearson", "eval_spearman"];
const LOWER_IS_BETTER = /loss|perplexity|error|mse|mae/;

/**
 * Every metric point of a job for `names` after `afterStep`, following `has_more` pages.
 * @param {string} jobId
 * @param {string[]} names
 * @param {number|null} afterStep
 * @param {AbortSignal} [signal]
 * @returns {Promise<{data: Array<{step: number, name: string, value: number}>, names: string[]}>}
 */
export async function fetchMetrics(jobId, names, afterStep, signal) {
  const data = [];
  let cursor = afterStep, available = [];
  for (;;) {
    const q = new URLSearchParams({ name: names.join(","), limit: "5000" });
    if (cursor !== null && cursor !== undefined) q.set("after_step", String(cursor));
    const page = await apiFetch(`/v1/fine_tuning/jobs/${encodeURIComponent(jobId)}/metrics?${q}`, { signal });
    data.push(...page.data);
    available = page.names;
    if (!page.has_more || !page.data.length) break;
    cursor = page.data[page.data.length - 1].step;
  }
  return { data, names: available };
}

function median(values) {
  if (!values.length) return null;
  const s = [...values].sort((a, b) => a - b), m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

const pretty = (name) => name.replace(/^eval_/, "").replace(/_/g, " ");
const shortId = (id) => (id.length > 14 ? `…${id.slice(-8)}` : id);

/**
 * Render the compare page.
 * @param {HTMLElement} root
 * @param {URLSearchParams} query `ids`: comma-separated job ids
 * @returns {function(): void} cleanup
 */
export function renderComparePage(root, query) {
  let ids = [...new Set((query.get("ids") || "").split(",").map((s) => s.trim()).filter(Boolean))];
  const store = new Map();     // id → {job, error, series: Map name → Map step → value, trainAfter, evalAfter, done}
  const controller = new AbortController();
  let timer = null, stopped = false, recent = [], shownMetric = null;

  const chips = el("ul", { class: "chips", "aria-label": "Jobs in this comparison" });
  const addSelect = el("select", { id: "add-job" });
  const addButton = el("button", { type: "button", class: "btn", onclick: () => { if (addSelect.value) setIds([...ids, addSelect.value]); } }, "Add");
  const errorBox = el("div", { class: "alert alert-error", role: "alert" });
  const status = el("p", { class: "muted small", "aria-live": "polite" });
  const chartBox = (id) => el("div", { class: "chart-box", id });
  const boxes = { loss: chartBox("chart-loss"), evalLoss: chartBox("chart-eval-loss"), evalMetric: chartBox("chart-eval-metric") };
  const metricHeading = el("h2", null, "Evaluation metric");
  const metricCard = el("section", { class: "card", "aria-label": "Evaluation metric" }, metricHeading, boxes.evalMetric);
  const table = el("table", { class: "data", id: "compare-table" });
  const memoryNote = el("p", { class: "muted small" });
  const empty = el("p", { class: "empty" }, "Choose jobs to compare with the picker above, or tick them in the ",
    el("a", { href: "#/jobs" }, "jobs list"), ".");

  root.append(
    el("div", { class: "page-head" }, el("div", null, el("h1", null, "Compare jobs"),
      el("p", { class: "muted" }, "Training curves overlaid, final results side by side.")),
    el("div", { class: "actions" }, el("a", { class: "btn", href: "#/new" }, "New comparison"))),
    errorBox,
    el("section", { class: "card", "aria-labelledby": "picker-heading" },
      el("h2", { id: "picker-heading" }, "Jobs"), chips,
      el("div", { class: "picker" }, el("div", { class: "field" }, el("label", { for: "add-job" }, "Add a job"), addSelect), addButton),
      status),
    empty,
    el("div", { class: "compare-body" },
      el("div", { class: "grid-3" },
        el("section", { class: "card", "aria-label": "Training loss" }, el("h2", null, "Training loss"), boxes.loss),
        el("section", { class: "card", "aria-label": "Evaluation loss" }, el("h2", null, "Evaluation loss"), boxes.evalLoss),
        metricCard),
      el("section", { class: "card" }, el("div", { class: "table-wrap" }, table), memoryNote)));
  const body = root.querySelector(".compare-body");
  const charts = {
    loss: lineChart(boxes.loss, { series: [], xLabel: "step", yLabel: "training loss", title: "Training loss vs step" }),
    evalLoss: lineChart(boxes.evalLoss, { series: [], xLabel: "step", yLabel: "evaluation loss", title: "Evaluation loss vs step" }),
    evalMetric: lineChart(boxes.evalMetric, { series: [], xLabel: "step", yLabel: "metric" }),
  };

  function setIds(next) {
    ids = [...new Set(next)];
    for (const id of [...store.keys()]) if (!ids.includes(id)) store.delete(id);
    history.replaceState(null, "", ids.length ? `#/compare?ids=${ids.map(encodeURIComponent).join(",")}` : "#/compare");
    draw();
    refresh();
  }

  const color = (id) => seriesColor(ids.indexOf(id));
  const nameOf = (id) => { const s = store.get(id); return s && s.job ? `${methodLabel(s.job.method)} · ${shortId(id)}` : shortId(id); };
  const points = (id, name) => {
    const s = store.get(id);
    const byStep = s && s.series.get(name);
    return byStep ? [...byStep.entries()].sort((a, b) => a[0] - b[0]) : [];
  };
  const seriesFor = (name) => ids.map((id) => ({ name: nameOf(id), color: color(id), points: points(id, name) }));

  function drawPicker() {
    chips.replaceChildren(...ids.map((id) => {
      const s = store.get(id);
      return el("li", { class: "chip" }, el("span", { class: "swatch", style: { background: color(id) }, "aria-hidden": "true" }),
        el("a", { href: `#/jobs/${encodeURIComponent(id)}`, class: "job-link" }, nameOf(id)),
        s && s.job ? statusBadge(s.job.status) : null,
        el("button", { type: "button", class: "btn btn-ghost btn-small", "aria-label": `Remove ${id} from the comparison`,
          onclick: () => setIds(ids.filter((x) => x !== id)) }, "✕"));
    }));
    const options = recent.filter((j) => !ids.includes(j.id));
    addSelect.replaceChildren(el("option", { value: "" }, options.length ? "Choose a recent job…" : "No other recent jobs"),
      ...options.map((j) => el("option", { value: j.id }, `${j.id} · ${methodLabel(j.method)} · ${j.model} · ${j.status}`)));
    addButton.disabled = !options.length;
  }

  /** Results as rows (one per measure) and jobs as columns: it stays narrow for the usual 2-4 jobs. */
  function drawTable() {
    const evalKeys = [...new Set(ids.flatMap((id) => Object.keys(store.get(id)?.job?.summary?.after || {})))]
      .filter((k) => k.startsWith("eval_") && !/runtime|per_second|samples|steps/.test(k)).sort();
    const cols = ids.map((id) => {
      const s = store.get(id), job = s && s.job, summary = (job && job.summary) || {};
      const memory = points(id, "peak_memory_mb").map((p) => p[1]);
      const stepTime = median(points(id, "step_time_s").map((p) => p[1]));
      return { id, job, error: s && s.error, after: summary.after || {}, trainable: summary.trainable_params,
        total: summary.total_params, step: stepTime === null ? null : stepTime * 1000,
        tokens: median(points(id, "tokens_per_s").map((p) => p[1])), peak: memory.length ? Math.max(...memory) : summary.peak_memory_mb };
    });
    const numeric = (get, digits, bestOf = null) => {
      const values = cols.map(get);
      const finite = values.filter(Number.isFinite);
      const best = bestOf && finite.length > 1 ? bestOf(...finite) : undefined;
      return values.map((v) => {
        const text = formatNumber(v, digits);
        return el("td", { class: "num" }, v === best && finite.some((x) => x !== best)
          ? [el("strong", null, text), el("span", { class: "visually-hidden" }, " (best)")] : text);
      });
    };
    const measures = [
      ["Method", cols.map((c) => el("td", { class: "num" }, c.job ? methodLabel(c.job.method) : (c.error || "…")))],
      ["Status", cols.map((c) => el("td", { class: "num" }, c.job ? statusBadge(c.job.status) : "—"))],
      ["Steps", cols.map((c) => el("td", { class: "num" }, c.job ? `${c.job.step}${c.job.total_steps ? ` / ${c.job.total_steps}` : ""}` : "—"))],
      ...evalKeys.map((k) => [`Final ${pretty(k)}`, numeric((c) => c.after[k], 4, LOWER_IS_BETTER.test(k) ? Math.min : Math.max)]),
      ["Trainable parameters", cols.map((c) => el("td", { class: "num" }, c.trainable === undefined ? "—"
        : `${formatNumber(c.trainable)}${c.total ? ` (${formatNumber((100 * c.trainable) / c.total, 3)}%)` : ""}`))],
      ["Median step time (ms)", numeric((c) => c.step, 3, Math.min)],
      ["Tokens per second (median)", numeric((c) => c.tokens, 3, Math.max)],
      ["Peak memory (MiB)", numeric((c) => c.peak, 4, Math.min)],
    ];
    const definitions = [...new Set(cols.map((c) => c.job?.summary?.peak_memory_definition).filter(Boolean))];
    memoryNote.textContent = definitions.length ? `Peak memory: ${definitions.join("; ")}.` : "";
    table.replaceChildren(
      el("caption", null, "Results (best values in bold)"),
      el("thead", null, el("tr", null, el("th", { scope: "col" }, "Measure"), cols.map((c) => el("th", { scope: "col", class: "num" },
        el("span", { class: "swatch", style: { background: color(c.id) }, "aria-hidden": "true" }), " ",
        el("a", { class: "job-link", href: `#/jobs/${encodeURIComponent(c.id)}` }, nameOf(c.id)))))),
      el("tbody", null, measures.map(([label, cells]) => el("tr", null, el("th", { scope: "row" }, label), cells))));
  }

  function draw() {
    empty.hidden = ids.length > 0;
    body.hidden = ids.length === 0;
    drawPicker();
    charts.loss.update(seriesFor("loss"));
    charts.evalLoss.update(seriesFor("eval_loss"));
    const names = new Set(ids.flatMap((id) => [...(store.get(id)?.series.keys() || [])]));
    const metric = PREFERRED_EVAL.find((n) => names.has(n))
      || [...names].find((n) => n.startsWith("eval_") && n !== "eval_loss" && !/runtime|per_second/.test(n));
    metricCard.hidden = !metric;
    if (metric && metric !== shownMetric) {  // the y label changes with the metric: a new chart
      shownMetric = metric;
      metricHeading.textContent = `Evaluation ${pretty(metric)}`;
      charts.evalMetric.destroy();
      charts.evalMetric = lineChart(boxes.evalMetric, { series: [], xLabel: "step", yLabel: pretty(metric), title: `Evaluation ${pretty(metric)} vs step` });
    }
    if (metric) charts.evalMetric.update(seriesFor(metric));
    drawTable();
  }

  async function load(id) {
    let s = store.get(id);
    if (!s) { s = { job: null, error: null, series: new Map(), trainAfter: null, evalAfter: null, done: false }; store.set(id, s); }
    if (s.done) return false;
    const signal = controller.signal;
    try {
      s.job = await apiFetch(`/v1/fine_tuning/jobs/${encodeURIComponent(id)}`, { signal });
      s.error = null;
    } catch (exc) {
      if (exc.name === "AbortError") throw exc;
      s.error = exc.status === 404 ? "not found" : exc.message;
      if (exc.status === 404) s.done = true;
      return false;
    }
    const finished = TERMINAL.has(s.job.status);  // read before the metrics: nothing comes after a terminal status
    const add = (rows) => {
      for (const p of rows) {
        if (!s.series.has(p.name)) s.series.set(p.name, new Map());
        s.series.get(p.name).set(p.step, p.value);
      }
    };
    const train = await fetchMetrics(id, TRAIN_NAMES, s.trainAfter, signal);
    add(train.data);
    if (train.data.length) s.trainAfter = train.data[train.data.length - 1].step;
    const evalNames = train.names.filter((n) => n.startsWith("eval_"));
    if (evalNames.length) {
      const evals = await fetchMetrics(id, evalNames, s.evalAfter, signal);
      add(evals.data);
      if (evals.data.length) s.evalAfter = evals.data[evals.data.length - 1].step;
    }
    s.done = finished;
    return !finished;
  }

  async function refresh() {
    clearTimeout(timer);
    if (stopped) return;
    try {
      const running = await Promise.all(ids.map(load));
      errorBox.textContent = "";
      draw();
      const live = running.some(Boolean);
      status.textContent = !ids.length ? "" : live ? "Updating every 3 s while a job is running." : "All jobs have finished.";
      if (live && document.visibilityState === "visible") timer = setTimeout(refresh, REFRESH_MS);
    } catch (exc) {
      if (exc.name === "AbortError") return;
      errorBox.textContent = `Could not load the comparison: ${exc.message}`;
      timer = setTimeout(refresh, REFRESH_MS * 2);
    }
  }

  const onVisibility = () => { if (document.visibilityState === "visible") refresh(); };
  document.addEventListener("visibilitychange", onVisibility);
  apiFetch("/v1/fine_tuning/jobs?limit=50", { signal: controller.signal })
    .then((page) => { recent = page.data; drawPicker(); })
    .catch((exc) => { if (exc.name !== "AbortError") status.textContent = `Could not list recent jobs: ${exc.message}`; });
  draw();
  refresh();

  return () => {
    stopped = true;
    clearTimeout(timer);
    controller.abort();
    document.removeEventListener("visibilitychange", onVisibility);
    for (const chart of Object.values(charts)) chart.destroy();
  };
}
