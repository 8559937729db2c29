"""Drive OpenRouter's official SDK against a running emulator and report what it parsed, as JSON.

Run it as a separate, isolated process (see `run_probe`): this project's Django app is also called
`openrouter` and hides the SDK inside the project's own interpreter path, so the SDK can only be imported
where the project is not on sys.path. This file therefore imports nothing from the project.

    python -I sdk_probe.py BASE_URL MANAGEMENT_KEY NORMAL_KEY [CHECK ...]

Each check reports {"ok": true, ...what it read} or {"ok": false, "error": "..."}; a schema validation
error shows up as error "ResponseValidationError: ...".
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import traceback


def run_probe(base_url: str, management_key: str, normal_key: str, checks=(), timeout: float = 120) -> dict:
    """Run this file in an isolated interpreter (the current one, without the project on sys.path)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    command = [sys.executable, "-I", os.path.abspath(__file__), base_url, management_key, normal_key, *checks]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, check=False)  # noqa: S603
    if done.returncode != 0:
        raise RuntimeError(f"SDK probe failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(done.stdout)


def _money(value) -> str | None:
    return None if value is None else repr(value)


def _pages(list_page):
    """Every key of a /keys listing, advancing offset by the page length until an empty page."""
    keys, offset, pages = [], 0, 0
    while True:
        page = list_page(offset).data
        pages += 1
        if not page:
            return keys, pages
        keys.extend(page)
        offset += len(page)


def _key_summary(k) -> dict:
    return {
        "hash": k.hash,
        "usage": _money(k.usage),
        "byok_usage": _money(k.byok_usage),
        "usage_daily": _money(k.usage_daily),
        "workspace_id": k.workspace_id,
        "disabled": k.disabled,
        "creator_user_id": k.creator_user_id,
    }


def _activity_summary(rows) -> dict:
    return {
        "rows": len(rows),
        "dates": sorted({r.date_ for r in rows}),
        "usage": [repr(r.usage) for r in rows],
        "byok_usage_inference": [repr(r.byok_usage_inference) for r in rows],
        "workspace_ids": sorted({r.workspace_id for r in rows if r.workspace_id is not None}),
        "has_workspace_field": [r.workspace_id is not None for r in rows],
    }


def _checks(sdk, management, normal, wrong):
    def current_key_management():
        d = management.api_keys.get_current_key_metadata().data
        return {"is_management_key": d.is_management_key, "usage": _money(d.usage)}

    def current_key_normal():
        d = normal.api_keys.get_current_key_metadata().data
        return {
            "is_management_key": d.is_management_key,
            "usage": _money(d.usage),
            "usage_daily": _money(d.usage_daily),
            "usage_weekly": _money(d.usage_weekly),
            "usage_monthly": _money(d.usage_monthly),
            "byok_usage": _money(d.byok_usage),
            "workspace_id": d.workspace_id,
            "limit": _money(d.limit),
        }

    def keys_default():
        keys, pages = _pages(lambda offset: management.api_keys.list(offset=offset))
        return {"keys": [_key_summary(k) for k in keys], "pages": pages}

    def keys_all_workspaces():
        out, pages = [], 0
        for w in management.workspaces.list(limit=100).result.data:
            keys, n = _pages(
                lambda offset, w=w: management.api_keys.list(
                    offset=offset, workspace_id=w.id, include_disabled=True, include_expired=True
                )
            )
            out.extend(keys)
            pages += n
        return {"keys": [_key_summary(k) for k in out], "pages": pages}

    def key_get():
        first = management.api_keys.list(include_disabled=True, include_expired=True).data
        got = [management.api_keys.get(hash=k.hash).data for k in first[:5]]
        return {"keys": [_key_summary(k) for k in got]}

    def activity():
        return _activity_summary(management.analytics.get_user_activity().data)

    def activity_by_workspace():
        return _activity_summary(
            management.analytics.get_user_activity(request={"group_by": "workspace"}).data
        )

    def activity_filters():
        ws = management.workspaces.list().result.data
        members = management.organization.list_members().result.data
        key = management.api_keys.list().data[0]
        all_rows = management.analytics.get_user_activity().data
        day = all_rows[-1].date_
        return {
            "date": day,
            "by_date": _activity_summary(management.analytics.get_user_activity(request={"date": day}).data),
            "by_key": _activity_summary(
                management.analytics.get_user_activity(request={"api_key_hash": key.hash}).data
            ),
            "key_hash": key.hash,
            "by_workspace": {
                w.id: _activity_summary(
                    management.analytics.get_user_activity(request={"workspace_id": w.id}).data
                )
                for w in ws
            },
            "by_user": {
                m.id: _activity_summary(
                    management.analytics.get_user_activity(request={"user_id": m.id}).data
                )
                for m in members
            },
        }

    def credits():
        d = management.credits.get_credits().data
        return {"total_credits": _money(d.total_credits), "total_usage": _money(d.total_usage)}

    def workspaces():
        first = management.workspaces.list(limit=1)
        ids = [w.id for w in first.result.data]
        page = first.next()
        while page is not None:
            ids.extend(w.id for w in page.result.data)
            page = page.next()
        return {"total_count": first.result.total_count, "ids": ids}

    def members():
        first = management.organization.list_members(limit=2)
        ids = [m.id for m in first.result.data]
        page = first.next()
        while page is not None:
            ids.extend(m.id for m in page.result.data)
            page = page.next()
        return {"total_count": first.result.total_count, "ids": ids}

    def models():
        r = management.models.list()
        return {
            "total_count": r.result.total_count,
            "models": {
                m.id: [m.pricing.prompt, m.pricing.completion, m.canonical_slug] for m in r.result.data
            },
        }

    def errors():
        def outcome(call):
            try:
                call()
            except Exception as exc:
                status = getattr(exc, "status_code", None)
                data = getattr(exc, "data", None)
                code = getattr(getattr(data, "error", None), "code", None)
                return {"exception": type(exc).__name__, "status": status, "code": code}
            return {"exception": None}

        return {
            "normal_keys": outcome(lambda: normal.api_keys.list()),
            "normal_key_get": outcome(lambda: normal.api_keys.get(hash="0" * 64)),
            "normal_activity": outcome(lambda: normal.analytics.get_user_activity()),
            "normal_credits": outcome(lambda: normal.credits.get_credits()),
            "normal_workspaces": outcome(lambda: normal.workspaces.list()),
            "normal_members": outcome(lambda: normal.organization.list_members()),
            "wrong_key": outcome(lambda: wrong.api_keys.get_current_key_metadata()),
            "wrong_key_list": outcome(lambda: wrong.api_keys.list()),
            "missing_key": outcome(lambda: management.api_keys.get(hash="f" * 64)),
            "normal_models": outcome(lambda: normal.models.list()),
        }

    return {f.__name__: f for f in (
        current_key_management, current_key_normal, keys_default, keys_all_workspaces, key_get, activity,
        activity_by_workspace, activity_filters, credits, workspaces, members, models, errors,
    )}  # fmt: skip


def main(argv: list[str]) -> int:
    base_url, management_key, normal_key, *only = argv
    import openrouter

    if not hasattr(openrouter, "OpenRouter"):
        raise SystemExit(f"imported {openrouter.__file__}, not the official SDK")

    def client(key):
        # No retries: a fault must surface, not be retried away with backoff.
        return openrouter.OpenRouter(api_key=key, server_url=base_url, retry_config=None, timeout_ms=20000)

    wrong = "sk-or-v1-" + "0" * 64
    checks = _checks(openrouter, client(management_key), client(normal_key), client(wrong))
    report = {}
    for name, check in checks.items():
        if only and name not in only:
            continue
        try:
            report[name] = {"ok": True, **check()}
        except Exception as exc:
            report[name] = {
                "ok": False,
                "error": f"{type(exc).__name__}: {exc}"[:2000],
                "trace": traceback.format_exc()[-3000:],
            }
    report["_sdk_version"] = openrouter.VERSION
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
