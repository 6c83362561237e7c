"""The review queue, one item side by side, and the decision (where the role decides)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ...errors import BadRequest, NotFound
from ...schemas import ReviewQuery, parse_body
from ..context import render, see_other, service, state_key, who

__all__ = ["decide_item", "queue", "review_item"]

FIELDS = [
    ("first_name", "First name"), ("last_name", "Last name"), ("date_of_birth", "Date of birth"), ("gender", "Sex"),
    ("region_code", "Region"), ("country_code", "Country"), ("phone_number", "Phone"),
]
_FILTERS = ("region_code", "band", "reason", "min_age_days", "offset")


def _item_id(request: web.Request) -> int:
    raw = request.match_info["id"]
    if not raw.isdigit() or len(raw) > 18:
        raise BadRequest("a review item id is a positive whole number", code="invalid_review_id")
    return int(raw)


async def queue(request: web.Request) -> web.Response:
    """GET /console/review: open items, filtered, with counts by reason."""
    filters = {k: request.query[k].strip() for k in _FILTERS if request.query.get(k, "").strip()}
    query = parse_body(ReviewQuery, {**filters, "status": "open", "limit": 50})
    adapter = service(request)
    data = await adapter.reviews(query)
    ids = [m for item in data["items"] for m in item["mpi_ids"]]
    people = await adapter.people(ids, who(request))
    settled = set() if request.app[state_key].decides else await adapter.settled([i["mpi_ids"] for i in data["items"]])
    done = request.query.get("decided", "")
    decision = request.query.get("decision", "")
    notice = ""
    if done.isdigit() and decision in ("merge", "not_same"):
        notice = "Item %s was decided: merged." if decision == "merge" else "Item %s was decided: not the same person."
    return render(request, "review_list.html", {
        "title": "Review queue", "data": data, "people": people, "filters": filters, "settled": settled,
        "notice": notice, "notice_arg": done, "offset": query.offset, "limit": query.limit,
        "paging": {k: v for k, v in filters.items() if k != "offset"},
    })


def _rows(people: list[dict[str, Any] | None], matched: list[str]) -> list[dict[str, Any]]:
    """One row a field: each side's value, whether they differ, whether the matcher counted it."""
    rows = []
    for name, label in FIELDS:
        values = [(person or {}).get(name) for person in people]
        rows.append({"name": name, "label": label, "values": values,
                     "differs": len({v or "" for v in values}) > 1,
                     "matched": name in matched or name.removesuffix("_name") in matched})
    return rows


async def review_item(request: web.Request) -> web.Response:
    """GET /console/review/{id}: the two registrations side by side."""
    item_id = _item_id(request)
    adapter = service(request)
    item = await adapter.review_item(item_id)
    if item is None:
        raise NotFound(f"no review item {item_id}")
    sides: list[dict[str, Any]] = []
    for mpi_id in item["mpi_ids"][:2]:
        try:
            person: dict[str, Any] | None = await adapter.identity(mpi_id, who(request))
            cards = await adapter.cards_of(mpi_id)
        except NotFound:
            person, cards = None, []
        sides.append({"requested": mpi_id, "person": person, "cards": cards})
    origins = await adapter.registrations([s["requested"] for s in sides if s["requested"]])
    band = adapter.band(item["similarity_score"])
    settled = False
    if not request.app[state_key].decides and len(item["mpi_ids"]) == 2:
        settled = bool(await adapter.settled([item["mpi_ids"]]))
    external = [
        {"system": system, "values": [(s["person"] or {}).get("external_ids", {}).get(system) for s in sides]}
        for system in sorted({k for s in sides if s["person"] for k in s["person"]["external_ids"]})
    ]
    return render(request, "review_item.html", {
        "title": "Review item", "item": item, "band": band, "sides": sides, "origins": origins, "settled": settled,
        "rows": _rows([s["person"] for s in sides], item["matched_fields"]), "external": external,
        "pair": len(item["mpi_ids"]) == 2,
    })


async def decide_item(request: web.Request) -> web.Response:
    """POST /console/review/{id}/decision: merge or not the same person; back to the queue."""
    item_id = _item_id(request)
    form = await request.post()
    decision = str(form.get("decision", ""))
    await service(request).decide(item_id, decision, str(form.get("reason", "")), who(request))
    return see_other(f"/console/review?decided={item_id}&decision={decision}")
