"""The pack in ComfyUI's real editor (the comfyui-frontend-package ComfyUI serves), in headless Chromium.

Checks: every shipped workflow opens with its group titles visible (not under the editor's top bar); the Pair
Encoder counts valid pairs and names the first bad line while one types (through the pack's Python route), user
text is shown as text and never parsed as HTML; the Low-Rank Refusal Vector node shows its score chart after a
run, with the chart's labels (sent next to the image) as text on the node, for a shared input and for per-block
layers; Apply Unlearning carries an on/off, strength and concept badge before and after a run; in the side-by-side
workflow Unlearning Check runs, shows its chart on the node with its recommended strength and table as text, and
that strength reaches Apply Unlearning (whose MODEL Unlearning Audit then shows as text on its node), whose badge shows that run's result only while the graph is the one that ran
and drops it after a failed run. The badge names the concept on its refusal vector's way only (a second Apply fed
the first one's MODEL names its own), joins a combined vector's concepts and refreshes on any link change upstream,
also inside a subgraph. Display widgets are neither saved with a workflow nor sent in the prompt, and a workflow
saved with their old extra values still loads; one whose old '' values land in Unlearning Check's cfg or Low-Rank
Refusal Vector's edit gets those widgets' defaults back, with a console warning. A run's warnings (a pair written
the other way round, an edit that moves the safe prompts toward the concept) reach the node captions. Chinese pairs, a
line with the full-width bar and a Chinese concept reach the pair check, the badge and the chart's caption as typed.
Every pack node's info button opens its help page (``web/docs/``) in the editor's node docs panel. With the
editor's language set to Chinese, the nodes show their Chinese labels (``locales/zh/``), the info button opens the
Chinese help page, and the shipped workflows send the same prompt as in English. Screenshots go to
``out/browser/`` (the charts at 100 % zoom in ``4_score_chart_100pct.png``, ``5_score_chart_blocks_100pct.png``
and ``8_check_chart_100pct.png``; Apply Unlearning's help page in ``9_node_help_apply.png``).

Each test runs on the editor ComfyUI pins (comfyui-frontend-package 1.27.10) and those marked ``both_frontends`` on a
newer one too (1.58.1 through ``dev.py test``; ``conftest.py``), its screenshots in ``out/browser/newer-frontend/``.
There the pack may call none of the editor's deprecated APIs (litegraph's deprecation warnings, traced to the pack's
file), and an edit on a Vue node ("Nodes 2.0", setting ``Comfy.VueNodes.Enabled``) refreshes the badge as one on the
canvas does.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil

import pytest

from comfy_host import REPO_ROOT, find_comfyui, http_json
from frontends import NEWER, both_frontends, newer_frontend

pytestmark = pytest.mark.browser
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
SHOTS = REPO_ROOT / "out" / "browser"

if find_comfyui() is None:
    pytest.skip("BROWSER TESTS SKIPPED: no ComfyUI found at $COMFYUI_PATH, ../.. or ~/ComfyUI", allow_module_level=True)
if CHROMIUM is None:
    pytest.skip("BROWSER TESTS SKIPPED: no Chromium (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="BROWSER TESTS SKIPPED: pip install playwright")

FIND = "(cls) => window.app.graph._nodes.find((n) => n.comfyClass === cls)"
SWAP_AND_SHRINK = """
async () => {
  const g = window.app.graph;
  const old = g._nodes.find((n) => n.comfyClass === "CLIPLoader");
  const tiny = window.LiteGraph.createNode("TinyWanCLIPLoader");
  tiny.pos = [old.pos[0], old.pos[1]];
  g.add(tiny);
  for (const target of g._nodes.filter((n) => (n.inputs ?? []).some((i) => i.type === "CLIP" && i.link != null))) {
    tiny.connect(0, target, target.findInputSlot("clip"));
  }
  g.remove(old);
  const set = (cls, name, value) => g._nodes.filter((n) => n.comfyClass === cls).forEach((n) => {
    const w = n.widgets.find((x) => x.name === name); if (w) w.value = value; });
  set("VideoUnlearnCollectActivations", "width", 64); set("VideoUnlearnCollectActivations", "height", 64);
  set("VideoUnlearnCollectActivations", "timesteps", "1");
  set("VideoUnlearnPairEncoder", "neutral_prompts", "a dog in a park\\na red car");
  set("EmptyHunyuanLatentVideo", "width", 64); set("EmptyHunyuanLatentVideo", "height", 64);
  set("EmptyHunyuanLatentVideo", "length", 5); set("KSampler", "steps", 2);
  await window.app.queuePrompt(0);
}
"""
ADD_APPLY = """
() => {
  const g = window.app.graph;
  const source = g._nodes.find((n) => n.comfyClass === "VideoUnlearnRefusalVector");
  const apply = window.LiteGraph.createNode("VideoUnlearnApply");
  apply.pos = [source.pos[0], source.pos[1] + 480];
  g.add(apply);
  source.connect(0, apply, apply.findInputSlot("refusal_vector"));
}
"""
SET_WIDGET = """
([cls, name, value]) => {
  const node = window.app.graph._nodes.find((n) => n.comfyClass === cls);
  const w = node.widgets.find((x) => x.name === name);
  w.value = value;
  w.callback?.(value);
}
"""

# Every Apply Unlearning badge, root graph and subgraphs, by its node's title.
BADGES = """
() => Object.fromEntries([window.app.graph, ...window.app.graph.subgraphs.values()].flatMap((g) => g.nodes)
  .filter((n) => n.comfyClass === "VideoUnlearnApply").map((n) => [n.title, n.__videoUnlearningBadge.textContent]))
"""
# A second concept measured on the first Apply's output (its MODEL feeds the second Apply and Collect Activations),
# and both concepts combined into a third Apply. Nodes are reachable later as window.__t.
BUILD_CHAIN = """
() => {
  const g = window.app.graph;
  const find = (cls) => g._nodes.find((n) => n.comfyClass === cls);
  const add = (cls, title, x, y) => {
    const n = window.LiteGraph.createNode(cls); n.pos = [x, y]; if (title) n.title = title; g.add(n); return n; };
  const link = (from, to, name) => from.connect(0, to, to.findInputSlot(name));
  const t = { pe1: find("VideoUnlearnPairEncoder"), col1: find("VideoUnlearnCollectActivations"),
              vec1: find("VideoUnlearnRefusalVector"), unet: find("UNETLoader") };
  const model = find("ModelSamplingSD3");
  t.first = add("VideoUnlearnApply", "first", 0, 1100);
  link(model, t.first, "model"); link(t.vec1, t.first, "refusal_vector");
  t.pe2 = add("VideoUnlearnPairEncoder", null, 400, 1100);
  t.pe2.widgets.find((w) => w.name === "concept").value = "Omega";
  link(find("CLIPLoader"), t.pe2, "clip");
  t.col2 = add("VideoUnlearnCollectActivations", null, 900, 1100);
  link(t.first, t.col2, "model"); link(t.pe2, t.col2, "pairs");
  t.vec2 = add("VideoUnlearnRefusalVector", null, 1300, 1100);
  link(t.col2, t.vec2, "activations");
  t.second = add("VideoUnlearnApply", "second", 1700, 1100);
  link(t.first, t.second, "model"); link(t.vec2, t.second, "refusal_vector");
  t.combine = add("VideoUnlearnCombineVectors", null, 1300, 1600);
  link(t.vec1, t.combine, "refusal_vector_1"); link(t.vec2, t.combine, "refusal_vector_2");
  t.combined = add("VideoUnlearnApply", "combined", 1700, 1600);
  link(model, t.combined, "model"); link(t.combine, t.combined, "refusal_vector");
  window.__t = t;
}
"""
# As the editor queues a prompt (beforeQueued, accepted: afterQueued), then the node's result as its run sends it.
FAKE_RUN = """
([title, layers]) => {
  const node = window.__t[title];
  for (const w of node.widgets) w.beforeQueued?.();
  for (const w of node.widgets) w.afterQueued?.();
  node.onExecuted({ video_unlearning: [{ enabled: true, strength: 1, concept: "Rolex", layers }] });
}
"""
DISPLAY_WIDGETS = ["pair_status", "unlearning_badge", "chart_caption", "check_caption", "check_table", "saved_file",
                   "audit_caption", "audit_table"]
# Per pack node: its saved widgets_values, the values of its widgets that are not display-only, and the keys of its
# prompt (API format) inputs.
SAVED = f"""
async () => {{
  const display = {json.dumps(DISPLAY_WIDGETS)};
  const {{ workflow, output }} = await window.app.graphToPrompt();
  return workflow.nodes.filter((n) => n.type.startsWith("VideoUnlearn")).map((saved) => {{
    const node = window.app.graph.getNodeById(saved.id);
    return {{ id: saved.id, type: saved.type, saved: saved.widgets_values,
             values: node.widgets.filter((w) => !display.includes(w.name)).map((w) => w.value),
             prompt: Object.keys(output[String(saved.id)]?.inputs ?? {{}}) }};
  }});
}}
"""


# For each group: is its title visible? The title strip's points in page coordinates (through the canvas's own
# transform) must hit the canvas itself, not the menu bar, tabs or side bar drawn over it. Groups right of the
# window are skipped (one pans to them).
GROUP_TITLES_VISIBLE = """
() => {
  const canvas = window.app.canvas;
  const rect = canvas.canvas.getBoundingClientRect();
  const [ox, oy] = canvas.ds.offset, scale = canvas.ds.scale;
  const page = (x, y) => [rect.left + (x + ox) * scale, rect.top + (y + oy) * scale];
  return window.app.graph._groups.map((group) => {
    const [gx, gy, gw] = group._bounding ?? group.bounding;
    const points = [page(gx + 12, gy + 14), page(gx + Math.min(gw - 12, 220), gy + 14)];
    const shown = points.filter(([x, y]) => x < window.innerWidth && y < window.innerHeight);
    const covered = shown.map(([x, y]) => document.elementFromPoint(x, y))
                         .filter((element) => element !== canvas.canvas)
                         .map((element) => element ? `${element.tagName}.${element.className}` : "nothing");
    return { title: group.title, top: points[0][1], onScreen: shown.length, covered };
  });
}
"""
# Show one node at 100 % zoom near the canvas's top-left corner (below the menu bar) and return its page rectangle.
SHOW_AT_100 = """
(cls) => {
  const canvas = window.app.canvas;
  const node = window.app.graph._nodes.find((n) => n.comfyClass === cls);
  canvas.ds.scale = 1;
  canvas.ds.offset[0] = 80 - node.pos[0];
  canvas.ds.offset[1] = 140 - node.pos[1];
  canvas.setDirty(true, true);
  canvas.draw(true, true);
  const rect = canvas.canvas.getBoundingClientRect();
  return [rect.left + 80 - 10, rect.top + 140 - 40, node.size[0] + 20, node.size[1] + 50];
}
"""
CHART = f"""() => {{ const node = ({FIND})('VideoUnlearnRefusalVector');
                     const caption = document.querySelector('.video-unlearning-chart-caption');
                     return {{ chart: node.__videoUnlearningChart ?? null, caption: caption?.textContent ?? null,
                               tooltip: caption?.title ?? null }}; }}"""
CHART_RAN = f"""(runs) => {{ const node = ({FIND})('VideoUnlearnRefusalVector');
                     const imgs = node.imgs ?? [];
                     return (node.__videoUnlearningCharts ?? 0) >= runs && imgs.length > 0 && imgs[0].complete
                            && imgs[0].naturalWidth > 0; }}"""
CHECK_RAN = f"""() => {{ const node = ({FIND})('VideoUnlearnCheck');
                       const imgs = node.imgs ?? [];
                       return node.__videoUnlearningCheck != null && imgs.length > 0 && imgs[0].complete
                              && imgs[0].naturalWidth > 0; }}"""

# The canvas's nodes unless a test asks for Vue nodes (settings persist on the server the tests share). Newer editors
# report missing models and media in an overlay over the canvas's top right (the tests' server has no vector files).
QUIET_SETTINGS = {"Comfy.TutorialCompleted": True, "Comfy.Workflow.ShowMissingModelsWarning": False,
                  "Comfy.Validation.Workflows": False, "Comfy.VueNodes.Enabled": False,
                  "Comfy.ErrorSystem.ShowMissingModels": False, "Comfy.Workflow.ShowMissingMediaWarning": False,
                  "Comfy.Locale": "en"}  # English labels, whatever language Chromium reports
# litegraph's deprecation warnings whose stack passes through the pack's file, each with its first stack frames (every
# call is reported, not only a message's first: alwaysRepeatWarnings). 1.27.10 has the same hook.
RECORD_DEPRECATIONS = """
() => {
  window.__packDeprecations = [];
  const lg = window.LiteGraph;
  if (!lg?.onDeprecationWarning) return;
  lg.alwaysRepeatWarnings = true;
  lg.onDeprecationWarning.push((message) => {
    const stack = new Error().stack ?? "";
    if (stack.includes("video_unlearning.js")) window.__packDeprecations.push(`${message} @ ${stack.slice(0, 400)}`);
  });
}
"""


def _open(page, url, workflow, settings=None):
    """Open a shipped workflow by file name, or a workflow given as data."""
    for key, value in {**QUIET_SETTINGS, **(settings or {})}.items():  # no first-run template browser, no dialog
        http_json(f"{url}/settings/{key}", value)
    page.goto(url)
    page.wait_for_function("window.app && window.app.graph && window.LiteGraph", timeout=90_000)
    page.wait_for_function("window.app.extensions.some((e) => e.name === 'videoUnlearning.badge')", timeout=30_000)
    page.evaluate(RECORD_DEPRECATIONS)
    data = workflow if isinstance(workflow, dict) else json.loads((REPO_ROOT / "workflows" / workflow).read_text())
    page.evaluate("async (wf) => { await window.app.loadGraphData(wf); }", data)


def _frontend(page) -> tuple[int, ...]:
    """The editor's version, e.g. (1, 27, 10)."""
    return tuple(int(part) for part in page.evaluate("() => window.__COMFYUI_FRONTEND_VERSION__").split("."))


def _no_pack_deprecations(page):
    assert page.evaluate("() => window.__packDeprecations") == []


def _status(page):
    return page.locator(".video-unlearning-pair-status").first


@pytest.fixture(scope="module", autouse=True)
def fresh_screenshots():
    """The screenshots in out/browser/ always come from one run."""
    for folder in (SHOTS, SHOTS / NEWER):
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.png"):
            stale.unlink()


@pytest.fixture
def shots(request):
    """Where this test's screenshots go: out/browser/ on the pinned editor, out/browser/newer-frontend/ on the newer."""
    return SHOTS / NEWER if request.node.callspec.params.get("server") == NEWER else SHOTS


@contextlib.contextmanager
def editor_page():
    """A Chromium page on the editor's size (closed on exit), and the page errors it raised with their stacks (a list,
    filled as they come), so that an error raised through the pack's file names it."""
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1700, "height": 1000})
        errors = []
        page.on("pageerror", lambda error: errors.append(error.stack or str(error)))
        try:
            yield page, errors
        finally:
            browser.close()


@both_frontends
def test_workflows_open_with_group_titles_below_the_top_bar(server, shots):
    """Each shipped workflow's opening view shows its group titles on the canvas, clear of the editor's top bar and,
    on newer editors, whose canvas runs under it, of the left side bar."""
    url, _, _ = server
    with editor_page() as (page, _):
        for index, path in enumerate(sorted((REPO_ROOT / "workflows").glob("*.json"))):
            _open(page, url, path.name)
            page.wait_for_timeout(500)  # one frame after the graph's view was restored
            groups = page.evaluate(GROUP_TITLES_VISIBLE)
            page.screenshot(path=str(shots / f"0{index}_open_{path.stem}.png"))
            assert groups and any(g["onScreen"] for g in groups), (path.name, groups)
            for group in groups:
                assert not group["covered"], f"{path.name}: title of {group['title']!r} is under {group['covered']}"


def _clip(page) -> dict:
    x, y, width, height = page.evaluate(SHOW_AT_100, "VideoUnlearnRefusalVector")
    page.wait_for_timeout(300)
    return {"x": max(x, 0), "y": max(y, 0), "width": width, "height": height}


@both_frontends
def test_editor_shows_pair_check_chart_and_badge(server, shots):
    url, base, _ = server
    with editor_page() as (page, errors):
        _open(page, url, "compute_refusal_vector_wan21.json")
        sync_api.expect(_status(page)).to_have_text("6 valid pairs", timeout=20_000)
        page.screenshot(path=str(shots / "1_pairs_valid.png"))

        textarea = page.evaluate_handle(
            f"() => {{ const w = ({FIND})('VideoUnlearnPairEncoder').widgets.find((w) => w.name === 'pairs');"
            f" return w.element ?? w.inputEl; }}").as_element()
        textarea.fill("a Rolex watch | a watch\nno separator on this line\na Rolex clock | a clock")
        sync_api.expect(_status(page)).to_contain_text("Line 2: expected exactly one '|'", timeout=10_000)
        sync_api.expect(_status(page)).to_contain_text("(1 valid pair above it)")
        page.screenshot(path=str(shots / "2_pairs_invalid.png"))

        textarea.fill('<img src=x onerror="window.__xss = 1"> no bar\n')
        sync_api.expect(_status(page)).to_contain_text("<img src=x", timeout=10_000)
        assert page.evaluate("() => document.querySelector('.video-unlearning-pair-status').querySelector('img')") is None
        assert page.evaluate("() => window.__xss") is None
        textarea.fill((REPO_ROOT / "workflows" / "pairs" / "trademark_rolex.txt").read_text())
        sync_api.expect(_status(page)).to_have_text("6 valid pairs", timeout=10_000)

        # A linked text replaces the widget: until 2026-12-06 the widget's own text was checked and shown green.
        page.evaluate(f"""() => {{ const encoder = ({FIND})('VideoUnlearnPairEncoder');
                                  const text = window.LiteGraph.createNode('PrimitiveStringMultiline');
                                  window.app.graph.add(text);
                                  text.connect(0, encoder, encoder.inputs.findIndex((i) => i.name === 'pairs')); }}""")
        sync_api.expect(_status(page)).to_have_text("pairs come from a link: checked when the workflow runs",
                                                    timeout=10_000)
        page.evaluate(f"""() => {{ const encoder = ({FIND})('VideoUnlearnPairEncoder');
                                  encoder.disconnectInput(encoder.inputs.findIndex((i) => i.name === 'pairs'));
                                  window.app.graph.remove(({FIND})('PrimitiveStringMultiline')); }}""")
        sync_api.expect(_status(page)).to_have_text("6 valid pairs", timeout=10_000)

        # Before any run, a new Apply Unlearning badge names the upstream Pair Encoder's concept and follows it.
        page.evaluate(ADD_APPLY)
        badge = page.locator(".video-unlearning-badge").first
        sync_api.expect(badge).to_have_text("UNLEARNING ON · strength 1.00 · Rolex", timeout=10_000)
        page.evaluate(SET_WIDGET, ["VideoUnlearnPairEncoder", "concept", "<b>Omega</b>"])
        sync_api.expect(badge).to_have_text("UNLEARNING ON · strength 1.00 · <b>Omega</b>", timeout=5_000)
        assert page.evaluate("() => document.querySelector('.video-unlearning-badge b')") is None
        page.evaluate(SET_WIDGET, ["VideoUnlearnApply", "strength", 0.5])
        sync_api.expect(badge).to_have_text("UNLEARNING ON · strength 0.50 · <b>Omega</b>", timeout=5_000)
        page.screenshot(path=str(shots / "3_badge_upstream_concept.png"))
        page.evaluate(f"() => window.app.graph.remove(({FIND})('VideoUnlearnApply'))")
        page.evaluate(SET_WIDGET, ["VideoUnlearnPairEncoder", "concept", "Rolex"])

        page.evaluate(f"""() => {{ const node = ({FIND})('VideoUnlearnRefusalVector');
                                  const previous = node.onExecuted;
                                  node.onExecuted = function (output) {{
                                    const result = previous?.apply(this, arguments);
                                    if (output?.video_unlearning_chart) node.__videoUnlearningCharts = (node.__videoUnlearningCharts ?? 0) + 1;
                                    return result; }}; }}""")
        caption = page.locator(".video-unlearning-chart-caption").first
        sync_api.expect(caption).to_have_text("run to see which layers carry the concept")
        page.evaluate(SWAP_AND_SHRINK)
        # The chart arrives as the node's UI preview image (it must have decoded, not just been referenced) and
        # its labels as data next to it. Wan's text-side k/v of both tiny blocks read one input: one bar says so.
        page.wait_for_function(CHART_RAN, arg=1, timeout=180_000)
        size = page.evaluate(f"() => {{ const i = ({FIND})('VideoUnlearnRefusalVector').imgs[0]; return [i.naturalWidth, i.naturalHeight]; }}")
        assert size == [640, 400], size
        shown = page.evaluate(CHART)
        shared = "text context: blocks 0-1 cross_attn.k+v share this input"
        assert [bar["label"] for bar in shown["chart"]["bars"]] == [shared], shown
        assert shown["chart"]["best"] == shared and shown["chart"]["layers"] == 4
        sync_api.expect(caption).to_contain_text(f"best: {shared} (separation ")
        sync_api.expect(caption).to_contain_text("4 layers, 1 distinct input")
        # which file Save Refusal Vector wrote (the editor shows no text output of its own)
        sync_api.expect(page.locator(".video-unlearning-saved-file").first).to_contain_text("wrote rolex_0")
        # the run's own pair check replaces the live one (a linked pairs text has no other)
        sync_api.expect(_status(page)).to_have_text("last run: 6 valid pairs")
        page.screenshot(path=str(shots / "4_score_chart.png"))
        page.screenshot(path=str(shots / "4_score_chart_100pct.png"), clip=_clip(page))

        # Every layer kind: the shared text context, then one bar per block and kind, each named. A pair written
        # the wrong way round is added: the run's warning reaches the node (until 2026-12-06 only the console, once).
        rolex = (REPO_ROOT / "workflows" / "pairs" / "trademark_rolex.txt").read_text()
        swapped = rolex + "\na watch on a shelf | a Rolex watch on a shelf\n"
        page.evaluate(SET_WIDGET, ["VideoUnlearnPairEncoder", "pairs", swapped])
        page.evaluate(SET_WIDGET, ["VideoUnlearnCollectActivations", "layers", "all"])
        page.evaluate("async () => { await window.app.queuePrompt(0); }")
        page.wait_for_function(CHART_RAN, arg=2, timeout=180_000)
        sync_api.expect(_status(page)).to_contain_text("last run: 7 valid pairs, 1 warning(s): line ", timeout=10_000)
        page.evaluate(SET_WIDGET, ["VideoUnlearnPairEncoder", "pairs", rolex])
        shown = page.evaluate(CHART)
        labels = [bar["label"] for bar in shown["chart"]["bars"]]
        assert labels == [shared, "block 0 · cross_attn.o", "block 0 · ffn.0", "block 1 · cross_attn.o", "block 1 · ffn.0"], labels
        best = max(shown["chart"]["bars"], key=lambda bar: bar["value"])
        assert shown["chart"]["best"] == best["label"] and shown["chart"]["layers"] == 8
        sync_api.expect(caption).to_contain_text(f"best: {best['label']} (separation {best['value']:.2f})")
        assert all(f"{label}: " in shown["tooltip"] for label in labels), shown["tooltip"]
        page.screenshot(path=str(shots / "5_score_chart_blocks_100pct.png"), clip=_clip(page))
        page.evaluate(SET_WIDGET, ["VideoUnlearnCollectActivations", "layers", "default"])

        _open(page, url, "unlearned_side_by_side_wan21.json")
        badge = page.locator(".video-unlearning-badge").first
        # Apply Unlearning's strength is an input fed by Unlearning Check: known only after a run.
        sync_api.expect(badge).to_have_text("UNLEARNING ON · strength from Unlearning Check · rolex_00001", timeout=10_000)
        check_caption = page.locator(".video-unlearning-check-caption").first
        sync_api.expect(check_caption).to_have_text("run to measure removal and collateral per strength")
        page.evaluate(f"""() => {{ const w = ({FIND})('VideoUnlearnApply').widgets.find((x) => x.name === 'enabled');
                                  w.value = false; w.callback?.(false); }}""")
        sync_api.expect(badge).to_have_text("UNLEARNING OFF · rolex_00001", timeout=5_000)
        page.screenshot(path=str(shots / "6_badge_off.png"))
        page.evaluate(f"""() => {{ const w = ({FIND})('VideoUnlearnApply').widgets.find((x) => x.name === 'enabled');
                                  w.value = true; w.callback?.(true); }}""")
        page.evaluate(SWAP_AND_SHRINK)
        # Unlearning Check's chart arrives as its preview image (decoded, 768 x 360) and its recommendation and
        # table as text on the node; Apply Unlearning ran with the recommended strength.
        page.wait_for_function(CHECK_RAN, timeout=240_000)
        result = page.evaluate(f"() => ({FIND})('VideoUnlearnCheck').__videoUnlearningCheck")
        size = page.evaluate(f"() => {{ const i = ({FIND})('VideoUnlearnCheck').imgs[0]; return [i.naturalWidth, i.naturalHeight]; }}")
        assert size == [768, 360], size
        strength = result["strength"]
        assert strength in (0, 0.25, 0.5, 0.75, 1, 1.25, 1.5, 1.75, 2), result
        # removal to one decimal, as the table: two vectors of one concept differ by about a point
        sync_api.expect(check_caption).to_contain_text(
            re.compile(rf"recommended strength {strength:.2f} · removed -?\d+\.\d % · collateral "))
        # the workflow wires the samplers' negative prompt into the check: collateral is the guided one
        sync_api.expect(check_caption).to_contain_text("(guided, cfg 6)")
        assert result["guidance"] == 6.0, result
        table = page.locator(".video-unlearning-check-table").first
        sync_api.expect(table).to_contain_text(f"recommended strength {strength:g}")
        sync_api.expect(table).to_contain_text("removed")
        sync_api.expect(table).to_be_visible()
        sync_api.expect(badge).to_contain_text(f"UNLEARNING ON · strength {strength:.2f} · Rolex · ", timeout=240_000)
        sync_api.expect(badge).to_contain_text("layers")
        page.screenshot(path=str(shots / "7_badge_after_run.png"))
        # Unlearning Audit of Apply Unlearning's MODEL: its figures and table as text on the node
        page.wait_for_function(f"() => ({FIND})('VideoUnlearnAudit').__videoUnlearningAudit", timeout=240_000)
        audit = page.evaluate(f"() => ({FIND})('VideoUnlearnAudit').__videoUnlearningAudit")
        assert audit["removed"] == pytest.approx(result["removed"], abs=0.01), (audit, result)
        page.evaluate(SHOW_AT_100, "VideoUnlearnAudit")  # the editor draws a node's text widgets while it is in view
        audit_caption = page.locator(".video-unlearning-audit-caption").first
        sync_api.expect(audit_caption).to_contain_text(f"removed {round(audit['removed'] * 100)} % · collateral ")
        sync_api.expect(audit_caption).to_contain_text("(guided, cfg 6)")
        sync_api.expect(page.locator(".video-unlearning-audit-table").first).to_contain_text("toward the concept")
        x, y, width, height = page.evaluate(SHOW_AT_100, "VideoUnlearnAudit")
        page.wait_for_timeout(300)
        page.screenshot(path=str(shots / "11_audit_100pct.png"),
                        clip={"x": max(x, 0), "y": max(y, 0), "width": width, "height": min(height, 1000 - max(y, 0))})
        page.set_viewport_size({"width": 1700, "height": 1340})  # the check node is ~1040 px tall at 100 %
        page.wait_for_timeout(300)
        x, y, width, height = page.evaluate(SHOW_AT_100, "VideoUnlearnCheck")
        page.wait_for_timeout(300)
        page.screenshot(path=str(shots / "8_check_chart_100pct.png"),
                        clip={"x": max(x, 0), "y": max(y, 0), "width": width, "height": min(height, 1340 - max(y, 0))})

        # The run's result holds only while the graph is the one that ran: with Unlearning Check's link to the
        # strength removed, or another vector file chosen, the badge shows the graph; undone, the result is back.
        ran = badge.text_content()
        page.evaluate(f"""() => {{ const a = ({FIND})('VideoUnlearnApply');
                                  a.disconnectInput(a.findInputSlot('strength')); }}""")
        sync_api.expect(badge).to_have_text("UNLEARNING ON · strength 1.00 · rolex_00001", timeout=5_000)
        page.evaluate(f"""() => {{ const a = ({FIND})('VideoUnlearnApply');
                                  ({FIND})('VideoUnlearnCheck').connect(0, a, a.findInputSlot('strength')); }}""")
        sync_api.expect(badge).to_have_text(ran, timeout=5_000)
        page.evaluate(SET_WIDGET, ["VideoUnlearnLoadRefusalVector", "name", "omega_00001.safetensors"])
        sync_api.expect(badge).to_have_text("UNLEARNING ON · strength from Unlearning Check · omega_00001",
                                            timeout=5_000)
        page.evaluate(SET_WIDGET, ["VideoUnlearnLoadRefusalVector", "name", "rolex_00001.safetensors"])
        sync_api.expect(badge).to_have_text(ran, timeout=5_000)
        # A failed run (a broken model file, outside what the badge reads) drops the last run's result.
        (base / "models" / "diffusion_models" / "broken.safetensors").write_bytes(b"not a safetensors file")
        page.evaluate(SET_WIDGET, ["UNETLoader", "unet_name", "broken.safetensors"])
        page.evaluate("""() => { window.__failed = false;
                                 window.comfyAPI.api.api.addEventListener('execution_error', () => {
                                   window.__failed = true; }); }""")
        page.evaluate("async () => { await window.app.queuePrompt(0); }")
        page.wait_for_function("() => window.__failed", timeout=60_000)  # the server took it, the run failed
        sync_api.expect(badge).to_have_text("UNLEARNING ON · strength from Unlearning Check · rolex_00001",
                                            timeout=5_000)
    assert not [e for e in errors if "videoUnlearning" in e or "video_unlearning" in e], errors


ON = "UNLEARNING ON · strength 1.00 · "


def _expect_badges(page, expected: dict, timeout: int = 10_000):
    """Wait until the badges of the nodes titled in ``expected`` read as given; on a timeout, say what they read."""
    try:
        page.wait_for_function(f"""(want) => {{ const got = ({BADGES})();
                                              return Object.entries(want).every(([k, v]) => got[k] === v); }}""",
                               arg=expected, timeout=timeout)
    except sync_api.TimeoutError:
        pass
    shown = page.evaluate(BADGES)
    assert {title: shown.get(title) for title in expected} == expected


@both_frontends
def test_badges_follow_the_graph(server, shots):
    """A badge names the concept on its refusal_vector's way only (not a MODEL's), joins a combined vector's concepts,
    refreshes on a link change anywhere upstream, and shows a run's result only while the graph is the one that was
    queued; a prompt the server rejects drops it (1.58 fires no promptQueued event then: until 2026-12-06 the result
    stayed there)."""
    url, _, _ = server
    with editor_page() as (page, errors):
        _open(page, url, "compute_refusal_vector_wan21.json")
        page.evaluate(BUILD_CHAIN)
        _expect_badges(page, {"first": ON + "Rolex", "second": ON + "Omega", "combined": ON + "Rolex + Omega"})
        page.screenshot(path=str(shots / "9_badges_chained_and_combined.png"))

        # Collect Activations' and Low-Rank Refusal Vector's links refresh every badge downstream.
        page.evaluate("() => { const t = window.__t; t.pe1.connect(0, t.col2, t.col2.findInputSlot('pairs')); }")
        _expect_badges(page, {"second": ON + "Rolex", "combined": ON + "Rolex + Rolex"})
        page.evaluate("() => { const t = window.__t; t.pe2.connect(0, t.col2, t.col2.findInputSlot('pairs')); }")
        _expect_badges(page, {"second": ON + "Omega", "combined": ON + "Rolex + Omega"})
        page.evaluate("() => window.__t.vec2.disconnectInput(0)")
        _expect_badges(page, {"second": ON + "unnamed concept", "combined": ON + "Rolex + ?"})
        page.evaluate("() => { const t = window.__t; t.col2.connect(0, t.vec2, 0); }")
        _expect_badges(page, {"second": ON + "Omega", "combined": ON + "Rolex + Omega"})

        # A run's result (its layer count) is shown while the graph is the queued one: a widget changed on the
        # concept's way or another vector hides it, undoing the change shows it again.
        page.evaluate(FAKE_RUN, ["first", 4])
        _expect_badges(page, {"first": ON + "Rolex · 4 layers"})
        set_layers = """(value) => { const w = window.__t.col1.widgets.find((x) => x.name === 'layers');
                                     w.value = value; w.callback?.(value); }"""
        page.evaluate(set_layers, "all")
        _expect_badges(page, {"first": ON + "Rolex"})
        page.evaluate(set_layers, "default")
        _expect_badges(page, {"first": ON + "Rolex · 4 layers"})
        relink = """(name) => { const t = window.__t;
                                t[name].connect(0, t.first, t.first.findInputSlot('refusal_vector')); }"""
        page.evaluate(relink, "vec2")
        _expect_badges(page, {"first": ON + "Omega"})
        page.evaluate(relink, "vec1")
        _expect_badges(page, {"first": ON + "Rolex · 4 layers"})
        # A prompt the server rejects (an unknown model file) is a failed run.
        page.evaluate("""async () => { window.__t.unet.widgets[0].value = 'missing.safetensors';
                                       await window.app.queuePrompt(0); }""")
        _expect_badges(page, {"first": ON + "Rolex"})

        # Bypassed or muted (Ctrl+B, Ctrl+M), Apply edits nothing: until 2026-12-06 its badge kept saying ON.
        page.evaluate(FAKE_RUN, ["first", 4])
        set_mode = "(mode) => { window.__t.first.mode = mode; }"
        page.evaluate(set_mode, 4)
        _expect_badges(page, {"first": "UNLEARNING OFF (bypassed) · Rolex"})
        page.evaluate(set_mode, 2)
        _expect_badges(page, {"first": "UNLEARNING OFF (muted) · Rolex"})
        page.evaluate(set_mode, 0)
        _expect_badges(page, {"first": ON + "Rolex · 4 layers"})
        # enabled fed by a boolean primitive is read from it, and flipping it drops the run's result (it was kept)
        page.evaluate("""() => { const t = window.__t; t.flag = window.LiteGraph.createNode('PrimitiveBoolean');
                                 window.app.graph.add(t.flag); t.flag.widgets[0].value = false;
                                 const slot = t.first.inputs.findIndex((i) => i.name === 'enabled');
                                 t.flag.connect(0, t.first, slot); }""")
        _expect_badges(page, {"first": "UNLEARNING OFF · Rolex"})
        page.evaluate("() => { const w = window.__t.flag.widgets[0]; w.value = true; w.callback?.(true); }")
        _expect_badges(page, {"first": ON + "Rolex"})
        # A muted source: 1.27 keeps the link to a node it does not send, and the server refuses the prompt; newer
        # editors drop the link and run Apply's own widget (on), where until 2026-12-06 the badge said the run would
        # fail. The flag says off, so a badge that still read it would say so.
        page.evaluate("""() => { const t = window.__t; t.flag.widgets[0].value = false; t.flag.mode = 2;
                                 t.flag.widgets[0].callback?.(false); }""")
        muted = ("UNLEARNING ON? · enabled from Boolean (muted: the run will fail) · strength 1.00 · Rolex"
                 if _frontend(page) < (1, 28) else ON + "Rolex")
        _expect_badges(page, {"first": muted})
        page.evaluate("""() => { const t = window.__t;
                                 t.first.disconnectInput(t.first.inputs.findIndex((i) => i.name === 'enabled'));
                                 window.app.graph.remove(t.flag); }""")
        _expect_badges(page, {"first": ON + "Rolex · 4 layers"})
        # Typing into a text box no badge reads (a prompt, a note) redraws no badge: every keystroke refreshed all
        # of them, 47 ms a keystroke in a 300-node graph with 9 Applies and a long pairs text (8.8 ms before).
        redraws = page.evaluate("""async () => {
            const t = window.__t, g = window.app.graph, note = window.LiteGraph.createNode('CLIPTextEncode');
            g.add(note);
            // Adding a node changes the node list, which the mode poll (every 500 ms) answers with one refresh: wait
            // for that refresh, then until the badge has been quiet for longer than a poll period. Quiet alone was
            // not enough: a poll tick held back past the quiet period by a loaded machine refreshed during typing.
            let count = 0, last = performance.now();
            const observer = new MutationObserver((records) => { count += records.length; last = performance.now(); });
            observer.observe(t.first.__videoUnlearningBadge, { childList: true, characterData: true, subtree: true });
            const started = performance.now();
            while ((count === 0 || performance.now() - last < 1200) && performance.now() - started < 20000) {
                await new Promise((done) => setTimeout(done, 100));
            }
            const polled = count > 0;
            count = 0;
            const text = note.widgets.find((w) => w.name === 'text');
            for (const key of 'a dog') { text.value += key; text.callback?.(text.value); }
            await new Promise((done) => setTimeout(done, 200));
            const unrelated = count;
            const layers = t.col1.widgets.find((w) => w.name === 'layers');
            layers.callback?.(layers.value);  // a widget on the concept's way does redraw it
            await new Promise((done) => setTimeout(done, 200));
            observer.disconnect();
            g.remove(note);
            return [polled, unrelated, count - unrelated];
        }""")
        assert redraws[0], "the mode poll did not refresh the badge within 20 s of a node being added"
        assert redraws[1] == 0 and redraws[2] > 0, redraws
        # a source that computes its boolean (here StringContains, whose own boolean widget is another setting) is
        # known only after a run
        page.evaluate("""() => { const t = window.__t; t.flag = window.LiteGraph.createNode('StringContains');
                                 window.app.graph.add(t.flag);
                                 const slot = t.first.inputs.findIndex((i) => i.name === 'enabled');
                                 t.flag.connect(0, t.first, slot); }""")
        _expect_badges(page, {"first": "UNLEARNING ON? · enabled from Contains · strength 1.00 · Rolex"})
        page.evaluate("""() => { const t = window.__t;
                                 t.first.disconnectInput(t.first.inputs.findIndex((i) => i.name === 'enabled'));
                                 window.app.graph.remove(t.flag); }""")
        _expect_badges(page, {"first": ON + "Rolex · 4 layers"})
        _no_pack_deprecations(page)
    assert not [e for e in errors if "videoUnlearning" in e or "video_unlearning" in e], errors


@both_frontends
def test_badges_inside_subgraphs(server, shots):
    """Inside a subgraph a badge follows its inputs out to the concept and refreshes on changes outside (1.58's node
    ids are strings: until 2026-12-06 it lost the concept there), and from outside it follows a concept's way into
    one. A bypassed subgraph passes its MODEL through; a muted one (its menu's Mode > Never) still runs what it holds
    on 1.27 (the editor sends the nodes inside), so its Apply still unlearns, and on newer editors runs none of it."""
    url, _, _ = server
    with editor_page() as (page, errors):
        _open(page, url, "compute_refusal_vector_wan21.json")
        page.evaluate(BUILD_CHAIN)
        page.evaluate("() => { window.app.graph.convertToSubgraph(new Set([window.__t.second])); }")
        _expect_badges(page, {"second": ON + "Omega"})
        holder_mode = """(mode) => { window.app.graph.nodes.find((n) => n.isSubgraphNode?.()).mode = mode; }"""
        page.evaluate(holder_mode, 4)
        _expect_badges(page, {"second": "UNLEARNING OFF (bypassed) · Omega"})
        page.evaluate(holder_mode, 2)
        muted = ON + "Omega" if _frontend(page) < (1, 28) else "UNLEARNING OFF (muted) · Omega"
        _expect_badges(page, {"second": muted})
        page.screenshot(path=str(shots / "10_badge_muted_subgraph.png"))
        page.evaluate(holder_mode, 0)
        _expect_badges(page, {"second": ON + "Omega"})
        page.evaluate("""() => { const w = window.__t.pe2.widgets.find((x) => x.name === 'concept');
                                 w.value = 'Omega 2'; w.callback?.(w.value); }""")
        _expect_badges(page, {"second": ON + "Omega 2", "combined": ON + "Rolex + Omega 2"})
        page.evaluate("""() => { const sub = window.app.graph.nodes.find((n) => n.isSubgraphNode?.());
                                 const slot = sub.inputs.findIndex((i) => i.type === 'REFUSAL_VECTOR');
                                 sub.disconnectInput(slot); }""")
        _expect_badges(page, {"second": ON + "unnamed concept"})
        # And from outside into a subgraph: the second concept's whole way (Pair Encoder to Low-Rank) inside one.
        page.evaluate("""() => { const t = window.__t;
                                 window.app.graph.convertToSubgraph(new Set([t.pe2, t.col2, t.vec2])); }""")
        _expect_badges(page, {"combined": ON + "Rolex + Omega 2"})
        page.evaluate("""() => { const pe = [...window.app.graph.subgraphs.values()].flatMap((g) => g.nodes)
                                   .find((n) => n.comfyClass === 'VideoUnlearnPairEncoder');
                                 const w = pe.widgets.find((x) => x.name === 'concept');
                                 w.value = 'Omega 3'; w.callback?.(w.value); }""")
        _expect_badges(page, {"combined": ON + "Rolex + Omega 3"})
        _no_pack_deprecations(page)
    assert not [e for e in errors if "videoUnlearning" in e or "video_unlearning" in e], errors


# A Boolean primitive feeding Apply's enabled, on screen at 100 % zoom; returns its id.
ADD_FLAG = f"""() => {{ const g = window.app.graph; const a = ({FIND})('VideoUnlearnApply');
    const flag = window.LiteGraph.createNode('PrimitiveBoolean'); flag.title = 'flag';
    flag.pos = [a.pos[0] - 320, a.pos[1]]; g.add(flag); flag.widgets[0].value = true;
    flag.connect(0, a, a.inputs.findIndex((i) => i.name === 'enabled'));
    const c = window.app.canvas; c.ds.scale = 1; c.ds.offset[0] = 400 - flag.pos[0]; c.ds.offset[1] = 200 - flag.pos[1];
    c.setDirty(true, true); return flag.id; }}"""


@newer_frontend
def test_an_edit_on_a_vue_node_refreshes_the_badge(server, shots):
    """With Vue nodes ("Nodes 2.0", Comfy.VueNodes.Enabled) a widget calls only its callback when edited, never its
    node's onWidgetChanged: a click on a Boolean primitive's toggle feeding Apply's enabled turns the badge off. Until
    2026-12-06 only the pack's own nodes' callbacks were watched, and the badge kept saying ON. Newer editors only:
    1.27's Vue nodes are an unfinished preview that shows no DOM widget, so no badge."""
    url, _, _ = server
    with editor_page() as (page, errors):
        _open(page, url, "unlearned_side_by_side_wan21.json", {"Comfy.VueNodes.Enabled": True})
        badge = page.locator(".video-unlearning-badge").first
        flag = page.evaluate(ADD_FLAG)
        sync_api.expect(badge).to_have_text("UNLEARNING ON · strength from Unlearning Check · rolex_00001",
                                            timeout=10_000)
        toggle = page.locator(f'[data-node-id="{flag}"] [role="switch"]').first
        toggle.wait_for(timeout=10_000)
        # The new node's refresh (the pack's mode poll, every 500 ms) is over before the click, so only the edit itself
        # can refresh the badge after it.
        page.wait_for_timeout(1500)
        toggle.click(timeout=10_000)
        sync_api.expect(badge).to_have_text("UNLEARNING OFF · rolex_00001", timeout=5_000)
        assert page.evaluate(f"() => window.app.graph.getNodeById({flag}).widgets[0].value") is False
        page.screenshot(path=str(shots / "11_vue_toggle_badge_off.png"))
        _no_pack_deprecations(page)
    assert not [e for e in errors if "videoUnlearning" in e or "video_unlearning" in e], errors


@both_frontends
def test_a_run_served_from_the_cache_shows_its_results_in_a_reloaded_editor(server, shots):
    """ComfyUI 0.3.64 sends "executed" again only for output nodes: a reloaded editor (or a second tab) whose run
    was served from the cache showed Low-Rank Refusal Vector (and Apply, and the check) as before any run. The
    extension reads those nodes' outputs from the prompt's history; the events are the server's, replayed."""
    url, _, _ = server
    with editor_page() as (page, errors):
        _open(page, url, "compute_refusal_vector_wan21.json")
        page.evaluate(f"""() => {{ const node = ({FIND})('VideoUnlearnRefusalVector');
                                  const previous = node.onExecuted;
                                  node.onExecuted = function (output) {{
                                    const result = previous?.apply(this, arguments);
                                    if (output?.video_unlearning_chart) node.__videoUnlearningCharts = 1;
                                    return result; }}; }}""")
        page.evaluate(SWAP_AND_SHRINK)
        page.wait_for_function(CHART_RAN, arg=1, timeout=180_000)
        history = http_json(f"{url}/history?max_items=1")
        prompt_id = next(iter(history))
        vector_id = page.evaluate(f"() => ({FIND})('VideoUnlearnRefusalVector').id")
        page.reload()
        _open(page, url, "compute_refusal_vector_wan21.json")
        caption = page.locator(".video-unlearning-chart-caption").first
        sync_api.expect(caption).to_have_text("run to see which layers carry the concept", timeout=10_000)
        page.evaluate("""([prompt, node]) => {
                             const api = window.comfyAPI.api.api;
                             api.dispatchCustomEvent('execution_cached', { prompt_id: prompt, nodes: [String(node)] });
                             api.dispatchCustomEvent('execution_success', { prompt_id: prompt }); }""",
                      [prompt_id, vector_id])
        sync_api.expect(caption).to_contain_text("best: text context", timeout=10_000)
    assert not [e for e in errors if "videoUnlearning" in e or "video_unlearning" in e], errors


# The display widgets of each pack node type.
DISPLAYED = {"VideoUnlearnPairEncoder": 1, "VideoUnlearnApply": 1, "VideoUnlearnRefusalVector": 1,
             "VideoUnlearnCheck": 2}


@both_frontends
def test_display_widgets_are_neither_saved_nor_sent(server, shots):
    """The pair status, badge, captions and check table are display only: not in a saved workflow's widgets_values
    nor in the prompt; a workflow saved before (one "" more per display widget) still loads its values."""
    url, _, _ = server
    with editor_page() as (page, _):
        for name in ("compute_refusal_vector_wan21.json", "unlearned_side_by_side_wan21.json"):
            shipped = json.loads((REPO_ROOT / "workflows" / name).read_text())
            old = json.loads(json.dumps(shipped))
            for node in old["nodes"]:
                node["widgets_values"] = node.get("widgets_values", []) + [""] * DISPLAYED.get(node["type"], 0)
            _open(page, url, old)
            page.wait_for_timeout(500)
            nodes = page.evaluate(SAVED)
            expected = {node["id"]: node["widgets_values"] for node in shipped["nodes"]
                        if node["type"].startswith("VideoUnlearn")}
            assert sorted(node["id"] for node in nodes) == sorted(expected), nodes
            for node in nodes:
                values = expected[node["id"]]
                assert node["values"][:len(values)] == values, (name, node)
                assert node["saved"] == node["values"], (name, node)
                assert not set(node["prompt"]) & set(DISPLAY_WIDGETS), (name, node)
        sync_api.expect(page.locator(".video-unlearning-badge").first).to_have_text(
            "UNLEARNING ON · strength from Unlearning Check · rolex_00001", timeout=5_000)


# What an editor of before 2026-12-06 saved: one '' per display widget after the values, where newer inputs now sit
# (the review's files from 3fa4589 and 9e7f351, the user's values kept).
LEGACY_VALUES = {
    "VideoUnlearnCheck": ["0.5, 1, 1.5", "all in vector", 0, -1, "safe_mean", "none", 64, 64, 1, "0.1", 123, "", ""],
    "VideoUnlearnRefusalVector": ["cpca", 2, 1, ""],
}
CHECK_WIDGETS = ["strengths", "layers", "block_start", "block_end", "target", "sweep", "width", "height", "length",
                 "timesteps", "seed", "cfg"]


@both_frontends
def test_legacy_display_values_in_cfg_and_edit_get_their_defaults_back(server, shots):
    """Opened now, such a file put '' into Unlearning Check's cfg (Queue failed: "could not convert string to float:
    ''") and into Low-Rank Refusal Vector's edit (accepted; the fit failed after Collect Activations ran). Configuring
    the node puts back cfg 6 and edit 'direction' and warns in the console; a valid saved value is kept, and cfg (an
    optional input since it was refused missing in old API prompts) is still the Check's last value widget."""
    url, _, _ = server
    with editor_page() as (page, _):
        warnings = []
        page.on("console", lambda message: message.type == "warning" and warnings.append(message.text))
        for name in ("compute_refusal_vector_wan21.json", "unlearned_side_by_side_wan21.json"):
            old = json.loads((REPO_ROOT / "workflows" / name).read_text())
            for node in old["nodes"]:
                node["widgets_values"] = LEGACY_VALUES.get(node["type"], node.get("widgets_values"))
            _open(page, url, old)
            page.wait_for_timeout(500)
            nodes = {node["type"]: node for node in page.evaluate(SAVED)}
            prompt = page.evaluate("async () => (await window.app.graphToPrompt()).output")
            if name.startswith("compute"):
                vector = nodes["VideoUnlearnRefusalVector"]
                assert vector["values"] == ["cpca", 2, 1, "direction"], vector
                assert prompt[str(vector["id"])]["inputs"]["edit"] == "direction"
            else:
                check = nodes["VideoUnlearnCheck"]
                names = page.evaluate("([id, shown]) => window.app.graph.getNodeById(id).widgets"
                                      ".map((w) => w.name).filter((n) => !shown.includes(n))",
                                      [check["id"], DISPLAY_WIDGETS])
                assert names == CHECK_WIDGETS, names
                assert check["values"] == [*LEGACY_VALUES["VideoUnlearnCheck"][:11], 6], check
                assert prompt[str(check["id"])]["inputs"]["cfg"] == 6
        assert any("edit was \"\"" in text and "set to direction" in text for text in warnings), warnings
        assert any("cfg was \"\"" in text and "set to 6" in text for text in warnings), warnings
        # A file saved between 12-01 and 12-06 holds a real cfg before the display values: it is kept, silently.
        warnings.clear()
        old = json.loads((REPO_ROOT / "workflows" / "unlearned_side_by_side_wan21.json").read_text())
        for node in old["nodes"]:
            if node["type"] == "VideoUnlearnCheck":
                node["widgets_values"] = [*LEGACY_VALUES["VideoUnlearnCheck"][:11], 7.5, "", ""]
        _open(page, url, old)
        page.wait_for_timeout(500)
        check = next(node for node in page.evaluate(SAVED) if node["type"] == "VideoUnlearnCheck")
        assert check["values"][-1] == 7.5 and not [text for text in warnings if "video unlearning" in text], warnings


CHART_WITH_NOTE = """() => {
  const vector = window.app.graph._nodes.find((n) => n.comfyClass === "VideoUnlearnRefusalVector");
  vector.onExecuted({ video_unlearning_chart: [{ title: "t", bars: [{ label: "text context", value: 2, layers: ["a"] }],
    best: "text context", layers: 1, narrow_inputs: {}, pair_notes: ["line 6: its sides differ ... swapped?"] }] });
  const caption = document.querySelector(".video-unlearning-chart-caption");
  return [caption.textContent, caption.title];
}"""
#: Runs Unlearning Check's onExecuted with ``result`` (what nodes/check.py check_ui sends, the fields a test needs) and
#: returns its caption's text and hover title.
CHECK_CAPTION_OF = """(result) => {
  const check = window.app.graph._nodes.find((n) => n.comfyClass === "VideoUnlearnCheck");
  check.onExecuted({ video_unlearning_check: [{ warning: null, negative_warning: null, table: "t", sweep: [],
    ...result }] });
  const caption = document.querySelector(".video-unlearning-check-caption");
  return [caption.textContent, caption.title];
}"""
CHECK_WITH_WARNING = {"strength": 0, "removed": 1.07, "collateral": 0.3, "guidance": 6,
                      "reason": "the edit adds the concept", "warning": "WARNING: at strength 1 ..."}
CHECK_NEGATIVE_CONCEPT = {"strength": 1, "removed": 0.99, "collateral": 0.205, "guidance": 4,
                          "collateral_read": "conditional", "negative_concept_share": 1.22,
                          "reason": "smallest strength ...",
                          "negative_warning": "WARNING: the negative prompt names the concept ..."}
CHECK_TOKEN_COUNTS = {"strength": 1, "removed": 0.64, "collateral": 0.38, "guidance": None,
                      "reason": "end of the steepest rise ...",
                      "token_counts": "token counts: 5 of 5 validation pairs have sides of different token counts; ..."}
CHECK_SCRIPT_WARNING = {"strength": 1, "removed": 0.95, "collateral": 0.2, "guidance": None,
                        "reason": "smallest strength ...",
                        "script_warning": "WARNING: at strength 1 the edit removes 95% of the validation pairs' "
                                          "difference pooled, ..."}
CHECK_PAIR_WARNING = {"strength": 1, "removed": 0.97, "collateral": 0.2, "guidance": None,
                      "reason": "smallest strength ...",
                      "pair_warning": "WARNING: at strength 1 the edit removes 97% of the validation pairs' difference "
                                      "pooled, but less than 90% of 1 pair: pair 3 ..."}


@both_frontends
def test_warnings_of_a_run_reach_the_captions(server, shots):
    """A pair written the other way round (Low-Rank Refusal Vector's pair notes) and an edit that moves the safe
    prompts toward the concept (Unlearning Check's warning) are named on the node itself, not only in the log."""
    url, _, _ = server
    with editor_page() as (page, _):
        _open(page, url, json.loads((REPO_ROOT / "workflows" / "compute_refusal_vector_wan21.json").read_text()))
        page.wait_for_timeout(500)
        text, title = page.evaluate(CHART_WITH_NOTE)
        assert text.startswith("WARNING: 1 pair(s) look wrong: line 6") and title.startswith("line 6:"), (text, title)
        _open(page, url, json.loads((REPO_ROOT / "workflows" / "unlearned_side_by_side_wan21.json").read_text()))
        page.wait_for_timeout(500)
        text, title = page.evaluate(CHECK_CAPTION_OF, CHECK_WITH_WARNING)
        assert "WARNING: the edit moves the safe prompts toward the concept" in text, text
        assert "WARNING: at strength 1" in title, title
        # a negative prompt naming the concept: the caption says the collateral is not the guided one, and why
        text, title = page.evaluate(CHECK_CAPTION_OF, CHECK_NEGATIVE_CONCEPT)
        assert "(conditional: the negative prompt carries the concept)" in text and "guided" not in text, text
        assert "WARNING: the negative prompt names the concept" in text, text
        assert title.endswith("WARNING: the negative prompt names the concept ..."), title
        # LTX-Video or Mochi checked on pairs whose sides differ in token count (nodes/check.py token_count_note)
        text, title = page.evaluate(CHECK_CAPTION_OF, CHECK_TOKEN_COUNTS)
        assert "pair sides differ in token count: removal stops short of 100 %" in text, text
        assert title.endswith("token counts: 5 of 5 validation pairs have sides of different token counts; ..."), title
        # validation pairs in several scripts, one of which keeps the concept (core/check.py script_warning)
        text, title = page.evaluate(CHECK_CAPTION_OF, CHECK_SCRIPT_WARNING)
        assert "WARNING: pairs in one script are removed less (see the table)" in text, text
        assert title.endswith("difference pooled, ..."), title
        # one validation pair the edit removes less than the pooled share says (core/check.py pair_warning)
        text, title = page.evaluate(CHECK_CAPTION_OF, CHECK_PAIR_WARNING)
        assert "WARNING: a validation pair is removed less (see the table)" in text, text
        assert "script" not in text and title.endswith("less than 90% of 1 pair: pair 3 ..."), title


CHART_NAMED = """(chart) => {
  const vector = window.app.graph._nodes.find((n) => n.comfyClass === "VideoUnlearnRefusalVector");
  vector.onExecuted({ video_unlearning_chart: [{ title: `${chart.concept}: separation per input`, bars: [
    { label: "text context", value: 2, layers: ["a"] }], best: "text context", layers: 1, narrow_inputs: {},
    pair_notes: [], ...chart }] });
  return document.querySelector(".video-unlearning-chart-caption").textContent;
}"""
CHINESE_PAIRS = "\n".join(f"桌子{i}上的一块劳力士手表 | 桌子{i}上的一块手表" for i in range(5))


@both_frontends
def test_text_in_other_scripts_reaches_the_editor_as_typed(server):
    """Chinese pairs are counted by the live check (the route reads the page's UTF-8 body); a line written with the
    full-width bar an input method types is named; a Chinese concept shows on Apply's badge as typed, and in the score
    chart's caption where the chart's font cannot draw it (the picture then leaves it out: nodes/plot.py)."""
    url, _, _ = server
    with editor_page() as (page, errors):
        _open(page, url, "compute_refusal_vector_wan21.json")
        sync_api.expect(_status(page)).to_have_text("6 valid pairs", timeout=20_000)
        textarea = page.evaluate_handle(
            f"() => {{ const w = ({FIND})('VideoUnlearnPairEncoder').widgets.find((w) => w.name === 'pairs');"
            f" return w.element ?? w.inputEl; }}").as_element()
        textarea.fill(CHINESE_PAIRS)
        sync_api.expect(_status(page)).to_have_text("5 valid pairs", timeout=10_000)
        textarea.fill(CHINESE_PAIRS + "\n手腕上的一块劳力士手表 ｜ 手腕上的一块手表")
        sync_api.expect(_status(page)).to_contain_text(
            "Line 6: expected exactly one '|' between the unsafe and the safe prompt, found 0 ('｜', U+FF5C, only "
            "looks like '|'", timeout=10_000)
        sync_api.expect(_status(page)).to_contain_text("'手腕上的一块劳力士手表 ｜ 手腕上的一块手表' (5 valid pairs above it)")
        page.evaluate(ADD_APPLY)
        page.evaluate(SET_WIDGET, ["VideoUnlearnPairEncoder", "concept", "劳力士"])
        sync_api.expect(page.locator(".video-unlearning-badge").first).to_have_text(
            "UNLEARNING ON · strength 1.00 · 劳力士", timeout=10_000)
        shown = page.evaluate(CHART_NAMED, {"concept": "劳力士", "concept_in_picture": False})
        assert shown.startswith("劳力士 · best: text context (separation 2.00)"), shown
        shown = page.evaluate(CHART_NAMED, {"concept": "Rolex", "concept_in_picture": True})
        assert shown.startswith("best: text context"), shown
    assert not [e for e in errors if "videoUnlearning" in e or "video_unlearning" in e], errors


# Every pack node on the canvas (those the workflow lacks are added), then one at a time centred and selected alone,
# so that the selection toolbox, whose info button opens the node docs panel, sits over it.
ADD_MISSING = """
(classes) => {
  const g = window.app.graph;
  classes.filter((cls) => !g._nodes.some((n) => n.comfyClass === cls)).forEach((cls, index) => {
    const node = window.LiteGraph.createNode(cls); node.pos = [index * 500, 2500]; g.add(node); });
}
"""
SELECT_ALONE = """
(cls) => {
  const canvas = window.app.canvas;
  const node = window.app.graph._nodes.find((n) => n.comfyClass === cls);
  canvas.ds.scale = 1;
  canvas.ds.offset[0] = 700 - node.pos[0];
  canvas.ds.offset[1] = 300 - node.pos[1];
  canvas.deselectAll();
  canvas.selectNode(node);
  canvas.setDirty(true, true);
}
"""


@both_frontends
def test_node_info_shows_the_pack_help_page(server, shots):
    """The selection toolbox's info button opens the node docs panel (1.27.10: the node library's help page; 1.58.1:
    the properties panel's Info tab), which shows ``web/docs/<node id>.md`` rendered: its heading is the node's
    display name. Without the page both editors show the description and a table of the tooltips, with no heading."""
    url, _, info = server
    ours = sorted(name for name in info if name.startswith("VideoUnlearn"))
    with editor_page() as (page, _):
        _open(page, url, "compute_refusal_vector_wan21.json")
        page.evaluate(ADD_MISSING, ours)
        _expect_help_headings(page, {name: info[name]["display_name"] for name in ours},
                              ("VideoUnlearnApply", shots / "9_node_help_apply.png"))


def _expect_help_headings(page, headings: dict, screenshot: tuple):
    """Open each node's help page with the selection toolbox's info button and expect its heading; screenshot one
    (node id, path)."""
    for name, heading in headings.items():
        page.evaluate(SELECT_ALONE, name)
        page.locator('[data-testid="info-button"]').locator("visible=true").first.click()
        sync_api.expect(page.locator(".node-help-content h1").first).to_have_text(heading, timeout=10_000)
        if name == screenshot[0]:
            page.screenshot(path=str(screenshot[1]))


# What the editor shows on the pack's nodes: title, category, socket and widget labels (by input name), output labels.
SHOWN_LABELS = """
() => Object.fromEntries(window.app.graph._nodes.filter((n) => (n.comfyClass ?? "").startsWith("VideoUnlearn"))
  .map((n) => [n.comfyClass, {
    title: n.title, category: n.constructor.category,
    inputs: Object.fromEntries((n.inputs ?? []).map((i) => [i.name, i.localized_name ?? i.label ?? i.name])),
    widgets: Object.fromEntries((n.widgets ?? []).filter((w) => w.label).map((w) => [w.name, w.label])),
    outputs: (n.outputs ?? []).map((o) => o.localized_name ?? o.label ?? o.name)}]))
"""
# The prompt a graph sends, less the titles ComfyUI puts in it for display (_meta)
PROMPT = """
async () => Object.fromEntries(Object.entries((await window.app.graphToPrompt()).output)
  .map(([id, node]) => [id, { class_type: node.class_type, inputs: node.inputs }]))
"""
EMPTY_WORKFLOW = {"last_node_id": 0, "last_link_id": 0, "nodes": [], "links": [], "groups": [], "config": {}, "extra": {},
                  "version": 0.4}


@both_frontends
def test_a_chinese_editor_shows_the_chinese_labels_help_and_sends_the_same_prompt(server, shots):
    """With the editor's language set to Chinese (``Comfy.Locale``), every pack node shows its title, category, socket,
    widget and output labels from ``locales/zh/nodeDefs.json`` and ``main.json`` (served through ``/i18n``), its info
    button opens ``web/docs/<node id>/zh.md``, the shipped workflows send the prompt an English editor sends, and a
    graph saved in Chinese opens in an English editor with the English labels: the labels are display only (the titles a workflow saved stay as saved; the prompt's display titles, ``_meta``, follow
    the language)."""
    url, _, info = server
    zh = json.loads((REPO_ROOT / "locales" / "zh" / "nodeDefs.json").read_text(encoding="utf-8"))
    category = json.loads((REPO_ROOT / "locales" / "zh" / "main.json").read_text(encoding="utf-8"))["nodeCategories"]
    ours = sorted(name for name in info if name.startswith("VideoUnlearn"))
    prompts = {}
    with editor_page() as (page, errors):
        for language in ("en", "zh"):
            for workflow in sorted(path.name for path in (REPO_ROOT / "workflows").glob("*.json")):
                _open(page, url, workflow, settings={"Comfy.Locale": language})
                prompts[language, workflow] = page.evaluate(PROMPT)
        _open(page, url, EMPTY_WORKFLOW, settings={"Comfy.Locale": "zh"})  # the shipped ones keep their saved titles
        page.evaluate(ADD_MISSING, ours)
        shown = page.evaluate(SHOWN_LABELS)
        assert sorted(shown) == ours
        for name in ours:
            labels = zh[name]
            assert shown[name]["title"] == labels["display_name"]
            assert shown[name]["category"] == category[info[name]["category"]]
            assert shown[name]["inputs"] == {key: labels["inputs"][key]["name"] for key in shown[name]["inputs"]}
            assert shown[name]["widgets"] == {key: labels["inputs"][key]["name"] for key in shown[name]["widgets"]}
            assert shown[name]["outputs"] == [entry["name"] for entry in labels["outputs"].values()]
        assert sum(len(node["widgets"]) for node in shown.values()) >= 30, "the widgets carry the labels"
        _expect_help_headings(page, {name: zh[name]["display_name"] for name in ours},
                              ("VideoUnlearnCheck", shots / "10_node_help_check_zh.png"))
        # A graph saved in Chinese (its slots record the Chinese labels, as ComfyUI's own nodes' do) opens in English.
        saved = page.evaluate("() => window.app.graph.serialize()")
        assert "拒绝向量" in json.dumps(saved, ensure_ascii=False)
        _open(page, url, saved, settings={"Comfy.Locale": "en"})
        shown = page.evaluate(SHOWN_LABELS)
        for name in ours:
            assert shown[name]["title"] == info[name]["display_name"]
            assert shown[name]["category"] == info[name]["category"]
            assert all(label == key for key, label in {**shown[name]["inputs"], **shown[name]["widgets"]}.items())
            assert shown[name]["outputs"] == info[name]["output_name"]
    assert not [e for e in errors if "videoUnlearning" in e or "video_unlearning" in e], errors
    for workflow in {workflow for _, workflow in prompts}:
        assert prompts["zh", workflow] == prompts["en", workflow], workflow

