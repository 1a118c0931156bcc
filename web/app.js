// The page's side of perplex in the browser: loads a model into the wasm engine (pkg/, built by
// web/build), scores the text, shows the numbers and every token coloured by its surprisal.
// The numbers are those `perplex ppl --json` writes for the same text.
import init, { Scorer } from "./pkg/perplex_web.js";

const $ = (id) => document.getElementById(id);
let scorer = null;
let busy = false;

function status(message) {
  $("status").textContent = message;
}

function showError(message) {
  $("error").textContent = message;
  $("error").style.display = message ? "block" : "none";
}

function setBusy(on) {
  busy = on;
  $("score").disabled = on || !scorer;
  $("use-default").disabled = on;
  $("model-files").disabled = on;
}

// Runs `work` with the controls disabled and `message` shown; its error, if any, is shown as the
// engine words it, and the page stays usable.
async function busyWhile(message, work) {
  showError("");
  setBusy(true);
  status(message);
  try {
    await work();
  } catch (e) {
    status("");
    showError(String(e.message || e));
  } finally {
    setBusy(false);
  }
}

function loadModel(label, files) {
  return busyWhile(`Loading ${label} …`, async () => {
    const names = files.map((f) => f.name);
    const contents = files.map((f) => f.bytes);
    const loaded = await Scorer.load(label, names, contents);
    if (scorer) scorer.free();
    scorer = loaded;
    $("adapter").textContent = `Adapter: ${scorer.adapter()}`;
    $("model").textContent = `Loaded: ${scorer.name()}`;
    status("Model loaded.");
  });
}

async function fetchBytes(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: ${response.status} ${response.statusText}`);
  return new Uint8Array(await response.arrayBuffer());
}

async function useDefault() {
  try {
    const names = ["config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors"];
    status("Fetching the default model …");
    const files = await Promise.all(names.map(async (name) => ({ name, bytes: await fetchBytes(`default/${name}`) })));
    if (!$("text").value) $("text").value = await (await fetch("default/heldout.txt")).text();
    await loadModel("the default model", files);
  } catch (e) {
    showError(String(e.message || e));
  }
}

async function pickFiles(list) {
  const files = await Promise.all([...list].map(async (f) => ({ name: f.name, bytes: new Uint8Array(await f.arrayBuffer()) })));
  if (files.length) await loadModel(files.length === 1 ? files[0].name : files.map((f) => f.name).join(", "), files);
}

// Surprisal in bits -> a colour from green (expected) to red (surprising).
function colour(bits, max) {
  const t = Math.min(bits / max, 1);
  return `hsl(${120 * (1 - t)} 75% ${85 - 10 * t}%)`;
}

function showResult(result) {
  const total = result.total;
  $("bits-per-byte").textContent = total.bits_per_byte.toFixed(6);
  $("token-perplexity").textContent = total.token_perplexity.toFixed(4);
  $("word-perplexity").textContent = total.word_perplexity.toFixed(4);
  $("byte-perplexity").textContent = total.byte_perplexity.toFixed(4);
  $("token-count").textContent = `${total.tokens} (window ${result.window}, ctx ${result.ctx})`;
  $("seconds").textContent = `${result.seconds.toFixed(2)} s`;
  const max = 16;
  $("legend-max").textContent = `${max}+ bits`;
  const box = $("tokens");
  box.textContent = "";
  for (const token of result.tokens) {
    const bits = -token.logprob / Math.LN2;
    const span = document.createElement("span");
    span.textContent = token.text;
    span.style.background = colour(bits, max);
    if (token.greedy) span.className = "greedy";
    span.title = `log p = ${token.logprob.toFixed(4)} (${bits.toFixed(2)} bits)\n` +
      (token.greedy ? "the model's first choice" : `the model's first choice: ${JSON.stringify(token.top)}`);
    box.appendChild(span);
  }
  $("results").hidden = false;
}

function score() {
  if (!scorer || busy) return;
  const bar = $("progress");
  return busyWhile("Scoring …", async () => {
    bar.style.display = "block";
    bar.value = 0;
    const timer = setInterval(() => {
      const [done, total] = scorer.progress();
      if (total > 0) {
        bar.value = done / total;
        status(`Scoring … ${done} of ${total} tokens`);
      }
    }, 100);
    try {
      const result = JSON.parse(await scorer.score($("text").value));
      window.perplexResult = result;
      showResult(result);
      status("Done.");
    } finally {
      clearInterval(timer);
      bar.style.display = "none";
    }
  });
}

function dropText(area) {
  area.addEventListener("dragover", (e) => { e.preventDefault(); area.classList.add("drop"); });
  area.addEventListener("dragleave", () => area.classList.remove("drop"));
  area.addEventListener("drop", async (e) => {
    e.preventDefault();
    area.classList.remove("drop");
    const file = e.dataTransfer.files[0];
    if (file) area.value = await file.text();
  });
}

async function main() {
  await init();
  $("use-default").addEventListener("click", useDefault);
  $("model-files").addEventListener("change", (e) => pickFiles(e.target.files));
  $("score").addEventListener("click", score);
  dropText($("text"));
  if (!navigator.gpu) {
    showError("This browser offers no WebGPU. perplex runs in browsers with WebGPU: current Chrome and Edge, Safari 26, Firefox 141 on Windows.");
  }
  document.body.dataset.ready = "yes";
}

main().catch((e) => showError(String(e.message || e)));
