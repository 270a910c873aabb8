/**
 * Jobs list: the tenant's jobs newest first, refreshed every 2 s while the tab is visible, with a status
 * filter, Next/Previous paging (`after` + `has_more`), checkboxes feeding the compare page, and the storage
 * the tenant's files, checkpoints and artifacts hold.
 * @module jobs
 */
import { apiFetch, el, formatBytes, formatDuration, formatTime, statusBadge, TERMINAL } from "./api.js";

const POLL_MS = 2000;
const PAGE_SIZE = 20;
const STATUSES = ["validating_files", "queued", "running", "paused", "cancelling", "succeeded", "failed", "cancelled"];
const COLUMNS = ["Select", "Job", "Status", "Phase", "Progress", "ETA", "Queue", "Method", "Model", "Created"];
const METHOD_NAMES = { sparsegrad: "SparseGrad", lora: "LoRA", meprop: "MeProp", full: "Full" };

/**
 * A job's method in a few words: "SparseGrad 1%", "LoRA r=8", "MeProp 5%", "Full" (+ "peft").
 * @param {{type: string, setting?: string}} method the job's `method` object
 * @returns {string}
 */
export function methodLabel(method) {
  const type = (method && method.type) || "sparsegrad";
  const params = (method && method[type]) || {};
  let text = METHOD_NAMES[type] || type;
  if ((type === "sparsegrad" || type === "meprop") && params.density !== undefined && params.density !== null) {
    text += ` ${+(params.density * 100).toPrecision(3)}%`;
  } else if (type === "lora") {
    text += params.rank ? ` r=${params.rank}` : " (auto rank)";
  }
  if (method && method.setting === "peft") text += " · peft";
  return text;
}

/**
 * The time left until `estimated_finish`, for running jobs.
 * @param {object} job
 * @returns {string}
 */
export function etaText(job) {
  if (TERMINAL.has(job.status) || !job.estimated_finish) return "—";
  const left = job.estimated_finish - Date.now() / 1000;
  return left <= 0 ? "any moment" : formatDuration(left);
}

/**
 * A labelled progress bar (native `<progress>`, plus the percentage and step in text).
 * @param {object} job
 * @returns {HTMLElement}
 */
export function progressBar(job) {
  const pct = Math.round(Math.max(0, Math.min(1, job.progress || 0)) * 100);
  const steps = job.total_steps ? `step ${job.step}/${job.total_steps}` : "";
  return el("div", { class: "progress", title: steps || null },
    el("progress", { max: 100, value: pct, "aria-label": `Progress of ${job.id}`, "aria-valuetext": `${pct}%${steps ? `, ${steps}` : ""}` }),
    el("span", { class: "pct" }, `${pct}%`));
}

/**
 * The tenant's storage in one line (`GET /v1/storage`).
 * @param {{files: {bytes: number}, checkpoints: {bytes: number}, artifacts: {bytes: number}, total_bytes: number}} usage
 * @returns {string} e.g. "Storage: 1.20 MB (files 10.0 KB · checkpoints 0 B · artifacts 1.19 MB)"
 */
export function storageText(usage) {
  const parts = ["files", "checkpoints", "artifacts"].map((kind) => `${kind} ${formatBytes(usage[kind].bytes)}`);
  return `Storage: ${formatBytes(usage.total_bytes)} (${parts.join(" · ")})`;
}

/**
 * A compact creation time: the time of day for today, else the date and minutes.
 * @param {number} unix seconds
 * @returns {string}
 */
export function shortTime(unix) {
  const date = new Date(unix * 1000);
  const today = new Date().toDateString() === date.toDateString();
  return today ? date.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" })
    : date.toLocaleString(undefined, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
}

function cells(job, selected, onToggle) {
  const box = el("input", { type: "checkbox", checked: selected.has(job.id), "aria-label": `Select ${job.id} to compare`,
    onchange: (e) => onToggle(job.id, e.target.checked) });
  return {
    Select: box,
    Job: el("a", { class: "job-link", href: `#/jobs/${encodeURIComponent(job.id)}` }, job.id),
    Status: statusBadge(job.status),
    Phase: job.status === "running" ? (job.phase || "starting") : "—",
    Progress: progressBar(job),
    ETA: etaText(job),
    Queue: job.queue_position ? `#${job.queue_position}` : "—",
    Method: methodLabel(job.method),
    Model: job.model,
    Created: el("time", { class: "nowrap", datetime: new Date(job.created_at * 1000).toISOString(), title: formatTime(job.created_at) },
      shortTime(job.created_at)),
  };
}

/**
 * Render the jobs list.
 * @param {HTMLElement} root
 * @param {URLSearchParams} query `status` preselects the filter
 * @returns {function(): void} cleanup (stops polling)
 */
export function renderJobsPage(root, query) {
  const state = { status: query.get("status") || "", cursors: [null], hasMore: false, jobs: [], error: null };
  const selected = new Set();
  const rows = new Map();
  let timer = null;
  let controller = null;
  let stopped = false;

  const filter = el("select", { id: "status-filter", onchange: () => { state.status = filter.value; state.cursors = [null]; refresh(); } },
    el("option", { value: "" }, "All statuses"),
    STATUSES.map((s) => el("option", { value: s, selected: s === state.status }, s.replace("_", " "))));
  const compareButton = el("button", { type: "button", class: "btn", disabled: true, onclick: () => {
    location.hash = `#/compare?ids=${[...selected].map(encodeURIComponent).join(",")}`;
  } }, "Compare selected");
  const live = el("span", { class: "live", "aria-live": "off" }, el("span", { class: "live-dot" }), "Live");
  const errorBox = el("div", { class: "alert alert-error", role: "alert" });
  const tbody = el("tbody");
  const empty = el("p", { class: "empty", hidden: true });
  const prev = el("button", { type: "button", class: "btn btn-small", onclick: () => { state.cursors.pop(); refresh(); } }, "← Previous");
  const next = el("button", { type: "button", class: "btn btn-small", onclick: () => {
    state.cursors.push(state.jobs[state.jobs.length - 1].id); refresh(); } }, "Next →");
  const pageLabel = el("span", { class: "muted small" });
  const storage = el("p", { class: "muted small", id: "storage-usage" });

  root.append(
    el("div", { class: "page-head" },
      el("div", null, el("h1", null, "Fine-tuning jobs"), el("p", { class: "muted" }, "Your newest jobs first; this list updates live."),
        storage),
      el("div", { class: "actions" }, el("a", { class: "btn btn-primary", href: "#/new" }, "New job"))),
    errorBox,
    el("section", { class: "card", "aria-labelledby": "jobs-caption" },
      el("div", { class: "toolbar" },
        el("div", { class: "field" }, el("label", { for: "status-filter" }, "Status"), filter),
        compareButton, live),
      el("div", { class: "table-wrap" },
        el("table", { class: "data cards", id: "jobs-table" },
          el("caption", { id: "jobs-caption", class: "visually-hidden" }, "Fine-tuning jobs"),
          el("thead", null, el("tr", null, COLUMNS.map((c) => el("th", { scope: "col", class: c === "Queue" ? "num" : null },
            c === "Select" ? el("span", { class: "visually-hidden" }, "Select") : c)))),
          tbody)),
      empty,
      el("nav", { class: "pager", "aria-label": "Pages" }, pageLabel, prev, next)));

  function toggle(id, on) {
    if (on) selected.add(id); else selected.delete(id);
    compareButton.disabled = selected.size === 0;
    compareButton.textContent = selected.size ? `Compare selected (${selected.size})` : "Compare selected";
  }

  function rowFor(job) {
    let row = rows.get(job.id);
    if (!row) {
      const tds = {};
      const tr = el("tr", { dataset: { jobId: job.id } }, COLUMNS.map((c) => {
        tds[c] = el("td", { "data-label": c, class: c === "Queue" ? "num" : null });
        return tds[c];
      }));
      row = { tr, tds, signature: {} };
      rows.set(job.id, row);
    }
    const content = cells(job, selected, toggle);
    for (const column of COLUMNS) {
      const value = content[column];
      const signature = column === "Select" ? String(selected.has(job.id)) : (value instanceof Node ? value.outerHTML : value);
      if (row.signature[column] === signature) continue;  // unchanged: keep the node (and any focus in it)
      row.signature[column] = signature;
      row.tds[column].replaceChildren(value);
      row.tds[column].classList.toggle("is-empty", value === "—");  // hidden in the phone layout
    }
    return row.tr;
  }

  function draw() {
    const wanted = state.jobs.map(rowFor);
    const current = [...tbody.children];
    if (wanted.length !== current.length || wanted.some((tr, i) => tr !== current[i])) tbody.replaceChildren(...wanted);
    for (const id of rows.keys()) if (!state.jobs.some((j) => j.id === id)) rows.delete(id);
    empty.hidden = state.jobs.length > 0;
    empty.replaceChildren(state.status ? `No ${state.status.replace("_", " ")} jobs.`
      : el("span", null, "No jobs yet. ", el("a", { href: "#/new" }, "Create your first fine-tuning job"), "."));
    const page = state.cursors.length;
    prev.disabled = page <= 1;
    next.disabled = !state.hasMore || state.jobs.length === 0;
    pageLabel.textContent = `Page ${page}`;
  }

  async function refresh() {
    if (stopped) return;
    clearTimeout(timer);
    if (controller) controller.abort();
    controller = new AbortController();
    const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
    const after = state.cursors[state.cursors.length - 1];
    if (after) params.set("after", after);
    if (state.status) params.set("status", state.status);
    try {
      const page = await apiFetch(`/v1/fine_tuning/jobs?${params}`, { signal: controller.signal });
      state.jobs = page.data;
      state.hasMore = page.has_more;
      errorBox.textContent = "";
      live.lastChild.textContent = "Live";
      live.firstChild.classList.remove("off");
      draw();
      showStorage(controller.signal);
    } catch (exc) {
      if (exc && exc.name === "AbortError") return;
      if (exc && exc.code === "invalid_cursor") { state.cursors = [null]; }  // the cursor job vanished
      errorBox.textContent = `Could not load the jobs: ${exc.message}`;
      live.lastChild.textContent = "Reconnecting…";
      live.firstChild.classList.add("off");
    }
    schedule();
  }

  async function showStorage(signal) {
    try {
      storage.textContent = storageText(await apiFetch("/v1/storage", { signal }));
    } catch { /* the figure stays until the next refresh; the jobs list reports outages */ }
  }

  function schedule() {
    clearTimeout(timer);
    if (!stopped && document.visibilityState === "visible") timer = setTimeout(refresh, POLL_MS);
  }

  const onVisibility = () => { if (document.visibilityState === "visible") refresh(); else clearTimeout(timer); };
  document.addEventListener("visibilitychange", onVisibility);
  refresh();

  return () => {
    stopped = true;
    clearTimeout(timer);
    if (controller) controller.abort();
    document.removeEventListener("visibilitychange", onVisibility);
  };
}
