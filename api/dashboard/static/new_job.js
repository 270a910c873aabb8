/**
 * New job form: upload the dataset(s) (validated at once by `POST /v1/files`, problems listed per line),
 * pick a base model, task and columns, a method with its parameters and the hyperparameters, then create
 * the job with an `Idempotency-Key` (one per form fill, so a double click makes one job). "Compare methods"
 * creates one job per ticked method from the same spec and opens the compare page.
 * @module new_job
 */
import { apiFetch, el, formatBytes, toast } from "./api.js";

/** Display names of the methods; which methods exist, their order and every default value come from
 * `GET /v1/fine_tuning/defaults` (the job contract), filled in once it answers. */
const METHODS = [
  { type: "sparsegrad", label: "SparseGrad", short: "SparseGrad" },
  { type: "lora", label: "LoRA", short: "LoRA" },
  { type: "meprop", label: "MeProp", short: "MeProp" },
  { type: "full", label: "Full fine-tuning", short: "Full" },
];
/** Hyperparameter inputs: [name, label, placeholder when the default is none, hint]. */
const HYPER = [
  ["n_epochs", "Epochs", "", "Passes over the data (ignored with max steps)."],
  ["batch_size", "Batch size", "", "Rows per micro-batch."],
  ["learning_rate", "Learning rate", "", "Peak learning rate. Empty: the default of the method and setting (shown)."],
  ["max_seq_length", "Max sequence length", "", "Tokens per row after truncation."],
  ["max_steps", "Max steps", "none (use epochs)", "Overrides epochs when set."],
  ["checkpoint_every", "Checkpoint every", "server default", "Steps between resumable checkpoints."],
];
const MORE = [
  ["warmup_ratio", "Warmup ratio", "", "Share of steps, in [0, 1)."],
  ["eval_every", "Evaluate every", "before and after only", "Steps between evaluations."],
];

/** @returns {string} a random UUID (also outside secure contexts, where crypto.randomUUID is missing). */
export function newIdempotencyKey() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40; b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/**
 * One list item per problem of a refused file or request (`error.details`: line, field, message or param).
 * @param {string} headline
 * @param {Array<object>|null} details
 * @returns {HTMLElement} an element with role="alert"
 */
export function issuesAlert(headline, details) {
  const items = (details || []).map((d) => {
    const where = [d.line !== undefined && d.line !== null ? `Line ${d.line}` : null,
      d.field ? `field '${d.field}'` : (d.param || null)].filter(Boolean).join(", ");
    return el("li", null, where ? el("span", { class: "where" }, `${where}: `) : null, d.message);
  });
  return el("div", { class: "alert alert-error", role: "alert" }, el("strong", null, headline),
    items.length ? el("ul", { class: "issues" }, items) : null);
}

/**
 * Render the new job form.
 * @param {HTMLElement} root
 * @returns {function(): void} cleanup
 */
export function renderNewJobPage(root) {
  let formKey = newIdempotencyKey();
  let busy = false;
  const controller = new AbortController();
  const byParam = new Map();   // API param → {input, error}
  const inputs = {};            // id → input
  const uploads = { train: { file: null, promise: null, gen: 0 }, valid: { file: null, promise: null, gen: 0 } };

  function field(id, label, input, { hint, params = [], cls = "field", after = null } = {}) {
    const error = el("p", { class: "field-error", id: `${id}-error`, "aria-live": "polite" });
    input.id = id;
    input.name = input.name || id;
    input.setAttribute("aria-describedby", [hint ? `${id}-hint` : null, `${id}-error`].filter(Boolean).join(" "));
    inputs[id] = input;
    for (const p of params) byParam.set(p, { input, error });
    return el("div", { class: cls }, el("label", { for: id }, label), input,
      hint ? el("p", { class: "hint", id: `${id}-hint` }, hint) : null, error, after);
  }
  const text = (attrs = {}) => el("input", { type: "text", autocomplete: "off", ...attrs });
  const num = (value, attrs = {}) => el("input", { type: "number", step: "any", value, ...attrs });
  const select = (options, value) => el("select", null, options.map(([v, t]) => el("option", { value: v, selected: v === value }, t)));

  // ---------------------------------------------------------------- data
  const taskType = select([["", "Auto (from the file)"], ["classification", "Classification"], ["regression", "Regression"], ["causal_lm", "Causal LM (chat)"]], "");
  const columns = [["text-column", "Text column", "text", "text_column"], ["text-pair-column", "Text pair column", "none", "text_pair_column"],
    ["label-column", "Label column", "label", "label_column"], ["messages-column", "Messages column", "messages", "messages_column"],
    ["prompt-column", "Prompt column", "prompt", "prompt_column"], ["completion-column", "Completion column", "completion", "completion_column"]];
  const hasHeader = el("input", { type: "checkbox", id: "has-header", checked: true });
  const fileInput = (id) => el("input", { type: "file", accept: ".jsonl,.json,.csv,.tsv,.txt" });
  const trainInput = fileInput(), validInput = fileInput();
  const trainStatus = el("div", { class: "upload-status", id: "train-file-status" });
  const validStatus = el("div", { class: "upload-status", id: "valid-file-status" });
  const dataSet = el("fieldset", null, el("legend", null, "Data"),
    el("div", { class: "files" },
      field("train-file", "Training file", trainInput, { hint: "JSONL, CSV or TSV; checked as soon as you choose it.", params: ["training_file"], after: trainStatus }),
      field("valid-file", "Validation file (optional)", validInput, { hint: "Default: 10% of the training file is held out.", params: ["validation_file"], after: validStatus })),
    el("div", { class: "fields" },
      field("task-type", "Task type", taskType, { params: ["task", "task.type"] }),
      columns.map(([id, label, placeholder, key]) =>
        field(id, label, text({ placeholder }), { params: [key, `task.${key}`] }))),
    el("label", { class: "choice", for: "has-header" }, hasHeader, "CSV/TSV files have a header row"),
    el("p", { class: "hint" }, "Columns: a JSONL key or CSV/TSV header, or a 0-based index. Empty means the default shown."));
  byParam.set("task.has_header", { input: hasHeader, error: byParam.get("task.type").error });

  // ---------------------------------------------------------------- model
  const modelSelect = el("select", { required: true }, el("option", { value: "" }, "Loading models…"));
  const modelDesc = el("p", { class: "hint model-desc", id: "model-hint", "aria-live": "polite" });
  const modelSet = el("fieldset", null, el("legend", null, "Base model"),
    field("model", "Base model", modelSelect, { params: ["model"], cls: "field narrow" }));
  modelSelect.setAttribute("aria-describedby", "model-hint model-error");
  modelSet.querySelector(".field").insertBefore(modelDesc, modelSet.querySelector("#model-error"));

  // ---------------------------------------------------------------- method
  const radios = METHODS.map((m, i) => el("input", { type: "radio", name: "method", value: m.type, checked: i === 0, id: `method-${m.type}` }));
  const compareBoxes = METHODS.map((m) => el("input", { type: "checkbox", value: m.type, id: `compare-${m.type}` }));
  const setting = select([], "");
  const panels = {
    sparsegrad: el("div", { class: "method-params fields", "data-method": "sparsegrad" },
      field("sg-density", "SparseGrad density", num("", { min: "0", max: "1" }), { hint: "Share of rotated gradient entries kept, (0, 1].", params: ["method.sparsegrad.density"] }),
      field("sg-calibration", "Calibration steps", num("", { min: "1", step: "1" }), { hint: "Backward passes that define the bases.", params: ["method.sparsegrad.calibration_steps"] }),
      field("sg-selection", "Selection", select([], ""), { hint: "Dynamic: fresh top-k every step (the paper's exact method); block: top-k inside a leading block of the bases (about half the step time; as good as dynamic on SST-2 and MRPC in the paper setting, 0.8 points below it on SST-2 in the PEFT-pure one; also exported as a PEFT LoRA); fixed: the calibration-time support.", params: ["method.sparsegrad.selection"] }),
      field("sg-recalibrate", "Re-calibrate every", num("", { min: "0", step: "1", placeholder: "default" }), { hint: "Dynamic selection: new bases every N steps (the delta is kept; the sparse optimizer's moments restart). 0: never. Empty: the default.", params: ["method.sparsegrad.recalibrate_every"] })),
    lora: el("div", { class: "method-params fields", "data-method": "lora" },
      field("lora-rank", "LoRA rank", num("", { min: "1", step: "1", placeholder: "auto" }), { hint: "Auto: as many MLP parameters as SparseGrad.", params: ["method.lora.rank"] }),
      field("lora-alpha", "LoRA alpha", num("", { min: "0", placeholder: "2 × rank" }), { params: ["method.lora.alpha"] })),
    meprop: el("div", { class: "method-params fields", "data-method": "meprop" },
      field("meprop-density", "MeProp density", num("", { min: "0", max: "1" }), { hint: "Share of output gradient entries kept.", params: ["method.meprop.density"] })),
  };
  const settingField = field("setting", "Setting", setting, { hint: "paper: every non-MLP parameter also trains; peft: only the task head besides the method.", params: ["method.setting"] });
  const methodError = el("p", { class: "field-error", id: "method-error", "aria-live": "polite" });
  byParam.set("method.type", { input: radios[0], error: methodError });
  const methodSet = el("fieldset", null, el("legend", null, "Method"),
    el("div", { class: "choices", role: "radiogroup", "aria-label": "Method" },
      METHODS.map((m, i) => el("label", { class: "choice", for: radios[i].id }, radios[i], m.label))),
    methodError, panels.sparsegrad, panels.lora, panels.meprop, el("div", { class: "narrow" }, settingField));
  const chosen = () => radios.find((r) => r.checked).value;
  const ticked = () => compareBoxes.filter((b) => b.checked).map((b) => b.value);
  let learningRates = null;  // the contract's default learning rate per method and setting, once loaded
  function showPanels() {
    const visible = new Set([chosen(), ...ticked()]);
    for (const [type, panel] of Object.entries(panels)) panel.hidden = !visible.has(type);
    settingField.hidden = [...visible].every((t) => t === "full");
    const lr = inputs["hp-learning_rate"];
    if (lr && learningRates) {  // left empty, each job gets its own method's default: say which
      const shown = new Set([...visible].map((t) => learningRates[t][setting.value]));
      lr.placeholder = `default ${[...shown].join(" / ")}`;
    }
  }
  for (const input of [...radios, ...compareBoxes, setting]) input.addEventListener("change", showPanels);
  showPanels();

  // ---------------------------------------------------------------- hyperparameters
  const hyperField = ([name, label, placeholder, hint]) =>
    field(`hp-${name}`, label, num("", { placeholder: placeholder || null, min: "0" }), { hint, params: [`hyperparameters.${name}`] });
  const scheduler = select([["constant", "constant"], ["linear", "linear"], ["cosine", "cosine"]], "");
  const mergeBox = el("input", { type: "checkbox", id: "merge-model" });
  const hyperSet = el("fieldset", null, el("legend", null, "Hyperparameters"),
    el("div", { class: "fields" }, HYPER.map(hyperField)),
    el("details", { class: "more" }, el("summary", null, "More options"),
      el("div", { class: "fields" }, MORE.map(hyperField),
        field("hp-lr_scheduler", "LR schedule", scheduler, { params: ["hyperparameters.lr_scheduler"] }),
        field("seed", "Seed", num("", { min: "0", step: "1" }), { params: ["seed"] }),
        field("suffix", "Model name suffix", text({ placeholder: "none", maxlength: "64" }), { params: ["suffix"] }),
        field("validation-split", "Validation split", num("", { min: "0", max: "0.5" }), { hint: "Held out when no validation file is given.", params: ["validation_split"] })),
      el("label", { class: "choice", for: "merge-model" }, mergeBox, "Also produce a merged model")));

  // ---------------------------------------------------------------- actions
  const formError = el("div", { id: "form-error", role: "alert" });
  const submitButton = el("button", { type: "submit", class: "btn btn-primary", id: "submit-job" }, "Create job");
  const compareButton = el("button", { type: "button", class: "btn", id: "compare-methods" }, "Compare methods");
  const compareSet = el("fieldset", null, el("legend", null, "Compare methods"),
    el("p", { class: "hint" }, "Create one job per ticked method from this same spec, then compare them side by side."),
    el("div", { class: "choices" }, METHODS.map((m, i) => el("label", { class: "choice", for: compareBoxes[i].id }, compareBoxes[i], m.short))),
    el("div", { class: "form-actions" }, compareButton));
  const form = el("form", { novalidate: true, id: "new-job-form" },
    formError,
    el("div", { class: "card" }, dataSet, modelSet),
    el("div", { class: "card" }, methodSet, hyperSet),
    el("div", { class: "card" }, el("div", { class: "form-actions" }, submitButton,
      el("span", { class: "muted small" }, "One job per form: submitting twice does not create a second one."))),
    el("div", { class: "card" }, compareSet));
  root.append(el("div", { class: "page-head" }, el("div", null, el("h1", null, "New fine-tuning job"),
    el("p", { class: "muted" }, "Upload a dataset, choose a base model and a method; defaults are filled in."))), form);

  // ---------------------------------------------------------------- models
  apiFetch("/v1/models", { signal: controller.signal }).then((page) => {
    const bases = page.data.filter((m) => !m.parent); // fine-tuned models are listed too; jobs start from a base
    modelSelect.replaceChildren(...bases.map((m) => el("option", { value: m.id }, `${m.id} (${m.architecture})`)));
    const describe = () => {
      const m = bases.find((x) => x.id === modelSelect.value);
      modelDesc.textContent = m ? `${m.description} Tasks: ${m.tasks.join(", ")}.` : "";
    };
    modelSelect.addEventListener("change", describe);
    describe();
  }).catch((exc) => { if (exc.name !== "AbortError") setError(byParam.get("model"), `Could not load the models: ${exc.message}`); });

  // ---------------------------------------------------------------- defaults (the job contract's)
  apiFetch("/v1/fine_tuning/defaults", { signal: controller.signal }).then((d) => {
    const setValue = (id, value) => { if (value !== null && value !== undefined) inputs[id].value = String(value); };
    const options = (input, values, chosen) => {
      input.replaceChildren(...values.map((v) => el("option", { value: v }, v)));
      input.value = chosen;  // the contract's default, wherever it is in the list
    };
    radios.forEach((r, i) => {
      r.closest("label").hidden = compareBoxes[i].closest("label").hidden = !d.methods.includes(r.value);
      r.checked = r.value === d.methods[0];
    });
    radios[METHODS.findIndex((m) => m.type === d.methods[0])].closest("label").append(" (default)");
    options(setting, d.settings, d.method[d.methods[0]].setting);
    options(inputs["sg-selection"], d.selections, d.method.sparsegrad.selection);
    setValue("sg-density", d.method.sparsegrad.density);
    setValue("sg-calibration", d.method.sparsegrad.calibration_steps);
    // left empty so that the server resolves it for the chosen selection (only dynamic selection re-calibrates)
    inputs["sg-recalibrate"].placeholder = `${d.method.sparsegrad.recalibrate_every} with dynamic selection, else never`;
    setValue("meprop-density", d.method.meprop.density);
    for (const [name] of [...HYPER, ...MORE]) if (name !== "checkpoint_every" && name !== "learning_rate") setValue(`hp-${name}`, d.hyperparameters[name]);
    learningRates = d.learning_rates;
    scheduler.value = d.hyperparameters.lr_scheduler;
    setValue("seed", d.seed);
    setValue("validation-split", d.validation_split);
    dataSet.querySelector("#valid-file-hint").textContent = `Default: ${Math.round(d.validation_split * 1000) / 10}% of the training file ` +
      `is held out when that is at least ${d.min_eval_examples} examples and leaves as many to train on; ` +
      "a smaller file trains without evaluation.";
    showPanels();
  }).catch((exc) => { if (exc.name !== "AbortError") formError.replaceChildren(issuesAlert(`Could not load the defaults: ${exc.message}`, null)); });

  // ---------------------------------------------------------------- uploads
  function mappingForm(fd) {
    if (taskType.value) fd.append("task", taskType.value);
    for (const [id, , , key] of columns) if (inputs[id].value.trim()) fd.append(key, inputs[id].value.trim());
    if (!hasHeader.checked) fd.append("has_header", "false");
  }
  function upload(which) {
    const slot = uploads[which];
    const input = which === "train" ? trainInput : validInput;
    const status = which === "train" ? trainStatus : validStatus;
    const file = input.files[0] || null;
    const gen = ++slot.gen;
    slot.file = null;
    input.removeAttribute("aria-invalid");
    if (!file) { status.replaceChildren(); slot.promise = null; return null; }
    status.replaceChildren(el("span", { class: "muted" }, el("span", { class: "spinner", "aria-hidden": "true" }), ` Uploading ${file.name} (${formatBytes(file.size)})…`));
    const fd = new FormData();
    fd.append("file", file);
    fd.append("purpose", "fine-tune");
    mappingForm(fd);
    slot.promise = apiFetch("/v1/files", { method: "POST", body: fd, signal: controller.signal }).then((obj) => {
      if (gen !== slot.gen) return slot.promise;
      slot.file = obj;
      const labels = obj.label_names ? `; labels: ${obj.label_names.slice(0, 8).join(", ")}${obj.label_names.length > 8 ? "…" : ""}` : "";
      status.replaceChildren(el("p", { class: "upload-ok" }, `✓ ${obj.filename}: ${obj.num_examples} examples, ${obj.task}${labels} `,
        el("span", { class: "muted mono" }, `(${obj.id})`)));
      return obj;
    }).catch((exc) => {
      if (gen !== slot.gen || exc.name === "AbortError") return null;
      input.setAttribute("aria-invalid", "true");
      const n = exc.details ? exc.details.length : 0;
      status.replaceChildren(issuesAlert(n ? `${file.name} was refused: ${n} problem${n > 1 ? "s" : ""}.` : `${file.name} was refused: ${exc.message}`, exc.details));
      return null;
    });
    return slot.promise;
  }
  trainInput.addEventListener("change", () => upload("train"));
  validInput.addEventListener("change", () => upload("valid"));
  for (const input of [taskType, hasHeader, ...columns.map(([id]) => inputs[id])]) {
    input.addEventListener("change", () => { if (trainInput.files[0]) upload("train"); if (validInput.files[0]) upload("valid"); });
  }

  // ---------------------------------------------------------------- errors
  function setError(target, message) {
    if (!target) return false;
    target.error.textContent = message;
    target.input.setAttribute("aria-invalid", "true");
    return true;
  }
  function clearErrors() {
    formError.replaceChildren();
    for (const { input, error } of byParam.values()) { error.textContent = ""; if (input.type !== "file") input.removeAttribute("aria-invalid"); }
  }
  function showServerError(exc) {
    const details = exc.details || [];
    const fileParam = ["training_file", "validation_file"].includes(exc.param);
    if (exc.code === "idempotency_key_reused") {
      formKey = newIdempotencyKey();
      formError.replaceChildren(el("div", { class: "alert alert-error" }, `${exc.message} The form now has a new key: submit again to create new jobs.`));
      return;
    }
    if (fileParam && details.length) {
      const status = exc.param === "training_file" ? trainStatus : validStatus;
      status.replaceChildren(issuesAlert(`The ${exc.param.replace("_", " ")} does not fit this task: ${details.length} problem(s).`, details));
      setError(byParam.get(exc.param), "See the problems listed below.");
      byParam.get(exc.param).input.focus();
      return;
    }
    const placed = details.length > 1 ? details.filter((d) => setError(byParam.get(d.param), d.message)).length : 0;
    const first = placed ? byParam.get(details.find((d) => byParam.has(d.param)).param)
      : (setError(byParam.get(exc.param), exc.message) ? byParam.get(exc.param) : null);
    if (!first || placed < details.length) {
      formError.replaceChildren(first ? issuesAlert("Some values were not accepted:", details.filter((d) => !byParam.has(d.param)))
        : el("div", { class: "alert alert-error" }, exc.message));
    }
    if (first) { first.input.closest("details")?.setAttribute("open", ""); first.input.focus(); } else formError.scrollIntoView({ block: "nearest" });
  }

  // ---------------------------------------------------------------- spec
  function read(id, { integer = false } = {}) {
    const input = inputs[id];
    if (input.validity && input.validity.badInput) throw Object.assign(new Error("Enter a number."), { input: id });
    const raw = input.value.trim();
    if (raw === "") return undefined;
    if (input.type !== "number") return raw;
    const value = Number(raw);
    if (integer && !Number.isInteger(value)) throw Object.assign(new Error("Enter a whole number."), { input: id });
    return value;
  }
  const column = (id) => { const v = read(id); return v !== undefined && /^\d+$/.test(v) ? Number(v) : v; };
  const prune = (obj) => Object.fromEntries(Object.entries(obj).filter(([, v]) => v !== undefined));
  function baseSpec() {
    const spec = { model: modelSelect.value, training_file: uploads.train.file.id };
    if (uploads.valid.file) spec.validation_file = uploads.valid.file.id;
    const task = prune({ type: taskType.value || undefined, text_column: column("text-column"), text_pair_column: column("text-pair-column"),
      label_column: column("label-column"), messages_column: read("messages-column"),
      prompt_column: read("prompt-column"), completion_column: read("completion-column"), has_header: hasHeader.checked ? undefined : false });
    if (Object.keys(task).length) spec.task = task;
    const hp = {};
    for (const [name] of [...HYPER, ...MORE]) hp[name] = read(`hp-${name}`, { integer: name !== "learning_rate" && name !== "warmup_ratio" });
    hp.lr_scheduler = scheduler.value;
    spec.hyperparameters = prune(hp);
    Object.assign(spec, prune({ seed: read("seed", { integer: true }), suffix: read("suffix"),
      validation_split: uploads.valid.file ? undefined : read("validation-split"), merge_model: mergeBox.checked || undefined }));
    return spec;
  }
  function methodSpec(type) {
    const method = { type };
    if (type !== "full") method.setting = setting.value;
    if (type === "sparsegrad") method.sparsegrad = prune({ density: read("sg-density"), calibration_steps: read("sg-calibration", { integer: true }), selection: inputs["sg-selection"].value, recalibrate_every: read("sg-recalibrate", { integer: true }) });
    if (type === "lora") {
      method.lora = prune({ rank: read("lora-rank", { integer: true }), alpha: read("lora-alpha") });
      if (method.lora.rank === undefined && read("sg-density") !== undefined) method.sparsegrad = { density: read("sg-density") };  // auto rank matches it
    }
    if (type === "meprop") method.meprop = prune({ density: read("meprop-density") });
    return method;
  }

  // ---------------------------------------------------------------- submit
  async function submit(types) {
    if (busy) return;
    busy = true;
    const buttons = [submitButton, compareButton];
    buttons.forEach((b) => { b.disabled = true; b.setAttribute("aria-busy", "true"); });
    const label = types ? compareButton : submitButton;
    const original = label.textContent;
    label.replaceChildren(el("span", { class: "spinner", "aria-hidden": "true" }), types ? "Creating jobs…" : "Creating…");
    clearErrors();
    try {
      if (!modelSelect.value) { setError(byParam.get("model"), "Choose a base model."); modelSelect.focus(); return; }
      const [train, valid] = [await uploads.train.promise, await uploads.valid.promise];
      if (!train) {
        setError(byParam.get("training_file"), trainInput.files[0] ? "This file was refused; fix it and choose it again." : "Choose a training file.");
        trainInput.focus();
        return;
      }
      if (validInput.files[0] && !valid) { setError(byParam.get("validation_file"), "This file was refused."); validInput.focus(); return; }
      let spec;
      const bodies = [];
      try {
        spec = baseSpec();
        for (const type of types || [chosen()]) bodies.push([type, { ...spec, method: methodSpec(type) }]);
      } catch (exc) {
        const target = exc.input ? { input: inputs[exc.input], error: document.getElementById(`${exc.input}-error`) } : null;
        if (!setError(target, exc.message)) throw exc;
        target.input.closest("details")?.setAttribute("open", "");
        target.input.focus();
        return;
      }
      const ids = [];
      for (const [type, body] of bodies) {
        const key = types ? `${formKey}-${type}` : formKey;
        try {
          ids.push((await apiFetch("/v1/fine_tuning/jobs", { method: "POST", body, headers: { "Idempotency-Key": key }, signal: controller.signal })).id);
        } catch (exc) {
          if (exc.name === "AbortError") return;
          if (ids.length) toast(`Created ${ids.length} of ${bodies.length} jobs; ${type} was refused.`, "error");
          showServerError(exc);
          return;
        }
      }
      toast(ids.length > 1 ? `Created ${ids.length} jobs.` : `Created job ${ids[0]}.`, "success");
      location.hash = types ? `#/compare?ids=${ids.join(",")}` : `#/jobs/${ids[0]}`;
    } finally {
      busy = false;
      buttons.forEach((b) => { b.disabled = false; b.removeAttribute("aria-busy"); });
      label.replaceChildren(original);
    }
  }
  form.addEventListener("submit", (event) => { event.preventDefault(); submit(null); });
  compareButton.addEventListener("click", () => {
    const types = ticked();
    if (types.length < 2) {
      formError.replaceChildren(el("div", { class: "alert alert-error" }, "Tick at least two methods to compare."));
      compareBoxes[0].focus();
      return;
    }
    submit(types);
  });

  return () => controller.abort();
}
