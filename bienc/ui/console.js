// The bienc console: a page over the public /v1 API, making the calls a user would make.
// No build step, nothing loaded from elsewhere. The API key (when the server asks for one)
// is kept in this tab's session storage and sent only to this origin.
"use strict";

const KEY_STORAGE = "bienc.apiKey";
const JOB_LIMIT = 10;
const $ = (id) => document.getElementById(id);

class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

async function api(path, options = {}) {
  const headers = { Accept: "application/json" };
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  const key = sessionStorage.getItem(KEY_STORAGE);
  if (key) headers.Authorization = "Bearer " + key;
  let response;
  try {
    response = await fetch(path, { ...options, headers });
  } catch (error) {
    throw new ApiError(0, `The server at ${location.origin} cannot be reached. Is \`bienc serve\` running?`);
  }
  let body = null;
  try {
    body = await response.json();
  } catch (error) {
    body = null;
  }
  if (!response.ok) {
    const detail = body && typeof body.detail === "string" ? body.detail : `HTTP ${response.status}`;
    throw new ApiError(response.status, detail);
  }
  return body;
}

// Errors: a key prompt for 401, a notice for everything else; never a stack trace.

function notify(message) {
  const notice = $("notice");
  notice.textContent = message;
  notice.hidden = !message;
}

function askForKey(reason) {
  $("key-reason").textContent = reason;
  $("key-form").hidden = false;
  $("key").value = "";
  $("key").focus();
}

function report(error) {
  if (error instanceof ApiError && error.status === 401) {
    const had = sessionStorage.getItem(KEY_STORAGE);
    sessionStorage.removeItem(KEY_STORAGE);
    askForKey(had ? "That key was refused. Enter the server's API key." : "This server needs an API key.");
    return;
  }
  if (error instanceof ApiError && error.status === 403) {
    notify(`This key may not do that: ${error.message}`);
    return;
  }
  notify(error instanceof ApiError ? error.message : "Something went wrong in the page; reload it.");
}

// Collections

function collectionParam() {
  return new URLSearchParams(location.search).get("c") || "";
}

function describe(info) {
  const encoding = info.encoding ? ` (${info.encoding})` : "";
  return `${info.documents} documents, ${info.points} points · ${info.model}${encoding}, ${info.dimension}-d`;
}

async function loadCollections() {
  const { collections } = await api("/v1/collections");
  const list = $("collections");
  const select = $("collection");
  const current = select.value || collectionParam();
  list.replaceChildren();
  select.replaceChildren();
  for (const info of collections) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "collection";
    button.dataset.name = info.name;
    const name = document.createElement("strong");
    name.textContent = info.name;
    const meta = document.createElement("div");
    meta.className = "meta";
    meta.textContent = describe(info);
    button.append(name, meta);
    button.addEventListener("click", () => openCollection(info.name));
    const item = document.createElement("li");
    item.append(button);
    list.append(item);
    select.append(new Option(info.name, info.name));
  }
  $("collections-empty").hidden = collections.length > 0;
  if (collections.some((info) => info.name === current)) select.value = current;
  markOpen();
}

function markOpen() {
  for (const button of document.querySelectorAll(".collection")) {
    button.setAttribute("aria-current", String(button.dataset.name === $("collection").value));
  }
}

function openCollection(name) {
  $("collection").value = name;
  markOpen();
  updateUrl();
  $("q").focus();
}

// Search

// Words too common to be worth marking in a snippet (English).
const STOPWORDS = new Set(("a an and are as at be by did do does for from had has have how in is "
  + "it its of on or that the their this to was were what when where which who why with").split(" "));

function queryWords(query) {
  const words = (query.toLowerCase().match(/[\p{L}\p{N}]{2,}/gu) || []).filter((w) => !STOPWORDS.has(w));
  return [...new Set(words)].map((word) => word.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
}

function highlighted(text, query) {
  const fragment = document.createDocumentFragment();
  const words = queryWords(query);
  if (!words.length) {
    fragment.append(text);
    return fragment;
  }
  const pattern = new RegExp(`(?<![\\p{L}\\p{N}])(?:${words.join("|")})(?![\\p{L}\\p{N}])`, "giu");
  let last = 0;
  for (const match of text.matchAll(pattern)) {
    fragment.append(text.slice(last, match.index));
    const mark = document.createElement("mark");
    mark.textContent = match[0];
    fragment.append(mark);
    last = match.index + match[0].length;
  }
  fragment.append(text.slice(last));
  return fragment;
}

function renderHit(hit, query) {
  const item = document.createElement("li");
  item.className = "hit";
  const head = document.createElement("div");
  head.className = "hit-head";
  const id = document.createElement("span");
  id.className = "hit-id";
  id.textContent = hit.id;
  const score = document.createElement("span");
  score.className = "score";
  const legs = hit.scores
    ? " (" + Object.entries(hit.scores).map(([leg, value]) => `${leg} ${value.toFixed(3)}`).join(", ") + ")"
    : "";
  score.textContent = `score ${hit.score.toFixed(4)}${legs} · chunk ${hit.chunk}`;
  head.append(id, score);
  if (hit.title) {
    const title = document.createElement("span");
    title.className = "hit-title";
    title.textContent = hit.title;
    head.append(title);
  }
  item.append(head);
  const where = [];
  if (hit.page != null) where.push(`page ${hit.page}`);
  if (hit.section && hit.section.length) where.push(hit.section.join(" › "));
  if (where.length) {
    // where in its file the passage is: a PDF's page, the headings above it
    const location = document.createElement("div");
    location.className = "hit-where";
    location.textContent = where.join(" · ");
    item.append(location);
  }
  const snippet = document.createElement("p");
  snippet.className = "snippet";
  snippet.append(highlighted(hit.snippet || hit.text || "", query));
  item.append(snippet);
  if (hit.metadata && Object.keys(hit.metadata).length) {
    const metadata = document.createElement("code");
    metadata.className = "metadata";
    metadata.textContent = JSON.stringify(hit.metadata);
    item.append(metadata);
  }
  if (hit.text && hit.text !== hit.snippet) {
    const full = document.createElement("p");
    full.className = "full";
    full.hidden = true;
    full.append(highlighted(hit.text, query));
    const toggle = document.createElement("button");
    toggle.type = "button";
    toggle.className = "link";
    toggle.textContent = "Show full text";
    toggle.setAttribute("aria-expanded", "false");
    toggle.addEventListener("click", () => {
      full.hidden = !full.hidden;
      toggle.textContent = full.hidden ? "Show full text" : "Hide full text";
      toggle.setAttribute("aria-expanded", String(!full.hidden));
    });
    item.append(document.createElement("br"), toggle, full);
  }
  return item;
}

function readFilter() {
  const raw = $("filter").value.trim();
  const problem = $("filter-error");
  problem.hidden = true;
  if (!raw) return null;
  try {
    const parsed = JSON.parse(raw);
    if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) throw new Error("not an object");
    return parsed;
  } catch (error) {
    problem.textContent = 'The filter must be a JSON object, e.g. {"topic": "geography"}.';
    problem.hidden = false;
    throw error;
  }
}

function updateUrl() {
  const params = new URLSearchParams();
  if ($("collection").value) params.set("c", $("collection").value);
  if ($("q").value) params.set("q", $("q").value);
  if ($("k").value !== "10") params.set("k", $("k").value);
  if ($("mode").value) params.set("mode", $("mode").value);
  if ($("filter").value.trim()) params.set("filter", $("filter").value.trim());
  history.replaceState(null, "", `${location.pathname}?${params}`);
}

async function search() {
  const collection = $("collection").value;
  const query = $("q").value;
  let filter;
  try {
    filter = readFilter();
  } catch (error) {
    return;
  }
  updateUrl();
  const body = { query, top_k: Number($("k").value), with_text: true };
  if (filter) body.filter = filter;
  if ($("mode").value) body.mode = $("mode").value;
  const results = $("results");
  try {
    const answer = await api(`/v1/collections/${encodeURIComponent(collection)}/search`,
                             { method: "POST", body: JSON.stringify(body) });
    notify("");
    const hits = answer.results[0];
    results.replaceChildren(...hits.map((hit) => renderHit(hit, query)));
    const t = answer.timings_ms;
    const encode = t.encode ?? 0;
    $("timings").textContent = `${hits.length} documents · ${answer.mode} · encode ${encode.toFixed(1)} ms · `
      + `search ${(t.total - encode).toFixed(1)} ms · total ${t.total.toFixed(1)} ms`;
  } catch (error) {
    results.replaceChildren();
    $("timings").textContent = "";
    report(error);
  }
}

// Jobs

let jobsTimer = null;

async function showFailures(jobId, into) {
  const job = await api(`/v1/jobs/${encodeURIComponent(jobId)}`);
  const list = document.createElement("ul");
  for (const [where, reason] of Object.entries(job.failures).slice(0, 20)) {
    const item = document.createElement("li");
    item.textContent = `${where}: ${reason}`;
    list.append(item);
  }
  into.replaceChildren(list);
}

function renderJob(job) {
  const item = document.createElement("li");
  item.className = "job";
  item.dataset.jobId = job.job_id;
  const head = document.createElement("div");
  const state = document.createElement("strong");
  state.className = `state state-${job.state}`;
  state.textContent = job.state;
  head.append(state, ` · ${job.collection} · ${new Date(job.created_at * 1000).toLocaleString()}`);
  const bar = document.createElement("progress");
  bar.max = Math.max(job.total, 1);
  bar.value = job.total - job.queued;
  bar.setAttribute("aria-label", `job ${job.job_id} progress`);
  const counts = document.createElement("div");
  counts.className = "meta";
  counts.textContent = (job.kind === "delete"
    ? `${job.deleted} deleted, ${job.skipped} gone already, `
    : `${job.indexed} indexed, ${job.skipped} unchanged, ${job.failed} failed, `)
    + (job.superseded ? `${job.superseded} superseded by a newer version, ` : "")
    + `${job.queued} queued of ${job.total} · ${job.job_id}`;
  item.append(head, bar, counts);
  if (job.last_error) {
    const error = document.createElement("div");
    error.className = "error";
    error.textContent = `last error: ${job.last_error}`;
    item.append(error);
  }
  if (job.failed > 0 || job.dead_letters > 0) {
    const details = document.createElement("details");
    const summary = document.createElement("summary");
    summary.textContent = `Failures (${job.failed})` + (job.dead_letters
      ? `, ${job.dead_letters} dead-lettered batches: replay with bienc jobs retry ${job.job_id}` : "");
    const reasons = document.createElement("div");
    details.append(summary, reasons);
    details.addEventListener("toggle", () => {
      if (details.open) showFailures(job.job_id, reasons).catch(report);
    });
    item.append(details);
  }
  return item;
}

async function loadJobs() {
  clearTimeout(jobsTimer);
  let running = false;
  try {
    const { jobs } = await api(`/v1/jobs?limit=${JOB_LIMIT}`);
    // keep open failure lists open across refreshes
    const open = new Set([...document.querySelectorAll(".job details[open]")]
      .map((details) => details.closest(".job").dataset.jobId));
    $("jobs").replaceChildren(...jobs.map(renderJob));
    for (const jobId of open) {
      const details = document.querySelector(`.job[data-job-id="${jobId}"] details`);
      if (details) details.open = true;
    }
    $("jobs-empty").hidden = jobs.length > 0;
    running = jobs.some((job) => job.queued > 0);
  } catch (error) {
    report(error);
    return;
  }
  jobsTimer = setTimeout(loadJobs, running ? 1000 : 3000);
}

// Start

async function refreshAll() {
  try {
    await loadCollections();
  } catch (error) {
    report(error);
    return;
  }
  notify("");
  loadJobs();
  if ($("collection").value && $("q").value) search();
}

function start() {
  const params = new URLSearchParams(location.search);
  $("q").value = params.get("q") || "";
  $("k").value = params.get("k") || "10";
  $("mode").value = ["dense", "lexical", "hybrid"].includes(params.get("mode")) ? params.get("mode") : "";
  $("filter").value = params.get("filter") || "";
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    search();
  });
  $("collection").addEventListener("change", () => {
    markOpen();
    updateUrl();
  });
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY_STORAGE, $("key").value);
    $("key-form").hidden = true;
    $("change-key").hidden = false;
    refreshAll();
  });
  $("change-key").hidden = !sessionStorage.getItem(KEY_STORAGE);
  $("change-key").addEventListener("click", () => askForKey("Enter another API key."));
  refreshAll();
}

start();
