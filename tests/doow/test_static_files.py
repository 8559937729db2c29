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
