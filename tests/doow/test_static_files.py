"""Static files under the production storage: collectstatic must succeed at image build time, and
the pages must find every file they reference in its manifest."""

import pytest
from django.core.management import call_command
from django.test import override_settings

from tests.conftest import client_for

PRODUCTION_STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}


@pytest.fixture
def collected_static(tmp_path):
    with override_settings(STATIC_ROOT=tmp_path / "staticfiles", STORAGES=PRODUCTION_STORAGES):
        # Fails on any file a CSS or JS file references that is not shipped (a missing source map, say).
        call_command("collectstatic", "--noinput", verbosity=0)
        yield tmp_path / "staticfiles"


def test_collectstatic_writes_the_manifest(collected_static):
    assert (collected_static / "staticfiles.json").is_file()
    assert list(collected_static.glob("doow/app.*.css.gz"))


def test_pages_reference_hashed_static_files(collected_static, alice):
    content = client_for(alice).get("/c/acme/settings/").content.decode()
    assert "/static/doow/app.css" not in content
    assert "/static/doow/app." in content and ".css" in content


def test_favicon_ico_sends_browsers_to_the_shipped_icon_without_logging_a_404(collected_static, caplog):
    response = client_for(None).get("/favicon.ico")

    assert response.status_code == 302  # not 301: the hashed name changes with the icon
    assert "max-age=86400" in response["Cache-Control"]
    location = response["Location"]
    assert location.startswith("/static/doow/favicon.") and location != "/static/doow/favicon.svg"
    shipped = collected_static / location.removeprefix("/static/")
    assert shipped.read_text().startswith("<svg")
    assert not [record for record in caplog.records if record.levelname == "WARNING"]


def test_pages_name_the_same_icon_so_browsers_need_not_ask_for_favicon_ico(collected_static, alice):
    icon = client_for(None).get("/favicon.ico")["Location"]
    for user, path in ((None, "/login/"), (alice, "/c/acme/settings/")):
        content = client_for(user).get(path).content.decode()
        assert f'<link rel="icon" type="image/svg+xml" href="{icon}">' in content
