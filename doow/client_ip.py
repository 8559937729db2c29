"""The address of the client behind Doow's reverse proxies: one answer for the login lockout
(django-axes, AXES_CLIENT_IP_CALLABLE) and the audit log."""

import ipaddress

from django.conf import settings
from django.http import HttpRequest


def _address(value: str) -> str | None:
    """The normalized IP address in `value` (which may carry a port, as some proxies write it), or None."""
    value = value.strip()
    candidates = [value]
    if value.startswith("[") and "]" in value:  # [2001:db8::1]:443
        candidates.append(value[1 : value.index("]")])
    elif value.count(":") == 1:  # 203.0.113.7:443
        candidates.append(value.split(":", 1)[0])
    for candidate in candidates:
        try:
            return str(ipaddress.ip_address(candidate))
        except ValueError:
            continue
    return None


def client_ip(request: HttpRequest) -> str | None:
    """The client's IP address, as far as Doow's trusted proxies vouch for it.

    With DOOW_TRUSTED_PROXY_COUNT = 0, REMOTE_ADDR: the peer of the connection, which a client cannot
    forge; X-Forwarded-For is ignored. With N > 0, each of the N proxies appends the address it received
    the request from to X-Forwarded-For, so the client is the Nth address from the right; anything to its
    left was written by the client itself and proves nothing. Should the header hold fewer addresses (or
    a garbled one where the client's should be), REMOTE_ADDR rather than a guess.
    """
    remote_addr = request.META.get("REMOTE_ADDR") or None
    proxies = settings.DOOW_TRUSTED_PROXY_COUNT
    if proxies <= 0:
        return remote_addr
    forwarded = [part for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
    if len(forwarded) < proxies:
        return remote_addr
    return _address(forwarded[-proxies]) or remote_addr
