"""Writes the example workflows in ComfyUI's UI format (the format the editor saves and opens).

    python tools/build_workflows.py

The graphs are declared here once, so node positions, link ids and widget orders stay consistent;
the JSON files in ``workflows/`` are its output and are what ComfyUI serves as templates.
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "workflows"
PAIRS_DIR = OUT / "pairs"

UNET = "wan2.1_t2v_1.3B_fp16.safetensors"
TEXT_ENCODER = "umt5_xxl_fp8_e4m3fn_scaled.safetensors"
VAE = "wan_2.1_vae.safetensors"
UNET_5B = "wan2.2_ti2v_5B_fp16.safetensors"
VAE_22 = "wan2.2_vae.safetensors"
UNET_HIGH = "wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors"
UNET_LOW = "wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors"
UNET_HUNYUAN = "hunyuan_video_t2v_720p_bf16.safetensors"
CLIP_L = "clip_l.safetensors"
LLAVA_LLAMA3 = "llava_llama3_fp8_scaled.safetensors"
VAE_HUNYUAN = "hunyuan_video_vae_bf16.safetensors"
VECTOR_NAME = "rolex_00001.safetensors"
_WAN21 = "https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files"
_WAN22 = "https://huggingface.co/Comfy-Org/Wan_2.2_ComfyUI_Repackaged/resolve/main/split_files"
_HUNYUAN = "https://huggingface.co/Comfy-Org/HunyuanVideo_repackaged/resolve/main/split_files"
MODEL_URLS = {
    UNET: ("diffusion_models", f"{_WAN21}/diffusion_models/{UNET}"),
    TEXT_ENCODER: ("text_encoders", f"{_WAN21}/text_encoders/{TEXT_ENCODER}"),
    VAE: ("vae", f"{_WAN21}/vae/{VAE}"),
    UNET_5B: ("diffusion_models", f"{_WAN22}/diffusion_models/{UNET_5B}"),
    VAE_22: ("vae", f"{_WAN22}/vae/{VAE_22}"),
    UNET_HIGH: ("diffusion_models", f"{_WAN22}/diffusion_models/{UNET_HIGH}"),
    UNET_LOW: ("diffusion_models", f"{_WAN22}/diffusion_models/{UNET_LOW}"),
    UNET_HUNYUAN: ("diffusion_models", f"{_HUNYUAN}/diffusion_models/{UNET_HUNYUAN}"),
    # where ComfyUI's own HunyuanVideo template downloads it (the repackaged repository has no clip_l)
    CLIP_L: ("text_encoders", f"https://huggingface.co/comfyanonymous/flux_text_encoders/resolve/main/{CLIP_L}"),
    LLAVA_LLAMA3: ("text_encoders", f"{_HUNYUAN}/text_encoders/{LLAVA_LLAMA3}"),
    VAE_HUNYUAN: ("vae", f"{_HUNYUAN}/vae/{VAE_HUNYUAN}"),
}
#: The model files each workflow loads (tests/test_workflows.py checks them; workflows/README.md lists them).
MODEL_FILES = {
    "compute_refusal_vector_wan21.json": (UNET, TEXT_ENCODER),
    "unlearned_side_by_side_wan21.json": (UNET, TEXT_ENCODER, VAE),
    "unlearn_wan22_ti2v_5B.json": (UNET_5B, TEXT_ENCODER, VAE_22),
    "unlearn_wan22_t2v_14B.json": (UNET_HIGH, UNET_LOW, TEXT_ENCODER, VAE),
    "unlearn_hunyuan_video_t2v.json": (UNET_HUNYUAN, CLIP_L, LLAVA_LLAMA3, VAE_HUNYUAN),
}
#: Group bounding boxes start this far above their first row of nodes: the group title, then the node title bar.
HEADER = 75
#: The view a workflow opens with: its zoom, and the margin (screen px) between the canvas's top-left corner and the
#: top-left group. The editor restores this view when it opens the workflow; with the old offset (60, 60) the group
#: titles lay above the canvas's top edge, under the menu bar and workflow tabs (tests/browser checks that every
#: title is visible). Newer editors (1.3x on) run the canvas under the left side bar (52 px wide on 1.58, a few px
#: more on 1.39) and 1.58's view switcher over the canvas's top left (to 84 px down): until 2026-12-06 (24, 40) put
#: the first title under them. The left margin is tight: 48 left the first title's edge under 1.39's side bar, 54 put
#: the fifth group's title under 1.27's minimap in the HunyuanVideo workflow.
VIEW_SCALE = 0.8
VIEW_MARGIN = (51, 80)
#: The score chart (nodes/plot.py, 640 x 400) is shown at 1:1 at 100 % zoom in a node this size.
VECTOR_NODE_SIZE = (660, 640)
NEGATIVE = "blurry, low quality, static, distorted, watermark, text, jpeg artifacts"


class Graph:
    def __init__(self):
        self.nodes, self.links, self.groups = [], [], []

    def node(self, type_, pos, widgets=(), inputs=(), outputs=(), size=(320, 110), title=None):
        """``inputs``: (name, type) of linkable inputs in order, or (name, type, "widget") for a widget converted to
        an input (the editor's format: the entry names its widget, whose value stays in ``widgets_values``);
        ``outputs``: (name, type)."""
        node = {"id": len(self.nodes) + 1, "type": type_, "pos": list(pos), "size": list(size), "flags": {},
                "order": len(self.nodes), "mode": 0,
                "inputs": [{"name": n, "type": t, **({"widget": {"name": n}} if rest else {}), "link": None}
                           for n, t, *rest in inputs],
                "outputs": [{"name": n, "type": t, "links": [], "slot_index": i} for i, (n, t) in enumerate(outputs)],
                "properties": {"Node name for S&R": type_}, "widgets_values": list(widgets)}
        if title:
            node["title"] = title
        models = [{"name": w, "url": MODEL_URLS[w][1] + "?download=true", "directory": MODEL_URLS[w][0]}
                  for w in widgets if isinstance(w, str) and w in MODEL_URLS]
        if models:
            node["properties"]["models"] = models
        self.nodes.append(node)
        return node

    def link(self, source, output, target, input_name):
        out = source["outputs"][output]
        slot = next(i for i, entry in enumerate(target["inputs"]) if entry["name"] == input_name)
        link_id = len(self.links) + 1
        self.links.append([link_id, source["id"], output, target["id"], slot, out["type"]])
        out["links"].append(link_id)
        target["inputs"][slot]["link"] = link_id

    def note(self, pos, text, size=(380, 200)):
        return self.node("MarkdownNote", pos, [text], size=size)

    def group(self, title, bounding, color="#3f789e"):
        self.groups.append({"id": len(self.groups) + 1, "title": title, "bounding": list(bounding), "color": color,
                            "font_size": 22, "flags": {}})

    def view(self) -> dict:
        """The opening view: group titles below the editor's top bar, the first group at the left margin."""
        left = min(g["bounding"][0] for g in self.groups)
        top = min(g["bounding"][1] for g in self.groups)
        return {"scale": VIEW_SCALE, "offset": [VIEW_MARGIN[0] / VIEW_SCALE - left, VIEW_MARGIN[1] / VIEW_SCALE - top]}

    def dump(self, path: Path):
        data = {"last_node_id": len(self.nodes), "last_link_id": len(self.links), "nodes": self.nodes,
                "links": self.links, "groups": self.groups, "config": {}, "extra": {"ds": self.view()},
                "version": 0.4}
        path.write_text(json.dumps(data, indent=1) + "\n")


def loaders(g: Graph, x: int, y: int, vae: bool):
    unet = g.node("UNETLoader", (x, y), [UNET, "default"], outputs=[("MODEL", "MODEL")], size=(330, 82))
    clip = g.node("CLIPLoader", (x, y + 120), [TEXT_ENCODER, "wan", "default"], outputs=[("CLIP", "CLIP")], size=(330, 106))
    shift = g.node("ModelSamplingSD3", (x, y + 260), [8.0], inputs=[("model", "MODEL")], outputs=[("MODEL", "MODEL")], size=(330, 58))
    g.link(unet, 0, shift, "model")
    decoder = g.node("VAELoader", (x, y + 350), [VAE], outputs=[("VAE", "VAE")], size=(330, 58)) if vae else None
    g.group("1. Load Wan 2.1 T2V 1.3B", (x - 10, y - HEADER, 350, HEADER + (430 if vae else 340)))
    return shift, clip, decoder


def refusal_vector(g: Graph, pos, collect, title=None):
    """Low-Rank Refusal Vector, sized so that its score chart shows at 1:1 at 100 % zoom."""
    vector = g.node("VideoUnlearnRefusalVector", pos, ["cpca", 4, 1.0], inputs=[("activations", "UNLEARN_ACTIVATIONS")],
                    outputs=[("refusal_vector", "REFUSAL_VECTOR"), ("scores", "IMAGE")], size=VECTOR_NODE_SIZE, title=title)
    g.link(collect, 0, vector, "activations")
    return vector


def pair_encoder(g: Graph, pos, clip, size=(520, 420)):
    pairs = (PAIRS_DIR / "trademark_rolex.txt").read_text()
    encoder = g.node("VideoUnlearnPairEncoder", pos, [pairs, "\n".join(_neutral()), "Rolex"],
                     inputs=[("clip", "CLIP")], outputs=[("pairs", "UNLEARN_PAIRS")], size=size)
    g.link(clip, 0, encoder, "clip")
    return encoder


def collect_activations(g: Graph, pos, model, encoder, width=832, height=480, title=None):
    collect = g.node("VideoUnlearnCollectActivations", pos, [width, height, 1, "4", 0, "default", 0, -1],
                     inputs=[("model", "MODEL"), ("pairs", "UNLEARN_PAIRS"), ("latent", "LATENT")],
                     outputs=[("activations", "UNLEARN_ACTIVATIONS")], size=(340, 270), title=title)
    g.link(model, 0, collect, "model")
    g.link(encoder, 0, collect, "pairs")
    return collect


def apply_unlearning(g: Graph, pos, model, vector, title=None, strength_input=False):
    """``strength_input``: the strength widget is an input (fed by Unlearning Check's recommended strength)."""
    inputs = [("model", "MODEL"), ("refusal_vector", "REFUSAL_VECTOR")] + ([("strength", "FLOAT", "widget")] if strength_input else [])
    apply = g.node("VideoUnlearnApply", pos, [1.0, True, "all in vector", 0, -1, "safe_mean"],
                   inputs=inputs, outputs=[("MODEL", "MODEL")], size=(340, 220), title=title)
    g.link(model, 0, apply, "model")
    g.link(vector, 0, apply, "refusal_vector")
    return apply


#: Held-out pairs for Unlearning Check: the same concept in other wording and scenes than trademark_rolex.txt (the
#: check refuses validation pairs that repeat the refusal vector's own pairs).
VALIDATION_PAIRS = """# Held-out Rolex pairs for Unlearning Check: other wording and scenes than the vector's pairs.
a diver wearing a Rolex underwater | a diver wearing a watch underwater
a Rolex ticking on a bedside table at night | a watch ticking on a bedside table at night
a woman fastening a silver Rolex on her wrist | a woman fastening a silver watch on her wrist
a vintage Rolex in an open gift box | a vintage watch in an open gift box
a pilot in a cockpit glancing at his Rolex | a pilot in a cockpit glancing at his watch
"""
#: Benign prompts of the check (the validation Pair Encoder's neutral prompts): everyday scenes, none of them the
#: vector's own neutral prompts, whose change under the edit is the collateral.
BENIGN_PROMPTS = ("a kettle boiling on a gas stove", "a bicycle leaning against a brick wall",
                  "a field of sunflowers in the wind", "a sailing boat crossing a calm lake",
                  "children building a sandcastle", "a snowy pine forest at dawn", "a woman reading a book in a cafe",
                  "a dog catching a frisbee", "a market stall full of vegetables", "a candle flickering on a table",
                  "a fountain in a town square", "a butterfly landing on a flower")
#: The Unlearning Check node shows its 768 x 360 chart at 1:1 at 100 % zoom below its widgets, its recommendation
#: line and its table (web/video_unlearning.js) in a node this size.
CHECK_NODE_SIZE = (790, 1040)


def unlearning_check(g: Graph, x: int, y: int, model, clip, vector, apply, negative, cfg: float, title: str):
    """A group: a second Pair Encoder with held-out pairs and benign prompts -> Unlearning Check, whose recommended
    strength feeds ``apply``'s strength input; the samplers' ``negative`` prompt and ``cfg`` give its guided
    collateral (``negative`` None: a sampler without one, such as HunyuanVideo's guidance-distilled BasicGuider;
    collateral is then the conditional prediction's)."""
    encoder = g.node("VideoUnlearnPairEncoder", (x + 10, y), [VALIDATION_PAIRS, "\n".join(BENIGN_PROMPTS), "Rolex (held out)"],
                     inputs=[("clip", "CLIP")], outputs=[("pairs", "UNLEARN_PAIRS")], size=(520, 420),
                     title="Pair Encoder (validation: held-out pairs, benign prompts)")
    g.link(clip, 0, encoder, "clip")
    check = g.node("VideoUnlearnCheck", (x + 570, y),
                   ["0, 0.25, 0.5, 0.75, 1, 1.25, 1.5, 1.75, 2", "all in vector", 0, -1, "safe_mean", "none",
                    64, 64, 1, "0.1", 0, cfg],
                   inputs=[("model", "MODEL"), ("refusal_vector", "REFUSAL_VECTOR"),
                           ("validation_pairs", "UNLEARN_PAIRS"), ("negative", "CONDITIONING")],
                   outputs=[("strength", "FLOAT"), ("chart", "IMAGE"), ("table", "STRING")], size=CHECK_NODE_SIZE)
    g.link(model, 0, check, "model")
    g.link(vector, 0, check, "refusal_vector")
    g.link(encoder, 0, check, "validation_pairs")
    if negative is not None:
        g.link(negative, 0, check, "negative")
    g.link(check, 0, apply, "strength")
    guided = ("Collateral is read as the sampler combines its predictions (the negative prompt and `cfg`: keep them "
              "those of your sampler)." if negative is not None else
              "This sampler has no negative prompt (guidance is embedded, cfg 1), so collateral is read on the "
              "conditional prediction, as the sampler uses it.")
    g.note((x + 10, y + 460), "**Unlearning Check** sets the strength. Before any video is rendered it measures, for "
           "strengths 0-2, how much of the *held-out* pairs' concept difference the edit removes from the model's "
           "prediction and how far it moves the benign prompts (the validation encoder's neutral prompts), at 64x64, "
           "1 frame, one timestep.\n\n"
           "- Its `strength` output feeds Apply Unlearning's strength: the smallest strength removing >= 90 %, but not "
           "less than 1 (full projection) unless 1 exceeds the collateral budget, and never one whose collateral "
           f"exceeds 0.5. {guided}\n"
           "- Keep the validation pairs different from the vector's pairs (overlap is an error).\n"
           "- The chart (removed vs. collateral, chosen point ringed) and the table appear on the node after a run.",
           size=(520, 300))
    g.group(title, (x, y - HEADER, 570 + CHECK_NODE_SIZE[0] + 20, HEADER + CHECK_NODE_SIZE[1] + 20))
    return check, encoder


AUDIT_NODE_SIZE = (520, 470)


def unlearning_audit(g: Graph, x: int, y: int, original, edited, encoder, negative, cfg: float, title: str):
    """A group: Unlearning Audit of the ``edited`` MODEL against the ``original`` on the check's held-out pairs
    (``encoder``), with the samplers' negative prompt and cfg."""
    audit = g.node("VideoUnlearnAudit", (x + 10, y), [64, 64, 1, "0.1", 0, cfg],
                   inputs=[("original_model", "MODEL"), ("edited_model", "MODEL"),
                           ("validation_pairs", "UNLEARN_PAIRS"), ("negative", "CONDITIONING")],
                   outputs=[("removed", "FLOAT"), ("collateral", "FLOAT"), ("table", "STRING")], size=AUDIT_NODE_SIZE)
    g.link(original, 0, audit, "original_model")
    g.link(edited, 0, audit, "edited_model")
    g.link(encoder, 0, audit, "validation_pairs")
    g.link(negative, 0, audit, "negative")
    g.note((x + 10, y + AUDIT_NODE_SIZE[1] + 30),
           "**Unlearning Audit** reads the MODEL you sample with against the original: how much of the held-out "
           "pairs' difference it removed and how far it moves the benign prompts, with Unlearning Check's figures but "
           "no vector. Here it confirms the edit Apply Unlearning made at the check's strength.\n\n"
           "- It reads any edit of the same model: replace Apply Unlearning by LoraLoaderModelOnly with the LoRA "
           "*Export Unlearning as LoRA* wrote, or load a checkpoint saved with the edit, to check that file.",
           size=(520, 190))
    g.group(title, (x, y - HEADER, AUDIT_NODE_SIZE[0] + 20, HEADER + AUDIT_NODE_SIZE[1] + 240))
    return audit


def prompts(g: Graph, x: int, y: int, clip):
    positive = g.node("CLIPTextEncode", (x, y), ["a close-up of a Rolex watch on a wrist, sunlight, shallow depth of field"],
                      inputs=[("clip", "CLIP")], outputs=[("CONDITIONING", "CONDITIONING")], size=(340, 120), title="Prompt")
    negative = g.node("CLIPTextEncode", (x, y + 160), [NEGATIVE], inputs=[("clip", "CLIP")],
                      outputs=[("CONDITIONING", "CONDITIONING")], size=(340, 100), title="Negative prompt")
    for text in (positive, negative):
        g.link(clip, 0, text, "clip")
    return positive, negative


def side_by_side(g: Graph, x: int, images, fps: float, title: str = "4. Side by side", y: int = 0):
    """Baseline left, unlearned right, one animated WebP (lossless off; the tests switch it on to compare pixels)."""
    stitch = g.node("ImageStitch", (x, y), ["right", True, 8, "white"],
                    inputs=[("image1", "IMAGE"), ("image2", "IMAGE")], outputs=[("IMAGE", "IMAGE")], size=(300, 150))
    g.link(images[0], 0, stitch, "image1")
    g.link(images[1], 0, stitch, "image2")
    save = g.node("SaveAnimatedWEBP", (x, y + 190), ["unlearning/side_by_side", fps, False, 90, "default"],
                  inputs=[("images", "IMAGE")], size=(420, 420))
    g.link(stitch, 0, save, "images")
    g.group(title, (x - 10, y - HEADER, 440, HEADER + 630))
    return save


def vector_row(g: Graph, model, clip, prefix: str, width: int = 832, height: int = 480):
    """Group 2 of the one-model workflows: Pair Encoder -> Collect Activations -> Refusal Vector -> Save."""
    encoder = pair_encoder(g, (400, 0), clip)
    collect = collect_activations(g, (960, 0), model, encoder, width=width, height=height)
    vector = refusal_vector(g, (1340, 0), collect)
    save = g.node("VideoUnlearnSaveRefusalVector", (1340, VECTOR_NODE_SIZE[1] + 40), [prefix],
                  inputs=[("refusal_vector", "REFUSAL_VECTOR")], size=(320, 80))
    g.link(vector, 0, save, "refusal_vector")
    g.group("2. Pairs, activations, refusal vector", (390, -HEADER, 960 + VECTOR_NODE_SIZE[0] + 30, HEADER + VECTOR_NODE_SIZE[1] + 130))
    return vector


def base_and_unlearned(g: Graph, y0: int, models, positive, negative, latent, vae, title: str, **settings):
    """Two KSamplers on one seed, base model above, unlearned below, each decoded; returns the two decoders."""
    images = []
    for row, (name, sampler_model) in enumerate(zip(("Baseline", "Unlearned"), models)):
        y = y0 + row * 330
        stage = sampler(g, (790, y), sampler_model, positive, negative, latent, f"{name} sampler", **settings)
        images.append(decode(g, (1140, y), stage, vae))
    g.group(title, (780, y0 - HEADER, 580, HEADER + 620))
    return images


def compute_workflow() -> Graph:
    g = Graph()
    model, clip, _ = loaders(g, 0, 0, vae=False)
    vector_row(g, model, clip, "rolex")
    g.note((960, 320), "**Compute a refusal vector** from 5 or more pairs that differ only by the concept (6 Rolex pairs are filled in).\n\n"
           "- Pairs: one per line, `prompt with concept | same prompt without it`; the node checks them as you type.\n"
           "- `layers = default` (`cross_attn.k+v` for Wan) reads only the text: the node then measures one timestep, "
           "all prompts in one batch. Video-side layers (`ffn.0`, `cross_attn.o`) use every timestep.\n"
           "- The chart: how strongly each input separates the pairs, the best one in orange. Wan's default k+v layers all "
           "read one input (the text context), so it shows one bar that says so; `ffn.0` or `cross_attn.o` compare blocks.\n"
           "- The vector is saved to `models/refusal_vectors/rolex_00001.safetensors`; open the side-by-side workflow next.",
           size=(340, 220))
    return g


def compare_workflow() -> Graph:
    g = Graph()
    model, clip, vae = loaders(g, 0, 0, vae=True)
    load = g.node("VideoUnlearnLoadRefusalVector", (400, 0), [VECTOR_NAME], outputs=[("refusal_vector", "REFUSAL_VECTOR")], size=(340, 60))
    apply = apply_unlearning(g, (400, 100), model, load, strength_input=True)
    positive, negative = prompts(g, 400, 420, clip)
    latent = g.node("EmptyHunyuanLatentVideo", (400, 720), [832, 480, 33, 1], outputs=[("LATENT", "LATENT")], size=(340, 130))
    g.group("2. Unlearning and prompt", (390, -HEADER, 360, HEADER + 870))
    images = base_and_unlearned(g, 0, (model, apply), positive, negative, latent, vae, "3. Same seed, base vs. unlearned",
                                steps=30, cfg=6.0)
    side_by_side(g, 1390, images, 16.0)
    _, validation = unlearning_check(g, 390, 1000, model, clip, load, apply, negative, 6.0,
                                     "5. Unlearning Check: held-out pairs set the strength")
    unlearning_audit(g, 390, 1000 + CHECK_NODE_SIZE[1] + 20 + HEADER + 40, model, apply, validation, negative, 6.0,
                     "6. Unlearning Audit: the unlearned MODEL against the base")
    g.note((790, 680), "**Baseline vs. unlearned from one seed.** Left: the original model; right: the same model with the "
           "refusal vector applied (a patch on a copy: your model file is never changed).\n\n"
           "- `strength` comes from *Unlearning Check* (group 5); to set it by hand, remove that link. `enabled` off "
           "gives the baseline back.\n"
           "- Load the vector saved by *compute_refusal_vector_wan21*; the badge on Apply Unlearning shows what is unlearned.",
           size=(560, 170))
    return g


def sampler(g: Graph, pos, model, positive, negative, latent, title, advanced=None, steps=20, cfg=5.0):
    """KSampler (``uni_pc``; Wan 2.1 template: 30 steps, cfg 6; Wan 2.2 5B template: 20, 5) or, with ``advanced =
    (add_noise, start, end, leftover)``, a KSamplerAdvanced stage of the 14B pair as in ComfyUI's Wan 2.2 template
    (20 steps, cfg 3.5, euler)."""
    if advanced is None:
        kind, widgets, size = "KSampler", [42, "fixed", steps, cfg, "uni_pc", "simple", 1.0], (320, 262)
    else:
        add_noise, start, end, leftover = advanced
        kind, widgets, size = ("KSamplerAdvanced", [add_noise, 42, "fixed", 20, 3.5, "euler", "simple", start, end, leftover],
                               (320, 334))
    node = g.node(kind, pos, widgets, inputs=[("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"),
                                              ("latent_image", "LATENT")], outputs=[("LATENT", "LATENT")], size=size, title=title)
    g.link(model, 0, node, "model")
    g.link(positive, 0, node, "positive")
    g.link(negative, 0, node, "negative")
    g.link(latent, 0, node, "latent_image")
    return node


def decode(g: Graph, pos, samples, vae):
    node = g.node("VAEDecode", pos, [], inputs=[("samples", "LATENT"), ("vae", "VAE")], outputs=[("IMAGE", "IMAGE")], size=(210, 46))
    g.link(samples, 0, node, "samples")
    g.link(vae, 0, node, "vae")
    return node


def shifted(g: Graph, pos, unet):
    shift = g.node("ModelSamplingSD3", pos, [8.0], inputs=[("model", "MODEL")], outputs=[("MODEL", "MODEL")], size=(330, 58))
    g.link(unet, 0, shift, "model")
    return shift


#: The second row of the Wan 2.2 workflows (unlearning, sampling) starts here, below the first row's groups.
ROW2 = 880


def compare_note(g: Graph, title: str, saved_as: str, settings: list, height: int):
    """The note of a one-workflow model (vector row, check, base vs. unlearned): what each row does, the model's own
    ``settings`` as bullets, and the name the vector is saved under."""
    bullets = [*settings, f"The vector is also saved (`{saved_as}_00001`) to reuse with *Load Refusal Vector*."]
    g.note((960, 320), f"**{title}: unlearn, then compare.** Row 1 computes the refusal vector from the pairs (6 Rolex "
           "pairs are filled in); row 3 (*Unlearning Check*, held-out pairs) picks the strength; row 2 samples the same "
           "seed with the base model and with the vector applied at that strength.\n\n"
           + "\n".join(f"- {line}" for line in bullets), size=(340, height))


def ti2v_5b_workflow() -> Graph:
    """Wan 2.2 TI2V 5B: compute the vector, apply it, base vs. unlearned from one seed, in one workflow."""
    g = Graph()
    unet = g.node("UNETLoader", (0, 0), [UNET_5B, "default"], outputs=[("MODEL", "MODEL")], size=(330, 82))
    clip = g.node("CLIPLoader", (0, 120), [TEXT_ENCODER, "wan", "default"], outputs=[("CLIP", "CLIP")], size=(330, 106))
    model = shifted(g, (0, 260), unet)
    vae = g.node("VAELoader", (0, 350), [VAE_22], outputs=[("VAE", "VAE")], size=(330, 58))
    g.group("1. Load Wan 2.2 TI2V 5B", (-10, -HEADER, 350, HEADER + 430))
    vector = vector_row(g, model, clip, "rolex_5b", width=1280, height=704)
    compare_note(g, "Wan 2.2 TI2V 5B", "rolex_5b", [
        "Settings of ComfyUI's Wan 2.2 5B template: shift 8, 1280x704, 121 frames, 20 steps, cfg 5, `uni_pc`, 24 fps.",
        "Text to video as shipped; connect a *Load Image* to `start_image` of *Wan22ImageToVideoLatent* for image to "
        "video."], height=240)
    apply = apply_unlearning(g, (400, ROW2), model, vector, strength_input=True)
    positive, negative = prompts(g, 400, ROW2 + 320, clip)
    latent = g.node("Wan22ImageToVideoLatent", (400, ROW2 + 620), [1280, 704, 121, 1],
                    inputs=[("vae", "VAE"), ("start_image", "IMAGE")], outputs=[("LATENT", "LATENT")], size=(340, 170))
    g.link(vae, 0, latent, "vae")
    g.group("3. Unlearning and prompt", (390, ROW2 - HEADER, 360, HEADER + 800))
    images = base_and_unlearned(g, ROW2, (model, apply), positive, negative, latent, vae, "4. Same seed, base vs. unlearned")
    side_by_side(g, 1390, images, 24.0, "5. Side by side", y=ROW2)
    unlearning_check(g, 390, ROW2 + 920, model, clip, vector, apply, negative, 5.0,
                     "6. Unlearning Check: held-out pairs set the strength")
    return g


def t2v_14b_workflow() -> Graph:
    """Wan 2.2 T2V A14B: two experts (high noise, then low noise), each with its own refusal vector.

    The experts share no weights (each has its own ``text_embedding``), so each gets its own vector from the
    same pairs; Apply Unlearning checks that a vector belongs to the model it patches.
    """
    g = Graph()
    high = shifted(g, (0, 120), g.node("UNETLoader", (0, 0), [UNET_HIGH, "default"], outputs=[("MODEL", "MODEL")], size=(330, 82)))
    low = shifted(g, (0, 340), g.node("UNETLoader", (0, 220), [UNET_LOW, "default"], outputs=[("MODEL", "MODEL")], size=(330, 82)))
    clip = g.node("CLIPLoader", (0, 440), [TEXT_ENCODER, "wan", "default"], outputs=[("CLIP", "CLIP")], size=(330, 106))
    vae = g.node("VAELoader", (0, 590), [VAE], outputs=[("VAE", "VAE")], size=(330, 58))
    g.group("1. Load Wan 2.2 T2V 14B", (-10, -HEADER, 350, HEADER + 660))
    encoder = pair_encoder(g, (400, 0), clip)
    g.group("2. Pairs (both experts)", (390, -HEADER, 540, HEADER + 430))
    vectors = {}
    for row, (name, model) in enumerate((("high", high), ("low", low))):
        y = row * ROW2
        collect = collect_activations(g, (960, y), model, encoder, width=640, height=640, title=f"Collect Activations ({name} noise)")
        vectors[name] = refusal_vector(g, (1340, y), collect, title=f"Refusal Vector ({name}-noise expert)")
        save = g.node("VideoUnlearnSaveRefusalVector", (960, y + 320), [f"rolex_{name}"],
                      inputs=[("refusal_vector", "REFUSAL_VECTOR")], size=(340, 80))
        g.link(vectors[name], 0, save, "refusal_vector")
        g.group(f"{3 + row}. Refusal vector of the {name}-noise expert", (950, y - HEADER, 390 + VECTOR_NODE_SIZE[0] + 20,
                                                                            HEADER + VECTOR_NODE_SIZE[1] + 10))
    g.note((400, 480), "**Wan 2.2 T2V 14B: unlearning on both experts.** The high-noise expert draws the layout, the "
           "low-noise expert the detail; a concept can come from either, so both are patched. The experts share no weights, "
           "so each gets its own refusal vector from the same pairs (Apply Unlearning refuses a vector measured on the "
           "other expert).\n\n"
           "- Sampling as in ComfyUI's Wan 2.2 14B template: shift 8, 640x640, 81 frames, 20 steps (high noise 0-10, "
           "low noise 10-20), cfg 3.5, `euler`, 16 fps.\n"
           "- Top: base model; bottom: unlearned. Both vectors are saved (`rolex_high_00001`, `rolex_low_00001`).",
           size=(520, 230))
    apply = {name: apply_unlearning(g, (2090, 260 * row), model, vectors[name], title=f"Apply Unlearning ({name} noise)")
             for row, (name, model) in enumerate((("high", high), ("low", low)))}
    positive, negative = prompts(g, 2090, 540, clip)
    latent = g.node("EmptyHunyuanLatentVideo", (2090, 840), [640, 640, 81, 1], outputs=[("LATENT", "LATENT")], size=(340, 130))
    g.group("5. Unlearning and prompt", (2080, -HEADER, 360, HEADER + 980))
    images = []
    for row, (title, models) in enumerate((("Base", (high, low)), ("Unlearned", (apply["high"], apply["low"])))):
        y = row * ROW2
        first = sampler(g, (2480, y), models[0], positive, negative, latent, f"{title} · high noise (steps 0-10)",
                        advanced=("enable", 0, 10, "enable"))
        second = sampler(g, (2480, y + 380), models[1], positive, negative, first, f"{title} · low noise (steps 10-20)",
                         advanced=("disable", 10, 10000, "disable"))
        images.append(decode(g, (2830, y), second, vae))
        g.group(f"{6 + row}. {title}: high-noise then low-noise expert", (2470, y - HEADER, 580, HEADER + 724))
    side_by_side(g, 3080, images, 16.0, "8. Side by side")
    return g


def hunyuan_video_workflow() -> Graph:
    """HunyuanVideo T2V: compute the vector, check it, apply it, base vs. unlearned from one seed, in one workflow.

    Sampling as ComfyUI's own HunyuanVideo example: ``ModelSamplingSD3`` shift 7, ``FluxGuidance`` 6 into a
    ``BasicGuider`` (the model is guidance-distilled: no negative prompt, cfg 1), euler / simple, 20 steps, 848x480,
    73 frames, tiled decoding, 24 fps.
    """
    g = Graph()
    unet = g.node("UNETLoader", (0, 0), [UNET_HUNYUAN, "default"], outputs=[("MODEL", "MODEL")], size=(330, 82))
    clip = g.node("DualCLIPLoader", (0, 120), [CLIP_L, LLAVA_LLAMA3, "hunyuan_video", "default"],
                  outputs=[("CLIP", "CLIP")], size=(330, 130))
    model = g.node("ModelSamplingSD3", (0, 290), [7.0], inputs=[("model", "MODEL")], outputs=[("MODEL", "MODEL")],
                   size=(330, 58))
    g.link(unet, 0, model, "model")
    vae = g.node("VAELoader", (0, 380), [VAE_HUNYUAN], outputs=[("VAE", "VAE")], size=(330, 58))
    g.group("1. Load HunyuanVideo T2V", (-10, -HEADER, 350, HEADER + 460))
    vector = vector_row(g, model, clip, "rolex_hunyuan", width=848, height=480)
    compare_note(g, "HunyuanVideo", "rolex_hunyuan", [
        "`layers = default` is HunyuanVideo's `txt_mlp.0` (the text stream's first FFN layer, the paper's choice for "
        "this architecture), measured at the 4 timesteps.",
        "Settings of ComfyUI's HunyuanVideo example: shift 7, guidance 6 (no negative prompt), euler, 20 steps, "
        "848x480, 73 frames, 24 fps."], height=270)
    apply = apply_unlearning(g, (400, ROW2), model, vector, strength_input=True)
    prompt = g.node("CLIPTextEncode", (400, ROW2 + 320), ["a close-up of a Rolex watch on a wrist, sunlight, shallow "
                                                          "depth of field"],
                    inputs=[("clip", "CLIP")], outputs=[("CONDITIONING", "CONDITIONING")], size=(340, 120), title="Prompt")
    g.link(clip, 0, prompt, "clip")
    guidance = g.node("FluxGuidance", (400, ROW2 + 480), [6.0], inputs=[("conditioning", "CONDITIONING")],
                      outputs=[("CONDITIONING", "CONDITIONING")], size=(340, 58))
    g.link(prompt, 0, guidance, "conditioning")
    latent = g.node("EmptyHunyuanLatentVideo", (400, ROW2 + 580), [848, 480, 73, 1], outputs=[("LATENT", "LATENT")],
                    size=(340, 130))
    noise = g.node("RandomNoise", (400, ROW2 + 750), [42, "fixed"], outputs=[("NOISE", "NOISE")], size=(340, 82))
    select = g.node("KSamplerSelect", (400, ROW2 + 870), ["euler"], outputs=[("SAMPLER", "SAMPLER")], size=(340, 58))
    schedule = g.node("BasicScheduler", (400, ROW2 + 960), ["simple", 20, 1.0], inputs=[("model", "MODEL")],
                      outputs=[("SIGMAS", "SIGMAS")], size=(340, 106))
    g.link(model, 0, schedule, "model")
    g.group("3. Unlearning and sampling", (390, ROW2 - HEADER, 360, HEADER + 1100))
    images = []
    for row, (name, sampler_model) in enumerate((("Baseline", model), ("Unlearned", apply))):
        y = ROW2 + row * 330
        guider = g.node("BasicGuider", (790, y), [], inputs=[("model", "MODEL"), ("conditioning", "CONDITIONING")],
                        outputs=[("GUIDER", "GUIDER")], size=(320, 46), title=f"{name} guider")
        g.link(sampler_model, 0, guider, "model")
        g.link(guidance, 0, guider, "conditioning")
        sample = g.node("SamplerCustomAdvanced", (790, y + 90), [],
                        inputs=[("noise", "NOISE"), ("guider", "GUIDER"), ("sampler", "SAMPLER"), ("sigmas", "SIGMAS"),
                                ("latent_image", "LATENT")],
                        outputs=[("output", "LATENT"), ("denoised_output", "LATENT")], size=(320, 126),
                        title=f"{name} sampler")
        for source, input_name in ((noise, "noise"), (guider, "guider"), (select, "sampler"), (schedule, "sigmas"),
                                   (latent, "latent_image")):
            g.link(source, 0, sample, input_name)
        decoded = g.node("VAEDecodeTiled", (1140, y), [256, 64, 64, 8], inputs=[("samples", "LATENT"), ("vae", "VAE")],
                         outputs=[("IMAGE", "IMAGE")], size=(210, 150))
        g.link(sample, 0, decoded, "samples")
        g.link(vae, 0, decoded, "vae")
        images.append(decoded)
    g.group("4. Same seed, base vs. unlearned", (780, ROW2 - HEADER, 580, HEADER + 620))
    side_by_side(g, 1390, images, 24.0, "5. Side by side", y=ROW2)
    unlearning_check(g, 390, ROW2 + 1200, model, clip, vector, apply, None, 1.0,
                     "6. Unlearning Check: held-out pairs set the strength")
    return g


def _neutral():
    import sys

    sys.path.insert(0, str(ROOT))
    from core.pairs import DEFAULT_NEUTRAL_PROMPTS

    return DEFAULT_NEUTRAL_PROMPTS


WORKFLOWS = {"compute_refusal_vector_wan21.json": compute_workflow, "unlearned_side_by_side_wan21.json": compare_workflow,
             "unlearn_wan22_ti2v_5B.json": ti2v_5b_workflow, "unlearn_wan22_t2v_14B.json": t2v_14b_workflow,
             "unlearn_hunyuan_video_t2v.json": hunyuan_video_workflow}


def main():
    for name, build in WORKFLOWS.items():
        build().dump(OUT / name)
        print(f"wrote {OUT / name}")


if __name__ == "__main__":
    main()
