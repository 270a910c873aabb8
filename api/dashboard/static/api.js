/**
 * The dashboard's only door to the service: the public /v1 API with `Authorization: Bearer <key>`,
 * plus small shared helpers (formatting, DOM building, toasts).
 * @module api
 */

const KEY_STORAGE = "sparsegrad.apiKey";

/** @returns {string|null} the API key of this browser tab, or null when signed out. */
export function getKey() {
  try { return sessionStorage.getItem(KEY_STORAGE); } catch { return null; }
}

/** @param {string} key an API key to keep for this tab (sessionStorage). */
export function setKey(key) { sessionStorage.setItem(KEY_STORAGE, key); }

/** Forget the API key (sign out). */
export function clearKey() { sessionStorage.removeItem(KEY_STORAGE); }

/** An error answered by the API (`{"error": {message, type, param, code, details}}`) or by the network. */
export class ApiError extends Error {
  /**
   * @param {number} status HTTP status (0 for a network failure)
   * @param {{message?: string, code?: string|null, param?: string|null, type?: string, details?: Array<object>|null}} error
   */
  constructor(status, error = {}) {
    super(error.message || `Request failed (HTTP ${status})`);
    this.name = "ApiError";
    this.status = status;
    this.code = error.code ?? null;
    this.param = error.param ?? null;
    this.type = error.type ?? null;
    this.details = error.details ?? null;
  }
}

let signInMessage = null;
/** @returns {string|null} why the user was sent to the sign-in page (read once). */
export function takeSignInMessage() { const m = signInMessage; signInMessage = null; return m; }

function authHeaders(extra = {}) {
  const headers = { ...extra };
  const key = getKey();
  if (key && !headers.Authorization) headers.Authorization = `Bearer ${key}`;
  return headers;
}

async function errorFrom(response) {
  let body = null;
  try { body = await response.json(); } catch { /* not JSON */ }
  const error = body && typeof body.error === "object" && body.error ? body.error
    : { message: `Request failed (HTTP ${response.status} ${response.statusText})` };
  return new ApiError(response.status, error);
}

function onUnauthorized(error) {
  clearKey();
  signInMessage = "Your API key was not accepted; please sign in again. " + (error.message || "");
  if (location.hash !== "#/login") location.hash = "#/login";
}

async function send(path, { method = "GET", body, headers = {}, signal, auth401 = true } = {}) {
  const init = { method, headers: authHeaders(headers), signal };
  if (body instanceof FormData || body instanceof Blob || typeof body === "string") {
    init.body = body;
  } else if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (exc) {
    if (exc && exc.name === "AbortError") throw exc;
    throw new ApiError(0, { message: `The service could not be reached (${exc && exc.message ? exc.message : exc}).`,
      code: "network_error" });
  }
  if (!response.ok) {
    const error = await errorFrom(response);
    if (response.status === 401 && auth401) onUnauthorized(error);
    throw error;
  }
  return response;
}

/**
 * Call the API and parse its JSON answer.
 * @param {string} path e.g. "/v1/fine_tuning/jobs?limit=20"
 * @param {{method?: string, body?: object|FormData, headers?: object, signal?: AbortSignal, auth401?: boolean}} [options]
 *   `body`: an object is sent as JSON, FormData as multipart. `auth401: false` keeps the key on a 401
 *   (the sign-in page checks keys with it).
 * @returns {Promise<any>} the parsed JSON body
 * @throws {ApiError}
 */
export async function apiFetch(path, options = {}) {
  const response = await send(path, options);
  if (response.status === 204) return null;
  return response.json();
}

/**
 * Download a binary answer (artifact or file contents).
 * @param {string} path
 * @returns {Promise<{blob: Blob, filename: string}>} the bytes and the server's file name
 * @throws {ApiError}
 */
export async function apiFetchBlob(path) {
  const response = await send(path);
  const disposition = response.headers.get("Content-Disposition") || "";
  let filename = "download";
  const star = disposition.match(/filename\*\s*=\s*[^']*''([^;]+)/i);
  const plain = disposition.match(/filename\s*=\s*"?([^";]+)"?/i);
  if (star) filename = decodeURIComponent(star[1]);
  else if (plain) filename = plain[1];
  return { blob: await response.blob(), filename };
}

/**
 * Call the API and return its answer unread (a stream to read with `sseEvents`); errors as `apiFetch` throws them.
 * @param {string} path
 * @param {{method?: string, body?: object, headers?: object, signal?: AbortSignal}} [options]
 * @returns {Promise<Response>}
 * @throws {ApiError}
 */
export async function apiResponse(path, options = {}) {
  return send(path, options);
}

function parseSseBlock(block) {
  let id = null, event = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "id") id = value;
    else if (field === "event") event = value;
    else if (field === "data") data.push(value);
  }
  if (!data.length && id === null) return null;
  let parsed = data.join("\n");
  try { parsed = JSON.parse(parsed); } catch { /* keep the text */ }
  return { id, event, data: parsed };
}

/**
 * The Server-Sent Events of a response body as they arrive (`data` parsed as JSON when it is JSON, e.g. the
 * text `[DONE]` stays a string). Rejects with an AbortError when the request's signal aborts.
 * @param {Response} response
 * @returns {AsyncGenerator<{id: string|null, event: string, data: any}>}
 */
export async function* sseEvents(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const message = parseSseBlock(buffer.slice(0, cut));
        buffer = buffer.slice(cut + 2);
        if (message) yield message;
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

/**
 * Follow a job's Server-Sent Events over fetch (EventSource cannot send the Authorization header).
 * Reconnects with `Last-Event-ID` after network errors (1 s, then up to 5 s apart) and stops at `event: end`,
 * or at `event: revoked` (the key was revoked: handled like any 401, and `onError` hears it).
 * @param {string} jobId
 * @param {{after?: string, onEvent?: function(object, {id: string|null, event: string}): void,
 *          onEnd?: function(object): void, onError?: function(Error): void, signal?: AbortSignal}} options
 * @returns {function(): void} close: stops the stream
 */
export function streamEvents(jobId, { after, onEvent, onEnd, onError, signal } = {}) {
  const controller = new AbortController();
  if (signal) signal.addEventListener("abort", () => controller.abort(), { once: true });
  let lastId = after || null;
  let closed = false;
  let delay = 1000;
  const close = () => { closed = true; controller.abort(); };

  const dispatch = ({ id, event, data: parsed }) => {
    if (id !== null) lastId = id;
    if (event === "end") { closed = true; if (onEnd) onEnd(parsed); return true; }
    if (event === "revoked") {
      closed = true;
      const error = new ApiError(401, (parsed && parsed.error) || { message: String(parsed) });
      onUnauthorized(error);
      if (onError) onError(error);
      return true;
    }
    if (onEvent) onEvent(parsed, { id, event });
    return false;
  };

  const run = async () => {
    while (!closed) {
      try {
        const headers = { Accept: "text/event-stream" };
        if (lastId) headers["Last-Event-ID"] = lastId;
        const response = await send(`/v1/fine_tuning/jobs/${encodeURIComponent(jobId)}/events/stream`,
          { headers, signal: controller.signal });
        delay = 1000;
        for await (const message of sseEvents(response)) {
          if (dispatch(message)) { controller.abort(); return; }
        }
      } catch (exc) {
        if (closed || (exc && exc.name === "AbortError")) return;
        if (exc instanceof ApiError && exc.status >= 400 && exc.status < 500) {
          closed = true;
          if (onError) onError(exc);
          return;
        }
      }
      if (closed) return;
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(5000, delay * 2);
    }
  };
  run();
  return close;
}

// ------------------------------------------------------------------------------------------ formatting
/**
 * @param {number|null|undefined} unix seconds since the epoch
 * @returns {string} local date and time, or "—"
 */
export function formatTime(unix) {
  if (unix === null || unix === undefined) return "—";
  return new Date(unix * 1000).toLocaleString(undefined, {
    year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

/**
 * @param {number|null|undefined} seconds
 * @returns {string} e.g. "45 s", "3 min 05 s", "2 h 04 min", or "—"
 */
export function formatDuration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "—";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, "0")} s`;
  return `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")} min`;
}

/**
 * @param {number|null|undefined} n bytes
 * @returns {string} e.g. "1.2 MB"
 */
export function formatBytes(n) {
  if (n === null || n === undefined || !Number.isFinite(n)) return "—";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let value = n, unit = 0;
  while (value >= 1000 && unit < units.length - 1) { value /= 1000; unit += 1; }
  return unit === 0 ? `${value} B` : `${value.toFixed(value < 10 ? 2 : 1)} ${units[unit]}`;
}

/**
 * @param {number|null|undefined} x
 * @param {number} [digits=4] significant digits
 * @returns {string}
 */
export function formatNumber(x, digits = 4) {
  if (x === null || x === undefined || !Number.isFinite(x)) return "—";
  if (x !== 0 && (Math.abs(x) >= 1e6 || Math.abs(x) < 1e-3)) return x.toExponential(2);
  const rounded = Number.isInteger(x) ? x : Number(x.toPrecision(digits));
  return rounded.toLocaleString(undefined, { maximumFractionDigits: 20 });
}

const STATUS_TEXT = {
  validating_files: "validating files", queued: "queued", running: "running", paused: "paused",
  cancelling: "cancelling", succeeded: "succeeded", failed: "failed", cancelled: "cancelled",
};
/** Statuses after which a job never changes again. */
export const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);

/**
 * A coloured badge that also says the status in words.
 * @param {string} status a job status
 * @returns {HTMLSpanElement} `<span class="status status-<status>">`
 */
export function statusBadge(status) {
  return el("span", { class: `status status-${status}` }, STATUS_TEXT[status] || status);
}

/**
 * Build a DOM element.
 * @param {string} tag
 * @param {object|null} [attrs] attributes; `class`, `text`, `dataset`, `style` (object), `on<event>` handlers,
 *   boolean values set/omit the attribute, null/undefined are skipped
 * @param {...(Node|string|number|null|undefined|Array)} children
 * @returns {HTMLElement}
 */
export function el(tag, attrs = null, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (name === "dataset") Object.assign(node.dataset, value);
    else if (name === "style" && typeof value === "object") Object.assign(node.style, value);
    else if (name.startsWith("on") && typeof value === "function") node.addEventListener(name.slice(2), value);
    else if (name in node && typeof value !== "string" && name !== "list") node[name] = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  const add = (child) => {
    if (child === null || child === undefined || child === false) return;
    if (Array.isArray(child)) { child.forEach(add); return; }
    node.append(child instanceof Node ? child : String(child));
  };
  children.forEach(add);
  return node;
}

/**
 * Show a short message in the corner (announced to screen readers).
 * @param {string} message
 * @param {"info"|"success"|"error"} [kind="info"]
 */
export function toast(message, kind = "info") {
  let region = document.getElementById("toasts");
  if (!region) {
    region = el("div", { id: "toasts", class: "toasts", role: "status", "aria-live": "polite" });
    document.body.append(region);
  }
  const item = el("div", { class: `toast toast-${kind}` }, message);
  region.append(item);
  setTimeout(() => item.remove(), kind === "error" ? 8000 : 4000);
}
