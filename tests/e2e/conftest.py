"""Shared by the browser tests: Debian's Chromium through Playwright, a live server, a real Celery
worker on an in-memory broker, and the emulator over HTTP."""

import re
from pathlib import Path

import pytest
from django.db import connections
from django.utils import timezone
from playwright.sync_api import Page, expect, sync_playwright

from tests.conftest import PASSWORD

SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Seconds added to each emulator response, so the initial sync lasts long enough to be watched.
EMULATOR_LATENCY = 0.12


@pytest.fixture
def slow_emulator_server(settings):
    """The emulator over HTTP, dated today (the pages compute ranges from the real clock)."""
    from openrouter.emulator import Emulator, EmulatorConfig

    emulator = Emulator(
        EmulatorConfig(seed=7, keys=24, today=timezone.now().date(), latency=EMULATOR_LATENCY)
    )
    server = emulator.serve()
    settings.OPENROUTER_BASE_URL = server.base_url
    yield emulator
    server.shutdown()


def reset_producers(app) -> None:
    """What Celery does after a fork: forget the connection pool and the producer pool built on it
    (an earlier test that sent a task would otherwise keep sending to the old broker)."""
    app._pool = None
    app.amqp._producer_pool = None


def close_worker_thread_connections(sender=None, **kwargs) -> None:
    """Run in the worker thread after each task. A worker process's connections end with it; this
    thread's, kept for reuse (CONN_MAX_AGE), outlived the test and kept its test database from being
    dropped at the end of the run."""
    if getattr(getattr(sender, "request", None), "is_eager", False):
        return  # run in the test's own thread, inside its connection
    connections.close_all()


@pytest.fixture
def celery_worker():
    """A real worker thread consuming from an in-memory broker: the view's send_task reaches it."""
    from celery import signals
    from celery.contrib.testing.worker import start_worker

    from doow.celery import app

    saved = {name: app.conf[name] for name in ("broker_url", "broker_transport_options")}
    app.conf.update(broker_url="memory://", broker_transport_options={})
    reset_producers(app)  # producers made for the old broker must not be reused
    signals.task_postrun.connect(close_worker_thread_connections)
    try:
        with start_worker(
            app, pool="solo", perform_ping_check=False, loglevel="WARNING", shutdown_timeout=30
        ):
            yield
    finally:
        signals.task_postrun.disconnect(close_worker_thread_connections)
        app.conf.update(saved)
        reset_producers(app)


@pytest.fixture
def browser(monkeypatch):
    # Playwright's sync API runs an event loop in this thread; Django's ORM refuses to run beside one.
    # Set for this test only: subprocesses of other tests (manage.py check --deploy) must not inherit it.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield browser
        # While Playwright's event loop runs in this thread, Django keeps the test's connections apart
        # from the thread's own (asgiref sees a running loop): the test's queries opened one that
        # nothing else closes, and PostgreSQL cannot drop a test database with a session still on it.
        connections.close_all()
        browser.close()


def log_in(browser, live_server, email: str) -> Page:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # JavaScript errors and server errors fail the journey; expected 403s (role checks) do not.
    page.on(
        "console",
        lambda msg: (
            errors.append(msg.text)
            if msg.type == "error" and "Failed to load resource" not in msg.text
            else None
        ),
    )
    page.on(
        "response",
        lambda response: (
            errors.append(f"{response.status} {response.url}")
            if response.status >= 500 or response.status == 404
            else None
        ),
    )
    page.js_errors = errors
    page.goto(f"{live_server.url}/login/")
    page.fill("#id_username", email)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    expect(page).to_have_url(re.compile(r"/c/acme/settings/$"))
    return page


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
