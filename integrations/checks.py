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
