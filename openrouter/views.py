from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables
from django.views.decorators.http import require_GET, require_http_methods

from doow.access import ADMINS, USAGE_READERS, company_view
from integrations.access import connection_view
from integrations.models import Connection, CredentialScope
from openrouter import exports, insights
from openrouter.forms import ConnectForm, KeyForm, SingleKeyForm
from openrouter.provider import OpenRouterProvider
from openrouter.report import DetailQuery, connection_status, detail_report
from openrouter.services import ConnectError, openrouter_connect, openrouter_replace_key


@sensitive_post_parameters("key")
@sensitive_variables("form")
@never_cache
@require_http_methods(["GET", "POST"])
@company_view(ADMINS)
def connect(request: HttpRequest) -> HttpResponse:
    form = ConnectForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            connection, notice, again, _same_key = openrouter_connect(
                company=request.company,
                secret=form.cleaned_data["key"],
                name=form.cleaned_data["name"],
                actor=request.user,
                request=request,
            )
        except ConnectError as exc:
            form.add_error("key", str(exc))
        else:
            messages.success(
                request,
                f"{connection.name} is connected again and a sync has started."
                if again
                else f"{connection.name} is connected. The initial sync of the last 30 days has started.",
            )
            if notice:
                messages.warning(request, notice)
            return redirect("company-settings", company_slug=request.company.slug)
    return render(request, "openrouter/connect.html", {"form": form})


@sensitive_post_parameters("key")
@sensitive_variables("form")
@never_cache
@require_http_methods(["GET", "POST"])
@connection_view(ADMINS)
def replace_key(request: HttpRequest, connection: Connection) -> HttpResponse:
    """A new key for the same organization in place of the old one (rotated, leaked or revoked), or
    for a disconnected connection: its history, budgets and owners stay with it."""
    form_class = SingleKeyForm if connection.scope == CredentialScope.SINGLE_KEY else KeyForm
    form = form_class(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            replaced = openrouter_replace_key(
                connection=connection, secret=form.cleaned_data["key"], actor=request.user, request=request
            )
        except ConnectError as exc:
            form.add_error("key", str(exc))
        else:
            messages.success(request, _replaced_message(replaced))
            return redirect("company-settings", company_slug=request.company.slug)
    return render(request, "openrouter/replace_key.html", {"connection": connection, "form": form})


def _replaced_message(replaced) -> str:
    connection = replaced.connection
    if replaced.same_key:
        return (
            f"{connection.name} already uses this key ({connection.masked_secret}): OpenRouter accepted it "
            "again and a sync has started. Keep it: it is the key in use."
        )
    if replaced.again:
        return f"{connection.name} is connected again ({connection.masked_secret}) and a sync has started."
    return (
        f"{connection.name} has its new key ({connection.masked_secret}) and a sync has started. "
        f"Revoke the old key {OpenRouterProvider().revoke_where(connection)}."
    )


@require_GET
@connection_view(USAGE_READERS)
def detail(request: HttpRequest, connection: Connection) -> HttpResponse:
    if request.GET.get("part") == "header":
        return _header(request, connection)
    query = DetailQuery.from_params(request.GET)
    context = detail_report(connection=connection, query=query)
    context["month"] = {
        **insights.month_of_filters(connection=connection, filters=query.filters),
        "budgets": insights.budget_statuses(connection=connection),
        "budget_for": insights.budget_target_of_filters(connection=connection, filters=query.filters),
    }
    context["section"] = "overview"
    return render(request, "openrouter/detail.html", context)


def _header(request: HttpRequest, connection) -> HttpResponse:
    """The header alone, polled by htmx while a sync runs. Once the first sync has finished, the
    page that showed the loading state reloads itself to show the data."""
    status = connection_status(connection)
    if request.GET.get("reload_when_done") and not status["is_syncing"]:
        response = HttpResponse(status=204)
        response["HX-Refresh"] = "true"
        return response
    return render(request, "openrouter/_header.html", status)


@require_GET
# A download needs the connection's id only: its whole row (its key, its JSON columns) was a tenth
# of a one-key export's time.
@connection_view(USAGE_READERS, fields=("id",))
def export(request: HttpRequest, connection: Connection, fmt: str) -> StreamingHttpResponse:
    if fmt not in ("csv", "json"):
        raise Http404("Unknown export format")
    connection_id = connection.pk
    query = DetailQuery.from_params(request.GET)
    if query.problem:
        # A download of other dates than asked for would pass for the asked ones.
        return HttpResponse(query.problem, status=400, content_type="text/plain")
    try:
        group_by = exports.parse_group_by(request.GET.get("group_by"))
    except ValueError as exc:
        return HttpResponse(str(exc), status=400, content_type="text/plain")
    selection = exports.export_selection(connection_id=connection_id, query=query, group_by=group_by)
    if fmt == "csv":
        body = exports.csv_chunks(**selection)
    else:
        body = exports.write_json(exports.export_records(**selection))
    response = StreamingHttpResponse(body, content_type="text/csv" if fmt == "csv" else "application/json")
    grouping = "" if group_by == exports.ALL_DIMENSIONS else "-by-" + "-".join(group_by)
    filename = f"openrouter-usage-{connection_id}-{query.start}-{query.end}{grouping}.{fmt}"
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
