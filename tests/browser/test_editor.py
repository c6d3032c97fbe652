"""The pack in ComfyUI's real editor (the comfyui-frontend-package ComfyUI serves), in headless Chromium.

Checks: the Pair Encoder counts valid pairs and names the first bad line while one types (through
the pack's Python route), user text is shown as text and never parsed as HTML; the Low-Rank
Refusal Vector node shows its score chart after a run; Apply Unlearning carries an on/off,
strength and concept badge before and after a run. Screenshots go to ``out/browser/``.
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


def test_editor_shows_pair_check_chart_and_badge(server):
    url, _, _ = server
    SHOTS.mkdir(parents=True, exist_ok=True)
    for stale in SHOTS.glob("*.png"):  # the artefacts always come from one run
        stale.unlink()
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

            page.evaluate(SWAP_AND_SHRINK)
            # The chart arrives as the node's UI preview image; it must have decoded, not just been referenced.
            page.wait_for_function(f"""() => {{ const imgs = ({FIND})('VideoUnlearnRefusalVector').imgs ?? [];
                                               return imgs.length > 0 && imgs[0].complete && imgs[0].naturalWidth > 0; }}""",
                                   timeout=180_000)
            size = page.evaluate(f"() => {{ const i = ({FIND})('VideoUnlearnRefusalVector').imgs[0]; return [i.naturalWidth, i.naturalHeight]; }}")
            assert min(size) >= 100, size
            page.screenshot(path=str(SHOTS / "4_score_chart.png"))

            _open(page, url, "unlearned_side_by_side_wan21.json")
            badge = page.locator(".video-unlearning-badge").first
            sync_api.expect(badge).to_have_text("UNLEARNING ON · strength 1.00 · rolex_00001", timeout=10_000)
            page.evaluate(f"""() => {{ const w = ({FIND})('VideoUnlearnApply').widgets.find((x) => x.name === 'enabled');
                                      w.value = false; w.callback?.(false); }}""")
            sync_api.expect(badge).to_have_text("UNLEARNING OFF · rolex_00001", timeout=5_000)
            page.screenshot(path=str(SHOTS / "5_badge_off.png"))
            page.evaluate(f"""() => {{ const w = ({FIND})('VideoUnlearnApply').widgets.find((x) => x.name === 'enabled');
                                      w.value = true; w.callback?.(true); }}""")
            page.evaluate(SWAP_AND_SHRINK)
            sync_api.expect(badge).to_contain_text("UNLEARNING ON · strength 1.00 · Rolex · ", timeout=240_000)
            sync_api.expect(badge).to_contain_text("layers")
            page.screenshot(path=str(SHOTS / "6_badge_after_run.png"))
        finally:
            browser.close()
    assert not [e for e in errors if "videoUnlearning" in e or "video_unlearning" in e], errors
