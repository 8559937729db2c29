"""Pages of one connection: who may see them, and the connection they show."""

from collections.abc import Callable, Iterable

from django.http import Http404

from doow import rows
from doow.access import member_view, membership_allowed
from doow.models import Membership
from integrations.models import Connection


def connection_view(roles: Iterable[str], *, fields: tuple[str, ...] | None = None) -> Callable:
    """company_view for a view of one connection, whose URL names it by `connection_id`: the
    membership, its company and the company's connection are read in one statement (doow.rows), and
    the view receives `connection` in place of `connection_id` (with only `fields` read, if given;
    the others load when first used). Another company's connection, or none, is 404, after the
    role's 403 as before."""
    allowed = frozenset(roles)

    def read_membership(user, company_slug: str, view_kwargs: dict) -> Membership:
        membership, connection = rows.get_one_and_child(
            Membership,
            related="company",
            child=Connection,
            child_key="company",
            child_pk=view_kwargs.pop("connection_id"),
            child_fields=fields,
            user_id=user.pk,
            company__slug=company_slug,
        )
        membership = membership_allowed(membership, allowed)
        if connection is None:
            raise Http404("No Connection matches the given query.")
        view_kwargs["connection"] = connection
        return membership

    return member_view(allowed, read_membership)
