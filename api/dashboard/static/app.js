/**
 * The dashboard's entry point: a hash router (`#/login`, `#/jobs`, `#/new`, `#/jobs/<id>`,
 * `#/compare?ids=a,b`) that renders one page at a time into `<main>` and calls the previous page's
 * cleanup (timers, streams) on navigation.
 * @module app
 */
import { clearKey, el, getKey } from "./api.js";

/** Pages by route name: each module's render function takes (root, params) and returns a cleanup. */
const PAGES = {
  login: { title: "Sign in", load: async () => (await import("./login.js")).renderLoginPage, open: true },
  jobs: { title: "Jobs", load: async () => (await import("./jobs.js")).renderJobsPage },
  new: { title: "New job", load: async () => (await import("./new_job.js")).renderNewJobPage },
  job: { title: "Job", load: async () => (await import("./job.js")).renderJobPage },
  compare: { title: "Compare", load: async () => (await import("./compare.js")).renderComparePage },
};

/**
 * Parse a location hash.
 * @param {string} hash e.g. "#/jobs/ftjob-1" or "#/compare?ids=a,b"
 * @returns {{name: string, id: string|null, query: URLSearchParams}}
 */
export function parseRoute(hash) {
  const raw = (hash || "").replace(/^#\/?/, "");
  const [path, search = ""] = raw.split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  const query = new URLSearchParams(search);
  if (parts[0] === "jobs" && parts[1]) return { name: "job", id: parts[1], query };
  if (parts[0] in PAGES && parts[0] !== "job") return { name: parts[0], id: null, query };
  return { name: "", id: null, query };
}

let cleanup = null;
let generation = 0;
/** Where to go after signing in (the page that asked for a key). */
let afterSignIn = "#/jobs";

/** @returns {string} the hash to open after a successful sign-in (and forget it). */
export function takeAfterSignIn() {
  const target = afterSignIn;
  afterSignIn = "#/jobs";
  return target;
}

function runCleanup() {
  if (typeof cleanup === "function") {
    try { cleanup(); } catch (exc) { console.warn("cleanup failed", exc); }
  }
  cleanup = null;
}

function updateChrome(route) {
  const signedIn = Boolean(getKey());
  document.body.classList.toggle("signed-out", !signedIn);
  document.getElementById("signout").hidden = !signedIn;
  const section = route.name === "job" ? "jobs" : route.name;
  for (const link of document.querySelectorAll("[data-nav]")) {
    if (link.dataset.nav === section) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

async function render() {
  const route = parseRoute(location.hash);
  if (!route.name) { location.replace(getKey() ? "#/jobs" : "#/login"); return; }
  if (!getKey() && route.name !== "login") {
    afterSignIn = location.hash;
    location.replace("#/login");
    return;
  }
  if (getKey() && route.name === "login") { location.replace("#/jobs"); return; }
  runCleanup();
  const mine = ++generation;
  const page = PAGES[route.name];
  updateChrome(route);
  const root = document.getElementById("main");
  root.replaceChildren(el("p", { class: "muted" }, "Loading…"));
  document.title = `${page.title} · SparseGrad`;
  let renderPage;
  try {
    renderPage = await page.load();
  } catch (exc) {
    if (mine !== generation) return;
    root.replaceChildren(el("p", { class: "alert alert-error", role: "alert" },
      `This page could not be loaded (${exc && exc.message ? exc.message : exc}).`));
    return;
  }
  if (mine !== generation) return;
  root.replaceChildren();
  const result = renderPage(root, route.name === "job" ? route.id : route.query);
  cleanup = typeof result === "function" ? result : null;
  const heading = root.querySelector("h1");
  if (heading && document.activeElement && !root.contains(document.activeElement)) {
    heading.setAttribute("tabindex", "-1");
    heading.focus({ preventScroll: true });
  }
  window.scrollTo(0, 0);
}

document.getElementById("signout").addEventListener("click", () => {
  clearKey();
  runCleanup();
  location.hash = "#/login";
});
window.addEventListener("hashchange", render);
render();
