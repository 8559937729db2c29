"""Synthetic series: the detector flags real spikes and stays quiet on steady growth and weekends;
the forecast lands near the truth."""

import random
from datetime import date, timedelta
from decimal import Decimal

import pytest

from usage.anomalies import detect_spike, new_spenders
from usage.forecast import month_end_forecast, runway_days

END = date(2026, 11, 20)


def series(values) -> dict[date, Decimal]:
    values = list(values)
    return {
        END - timedelta(days=len(values) - 1 - i): Decimal(str(round(v, 4))) for i, v in enumerate(values)
    }


def noisy(base: float, days: int = 42, seed: int = 1, noise: float = 0.1):
    rng = random.Random(seed)
    return [base * (1 + rng.uniform(-noise, noise)) for _ in range(days)]


def test_a_spike_is_flagged_with_its_size():
    values = noisy(20.0)
    values[-1] = 140.0
    spike = detect_spike(subject="key-a", series=series(values), day=END)
    assert spike is not None
    assert spike.amount == Decimal("140.0")
    assert Decimal(18) < spike.baseline < Decimal(22)
    assert spike.times_usual >= 6
    assert spike.score > 6


@pytest.mark.parametrize("seed", range(10))
def test_noise_alone_is_not_flagged(seed):
    values = noisy(20.0, seed=seed, noise=0.3)
    assert detect_spike(subject="k", series=series(values), day=END) is None


def test_steady_growth_is_not_flagged():
    values = [10 * 1.03**i for i in range(42)]  # +3% a day: more than doubles over the baseline window
    assert all(
        detect_spike(subject="k", series=series(values[: i + 1]), day=END) is None for i in range(20, 42)
    )
    assert detect_spike(subject="k", series=series(values), day=END) is None


def test_weekends_are_not_flagged():
    # Busy weekdays, near-silent weekends, ending on a Monday after a quiet weekend.
    values = []
    for offset in range(42):
        day = END - timedelta(days=41 - offset)
        values.append(2.0 if day.weekday() >= 5 else 30.0)
    assert END.weekday() not in (5, 6)
    assert detect_spike(subject="k", series=series(values), day=END) is None


@pytest.mark.parametrize("every", [7, 3], ids=["a weekly job", "every third day"])
def test_a_key_used_on_some_days_only_is_judged_against_the_days_it_is_used(every):
    day = date(2026, 11, 23)
    used = {day - timedelta(days=every * n): Decimal(50) for n in range(0, 42 // every)}
    assert detect_spike(subject="batch", series=used, day=day) is None  # its usual $50
    spike = detect_spike(subject="batch", series={**used, day: Decimal(400)}, day=day)
    assert spike is not None and spike.amount == 400  # eight times its usual day


def test_pennies_and_short_histories_are_not_news():
    tiny = noisy(0.01)
    tiny[-1] = 0.5
    assert detect_spike(subject="k", series=series(tiny), day=END) is None
    young = [0.0] * 35 + [10.0] * 6 + [90.0]
    assert detect_spike(subject="k", series=series(young), day=END) is None


def test_new_spenders_are_reported_once_material():
    established = series(noisy(5.0))
    newcomer = {END: Decimal(12)}
    penny = {END: Decimal("0.2")}
    found = dict(
        new_spenders(
            series_by_subject={"old": established, "new": newcomer, "penny": penny},
            day=END,
            minimum=Decimal(5),
        )
    )
    assert found == {"new": Decimal(12)}


def test_forecast_of_a_steady_month():
    today = date(2026, 11, 16)
    daily = {today - timedelta(days=i): Decimal(10) for i in range(1, 40)}
    forecast = month_end_forecast(daily=daily, today=today, today_partial=Decimal(5), day_fraction=0.5)
    assert forecast.month_to_date == Decimal("155.00")  # 15 full days + half of today
    assert forecast.expected == Decimal("300.00")  # 30 days × $10
    assert forecast.low == forecast.high == forecast.expected
    assert forecast.daily_rate == Decimal("10.00")


def test_a_forecast_from_observed_days_leaves_the_unobserved_out_and_takes_a_given_month_to_date():
    today = date(2026, 11, 16)
    daily = {today - timedelta(days=1): Decimal(10), today - timedelta(days=2): Decimal(10)}  # 12 days unseen
    seen = month_end_forecast(
        daily=daily, today=today, day_fraction=0.5, month_to_date=Decimal(150), missing_days_unknown=True
    )
    assert seen.month_to_date == Decimal("150.00")  # the counter given, not the two days seen
    assert seen.daily_rate == Decimal("10.00") and seen.expected == Decimal("295.00")  # 150 + 14.5 days × $10
    # No day seen yet (a key connected today): the month so far, $3 over 15.5 days, not $0/day.
    nothing_seen = month_end_forecast(
        daily={}, today=today, month_to_date=Decimal(3), missing_days_unknown=True
    )
    assert nothing_seen.daily_rate == Decimal("0.19") and nothing_seen.expected == Decimal("5.81")

    as_zero = month_end_forecast(daily=daily, today=today, day_fraction=0.5)
    assert as_zero.daily_rate == Decimal("1.43")  # $20 over 14 days: an activity day missing spent nothing


def test_forecast_range_brackets_a_noisy_month():
    today = date(2026, 11, 20)
    rng = random.Random(3)
    daily = {today - timedelta(days=i): Decimal(str(round(rng.uniform(5, 15), 2))) for i in range(1, 40)}
    forecast = month_end_forecast(daily=daily, today=today, today_partial=Decimal(0), day_fraction=0.0)
    assert forecast.low < forecast.expected < forecast.high


def test_credits_given_back_do_not_project_spending_below_zero():
    today = date(2026, 12, 3)
    daily = {today - timedelta(days=i): Decimal(10) for i in range(1, 40)}
    daily[date(2026, 11, 25)] = Decimal(-600)  # OpenRouter gave $600 back

    forecast = month_end_forecast(daily=daily, today=today, today_partial=Decimal(5), day_fraction=0.5)

    assert forecast.month_to_date == Decimal("25.00")
    assert forecast.daily_rate == 0 and forecast.low == forecast.expected == Decimal("25.00")


def test_runway():
    assert runway_days(balance=Decimal(70), daily_rate=Decimal(10)) == 7.0
    assert runway_days(balance=Decimal(70), daily_rate=Decimal(0)) is None
    assert runway_days(balance=Decimal(-5), daily_rate=Decimal(10)) == 0.0
