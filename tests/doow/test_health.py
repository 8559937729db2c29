"""GET /healthz for load balancers and container probes."""

from unittest import mock

import pytest
from django.db import OperationalError
from django.test import Client

pytestmark = pytest.mark.django_db


def test_healthz_answers_ok_while_the_database_answers():
    response = Client().get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok"}


def test_healthz_answers_a_probe_by_the_containers_own_address_over_plain_http(settings):
    """As production is set: HTTPS redirect on, only the public host allowed."""
    settings.SECURE_SSL_REDIRECT = True
    settings.ALLOWED_HOSTS = ["doow.example.com"]

    response = Client().get("/healthz", HTTP_HOST="172.18.0.5:8000")

    assert response.status_code == 200
    # Everything else keeps both checks.
    assert Client().get("/login/", HTTP_HOST="doow.example.com").status_code == 301
    assert Client().get("/login/", HTTP_HOST="172.18.0.5:8000").status_code == 400


def test_healthz_is_503_when_the_database_does_not_answer():
    with mock.patch("doow.middleware.connection.cursor", side_effect=OperationalError("connection refused")):
        response = Client().get("/healthz")

    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "database": "unreachable"}
    assert "refused" not in response.content.decode()  # says nothing of the deployment
