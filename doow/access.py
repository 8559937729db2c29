"""The one place that answers "which company may this request see, with which role"."""

from collections.abc import Callable, Iterable
from functools import wraps
from urllib.parse import urlsplit

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.utils.cache import add_never_cache_headers

from doow import rows
from doow.models import Membership, Role

ALL_ROLES = frozenset(Role)
ADMINS = frozenset({Role.ADMIN})
USAGE_READERS = frozenset({Role.ADMIN, Role.FINANCE})
HEALTH_READERS = frozenset({Role.ADMIN, Role.OPS})


def membership_for(user, company_slug: str, roles: Iterable[str] = ALL_ROLES) -> Membership:
    """The user's membership of the company, if their role is one of `roles`.

    An outsider gets 404, so a company's existence never leaks; a member with the wrong role gets 403.
    """
    if not user.is_authenticated:
        raise Http404("No such company")
    # Read without the query compiler (doow.rows): every company page and download asks this.
    membership = rows.get_one(Membership, related="company", user_id=user.pk, company__slug=company_slug)
    return membership_allowed(membership, roles)


def membership_allowed(membership: Membership | None, roles: Iterable[str]) -> Membership:
    """The membership if its role is one of `roles`: 404 without one, 403 for another role."""
    if membership is None:
        raise Http404("No such company")
    if membership.role not in roles:
        raise PermissionDenied("Your role in this company does not allow this.")
    return membership


def _to_login(request: HttpRequest) -> HttpResponse:
    """The login page, then back. A part of a page polled by htmx (logged out in another tab, or the
    session expired) sends the whole page there: a plain redirect would put the login page inside
    the polled element."""
    if not request.headers.get("HX-Request"):
        return redirect_to_login(request.get_full_path())
    try:
        current = urlsplit(request.headers.get("HX-Current-URL", ""))
    except ValueError:  # a header no browser sends ("http://[x/"): back to the start, not a 500
        current = urlsplit("/")
    page = (current.path or "/") + (f"?{current.query}" if current.query else "")
    response = HttpResponse(status=204)
    response["HX-Redirect"] = redirect_to_login(page).url
    return response


def company_view(roles: Iterable[str] = ALL_ROLES) -> Callable:
    """Decorate a view taking `company_slug`: anonymous → login, then `membership_for`.

    The view receives request.company and request.membership; its response is marked never to be
    cached.
    """
    allowed = frozenset(roles)
    return member_view(
        allowed, lambda user, company_slug, _view_kwargs: membership_for(user, company_slug, allowed)
    )


def member_view(
    roles: frozenset[str], read_membership: Callable[[object, str, dict], Membership]
) -> Callable:
    """company_view with its own read of the membership: `read_membership(user, company_slug,
    view_kwargs)` returns it as membership_for does (404, 403), and may put what it read with it
    into the view's keyword arguments (integrations.access.connection_view)."""

    def decorator(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @wraps(view)
        def wrapper(request: HttpRequest, company_slug: str, *args, **kwargs) -> HttpResponse:
            if not request.user.is_authenticated:
                return _to_login(request)
            membership = read_membership(request.user, company_slug, kwargs)
            request.membership = membership
            request.company = membership.company
            if request.session.get("company_slug") != membership.company.slug:
                # Written only when it changes: a modified session is saved (an UPDATE) per request.
                request.session["company_slug"] = membership.company.slug
            response = view(request, *args, **kwargs)
            # Company pages and downloads show one tenant's spend: no browser or proxy keeps them.
            if not response.has_header("Cache-Control"):
                add_never_cache_headers(response)
            return response

        wrapper.allowed_roles = roles
        return wrapper

    return decorator
