// The API key of a page (playground, dashboard) when API keys are on: typed into #api-key, kept in this
// tab's sessionStorage only, and sent as "Authorization: Bearer <key>" by every ApiKey.api() call.
// The page shows the key field (#key-form, #api-key, #key-message) only when the server wants keys.
"use strict";

const ApiKey = (() => {
  // sessionStorage: the key lasts as long as this tab, other tabs and later visits never see it, and,
  // unlike a cookie, the browser never sends it on its own. Both pages share it: going from the
  // playground to the dashboard in one tab keeps the key.
  const STORAGE = "playground.apiKey";
  const field = () => document.getElementById("api-key");

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  function required() {
    return Boolean(field());
  }

  function current() {
    return required() ? (sessionStorage.getItem(STORAGE) || "") : "";
  }

  function header() {
    const key = current();
    return key ? { Authorization: `Bearer ${key}` } : {};
  }

  function showProblem(text) {
    const input = field();
    if (!input) return;
    document.getElementById("key-message").textContent = text;
    input.setAttribute("aria-invalid", text ? "true" : "false");
  }

  function describeError(body) {
    const error = (body && body.error) || {};
    const fields = error.fields ? ` (${Object.keys(error.fields).join(", ")})` : "";
    return `${error.message || "request failed"}${fields}`;
  }

  // Every call of a page goes through here, so none can forget the key.
  async function api(path, options = {}) {
    const response = await fetch(path, { ...options, headers: { ...header(), ...(options.headers || {}) } });
    if (response.ok) {
      showProblem("");
      return response;
    }
    const message = describeError(await response.json().catch(() => null));
    if (response.status === 401) {
      showProblem(current() ? `The API key was refused (401): ${message}.` : "Enter your API key first (401).");
    }
    throw new ApiError(response.status, message);
  }

  function save(onChange) {
    const key = field().value.trim();
    if (key) sessionStorage.setItem(STORAGE, key);
    else sessionStorage.removeItem(STORAGE);
    showProblem("");
    onChange(); // what the page showed belonged to the previous key
  }

  // Fill the field from this tab's storage; typing saves the key (onChange), and Enter or the
  // form's button checks it at once (onUse).
  function setUp({ onChange = () => {}, onUse = () => {} } = {}) {
    const input = field();
    if (!input) return;
    input.value = current();
    input.addEventListener("input", () => save(onChange));
    document.getElementById("key-form").addEventListener("submit", (event) => {
      event.preventDefault();
      save(onChange);
      if (current()) onUse();
      else showProblem("Enter your API key first.");
    });
  }

  return { ApiError, required, current, showProblem, describeError, api, setUp };
})();
