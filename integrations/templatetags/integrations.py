from django import template

from integrations.selectors import connection_list

register = template.Library()


@register.inclusion_tag("integrations/_cards.html")
def integrations_section(company, membership):
    return {
        "company": company,
        "membership": membership,
        "connections": list(connection_list(company=company)),
    }
