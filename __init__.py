"""ComfyUI entry point of the video-unlearning pack.

Nodes are registered only when ComfyUI (`comfy`) is importable, so that `core/` and its tests
work without a host. Importing this module does no heavy work: no model is loaded, no CUDA device
is probed (when ComfyUI builds the nodes' schemas, Load Refusal Vector lists models/refusal_vectors once).
"""

import importlib.util

WEB_DIRECTORY = "./web"

if importlib.util.find_spec("comfy") is not None:
    from .nodes import comfy_entrypoint  # noqa: F401  (ComfyUI looks this name up)
