// polyalign playground: one panel per weighting (A, and B to compare), streaming from /v1/chat/completions.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { models: [], model: null, panels: [], controllers: [] };

function setStatus(text, error = false) {
  const el = $("status");
  el.textContent = text;
  el.classList.toggle("error", error);
}

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("api-key").value.trim();
  if (key) h.Authorization = `Bearer ${key}`;
  return h;
}

async function loadModels() {
  const response = await fetch("/v1/models", { headers: headers() });
  if (response.status === 401) {
    $("key-box").hidden = false;
    setStatus("This server needs an API key: enter it above.", true);
    return;
  }
  const body = await response.json();
  state.models = body.data;
  const select = $("model");
  select.innerHTML = "";
  for (const m of state.models) select.add(new Option(m.id, m.id));
  selectModel(state.models[0].id);
}

// Starting weights: A leans toward the first objective, B toward the last.
function startWeights(model, lean) {
  const objs = model.objectives;
  if (model.weight_domain.kind === "scalar") return [lean === 0 ? 0.5 : 1.5];
  if (objs.length === 1) return [1];
  return objs.map((_, i) => {
    const favoured = lean === 0 ? i === 0 : i === objs.length - 1;
    return favoured ? 0.75 : 0.25 / (objs.length - 1);
  });
}

function selectModel(id) {
  state.model = state.models.find((m) => m.id === id);
  const main = $("panels");
  main.innerHTML = "";
  state.panels = ["A", "B"].map((name, k) => buildPanel(name, k));
  state.panels.forEach((p) => main.appendChild(p.root));
  $("compare").dispatchEvent(new Event("change"));
  const m = state.model;
  const alpha = m.alpha ? `; alpha (KL strength) in [${m.alpha.min}, ${m.alpha.max}]` : "";
  const names = m.objectives.map((o) => o.name).join(", ");
  setStatus(`${m.id} steers ${names}. Weights: ${m.weight_domain.description}${alpha}.`);
}

function slider(panel, label, min, max, value, onInput) {
  const id = `${panel.name}-${label}`.replace(/\W/g, "-");
  const lab = document.createElement("label");
  lab.textContent = label;
  lab.htmlFor = id;
  const input = document.createElement("input");
  Object.assign(input, { type: "range", id, min, max, step: 0.05, value });
  input.dataset.objective = label;
  const out = document.createElement("output");
  out.value = Number(value).toFixed(2);
  input.addEventListener("input", () => { out.value = Number(input.value).toFixed(2); onInput(); });
  panel.controls.append(lab, input, out);
  return input;
}

function buildPanel(name, k) {
  const root = $("panel-template").content.firstElementChild.cloneNode(true);
  root.classList.add(name.toLowerCase());
  root.id = `panel-${name.toLowerCase()}`;
  root.querySelector("h2").textContent = `Weighting ${name}`;
  const panel = { name, root, controls: root.querySelector(".controls"), history: [], sliders: [], alpha: null };
  panel.messages = root.querySelector(".messages");
  panel.sent = root.querySelector(".sent");
  const m = state.model;
  const start = startWeights(m, k);
  m.objectives.forEach((o, i) => {
    const [lo, hi] = o.suggested_range;
    panel.sliders.push(slider(panel, o.name, lo, hi, start[i], () => showWeights(panel)));
  });
  if (m.alpha) panel.alpha = slider(panel, "alpha", m.alpha.min, m.alpha.max, 0.1, () => showWeights(panel));
  showWeights(panel);
  return panel;
}

// The weights a panel sends: on the simplex they are normalised to sum to 1.
function weightsOf(panel) {
  let values = panel.sliders.map((s) => Number(s.value));
  if (state.model.weight_domain.kind === "simplex") {
    const total = values.reduce((a, b) => a + b, 0);
    if (total <= 0) return null;
    values = values.map((v) => v / total);
  }
  const out = {};
  state.model.objectives.forEach((o, i) => { out[o.name] = Math.round(values[i] * 1e4) / 1e4; });
  return out;
}

function showWeights(panel) {
  const w = weightsOf(panel);
  if (w === null) { panel.sent.textContent = "give some objective a weight above 0"; return; }
  const parts = Object.entries(w).map(([k, v]) => `${k} ${v.toFixed(2)}`);
  if (panel.alpha) parts.push(`alpha ${Number(panel.alpha.value).toFixed(2)}`);
  panel.sent.textContent = `sends: ${parts.join(", ")}`;
}

function bubble(panel, role, text) {
  const div = document.createElement("div");
  div.className = `msg ${role}`;
  div.textContent = text;
  panel.messages.appendChild(div);
  return div;
}

function activePanels() {
  return $("compare").checked ? state.panels : state.panels.slice(0, 1);
}

async function ask(panel, prompt, signal) {
  const weights = weightsOf(panel);
  panel.history.push({ role: "user", content: prompt });
  bubble(panel, "user", prompt);
  const answer = bubble(panel, "assistant", "");
  answer.classList.add("streaming");
  const text = document.createElement("span");
  text.className = "text";
  answer.appendChild(text);
  const body = {
    model: state.model.id, messages: panel.history, stream: true, stream_options: { include_usage: true },
    max_tokens: Number($("max-tokens").value) || 96, temperature: Number($("temperature").value),
    objective_weights: weights,
  };
  if (panel.alpha) body.alpha = Number(panel.alpha.value);
  let finish = null, usage = null;
  try {
    const response = await fetch("/v1/chat/completions", {
      method: "POST", headers: headers(), body: JSON.stringify(body), signal,
    });
    if (!response.ok) {
      const err = await response.json().catch(() => ({ error: { message: response.statusText } }));
      throw new Error(err.error.message);
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const line = buffer.slice(0, cut).trim();
        buffer = buffer.slice(cut + 2);
        if (!line.startsWith("data:")) continue;
        const data = line.slice(5).trim();
        if (data === "[DONE]") continue;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new Error(chunk.error.message);
        if (chunk.usage) usage = chunk.usage;
        for (const c of chunk.choices || []) {
          if (c.delta && c.delta.content) text.textContent += c.delta.content;
          if (c.finish_reason) finish = c.finish_reason;
        }
      }
    }
    panel.history.push({ role: "assistant", content: text.textContent });
    const meta = document.createElement("span");
    meta.className = "meta";
    meta.textContent = `${usage ? usage.completion_tokens + " tokens" : ""}${finish ? ", finish: " + finish : ""}`;
    answer.appendChild(meta);
  } catch (error) {
    panel.history.pop();
    answer.classList.add("error");
    text.textContent += (text.textContent ? "\n" : "") + (error.name === "AbortError" ? "(stopped)" : `error: ${error.message}`);
  } finally {
    answer.classList.remove("streaming");
    answer.dataset.done = "true";
  }
}

async function send(event) {
  event.preventDefault();
  const prompt = $("prompt").value.trim();
  if (!prompt || !state.model) return;
  $("prompt").value = "";
  $("send").disabled = true;
  $("stop").disabled = false;
  const controller = new AbortController();
  state.controllers.push(controller);
  await Promise.all(activePanels().map((p) => ask(p, prompt, controller.signal)));
  state.controllers = state.controllers.filter((c) => c !== controller);
  $("send").disabled = false;
  $("stop").disabled = state.controllers.length === 0;
}

$("chat").addEventListener("submit", send);
$("prompt").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("chat").requestSubmit(); }
});
$("stop").addEventListener("click", () => state.controllers.forEach((c) => c.abort()));
$("clear").addEventListener("click", () => state.panels.forEach((p) => { p.history = []; p.messages.innerHTML = ""; }));
$("model").addEventListener("change", (e) => selectModel(e.target.value));
$("compare").addEventListener("change", (e) => {
  if (state.panels[1]) state.panels[1].root.hidden = !e.target.checked;
});
$("api-key").addEventListener("change", () => loadModels().catch((e) => setStatus(e.message, true)));
loadModels().catch((e) => setStatus(`could not reach the server: ${e.message}`, true));
