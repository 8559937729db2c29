from django.http import HttpRequest

from doow.client_ip import client_ip
from doow.models import AuditEntry, Company


def audit_record(
    *,
    company: Company,
    action: str,
    request: HttpRequest | None = None,
    actor=None,
    target: str = "",
    detail=None,
) -> AuditEntry:
    """Write one audit row. Callers pass only non-secret detail."""
    if request is not None and actor is None and request.user.is_authenticated:
        actor = request.user
    return AuditEntry.objects.create(
        company=company,
        actor=actor,
        action=action,
        target=target,
        detail=detail or {},
        ip_address=client_ip(request) if request is not None else None,
    )
