"""Cached report results: keyed by the connection's data version and by the code's reports version."""

import pytest

from tests.support import connect
from usage import cache as report_cache

pytestmark = pytest.mark.django_db


def test_a_result_is_served_from_the_cache_until_the_data_version_moves(acme, emulator):
    connection = connect(acme, emulator)
    assert report_cache.cached(connection, "figure", ("x",), lambda: 1) == 1
    assert report_cache.cached(connection, "figure", ("x",), lambda: 2) == 1

    connection.data_version += 1
    assert report_cache.cached(connection, "figure", ("x",), lambda: 3) == 3


def test_results_cached_by_an_earlier_reports_version_are_not_served(acme, emulator, monkeypatch):
    """A fix to a cached figure raises REPORTS_VERSION: what the code before it cached (under the same
    data version, as after a deploy with no sync since) is computed again."""
    connection = connect(acme, emulator)
    assert report_cache.cached(connection, "figure", ("x",), lambda: "before the fix") == "before the fix"

    monkeypatch.setattr(report_cache, "REPORTS_VERSION", report_cache.REPORTS_VERSION + 1)
    assert report_cache.cached(connection, "figure", ("x",), lambda: "after the fix") == "after the fix"
