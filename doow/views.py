from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.templatetags.static import static
from django.utils.cache import patch_cache_control
from django.views.decorators.http import require_GET, require_POST

from doow.access import ALL_ROLES, company_view, membership_for
from doow.selectors import company_members


@require_GET
def favicon(request: HttpRequest) -> HttpResponse:
    """Browsers ask for /favicon.ico wherever a page names no icon (every page of Django's admin):
    send them to the static icon instead of logging a 404 each time. Not a permanent redirect,
    because the icon's hashed static name changes with its content."""
    response = redirect(static("doow/favicon.svg"))
    patch_cache_control(response, max_age=86400)
    return response


@login_required
def home(request: HttpRequest) -> HttpResponse:
    """Send the user to the company they used last, or their first one."""
    memberships = request.user.memberships.select_related("company")
    preferred = request.session.get("company_slug")
    membership = memberships.filter(company__slug=preferred).first() or memberships.first()
    if membership is None:
        return render(request, "doow/no_company.html", status=403)
    return redirect("company-settings", company_slug=membership.company.slug)


@login_required
@require_POST
def company_switch(request: HttpRequest) -> HttpResponse:
    membership = membership_for(request.user, request.POST.get("company", ""), ALL_ROLES)
    request.session["company_slug"] = membership.company.slug
    return redirect("company-settings", company_slug=membership.company.slug)


@company_view(ALL_ROLES)
def company_settings(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "doow/company_settings.html",
        {"members": company_members(company=request.company)},
    )
