"""The pack in ComfyUI's real editor (the comfyui-frontend-package ComfyUI serves), in headless Chromium.

Checks: every shipped workflow opens with its group titles visible (not under the editor's top bar); the Pair
Encoder counts valid pairs and names the first bad line while one types (through the pack's Python route), user
text is shown as text and never parsed as HTML; the Low-Rank Refusal Vector node shows its score chart after a
run, with the chart's labels (sent next to the image) as text on the node, for a shared input and for per-block
layers; Apply Unlearning carries an on/off, strength and concept badge before and after a run; in the side-by-side
workflow Unlearning Check runs, shows its chart on the node with its recommended strength and table as text, and
that strength reaches Apply Unlearning. Screenshots go to ``out/browser/`` (the charts at 100 % zoom in
``4_score_chart_100pct.png``, ``5_score_chart_blocks_100pct.png`` and ``8_check_chart_100pct.png``).
"""

from __future__ import annotations

import json
import shutil

import pytest

from comfy_host import REPO_ROOT, find_comfyui, http_json

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

from server_setup import server_fixture  # noqa: E402

server = pytest.fixture(scope="module")(server_fixture)

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

QUIET_SETTINGS = {"Comfy.TutorialCompleted": True, "Comfy.Workflow.ShowMissingModelsWarning": False,
                  "Comfy.Validation.Workflows": False}


def _open(page, url, workflow):
    for key, value in QUIET_SETTINGS.items():  # no first-run template browser, no missing-model dialog
        http_json(f"{url}/settings/{key}", value)
    page.goto(url)
    page.wait_for_function("window.app && window.app.graph && window.LiteGraph", timeout=90_000)
    page.wait_for_function("window.app.extensions.some((e) => e.name === 'videoUnlearning.badge')", timeout=30_000)
    page.evaluate("async (wf) => { await window.app.loadGraphData(wf); }",
                  json.loads((REPO_ROOT / "workflows" / workflow).read_text()))


def _status(page):
    return page.locator(".video-unlearning-pair-status").first


@pytest.fixture(scope="module", autouse=True)
def fresh_screenshots():
    """The screenshots in out/browser/ always come from one run."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    for stale in SHOTS.glob("*.png"):
        stale.unlink()


def test_workflows_open_with_group_titles_below_the_top_bar(server):
    """Each shipped workflow's opening view shows its group titles on the canvas, clear of the editor's top bar."""
    url, _, _ = server
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1700, "height": 1000})
        try:
            for index, path in enumerate(sorted((REPO_ROOT / "workflows").glob("*.json"))):
                _open(page, url, path.name)
                page.wait_for_timeout(500)  # one frame after the graph's view was restored
                groups = page.evaluate(GROUP_TITLES_VISIBLE)
                page.screenshot(path=str(SHOTS / f"0{index}_open_{path.stem}.png"))
                assert groups and any(g["onScreen"] for g in groups), (path.name, groups)
                for group in groups:
                    assert not group["covered"], f"{path.name}: title of {group['title']!r} is under {group['covered']}"
        finally:
            browser.close()


def _clip(page) -> dict:
    x, y, width, height = page.evaluate(SHOW_AT_100, "VideoUnlearnRefusalVector")
    page.wait_for_timeout(300)
    return {"x": max(x, 0), "y": max(y, 0), "width": width, "height": height}


def test_editor_shows_pair_check_chart_and_badge(server):
    url, _, _ = server
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1700, "height": 1000})
        errors = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        try:
            _open(page, url, "compute_refusal_vector_wan21.json")
            sync_api.expect(_status(page)).to_have_text("6 valid pairs", timeout=20_000)
            page.screenshot(path=str(SHOTS / "1_pairs_valid.png"))

            textarea = page.evaluate_handle(
                f"() => ({FIND})('VideoUnlearnPairEncoder').widgets.find((w) => w.name === 'pairs').inputEl").as_element()
            textarea.fill("a Rolex watch | a watch\nno separator on this line\na Rolex clock | a clock")
            sync_api.expect(_status(page)).to_contain_text("Line 2: expected exactly one '|'", timeout=10_000)
            sync_api.expect(_status(page)).to_contain_text("(1 valid pair above it)")
            page.screenshot(path=str(SHOTS / "2_pairs_invalid.png"))

            textarea.fill('<img src=x onerror="window.__xss = 1"> no bar\n')
            sync_api.expect(_status(page)).to_contain_text("<img src=x", timeout=10_000)
            assert page.evaluate("() => document.querySelector('.video-unlearning-pair-status').querySelector('img')") is None
            assert page.evaluate("() => window.__xss") is None
            textarea.fill((REPO_ROOT / "workflows" / "pairs" / "trademark_rolex.txt").read_text())
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
            page.screenshot(path=str(SHOTS / "3_badge_upstream_concept.png"))
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
            page.screenshot(path=str(SHOTS / "4_score_chart.png"))
            page.screenshot(path=str(SHOTS / "4_score_chart_100pct.png"), clip=_clip(page))

            # Every layer kind: the shared text context, then one bar per block and kind, each named.
            page.evaluate(SET_WIDGET, ["VideoUnlearnCollectActivations", "layers", "all"])
            page.evaluate("async () => { await window.app.queuePrompt(0); }")
            page.wait_for_function(CHART_RAN, arg=2, timeout=180_000)
            shown = page.evaluate(CHART)
            labels = [bar["label"] for bar in shown["chart"]["bars"]]
            assert labels == [shared, "block 0 · cross_attn.o", "block 0 · ffn.0", "block 1 · cross_attn.o", "block 1 · ffn.0"], labels
            best = max(shown["chart"]["bars"], key=lambda bar: bar["value"])
            assert shown["chart"]["best"] == best["label"] and shown["chart"]["layers"] == 8
            sync_api.expect(caption).to_contain_text(f"best: {best['label']} (separation {best['value']:.2f})")
            assert all(f"{label}: " in shown["tooltip"] for label in labels), shown["tooltip"]
            page.screenshot(path=str(SHOTS / "5_score_chart_blocks_100pct.png"), clip=_clip(page))
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
            page.screenshot(path=str(SHOTS / "6_badge_off.png"))
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
            sync_api.expect(check_caption).to_contain_text(f"recommended strength {strength:.2f} · removed ")
            # the workflow wires the samplers' negative prompt into the check: collateral is the guided one
            sync_api.expect(check_caption).to_contain_text("(guided, cfg 6)")
            assert result["guidance"] == 6.0, result
            table = page.locator(".video-unlearning-check-table").first
            sync_api.expect(table).to_contain_text(f"recommended strength {strength:g}")
            sync_api.expect(table).to_contain_text("removed")
            sync_api.expect(table).to_be_visible()
            sync_api.expect(badge).to_contain_text(f"UNLEARNING ON · strength {strength:.2f} · Rolex · ", timeout=240_000)
            sync_api.expect(badge).to_contain_text("layers")
            page.screenshot(path=str(SHOTS / "7_badge_after_run.png"))
            page.set_viewport_size({"width": 1700, "height": 1340})  # the check node is ~1040 px tall at 100 %
            page.wait_for_timeout(300)
            x, y, width, height = page.evaluate(SHOW_AT_100, "VideoUnlearnCheck")
            page.wait_for_timeout(300)
            page.screenshot(path=str(SHOTS / "8_check_chart_100pct.png"),
                            clip={"x": max(x, 0), "y": max(y, 0), "width": width, "height": min(height, 1340 - max(y, 0))})
        finally:
            browser.close()
    assert not [e for e in errors if "videoUnlearning" in e or "video_unlearning" in e], errors
