"""Cached report results: keyed by the connection's data version and by the code's reports version."""

import pytest

from tests.conftest import client_for
from tests.support import connect, sync
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


@pytest.fixture
def cache_down(settings, monkeypatch):
    """Redis where nothing listens, as while it restarts."""
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
        }
    }
    monkeypatch.setattr(report_cache, "_cache_down_until", 0.0)


def test_a_cache_that_is_down_is_a_miss_and_left_alone_for_a_while(
    acme, emulator, cache_down, caplog, monkeypatch
):
    connection = connect(acme, emulator)

    assert report_cache.cached(connection, "figure", ("x",), lambda: 1) == 1
    assert report_cache.cached(connection, "figure", ("x",), lambda: 2) == 2

    warnings = [r for r in caplog.records if r.name == "usage.cache"]
    assert len(warnings) == 1 and "computed from the database" in warnings[0].getMessage()
    # Tried again once the pause is over.
    monkeypatch.setattr(report_cache, "_cache_down_until", 0.0)
    assert report_cache.cached(connection, "figure", ("x",), lambda: 3) == 3
    assert len([r for r in caplog.records if r.name == "usage.cache"]) == 2


def test_the_detail_page_answers_while_the_cache_is_down(acme, alice, emulator, cache_down):
    connection = connect(acme, emulator)
    sync(connection, emulator)

    response = client_for(alice).get(f"/c/acme/integrations/openrouter/{connection.pk}/")

    assert response.status_code == 200
    assert response.context["totals"] is not None
