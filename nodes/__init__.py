"""ComfyUI side of the pack: V3 nodes over ``core/``, registered through ``comfy_entrypoint``."""

from __future__ import annotations

from comfy_api.latest import ComfyExtension, io


class VideoUnlearningExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        # ComfyUI 0.3.64 never calls ComfyExtension.on_load, so one-time setup happens here.
        from .audit import NODES as AUDIT_NODES
        from .check import NODES as CHECK_NODES
        from .definitions import NODES
        from .routes import register_routes
        from .storage import register_folder

        register_folder()
        register_routes()
        return [*NODES, *CHECK_NODES, *AUDIT_NODES]


async def comfy_entrypoint() -> VideoUnlearningExtension:
    return VideoUnlearningExtension()
