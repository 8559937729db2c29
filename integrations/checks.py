"""Start-up canary: every stored secret must decrypt with the key ring.

A ring that decrypts none of them is an error that stops every management command but the repair
ones (a deploy that dropped the key in use, caught before it runs). A few that do not decrypt are
warnings: their connections are marked "needs attention" when used, and one bad row must not stop
`migrate`, the workers or the commands that repair it."""

from django.core.checks import Error, Warning, register
from django.db import DatabaseError

REPAIR_HINT = "Put the key back in DOOW_ENCRYPTION_KEYS, or paste the connection's key again (Replace key)."


@register()
def key_ring_decrypts_stored_secrets(app_configs=None, **kwargs):
    from integrations.selectors import key_ring_problems

    try:
        problems, none_decrypt = key_ring_problems()
    except DatabaseError:
        return []  # Not migrated yet: nothing stored to check.
    if none_decrypt:
        return [Error(problem, hint=REPAIR_HINT, id="integrations.E001") for problem in problems]
    return [Warning(problem, hint=REPAIR_HINT, id="integrations.W001") for problem in problems]


def _report_key_ring_at_worker_start(**kwargs) -> None:
    """Workers do not run Django's checks: tell ops at start-up if stored secrets will not decrypt."""
    import logging

    from integrations.selectors import key_ring_problems

    try:
        problems, _none_decrypt = key_ring_problems()
    except DatabaseError:
        return
    for problem in problems:
        logging.getLogger("integrations.keyring").error("Key ring canary: %s", problem)


def connect_worker_canary() -> None:
    from celery.signals import worker_ready

    worker_ready.connect(_report_key_ring_at_worker_start, weak=False, dispatch_uid="doow-key-ring-canary")
