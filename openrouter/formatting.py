"""Money as people read it, the same on pages, in alert titles and in emails."""

from decimal import ROUND_HALF_UP, Decimal

from django.contrib.humanize.templatetags.humanize import intcomma


def usd(value) -> str:
    """Money for people: cents, or 6 decimals below a cent so small spend is not shown as $0.00."""
    if value is None or value == "":
        return "—"
    amount = Decimal(value)
    places = Decimal("0.01") if amount == 0 or abs(amount) >= Decimal("0.01") else Decimal("0.000001")
    rounded = amount.quantize(places, rounding=ROUND_HALF_UP)
    whole, _, frac = f"{abs(rounded):f}".partition(".")
    return f"{'-' if rounded < 0 else ''}${intcomma(int(whole))}.{frac}"
