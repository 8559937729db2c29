"""Start-up canary: every key id that stored secrets use must be in the key ring and decrypt."""

from django.core.checks import Error, register
from django.db import DatabaseError


@register()
def key_ring_decrypts_stored_secrets(app_configs=None, **kwargs):
    from integrations.selectors import key_ring_problems

    try:
        problems = key_ring_problems()
    except DatabaseError:
        return []  # Not migrated yet: nothing stored to check.
    return [Error(problem, id="integrations.E001") for problem in problems]


def _report_key_ring_at_worker_start(**kwargs) -> None:
    """Workers do not run Django's checks: tell ops at start-up if stored secrets will not decrypt."""
    import logging

    from integrations.selectors import key_ring_problems

    try:
        problems = key_ring_problems()
    except DatabaseError:
        return
    for problem in problems:
        logging.getLogger("integrations.keyring").error("Key ring canary: %s", problem)


def connect_worker_canary() -> None:
    from celery.signals import worker_ready

    worker_ready.connect(_report_key_ring_at_worker_start, weak=False, dispatch_uid="doow-key-ring-canary")
