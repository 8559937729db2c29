from decimal import Decimal
from html import escape

from django import template
from django.contrib.humanize.templatetags.humanize import intcomma
from django.template.defaultfilters import date as date_filter
from django.utils.html import format_html
from django.utils.safestring import mark_safe

from openrouter.formatting import usd

register = template.Library()


register.filter("usd", usd)


@register.filter
def get_item(mapping, key):
    return mapping.get(key, "")


@register.filter
def provider_of(model_slug: str) -> str:
    return (model_slug or "").split("/", 1)[0]


@register.simple_tag
def select_options(choices, selected) -> str:
    """<option> elements for (value, label) pairs, the one equal to `selected` marked. Built here
    rather than by a template loop (or format_html per option): the key filter lists up to 500
    keys, and rendering them was most of a large organization's detail page's template time."""
    options = (
        f'<option value="{escape(str(value))}"{" selected" if value == selected else ""}>'
        f"{escape(str(label))}</option>"
        for value, label in choices
    )
    return mark_safe("".join(options))  # noqa: S308 (every value and label is escaped above)


@register.simple_tag
def query_params(query, **overrides) -> str:
    return query.params(**overrides)


@register.simple_tag
def sort_header(query, column):
    """A column heading that sorts by it; a second click flips the direction. aria-sort for readers."""
    classes = "" if column.kind == "text" or column.kind == "date" else "num"
    if not column.sortable:
        return format_html('<th class="{}" scope="col">{}</th>', classes, column.label)
    active = query.sort == column.name
    # Names sort A→Z first, figures largest first.
    first_descending = column.kind not in ("text",)
    descending = not query.descending if active else first_descending
    arrow = ("↓" if query.descending else "↑") if active else ""
    aria = ("descending" if query.descending else "ascending") if active else "none"
    return format_html(
        '<th class="{} sortable{}" scope="col" aria-sort="{}"><a href="?{}" data-sort="{}">{}<span '
        'class="arrow" aria-hidden="true">{}</span></a></th>',
        classes,
        " sorted" if active else "",
        aria,
        query.params(sort=("-" if descending else "") + column.name, page=None),
        column.name,
        column.label,
        arrow,
    )


@register.simple_tag
def metric_cell(row, column):
    value = row.get(column.field)
    if column.kind == "money":
        text = usd(value)
    elif column.kind == "datetime":
        text = date_filter(value, "j M H:i") if value else "—"
    else:
        text = intcomma(value or 0)
    # data-label names the figure when a narrow screen stacks the row (.table-stack).
    return format_html(
        '<td class="num" data-col="{}" data-value="{}" data-label="{}">{}</td>',
        column.name,
        value or 0,
        column.label,
        text,
    )


@register.inclusion_tag("openrouter/_stat.html")
def stat(label, value, delta, money=False, testid="", minor=False):
    return {"label": label, "value": value, "delta": delta, "money": money, "testid": testid, "minor": minor}


@register.filter
def plain_number(value) -> str:
    """A decimal without trailing zeros or exponent: 6.0000 → 6, 0.1000 → 0.1, 10.0000 → 10."""
    if value is None or value == "":
        return ""
    return format(Decimal(value).normalize(), "f")
