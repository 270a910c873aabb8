/**
 * The playground of a succeeded job's page: try the fine-tuned model (or one of its checkpoints) through the
 * inference routes. A decoder gets a chat panel answering with the fine-tuned model and the model the job started
 * from side by side (the same messages and sampling, both streamed from `POST /v1/chat/completions`); an encoder
 * gets a predict panel (`POST /v1/predict`: label, score and a bar per class). Under each panel, the exact request
 * as Python and as curl.
 * @module playground
 */
import { ApiError, apiFetch, apiResponse, el, formatNumber, sseEvents, toast } from "./api.js";
import { copyText } from "./job_panels.js";
import { curlCommand, httpxPredictSnippet, openaiChatSnippet } from "./playground_snippets.js";

const DEFAULTS = { temperature: "0.7", max_tokens: "128", top_p: "1", seed: "", stop: "" };

function ensureStyles() {
  if (document.querySelector("link[data-playground-css]")) return;
  const link = el("link", { rel: "stylesheet", href: new URL("./playground.css", import.meta.url).href });
  link.dataset.playgroundCss = "";
  document.head.append(link);
}

const apiBase = () => `${location.origin}/v1`;

function field(label, control, hint = null) {
  return el("div", { class: "field" }, el("label", { for: control.id }, label), control,
    hint ? el("p", { class: "hint" }, hint) : null);
}

/** The request as code: Python and curl on two tabs, and a button that copies the one shown. */
function snippetBlock(id) {
  const kinds = { python: "Python", curl: "curl" };
  const codes = {}, tabs = {}, panes = {};
  let shown = "python";
  const select = (kind) => {
    shown = kind;
    for (const k of Object.keys(kinds)) { tabs[k].setAttribute("aria-selected", String(k === kind)); panes[k].hidden = k !== kind; }
  };
  for (const [kind, label] of Object.entries(kinds)) {
    codes[kind] = el("code");
    tabs[kind] = el("button", { type: "button", role: "tab", class: "pg-tab", id: `${id}-${kind}-tab`,
      "aria-controls": `${id}-${kind}`, onclick: () => select(kind) }, label);
    panes[kind] = el("pre", { class: "spec-json", id: `${id}-${kind}`, role: "tabpanel", tabindex: "0",
      "aria-labelledby": `${id}-${kind}-tab`, dataset: { snippet: kind } }, codes[kind]);
  }
  select(shown);
  const copy = el("button", { type: "button", class: "btn btn-small", onclick: async () => {
    const ok = await copyText(codes[shown].textContent);
    toast(ok ? `${kinds[shown]} copied to the clipboard.` : "Could not copy: select the text and copy it by hand.",
      ok ? "success" : "error");
  } }, "Copy");
  const block = el("section", { class: "pg-snippets", id, hidden: true, "aria-label": "This request in your code" },
    el("div", { class: "section-head" }, el("h3", null, "This request in your code"),
      el("div", { class: "pg-tabs" }, el("div", { role: "tablist", "aria-label": "Language" }, tabs.python, tabs.curl), copy)),
    panes.python, panes.curl);
  return {
    block,
    show(pythonText, curlText) { codes.python.textContent = pythonText; codes.curl.textContent = curlText; block.hidden = false; },
  };
}

/** The model picker: the final fine-tuned model, then each checkpoint kept as a model. */
function modelPicker(job, checkpoints) {
  const names = [job.fine_tuned_model, ...checkpoints.map((c) => c.fine_tuned_model_checkpoint)
    .filter((n) => n && n !== job.fine_tuned_model)];
  const select = el("select", { id: "pg-model" }, names.map((name, i) => el("option", { value: name },
    i === 0 ? `${name} (final)` : name)));
  return select;
}

// ------------------------------------------------------------------------------------------------ chat
/** One column of the chat panel: a model, its conversation, the answer streaming in, its usage or error. */
function chatColumn(role, title, model) {
  const transcript = el("ol", { class: "pg-transcript", "aria-live": "polite", "aria-label": `${title}: conversation` });
  const meta = el("p", { class: "pg-meta muted small", role: "status" });
  const error = el("p", { class: "alert alert-error", role: "alert" });
  const modelName = el("code", null, model);
  const node = el("section", { class: "pg-column", dataset: { column: role } },
    el("h3", null, title, " ", modelName), transcript, meta, error);
  const column = { node, model, history: [], busy: false };
  column.setModel = (name) => { column.model = name; modelName.textContent = name; };
  column.clear = () => { column.history = []; transcript.replaceChildren(); meta.textContent = ""; error.textContent = ""; };

  /** Stream one answer to `messages`; resolves with its text when it has ended (done or stopped), null on an error. */
  column.ask = async (messages, params, signal) => {
    const body = { model: column.model, messages, ...params, stream: true, stream_options: { include_usage: true } };
    const question = messages[messages.length - 1].content;
    const answer = el("div", { class: "pg-text" });
    const bubble = el("li", { class: "pg-answer", "aria-busy": "true" }, answer);
    transcript.append(el("li", { class: "pg-question" }, question), bubble);
    meta.textContent = "Waiting for the first token…";
    error.textContent = "";
    const started = performance.now();
    let text = "", finish = null, usage = null, failed = false;
    try {
      const response = await apiResponse("/v1/chat/completions", { method: "POST", body, signal,
        headers: { Accept: "text/event-stream" } });
      for await (const { data } of sseEvents(response)) {
        if (data === "[DONE]") break;
        if (data && data.error) throw new ApiError(response.status, data.error);
        const choice = data.choices && data.choices[0];
        if (choice && choice.delta && choice.delta.content) {
          text += choice.delta.content;
          answer.append(choice.delta.content);
          meta.textContent = "Streaming…";
        }
        if (choice && choice.finish_reason) finish = choice.finish_reason;
        if (data.usage) usage = data.usage;
      }
      const seconds = (performance.now() - started) / 1000;
      meta.replaceChildren(`finish_reason: ${finish ?? "—"}`, usage
        ? ` · ${usage.prompt_tokens} prompt + ${usage.completion_tokens} completion tokens` : "",
        ` · ${formatNumber(seconds, 3)} s`);
      bubble.dataset.finishReason = finish || "";
    } catch (exc) {
      if (exc && exc.name === "AbortError") {
        meta.textContent = "Stopped.";
        bubble.dataset.finishReason = "stopped";
      } else {
        error.textContent = exc instanceof ApiError ? exc.message : `The request failed: ${exc.message}`;
        meta.textContent = "";
        bubble.dataset.finishReason = "error";
        failed = true;
      }
    } finally {
      bubble.setAttribute("aria-busy", "false");
    }
    if (!text) answer.append(el("span", { class: "muted" }, failed ? "(no answer)" : "(no text)"));
    return failed ? null : text;
  };
  return column;
}

function numberInput(id, value, attrs) {
  return el("input", { type: "number", id, value, inputmode: "decimal", ...attrs });
}

/** Sampling fields as the API takes them: blank inputs left out (the API's defaults apply). */
function sampling(inputs) {
  const out = {};
  for (const key of ["temperature", "max_tokens", "top_p", "seed"]) {
    const raw = inputs[key].value.trim();
    if (raw !== "") out[key] = Number(raw);
  }
  const stops = inputs.stop.value.split("\n").filter((s) => s !== "")
    .map((s) => s.replace(/\\n/g, "\n").replace(/\\t/g, "\t"));
  if (stops.length) out.stop = stops;
  return out;
}

function chatPanel(container, job, picker, signal) {
  const started = (job.lineage || []).length > 1;
  const tuned = chatColumn("fine-tuned", "Fine-tuned", picker.value);
  const base = chatColumn("base", started ? "Started from" : "Base model", job.model);
  const columns = [tuned, base];
  const system = el("textarea", { id: "pg-system", rows: 2, placeholder: "Optional: how the assistant should behave" });
  const message = el("textarea", { id: "pg-message", rows: 3, placeholder: "Ask something…", required: true });
  const inputs = {
    temperature: numberInput("pg-temperature", DEFAULTS.temperature, { min: 0, step: 0.1 }),
    max_tokens: numberInput("pg-max-tokens", DEFAULTS.max_tokens, { min: 1, step: 1, inputmode: "numeric" }),
    top_p: numberInput("pg-top-p", DEFAULTS.top_p, { min: 0, step: 0.05 }),
    seed: numberInput("pg-seed", DEFAULTS.seed, { min: 0, step: 1, inputmode: "numeric", placeholder: "random" }),
    stop: el("textarea", { id: "pg-stop", rows: 1, value: DEFAULTS.stop, placeholder: "\\n\\n" }),
  };
  const send = el("button", { type: "submit", class: "btn btn-primary", id: "pg-send" }, "Send");
  const stop = el("button", { type: "button", class: "btn", id: "pg-stop-button", disabled: true }, "Stop");
  const clear = el("button", { type: "button", class: "btn btn-ghost", id: "pg-clear" }, "New chat");
  const snippets = snippetBlock("pg-chat-snippets");
  let running = null;

  const form = el("form", { class: "pg-form", novalidate: true },
    field("System prompt", system),
    field("Message", message),
    el("div", { class: "fields pg-sampling" },
      field("Temperature", inputs.temperature), field("Max tokens", inputs.max_tokens), field("Top p", inputs.top_p),
      field("Seed", inputs.seed, "Blank: a new random seed each time, the same for both models."),
      field("Stop sequences", inputs.stop, "One per line; \\n stands for a newline.")),
    el("div", { class: "form-actions" }, send, stop, clear));
  const note = el("p", { class: "muted small" }, `Both columns get the same messages, sampling and seed: the fine-tuned `
    + `model and ${started ? "the model this job continued from" : "its base model"}, `, el("code", null, job.model), ".");

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = message.value.trim();
    if (!text) { message.focus(); message.setAttribute("aria-invalid", "true"); return; }
    message.removeAttribute("aria-invalid");
    const params = sampling(inputs);
    if (params.seed === undefined) params.seed = Math.floor(Math.random() * 2 ** 31);
    running = new AbortController();
    const stopAll = () => running && running.abort();
    signal.addEventListener("abort", stopAll, { once: true });
    send.disabled = true; stop.disabled = false; clear.disabled = true; picker.disabled = true;
    const user = { role: "user", content: text };
    const prefix = system.value.trim() ? [{ role: "system", content: system.value.trim() }] : [];
    const conversations = columns.map((c) => [...prefix, ...c.history, user]);
    const body = { model: tuned.model, messages: conversations[0], ...params, stream: true,
      stream_options: { include_usage: true } };
    snippets.show(openaiChatSnippet(apiBase(), body), curlCommand(`${apiBase()}/chat/completions`, body));
    message.value = "";
    const answers = await Promise.all(columns.map((c, i) => c.ask(conversations[i], params, running.signal)));
    columns.forEach((c, i) => { if (answers[i] !== null) c.history.push(user, { role: "assistant", content: answers[i] }); });
    signal.removeEventListener("abort", stopAll);
    running = null;
    send.disabled = false; stop.disabled = true; clear.disabled = false; picker.disabled = false;
    container.dataset.state = "answered";
  });
  stop.addEventListener("click", () => { if (running) running.abort(); });
  clear.addEventListener("click", () => { columns.forEach((c) => c.clear()); message.focus(); });
  picker.addEventListener("change", () => { tuned.setModel(picker.value); columns.forEach((c) => c.clear()); });
  return [note, form, el("div", { class: "pg-columns" }, tuned.node, base.node), snippets.block];
}

// --------------------------------------------------------------------------------------------- predict
function probabilityBars(probabilities, label) {
  return el("ul", { class: "pg-bars" }, Object.entries(probabilities).map(([name, p]) => {
    const pct = Math.max(0, Math.min(1, p)) * 100;
    return el("li", { class: name === label ? "pg-bar top" : "pg-bar", dataset: { class: name, probability: String(p) } },
      el("span", { class: "pg-bar-name" }, name),
      el("span", { class: "pg-bar-track", role: "img", "aria-label": `${name}: ${formatNumber(pct, 3)} %` },
        el("span", { class: "pg-bar-fill", style: { width: `${pct}%` } })),
      el("span", { class: "pg-bar-value" }, formatNumber(p, 3)));
  }));
}

function predictionsTable(body, answer) {
  const pairs = Boolean(body.text_pairs);
  const headers = ["#", "Text", ...(pairs ? ["Second text"] : []), "Label", "Score", "Probabilities"];
  const rows = answer.data.map((p) => el("tr", { dataset: { index: String(p.index) } },
    el("td", { class: "num" }, p.index),
    el("td", null, body.texts[p.index]),
    pairs ? el("td", null, body.text_pairs[p.index]) : null,
    el("td", { class: "pg-label" }, p.label === null ? el("span", { class: "muted" }, "— (regression)") : el("strong", null, p.label)),
    el("td", { class: "num pg-score", dataset: { score: String(p.score) } }, formatNumber(p.score, 4)),
    el("td", null, p.probabilities ? probabilityBars(p.probabilities, p.label) : null)));
  return el("div", { class: "table-wrap" }, el("table", { class: "data pg-predictions" },
    el("caption", { class: "visually-hidden" }, "Predictions"),
    el("thead", null, el("tr", null, headers.map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", null, rows)));
}

function predictPanel(container, job, picker, signal) {
  const lines = (area) => area.value.split("\n").map((s) => s.trim()).filter(Boolean);
  const texts = el("textarea", { id: "pg-texts", rows: 4, placeholder: "One text a line" });
  const pairs = el("textarea", { id: "pg-text-pairs", rows: 4, placeholder: "One second text a line, as many as texts" });
  const pairToggle = el("input", { type: "checkbox", id: "pg-pairs", checked: Boolean(job.task.text_pair_column) });
  const pairField = field("Second texts (pair tasks)", pairs);
  pairField.hidden = !pairToggle.checked;
  pairToggle.addEventListener("change", () => { pairField.hidden = !pairToggle.checked; });
  const button = el("button", { type: "submit", class: "btn btn-primary", id: "pg-predict" }, "Predict");
  const error = el("p", { class: "alert alert-error", role: "alert", id: "pg-predict-error" });
  const results = el("div", { class: "pg-results", "aria-live": "polite" });
  const snippets = snippetBlock("pg-predict-snippets");
  const form = el("form", { class: "pg-form", novalidate: true },
    el("div", { class: "grid-2" }, field("Texts", texts), pairField),
    el("label", { class: "choice" }, pairToggle, "Sentence pairs (a second text per text)"),
    el("div", { class: "form-actions" }, button));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { model: picker.value, texts: lines(texts) };
    if (!body.texts.length) { texts.focus(); texts.setAttribute("aria-invalid", "true"); return; }
    texts.removeAttribute("aria-invalid");
    if (pairToggle.checked) body.text_pairs = lines(pairs);
    snippets.show(httpxPredictSnippet(apiBase(), body), curlCommand(`${apiBase()}/predict`, body));
    button.disabled = true;
    error.textContent = "";
    results.replaceChildren(el("p", { class: "muted" }, "Predicting…"));
    try {
      const answer = await apiFetch("/v1/predict", { method: "POST", body, signal });
      results.replaceChildren(predictionsTable(body, answer),
        el("p", { class: "muted small pg-meta" }, `${answer.usage.prompt_tokens} tokens · model `, el("code", null, answer.model)));
      container.dataset.state = "answered";
    } catch (exc) {
      if (signal.aborted) return;
      results.replaceChildren();
      error.textContent = exc instanceof ApiError ? exc.message : `The request failed: ${exc.message}`;
    } finally {
      button.disabled = false;
    }
  });
  const note = el("p", { class: "muted small", id: "pg-base-note" }, "The base model ", el("code", null, job.model),
    " has no trained head for this task: its predictions would come from random weights, so only the fine-tuned "
    + "model is shown.");
  return [note, form, error, results, snippets.block];
}

// ----------------------------------------------------------------------------------------------- panel
/**
 * Fill `container` with the playground of a succeeded `job` (nothing when its model was deleted).
 * @param {HTMLElement} container
 * @param {object} job a succeeded job with a `fine_tuned_model`
 * @param {{signal: AbortSignal}} options aborting it stops the requests in flight
 */
export async function renderPlayground(container, job, { signal }) {
  ensureStyles();
  const modelPath = `/v1/models/${encodeURIComponent(job.fine_tuned_model)}`;
  let checkpoints;
  try {
    await apiFetch(modelPath, { signal });
    checkpoints = (await apiFetch(`/v1/fine_tuning/jobs/${encodeURIComponent(job.id)}/checkpoints?limit=100`,
      { signal })).data;
  } catch (exc) {
    if (signal.aborted) return;
    container.hidden = true;
    if (!(exc instanceof ApiError && exc.status === 404)) toast(`The playground could not load: ${exc.message}`, "error");
    return;
  }
  const picker = modelPicker(job, checkpoints);
  const decoder = job.task.type === "causal_lm";
  const body = decoder ? chatPanel(container, job, picker, signal) : predictPanel(container, job, picker, signal);
  container.replaceChildren(
    el("div", { class: "section-head" }, el("h2", { id: "playground-heading" }, "Playground"),
      el("div", { class: "pg-picker" }, el("label", { for: picker.id }, "Model"), picker)),
    ...body);
  container.dataset.mode = decoder ? "chat" : "predict";
  container.hidden = false;
}
