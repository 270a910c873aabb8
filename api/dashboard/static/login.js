/**
 * Sign-in page: an API key, checked against `GET /v1/fine_tuning/jobs?limit=1` before it is kept in
 * this tab's sessionStorage.
 * @module login
 */
import { ApiError, apiFetch, el, setKey, takeSignInMessage } from "./api.js";
import { takeAfterSignIn } from "./app.js";

/**
 * Render the sign-in form.
 * @param {HTMLElement} root
 * @returns {function(): void} cleanup
 */
export function renderLoginPage(root) {
  const controller = new AbortController();
  const notice = takeSignInMessage();
  const message = el("div", { class: "alert alert-error", id: "login-error", role: "alert" });
  const input = el("input", {
    id: "api-key", name: "api-key", type: "password", autocomplete: "off", spellcheck: "false",
    required: true, "aria-describedby": "api-key-hint login-error",
  });
  const button = el("button", { type: "submit", class: "btn btn-primary" }, "Sign in");
  const form = el("form", { class: "card", novalidate: true },
    el("h1", null, "Sign in"),
    el("p", { class: "muted" }, "Use an API key of your tenant. It stays in this browser tab only and is forgotten when you sign out or close the tab."),
    notice ? el("p", { class: "alert alert-info" }, notice) : null,
    message,
    el("div", { class: "field" },
      el("label", { for: "api-key" }, "API key"),
      input,
      el("p", { class: "hint", id: "api-key-hint" }, "Create one with ", el("code", null, "sparsegrad keys create --tenant NAME"), ".")),
    el("div", { class: "form-actions" }, button));

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = input.value.trim();
    message.textContent = "";
    input.removeAttribute("aria-invalid");
    if (!key) {
      message.textContent = "Enter an API key.";
      input.setAttribute("aria-invalid", "true");
      input.focus();
      return;
    }
    button.disabled = true;
    button.replaceChildren(el("span", { class: "spinner", "aria-hidden": "true" }), "Checking…");
    try {
      await apiFetch("/v1/fine_tuning/jobs?limit=1", {
        headers: { Authorization: `Bearer ${key}` }, auth401: false, signal: controller.signal });
      setKey(key);
      location.hash = takeAfterSignIn();
    } catch (exc) {
      if (exc && exc.name === "AbortError") return;
      input.setAttribute("aria-invalid", "true");
      if (exc instanceof ApiError && exc.status === 401) {
        message.textContent = "That key was not accepted. Check that you copied all of it and that it has not been revoked.";
      } else {
        message.textContent = `Could not check the key: ${exc && exc.message ? exc.message : exc}`;
      }
      input.select();
      input.focus();
    } finally {
      button.disabled = false;
      button.replaceChildren("Sign in");
    }
  });

  root.append(el("div", { class: "signin" }, form));
  queueMicrotask(() => input.focus());
  return () => controller.abort();
}
