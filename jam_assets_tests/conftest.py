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


# The longest modules first (measured with --durations): `make test` hands whole modules to its
# workers in collection order (--dist loadfile), so a long module that starts last would run alone
# at the end while the other workers wait.
LONGEST_FIRST = (
    "test_ui.py",
    "test_bigquery.py",
    "test_e2e_dagster_dev.py",
    "test_dagster_tools.py",
    "test_bigquery_failures.py",
    "test_reports.py",
    "test_e2e_receiver.py",
    "test_assets.py",
    "test_event_log_storage.py",
    "test_crash.py",
    "test_concurrency.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
