"""Backtest the month-end forecast on a daily spend series: forecast each day of a month from the
days before it and compare with the month's real total."""

import calendar
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from usage.forecast import month_end_forecast


@dataclass(frozen=True)
class BacktestResult:
    month: str
    actual: Decimal
    mean_abs_pct_error: float
    final_week_abs_pct_error: float
    inside_range: float  # share of days whose low–high range held the actual total


def backtest_month(*, daily: dict[date, Decimal], year: int, month: int) -> BacktestResult:
    days_in_month = calendar.monthrange(year, month)[1]
    actual = sum(
        (daily.get(date(year, month, d), Decimal(0)) for d in range(1, days_in_month + 1)), Decimal(0)
    )
    errors, late_errors, inside = [], [], 0
    for day_number in range(2, days_in_month + 1):
        today = date(year, month, day_number)
        known = {day: value for day, value in daily.items() if day < today}
        forecast = month_end_forecast(daily=known, today=today, today_partial=Decimal(0), day_fraction=0.0)
        error = abs(float((forecast.expected - actual) / actual)) if actual else 0.0
        errors.append(error)
        if day_number > days_in_month - 7:
            late_errors.append(error)
        inside += forecast.low <= actual <= forecast.high
    return BacktestResult(
        month=f"{year}-{month:02d}",
        actual=actual,
        mean_abs_pct_error=sum(errors) / len(errors),
        final_week_abs_pct_error=sum(late_errors) / len(late_errors),
        inside_range=inside / len(errors),
    )
