"""The last 24 hours of runs per job as an SVG picture: one row per job, one bar per run, colored by state
(a failing night shows as a red stretch at a glance). Rendered on the server: no script, works offline."""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape
from typing import Any

WIDTH, ROW, LABEL, PAD = 720, 22, 150, 24
SPAN = 86400.0
COLORS = {"OK": "#1a7f37", "ERR": "#cf222e", "RUN": "#0969da", "QUE": "#6e7781"}
PAUSED = "#bf8700"  # a due time recorded missed while its job was paused: not a failure of the job


def _color(run: dict[str, Any]) -> str:
    if run["reason"] == "missed" and (run["message"] or "").startswith("paused by"):
        return PAUSED
    return COLORS.get(run["state"], "#6e7781")


def _when(text: str | None) -> float | None:
    return datetime.fromisoformat(text).timestamp() if text else None


def timeline_svg(jobs: list[str], runs: list[dict[str, Any]], now: float) -> str:
    rows = [*jobs, *(["tasks"] if any(r["job"] is None for r in runs) else [])]
    height = ROW * max(1, len(rows)) + 20
    start = now - SPAN
    end_x = WIDTH - PAD
    scale = (end_x - LABEL) / SPAN
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" role="img" '
             f'aria-label="runs of the last 24 hours per job" class="timeline">']
    for i, name in enumerate(rows):
        y = i * ROW
        parts.append(f'<text x="0" y="{y + 15}" font-size="12">{escape(name[:22])}</text>')
        parts.append(f'<line x1="{LABEL}" x2="{end_x}" y1="{y + 11}" y2="{y + 11}" stroke="#d0d7de"/>')
    for hour in range(0, 25, 6):
        x = LABEL + hour * 3600 * scale
        label = datetime.fromtimestamp(start + hour * 3600, UTC).strftime("%H:%M")
        parts.append(f'<text x="{x:.0f}" y="{height - 4}" font-size="10" text-anchor="middle">{label}</text>')
    index = {name: i for i, name in enumerate(rows)}
    for r in runs:
        row = index.get(r["job"] or "tasks")
        begin = _when(r["started"]) or _when(r["due"]) or _when(r["created"])
        if row is None or begin is None:
            continue
        end = _when(r["finished"]) or now
        w = max(3.0, (end - max(begin, start)) * scale)
        x = min(LABEL + max(0.0, begin - start) * scale, end_x - w)
        state = r["state"] + (f" {r['reason']}" if r["reason"] else "") + (
            f": {r['message'][:120]}" if r["message"] else "")
        parts.append(f'<rect x="{x:.1f}" y="{row * ROW + 4}" width="{w:.1f}" height="14" '
                     f'fill="{_color(r)}"><title>run {r["id"]}: {escape(state)} '
                     f'{escape(r["started"] or r["due"] or "")}</title></rect>')
    parts.append("</svg>")
    return "".join(parts)
