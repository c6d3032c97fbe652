"""The pack's HTTP route: the editor checks pair text with the same parser the nodes use."""

from __future__ import annotations

import logging

from ..core.pairs import check_pairs

logger = logging.getLogger(__name__)
CHECK_PAIRS_ROUTE = "/video_unlearning/check_pairs"
_registered = False


def register_routes() -> None:
    """Add ``POST /video_unlearning/check_pairs`` (``{"text": ...}`` -> ``check_pairs``) once."""
    global _registered
    if _registered:
        return
    from aiohttp import web
    from server import PromptServer

    if getattr(PromptServer, "instance", None) is None:
        logger.info("no PromptServer running: %s not registered", CHECK_PAIRS_ROUTE)
        return
    # Asked of the server, not of this module: a second copy of the pack (a ZIP download beside a clone, a backup
    # folder) is a module of its own, and its second route stopped ComfyUI from starting ("method POST is already
    # registered").
    if any(getattr(route, "path", None) == CHECK_PAIRS_ROUTE for route in PromptServer.instance.routes):
        logger.warning("%s is already registered: the video-unlearning pack seems to be installed twice in "
                       "custom_nodes; remove one copy or rename it to end in .disabled (this one: %s)",
                       CHECK_PAIRS_ROUTE, __file__.rsplit("nodes", 1)[0])
        _registered = True
        return

    @PromptServer.instance.routes.post(CHECK_PAIRS_ROUTE)
    async def check_pairs_route(request):
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"error": "body must be JSON: {\"text\": \"...\"}"}, status=400)
        text = body.get("text") if isinstance(body, dict) else None
        if not isinstance(text, str):
            return web.json_response({"error": "body must be JSON: {\"text\": \"...\"}"}, status=400)
        return web.json_response(check_pairs(text))

    _registered = True
