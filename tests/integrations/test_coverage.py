"""The spans of days a provider reported: adding keeps them merged, gaps are exactly the days left."""

from datetime import date, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from integrations import coverage

D = date(2026, 11, 1)


def day(n: int) -> date:
    return D + timedelta(days=n)


def test_adding_merges_overlapping_and_adjacent_spans_but_keeps_a_gap():
    spans = coverage.add([], day(0), day(29))
    spans = coverage.add(spans, day(1), day(30))  # the next day's sync
    spans = coverage.add(spans, day(31), day(32))  # adjacent: still one span
    assert spans == [[day(0).isoformat(), day(32).isoformat()]]
    spans = coverage.add(spans, day(40), day(69))  # unsynced for longer than the window
    assert coverage.parse(spans) == [(day(0), day(32)), (day(40), day(69))]
    assert coverage.gaps(spans, day(-5), day(70)) == [
        (day(-5), day(-1)),
        (day(33), day(39)),
        (day(70), day(70)),
    ]
    assert coverage.first_day(spans) == day(0)
    assert coverage.first_day([]) is None


def test_a_range_inside_one_span_has_no_gap():
    spans = coverage.add([], day(0), day(29))
    assert coverage.gaps(spans, day(3), day(20)) == []
    assert coverage.gaps([], day(3), day(4)) == [(day(3), day(4))]


def test_days_in_lists_every_day_of_each_stretch():
    assert coverage.days_in([(day(0), day(1)), (day(5), day(5))]) == [day(0), day(1), day(5)]


span = st.tuples(st.integers(0, 120), st.integers(0, 40)).map(lambda t: (day(t[0]), day(t[0] + t[1])))


@given(st.lists(span, max_size=8), st.integers(-10, 170), st.integers(0, 60))
@settings(max_examples=300, deadline=None)
def test_spans_hold_exactly_the_days_added_and_gaps_exactly_the_others(added, first, length):
    spans: list = []
    for a, b in added:
        spans = coverage.add(spans, a, b)
    held = {d for a, b in added for d in coverage.days_in([(a, b)])}
    parsed = coverage.parse(spans)
    assert set(coverage.days_in(parsed)) == held
    # Sorted, disjoint and never adjacent: each span starts at least two days after the last ends.
    assert all(later[0] > earlier[1] + timedelta(days=1) for earlier, later in zip(parsed, parsed[1:]))
    start, end = day(first), day(first + length)
    wanted = {start + timedelta(days=i) for i in range(length + 1)}
    missing = coverage.gaps(spans, start, end)
    assert set(coverage.days_in(missing)) == wanted - held
    assert all(a <= b for a, b in missing)
