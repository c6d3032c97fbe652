"""A headless ComfyUI (`main.py --cpu`) with the pack: shipped workflows run, nodes are described, interrupts are clean.

Every shipped workflow runs as shipped (CPU-sized by ``shrink``): Wan 2.1 compute then side by side, Wan 2.2
TI2V 5B, Wan 2.2 T2V 14B with a refusal vector per expert, and HunyuanVideo T2V; in the side-by-side, 5B and
HunyuanVideo workflows Unlearning Check sets Apply Unlearning's strength. Model stand-ins and the swapped text loaders are
described in ``server_setup``.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request

import numpy as np
import pytest
from PIL import Image, ImageSequence

from comfy_host import REPO_ROOT, http_json
from server_setup import WORKFLOWS, interrupt_after_progress, load_api, run_prompt, shrink, wait_for_history, workflows_server_fixture

server = pytest.fixture(scope="module")(workflows_server_fixture)
STITCH_SPACING = 8  # ImageStitch's spacing in the side-by-side workflow


def test_every_node_is_listed_with_tooltips(server):
    _, _, info = server
    ours = {name: spec for name, spec in info.items() if name.startswith("VideoUnlearn")}
    assert set(ours) == {"VideoUnlearnPairEncoder", "VideoUnlearnCollectActivations", "VideoUnlearnRefusalVector",
                         "VideoUnlearnApply", "VideoUnlearnSaveRefusalVector", "VideoUnlearnLoadRefusalVector",
                         "VideoUnlearnExportLoRA", "VideoUnlearnCheck", "VideoUnlearnCombineVectors",
                         "VideoUnlearnAudit"}
    for name, spec in ours.items():
        assert spec["category"] == "unlearning"
        for section in ("required", "optional"):
            for input_name, input_spec in spec["input"].get(section, {}).items():
                assert input_spec[1].get("tooltip"), f"{name}.{input_name} has no tooltip"


def test_shipped_workflows_are_served_as_templates(server):
    url, _, _ = server
    templates = http_json(f"{url}/workflow_templates")
    assert sorted(templates.get("comfyui-video-unlearning", [])) == sorted(p.stem for p in WORKFLOWS)
    for path in WORKFLOWS:
        served = http_json(f"{url}/api/workflow_templates/comfyui-video-unlearning/{path.name}")
        assert served["nodes"] == json.loads(path.read_text())["nodes"]
        thumbnail = f"{url}/api/workflow_templates/comfyui-video-unlearning/{path.stem}.jpg"
        with urllib.request.urlopen(thumbnail, timeout=30) as response:  # the template card's picture
            assert response.read() == path.with_suffix(".jpg").read_bytes()


def test_node_help_pages_are_served_where_the_editor_fetches_them(server):
    """The editor's node docs panel (comfyui-frontend-package 1.27.10, ``NodeHelpService.fetchCustomNodeHelp``)
    fetches ``/extensions/<pack folder>/docs/<node id>/<locale>.md``, then ``/extensions/<pack folder>/docs/<node
    id>.md``, the pack folder being the second part of the node's ``python_module`` (cut at an '@'). Unanswered, it
    shows the node's description and tooltips only."""
    url, _, info = server
    ours = {name: spec for name, spec in info.items() if name.startswith("VideoUnlearn")}
    assert len(ours) == 10
    for name, spec in ours.items():
        folder = spec["python_module"].split(".")[1].split("@")[0]
        for page_path in (f"{name}.md", f"{name}/zh.md"):  # the Chinese page where the editor's language is Chinese
            page = f"{url}/extensions/{urllib.parse.quote(folder)}/docs/{page_path}"
            with urllib.request.urlopen(page, timeout=30) as response:
                served, kind = response.read().decode("utf-8"), response.headers.get("Content-Type", "")
            assert served == (REPO_ROOT / "web" / "docs" / page_path).read_text(encoding="utf-8"), page
            assert "text/html" not in kind, (page, kind)  # newer editors (1.58.1) take an HTML answer for no page
        assert (REPO_ROOT / "web" / "docs" / f"{name}.md").read_text().startswith(f"# {spec['display_name']}\n")


def test_compute_workflow_saves_a_refusal_vector(server):
    url, base, info = server
    api = shrink(load_api("compute_refusal_vector_wan21.json", info))
    entry = run_prompt(url, api)
    assert entry["status"]["status_str"] == "success", entry["status"]
    saved = base / "models" / "refusal_vectors" / "rolex_00001.safetensors"
    assert saved.is_file()
    vector_node = next(k for k, n in api.items() if n["class_type"] == "VideoUnlearnRefusalVector")
    assert entry["outputs"][vector_node]["images"], "the score chart was not returned as a preview"
    # The chart's labels travel next to the image: Wan's text-side k/v of both tiny blocks read one input.
    chart = entry["outputs"][vector_node]["video_unlearning_chart"][0]
    assert [bar["label"] for bar in chart["bars"]] == ["text context: blocks 0-1 cross_attn.k+v share this input"]
    assert chart["best"] == chart["bars"][0]["label"] and chart["layers"] == 4


def test_side_by_side_workflow_runs_on_the_saved_vector(server):
    url, base, info = server
    if not (base / "models" / "refusal_vectors" / "rolex_00001.safetensors").is_file():
        run_prompt(url, shrink(load_api("compute_refusal_vector_wan21.json", info)))
    info = http_json(f"{url}/object_info/VideoUnlearnLoadRefusalVector")
    assert "rolex_00001.safetensors" in info["VideoUnlearnLoadRefusalVector"]["input"]["required"]["name"][1]["options"]
    api = shrink(load_api("unlearned_side_by_side_wan21.json", server[2]))
    entry = run_prompt(url, api)
    assert entry["status"]["status_str"] == "success", entry["status"]
    apply_node = next(k for k, n in api.items() if n["class_type"] == "VideoUnlearnApply")
    badge = entry["outputs"][apply_node]["video_unlearning"][0]
    assert badge["enabled"] is True and badge["concept"] == "Rolex" and badge["layers"] > 0
    summary = _check_ran_and_set_the_strength(entry, api, badge)
    # Unlearning Audit of Apply Unlearning's MODEL reads, without the vector, the edit the check measured through hooks
    audit_id = next(k for k, n in api.items() if n["class_type"] == "VideoUnlearnAudit")
    audit = entry["outputs"][audit_id]["video_unlearning_audit"][0]
    assert audit["removed"] == pytest.approx(summary["removed"], abs=0.01), (audit, summary)
    assert audit["headline_collateral"] == pytest.approx(summary["collateral"], rel=0.02), (audit, summary)
    assert audit["collateral_read"] == "guided" and "removed:" in audit["table"]
    outputs = sorted((base / "output" / "unlearning").glob("side_by_side_*.webp"))
    assert outputs, "no side-by-side video was written"
    base_half, unlearned_half = _halves(outputs[-1])
    assert base_half.shape[0] == 5 and not np.array_equal(base_half, unlearned_half), "the unlearned half equals the baseline"

    # Off, Apply Unlearning does not run what feeds its lazy vector and strength: Unlearning Check, given validation
    # pairs that repeat the vector's own (an error whenever it runs), is not run and the prompt succeeds.
    compute = load_api("compute_refusal_vector_wan21.json", server[2])
    vector_pairs = next(n["inputs"]["pairs"] for n in compute.values() if n["class_type"] == "VideoUnlearnPairEncoder")
    check_node = next(k for k, n in api.items() if n["class_type"] == "VideoUnlearnCheck")
    api[api[check_node]["inputs"]["validation_pairs"][0]]["inputs"]["pairs"] = vector_pairs
    api[apply_node]["inputs"]["enabled"] = False
    entry = run_prompt(url, api)
    assert entry["status"]["status_str"] == "success", entry["status"]
    assert entry["outputs"][apply_node]["video_unlearning"][0]["enabled"] is False
    assert check_node not in entry["outputs"], "Unlearning Check ran although Apply Unlearning was off"
    assert "nothing was edited" in entry["outputs"][audit_id]["video_unlearning_audit"][0]["table"]
    base_half, unlearned_half = _halves(sorted((base / "output" / "unlearning").glob("side_by_side_*.webp"))[-1])
    assert np.array_equal(base_half, unlearned_half), "disabled unlearning changed the video (or the seeds differ)"
    api[apply_node]["inputs"]["enabled"] = True  # on, the check runs and refuses the repeated pairs
    errors = [m[1].get("exception_message", "") for m in run_prompt(url, api)["status"]["messages"]
              if m[0] == "execution_error"]
    assert errors and "validation pairs are among the pairs the refusal vector was computed from" in errors[0]


def _check_ran_and_set_the_strength(entry, api, badge):
    """Unlearning Check ran (its chart and recommendation are in /history) and its recommended strength, not the
    widget's 1.0, is the one Apply Unlearning used."""
    check_id = next(k for k, n in api.items() if n["class_type"] == "VideoUnlearnCheck")
    apply_id = next(k for k, n in api.items() if n["class_type"] == "VideoUnlearnApply")
    assert api[apply_id]["inputs"]["strength"] == [check_id, 0], "Apply Unlearning's strength is not the check's output"
    outputs = entry["outputs"][check_id]
    assert outputs["images"] and outputs["images"][0]["filename"].endswith(".png"), "the check's chart was not returned"
    summary = outputs["video_unlearning_check"][0]
    grid = [float(v) for v in api[check_id]["inputs"]["strengths"].split(",")]
    assert summary["strength"] in grid and summary["strength"] > 0, summary
    assert "recommended strength" in summary["table"] and summary["reason"]
    assert badge["strength"] == summary["strength"], (badge, summary)
    return summary


def _refused_prompt(url: str, api: dict) -> dict:
    """POST /prompt expecting ComfyUI's 400 answer for a prompt that fails validation; returns its JSON body."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(f"{url}/prompt", data=json.dumps({"prompt": api, "client_id": "tests"}).encode(),
                                     headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 400
    return json.loads(refused.value.read())


def test_check_refuses_bad_inputs_on_the_server(server):
    """An empty or negative strength grid is refused when the prompt is queued; validation pairs that repeat the
    vector's pairs stop the run at the check with a message that says what to do."""
    url, base, info = server
    if not (base / "models" / "refusal_vectors" / "rolex_00001.safetensors").is_file():
        run_prompt(url, shrink(load_api("compute_refusal_vector_wan21.json", info)))
    api = shrink(load_api("unlearned_side_by_side_wan21.json", info))
    check_id = next(k for k, n in api.items() if n["class_type"] == "VideoUnlearnCheck")
    for grid, words in ((" , ", "empty"), ("0, -0.5, 1", "negative")):
        api[check_id]["inputs"]["strengths"] = grid
        response = _refused_prompt(url, api)
        errors = response.get("node_errors", {}).get(check_id, {}).get("errors", [])
        assert errors and words in json.dumps(errors), response
    api[check_id]["inputs"]["strengths"] = "0, 1"
    encoder_id = api[check_id]["inputs"]["validation_pairs"][0]
    api[encoder_id]["inputs"]["pairs"] = (REPO_ROOT / "workflows" / "pairs" / "trademark_rolex.txt").read_text()
    entry = run_prompt(url, api)
    errors = [m[1] for m in entry["status"]["messages"] if m[0] == "execution_error"]
    assert entry["status"]["status_str"] == "error" and errors, entry["status"]
    assert errors[0]["node_type"] == "VideoUnlearnCheck", errors
    assert "6 of the 6 validation pairs are among the pairs the refusal vector" in errors[0]["exception_message"], errors


def _latest_halves(base):
    return _halves(sorted((base / "output" / "unlearning").glob("side_by_side_*.webp"))[-1])


def _badges(entry, api):
    return [entry["outputs"][k]["video_unlearning"][0] for k, n in api.items() if n["class_type"] == "VideoUnlearnApply"]


def _runs_and_unlearns(url, base, api, *, frames):
    """Run ``api``: every Apply Unlearning reports its layers and the unlearned half differs; with every Apply
    disabled the halves are pixel-identical (same seed, same noise)."""
    entry = run_prompt(url, api)
    first = entry
    errors = [m[1].get("exception_message") for m in entry["status"]["messages"] if m[0] == "execution_error"]
    assert entry["status"]["status_str"] == "success", errors
    badges = _badges(entry, api)
    assert badges and all(b["enabled"] is True and b["concept"] == "Rolex" and b["layers"] > 0 for b in badges), badges
    base_half, unlearned_half = _latest_halves(base)
    assert base_half.shape[0] == frames and not np.array_equal(base_half, unlearned_half), "the unlearned half equals the baseline"
    for node in api.values():
        if node["class_type"] == "VideoUnlearnApply":
            node["inputs"]["enabled"] = False
    entry = run_prompt(url, api)
    assert entry["status"]["status_str"] == "success", entry["status"]
    assert all(b["enabled"] is False for b in _badges(entry, api))
    base_half, unlearned_half = _latest_halves(base)
    assert np.array_equal(base_half, unlearned_half), "disabled unlearning changed the video (or the seeds differ)"
    return first


def test_wan22_ti2v_5b_workflow_unlearns(server):
    url, base, info = server
    api = shrink(load_api("unlearn_wan22_ti2v_5B.json", info))
    entry = _runs_and_unlearns(url, base, api, frames=1)
    _check_ran_and_set_the_strength(entry, api, _badges(entry, api)[0])
    assert (base / "models" / "refusal_vectors" / "rolex_5b_00001.safetensors").is_file()


def test_wan22_t2v_14b_workflow_unlearns_both_experts(server):
    url, base, info = server
    api = shrink(load_api("unlearn_wan22_t2v_14B.json", info))
    loaders = {n["inputs"]["unet_name"] for n in api.values() if n["class_type"] == "UNETLoader"}
    assert loaders == {"wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors", "wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors"}
    _runs_and_unlearns(url, base, api, frames=5)
    vectors = base / "models" / "refusal_vectors"
    high, low = (vectors / f"rolex_{name}_00001.safetensors" for name in ("high", "low"))
    assert high.is_file() and low.is_file()
    assert high.read_bytes() != low.read_bytes(), "both experts got the same refusal vector"
    # Wired crosswise (the high-noise vector on the low-noise expert), Apply Unlearning refuses and says why.
    first, second = (k for k, n in api.items() if n["class_type"] == "VideoUnlearnApply")
    api[first]["inputs"]["refusal_vector"], api[second]["inputs"]["refusal_vector"] = (
        api[second]["inputs"]["refusal_vector"], api[first]["inputs"]["refusal_vector"])
    for node in (first, second):
        api[node]["inputs"]["enabled"] = True
    entry = run_prompt(url, api)
    errors = [m[1] for m in entry["status"]["messages"] if m[0] == "execution_error"]
    assert entry["status"]["status_str"] == "error" and errors, entry["status"]
    assert errors[0]["node_type"] == "VideoUnlearnApply" and "fingerprint" in errors[0]["exception_message"], errors


def test_hunyuan_video_workflow_unlearns(server):
    """HunyuanVideo as ComfyUI's own example samples it (FluxGuidance into a BasicGuider, SamplerCustomAdvanced,
    tiled decoding): the check, without a negative prompt, sets the strength on the txt_mlp.0 layers it fitted."""
    url, base, info = server
    api = shrink(load_api("unlearn_hunyuan_video_t2v.json", info))
    assert any(n["class_type"] == "TinyHunyuanVideoTextLoader" for n in api.values())
    entry = _runs_and_unlearns(url, base, api, frames=5)
    summary = _check_ran_and_set_the_strength(entry, api, _badges(entry, api)[0])
    # no negative prompt, as the sampler: the conditional prediction's collateral, and the table says why
    assert "embeds its guidance" in summary["table"] and "guided =" not in summary["table"]
    assert (base / "models" / "refusal_vectors" / "rolex_hunyuan_00001.safetensors").is_file()


def _halves(path):
    """Frames of the stitched video as ``[frames, h, w, 3]`` arrays: left (baseline) and right (unlearned)."""
    with Image.open(path) as video:
        frames = np.stack([np.asarray(frame.convert("RGB")) for frame in ImageSequence.Iterator(video)])
    width = (frames.shape[2] - STITCH_SPACING) // 2
    return frames[:, :, :width], frames[:, :, width + STITCH_SPACING:]


def test_interrupt_during_collection_ends_cleanly(server):
    url, _, info = server
    api = shrink(load_api("compute_refusal_vector_wan21.json", info), timesteps="60")
    collect_id, collect = next((k, n) for k, n in api.items() if n["class_type"] == "VideoUnlearnCollectActivations")
    collect["inputs"].update(layers="all", length=9, seed=7)  # video-side layers: one forward per pair and timestep
    stopped = interrupt_after_progress(url, api, collect_id, steps=2)
    value, total = stopped["progress"]
    assert stopped["event"] == "execution_interrupted" and value < total
    # Cancel stops the loop within one forward: on these tiny models a forward takes well under a second.
    assert stopped["stop_seconds"] < 10.0, stopped
    status = wait_for_history(url, stopped["prompt_id"])["status"]
    assert status["status_str"] == "error" and not status["completed"]
    interrupted = [message[1] for message in status["messages"] if message[0] == "execution_interrupted"]
    assert interrupted and interrupted[0]["node_type"] == "VideoUnlearnCollectActivations", status["messages"]
    # The server is healthy and the model's hooks are gone: a following collection (new seed, so nothing is
    # served from ComfyUI's cache) runs to the end.
    api = shrink(load_api("compute_refusal_vector_wan21.json", info))
    api[collect_id]["inputs"]["seed"] = 11
    entry = run_prompt(url, api)
    assert entry["status"]["status_str"] == "success", entry["status"]
    executed = [m[1] for m in entry["status"]["messages"] if m[0] == "execution_cached"]
    assert collect_id not in (executed[0]["nodes"] if executed else []), "the collection was served from the cache"


def test_pair_check_route_refuses_deep_nesting_and_oversized_text_on_the_server(server):
    """On ComfyUI's own server (its client_max_size, middlewares and error handling): a body nested 50,000 deep gave a
    500 and a RecursionError traceback in the log; a pairs text over the route's limit is a 413 that says why."""
    url, base, _ = server

    def post(body: bytes) -> tuple[int, dict]:
        request = urllib.request.Request(f"{url}/video_unlearning/check_pairs", data=body,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    nested = b'{"text": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    assert post(nested) == (400, {"error": 'body must be JSON: {"text": "..."}'})
    status, answer = post(json.dumps({"text": "a | b\n" * 200_000}).encode())  # 1.2 M characters
    assert status == 413 and "longer than 1,048,576 characters" in answer["error"]
    assert post(json.dumps({"text": "a Rolex | a watch\nthe Rolex | the watch"}).encode())[0] == 200
    assert "RecursionError" not in (base / "server.log").read_text()
