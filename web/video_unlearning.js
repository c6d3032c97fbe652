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

// The root graph. app.graph is deprecated on newer frontends for app.rootGraph, which logs an error when read before
// the graph exists (the mode poll below may run that early); 1.58's rootGraphOrUndefined does not, and 1.27 has
// neither, only app.graph.
const rootGraph = () => app.rootGraphOrUndefined ?? app.graph;

// The link feeding a node's input, or null. Newer frontends (1.58) deprecate reading input.link (it warns) for
// node.getInputLink; a subgraph node's own getInputLink answers for its output side (the link inside it that feeds the
// output of that index), so litegraph's base method is called, and input.link read where there is none.
function inputLink(node, input) {
  const slot = input ? node?.inputs?.indexOf(input) ?? -1 : -1;
  if (slot < 0 || !node.graph) return null;
  const base = globalThis.LiteGraph?.LGraphNode?.prototype?.getInputLink;
  if (base) return base.call(node, slot) ?? null;
  return input.link == null ? null : getLink(node.graph, input.link) ?? null;
}

const connected = (node, input) => inputLink(node, input) != null;

// A display-only widget: kept out of the prompt (options.serialize) and out of a saved workflow's widgets_values (the
// editor's saving reads only the widget's own serialize, as its own video preview widget sets it).
function addDisplayWidget(node, name, type, element, options) {
  const shown = node.addDOMWidget(name, type, element, { ...options, serialize: false });
  shown.serialize = false;
  return shown;
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
  if (result.linked) {
    status.textContent = "pairs come from a link: checked when the workflow runs";
    status.dataset.state = "linked";
  } else if (result.error) {
    // count is the number of valid pairs before the first problem (core.pairs.check_pairs).
    status.textContent = result.line
      ? `Line ${result.line}: ${result.error} (${validPairs(result.count)} above it)`
      : result.error;
    status.dataset.state = "error";
  } else {
    status.textContent = validPairs(result.count) + (result.warning ? ` (${result.warning})` : "");
    status.dataset.state = result.warning ? "warning" : "ok";
  }
  const colors = { ok: "#4caf50", warning: "#e0a030", error: "#e05050", linked: "#a0a0a0" };
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
    addDisplayWidget(node, "pair_status", "video_unlearning_status", status, { hideOnZoom: false });

    // A linked text (a file loader, a primitive) replaces the widget, whose own text would be checked instead.
    const linked = () => (node.inputs ?? []).some((input) => (input.widget?.name ?? input.name) === "pairs" &&
                                                             connected(node, input));
    let timer = null;
    let latest = 0;
    const schedule = () => {
      clearTimeout(timer);
      timer = setTimeout(async () => {
        const ticket = ++latest;
        if (linked()) {
          render(status, { linked: true });
          return;
        }
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
    // Typing in the canvas's text box calls no callback. The box is widget.element; newer frontends warn on inputEl,
    // 1.27's other name for it.
    (pairs.element ?? pairs.inputEl)?.addEventListener?.("input", schedule);
    chain(node, "onConfigure", schedule); // a loaded workflow fills the widget after creation
    chain(node, "onConnectionsChange", schedule);
    // The run's own warnings (nodes/definitions.py PairEncoder): the only check a linked pairs text gets.
    chain(node, "onExecuted", (output) => {
      const run = output?.video_unlearning_pairs?.[0];
      if (!run) return;
      const warnings = run.warnings ?? [];
      status.textContent = `last run: ${validPairs(run.pairs)}` + (warnings.length
        ? `, ${warnings.length} warning(s): ${warnings[0]}` : "");
      status.title = warnings.join("\n");
      status.dataset.state = warnings.length ? "warning" : "ok";
      status.style.color = warnings.length ? "#e0a030" : "#4caf50";
    });
    schedule();
  },
});

// --- Apply Unlearning: a badge that says at a glance whether a workflow unlearns, how strongly, and what.
const APPLY_NODE = "VideoUnlearnApply";
const LOAD_NODE = "VideoUnlearnLoadRefusalVector";
const COMBINE_NODE = "VideoUnlearnCombineVectors";
// A concept label travels refusal vector <- activations <- pairs ("*": a legacy Reroute node). MODEL inputs are never
// followed: an edited model fed to a second Apply or to Collect Activations carries the first Apply's concept.
const CONCEPT_TYPES = new Set(["REFUSAL_VECTOR", "UNLEARN_ACTIVATIONS", "UNLEARN_PAIRS", "*"]);
// litegraph's id for a subgraph's input node: the number -10 on 1.27, the string "-10" on newer frontends (1.58's node
// ids are strings), so ids are compared as strings.
const SUBGRAPH_INPUT_ID = "-10";
const sameId = (a, b) => a != null && b != null && String(a) === String(b);

function widget(node, name) {
  return node?.widgets?.find((w) => w.name === name);
}

// The root graph and every subgraph definition: an Apply inside a subgraph has a badge too.
function allGraphs() {
  const root = rootGraph();
  return root ? [root, ...(root.subgraphs?.values() ?? [])] : [];
}

// Every node of the root graph and of every subgraph definition.
function allNodes() {
  return allGraphs().flatMap((graph) => graph.nodes ?? graph._nodes ?? []);
}

// The subgraph nodes that instantiate `graph` (a subgraph definition), wherever they are.
function instancesOf(graph) {
  return allNodes().filter((n) => n.subgraph === graph);
}

function applyNodes() {
  return allNodes().filter((n) => n.comfyClass === APPLY_NODE);
}

function getLink(graph, id) {
  return graph?.getLink?.(id) ?? graph?.links?.[id];
}

// The node whose output `slot` is meant by (graph, id), seen through subgraph boundaries: into a subgraph node to the
// node behind its output, and out of a subgraph to what feeds its instance (only when there is exactly one instance,
// else which one is meant is unknown).
function outputNode(graph, id, slot, depth) {
  if (!graph || depth > 16) return null;
  if (sameId(id, SUBGRAPH_INPUT_ID)) {
    const instances = instancesOf(graph);
    return instances.length === 1 ? inputSource(instances[0], instances[0].inputs?.[slot], depth + 1) : null;
  }
  const node = graph.getNodeById(id);
  if (node?.isSubgraphNode?.()) {
    const inner = node.subgraph.outputNode?.slots?.[slot]?.getLinks?.()?.[0];
    return inner ? outputNode(node.subgraph, inner.origin_id, inner.origin_slot, depth + 1) : null;
  }
  return node ?? null;
}

// The node feeding an input (e.g. Unlearning Check feeding Apply Unlearning's strength), or null.
function inputSource(node, input, depth = 0) {
  const link = inputLink(node, input);
  return link ? outputNode(node.graph, link.origin_id, link.origin_slot, depth) : null;
}

// Follow the concept-carrying inputs upstream to a Pair Encoder's label or a loaded file's name; Combine Refusal
// Vectors joins its inputs' labels as RefusalBasis.combine does. Every node passed is added to `trail`.
function conceptOf(node, trail, depth = 0) {
  if (!node || depth > 16) return "";
  trail.push(node);
  if (node.comfyClass === PAIR_NODE) return String(widget(node, "concept")?.value ?? "");
  if (node.comfyClass === LOAD_NODE) return String(widget(node, "name")?.value ?? "").replace(/\.safetensors$/, "");
  const sources = (node.inputs ?? []).filter((i) => CONCEPT_TYPES.has(i.type) && connected(node, i))
    .map((i) => inputSource(node, i));
  if (node.comfyClass === COMBINE_NODE) return sources.map((s) => conceptOf(s, trail, depth + 1) || "?").join(" + ");
  for (const source of sources) {
    const found = conceptOf(source, trail, depth + 1);
    if (found) return found;
  }
  return "";
}

// A node's widget values as a run would read them. A widget fed by a link counts as that link's source; one with a
// value control (seed "randomize") is left out, as the editor rewrites it at every queueing.
function widgetValues(node) {
  return (node.widgets ?? [])
    .filter((w) => w.name && w.serialize !== false && w.options?.serialize !== false && !w.linkedWidgets?.length)
    .map((w) => {
      const input = node.inputs?.find((i) => i.widget?.name === w.name && connected(node, i));
      return input ? ["linked", inputSource(node, input)?.id ?? null] : w.value;
    });
}

const MUTED = 2; // litegraph's NEVER: the node and what needs it do not run
const BYPASSED = 4; // its inputs pass to its outputs of the same type; a FLOAT output has none, so it is dropped

// Whether a muted subgraph instance still runs the nodes inside it. ComfyUI 0.3.64's frontend (1.27) sends them, and
// they run; newer frontends send none of them (1.58; 1.39 fails to build the prompt), so there it mutes them.
function mutedHolderRuns() {
  const [major, minor] = String(globalThis.__COMFYUI_FRONTEND_VERSION__ ?? "1.27").split(".").map(Number);
  return major < 1 || (major === 1 && minor <= 27);
}

// How a subgraph instance treats what it holds: "bypassed" (passed through), "muted" (not run), "partly ..." or "",
// by its own mode and the instances holding it in turn.
function holderMode(holder, depth) {
  const mode = runMode(holder, depth + 1);
  return mode === "muted" && mutedHolderRuns() ? "" : mode;
}

// How a node runs: "muted" or "bypassed" (itself, or every subgraph instance holding it muted or bypassed; both:
// "bypassed or muted"), "partly bypassed" (some of the instances of its subgraph bypassed: the badge of the one node
// inside cannot say; "partly muted" likewise), or "".
function runMode(node, depth = 0) {
  if (!node || depth > 16) return "";
  if (node.mode === MUTED) return "muted";
  if (node.mode === BYPASSED) return "bypassed";
  if (!node.graph || node.graph === rootGraph()) return "";
  const holders = instancesOf(node.graph).map((holder) => holderMode(holder, depth));
  const off = holders.filter(Boolean);
  if (!off.length) return "";
  const kinds = [...new Set(off.map((mode) => mode.replace(/^partly /, "")))].sort().join(" or ");
  return off.length < holders.length || off.some((mode) => mode.startsWith("partly")) ? `partly ${kinds}` : kinds;
}
const partly = (mode) => mode.startsWith("partly");
// Whether a strength or enabled source in this mode has its link dropped when queueing, so Apply's own widget runs:
// bypassed on every editor; muted on newer ones (1.58 sends the widget's value), while 1.27 keeps the link to the
// unsent node and the server refuses the prompt ("Required input is missing").
const linkDropped = (mode) => mode === "bypassed" || (mode === "muted" && !mutedHolderRuns());

// Every node a node's result depends on (itself and everything upstream of it), for the key of a run's result: a
// change anywhere there may change what the run would do.
function upstream(node) {
  const seen = new Set();
  const queue = node ? [node] : [];
  while (queue.length && seen.size < 256) {
    const current = queue.shift();
    if (seen.has(current)) continue;
    seen.add(current);
    for (const input of current.inputs ?? []) {
      const source = inputSource(current, input);
      if (source && !seen.has(source)) queue.push(source);
    }
  }
  return [...seen];
}

// The sources whose boolean widget "value" is what they output: ComfyUI's Boolean primitive and the editor's own.
const BOOLEAN_SOURCES = new Set(["PrimitiveBoolean", "PrimitiveNode"]);

// What the badge shows before a run, with a key of everything in the graph it is computed from: this node's widgets
// and run mode, everything upstream of the strength's and enabled's sources, and every node on the way to the concept
// label (their ids too, so that another source with the same label counts as a change). A run's result is shown only
// while the graph still has the key it ran with.
function graphView(node) {
  const trail = [];
  const concept = conceptOf(node, trail);
  const linked = (name) => node.inputs?.find((i) => i.name === name && connected(node, i));
  const feeder = inputSource(node, linked("strength"));
  const enabledFeeder = inputSource(node, linked("enabled"));
  const modes = [node, feeder, enabledFeeder].map((n) => runMode(n));
  const key = JSON.stringify([modes, ...[...trail, ...upstream(feeder), ...upstream(enabledFeeder)]
    .map((n) => [n.id, n.type, widgetValues(n)])]);
  const own = Boolean(widget(node, "enabled")?.value ?? true);
  let enabled = own;
  let enabledNote = "";
  if (linked("enabled")) {
    // A bypassed source's link is dropped when queueing, so the widget's own value runs; a muted one fails the run.
    const value = BOOLEAN_SOURCES.has(enabledFeeder?.type) ? widget(enabledFeeder, "value")?.value : null;
    enabled = linkDropped(modes[2]) ? own : typeof value === "boolean" && !modes[2] ? value : null;
    enabledNote = !enabledFeeder ? "enabled from a link the badge cannot follow"
      : linkDropped(modes[2]) ? ""
        : modes[2] === "muted" ? `enabled from ${title(enabledFeeder)} (muted: the run will fail)`
          : `enabled from ${title(enabledFeeder)}`;
  }
  return {
    enabled, enabledNote,
    strength: Number(widget(node, "strength")?.value ?? 1),
    strengthLinked: Boolean(linked("strength")),
    mode: modes[0], feederMode: modes[1], feeder, concept, key,
    inputs: [node, ...trail, ...upstream(feeder), ...upstream(enabledFeeder)],
  };
}

const title = (n) => n.title || n.type;

function refresh(node) {
  const badge = node.__videoUnlearningBadge;
  if (!badge) return;
  const view = graphView(node);
  for (const source of view.inputs) badgeInputs.add(source);
  const concept = (view.concept || "unnamed concept").trim();
  if (view.mode && !partly(view.mode)) {  // bypassed: the MODEL passes through; muted: no run
    show(badge, "off", `UNLEARNING OFF (${view.mode}) · ${concept}`);
    return;
  }
  if (view.mode) {
    show(badge, "unknown", `UNLEARNING ON? (its subgraph is ${view.mode}: some of its uses only) · ${concept}`);
    return;
  }
  const ran = node.__videoUnlearningRun?.key === view.key ? node.__videoUnlearningRun : null;
  const enabled = ran ? ran.enabled : view.enabled;
  // A strength fed by a link (Unlearning Check's recommendation) is known only after a run; a bypassed feeder's link
  // is dropped when queueing, so the strength widget's own value runs.
  const fedStrength = !ran && view.strengthLinked && !linkDropped(view.feederMode);
  const strength = ran ? ran.strength : fedStrength ? 1 : view.strength;
  const label = (ran?.concept || concept).trim();
  const shown = fedStrength
    ? (view.feeder ? `strength from ${title(view.feeder)}` : "strength from a link the badge cannot follow")
      + (view.feederMode ? ` (${view.feederMode}: the run will fail)` : "")
    : `strength ${strength.toFixed(2)}`
      + (!ran && linkDropped(view.feederMode) ? ` (${title(view.feeder)} ${view.feederMode})` : "");
  if (!ran && (enabled == null || view.enabledNote.includes("will fail"))) {
    show(badge, "unknown", `UNLEARNING ON? · ${view.enabledNote} · ${shown} · ${label}`);
    return;
  }
  const active = enabled && strength > 0;
  show(badge, active ? "on" : "off", active
    ? `UNLEARNING ON · ${shown} · ${label}` + (ran ? ` · ${ran.layers} layers` : "")
    : `UNLEARNING OFF · ${label}`);
}

function show(badge, state, text) {
  badge.textContent = text;
  badge.dataset.state = state;
  badge.style.background = { on: "#7a2e2e", off: "#3a3a3a", unknown: "#6a5a2a" }[state];
}

// Any link or widget change anywhere may change what a badge shows; a burst of them (a loaded workflow, typing)
// costs one refresh.
let refreshQueued = false;
// The nodes some badge is computed from as of the latest refresh (each Apply, its concept's way, everything upstream
// of its strength's and enabled's sources): a widget edited on any other node cannot change a badge.
let badgeInputs = new WeakSet();
function refreshAllBadges() {
  if (refreshQueued) return;
  refreshQueued = true;
  setTimeout(() => {
    refreshQueued = false;
    badgeInputs = new WeakSet();
    for (const node of applyNodes()) refresh(node);
  }, 0);
}

// A run mode changed (Ctrl+B, Ctrl+M: on Apply, on its strength's source, on a subgraph holding it) calls back nothing
// an extension can chain, so the nodes' modes are compared twice a second (one number per node) and the badges
// refreshed when one changed. Until 2026-12-06 a bypassed or muted Apply kept saying UNLEARNING ON.
let lastModes = "";
setInterval(() => {
  const modes = allNodes().map((n) => `${n.id}:${n.mode ?? 0}`).join();
  if (modes !== lastModes) {
    lastModes = modes;
    refreshAllBadges();
  }
}, 500);

// A run's result belongs to the graph as it was queued, not as it is when the result arrives (minutes later, maybe
// edited meanwhile). The key of the latest accepted queueing is taken; while several differing prompts wait in the
// queue an earlier one's result is matched with the latest graph until that one's result replaces it.
let runningPrompt = null;
api.addEventListener("execution_start", ({ detail }) => { runningPrompt = detail?.prompt_id ?? null; });
// A failed or stopped run drops the results of earlier runs that it did not renew: they no longer say what the
// workflow does.
function dropStaleRuns({ detail }) {
  for (const node of applyNodes()) {
    if (node.__videoUnlearningRun && node.__videoUnlearningRun.prompt !== detail?.prompt_id) {
      node.__videoUnlearningRun = null;
    }
  }
  refreshAllBadges();
}
api.addEventListener("execution_error", dropStaleRuns);
api.addEventListener("execution_interrupted", dropStaleRuns);
// The editor calls afterQueued only for an accepted prompt; one left queuing was rejected (the server's validation
// failed), and that too is a failed run.
function dropRejected() {
  for (const node of applyNodes()) {
    if (node.__videoUnlearningQueuing == null) continue;
    node.__videoUnlearningQueuing = null;
    node.__videoUnlearningRun = null;
  }
  refreshAllBadges();
}
// 1.27 fires promptQueued when a queueing ends, accepted or not; 1.58 only when it had at least one prompt accepted.
// The server's answer to each prompt is seen by wrapping api.queuePrompt, which throws for a rejected one.
api.addEventListener("promptQueued", dropRejected);
const queuePrompt = api.queuePrompt;
api.queuePrompt = async function (...args) {
  try {
    return await queuePrompt.apply(this, args);
  } catch (error) {
    dropRejected();
    throw error;
  }
};

// A widget set from code, typed into a text box or edited on a Vue node (newer frontends' "Nodes 2.0": they call only
// its callback, never the node's onWidgetChanged) may be upstream of some Apply Unlearning: its callback refreshes
// the badges. Display widgets (serialize false) are left alone.
function watchWidget(w, node) {
  if (!w || w.serialize === false || w.options?.serialize === false || w.__videoUnlearningWatched) return;
  w.__videoUnlearningWatched = true;
  // Typing into an unrelated node's text box calls its callback on every keystroke: only a node some badge reads
  // refreshes them (links change through onConnectionsChange, which refreshes every badge and this set).
  chain(w, "callback", () => { if (badgeInputs.has(node)) refreshAllBadges(); });
}

app.registerExtension({
  name: "videoUnlearning.badge",
  nodeCreated(node) {
    // Every node: a link or widget change anywhere may be upstream of some Apply Unlearning. The canvas calls
    // onWidgetChanged; widgets added later (a legacy Primitive node makes its widget when first connected) are
    // watched as they are added.
    chain(node, "onConnectionsChange", refreshAllBadges);
    chain(node, "onWidgetChanged", refreshAllBadges);
    for (const w of node.widgets ?? []) watchWidget(w, node);
    const addCustomWidget = node.addCustomWidget;
    if (addCustomWidget) {
      node.addCustomWidget = function (...args) {
        const added = addCustomWidget.apply(this, args);
        watchWidget(added, this);
        return added;
      };
    }
    if (node.comfyClass !== APPLY_NODE) return;
    const badge = document.createElement("div");
    badge.className = "video-unlearning-badge";
    badge.title = "Apply Unlearning: whether this workflow removes a concept, how strongly, and which one";
    badge.style.cssText = "font: bold 12px sans-serif; color: #fff; padding: 3px 8px; border-radius: 8px; "
      + "text-align: center;";
    node.__videoUnlearningBadge = badge;
    const shown = addDisplayWidget(node, "unlearning_badge", "video_unlearning_badge", badge, { hideOnZoom: false });
    shown.beforeQueued = () => { node.__videoUnlearningQueuing = graphView(node).key; };
    shown.afterQueued = () => {
      node.__videoUnlearningQueued = node.__videoUnlearningQueuing;
      node.__videoUnlearningQueuing = null;
    };
    chain(node, "onConfigure", refreshAllBadges);
    chain(node, "onExecuted", (output) => {
      const info = output?.video_unlearning?.[0];
      if (!info) return;
      const key = node.__videoUnlearningQueued ?? graphView(node).key;
      node.__videoUnlearningRun = { ...info, key, prompt: runningPrompt };
      refresh(node);
    });
    refreshAllBadges();
  },
  afterConfigureGraph() {
    refreshAllBadges();
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
    ? `best: ${best.label} (separation ${best.value.toFixed(2)}) · ${chart.layers} layers, `
      + `${chart.bars.length} distinct input${chart.bars.length === 1 ? "" : "s"}`
    : "no layers";
  // Inputs that kept fewer directions than the rank (only those of positive contrast are kept) are named too.
  const narrow = Object.entries(chart.narrow_inputs ?? {})
    .map(([input, kept]) => `${input}: ${kept} direction(s) kept`);
  // Pairs that do not carry the concept as the others do (swapped sides, no concept): named first, in full on hover.
  const notes = chart.pair_notes ?? [];
  if (notes.length) {
    caption.textContent = `WARNING: ${notes.length} pair(s) look wrong: ${notes[0].split(":")[0]}`
      + `${notes.length > 1 ? ", ..." : ""} (hover) · ${caption.textContent}`;
  }
  // A concept name the chart's font has no glyphs for (Chinese, Cyrillic, "Café": nodes/plot.py) is left out of the
  // picture, which says so; the caption names it (the page renders any script).
  if (chart.concept && chart.concept_in_picture === false) {
    caption.textContent = `${chart.concept} · ${caption.textContent}`;
  }
  caption.title = [...notes, ...chart.bars.map((bar) => `${bar.label}: ${bar.value.toFixed(3)}`), ...narrow]
    .join("\n");
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
  addDisplayWidget(node, name, `video_unlearning_${name}`, caption,
                   { hideOnZoom: false, getMinHeight: () => 22, getMaxHeight: () => 40 });
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
  caption.textContent = `recommended strength ${result.strength.toFixed(2)}`
    // one decimal, as the table: two vectors of one concept differ by about a point (docs/benchmarks.md)
    + ` · removed ${(result.removed * 100).toFixed(1)} %`
    + ` · collateral ${result.collateral.toFixed(3)}`
    + (result.guidance == null ? " (conditional; connect negative for guided)"
      // nodes/check.py check_ui: a negative naming the concept is not read as guided (core/check.py)
      : result.collateral_read === "conditional" ? " (conditional: the negative prompt carries the concept)"
      : ` (guided, cfg ${result.guidance})`)
    + (result.sweep?.length
      ? ` · sweep: ${result.sweep.map((r) => `${r.label} ${r.strength}`).join(", ")}`
      : result.sweep_skipped ? " · sweep not run (see the table)" : "")
    + (result.warning ? " · WARNING: the edit moves the safe prompts toward the concept (pair sides swapped?)" : "")
    + (result.negative_warning ? " · WARNING: the negative prompt names the concept; judge the edit on its own" : "")
    // nodes/check.py token_count_note: LTX-Video and Mochi read the mask, so such pairs never read 100 % removed
    + (result.token_counts ? " · pair sides differ in token count: removal stops short of 100 % (see the table)" : "")
    // core/check.py script_warning: pooled removal hid a script whose pairs keep the concept
    + (result.script_warning ? " · WARNING: pairs in one script are removed less (see the table)" : "")
    // core/check.py pair_warning: pooled removal hid a validation pair whose wording may keep the concept
    + (result.pair_warning ? " · WARNING: a validation pair is removed less (see the table)" : "");
  caption.title = [result.reason, result.warning, result.negative_warning, result.token_counts, result.script_warning,
                   result.pair_warning].filter(Boolean).join("\n");
  caption.dataset.state = "ran";
  table.textContent = result.table;
}

// A node's figures as monospaced text under its widgets, to be read, copied and searched.
function addTable(node, name, className, minHeight, maxHeight) {
  const table = document.createElement("pre");
  table.className = className;
  table.style.cssText = "font: 11px monospace; color: #ddd; margin: 0; padding: 2px 6px; overflow: auto; "
    + "white-space: pre-wrap;";
  addDisplayWidget(node, name, `video_unlearning_${name}`, table,
                   { hideOnZoom: false, getMinHeight: () => minHeight, getMaxHeight: () => maxHeight });
  return table;
}

app.registerExtension({
  name: "videoUnlearning.checkChart",
  nodeCreated(node) {
    if (node.comfyClass !== CHECK_NODE) return;
    const caption = addCaption(node, "check_caption", "video-unlearning-check-caption", "bold 13px sans-serif",
                               "run to measure removal and collateral per strength");
    const table = addTable(node, "check_table", "video-unlearning-check-table", 200, 230);
    chain(node, "onExecuted", (output) => {
      const result = output?.[CHECK_KEY]?.[0];
      if (!result) return;
      node.__videoUnlearningCheck = result;
      renderCheck(caption, table, result);
    });
  },
});

// --- Unlearning Audit: an edited model against its original (nodes/audit.py); its figures and warnings as text.
const AUDIT_NODE = "VideoUnlearnAudit";
const AUDIT_KEY = "video_unlearning_audit";

function renderAudit(caption, table, result) {
  const read = { guided: ` (guided, cfg ${result.guidance})`,
                 conditional: " (conditional: the negative prompt carries the concept)",
                 collateral: " (conditional; connect negative for guided)" }[result.collateral_read] ?? "";
  caption.textContent = `removed ${Math.round(result.removed * 100)} %`
    + ` · collateral ${result.headline_collateral.toFixed(3)}${read}`
    + (result.warnings.length ? ` · ${result.warnings.length} warning(s) (see the table)` : "");
  caption.title = result.warnings.join("\n");
  caption.dataset.state = "ran";
  table.textContent = result.table;
}

app.registerExtension({
  name: "videoUnlearning.audit",
  nodeCreated(node) {
    if (node.comfyClass !== AUDIT_NODE) return;
    const caption = addCaption(node, "audit_caption", "video-unlearning-audit-caption", "bold 13px sans-serif",
                               "run to compare the edited model with the original");
    const table = addTable(node, "audit_table", "video-unlearning-audit-table", 120, 160);
    chain(node, "onExecuted", (output) => {
      const result = output?.[AUDIT_KEY]?.[0];
      if (!result) return;
      node.__videoUnlearningAudit = result;
      renderAudit(caption, table, result);
    });
  },
});

// --- Save Refusal Vector and Export Unlearning as LoRA: which file the run wrote (the name a loader lists, relative to
// the folder) and, for an fp8 export, the note on what a LoRA loader does there. ComfyUI's editor shows no "text"
// output of its own, so until 2026-12-06 a second save's new number went unseen.
const SAVE_NODES = new Set(["VideoUnlearnSaveRefusalVector", "VideoUnlearnExportLoRA"]);

app.registerExtension({
  name: "videoUnlearning.savedFile",
  nodeCreated(node) {
    if (!SAVE_NODES.has(node.comfyClass)) return;
    const caption = addCaption(node, "saved_file", "video-unlearning-saved-file", "12px sans-serif",
                               "run to write the file");
    chain(node, "onExecuted", (output) => {
      const [name, ...notes] = output?.text ?? [];
      if (!name) return;
      caption.textContent = `wrote ${name}` + (notes.length ? " · see the note (hover)" : "");
      caption.title = notes.join("\n");
      caption.dataset.state = "ran";
    });
  },
});

// --- Workflows saved before 2026-12-06 held '' for each display widget in widgets_values, and newer inputs took the
// display widgets' places: opened now, such a '' lands in Unlearning Check's cfg (Queue then fails with "could not
// convert string to float") or Low-Rank Refusal Vector's edit (accepted, and the fit fails after Collect Activations
// ran). A value the widget cannot hold gets its default back when the node is configured from a saved workflow.
const LEGACY_REPAIRS = {
  [CHECK_NODE]: { cfg: (value) => (typeof value === "number" && Number.isFinite(value) ? null : 6) },
  [VECTOR_NODE]: { edit: (value, widget) => (widget.options?.values?.includes(value) ? null : "direction") },
};

app.registerExtension({
  name: "videoUnlearning.legacyWidgets",
  nodeCreated(node) {
    const repairs = LEGACY_REPAIRS[node.comfyClass];
    if (!repairs) return;
    chain(node, "onConfigure", function () {
      for (const [name, repair] of Object.entries(repairs)) {
        const widget = this.widgets?.find((w) => w.name === name);
        const value = widget ? repair(widget.value, widget) : null;
        if (value == null) continue;
        console.warn(`[video unlearning] ${this.title} (#${this.id}): ${name} was ${JSON.stringify(widget.value)} `
          + `in the saved workflow (a display widget's value from before 2026-12-06); set to ${value}`);
        widget.value = value;
      }
    });
  },
});

// --- A run served from ComfyUI's cache: ComfyUI 0.3.64 sends "executed" again only for output nodes, so a reloaded
// editor (or a second tab) showed Apply's badge, the check's recommendation and the chart's labels as before any run.
// Their UI outputs are in the prompt's history: handed to the nodes as if they had run.
const cachedByPrompt = new Map();
api.addEventListener("execution_cached", ({ detail }) => {
  if (detail?.prompt_id) cachedByPrompt.set(detail.prompt_id, detail.nodes ?? []);
});

// "12:5" is node 5 inside the subgraph that node 12 instantiates.
function nodeByExecutionId(id) {
  let graph = rootGraph();
  let node = null;
  for (const part of String(id).split(":")) {
    node = graph?.getNodeById?.(Number(part)) ?? graph?.getNodeById?.(part);
    graph = node?.subgraph;
  }
  return node ?? null;
}

for (const ended of ["execution_error", "execution_interrupted"]) {
  api.addEventListener(ended, ({ detail }) => cachedByPrompt.delete(detail?.prompt_id));
}

// ComfyUI sends execution_success just before it stores the prompt's history: asked again a few times until it is
// there.
async function promptOutputs(promptId, tries = 10) {
  for (let attempt = 0; attempt < tries; attempt++) {
    const response = await api.fetchApi(`/history/${encodeURIComponent(promptId)}`);
    const entry = response.ok ? (await response.json())?.[promptId] : null;
    if (entry) return entry.outputs ?? {};
    await new Promise((resolve) => setTimeout(resolve, 200 * (attempt + 1)));
  }
  return {};
}

api.addEventListener("execution_success", async ({ detail }) => {
  const cached = cachedByPrompt.get(detail?.prompt_id) ?? [];
  cachedByPrompt.delete(detail?.prompt_id);
  const nodes = cached.map((id) => [id, nodeByExecutionId(id)])
    .filter(([, node]) => node?.comfyClass?.startsWith("VideoUnlearn"));
  if (!nodes.length) return;
  const outputs = await promptOutputs(detail.prompt_id);
  for (const [id, node] of nodes) if (outputs[id]) node.onExecuted?.(outputs[id]);
});
