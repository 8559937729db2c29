"""Every URL under /c/<company_slug>/, found by walking Django's URL resolver, so that access tests
cover pages added later without anyone listing them.

Each route knows the roles its view admits (`company_view` puts them on the wrapper as
`allowed_roles`; Django's own decorators copy them outwards through functools.wraps).
"""

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

from django.test import Client
from django.urls import URLPattern, URLResolver, converters, get_resolver
from django.urls.resolvers import RoutePattern

COMPANY_PREFIX = "c/<slug:company_slug>/"
_PARAMETER = re.compile(r"<(?:[^>:]+:)?(?P<name>[^>]+)>")

# Dummy values per converter: ids that match no row, so a view that gets past the access check
# answers 404 instead of acting on real data.
_DUMMY_BY_CONVERTER = {
    converters.IntConverter: 999_999,
    converters.SlugConverter: "dummy",
    converters.StringConverter: "dummy",
    converters.PathConverter: "dummy",
    converters.UUIDConverter: uuid.UUID(int=0),
}


@dataclass(frozen=True)
class CompanyRoute:
    route: str  # e.g. "c/<slug:company_slug>/integrations/runs/<int:run_id>/"
    name: str  # namespaced URL name, or "" for an unnamed pattern
    view: object = field(compare=False)
    dummy_kwargs: dict = field(compare=False)

    @property
    def allowed_roles(self) -> frozenset[str] | None:
        """The roles `company_view` admits, or None when the view is not guarded by it."""
        roles = getattr(self.view, "allowed_roles", None)
        return frozenset(roles) if roles is not None else None

    def url(self, company_slug: str, **ids) -> str:
        """The route's path in that company: `ids` for the parameters it takes (the rest of `ids`
        is ignored, so one set of real ids serves every route), dummy values for the others."""
        taken = {name: value for name, value in ids.items() if name in self.dummy_kwargs}
        values = {**self.dummy_kwargs, **taken, "company_slug": company_slug}
        return "/" + _PARAMETER.sub(lambda match: str(values[match["name"]]), self.route)

    def __str__(self) -> str:
        return self.name or self.route


def _join(namespace: str, name: str | None) -> str:
    return ":".join(part for part in (namespace, name) if part)


def _walk(patterns, prefix: str = "", namespace: str = "", found_converters=None) -> Iterator[tuple]:
    """(route, namespaced name, view, converters) for every endpoint below `patterns`."""
    found_converters = found_converters or {}
    for entry in patterns:
        pattern = entry.pattern
        # Regex patterns (the admin's) are marked so company_routes() can refuse one under /c/.
        route = prefix + (str(pattern) if isinstance(pattern, RoutePattern) else f"<regex {pattern}>")
        route_converters = {**found_converters, **getattr(pattern, "converters", {})}
        if isinstance(entry, URLResolver):
            yield from _walk(entry.url_patterns, route, _join(namespace, entry.namespace), route_converters)
        elif isinstance(entry, URLPattern):
            yield route, _join(namespace, entry.name), entry.callback, route_converters


def company_routes() -> list[CompanyRoute]:
    """Every URL pattern whose path starts with /c/<company_slug>/, in resolver order."""
    routes = []
    for route, name, view, route_converters in _walk(get_resolver().url_patterns):
        if not route.startswith(COMPANY_PREFIX):
            continue
        if "<regex " in route:
            raise AssertionError(f"{route}: regex patterns under /c/ are not supported by the walker")
        dummy_kwargs = {
            parameter: _DUMMY_BY_CONVERTER[type(converter)]
            for parameter, converter in route_converters.items()
            if parameter != "company_slug"
        }
        routes.append(CompanyRoute(route=route, name=name, view=view, dummy_kwargs=dummy_kwargs))
    return routes


def fetch(client: Client, url: str):
    """GET the URL; a POST-only view answers GET with 405, so POST to it instead (empty form)."""
    response = client.get(url)
    if response.status_code == 405:
        response = client.post(url)
    return response
