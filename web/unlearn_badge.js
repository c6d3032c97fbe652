// Apply Unlearning: a badge that says at a glance whether a workflow unlearns, how strongly, and what.
import { app } from "../../scripts/app.js";

const NODE = "VideoUnlearnApply";

function chain(object, method, extra) {
  const original = object[method];
  object[method] = function (...args) {
    const result = original?.apply(this, args);
    extra.apply(this, args);
    return result;
  };
}

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

function refresh(node) {
  const badge = node.__videoUnlearningBadge;
  if (!badge) return;
  const ran = node.__videoUnlearningRun;
  const enabled = ran ? ran.enabled : Boolean(widget(node, "enabled")?.value ?? true);
  const strength = ran ? ran.strength : Number(widget(node, "strength")?.value ?? 1);
  const concept = (ran?.concept || upstreamConcept(node) || "unnamed concept").trim();
  const active = enabled && strength > 0;
  badge.textContent = active
    ? `UNLEARNING ON · strength ${strength.toFixed(2)} · ${concept}` + (ran ? ` · ${ran.layers} layers` : "")
    : `UNLEARNING OFF · ${concept}`;
  badge.dataset.state = active ? "on" : "off";
  badge.style.background = active ? "#7a2e2e" : "#3a3a3a";
}

app.registerExtension({
  name: "videoUnlearning.badge",
  nodeCreated(node) {
    if (node.comfyClass !== NODE) return;
    const badge = document.createElement("div");
    badge.className = "video-unlearning-badge";
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
