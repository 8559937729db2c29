"""A key moved to another workspace: OpenRouter keeps its earlier usage in the workspace it was spent
in (its /activity with group_by=workspace says so), and so does Doow."""

import httpx
import pytest

from integrations.models import SyncEvent
from openrouter.emulator import Emulator, EmulatorConfig
from openrouter.models import ApiKey
from tests.support import TODAY, connect, stored_total, sync
from usage.models import UsageDaily

pytestmark = pytest.mark.django_db


class MovedKey(httpx.BaseTransport):
    """The emulator, but one key is listed in another workspace (moved there today): its activity,
    as OpenRouter attributes it, stays in the workspace it was spent in."""

    def __init__(self, emulator, key_hash: str, workspace_id: str):
        self.inner, self.key_hash, self.workspace_id = emulator.transport(), key_hash, workspace_id

    def handle_request(self, request):
        response = self.inner.handle_request(request)
        if request.url.path.startswith("/api/v1/keys") and response.status_code == 200:
            body = response.json()
            for key in body["data"] if isinstance(body["data"], list) else [body["data"]]:
                if key["hash"] == self.key_hash:
                    key["workspace_id"] = self.workspace_id
            return httpx.Response(200, json=body, request=request)
        return response


def test_a_moved_keys_usage_stays_in_the_workspace_it_was_spent_in(acme):
    emulator = Emulator(EmulatorConfig(seed=7, keys=24, today=TODAY))
    new_workspace = emulator.world.workspaces[0].id
    moved = next(k for k in emulator.truth.listed_keys() if k["workspace_id"] != new_workspace)
    old_workspace = moved["workspace_id"]
    start, end = emulator.truth.activity_window()
    moved_total = emulator.truth.activity_total(start, end, api_key_hash=moved["hash"])
    assert moved_total > 0
    connection = connect(acme, emulator)

    result = sync(connection, emulator, transport=MovedKey(emulator, moved["hash"], new_workspace))

    assert result.status == "succeeded"
    assert ApiKey.objects.get(connection=connection, key_hash=moved["hash"]).workspace_id == new_workspace
    assert stored_total(connection, api_key_hash=moved["hash"], workspace_id=old_workspace) == moved_total
    for workspace in (old_workspace, new_workspace):
        assert stored_total(connection, workspace_id=workspace) == emulator.truth.activity_total(
            start, end, workspace_id=workspace
        )
    # The unattributed rows were not made to balance a wrongly placed key: none is negative.
    assert not UsageDaily.objects.filter(connection=connection, api_key_hash="", spend_usd__lt=0).exists()
    assert not SyncEvent.objects.filter(connection=connection, code="reconciliation_mismatch").exists()
