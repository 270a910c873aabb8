/**
 * The job page (`#/jobs/<id>`): status, progress and controls; live training curves; SparseGrad's method
 * insight; the streaming event log; checkpoints, artifacts (download, merge), results and the job spec.
 * Live data: the job and its new metric points are polled every 1.5 s while the job is not finished, and
 * the event stream (SSE) triggers an immediate refresh on phase, checkpoint and status events.
 * @module job
 */
import { ApiError, TERMINAL, apiFetch, el, formatDuration, formatTime, statusBadge, streamEvents, toast } from "./api.js";
import { MetricStore, insightPanel, metricCharts } from "./job_metrics.js";
import { eventLog, renderArtifacts, renderCheckpoints, renderSpec, renderSummary } from "./job_panels.js";
import { renderPlayground } from "./playground.js";

const POLL_MS = 1500;
const PAUSED_POLL_MS = 4000;
const MERGE_POLL_MS = 3000;
const CHECKPOINT_EVERY_TICKS = 4;

function ensureStyles() {
  if (document.querySelector("link[data-job-css]")) return;
  const link = el("link", { rel: "stylesheet", href: new URL("./job.css", import.meta.url).href });
  link.dataset.jobCss = "";
  document.head.append(link);
}

/** "SparseGrad · density 0.05 · 2 calibration steps · dynamic" and the like. */
export function methodText(method) {
  const p = method[method.type] || {};
  const setting = method.setting === "peft" ? "PEFT setting" : "paper setting";
  switch (method.type) {
    case "sparsegrad":
      return `SparseGrad · density ${p.density} · ${p.calibration_steps} calibration steps · ${p.selection} selection · ${setting}`;
    case "lora":
      return `LoRA · rank ${p.rank ?? "auto"}${p.alpha ? ` · alpha ${p.alpha}` : ""} · ${setting}`;
    case "meprop":
      return `MeProp · density ${p.density} · ${setting}`;
    case "full":
      return "Full fine-tuning";
    default:
      return method.type;
  }
}

/** While calibrating: "pass 3 of 20" and the time left to the end of calibration, from the last progress event. */
function calibrationText(job, calibration) {
  if (job.status !== "running" || job.phase !== "calibrating" || !calibration) return null;
  const left = calibration.end === null ? null : calibration.end - Date.now() / 1000;
  return {
    phase: `calibrating · pass ${calibration.step} of ${calibration.total}`,
    eta: left === null ? "—" : `${left <= 0 ? "any moment" : formatDuration(left)} (to the end of calibration)`,
  };
}

function etaText(job) {
  if (job.status !== "running" || !job.estimated_finish) return "—";
  const left = job.estimated_finish - Date.now() / 1000;
  const at = new Date(job.estimated_finish * 1000).toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" });
  return left <= 0 ? "any moment" : `${formatDuration(left)} (about ${at})`;
}

function progressBar(job) {
  const pct = Math.round(Math.max(0, Math.min(1, job.progress || 0)) * 100);
  const steps = job.total_steps ? `step ${job.step} of ${job.total_steps}` : "";
  return el("div", { class: "progress job-progress" },
    el("progress", {
      max: 100, value: pct, "aria-label": "Progress", "aria-valuetext": `${pct}%${steps ? `, ${steps}` : ""}`,
    }),
    el("span", { class: "pct" }, `${pct}%`));
}

/**
 * The chain a continued training starts from (`job.lineage`: root base model first, the job's model last), each
 * fine-tuned model linking to the job that made it; null for a job on a base model.
 * @param {object} job
 * @returns {HTMLElement|null}
 */
function lineageList(job) {
  const lineage = job.lineage || [];
  if (lineage.length < 2) return null;
  return el("ol", { class: "lineage", "aria-label": "Models this job starts from, base model first" },
    lineage.map((entry) => el("li", null, el("code", null, entry.model), entry.fine_tuning_job_id
      ? [" (", el("a", { href: `#/jobs/${encodeURIComponent(entry.fine_tuning_job_id)}` }, entry.fine_tuning_job_id),
        entry.step !== null && entry.step !== undefined ? `, step ${entry.step}` : "", ")"]
      : " (base model)")));
}

function kv(pairs) {
  return el("dl", { class: "kv job-facts" },
    pairs.filter(([, v]) => v !== null && v !== undefined && v !== "").map(([k, v]) => [el("dt", null, k), el("dd", null, v)]));
}

/**
 * Render the page of one job into `root`.
 * @param {HTMLElement} root the page container (emptied by the router)
 * @param {string} jobId
 * @returns {function(): void} cleanup: stops polling and the event stream
 */
export function renderJobPage(root, jobId) {
  ensureStyles();
  const path = `/v1/fine_tuning/jobs/${encodeURIComponent(jobId)}`;
  const controller = new AbortController();
  const signal = controller.signal;
  const store = new MetricStore(jobId);
  const state = { job: null, timer: null, ticks: 0, busy: false, again: false, final: false, pausePending: false,
    merging: false, artifacts: [], drawn: "", calibration: null, playground: false };
  let charts = null, insight = null, log = null, closeStream = null;

  const heading = el("h1", { class: "job-title" }, "Job ", el("code", null, jobId));
  const badgeSlot = el("span", { class: "job-badge" });
  const actionsAlert = el("p", { class: "alert alert-error", role: "alert", id: "job-action-error" });
  const buttons = {
    pause: el("button", { type: "button", class: "btn", id: "pause-job" }, "Pause"),
    resume: el("button", { type: "button", class: "btn", id: "resume-job" }, "Resume"),
    cancel: el("button", { type: "button", class: "btn btn-danger", id: "cancel-job" }, "Cancel job"),
  };
  const facts = el("div", { class: "job-facts-wrap" });
  const pollError = el("p", { class: "alert alert-error", role: "alert", id: "job-poll-error" });
  const sections = {
    charts: el("div", { class: "chart-grid" }),
    insight: el("section", { class: "card insight", id: "insight", "aria-labelledby": "insight-heading" }),
    log: el("section", { class: "card", id: "events", "aria-labelledby": "log-heading" }),
    summary: el("section", { class: "card", id: "summary", "aria-labelledby": "summary-heading" }),
    checkpoints: el("section", { class: "card", id: "checkpoints", "aria-labelledby": "checkpoints-heading" }),
    artifacts: el("section", { class: "card", id: "artifacts", "aria-labelledby": "artifacts-heading" }),
    spec: el("section", { class: "card", id: "spec", "aria-labelledby": "spec-heading" }),
    playground: el("section", { class: "card playground", id: "playground", "aria-labelledby": "playground-heading",
      hidden: true }),
  };
  const page = el("article", { class: "job-page", "aria-busy": "true" },
    el("p", { class: "crumbs" }, el("a", { href: "#/jobs" }, "← All jobs")),
    el("header", { class: "card job-header" },
      el("div", { class: "job-head-row" }, el("div", { class: "job-head-title" }, heading, badgeSlot),
        el("div", { class: "job-actions", role: "group", "aria-label": "Job controls" },
          buttons.pause, buttons.resume, buttons.cancel)),
      actionsAlert, facts),
    pollError,
    sections.playground,
    el("section", { id: "curves", "aria-labelledby": "curves-heading" },
      el("h2", { id: "curves-heading" }, "Training curves"), sections.charts),
    sections.insight,
    el("div", { class: "job-columns" }, sections.log, sections.summary),
    sections.checkpoints, sections.artifacts, sections.spec);
  root.replaceChildren(el("p", { class: "muted" }, "Loading the job…"));

  function renderHeader() {
    const job = state.job;
    badgeSlot.replaceChildren(statusBadge(job.status));
    const running = job.status === "running";
    if (!running) state.pausePending = false;
    buttons.pause.disabled = !(job.status === "queued" || (running && !state.pausePending));
    buttons.resume.disabled = !(job.status === "paused" || (running && state.pausePending));
    buttons.cancel.disabled = !["validating_files", "queued", "running", "paused"].includes(job.status);
    buttons.pause.textContent = running && state.pausePending ? "Pausing…" : "Pause";
    buttons.resume.textContent = running && state.pausePending ? "Withdraw pause" : "Resume";
    const steps = job.total_steps ? `${job.step} of ${job.total_steps}` : job.step ? String(job.step) : "—";
    const calibrating = calibrationText(job, state.calibration);
    facts.replaceChildren(...[
      progressBar(job),
      kv([
        ["Phase", calibrating ? calibrating.phase : job.phase || (job.status === "queued" && job.queue_position ? `queued, #${job.queue_position} in line` : "—")],
        ["Step", steps], ["ETA", calibrating ? calibrating.eta : etaText(job)], ["Attempts", String(job.attempts)],
        ["Model", job.model], ["Lineage", lineageList(job)], ["Method", methodText(job.method)],
        ["Task", job.task && job.task.type ? `${job.task.type}${job.task.num_labels ? ` · ${job.task.num_labels} labels` : ""}` : null],
        ["Created", formatTime(job.created_at)], ["Started", job.started_at ? formatTime(job.started_at) : null],
        ["Finished", job.finished_at ? formatTime(job.finished_at) : null],
        ["Fine-tuned model", job.fine_tuned_model ? el("code", null, job.fine_tuned_model) : null],
        ["Trained tokens", job.trained_tokens ? job.trained_tokens.toLocaleString() : null],
      ]),
      job.error ? el("p", { class: "alert alert-error job-error" },
        `Failed${job.error.code ? ` (${job.error.code})` : ""}: ${job.error.message}`) : null,
    ].filter(Boolean));
  }

  function redrawCurves() {
    const job = state.job;
    const key = JSON.stringify([store.version, job.status, job.phase, Boolean(job.summary && job.summary.after)]);
    if (key === state.drawn) return;
    state.drawn = key;
    charts.update(store, state.job);
    insight.update(store, state.job);
    renderSummary(sections.summary, state.job, store.liveEvaluation());
  }

  async function loadCheckpoints() {
    const page = await apiFetch(`${path}/checkpoints?limit=100`, { signal });
    renderCheckpoints(sections.checkpoints, page, Boolean(state.job && TERMINAL.has(state.job.status)));
  }

  /** A succeeded job's playground, once (it hides itself when the model was deleted). */
  function mountPlayground() {
    if (state.playground || state.job.status !== "succeeded" || !state.job.fine_tuned_model) return;
    state.playground = true;
    renderPlayground(sections.playground, state.job, { signal });
  }

  function drawArtifacts() {
    renderArtifacts(sections.artifacts, state.artifacts, state.job, { merging: state.merging, onMerge: requestMerge });
  }

  async function loadArtifacts() {
    state.artifacts = (await apiFetch(`${path}/artifacts`, { signal })).data;
    if (state.artifacts.some((a) => a.kind === "merged_model")) state.merging = false;
    drawArtifacts();
  }

  function delay() {
    const job = state.job;
    if (state.merging) return MERGE_POLL_MS;
    if (TERMINAL.has(job.status)) return state.final ? null : POLL_MS;
    return job.status === "paused" ? PAUSED_POLL_MS : POLL_MS;
  }

  function schedule(ms) {
    clearTimeout(state.timer);
    state.timer = null;
    if (!signal.aborted && ms !== null) state.timer = setTimeout(tick, ms);
  }

  async function tick() {
    if (signal.aborted) return;
    if (state.busy) { state.again = true; return; }
    state.busy = true;
    try {
      state.job = await apiFetch(path, { signal });
      renderHeader();
      const terminal = TERMINAL.has(state.job.status);
      await store.load({ signal, full: terminal && !state.final });
      redrawCurves();
      state.ticks += 1;
      if (terminal && !state.final) {
        await Promise.all([loadCheckpoints(), loadArtifacts()]);
        renderSummary(sections.summary, state.job, store.liveEvaluation());
        mountPlayground();
        state.final = true;
      } else if (state.merging) {
        await loadArtifacts();
      } else if (state.ticks % CHECKPOINT_EVERY_TICKS === 0 && !terminal) {
        await loadCheckpoints();
      }
      pollError.textContent = "";
    } catch (exc) {
      if (signal.aborted || (exc && exc.name === "AbortError")) return;
      pollError.textContent = `Could not refresh the job: ${exc.message}. Retrying…`;
      state.busy = false;
      schedule(PAUSED_POLL_MS);
      return;
    }
    state.busy = false;
    if (state.again) { state.again = false; schedule(0); return; }
    schedule(delay());
  }

  async function act(action, button) {
    actionsAlert.textContent = "";
    button.disabled = true;
    try {
      state.job = await apiFetch(`${path}/${action}`, { method: "POST", signal });
      if (action === "pause" && state.job.status === "running") state.pausePending = true;
      if (action === "resume") state.pausePending = false;
      const done = { pause: state.pausePending ? "Pause requested: the job checkpoints and stops." : "Job paused.",
        resume: "Job resumed.", cancel: "Cancellation requested." };
      toast(done[action], "success");
      renderHeader();
    } catch (exc) {
      if (signal.aborted) return;
      actionsAlert.textContent = exc instanceof ApiError ? exc.message : `Request failed: ${exc.message}`;
    }
    state.final = false;
    schedule(0);
  }

  async function requestMerge() {
    actionsAlert.textContent = "";
    try {
      await apiFetch(`${path}/merge`, { method: "POST", signal });
      state.merging = true;
      toast("Merged model requested.", "success");
    } catch (exc) {
      if (signal.aborted) return;
      toast(exc.message, "error");
    }
    drawArtifacts();
    schedule(0);
  }

  function onEvent(event, meta) {
    log.add(event);
    const data = event.data || {};
    if (event.type === "metrics" && data.phase === "calibrating") {
      state.calibration = { step: data.step, total: data.total,
        end: Number.isFinite(data.eta_seconds) ? Date.now() / 1000 + data.eta_seconds : null };
      if (state.job) renderHeader();
      return;
    }
    if (event.type === "metrics" && Number.isFinite(data.step)) {
      // evaluations arrive here at once; training points come from the metrics route (no gaps)
      for (const [k, v] of Object.entries(data)) if (k.startsWith("eval_")) store.add(k, data.step, v);
      if (Object.keys(data).some((k) => k.startsWith("eval_"))) redrawCurves();
    }
    const message = event.message || "";
    if (message.startsWith("Pause requested")) state.pausePending = true;
    if (message.startsWith("Pause withdrawn") || message.startsWith("Job resumed")) state.pausePending = false;
    if (state.job && /^(Pause|Job resumed)/.test(message)) renderHeader();
    const wake = meta.event !== "metrics"; // phases, checkpoints, errors, status and artifact messages are rare
    if (wake && state.job && !(state.final && TERMINAL.has(state.job.status))) schedule(0);
  }

  function startStream() {
    closeStream = streamEvents(jobId, {
      signal, onEvent,
      onEnd: () => schedule(0),
      onError: (exc) => toast(`The event stream stopped: ${exc.message}`, "error"),
    });
  }

  for (const [action, button] of Object.entries(buttons)) button.addEventListener("click", () => act(action, button));

  (async () => {
    try {
      state.job = await apiFetch(path, { signal });
    } catch (exc) {
      if (signal.aborted) return;
      root.replaceChildren(el("p", { class: "crumbs" }, el("a", { href: "#/jobs" }, "← All jobs")),
        el("h1", null, "Job not available"),
        el("p", { class: "alert alert-error", role: "alert" }, exc.message));
      return;
    }
    root.replaceChildren(page);
    renderHeader();
    charts = metricCharts(sections.charts, state.job);
    insight = insightPanel(sections.insight, state.job, { signal });
    log = eventLog(sections.log);
    renderSummary(sections.summary, state.job);
    renderSpec(sections.spec, state.job);
    drawArtifacts();
    try {
      await Promise.all([store.load({ signal, full: true }), loadCheckpoints(), loadArtifacts()]);
    } catch (exc) {
      if (signal.aborted) return;
      pollError.textContent = `Could not load the job's data: ${exc.message}`;
    }
    redrawCurves();
    page.setAttribute("aria-busy", "false");
    startStream();
    if (TERMINAL.has(state.job.status)) { state.final = true; mountPlayground(); }
    schedule(TERMINAL.has(state.job.status) ? null : POLL_MS);
  })();

  return () => {
    controller.abort();
    clearTimeout(state.timer);
    if (closeStream) closeStream();
    if (charts) charts.destroy();
    if (insight) insight.destroy();
  };
}
