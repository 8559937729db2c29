from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from doow.access import ADMINS, ALL_ROLES, HEALTH_READERS, company_view
from doow.services import audit_record
from integrations.access import connection_view
from integrations.forms import DisconnectForm, EventFilterForm
from integrations.models import Connection, ConnectionState
from integrations.paging import NewestPaginator
from integrations.registry import get_provider
from integrations.selectors import connection_get, connection_list, sync_event_list, sync_run_get
from integrations.services import connection_disconnect, connection_enqueue_sync, sync_event_add
from integrations.templatetags.integrations import cards_context

EVENTS_PER_PAGE = 50


@require_GET
@company_view(ALL_ROLES)
def integration_cards(request: HttpRequest) -> HttpResponse:
    """The cards alone: polled by htmx while a connection syncs."""
    return render(request, "integrations/_cards.html", cards_context(request.company, request.membership))


def _filtered_events(request: HttpRequest):
    form = EventFilterForm(request.GET or None)
    form.is_valid()  # a filter that fails is left out (the page says which); the others still apply
    filters = getattr(form, "cleaned_data", {})
    connection = None
    if filters.get("connection"):
        connection = connection_get(company=request.company, connection_id=filters["connection"])
    events = sync_event_list(
        company=request.company,
        connection=connection,
        level=filters.get("level"),
        kind=filters.get("kind"),
        day=filters.get("day"),
    )
    return form, connection, events


def _without(params, *names: str) -> str:
    """The query string minus some parameters (pagination links keep the filters)."""
    kept = params.copy()
    for name in names:
        kept.pop(name, None)
    return kept.urlencode()


@require_GET
@company_view(HEALTH_READERS)
def event_log(request: HttpRequest) -> HttpResponse:
    form, connection, events = _filtered_events(request)
    page = NewestPaginator(events, EVENTS_PER_PAGE).get_page(request.GET.get("page"))
    return render(
        request,
        "integrations/event_log.html",
        {
            "form": form,
            "connection": connection,
            "page": page,
            "events": page.object_list,
            "connections": connection_list(company=request.company),
            "newest_id": page.object_list[0].pk if page.number == 1 and page.object_list else 0,
            "filter_query": _without(request.GET, "page", "after"),
            "is_filtered": any(request.GET.get(name) for name in ("level", "kind", "day")),
            "filter_problems": [
                f"{name} “{form.data.get(name)}” ({' '.join(errors)})" for name, errors in form.errors.items()
            ],
            # New events appear on the first page, and only if no past day is picked.
            "live": page.number == 1 and not _is_past_day(form),
        },
    )


def _is_past_day(form) -> bool:
    day = getattr(form, "cleaned_data", {}).get("day")
    return day is not None and day < timezone.now().date()


@require_GET
@company_view(HEALTH_READERS)
def event_log_newer(request: HttpRequest) -> HttpResponse:
    """Rows newer than ?after=, for the live log (htmx prepends them)."""
    _form, _connection, events = _filtered_events(request)
    try:
        after = int(request.GET.get("after", "0"))
    except ValueError:
        after = 0
    newer = list(events.filter(pk__gt=after)[:EVENTS_PER_PAGE])
    response = render(request, "integrations/_event_rows.html", {"events": newer, "new": True})
    response["X-Newest-Event-Id"] = str(newer[0].pk if newer else after)
    return response


@require_GET
@company_view(HEALTH_READERS)
def run_detail(request: HttpRequest, run_id: int) -> HttpResponse:
    run = sync_run_get(company=request.company, run_id=run_id)
    return render(
        request,
        "integrations/run_detail.html",
        {"run": run, "events": run.events.select_related("connection").order_by("id")},
    )


@require_POST
@connection_view(ADMINS)
def sync_now(request: HttpRequest, connection: Connection) -> HttpResponse:
    if connection.state == ConnectionState.DISCONNECTED or not connection.secret:
        messages.error(request, "This connection is disconnected. Connect it again to sync.")
    elif connection.is_syncing:
        # Another task would only be skipped by the lease, or read everything again right after it.
        messages.info(
            request, f"{connection.name} is syncing now; its figures appear as soon as that sync ends."
        )
    elif queued := connection.sync_queued_since:
        messages.info(
            request,
            f"A sync of {connection.name} is already queued (since {queued:%H:%M} UTC); it starts as soon "
            "as a worker is free.",
        )
    else:
        sync_event_add(
            connection=connection,
            kind="sync",
            code="sync_requested",
            message=f"Sync requested by {request.user.email}.",
        )
        audit_record(
            company=request.company,
            action="connection.sync_requested",
            request=request,
            target=f"{connection.provider}:{connection.pk}",
        )
        if connection_enqueue_sync(connection=connection, trigger="manual"):
            messages.success(request, f"Sync of {connection.name} queued.")
        else:
            messages.error(
                request,
                f"The sync of {connection.name} could not be queued: the task queue is not answering. "
                "The next scheduled sync will run it; or try again in a few minutes.",
            )
    return redirect("company-settings", company_slug=request.company.slug)


def _disconnect_context(connection, form) -> dict:
    return {
        "connection": connection,
        "form": form,
        "revoke_where": get_provider(connection.provider).revoke_where(connection),
    }


def _already_disconnected(request: HttpRequest, connection) -> HttpResponse:
    messages.info(request, f"{connection.name} is already disconnected.")
    return redirect("company-settings", company_slug=request.company.slug)


@require_GET
@connection_view(ADMINS)
def disconnect_confirm(request: HttpRequest, connection: Connection) -> HttpResponse:
    """The page that asks before disconnecting; the disconnect itself is a POST to `disconnect`."""
    if connection.state == ConnectionState.DISCONNECTED:
        return _already_disconnected(request, connection)
    return render(request, "integrations/disconnect.html", _disconnect_context(connection, DisconnectForm()))


@require_POST
@connection_view(ADMINS)
def disconnect(request: HttpRequest, connection: Connection) -> HttpResponse:
    if connection.state == ConnectionState.DISCONNECTED:
        return _already_disconnected(request, connection)
    form = DisconnectForm(request.POST)
    if not form.is_valid():
        return render(request, "integrations/disconnect.html", _disconnect_context(connection, form))
    deleted = connection_disconnect(
        connection=connection,
        actor=request.user,
        request=request,
        delete_usage=form.cleaned_data["delete_usage"],
    )
    messages.warning(
        request,
        f"{connection.name} is disconnected and its stored key deleted. Revoke the key "
        f"{get_provider(connection.provider).revoke_where(connection)} too."
        + (
            f" {deleted} usage rows were deleted."
            if form.cleaned_data["delete_usage"]
            else " Synced usage history is kept."
        ),
    )
    return redirect("company-settings", company_slug=request.company.slug)
