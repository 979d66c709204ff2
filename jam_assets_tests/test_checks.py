"""Each deliberate defect fails exactly the check meant for it, with its severity and metadata;
the clean samples pass every check. Minute files are built from the real samples.

The checks' logic is tested over exports the core writes (no Dagster run: fast); two tests run the
checks through Dagster, for the wiring: every check evaluated in the table step, and the blocking
accounting check failing the step."""

import collections
import io
from types import SimpleNamespace

import dagster as dg
import orjson
import pytest

from jam_assets.core import quality
from jam_assets.core.staging import JsonlStage, StagedRun, export_path, publish
from jam_assets.core.transform import transform_stream
from jam_assets.defs import checks
from jam_assets.defs.assets import minute_file_tables
from jam_assets.defs.checks import CHECK_SPECS
from jam_assets.defs.io_managers import TablesIOManager
from jam_assets.defs.partitions import minute_files

from .helpers import sample_json, write_minute

KEY = "2025/04/23/0600"
ALL_CHECKS = {(s.asset_key.path[-1], s.name) for s in CHECK_SPECS}


def in_minute(line: dict, second: int) -> dict:
    line["time"] = f"2025-04-23T06:00:{second:02d}.123456789Z"
    return line


def clean_lines() -> list[dict]:
    lines = [
        in_minute(sample_json(t), i * 3)
        for i, t in enumerate(("128", "13", "255", "142", "131", "133", "135", "141", "143"))
    ]
    # A second team's block, so per-team figures have two rows.
    other = in_minute(sample_json("128"), 40)
    other["metadata"] = "team=COLORFULNOTION|codec_len=304"
    other["elapsed"] = 91428
    return lines + [other]


def evaluate(settings, resources, lines: list[dict]):
    """Every check over the exports of one minute file made of `lines`, as the table step runs them."""
    data = b"".join(orjson.dumps(line) + b"\n" for line in lines)
    with JsonlStage(settings.export_root / ".staging" / "test") as sink:
        summary = transform_stream(io.BytesIO(data), KEY, sink)
    for table, staged in sink.close().items():
        publish(staged, export_path(settings.export_root, table, KEY))
    exports = quality.Exports(settings.export_root, [KEY])
    try:
        outcomes = {
            (s.asset_key.path[-1], s.name): checks.evaluate(s.key, exports, {KEY: summary}, settings)
            for s in CHECK_SPECS
        }
    finally:
        exports.close()
    return None, {
        k: SimpleNamespace(passed=o.passed, severity=SimpleNamespace(value=o.severity), metadata=checks._metadata(o))
        for k, o in outcomes.items()
    }


def evaluate_in_dagster(settings, resources, lines: list[dict], raise_on_error=True):
    write_minute(settings.log_root, KEY, [orjson.dumps(line) for line in lines])
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(minute_files.name, [KEY])
        result = dg.materialize(
            [minute_file_tables],
            instance=instance,
            resources=resources,
            partition_key=KEY,
            raise_on_error=raise_on_error,
        )
        evaluations = {(e.asset_key.path[-1], e.check_name): e for e in result.get_asset_check_evaluations()}
    assert set(evaluations) == ALL_CHECKS
    return result, evaluations


def failing(evaluations):
    return {k: (e.severity.value, meta(e, "headline")) for k, e in evaluations.items() if not e.passed}


def meta(evaluation, name):
    value = evaluation.metadata[name]
    return value.value if isinstance(value, dg.MetadataValue) else value


@pytest.mark.slow
def test_clean_samples_pass_every_check_in_the_table_step(settings, resources):
    _, evaluations = evaluate_in_dagster(settings, resources, clean_lines())
    assert failing(evaluations) == {}


def test_clean_samples_pass_every_check(settings, resources):
    _, evaluations = evaluate(settings, resources, clean_lines())
    assert failing(evaluations) == {}
    blocks = evaluations[("blocks", "elapsed_units")]
    assert meta(blocks, "per_team_json") == [
        {"team": "COLORFULNOTION", "values": 1, "median_us": 91428, "min_us": 91428, "max_us": 91428},
        {"team": "Jam-Duna", "values": 1, "median_us": 63495, "min_us": 63495, "max_us": 63495},
    ]
    assert (
        meta(evaluations[("rejected_lines", "lines_accounted")], "headline")
        == "all 10 lines of 1 minute files accounted for"
    )


@pytest.mark.parametrize("elapsed, unit", [(63_495_000, "nanoseconds"), (63, "milliseconds")])
def test_a_team_in_the_wrong_unit(settings, resources, elapsed, unit):
    lines = clean_lines()
    for second in (50, 51, 52):
        bad = in_minute(sample_json("128"), second)
        bad["metadata"] = "team=WRONGUNIT|codec_len=304"
        bad["elapsed"] = elapsed
        lines.append(bad)
    _, evaluations = evaluate(settings, resources, lines)
    assert failing(evaluations) == {
        ("blocks", "elapsed_units"): (
            "ERROR",
            f"team median outside the plausible band: WRONGUNIT (median {elapsed:,} µs, looks like {unit}) "
            "in 2025/04/23/0600 (3)",
        ),
    }
    e = evaluations[("blocks", "elapsed_units")]
    assert meta(e, "failing_rows") == 3
    assert meta(e, "samples")[0] == {
        "minute_file": KEY,
        "line_no": 11,
        "team": "WRONGUNIT",
        "value": elapsed,
        "looks_like": f"{unit}?",
    }
    assert {r["team"]: r["median_us"] for r in meta(e, "per_team_json")} == {
        "COLORFULNOTION": 91428,
        "Jam-Duna": 63495,
        "WRONGUNIT": elapsed,
    }


def test_one_odd_value_is_a_warning(settings, resources):
    lines = clean_lines()
    lines[-1]["elapsed"] = 63  # one block in ms, but the team's median stays plausible
    lines.append(
        in_minute(sample_json("128"), 55) | {"metadata": "team=COLORFULNOTION|codec_len=304", "elapsed": 80000}
    )
    lines.append(
        in_minute(sample_json("128"), 56) | {"metadata": "team=COLORFULNOTION|codec_len=304", "elapsed": 85000}
    )
    _, evaluations = evaluate(settings, resources, lines)
    assert failing(evaluations) == {
        ("blocks", "elapsed_units"): ("WARN", "1 lines with values that look like another unit in 2025/04/23/0600 (1)")
    }


def test_zero_expected_types_flag_non_zero(settings, resources):
    lines = clean_lines()
    lines[3]["elapsed"] = 1500  # the preimage
    _, evaluations = evaluate(settings, resources, lines)
    assert failing(evaluations) == {
        ("preimages", "elapsed_units"): (
            "WARN",
            "1 lines with non-zero where the spec says zero in 2025/04/23/0600 (1)",
        )
    }


@pytest.mark.parametrize(
    "mutate, value",
    [
        (lambda h: h[:-2], "31-byte"),
        (lambda h: h.upper().replace("0X", "0x"), "uppercase"),
        (lambda h: h[2:], "missing 0x"),
    ],
)
def test_malformed_hashes(settings, resources, mutate, value):
    lines = clean_lines()
    parent = lines[0]["json_encoded"]["header"]["parent"]
    lines[0]["json_encoded"]["header"]["parent"] = bad = mutate(parent)
    _, evaluations = evaluate(settings, resources, lines)
    assert failing(evaluations) == {
        ("blocks", "hex_formats"): ("ERROR", "1 malformed values (parent 1) in 2025/04/23/0600 (1)")
    }
    e = evaluations[("blocks", "hex_formats")]
    assert meta(e, "samples") == [{"minute_file": KEY, "line_no": 1, "column": "parent", "value": bad}]
    assert meta(e, "failing_by_column") == {"parent": 1}


def test_preimage_hash_mismatch(settings, resources):
    lines = clean_lines()
    wrong = "0x" + "ab" * 32
    right = "0xf40e27b819519561cf8f8a33309b2453a78117a3e33fcd331a0bab714f1f9e14"
    assert f"h={right}" in lines[3]["metadata"]
    lines[3]["metadata"] = lines[3]["metadata"].replace(f"h={right}", f"h={wrong}")
    _, evaluations = evaluate(settings, resources, lines)
    assert failing(evaluations) == {
        ("preimages", "preimage_hash_matches_h"): (
            "ERROR",
            "1 preimages whose BLAKE2b-256 differs from metadata h in 2025/04/23/0600 (1)",
        )
    }
    assert meta(evaluations[("preimages", "preimage_hash_matches_h")], "samples") == [
        {"minute_file": KEY, "line_no": 4, "h": wrong, "preimage_hash": right}
    ]


def test_codec_len_mismatch(settings, resources):
    lines = clean_lines()
    lines[7]["metadata"] = "team=COLORFULNOTION|codec_len=100"  # the assurance's codec is 99 bytes
    _, evaluations = evaluate(settings, resources, lines)
    assert failing(evaluations) == {
        ("raw_log", "codec_len_matches"): (
            "ERROR",
            "1 lines whose codec_encoded length differs from metadata codec_len in 2025/04/23/0600 (1)",
        )
    }
    assert meta(evaluations[("raw_log", "codec_len_matches")], "samples") == [
        {"minute_file": KEY, "line_no": 8, "codec_len": "100", "codec_bytes": 99}
    ]


def test_late_lines_are_a_warning(settings, resources):
    lines = clean_lines()
    lines[0]["time"] = "2025-04-23T06:03:30.5Z"  # 3.5 minutes into a one-minute file
    _, evaluations = evaluate(settings, resources, lines)
    assert failing(evaluations) == {
        ("blocks", "time_in_window"): ("WARN", "1 lines outside their minute ±60 s in 2025/04/23/0600 (1)")
    }
    assert meta(evaluations[("blocks", "time_in_window")], "samples") == [
        {"minute_file": KEY, "line_no": 1, "value": "2025-04-23T06:03:30.500000Z", "seconds_from_minute_start": 210.5}
    ]


class DroppingIOManager(TablesIOManager):
    """Loses the last blocks row on its way out: what the accounting check exists to catch."""

    def write_run(self, context, run: StagedRun):
        blocks = run.tables.get("blocks")
        if blocks is not None and run.outcome is None:  # before the run's tables are written
            for path in blocks.files.values():
                path.write_bytes(b"".join(path.read_bytes().splitlines(keepends=True)[:-1]))
        return super().write_run(context, run)


@pytest.mark.slow
def test_lost_lines_fail_the_blocking_accounting_check(settings, resources):
    tampered = {
        **resources,
        "table_io_manager": DroppingIOManager(settings=settings, warehouse=resources["table_io_manager"].warehouse),
    }
    result, evaluations = evaluate_in_dagster(settings, tampered, clean_lines(), raise_on_error=False)
    assert failing(evaluations) == {
        ("rejected_lines", "lines_accounted"): (
            "ERROR",
            "1 minute files do not add up (+1 lines missing) in 2025/04/23/0600 (1)",
        )
    }
    assert meta(evaluations[("rejected_lines", "lines_accounted")], "samples") == [
        {"minute_file": KEY, "lines_in_file": 10, "lines_in_outputs": 9}
    ]
    # Blocking: the step fails, so the minute file does not look healthy; the data stays as written.
    assert not result.success
    assert (settings.export_root / "blocks" / f"{KEY}.jsonl").read_bytes().count(b"\n") == 1


def test_a_check_over_many_minute_files_names_the_failing_ones(settings):
    """A range run's check result says which minute files failed, not only how many rows."""
    keys = [f"2025/04/23/06{m:02d}" for m in range(6)]
    bad_minutes = keys[1:]
    for key in keys:
        line = sample_json("128")
        line["time"] = f"2025-04-23T06:{key[-2:]}:01.5Z"
        if key in bad_minutes:
            line["json_encoded"]["header"]["parent"] = "0xabc"
        with JsonlStage(settings.export_root / ".staging" / key) as sink:
            transform_stream(io.BytesIO(orjson.dumps(line) + b"\n"), key, sink)
        for table, staged in sink.close().items():
            publish(staged, export_path(settings.export_root, table, key))
    exports = quality.Exports(settings.export_root, keys)
    outcome = quality.check_hex_formats(exports, "blocks")
    exports.close()
    assert outcome.headline == (
        "5 malformed values (parent 5) in 2025/04/23/0601 (1), 2025/04/23/0602 (1), "
        "2025/04/23/0603 (1) and 2 more minute files"
    )
    assert checks._metadata(outcome)["failing_minute_files"].value == {k: 1 for k in bad_minutes}


def latest_storage_id(instance, asset: str, key: str) -> int:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[key]), limit=1
    ).records
    return records[0].storage_id


def check_history(instance, asset: str, check: str) -> dict[str, str]:
    """Minute file -> the status of its latest evaluation of a check, as the UI shows it."""
    records = instance.event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(dg.AssetKey(asset), check), limit=100
    )
    latest: dict[str, str] = {}
    for record in records:  # newest first
        latest.setdefault(record.partition, record.status.value)
    return latest


@pytest.mark.slow
def test_check_results_stay_on_their_minute_file(settings, resources):
    """A bad minute keeps its failed check whatever its neighbours and later minutes do: a range run
    records every check on each of its minute files with that minute's own figures, a one-minute run
    every check on its minute, and executing one check for one minute file (the UI's Execute)
    re-evaluates only that."""
    keys = ["2025/04/23/0600", "2025/04/23/0601", "2025/04/23/0602"]
    for i, key in enumerate(keys):
        lines = [in_minute(line, 3) for line in clean_lines()[:2]]
        for line in lines:
            line["time"] = line["time"].replace("06:00:", f"06:0{i}:")
        if i == 1:
            lines[0]["json_encoded"]["header"]["parent"] = "0xabc"
        write_minute(settings.log_root, key, [orjson.dumps(line) for line in lines])
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(minute_files.name, keys)
        ranged = dg.materialize(
            [minute_file_tables],
            instance=instance,
            resources=resources,
            tags={"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[2]},
        )
        evaluations = ranged.get_asset_check_evaluations()
        assert sorted(collections.Counter(e.partition for e in evaluations).items()) == [(k, 36) for k in keys]
        (evaluation,) = [e for e in evaluations if not e.passed]
        assert (evaluation.asset_key.path[-1], evaluation.check_name, evaluation.partition) == (
            "blocks",
            "hex_formats",
            keys[1],
        )
        assert (evaluation.passed, evaluation.severity.value, meta(evaluation, "failing_rows")) == (False, "ERROR", 1)
        assert meta(evaluation, "samples") == [
            {"minute_file": keys[1], "line_no": 1, "column": "parent", "value": "0xabc"}
        ]
        assert evaluation.description == (
            f"{keys[1]}: 1 failing (checked with 2 other minute files: 1 malformed values (parent 1) in {keys[1]} (1))"
        )
        # Linked to the materialization it judged.
        (blocks_1,) = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("blocks"), asset_partitions=[keys[1]]), limit=5
        ).records
        assert evaluation.target_materialization_data.storage_id == blocks_1.storage_id
        neighbour = next(
            e
            for e in evaluations
            if (e.partition, e.check_name, e.asset_key.path[-1]) == (keys[0], "hex_formats", "blocks")
        )
        assert (neighbour.passed, neighbour.description) == (
            True,
            "passed (checked with 2 other minute files, of which 1 failed)",
        )
        history = check_history(instance, "blocks", "hex_formats")
        assert history == {keys[0]: "SUCCEEDED", keys[1]: "FAILED", keys[2]: "SUCCEEDED"}

        # A later one-minute run of a clean neighbour records its own results, not over the bad one's.
        single = dg.materialize([minute_file_tables], instance=instance, resources=resources, partition_key=keys[2])
        assert {(e.partition, e.passed) for e in single.get_asset_check_evaluations()} == {(keys[2], True)}
        history = check_history(instance, "blocks", "hex_formats")
        assert (history[keys[1]], history[keys[2]]) == ("FAILED", "SUCCEEDED")

        # Executing one check alone for one minute file: the launched run carries the minute as its
        # partition (as the UI's Execute does); only that check is evaluated, on that minute.
        alone = dg.materialize(
            [minute_file_tables],
            instance=instance,
            resources=resources,
            selection=dg.AssetSelection.checks(dg.AssetCheckKey(dg.AssetKey("blocks"), "hex_formats")),
            tags={"dagster/partition": keys[1]},
        )
        assert [(e.check_name, e.partition, e.passed) for e in alone.get_asset_check_evaluations()] == [
            ("hex_formats", keys[1], False)
        ]
        assert alone.get_asset_materialization_events() == []

        # Without a partition (the UI's "Execute all" on a table's Checks tab): the newest minute file
        # processed, recorded on it.
        newest = dg.materialize(
            [minute_file_tables],
            instance=instance,
            resources=resources,
            selection=dg.AssetSelection.checks(dg.AssetCheckKey(dg.AssetKey("blocks"), "hex_formats")),
        )
        (evaluation,) = newest.get_asset_check_evaluations()
        assert (evaluation.partition, evaluation.passed, evaluation.description) == (
            keys[2],
            True,
            "7 hex column(s) well-formed",
        )
        assert evaluation.target_materialization_data.storage_id == latest_storage_id(instance, "blocks", keys[2])
