from doow.models import Membership


def memberships(request) -> dict:
    """The companies the user can switch between, for the header's company switcher."""
    if not getattr(request, "user", None) or not request.user.is_authenticated:
        return {}
    return {
        "user_memberships": Membership.objects.filter(user=request.user).select_related("company"),
        "current_company": getattr(request, "company", None),
        "current_membership": getattr(request, "membership", None),
    }
