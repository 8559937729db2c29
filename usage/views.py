from django.contrib import messages
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from doow.access import ALL_ROLES, company_view
from integrations.selectors import connection_get
from usage import selectors
from usage.models import Alert, AlertState
from usage.services import alert_acknowledge, alert_resolve_by_hand


@require_GET
@company_view(ALL_ROLES)
def alert_list(request: HttpRequest) -> HttpResponse:
    state = request.GET.get("state") or "active"
    connection = None
    if connection_id := request.GET.get("connection"):
        # Anything but a number is no connection's id: a 404, as another company's connection is.
        if not (connection_id.isascii() and connection_id.isdigit()):
            raise Http404("No Connection matches the given query.")
        connection = connection_get(company=request.company, connection_id=int(connection_id))
    alerts = selectors.alert_list(company=request.company, state=state, connection=connection)
    page = Paginator(alerts, 50).get_page(request.GET.get("page"))
    return render(
        request,
        "usage/alerts.html",
        {
            "page": page,
            "alerts": page.object_list,
            "state": state,
            "states": AlertState.choices,
            "connection": connection,
            # The state tabs and the pager stay on the connection's alerts.
            "connection_query": f"connection={connection.pk}&" if connection else "",
        },
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
    # Back to the list as it was read (one connection's, a state, a page): the form's action carries it.
    alerts_url = reverse("usage:alerts", args=[request.company.slug])
    return redirect(f"{alerts_url}?{request.GET.urlencode()}" if request.GET else alerts_url)
