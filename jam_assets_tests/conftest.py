import pytest

from jam_assets.defs.resources import local_resources
from jam_assets.defs.settings import JamSettings


@pytest.fixture
def settings(tmp_path) -> JamSettings:
    (tmp_path / "logs").mkdir()
    return JamSettings(log_dir=str(tmp_path / "logs"), export_dir=str(tmp_path / "exports"))


@pytest.fixture
def resources(settings):
    return local_resources(settings)
