"""Spend anomalies: each series compared with its own trailing baseline, robustly (median and MAD),
so a single spike does not hide the next and weekly dips, steady growth or a job that runs once a
week do not cry wolf."""

import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

MIN_HISTORY_DAYS = 14
BASELINE_DAYS = 28
# 1.4826 × MAD estimates the standard deviation of normal data; z beyond this is a spike.
DEFAULT_Z = Decimal(6)
MIN_RATIO = Decimal("2.5")  # and at least this many times the usual day
MIN_AMOUNT = Decimal(1)  # and at least this many dollars above it: pennies are not news


@dataclass(frozen=True)
class Anomaly:
    subject: str
    day: date
    amount: Decimal
    baseline: Decimal
    score: Decimal  # robust z-score

    @property
    def times_usual(self) -> Decimal | None:
        # A ratio to a usual day of no (or negative) spend means nothing.
        return (self.amount / self.baseline).quantize(Decimal("0.1")) if self.baseline > 0 else None


def detect_spike(
    *, subject: str, series: dict[date, Decimal], day: date, z_threshold: Decimal = DEFAULT_Z
) -> Anomaly | None:
    """Is `day`'s value a spike against the BASELINE_DAYS before it? Missing days count as 0, but a
    series needs MIN_HISTORY_DAYS of history (from its first non-zero day) to be judged."""
    history_days = [day - timedelta(days=offset) for offset in range(1, BASELINE_DAYS + 1)]
    first = min((d for d, v in series.items() if v), default=None)
    if first is None or (day - first).days < MIN_HISTORY_DAYS:
        return None
    baseline = [Decimal(series.get(d, 0)) for d in history_days if d >= first]
    value = Decimal(series.get(day, 0))
    median = Decimal(str(statistics.median(baseline)))
    mad = Decimal(str(statistics.median([abs(v - median) for v in baseline])))
    # A flat series has MAD 0: use a floor of 5% of the median (or a cent) as its scale.
    scale = max(mad * Decimal("1.4826"), median * Decimal("0.05"), Decimal("0.01"))
    score = (value - median) / scale
    # A usual day at or below 0 (unattributed rows can be negative: credits OpenRouter gave back)
    # counts as 0: the day must then be MIN_AMOUNT of real spend, not merely less negative.
    usual = max(median, Decimal(0))
    if not usual:
        # Idle on most days (a weekly job, a key used every few days): its usual day is a day it is
        # used, or every such day would pass for a spike against the idle ones.
        spending = [v for v in baseline if v > 0]
        usual = Decimal(str(statistics.median(spending))) if spending else Decimal(0)
    if score < z_threshold or value - usual < MIN_AMOUNT or (usual and value < usual * MIN_RATIO):
        return None
    return Anomaly(
        subject=subject, day=day, amount=value, baseline=median, score=score.quantize(Decimal("0.1"))
    )


def new_spenders(
    *, series_by_subject: dict[str, dict[date, Decimal]], day: date, minimum: Decimal
) -> Iterable[tuple[str, Decimal]]:
    """Subjects (keys, models) whose first spend is on `day` and is at least `minimum`."""
    for subject, series in series_by_subject.items():
        earlier = any(v for d, v in series.items() if d < day)
        amount = Decimal(series.get(day, 0))
        if not earlier and amount >= minimum:
            yield subject, amount
