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
VECTOR_NAME = "rolex_00001.safetensors"
MODEL_URLS = {
    UNET: ("diffusion_models", "https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files/diffusion_models/wan2.1_t2v_1.3B_fp16.safetensors"),
    TEXT_ENCODER: ("text_encoders", "https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files/text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors"),
    VAE: ("vae", "https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files/vae/wan_2.1_vae.safetensors"),
}
#: Group bounding boxes start this far above their first row of nodes: the group title, then the node title bar.
HEADER = 75
NEGATIVE = "blurry, low quality, static, distorted, watermark, text, jpeg artifacts"


class Graph:
    def __init__(self):
        self.nodes, self.links, self.groups = [], [], []

    def node(self, type_, pos, widgets=(), inputs=(), outputs=(), size=(320, 110), title=None):
        """``inputs``: (name, type) of linkable inputs in order; ``outputs``: (name, type)."""
        node = {"id": len(self.nodes) + 1, "type": type_, "pos": list(pos), "size": list(size), "flags": {},
                "order": len(self.nodes), "mode": 0,
                "inputs": [{"name": n, "type": t, "link": None} for n, t in inputs],
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

    def dump(self, path: Path):
        data = {"last_node_id": len(self.nodes), "last_link_id": len(self.links), "nodes": self.nodes,
                "links": self.links, "groups": self.groups, "config": {}, "extra": {"ds": {"scale": 0.8, "offset": [60, 60]}},
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


def compute_workflow() -> Graph:
    g = Graph()
    model, clip, _ = loaders(g, 0, 0, vae=False)
    pairs = (PAIRS_DIR / "trademark_rolex.txt").read_text()
    encoder = g.node("VideoUnlearnPairEncoder", (400, 0), [pairs, "\n".join(_neutral()), "Rolex"],
                     inputs=[("clip", "CLIP")], outputs=[("pairs", "UNLEARN_PAIRS")], size=(520, 420))
    g.link(clip, 0, encoder, "clip")
    collect = g.node("VideoUnlearnCollectActivations", (960, 0), [832, 480, 1, "4", 0, "default", 0, -1],
                     inputs=[("model", "MODEL"), ("pairs", "UNLEARN_PAIRS"), ("latent", "LATENT")],
                     outputs=[("activations", "UNLEARN_ACTIVATIONS")], size=(340, 270))
    g.link(model, 0, collect, "model")
    g.link(encoder, 0, collect, "pairs")
    vector = g.node("VideoUnlearnRefusalVector", (1340, 0), ["cpca", 4, 1.0], inputs=[("activations", "UNLEARN_ACTIVATIONS")],
                    outputs=[("refusal_vector", "REFUSAL_VECTOR"), ("scores", "IMAGE")], size=(440, 330))
    g.link(collect, 0, vector, "activations")
    save = g.node("VideoUnlearnSaveRefusalVector", (1340, 370), ["rolex"], inputs=[("refusal_vector", "REFUSAL_VECTOR")], size=(320, 80))
    g.link(vector, 0, save, "refusal_vector")
    g.group("2. Pairs, activations, refusal vector", (390, -HEADER, 1410, HEADER + 560))
    g.note((960, 320), "**Compute a refusal vector** from 5 or more pairs that differ only by the concept (6 Rolex pairs are filled in).\n\n"
           "- Pairs: one per line, `prompt with concept | same prompt without it`; the node checks them as you type.\n"
           "- `layers = default` (`cross_attn.k+v` for Wan) reads only the text: the node then measures one timestep, "
           "all prompts in one batch. Video-side layers (`ffn.0`, `cross_attn.o`) use every timestep.\n"
           "- The bar chart shows how strongly each layer separates the pairs.\n"
           "- The vector is saved to `models/refusal_vectors/rolex_00001.safetensors`; open the side-by-side workflow next.",
           size=(340, 220))
    return g


def compare_workflow() -> Graph:
    g = Graph()
    model, clip, vae = loaders(g, 0, 0, vae=True)
    load = g.node("VideoUnlearnLoadRefusalVector", (400, 0), [VECTOR_NAME], outputs=[("refusal_vector", "REFUSAL_VECTOR")], size=(340, 60))
    apply = g.node("VideoUnlearnApply", (400, 100), [1.0, True, "all in vector", 0, -1, "safe_mean"],
                   inputs=[("model", "MODEL"), ("refusal_vector", "REFUSAL_VECTOR")], outputs=[("MODEL", "MODEL")], size=(340, 220))
    g.link(model, 0, apply, "model")
    g.link(load, 0, apply, "refusal_vector")
    positive = g.node("CLIPTextEncode", (400, 420), ["a close-up of a Rolex watch on a wrist, sunlight, shallow depth of field"],
                      inputs=[("clip", "CLIP")], outputs=[("CONDITIONING", "CONDITIONING")], size=(340, 120), title="Prompt")
    negative = g.node("CLIPTextEncode", (400, 580), [NEGATIVE], inputs=[("clip", "CLIP")],
                      outputs=[("CONDITIONING", "CONDITIONING")], size=(340, 100), title="Negative prompt")
    for text in (positive, negative):
        g.link(clip, 0, text, "clip")
    latent = g.node("EmptyHunyuanLatentVideo", (400, 720), [832, 480, 33, 1], outputs=[("LATENT", "LATENT")], size=(340, 130))
    g.group("2. Unlearning and prompt", (390, -HEADER, 360, HEADER + 870))
    images = []
    for row, (title, sampler_model) in enumerate((("Baseline", model), ("Unlearned", apply))):
        y = row * 330
        sampler = g.node("KSampler", (790, y), [42, "fixed", 30, 6.0, "uni_pc", "simple", 1.0],
                         inputs=[("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"),
                                 ("latent_image", "LATENT")], outputs=[("LATENT", "LATENT")], size=(320, 262), title=f"{title} sampler")
        g.link(sampler_model, 0, sampler, "model")
        g.link(positive, 0, sampler, "positive")
        g.link(negative, 0, sampler, "negative")
        g.link(latent, 0, sampler, "latent_image")
        decode = g.node("VAEDecode", (1140, y), [], inputs=[("samples", "LATENT"), ("vae", "VAE")], outputs=[("IMAGE", "IMAGE")], size=(210, 46))
        g.link(sampler, 0, decode, "samples")
        g.link(vae, 0, decode, "vae")
        images.append(decode)
    g.group("3. Same seed, base vs. unlearned", (780, -HEADER, 580, HEADER + 620))
    stitch = g.node("ImageStitch", (1390, 0), ["right", True, 8, "white"],
                    inputs=[("image1", "IMAGE"), ("image2", "IMAGE")], outputs=[("IMAGE", "IMAGE")], size=(300, 150))
    g.link(images[0], 0, stitch, "image1")
    g.link(images[1], 0, stitch, "image2")
    save = g.node("SaveAnimatedWEBP", (1390, 190), ["unlearning/side_by_side", 16.0, False, 90, "default"],
                  inputs=[("images", "IMAGE")], size=(420, 420))
    g.link(stitch, 0, save, "images")
    g.group("4. Side by side", (1380, -HEADER, 440, HEADER + 630))
    g.note((790, 680), "**Baseline vs. unlearned from one seed.** Left: the original model; right: the same model with the "
           "refusal vector applied (a patch on a copy: your model file is never changed).\n\n"
           "- `strength` 1 removes the concept direction; try 0.5-1.5. `enabled` off gives the baseline back.\n"
           "- Load the vector saved by *compute_refusal_vector_wan21*; the badge on Apply Unlearning shows what is unlearned.",
           size=(560, 170))
    return g


def _neutral():
    import sys

    sys.path.insert(0, str(ROOT))
    from core.pairs import DEFAULT_NEUTRAL_PROMPTS

    return DEFAULT_NEUTRAL_PROMPTS


WORKFLOWS = {"compute_refusal_vector_wan21.json": compute_workflow, "unlearned_side_by_side_wan21.json": compare_workflow}


def main():
    for name, build in WORKFLOWS.items():
        build().dump(OUT / name)
        print(f"wrote {OUT / name}")


if __name__ == "__main__":
    main()
