// The page of `seq2seq serve`. Text reaches the document only through textContent
// (never innerHTML), and nothing is fetched but this server's own API.
"use strict";

const $ = (id) => document.getElementById(id);
const DEBOUNCE_MS = 300;
let maxChars = 1000;
let maxTexts = 64;
let inFlight = null; // the AbortController of the request being answered
let timer = null;
let lastResults = null;

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("api-key").value;
  if (key) h.Authorization = "Bearer " + key;
  return h;
}

function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
}

function options() {
  const body = { return_attention: attentionAvailable, return_tokens: true };
  if ($("sample").checked) {
    const sample = { temperature: Number($("temperature").value) || 1, seed: Number($("seed").value) || 0 };
    if ($("top-k").value) sample.top_k = Number($("top-k").value);
    if ($("top-p").value) sample.top_p = Number($("top-p").value);
    body.sample = sample;
    body.beam = 1;
    body.n_best = 1;
  } else {
    body.beam = Math.max(1, Number($("beam").value) || 1);
    body.n_best = Math.min(body.beam, Math.max(1, Number($("n-best").value) || 1));
  }
  return body;
}

let attentionAvailable = true;

async function post(body, signal) {
  const response = await fetch("/v1/translate", { method: "POST", headers: headers(), body: JSON.stringify(body), signal });
  const data = await response.json().catch(() => ({ error: { message: "the answer is not JSON" } }));
  if (response.status === 401) $("key-row").hidden = false;
  if (!response.ok) {
    const error = new Error((data.error && data.error.message) || "HTTP " + response.status);
    error.status = response.status;
    throw error;
  }
  return data;
}

function validate() {
  const length = $("source").value.length;
  $("counter").textContent = length + " / " + maxChars;
  const tooLong = length > maxChars;
  $("source").classList.toggle("invalid", tooLong);
  $("input-error").hidden = !tooLong;
  $("input-error").textContent = tooLong ? "Too long: at most " + maxChars + " characters (" + (length - maxChars) + " over)." : "";
  return !tooLong;
}

function schedule() {
  clearTimeout(timer);
  if (!validate()) return;
  timer = setTimeout(translateNow, DEBOUNCE_MS);
}

async function translateNow() {
  clearTimeout(timer);
  if (!validate()) return;
  const text = $("source").value;
  const url = new URL(window.location.href);
  if (text) url.searchParams.set("q", text); else url.searchParams.delete("q");
  history.replaceState(null, "", url);
  if (inFlight) inFlight.abort(); // only the latest input's answer is shown
  if (!text.trim()) {
    show(null);
    return;
  }
  const controller = new AbortController();
  inFlight = controller;
  const started = performance.now();
  try {
    const data = await post({ q: text, ...options() }, controller.signal);
    if (controller !== inFlight) return;
    $("error").hidden = true;
    show(data.translations, data.timing, performance.now() - started);
  } catch (error) {
    if (error.name === "AbortError") return;
    $("error").hidden = false;
    $("error").textContent = error.message;
  }
}

function show(result, timing, latency) {
  $("target").textContent = result ? result.text : "";
  const list = $("n-best-list");
  clear(list);
  clear($("heatmap"));
  $("pair").textContent = "";
  $("timing").textContent = "";
  if (!result) return;
  for (const hypothesis of result.n_best) {
    const item = document.createElement("li");
    const text = document.createElement("span");
    text.textContent = hypothesis.text;
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = hypothesis.score === null ? "" : hypothesis.score.toFixed(4);
    item.append(text, score);
    list.append(item);
  }
  $("timing").textContent =
    Math.round(latency) + " ms in all: " + timing.queue_ms.toFixed(1) + " ms queued, " +
    timing.decode_ms.toFixed(1) + " ms decoding, in a batch of " + timing.batch_size;
  if (result.attention && result.tokens) heatmap(result.tokens.source, result.tokens.target, result.attention);
}

function heatmap(source, target, weights) {
  const table = $("heatmap");
  const head = table.createTHead().insertRow();
  head.append(document.createElement("th"));
  const columns = source.map((token) => {
    const th = document.createElement("th");
    th.textContent = token === " " ? "␣" : token;
    head.append(th);
    return th;
  });
  const body = table.createTBody();
  target.forEach((token, i) => {
    const row = body.insertRow();
    const label = document.createElement("th");
    label.textContent = token === " " ? "␣" : token;
    row.append(label);
    source.forEach((sourceToken, j) => {
      const cell = row.insertCell();
      const w = (weights[i] && weights[i][j]) || 0;
      cell.style.setProperty("background-color", "rgba(var(--cell), " + w.toFixed(3) + ")");
      cell.dataset.source = String(j);
      cell.title = sourceToken + " → " + token + ": " + w.toFixed(3);
      cell.addEventListener("mouseenter", () => {
        cell.classList.add("hover");
        label.classList.add("hover");
        columns[j].classList.add("hover");
        $("pair").textContent = "“" + sourceToken + "” → “" + token + "”: " + w.toFixed(3);
      });
      cell.addEventListener("mouseleave", () => {
        cell.classList.remove("hover");
        label.classList.remove("hover");
        columns[j].classList.remove("hover");
      });
    });
  });
}

async function upload(event) {
  const file = event.target.files[0];
  if (!file) return;
  const lines = (await file.text()).split(/\r?\n/);
  if (lines.length && lines[lines.length - 1] === "") lines.pop();
  const outputs = [];
  $("download").hidden = true;
  try {
    for (let start = 0; start < lines.length; start += maxTexts) {
      $("upload-status").textContent = "Translating " + start + " / " + lines.length + "…";
      const chunk = lines.slice(start, start + maxTexts);
      const body = { ...options(), q: chunk, return_attention: false, return_tokens: false };
      const data = await post(body);
      for (const t of data.translations) outputs.push(t.text);
    }
  } catch (error) {
    $("upload-status").textContent = "Stopped: " + error.message;
    return;
  }
  $("upload-status").textContent = lines.length + " lines translated.";
  if (lastResults) URL.revokeObjectURL(lastResults);
  lastResults = URL.createObjectURL(new Blob([outputs.join("\n") + "\n"], { type: "text/plain" }));
  const link = $("download");
  link.href = lastResults;
  link.download = file.name.replace(/\.txt$/i, "") + ".translated.txt";
  link.hidden = false;
}

async function copy(text) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    $("error").hidden = false;
    $("error").textContent = "The browser did not allow copying.";
  }
}

async function start() {
  try {
    const response = await fetch("/v1/info", { headers: headers() });
    if (response.status === 401) $("key-row").hidden = false;
    if (response.ok) {
      const info = await response.json();
      maxChars = info.limits.max_chars;
      maxTexts = info.limits.max_texts;
      attentionAvailable = info.attention;
      $("beam").max = String(info.limits.max_beam);
      $("n-best").max = String(info.limits.max_n_best);
      $("model").textContent = info.settings.level + " level, " + info.vocabulary.source + " → " +
        info.vocabulary.target + " tokens, " + info.backend + " on " + info.device;
    }
  } catch {
    // the defaults stand; a translation shows any error
  }
  $("source").addEventListener("input", schedule);
  $("source").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      translateNow();
    }
  });
  for (const id of ["beam", "n-best", "sample", "temperature", "top-k", "top-p", "seed"]) $(id).addEventListener("change", schedule);
  $("upload").addEventListener("change", upload);
  $("copy").addEventListener("click", () => copy($("target").textContent));
  $("share").addEventListener("click", () => copy(window.location.href));
  const q = new URL(window.location.href).searchParams.get("q");
  if (q) $("source").value = q;
  validate();
  if (q) translateNow();
}

document.addEventListener("DOMContentLoaded", start);
