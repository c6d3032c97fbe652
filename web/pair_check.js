// Pair Encoder: live pair count and first problem, checked by the pack's Python parser
// (POST /video_unlearning/check_pairs) so that the editor and the backend never disagree.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const NODE = "VideoUnlearnPairEncoder";
const DEBOUNCE_MS = 300;

function chain(object, method, extra) {
  const original = object[method];
  object[method] = function (...args) {
    const result = original?.apply(this, args);
    extra.apply(this, args);
    return result;
  };
}

async function checkPairs(text) {
  const response = await api.fetchApi("/video_unlearning/check_pairs", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ text }),
  });
  if (!response.ok) throw new Error(`check_pairs answered ${response.status}`);
  return response.json();
}

function render(status, result) {
  // User text reaches the page only through textContent: never parsed as HTML.
  if (result.error) {
    status.textContent = result.line ? `Line ${result.line}: ${result.error}` : result.error;
    status.dataset.state = "error";
  } else {
    status.textContent = `${result.count} valid pairs` + (result.warning ? ` (${result.warning})` : "");
    status.dataset.state = result.warning ? "warning" : "ok";
  }
  const colors = { ok: "#4caf50", warning: "#e0a030", error: "#e05050" };
  status.style.color = colors[status.dataset.state];
}

app.registerExtension({
  name: "videoUnlearning.pairCheck",
  nodeCreated(node) {
    if (node.comfyClass !== NODE) return;
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
          status.textContent = `pair check unavailable: ${error.message}`;
          status.dataset.state = "error";
        }
      }, DEBOUNCE_MS);
    };
    chain(pairs, "callback", schedule);
    pairs.inputEl?.addEventListener("input", schedule);
    chain(node, "onConfigure", schedule); // a loaded workflow fills the widget after creation
    schedule();
  },
});
