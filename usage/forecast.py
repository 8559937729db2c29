"""Month-end spend forecast from the month so far and the recent daily run-rate. Pure functions."""

import calendar
import statistics
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal

RUN_RATE_DAYS = 14


@dataclass(frozen=True)
class Forecast:
    month_to_date: Decimal
    expected: Decimal
    low: Decimal
    high: Decimal
    daily_rate: Decimal
    days_left: float


def _cents(value) -> Decimal:
    return Decimal(value).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def month_end_forecast(
    *,
    daily: dict[date, Decimal],
    today: date,
    today_partial: Decimal = Decimal(0),
    day_fraction: float = 0.5,
    stopped: bool = False,
    month_to_date: Decimal | None = None,
    missing_days_unknown: bool = False,
) -> Forecast:
    """Forecast the month's total spend.

    `daily` holds completed days' spend (any range; missing days count as 0); `today_partial` is the
    spend so far today, `day_fraction` how much of today has passed. The run-rate is the mean of the
    last RUN_RATE_DAYS completed days; the range uses their 20th and 80th percentiles, so one odd day
    widens it without moving the expectation much. `stopped`: nothing can spend any more (the key
    was deleted), so the month ends at its month to date. `month_to_date`, when known from elsewhere
    (OpenRouter's own month counter), replaces this month's completed days plus `today_partial`.
    `missing_days_unknown`: a day missing from `daily` was not observed (not that nothing was spent),
    so the run-rate is the mean of the recent days that were; while none was, and at least a whole
    day of the month has passed, it is the month to date over the days of the month so far.
    """
    month_start = today.replace(day=1)
    month_days = calendar.monthrange(today.year, today.month)[1]
    if month_to_date is None:
        completed = sum((value for day, value in daily.items() if month_start <= day < today), Decimal(0))
        month_to_date = completed + today_partial
    recent_days = [date.fromordinal(today.toordinal() - offset) for offset in range(1, RUN_RATE_DAYS + 1)]
    if missing_days_unknown:
        elapsed = Decimal(str(today.day - 1 + day_fraction))
        # Nothing observed yet (a key connected today): the month so far says more than $0/day would.
        fallback = month_to_date / elapsed if elapsed >= 1 else Decimal(0)
        recent = [Decimal(daily[day]) for day in recent_days if day in daily] or [fallback]
    else:
        recent = [Decimal(daily.get(day, 0)) for day in recent_days]
    rate = sum(recent, Decimal(0)) / len(recent)
    if stopped:
        rate = low_rate = high_rate = Decimal(0)
    elif len(set(recent)) > 1:
        quantiles = statistics.quantiles([float(v) for v in recent], n=5, method="inclusive")
        low_rate, high_rate = Decimal(str(quantiles[0])), Decimal(str(quantiles[-1]))
    else:
        low_rate = high_rate = rate
    # Credits given back (a negative day) lower the run-rate, but no future day spends less than 0.
    rate, low_rate, high_rate = (max(value, Decimal(0)) for value in (rate, low_rate, high_rate))
    # Today's remainder plus the days after today.
    days_left = (1 - day_fraction) + (month_days - today.day)
    remaining = Decimal(str(days_left))
    return Forecast(
        month_to_date=_cents(month_to_date),
        expected=_cents(month_to_date + rate * remaining),
        low=_cents(month_to_date + min(low_rate, rate) * remaining),
        high=_cents(month_to_date + max(high_rate, rate) * remaining),
        daily_rate=_cents(rate),
        days_left=days_left,
    )


def runway_days(*, balance: Decimal, daily_rate: Decimal) -> float | None:
    """Days until credits run out at the current rate; None when nothing is being spent."""
    if daily_rate <= 0:
        return None
    return float(max(balance, Decimal(0)) / daily_rate)
