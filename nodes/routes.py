"""The pack's HTTP route: the editor checks pair text with the same parser the nodes use."""

from __future__ import annotations

import asyncio
import json
import logging

from ..core.pairs import check_pairs

logger = logging.getLogger(__name__)
CHECK_PAIRS_ROUTE = "/video_unlearning/check_pairs"
#: Longest pairs text the route checks (characters). A pair list is a few kilobytes; checking 85 MB took 20 s.
MAX_TEXT = 1 << 20
#: Longest body read: the text JSON-escaped by an ASCII-only encoder (a character beyond U+FFFF is a surrogate pair,
#: \uXXXX\uXXXX: 12 bytes; at 6 a text of 600,000 such characters was refused as over 1,048,576 characters) and the
#: braces around it.
MAX_BODY = 12 * MAX_TEXT + 1024
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

    too_long = {"error": f"the pairs text is longer than {MAX_TEXT:,} characters; a pair list is a few kilobytes: "
                         "split it, or give the prompts to Pair Encoder from a file"}

    @PromptServer.instance.routes.post(CHECK_PAIRS_ROUTE)
    async def check_pairs_route(request):
        if (request.content_length or 0) > MAX_BODY:  # refused before a byte is read
            return web.json_response(too_long, status=413)
        raw = await request.read()
        if len(raw) > MAX_BODY:  # a chunked body has no Content-Length
            return web.json_response(too_long, status=413)
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):  # RecursionError: arrays nested tens of thousands deep
            return web.json_response({"error": "body must be JSON: {\"text\": \"...\"}"}, status=400)
        text = body.get("text") if isinstance(body, dict) else None
        if not isinstance(text, str):
            return web.json_response({"error": "body must be JSON: {\"text\": \"...\"}"}, status=400)
        if len(text) > MAX_TEXT:
            return web.json_response(too_long, status=413)
        # In a worker thread: the server's event loop (every other request, the progress websocket) keeps running.
        return web.json_response(await asyncio.to_thread(check_pairs, text))

    _registered = True
