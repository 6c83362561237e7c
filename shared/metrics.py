"""GET /metrics: what a supervisor watches, in the Prometheus text format (prometheus-client).

Each app has its own ``CollectorRegistry`` (no global state: tests build many apps in one
process). Requests are counted and timed by the logging middleware under the route
*template* they matched (``/mpi/{mpi_id}``, never the raw path: a label per person would
leak IDs and grow without end). Gauges that come from the database are computed when the
metrics are scraped, by the role's sources (``metric_sources_key``): identities on both,
the sync state at a node, the nodes, set-aside changes, review backlog and dedup at the hub.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime

import sqlalchemy as sa
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

from .keys import store_key
from .storage import schema as t

__all__ = [
    "CONTENT_TYPE", "HttpMetrics", "http_metrics_key", "hub_metrics", "identity_metrics",
    "metric_sources_key", "node_metrics", "scrape",
]

# What generate_latest writes is the classic text format, which every Prometheus reads (newer
# prometheus-client versions name 1.0.0 as their latest, which older servers refuse).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

MetricSource = Callable[[web.Application], Awaitable[list[Metric]]]


class HttpMetrics:
    """Requests and their latency by method, route template and status, in this app's own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("mpi_http_requests", "HTTP requests answered, by route template, method and status",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("mpi_http_request_duration_seconds", "Time to answer an HTTP request, by route template",
                                 ["method", "route"], registry=self.registry)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)


http_metrics_key = web.AppKey("http_metrics", HttpMetrics)
metric_sources_key = web.AppKey("metric_sources", list)


class _Computed:
    """A collector of families computed already (by the scrape that registers it)."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


async def scrape(app: web.Application) -> bytes:
    """The text exposition of the app's request metrics and of its sources, computed now."""
    families: list[Metric] = []
    for source in app[metric_sources_key]:
        families.extend(await source(app))
    computed = CollectorRegistry(auto_describe=False)
    computed.register(_Computed(families))
    return bytes(generate_latest(app[http_metrics_key].registry) + generate_latest(computed))


def _seconds(stamp: str | None) -> float | None:
    """A stored time (``2026-05-15T09:00:00.123Z``) as Unix seconds; None when unset or unreadable."""
    if not stamp:
        return None
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _gauge(name: str, documentation: str, value: float | None = None, labels: list[str] | None = None) -> GaugeMetricFamily:
    if labels is not None:
        return GaugeMetricFamily(name, documentation, labels=labels)
    return GaugeMetricFamily(name, documentation, value=value)


async def identity_metrics(app: web.Application) -> list[Metric]:
    """Identities held, by status (active, merged...)."""
    async with app[store_key].read() as conn:
        rows = (await conn.execute(
            sa.select(t.identity.c.status, sa.func.count()).group_by(t.identity.c.status))).all()
    family = _gauge("mpi_identities", "Identities held by this replica, by status", labels=["status"])
    counts = {"active": 0, **{str(status): int(n) for status, n in rows}}
    for status, n in sorted(counts.items()):
        family.add_metric([status], n)
    return [family]


async def node_metrics(app: web.Application) -> list[Metric]:
    """A node's sync: pending changes, cursors, the last success and the last error."""
    store = app[store_key]
    async with store.read() as conn:
        meta = dict((await conn.execute(
            sa.select(t.node_meta.c.key, t.node_meta.c.value).where(
                sa.or_(t.node_meta.c.key.like("sync_%"), t.node_meta.c.key.like("hub_%"))))).all())
        last_seq = (await conn.execute(
            sa.select(sa.func.max(t.change_log.c.seq)).where(t.change_log.c.node_id == store.node_id))).scalar()
    acked, last = int(meta.get("sync_acked_seq", "0")), int(last_seq or 0)
    out: list[Metric] = [
        _gauge("mpi_sync_enrolled", "1 if this node is enrolled with a hub", 1.0 if "hub_public_key" in meta else 0.0),
        _gauge("mpi_sync_pending_changes", "Changes written here that the hub has not acknowledged", max(last - acked, 0)),
        _gauge("mpi_sync_last_seq", "Sequence of the last change this node wrote", last),
        _gauge("mpi_sync_acked_seq", "Sequence up to which the hub acknowledged this node's changes", acked),
        _gauge("mpi_sync_blocked", "1 if the hub refuses this node itself (revoked, quarantined)",
               1.0 if meta.get("sync_blocked") else 0.0),
    ]
    success = _seconds(meta.get("sync_last_success"))
    if success is not None:
        out.append(_gauge("mpi_sync_last_success_timestamp_seconds", "When the last sync round succeeded", success))
    error = meta.get("sync_last_error") or ""
    stamp, _, text = error.partition(" ")
    failing = _gauge("mpi_sync_last_error", "1 while the last sync round failed, with its error code "
                     "(cleared by a successful round)", labels=["code"])
    if error:
        failing.add_metric([text.split(":", 1)[0].strip().replace(" ", "_") or "unknown"], 1.0)
        at = _seconds(stamp)
        if at is not None:
            out.append(_gauge("mpi_sync_last_error_timestamp_seconds", "When the last failed sync round failed", at))
    out.append(failing)
    return out


async def hub_metrics(app: web.Application) -> list[Metric]:
    """The hub: each node's last contact and cursors, set-aside changes, the review backlog, dedup."""
    async with app[store_key].read() as conn:
        nodes = (await conn.execute(sa.select(
            t.sync_node.c.name, t.sync_node.c.node_id, t.sync_node.c.status, t.sync_node.c.acked_seq,
            t.sync_node.c.pull_pos, t.sync_node.c.seen_at).order_by(t.sync_node.c.name))).all()
        aside: dict[str, int] = {str(node_id): int(n) for node_id, n in (await conn.execute(
            sa.select(t.sync_setaside.c.node_id, sa.func.count()).group_by(t.sync_setaside.c.node_id))).all()}
        feed = (await conn.execute(sa.select(sa.func.max(t.sync_feed.c.pos)))).scalar()
        backlog = (await conn.execute(
            sa.select(t.review_item.c.reason, sa.func.count()).where(t.review_item.c.status == "open")
            .group_by(t.review_item.c.reason))).all()
        queue = (await conn.execute(sa.select(sa.func.count()).select_from(t.dedup_pending))).scalar()
        sweeps = (await conn.execute(sa.select(t.dedup_progress))).all()
    seen = _gauge("mpi_hub_node_last_seen_timestamp_seconds", "When the hub last heard from the node", labels=["node"])
    acked = _gauge("mpi_hub_node_acked_seq", "Sequence up to which the hub holds and acknowledged the node's changes",
                   labels=["node"])
    pulled = _gauge("mpi_hub_node_pull_position", "Position of the hub's feed the node has pulled up to", labels=["node"])
    state = _gauge("mpi_hub_node_status", "1 for the node's state (enrolled, active, revoked, quarantined...)",
                   labels=["node", "status"])
    held = _gauge("mpi_hub_setaside_changes", "Changes of the node the hub acknowledged but could not apply",
                  labels=["node"])
    by_id = {r.node_id: r.name for r in nodes if r.node_id}
    for r in nodes:
        at = _seconds(r.seen_at)
        if at is not None:
            seen.add_metric([r.name], at)
        acked.add_metric([r.name], float(r.acked_seq))
        pulled.add_metric([r.name], float(r.pull_pos))
        state.add_metric([r.name, str(r.status)], 1.0)
        held.add_metric([r.name], float(aside.get(str(r.node_id), 0)))
    for node_id, n in aside.items():
        if node_id not in by_id:  # a node no longer enrolled under that id: still shown
            held.add_metric([node_id], float(n))
    review = _gauge("mpi_review_backlog", "Open review items, by reason", labels=["reason"])
    for reason, n in sorted(backlog):
        review.add_metric([str(reason)], float(n))
    checked = _gauge("mpi_dedup_sweep_checked", "Identities the current (or last) full dedup sweep has checked",
                     labels=["job"])
    finished = _gauge("mpi_dedup_sweep_finished", "1 if that sweep ran to its end", labels=["job"])
    updated = _gauge("mpi_dedup_sweep_updated_timestamp_seconds", "When that sweep last recorded progress",
                     labels=["job"])
    for s in sweeps:
        checked.add_metric([s.job], float(s.checked))
        finished.add_metric([s.job], 1.0 if s.finished_at else 0.0)
        at = _seconds(s.updated_at)
        if at is not None:
            updated.add_metric([s.job], at)
    return [
        seen, acked, pulled, state, held, review, checked, finished, updated,
        _gauge("mpi_hub_feed_position", "Last position of the hub's feed (a node's lag: this minus its pull position)",
               float(feed or 0)),
        _gauge("mpi_dedup_queue_length", "Identities from nodes waiting for the hub's dedup", float(queue or 0)),
    ]

