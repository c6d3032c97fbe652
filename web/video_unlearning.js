// The pack's face in ComfyUI's editor: live pair checking on Pair Encoder, the score chart's labels as text on
// Low-Rank Refusal Vector, the recommendation and table of Unlearning Check, and an unlearning badge on Apply
// Unlearning. One module, four extensions (ComfyUI imports every .js file under web/ as an extension).
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

// New behaviour runs after whatever the node or another extension already installed.
function chain(object, method, extra) {
  const original = object[method];
  object[method] = function (...args) {
    const result = original?.apply(this, args);
    extra.apply(this, args);
    return result;
  };
}

// --- Pair Encoder: pair count and first problem, checked by the pack's Python parser (core.pairs) so that
// editor and backend never disagree.
const PAIR_NODE = "VideoUnlearnPairEncoder";
const DEBOUNCE_MS = 300;

async function checkPairs(text) {
  const response = await api.fetchApi("/video_unlearning/check_pairs", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ text }),
  });
  if (!response.ok) throw new Error(`check_pairs answered ${response.status}`);
  return response.json();
}

const validPairs = (count) => `${count} valid pair${count === 1 ? "" : "s"}`;

function render(status, result) {
  // User text reaches the page only through textContent: never parsed as HTML.
  if (result.error) {
    // count is the number of valid pairs before the first problem (core.pairs.check_pairs).
    status.textContent = result.line
      ? `Line ${result.line}: ${result.error} (${validPairs(result.count)} above it)`
      : result.error;
    status.dataset.state = "error";
  } else {
    status.textContent = validPairs(result.count) + (result.warning ? ` (${result.warning})` : "");
    status.dataset.state = result.warning ? "warning" : "ok";
  }
  const colors = { ok: "#4caf50", warning: "#e0a030", error: "#e05050" };
  status.style.color = colors[status.dataset.state];
}

app.registerExtension({
  name: "videoUnlearning.pairCheck",
  nodeCreated(node) {
    if (node.comfyClass !== PAIR_NODE) return;
    const pairs = node.widgets?.find((w) => w.name === "pairs");
    if (!pairs) return;
    const status = document.createElement("div");
    status.className = "video-unlearning-pair-status";
    status.style.cssText = "font: 12px sans-serif; padding: 2px 6px; white-space: normal; overflow: hidden;";
    status.textContent = "checking pairs...";
    node.addDOMWidget("pair_status", "video_unlearning_status", status, { serialize: false, hideOnZoom: false });

    let timer = null;
    let latest = 0;
    const schedule = () => {
      clearTimeout(timer);
      timer = setTimeout(async () => {
        const ticket = ++latest;
        try {
          const result = await checkPairs(String(pairs.value ?? ""));
          if (ticket === latest) render(status, result);
        } catch (error) {
          if (ticket !== latest) return;
          status.textContent = `pair check unavailable: ${error.message}`;
          status.dataset.state = "error";
          status.style.color = "#e05050";
        }
      }, DEBOUNCE_MS);
    };
    chain(pairs, "callback", schedule);
    pairs.inputEl?.addEventListener("input", schedule);
    chain(node, "onConfigure", schedule); // a loaded workflow fills the widget after creation
    schedule();
    // Apply Unlearning badges downstream name this node's concept label.
    const concept = node.widgets?.find((w) => w.name === "concept");
    if (concept) chain(concept, "callback", refreshAllBadges);
  },
});

// --- Apply Unlearning: a badge that says at a glance whether a workflow unlearns, how strongly, and what.
const APPLY_NODE = "VideoUnlearnApply";

function widget(node, name) {
  return node?.widgets?.find((w) => w.name === name);
}

// Follow the refusal_vector input upstream to a Pair Encoder's concept label or a loaded file name.
function upstreamConcept(node, depth = 0) {
  if (!node || depth > 8) return "";
  if (node.comfyClass === "VideoUnlearnPairEncoder") return String(widget(node, "concept")?.value ?? "");
  if (node.comfyClass === "VideoUnlearnLoadRefusalVector") return String(widget(node, "name")?.value ?? "").replace(/\.safetensors$/, "");
  for (const input of node.inputs ?? []) {
    if (input.link == null) continue;
    const link = node.graph?.links?.[input.link] ?? app.graph.links?.[input.link];
    const source = link && node.graph?.getNodeById(link.origin_id);
    const found = upstreamConcept(source, depth + 1);
    if (found) return found;
  }
  return "";
}

// The node feeding an input (e.g. Unlearning Check feeding Apply Unlearning's strength), or null.
function inputSource(node, name) {
  const input = node.inputs?.find((i) => i.name === name);
  if (input?.link == null) return null;
  const link = node.graph?.links?.[input.link] ?? app.graph.links?.[input.link];
  return (link && node.graph?.getNodeById(link.origin_id)) || null;
}

function refresh(node) {
  const badge = node.__videoUnlearningBadge;
  if (!badge) return;
  const ran = node.__videoUnlearningRun;
  const enabled = ran ? ran.enabled : Boolean(widget(node, "enabled")?.value ?? true);
  // A strength fed by a link (Unlearning Check's recommendation) is known only after a run.
  const feeder = ran ? null : inputSource(node, "strength");
  const strength = ran ? ran.strength : feeder ? 1 : Number(widget(node, "strength")?.value ?? 1);
  const concept = (ran?.concept || upstreamConcept(node) || "unnamed concept").trim();
  const active = enabled && strength > 0;
  const shown = feeder ? `strength from ${feeder.title || feeder.type}` : `strength ${strength.toFixed(2)}`;
  badge.textContent = active
    ? `UNLEARNING ON · ${shown} · ${concept}` + (ran ? ` · ${ran.layers} layers` : "")
    : `UNLEARNING OFF · ${concept}`;
  badge.dataset.state = active ? "on" : "off";
  badge.style.background = active ? "#7a2e2e" : "#3a3a3a";
}

function refreshAllBadges() {
  for (const node of app.graph?._nodes ?? []) if (node.comfyClass === APPLY_NODE) refresh(node);
}

app.registerExtension({
  name: "videoUnlearning.badge",
  nodeCreated(node) {
    if (node.comfyClass === "VideoUnlearnLoadRefusalVector") {
      const name = widget(node, "name");
      if (name) chain(name, "callback", refreshAllBadges);
      chain(node, "onConnectionsChange", refreshAllBadges);
    }
    if (node.comfyClass !== APPLY_NODE) return;
    const badge = document.createElement("div");
    badge.className = "video-unlearning-badge";
    badge.title = "Apply Unlearning: whether this workflow removes a concept, how strongly, and which one";
    badge.style.cssText = "font: bold 12px sans-serif; color: #fff; padding: 3px 8px; border-radius: 8px; text-align: center;";
    node.__videoUnlearningBadge = badge;
    node.addDOMWidget("unlearning_badge", "video_unlearning_badge", badge, { serialize: false, hideOnZoom: false });
    for (const name of ["enabled", "strength"]) {
      const w = widget(node, name);
      if (w) chain(w, "callback", () => { node.__videoUnlearningRun = null; refresh(node); });
    }
    chain(node, "onConnectionsChange", () => refresh(node));
    chain(node, "onConfigure", () => setTimeout(() => refresh(node), 0));
    chain(node, "onExecuted", (output) => {
      const info = output?.video_unlearning?.[0];
      if (info) {
        node.__videoUnlearningRun = info;
        refresh(node);
      }
    });
    setTimeout(() => refresh(node), 0);
  },
});

// --- Low-Rank Refusal Vector: the chart's labels as text next to its image. The node's run sends the chart's data
// (nodes/plot.py chart_data) beside the preview image; the best input is named in a line under the widgets and every
// bar's label and value sit in its tooltip, so they can be read, copied and searched.
const VECTOR_NODE = "VideoUnlearnRefusalVector";
const CHART_KEY = "video_unlearning_chart";

function renderChart(caption, chart) {
  const best = chart.bars.find((bar) => bar.label === chart.best);
  caption.textContent = best
    ? `best: ${best.label} (separation ${best.value.toFixed(2)}) · ${chart.layers} layers, ${chart.bars.length} distinct input${chart.bars.length === 1 ? "" : "s"}`
    : "no layers";
  // Inputs that kept fewer directions than the rank (only those of positive contrast are kept) are named too.
  const narrow = Object.entries(chart.narrow_inputs ?? {})
    .map(([input, kept]) => `${input}: ${kept} direction(s) kept`);
  caption.title = [...chart.bars.map((bar) => `${bar.label}: ${bar.value.toFixed(3)}`), ...narrow].join("\n");
  caption.dataset.labels = JSON.stringify(chart.bars.map((bar) => bar.label));
  caption.dataset.state = "ran";
}

// A one- or two-line text line on a node (not saved with the workflow), shown at every zoom; "idle" until a run.
function addCaption(node, name, className, font, idleText) {
  const caption = document.createElement("div");
  caption.className = className;
  caption.style.cssText = `font: ${font}; color: #e8a060; padding: 2px 6px; white-space: normal; overflow: hidden;`;
  caption.textContent = idleText;
  caption.dataset.state = "idle";
  node.addDOMWidget(name, `video_unlearning_${name}`, caption,
                    { serialize: false, hideOnZoom: false, getMinHeight: () => 22, getMaxHeight: () => 40 });
  return caption;
}

app.registerExtension({
  name: "videoUnlearning.scoreChart",
  nodeCreated(node) {
    if (node.comfyClass !== VECTOR_NODE) return;
    // At most two lines: the rest of the node is the chart's, shown at 1:1 at 100 % zoom in the shipped workflows.
    const caption = addCaption(node, "chart_caption", "video-unlearning-chart-caption", "13px sans-serif",
                               "run to see which layers carry the concept");
    chain(node, "onExecuted", (output) => {
      const chart = output?.[CHART_KEY]?.[0];
      if (!chart) return;
      node.__videoUnlearningChart = chart;
      renderChart(caption, chart);
    });
  },
});

// --- Unlearning Check: its chart arrives as the node's preview image (shown by the editor under the widgets, like
// Low-Rank Refusal Vector's); the recommendation and the table (nodes/check.py check_ui) are shown as text above it,
// so they can be read, copied and searched.
const CHECK_NODE = "VideoUnlearnCheck";
const CHECK_KEY = "video_unlearning_check";

function renderCheck(caption, table, result) {
  caption.textContent = `recommended strength ${result.strength.toFixed(2)} · removed ${Math.round(result.removed * 100)} %`
    + ` · collateral ${result.collateral.toFixed(3)}`
    + (result.guidance != null ? ` (guided, cfg ${result.guidance})` : " (conditional; connect negative for guided)")
    + (result.sweep?.length
      ? ` · sweep: ${result.sweep.map((r) => `${r.label} ${r.strength}`).join(", ")}` : "");
  caption.title = result.reason;
  caption.dataset.state = "ran";
  table.textContent = result.table;
}

app.registerExtension({
  name: "videoUnlearning.checkChart",
  nodeCreated(node) {
    if (node.comfyClass !== CHECK_NODE) return;
    const caption = addCaption(node, "check_caption", "video-unlearning-check-caption", "bold 13px sans-serif",
                               "run to measure removal and collateral per strength");
    const table = document.createElement("pre");
    table.className = "video-unlearning-check-table";
    table.style.cssText = "font: 11px monospace; color: #ddd; margin: 0; padding: 2px 6px; overflow: auto; white-space: pre-wrap;";
    node.addDOMWidget("check_table", "video_unlearning_check_table", table,
                      { serialize: false, hideOnZoom: false, getMinHeight: () => 200, getMaxHeight: () => 230 });
    chain(node, "onExecuted", (output) => {
      const result = output?.[CHECK_KEY]?.[0];
      if (!result) return;
      node.__videoUnlearningCheck = result;
      renderCheck(caption, table, result);
    });
  },
});
