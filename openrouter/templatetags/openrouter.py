from decimal import ROUND_HALF_UP, Decimal

from django import template
from django.contrib.humanize.templatetags.humanize import intcomma
from django.utils.html import format_html

register = template.Library()


@register.filter
def usd(value) -> str:
    """Money for people: cents, or 4 significant decimals below a cent so small spend is not shown as $0.00."""
    if value is None or value == "":
        return "—"
    amount = Decimal(value)
    places = Decimal("0.01") if amount == 0 or abs(amount) >= Decimal("0.01") else Decimal("0.000001")
    rounded = amount.quantize(places, rounding=ROUND_HALF_UP)
    whole, _, frac = f"{abs(rounded):f}".partition(".")
    return f"{'-' if rounded < 0 else ''}${intcomma(int(whole))}.{frac}"


@register.filter
def get_item(mapping, key):
    return mapping.get(key, "")


@register.filter
def provider_of(model_slug: str) -> str:
    return (model_slug or "").split("/", 1)[0]


@register.simple_tag
def query_params(query, **overrides) -> str:
    return query.params(**overrides)


@register.simple_tag
def sort_header(query, name: str, label: str):
    descending = not (query.sort == name and query.descending)
    arrow = ("▼" if query.descending else "▲") if query.sort == name else ""
    return format_html(
        '<th class="num"><a href="?{}">{} {}</a></th>',
        query.params(sort=("-" if descending else "") + name, page=1),
        label,
        arrow,
    )


@register.inclusion_tag("openrouter/_stat.html")
def stat(label, value, delta, money=False, testid=""):
    return {"label": label, "value": value, "delta": delta, "money": money, "testid": testid}
