from django import template

from integrations.models import ConnectionState
from integrations.selectors import connection_list

register = template.Library()


@register.inclusion_tag("integrations/_cards.html")
def integrations_section(company, membership):
    return cards_context(company, membership)


def cards_context(company, membership) -> dict:
    """What the integration cards show; they poll while any connection is being verified or synced."""
    connections = list(connection_list(company=company))
    return {
        "company": company,
        "membership": membership,
        "connections": connections,
        "any_syncing": any(
            c.shown_state in (ConnectionState.SYNCING, ConnectionState.VERIFYING) or c.sync_queued_since
            for c in connections
        ),
    }
