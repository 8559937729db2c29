"""The console handler's filter scrubs key-shaped text from messages and from tracebacks."""

import io
import logging
import os
import subprocess
import sys
from pathlib import Path

from integrations.log_scrub import ScrubSecretsFilter

KEY = "sk-or-v1-" + "0123456789abcdef" * 4


def logged(emit) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(ScrubSecretsFilter())
    logger = logging.getLogger("tests.log_scrub")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        emit(logger)
    finally:
        logger.removeHandler(handler)
    return stream.getvalue()


def test_a_key_in_a_logged_exception_is_scrubbed_from_its_traceback():
    def emit(logger):
        try:
            raise ValueError(f"OpenRouter said: Bearer {KEY} is invalid")
        except ValueError:
            logger.exception("Call with %s failed", KEY)

    text = logged(emit)
    assert "Traceback" in text and "ValueError" in text and "[redacted]" in text
    assert KEY[:20] not in text and KEY[-16:] not in text


PROBE = f"""
import logging, os, signal
from celery.signals import worker_ready

@worker_ready.connect
def log_a_key_and_stop(**kwargs):
    logging.getLogger("openrouter.sync").error("probe: Authorization: Bearer %s", {KEY!r})
    logging.getLogger("celery.task").error("task probe: %s", {KEY!r})
    os.kill(os.getpid(), signal.SIGTERM)
"""


def test_a_celery_worker_scrubs_its_log_lines_too(tmp_path):
    """Celery replaces the root logger's handlers at start; the worker decrypts keys, so its logs
    must be scrubbed as the web's are."""
    (tmp_path / "worker_log_probe.py").write_text(PROBE)
    env = {
        name: value for name, value in os.environ.items() if name not in ("CELERY_BROKER_URL", "CACHE_URL")
    }
    env.update(DEBUG="true", DOOW_LOCAL_DIR=str(tmp_path / "local"), PYTHONPATH=f"{tmp_path}:{Path.cwd()}")
    env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    worker = [sys.executable, "-m", "celery", "-A", "doow", "worker", "--pool", "solo", "--loglevel", "INFO"]
    worker += ["--without-gossip", "--without-mingle", "-I", "worker_log_probe"]
    done = subprocess.run(worker, env=env, capture_output=True, text=True, timeout=120)
    output = done.stdout + done.stderr
    assert "probe: Authorization: [redacted]" in output and "task probe: [redacted]" in output
    assert KEY[:20] not in output
