from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from doow.access import ALL_ROLES, company_view
from usage.models import Alert, AlertState
from usage.services import alert_acknowledge, alert_resolve_by_hand


@require_GET
@company_view(ALL_ROLES)
def alert_list(request: HttpRequest) -> HttpResponse:
    state = request.GET.get("state") or "active"
    alerts = Alert.objects.filter(company=request.company).select_related("connection", "acknowledged_by")
    if state == "active":
        alerts = alerts.exclude(state=AlertState.RESOLVED)
    elif state in AlertState.values:
        alerts = alerts.filter(state=state)
    page = Paginator(alerts.order_by("-created_at", "-id"), 50).get_page(request.GET.get("page"))
    return render(
        request,
        "usage/alerts.html",
        {"page": page, "alerts": page.object_list, "state": state, "states": AlertState.choices},
    )


@require_POST
@company_view(ALL_ROLES)
def alert_update(request: HttpRequest, alert_id: int) -> HttpResponse:
    alert = get_object_or_404(Alert, company=request.company, pk=alert_id)
    action = request.POST.get("action")
    if action == "acknowledge" and alert_acknowledge(alert=alert, user=request.user):
        messages.success(request, "Alert acknowledged.")
    elif action == "resolve" and alert_resolve_by_hand(alert=alert, user=request.user):
        messages.success(request, "Alert resolved.")
    else:
        messages.error(request, "That change does not apply to this alert.")
    return redirect("usage:alerts", company_slug=request.company.slug)
