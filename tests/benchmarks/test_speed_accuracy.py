"""The speed/accuracy table: sizes parsed strictly, accuracy only from the locked test split, rows as measured."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest


@pytest.fixture(scope="module")
def speed_accuracy(load_benchmark):
    return load_benchmark("speed_accuracy")


def test_sizes_are_parsed_strictly(speed_accuracy):
    assert speed_accuracy.parse_pairs(("lite1@320=runs/x",), "--trained") == {"lite1@320": Path("runs/x")}
    for bad in ("lite9@256=x", "lite0=x", "lite0@big=x", "lite0@256"):
        with pytest.raises(click.BadParameter):
            speed_accuracy.parse_pairs((bad,), "--scored")


def test_accuracy_comes_only_from_the_test_split(speed_accuracy, tmp_path):
    record = {"split": "val", "mean": {"dice": 0.9, "threshold_jaccard": 0.8}, "intervals": {}}
    (tmp_path / "val.json").write_text(json.dumps(record))
    with pytest.raises(click.BadParameter, match="locked test split"):
        speed_accuracy.scored_accuracy(tmp_path / "val.json")
    (tmp_path / "test.json").write_text(
        json.dumps({**record, "split": "test", "images": 300, "intervals": {"dice": {"low": 0.88, "high": 0.92}}})
    )
    assert speed_accuracy.scored_accuracy(tmp_path / "test.json")["dice"] == 0.9


def bench_record(path: str, inference: float) -> dict:
    return {
        "form": path,
        "status": "ok",
        "reason": None,
        "size_bytes": 2_000_000,
        "stages": {"inference": {"p50_ms": inference}, "end_to_end": {"p50_ms": inference + 3}},
    }


def test_rows_pair_each_size_with_its_two_forms_and_say_why_accuracy_is_missing(speed_accuracy):
    sizes = [
        {"label": "lite0@256", "parameters": 3_400_000, "fp32_path": "a", "int8_path": "b", "accuracy": None},
        {
            "label": "lite2@320",
            "parameters": 4_800_000,
            "fp32_path": "c",
            "int8_path": "d",
            "accuracy": {"dice": 0.91, "threshold_jaccard": 0.83, "intervals": {"dice": {"low": 0.9, "high": 0.92}}},
        },
    ]
    bench = {
        "results": [bench_record("a", 10.0), bench_record("b", 5.0), bench_record("c", 30.0), bench_record("d", 20.0)]
    }
    rows = speed_accuracy.rows_from_bench(bench, sizes)
    table = speed_accuracy.table_rows({"rows": rows})
    assert table[1][:6] == ["lite0@256", "3.40 M", "2.0", "10.00", "5.00", "2.00x"]
    assert table[1][6].startswith("not measured") and rows[0]["accuracy_note"] == speed_accuracy.NOT_SCORED
    assert table[2][5] == "1.50x" and table[2][6] == "0.910 (0.900-0.920)"


def test_a_form_that_did_not_run_stops_the_table(speed_accuracy):
    sizes = [{"label": "lite0@256", "parameters": 1, "fp32_path": "a", "int8_path": "b", "accuracy": None}]
    failed = {**bench_record("b", 5.0), "status": "failed", "reason": "segment() raised"}
    with pytest.raises(click.ClickException, match="segment\\(\\) raised"):
        speed_accuracy.rows_from_bench({"results": [bench_record("a", 10.0), failed]}, sizes)
