// The job page's metric charts and SparseGrad's method insight panel, fed from
// GET /v1/fine_tuning/jobs/{id}/metrics (paged with after_step) and from live metrics events.

import { apiFetch, el } from "./api.js";
import { formatNumber, lineChart, seriesColor, spectrumChart } from "./charts.js";

const PAGE = 10000;
const EVAL_PREFERRED = ["eval_accuracy", "eval_f1", "eval_mcc", "eval_pearson", "eval_spearman", "eval_perplexity"];
const EVAL_HIDDEN = new Set(["eval_loss", "eval_tokens"]);

/** Every metric point of one job, by name and step; reloads incrementally (see `load`). */
export class MetricStore {
  /** @param {string} jobId */
  constructor(jobId) {
    this.jobId = jobId;
    /** @type {Map<string, Map<number, number>>} */
    this.values = new Map();
    /** @type {string[]} every name the job has recorded (from the API's `names`) */
    this.names = [];
    this.lossStep = 0;
    /** Bumped by every new or changed point (redraw only when it moved). */
    this.version = 0;
  }

  /** Largest step with a training loss: polls restart one step before it, so an evaluation recorded
   * after the training metrics of its step (and the pre-training one at step 0) is never skipped. */
  get trainStep() {
    return this.lossStep;
  }

  /** Record one point (a later value of the same name and step replaces it). */
  add(name, step, value) {
    if (!Number.isFinite(value) || !Number.isFinite(step)) return;
    if (!this.values.has(name)) this.values.set(name, new Map());
    const series = this.values.get(name);
    if (series.get(step) === value) return;
    series.set(step, value);
    this.version += 1;
    if (name === "loss" && step > this.lossStep) this.lossStep = step;
  }

  /**
   * Fetch the points after the cursor (or every point with `full`), following `has_more` pages.
   * @param {{full?: boolean, signal?: AbortSignal}} [options]
   * @returns {Promise<number>} how many points arrived
   */
  async load({ full = false, signal } = {}) {
    let after = full || this.trainStep === 0 ? null : this.trainStep - 1;
    let count = 0;
    for (let page = 0; page < 1000; page += 1) {
      const query = `limit=${PAGE}` + (after === null ? "" : `&after_step=${after}`);
      const res = await apiFetch(`/v1/fine_tuning/jobs/${encodeURIComponent(this.jobId)}/metrics?${query}`, { signal });
      for (const p of res.data) this.add(p.name, p.step, p.value);
      count += res.data.length;
      this.names = res.names || this.names;
      if (!res.has_more || !res.data.length) break;
      after = res.data[res.data.length - 1].step;
    }
    return count;
  }

  /** Points of one metric as [[step, value], ...] in step order. */
  points(name, scale = 1) {
    const m = this.values.get(name);
    if (!m) return [];
    return [...m.entries()].sort((a, b) => a[0] - b[0]).map(([s, v]) => [s, v * scale]);
  }

  /** Evaluation values before training (step 0) and at the latest evaluated step, for the results table. */
  liveEvaluation() {
    const before = {}, latest = {};
    let step = 0;
    for (const [name, m] of this.values) {
      if (!name.startsWith("eval_")) continue;
      if (m.has(0)) before[name] = m.get(0);
      for (const s of m.keys()) if (s > step) step = s;
    }
    for (const [name, m] of this.values) if (name.startsWith("eval_") && m.has(step) && step > 0) latest[name] = m.get(step);
    return { before, latest, step };
  }

  has(name) {
    return this.values.has(name) || this.names.includes(name);
  }
}

/** The evaluation metrics to chart besides the loss (accuracy, F1, MCC, Pearson...). */
function evalNames(store) {
  const names = [...new Set([...store.names, ...store.values.keys()])].filter((n) => n.startsWith("eval_"));
  const preferred = EVAL_PREFERRED.filter((n) => names.includes(n));
  return preferred.length ? preferred : names.filter((n) => !EVAL_HIDDEN.has(n) && n !== "eval_mse");
}

const pretty = (name) => name.replace(/^eval_/, "").replace(/_/g, " ");

function chartDefs(job) {
  const regression = job.task && job.task.type === "regression";
  const lm = job.task && job.task.type === "causal_lm";
  return [
    {
      id: "loss", title: "Loss", yLabel: "loss", yUnit: regression ? "MSE" : "cross-entropy, nats",
      series: () => [["loss", "train loss"], ["eval_loss", "eval loss"]],
    },
    {
      id: "eval", title: "Evaluation metric", yLabel: lm ? "perplexity" : "score",
      series: (store) => evalNames(store).map((n) => [n, pretty(n)]),
      note: () => `On the evaluation data, before and after training and every eval_every steps; ` +
        `${lm ? "lower" : "higher"} is better.`,
    },
    { id: "lr", title: "Learning rate", yLabel: "learning rate", series: () => [["lr", "learning rate"]] },
    { id: "step_time", title: "Step time", yLabel: "step time", yUnit: "s", series: () => [["step_time_s", "step time"]] },
    {
      id: "throughput", title: "Throughput", yLabel: "throughput", yUnit: "tokens/s",
      series: () => [["tokens_per_s", "tokens per second"]],
    },
    {
      id: "memory", title: "Peak memory", yLabel: "memory", yUnit: "MB",
      series: () => [["peak_memory_mb", "peak memory"], ["cuda_max_allocated_mb", "CUDA max allocated"],
        ["cuda_reserved_mb", "CUDA reserved"]],
      note: (j) => (j.summary && j.summary.peak_memory_definition) ||
        "On CUDA: tensor memory (torch.cuda.max_memory_allocated); on CPU: the worker process's peak resident set size.",
    },
  ];
}

/**
 * The grid of metric charts.
 * @param {HTMLElement} container
 * @param {object} job the job object (for the task type)
 * @returns {{update: (store: MetricStore, job: object) => void, destroy: () => void}}
 */
export function metricCharts(container, job) {
  const defs = chartDefs(job);
  const panels = defs.map((def) => {
    const plot = el("div", { class: "chart-box", dataset: { chart: def.id } });
    const note = el("p", { class: "chart-note" });
    const card = el("figure", { class: "card chart-card", id: `chart-${def.id}` },
      el("figcaption", { class: "chart-title" }, def.title), plot, note);
    container.append(card);
    const chart = lineChart(plot, {
      series: [], xLabel: "step", yLabel: def.yLabel, yUnit: def.yUnit, title: `${def.title} vs step`,
    });
    return { def, chart, note };
  });
  return {
    update(store, currentJob) {
      for (const { def, chart, note } of panels) {
        const series = def.series(store).map(([name, label], i) => ({
          name: label, points: store.points(name), color: seriesColor(i),
        })).filter((s, i) => i === 0 || s.points.length);
        chart.update(series);
        const text = def.note ? def.note(currentJob) : "";
        note.textContent = text;
        note.hidden = !text;
      }
    },
    destroy() {
      panels.forEach((p) => p.chart.destroy());
    },
  };
}

function usableSpectra(insight) {
  const spectra = insight && insight.spectra;
  return spectra && typeof spectra === "object" && Object.keys(spectra).length ? spectra : null;
}

/**
 * The method insight panel: SparseGrad's calibration spectra (eigenvalues of the out and in Gram
 * matrices per projection kind) and the share of gradient energy its top-k keeps each step, next to
 * what the same k keeps in the original basis; a note for other methods.
 * The spectra come from the job's insight route (the job object leaves them out), asked for on each update
 * until the job has them.
 * @param {HTMLElement} container
 * @param {object} job
 * @param {{signal?: AbortSignal}} [options]
 * @returns {{update: (store: MetricStore, job: object) => void, destroy: () => void}}
 */
export function insightPanel(container, job, options = {}) {
  container.append(el("h2", { id: "insight-heading" }, "Method insight"));
  if (!job.method || job.method.type !== "sparsegrad") {
    container.append(el("p", { class: "muted" },
      `This panel applies to SparseGrad jobs: it shows the calibration spectra and how much gradient energy ` +
      `the top-k keeps in the rotated basis. This job uses ${job.method ? job.method.type : "another method"}.`));
    return { update() {}, destroy() {} };
  }
  const params = job.method.sparsegrad || {};
  const density = Number(params.density);
  const spectraIntro = el("p", { class: "insight-text" },
    "Calibration spectra (the paper's Fig. 2): eigenvalues of the Gram matrices of the MLP weight gradients " +
    "collected during calibration, per projection kind — “out” (G·Gᵀ) and “in” (Gᵀ·G), largest first, " +
    "divided by the largest. A fast decay means a few directions of the HOSVD basis carry most of the gradient " +
    "(values below 10⁻¹² of the largest, numerical zeros, are not drawn).");
  const spectraGrid = el("div", { class: "spectra-grid" },
    el("p", { class: "muted" }, "The spectra appear when calibration is done."));
  const shareIntro = el("p", { class: "insight-text" },
    `Gradient energy kept per step (the paper's Fig. 3): the share of each step's MLP gradient energy ` +
    `(sum of squared entries, all layers) in the ${formatNumber(density * 100)} % of entries SparseGrad updates, ` +
    "in the rotated basis, next to what the same number of largest entries keeps in the original basis " +
    "(measured every original_share_every steps) and the density itself (what k entries picked at random would keep).");
  const shareBox = el("div", { class: "chart-box", dataset: { chart: "energy" } });
  const shareCard = el("figure", { class: "card chart-card", id: "chart-energy" },
    el("figcaption", { class: "chart-title" }, "Top-k gradient energy share"), shareBox);
  container.append(
    el("section", { class: "insight-block", "aria-label": "Calibration spectra" },
      el("h3", null, "Calibration spectra"), spectraIntro, spectraGrid),
    el("section", { class: "insight-block", "aria-label": "Gradient energy share" },
      el("h3", null, "Gradient energy kept by the top-k"), shareIntro, shareCard),
  );
  const share = lineChart(shareBox, {
    series: [], xLabel: "step", yLabel: "energy kept", yUnit: "%", yMin: 0, yMax: 100,
    title: "Share of gradient energy kept by the top-k vs step",
  });
  let spectraCharts = [];
  let spectraKey = "";
  let spectraLoading = false, spectraLoaded = false;

  async function loadSpectra() {
    spectraLoading = true;
    try {
      const found = usableSpectra(await apiFetch(
        `/v1/fine_tuning/jobs/${encodeURIComponent(job.id)}/insight`, { signal: options.signal }));
      if (found) {
        spectraLoaded = true;
        drawSpectra(found);
      }
    } catch {
      // not there yet or a passing error: the next update asks again
    } finally {
      spectraLoading = false;
    }
  }

  function drawSpectra(spectra) {
    const key = JSON.stringify(Object.keys(spectra).map((k) => [k, (spectra[k].out || []).length, (spectra[k].in || []).length,
      (spectra[k].out || [])[0]]));
    if (key === spectraKey) return;
    spectraKey = key;
    spectraCharts.forEach((c) => c.destroy());
    spectraGrid.textContent = "";
    spectraCharts = Object.entries(spectra).map(([kind, s]) => {
      const box = el("div", { class: "chart-box", dataset: { chart: `spectrum-${kind}` } });
      const out = s.out || [], inn = s.in || [];
      spectraGrid.append(el("figure", { class: "card chart-card spectrum-card", id: `spectrum-${kind}` },
        el("figcaption", { class: "chart-title" }, `${kind}: out ${out.length} × in ${inn.length}`), box));
      return spectrumChart(box, [
        { name: `out (G·Gᵀ, ${out.length} values)`, values: out, color: seriesColor(0) },
        { name: `in (Gᵀ·G, ${inn.length} values)`, values: inn, color: seriesColor(1) },
      ], { title: `Eigenvalue spectra of the ${kind} projections, normalized to the largest` });
    });
  }

  return {
    update(store, currentJob) {
      const started = !["validating_files", "queued"].includes(currentJob.status);
      if (started && !spectraLoaded && !spectraLoading) loadSpectra();
      const kept = store.points("topk_energy_share", 100);
      const orig = store.points("original_basis_topk_energy_share", 100);
      const series = [{ name: "SparseGrad basis (top-k)", points: kept, color: seriesColor(0) }];
      if (orig.length) series.push({ name: "original basis, same k", points: orig, color: seriesColor(1) });
      if (kept.length && Number.isFinite(density)) {
        series.push({
          name: "density (random k)", dashed: true, color: "#6b7280",
          points: [[kept[0][0], density * 100], [kept[kept.length - 1][0], density * 100]],
        });
      }
      share.update(series);
    },
    destroy() {
      share.destroy();
      spectraCharts.forEach((c) => c.destroy());
    },
  };
}
