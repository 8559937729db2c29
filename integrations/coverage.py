"""Which UTC days a provider has reported to Doow, as a short list of [first, last] day spans.

A provider keeps only recent activity (OpenRouter: its last 30 completed days), so a day before a
connection's first sync, or in a stretch longer than that while it was not synced, was never read:
its figures are unknown, not zero. Pages say so instead of showing such days as days without spend,
and compare periods only when Doow holds every day of both.

Spans are kept sorted, disjoint and not adjacent (a span ending the day before another starts is
one span), as JSON-friendly [ISO date, ISO date] pairs on the connection.
"""

from __future__ import annotations

from datetime import date, timedelta

ONE_DAY = timedelta(days=1)


def parse(spans) -> list[tuple[date, date]]:
    return [(date.fromisoformat(first), date.fromisoformat(last)) for first, last in spans or ()]


def add(spans, first: date, last: date) -> list[list[str]]:
    """`spans` with the days from `first` to `last` added, merged with the spans they touch."""
    merged: list[tuple[date, date]] = []
    for span_first, span_last in sorted([*parse(spans), (first, last)]):
        if merged and span_first <= merged[-1][1] + ONE_DAY:
            merged[-1] = (merged[-1][0], max(merged[-1][1], span_last))
        else:
            merged.append((span_first, span_last))
    return [[a.isoformat(), b.isoformat()] for a, b in merged]


def gaps(spans, first: date, last: date) -> list[tuple[date, date]]:
    """The stretches from `first` to `last` that no span covers, in order."""
    missing, cursor = [], first
    for span_first, span_last in parse(spans):
        if span_last < cursor:
            continue
        if span_first > last:
            break
        if span_first > cursor:
            missing.append((cursor, span_first - ONE_DAY))
        cursor = span_last + ONE_DAY
        if cursor > last:
            return missing
    if cursor <= last:
        missing.append((cursor, last))
    return missing


def first_day(spans) -> date | None:
    """The first day reported to Doow; None before any."""
    parsed = parse(spans)
    return parsed[0][0] if parsed else None


def days_in(stretches: list[tuple[date, date]]) -> list[date]:
    return [first + timedelta(days=i) for first, last in stretches for i in range((last - first).days + 1)]
