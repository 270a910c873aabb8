// The job page's lists and tables: event log, checkpoints, artifacts (download, merge), the job spec
// as JSON to copy, and the before/after evaluation summary.

import { apiFetch, apiFetchBlob, el, formatBytes, formatDuration, formatNumber, formatTime, toast } from "./api.js";

const MAX_LOG_LINES = 3000;
const VERIFY_LIMIT = 512 * 1024 * 1024;

const fill = (node, ...kids) => node.replaceChildren(...kids.filter((k) => k !== null && k !== undefined));
const seconds = (s) => (s < 60 ? `${s.toFixed(s < 10 ? 2 : 1)} s` : formatDuration(s));
const clock = (unix) => new Date(unix * 1000).toLocaleTimeString(undefined, { hour12: false });

/**
 * The streaming event log: oldest first, follows the newest line while the reader is at the bottom.
 * @param {HTMLElement} container
 * @returns {{add: (event: object) => void, size: () => number}}
 */
export function eventLog(container) {
  const count = el("span", { class: "muted log-count" }, "0 events");
  const list = el("ol", {
    class: "event-log", role: "log", "aria-live": "off", "aria-label": "Job events, oldest first", tabindex: "0",
  });
  container.append(el("div", { class: "section-head" }, el("h2", { id: "log-heading" }, "Event log"), count), list);
  let total = 0;
  const seen = new Set();
  return {
    add(event) {
      if (!event || !event.id || seen.has(event.id)) return;
      seen.add(event.id);
      const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
      const level = event.level === "warning" ? "warn" : ["info", "warn", "error"].includes(event.level) ? event.level : "info";
      list.append(el("li", { class: `log-line log-${level}`, dataset: { type: event.type || "message" } },
        el("time", { datetime: new Date(event.created_at * 1000).toISOString(), title: formatTime(event.created_at) },
          clock(event.created_at)),
        el("span", { class: "log-level" }, level),
        el("span", { class: "log-type" }, event.type || ""),
        el("span", { class: "log-msg" }, event.message)));
      while (list.childElementCount > MAX_LOG_LINES) list.firstElementChild.remove();
      total += 1;
      count.textContent = `${total} event${total === 1 ? "" : "s"}`;
      if (atBottom) list.scrollTop = list.scrollHeight;
    },
    size: () => total,
  };
}

// Cells carry their column's name: on narrow screens (job.css) each row becomes a stacked card.
function table(caption, headers, rows, empty, cls = "") {
  if (!rows.length) return el("p", { class: "muted" }, empty);
  for (const row of rows) [...row.children].forEach((cell, i) => { cell.dataset.label = headers[i]; });
  return el("div", { class: `table-wrap ${cls}` }, el("table", { class: "data" },
    el("caption", { class: "visually-hidden" }, caption),
    el("thead", null, el("tr", null, headers.map((h, i) => el("th", {
      scope: "col", class: rows[0].children[i] && rows[0].children[i].classList.contains("num") ? "num" : null,
    }, h)))),
    el("tbody", null, rows)));
}

/**
 * Fill `container` with the checkpoints table: a succeeded job's are models (their name is usable as `model`
 * for inference and for a new job, and they download); a running or paused job's are resume points.
 * @param {HTMLElement} container
 * @param {{data: object[], has_more: boolean}} page the API's checkpoint list (newest first)
 * @param {boolean} finished the job has ended (only a succeeded one keeps checkpoints, its newest
 *   `SPARSEGRAD_KEEP_FINISHED_CHECKPOINTS` as models)
 */
export function renderCheckpoints(container, page, finished = false) {
  const rows = page.data.map((c) => {
    let name = el("span", { class: "muted" }, c.resumable ? "resume point" : "—");
    let action = null;
    if (c.fine_tuned_model_checkpoint) {
      name = el("code", null, c.fine_tuned_model_checkpoint);
      const status = el("span", { class: "verify", role: "status" });
      const button = el("button", {
        type: "button", class: "btn btn-small", "aria-label": `Download the model of step ${c.step_number}`,
        dataset: { checkpoint: c.id },
      }, "Download");
      const url = `/v1/fine_tuning/jobs/${encodeURIComponent(c.fine_tuning_job_id)}/checkpoints/${encodeURIComponent(c.id)}/content`;
      button.addEventListener("click", () => download(url, `${c.fine_tuned_model_checkpoint}.tar.gz`, c.sha256, button, status));
      action = [button, " ", formatBytes(c.bytes), " ", status];
    }
    return el("tr", null,
      el("td", { class: "num" }, c.step_number),
      el("td", null, formatTime(c.created_at)),
      el("td", { class: "num" }, formatNumber(c.metrics.train_loss)),
      el("td", { class: "num" }, formatNumber(c.metrics.valid_loss)),
      el("td", { class: "num" }, formatNumber(c.metrics.trained_tokens)),
      el("td", null, name),
      el("td", null, action));
  });
  fill(container,
    el("h2", { id: "checkpoints-heading" }, "Checkpoints"),
    table("Checkpoints, newest first", ["Step", "Saved", "Train loss", "Eval loss", "Trained tokens", "Model", "Download"],
      rows, finished ? "No checkpoint kept: only a succeeded job keeps checkpoints, its newest ones, as models."
        : "No checkpoint yet.", "stack-narrow"),
    page.has_more ? el("p", { class: "muted" }, `Showing the newest ${page.data.length}.`) : null);
}

async function sha256Hex(blob) {
  if (!(globalThis.crypto && crypto.subtle) || blob.size > VERIFY_LIMIT) return null;
  const digest = await crypto.subtle.digest("SHA-256", await blob.arrayBuffer());
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** Download `url` as a file (named by the response, else `name`) and check it against `sha256`. */
async function download(url, name, sha256, button, status) {
  button.disabled = true;
  const label = button.textContent;
  button.textContent = "Downloading…";
  status.textContent = "";
  try {
    const { blob, filename } = await apiFetchBlob(url);
    const objectUrl = URL.createObjectURL(blob);
    const link = el("a", { href: objectUrl, download: filename || name, hidden: true });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(objectUrl), 60000);
    const digest = await sha256Hex(blob);
    if (digest === null) status.textContent = "downloaded";
    else status.textContent = digest === sha256 ? "✓ checksum verified" : "✗ checksum mismatch";
    status.className = `verify ${digest && digest !== sha256 ? "bad" : "ok"}`;
  } catch (exc) {
    toast(`Download failed: ${exc.message}`, "error");
  } finally {
    button.disabled = false;
    button.textContent = label;
  }
}

/**
 * Fill `container` with the artifacts table (download buttons) and, for a succeeded adapter job without
 * a merged model, the button that requests one.
 * @param {HTMLElement} container
 * @param {object[]} artifacts the API's artifact objects
 * @param {object} job
 * @param {{merging: boolean, onMerge: () => void}} merge state of a merge request made from this page
 */
export function renderArtifacts(container, artifacts, job, merge) {
  const rows = artifacts.map((a) => {
    const status = el("span", { class: "verify", role: "status" });
    const button = el("button", {
      type: "button", class: "btn btn-small", "aria-label": `Download ${a.kind} ${a.filename}`,
      dataset: { artifact: a.id, kind: a.kind },
    }, "Download");
    button.addEventListener("click", () => download(`/v1/artifacts/${encodeURIComponent(a.id)}/content`, a.filename,
      a.sha256, button, status));
    return el("tr", null,
      el("td", null, a.kind.replace("_", " ")),
      el("td", null, el("code", null, a.filename)),
      el("td", { class: "num" }, formatBytes(a.bytes)),
      el("td", null, el("code", { class: "sha", title: "SHA-256" }, a.sha256)),
      el("td", { class: "actions-cell" }, el("span", null, button, status)));
  });
  const hasMerged = artifacts.some((a) => a.kind === "merged_model");
  const hasAdapter = artifacts.some((a) => a.kind === "adapter");
  let mergeBlock = null;
  if (job.status === "succeeded" && hasAdapter && !hasMerged) {
    mergeBlock = el("p", { class: "merge-row" },
      el("button", {
        type: "button", class: "btn", id: "merge-button", disabled: merge.merging, onclick: merge.onMerge,
      }, merge.merging ? "Merging…" : "Request merged model"),
      el("span", { class: "muted" }, merge.merging
        ? " A worker is merging the adapter into the base model; the archive appears here when it is ready."
        : " The adapter merged into the base model, as one model folder (made by a worker)."));
  }
  const empty = ["succeeded", "failed", "cancelled"].includes(job.status)
    ? "This job left no artifacts." : "Artifacts appear when the job has finished.";
  fill(container, 
    el("h2", { id: "artifacts-heading" }, "Artifacts"),
    table("Artifacts of the job", ["Kind", "File", "Size", "SHA-256", "Download"], rows, empty, "stack-narrow"),
    mergeBlock);
}

/** The body of POST /v1/fine_tuning/jobs that reproduces `job` (every default filled in). */
export function jobSpec(job) {
  const hyper = { ...job.hyperparameters };
  if (job.method.type === "sparsegrad" && hyper.original_share_every === null) hyper.original_share_every = 0;
  const spec = {
    model: job.model, training_file: job.training_file, validation_file: job.validation_file,
    task: job.task, method: job.method, hyperparameters: hyper, seed: job.seed,
  };
  if (job.suffix) spec.suffix = job.suffix;
  if (job.metadata) spec.metadata = job.metadata;
  return spec;
}

/**
 * Copy `text` to the clipboard (a hidden text area where the Clipboard API is not available).
 * @param {string} text
 * @returns {Promise<boolean>} whether it was copied
 */
export async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch { /* fall back below */ }
  }
  const area = el("textarea", { class: "visually-hidden", readonly: true });
  area.value = text;
  document.body.append(area);
  area.select();
  let ok = false;
  try { ok = document.execCommand("copy"); } catch { ok = false; }
  area.remove();
  return ok;
}

/**
 * Fill `container` with the job spec as formatted JSON and a Copy button.
 * @param {HTMLElement} container
 * @param {object} job
 */
export function renderSpec(container, job) {
  const text = JSON.stringify(jobSpec(job), null, 2);
  const code = el("pre", { class: "spec-json", tabindex: "0", "aria-label": "Job spec as JSON" }, el("code", null, text));
  const button = el("button", { type: "button", class: "btn btn-small", id: "copy-spec" }, "Copy JSON");
  button.addEventListener("click", async () => {
    const ok = await copyText(text);
    toast(ok ? "Job spec copied to the clipboard." : "Could not copy: select the text and copy it by hand.",
      ok ? "success" : "error");
  });
  fill(container, 
    el("div", { class: "section-head" }, el("h2", { id: "spec-heading" }, "Job spec"), button),
    el("p", { class: "muted" }, "The request body (POST /v1/fine_tuning/jobs) that reproduces this job."),
    code);
}

const LOWER_IS_BETTER = /loss|perplexity|mse/;

function change(name, before, after) {
  if (!Number.isFinite(before) || !Number.isFinite(after)) return "";
  const d = after - before;
  const better = LOWER_IS_BETTER.test(name) ? d < 0 : d > 0;
  return el("span", { class: d === 0 ? "" : better ? "delta good" : "delta bad" }, `${d > 0 ? "+" : ""}${formatNumber(d)}`);
}

/**
 * Fill `container` with the run summary: before/after evaluation and the facts of the run. While the
 * job runs, `live` gives the evaluation before training and the latest one (from the metric points).
 * @param {HTMLElement} container
 * @param {object} job
 * @param {{before: object, latest: object, step: number}|null} [live]
 */
export function renderSummary(container, job, live = null) {
  const s = job.summary || {};
  const finished = Boolean(s.before || s.after);
  const before = (finished ? s.before : live && live.before) || {};
  const after = (finished ? s.after : live && live.latest) || {};
  const stopped = ["failed", "cancelled"].includes(job.status);
  const afterLabel = finished || !live || !live.step ? "After" : `Step ${live.step}`;
  const names = [...new Set([...Object.keys(before), ...Object.keys(after)])].filter((n) => n !== "eval_tokens")
    .sort((a, b) => (b === "eval_loss") - (a === "eval_loss") || a.localeCompare(b));
  const rows = names.map((n) => el("tr", null,
    el("th", { scope: "row" }, n.replace(/^eval_/, "").replace(/_/g, " ")),
    el("td", { class: "num" }, formatNumber(before[n])),
    el("td", { class: "num" }, formatNumber(after[n])),
    el("td", { class: "num" }, change(n, before[n], after[n]))));
  const share = s.trainable_params && s.total_params ? ` (${formatNumber((100 * s.trainable_params) / s.total_params)} %)` : "";
  const facts = [
    ["Trainable parameters", s.trainable_params !== undefined ? `${formatNumber(s.trainable_params)}${share}` : null],
    ["Total parameters", s.total_params !== undefined ? formatNumber(s.total_params) : null],
    ["Steps", s.steps !== undefined ? `${s.steps}${s.epochs ? ` (${formatNumber(s.epochs, 3)} epochs)` : ""}` : null],
    ["Training time", s.train_time_s !== undefined ? seconds(s.train_time_s) : null],
    ["Calibration time", s.calibration_time_s ? seconds(s.calibration_time_s) : null],
    ["Peak memory", s.peak_memory_mb !== undefined ? `${formatNumber(s.peak_memory_mb)} MB` : null],
    ["Device", s.device ? `${s.device}${s.precision ? `, ${s.precision}` : ""}${s.cuda_graphs && s.cuda_graphs.replays ? ", CUDA graphs" : ""}${s.allocator ? (s.allocator === "system" ? ", system malloc" : `, ${s.allocator}`) : ""}` : null],
    ["Examples", s.train_examples !== undefined ? `${s.train_examples} train, ${s.eval_examples} eval (${s.eval_source || "?"})` : null],
    ["Best", s.best && s.best.value !== null && s.best.value !== undefined
      ? `${s.best.metric} ${formatNumber(s.best.value)} at step ${s.best.step}` : null],
    ["Early stopped", s.early_stopped ? "yes" : null],
  ].filter(([, v]) => v !== null);
  fill(container, 
    el("h2", { id: "summary-heading" }, "Results"),
    names.length
      ? table("Evaluation before and after fine-tuning", ["Metric", "Before", afterLabel, "Change"], rows, "")
      : el("p", { class: "muted" }, stopped ? "This job stopped before any evaluation."
        : "Before/after evaluation appears when the job has finished."),
    names.length && !finished ? el("p", { class: "muted small" }, stopped
      ? "The job stopped before its final evaluation: shown are the evaluation before training and the latest one."
      : "Live: the evaluation before training and the latest one; the final evaluation follows training.") : null,
    facts.length ? el("dl", { class: "facts" }, facts.map(([k, v]) => [el("dt", null, k), el("dd", null, v)])) : null);
}
