"""Prometheus metrics, computed from the stores at each scrape (no state of their own in this process).

Names follow Prometheus' rules (base units, ``_total`` for counters, ``_seconds``). The run counts are the
runs the store still holds (retention purges old ones): a purge shows as a counter reset, which
Prometheus' ``rate()`` and ``increase()`` handle.

One reading of every tenant (``snapshot``, shared by every scrape for a while: runtime/web/sweep.py) is
made once and then filtered for each token (``render``): a scoped token sees its tenants' series only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from ..model import State, TenantDef
from ..pidfile import probe
from ..store import JobSummary, StoreError
from .reader import Reader

log = logging.getLogger(__name__)
DURATION_BUCKETS = (0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0)
LATENESS_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 3600.0)


class StoreCollector(Collector):
    """``visible``: the tenants the asking token may read (a scoped token sees no other tenant's series)."""

    def __init__(self, reader: Reader, visible: Callable[[str], bool] = lambda _: True) -> None:
        self.reader, self.visible = reader, visible

    def collect(self) -> Iterator[Metric]:
        fams = _families()
        up = 1.0 if self.reader.daemon_pid() is not None else 0.0
        fams["up"].add_metric([], up)
        _add_notifications(fams["notify"], self.reader.config.path, self.visible)
        now = datetime.now(UTC)
        for tenant in (t for t in self.reader.config.tenants if self.visible(t.name)):
            try:
                self._tenant(fams, tenant, now)
            except StoreError as exc:  # the other tenants are still reported; /healthz names this one
                log.warning("metrics: tenant %s: %s", tenant.name, exc.message)
        yield from fams.values()

    def _tenant(self, fams: dict[str, Any], tenant: TenantDef, now: datetime) -> None:
        with self.reader.store(tenant) as store:
            by_job = store.summary(sorted(set(DURATION_BUCKETS) | set(LATENESS_BUCKETS)))
            queued = store.queued()
            paused = store.paused()
            for job in tenant.jobs:
                fams["paused"].add_metric([tenant.name, job.name], 1.0 if job.name in paused else 0.0)
                nxt = self.reader.next_due(tenant, job, store, now)
                if nxt is not None:
                    fams["next"].add_metric([tenant.name, job.name], nxt)
        _add_runs(fams, tenant.name, by_job)
        depth: dict[str, int] = {}
        for run in queued:
            depth[run.queue or ""] = depth.get(run.queue or "", 0) + 1
        for queue, n in sorted(depth.items()):
            fams["depth"].add_metric([tenant.name, queue], n)
        running = sum(s.count for s in by_job if s.state is State.RUN)
        fams["running"].add_metric([tenant.name], running)


def _families() -> dict[str, Any]:
    tj = ["tenant", "job"]
    return {
        "up": GaugeMetricFamily("taskserver_daemon_up", "1 when the daemon of this config runs"),
        "runs": CounterMetricFamily("taskserver_runs", "runs in the store, by final or current state",
                                    labels=[*tj, "state"]),
        "duration": HistogramMetricFamily("taskserver_run_duration_seconds", "run time of ended runs",
                                          labels=tj),
        "lateness": HistogramMetricFamily("taskserver_run_lateness_seconds",
                                          "start minus due time of scheduled runs", labels=tj),
        "last_ok": GaugeMetricFamily("taskserver_job_last_success_timestamp_seconds",
                                     "end of the job's last OK run", labels=tj),
        "next": GaugeMetricFamily("taskserver_job_next_due_timestamp_seconds", "the job's next due time",
                                  labels=tj),
        "depth": GaugeMetricFamily("taskserver_queue_depth", "queued (QUE) runs", labels=["tenant", "queue"]),
        "running": GaugeMetricFamily("taskserver_running", "runs in progress (RUN)", labels=["tenant"]),
        "paused": GaugeMetricFamily("taskserver_job_paused", "1 while the job's schedule is paused",
                                    labels=tj),
        "notify": CounterMetricFamily("taskserver_notifications", "notifications since the daemon started, "
                                      "by result (sent, failed, dropped)", labels=["tenant", "result"]),
    }


def _add_notifications(fam: Any, config: Path, visible: Callable[[str], bool]) -> None:
    """The running daemon's counters, as it publishes them in its pid file's info (docs/notifications.md)."""
    counts = (probe(config).info() or {}).get("notifications") or {}
    for tenant, per in sorted(counts.items()):
        if not visible(str(tenant)):
            continue
        for result in ("sent", "failed", "dropped"):
            fam.add_metric([str(tenant), result], int(per.get(result, 0)))


def _add_runs(fams: dict[str, Any], tenant: str, rows: list[JobSummary]) -> None:
    bounds = sorted(set(DURATION_BUCKETS) | set(LATENESS_BUCKETS))
    per_job: dict[str, list[JobSummary]] = {}
    for s in rows:
        fams["runs"].add_metric([tenant, s.job or "", s.state.value], s.count)
        per_job.setdefault(s.job or "", []).append(s)
    for job, sums in sorted(per_job.items()):
        labels = [tenant, job]
        ended = [s for s in sums if s.state in (State.OK, State.ERR)]
        _histogram(fams["duration"], labels, bounds, DURATION_BUCKETS, [s.duration_le for s in ended],
                   n=sum(s.duration_count for s in ended), total=sum(s.duration_sum for s in ended))
        _histogram(fams["lateness"], labels, bounds, LATENESS_BUCKETS, [s.lateness_le for s in sums],
                   n=sum(s.lateness_count for s in sums), total=sum(s.lateness_sum for s in sums))
        last = max((s.last_ok for s in sums if s.last_ok is not None), default=None)
        if last is not None:
            fams["last_ok"].add_metric(labels, last)


def _histogram(fam: Any, labels: list[str], bounds: list[float], wanted: tuple[float, ...],
               rows: list[tuple[int, ...]], *, n: int, total: float) -> None:
    counts = {b: sum(r[i] for r in rows) for i, b in enumerate(bounds)}
    buckets = [(_fmt(b), counts[b]) for b in wanted]
    fam.add_metric(labels, [*buckets, ("+Inf", n)], total)


def _fmt(b: float) -> str:
    return f"{b:g}"


class Snapshot(NamedTuple):
    families: list[Metric]  # every tenant's series
    text: bytes  # all of them in Prometheus' text format (what an unscoped token gets)


def snapshot(reader: Reader) -> Snapshot:
    """Every tenant's series, read from the stores once."""
    families = list(StoreCollector(reader).collect())
    return Snapshot(families, render(families))


def render(families: list[Metric], visible: Callable[[str], bool] = lambda _: True) -> bytes:
    """The text format of the series whose tenant ``visible`` admits (and of those of no tenant)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(_Fixed([_only(fam, visible) for fam in families]))
    return generate_latest(reg)


class _Fixed(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def _only(fam: Metric, visible: Callable[[str], bool]) -> Metric:
    out = Metric(fam.name, fam.documentation, fam.type, fam.unit)
    out.samples = [s for s in fam.samples if "tenant" not in s.labels or visible(s.labels["tenant"])]
    return out
