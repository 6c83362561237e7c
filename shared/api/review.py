"""The review queue: GET /review and POST /review/{id}/decision (supervisor)."""

from __future__ import annotations

from aiohttp import web

from ..errors import BadRequest
from ..keys import registry_key
from ..review.queue import decide, list_reviews
from ..schemas import ReviewDecisionIn, ReviewQuery, parse_query
from .http import actor, answer, read_body


async def list_review_items(request: web.Request) -> web.Response:
    """GET /review"""
    query = parse_query(ReviewQuery, request.query)
    return answer(await list_reviews(request.app[registry_key], query))


async def decide_review_item(request: web.Request) -> web.Response:
    """POST /review/{id}/decision"""
    raw = request.match_info["id"]
    if not raw.isdigit() or len(raw) > 18:
        raise BadRequest("a review item id is a positive whole number", code="invalid_review_id")
    body = await read_body(request, ReviewDecisionIn)
    return answer(await decide(request.app[registry_key], int(raw), body, actor(request)))
