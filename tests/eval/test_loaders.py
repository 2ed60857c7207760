"""Loaders on the real rows in ../shared/data, format detection, and clear errors."""

import json
from pathlib import Path

import pytest

from codealign.loaders import DatasetFormatError, detect_format, load_problems

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.exists(), reason=f"real data samples not found at {DATA}")


@needs_data
def test_codecontests_rows_keep_tests_limits_and_solutions():
    problems = load_problems(DATA / "code_contests" / "train.jsonl")
    assert len(problems) == 300
    p = next(p for p in problems if p.id == "846_E. Chemistry in Berland")
    assert p.source == "codecontests" and p.split == "train" and p.checker == "codecontests"
    assert [t.input for t in p.public_tests] == ["3\n3 2 1\n1 2 3\n1 1\n1 2\n", "3\n1 2 3\n3 2 1\n1 1\n1 1\n"]
    assert [t.output for t in p.public_tests] == ["NO\n", "YES\n"]
    assert len(p.all_tests()) == 10 and p.generated_tests == []
    assert p.time_limit_s == 4.0  # null time_limit in the row -> the documented default
    assert p.difficulty == "E" and p.solutions["python"][0].startswith("import sys")
    assert all(len(q.public_tests) >= 1 for q in problems)


@needs_data
def test_apps_json_fields_are_parsed_and_call_based_rows_get_fn_name():
    problems = {p.id: p for p in load_problems(DATA / "apps" / "train.jsonl")}
    assert len(problems) == 131
    p = problems["1"]
    assert p.checker == "apps" and p.difficulty == "interview" and p.fn_name is None
    assert len(p.solutions["python"]) == 24 and p.metadata["url"].startswith("https://codeforces.com")
    # The only test's input is quoted in the statement's examples, so it is public.
    assert [t.input for t in p.public_tests] == ["3\n2 2 3\n4 3 7\n10 1 9\n"] and p.private_tests == []
    call = problems["2404"]
    assert call.fn_name and call.starter_code and isinstance(call.all_tests()[0].input, list)
    assert sum(len(q.all_tests()) for q in problems.values()) == 1591


@needs_data
def test_humaneval_rows_carry_their_check_program():
    problems = load_problems(DATA / "humaneval" / "HumanEval.jsonl")
    assert len(problems) == 164
    p = problems[0]
    assert p.id == "HumanEval/0" and p.fn_name == "has_close_elements"
    assert p.test_code.rstrip().endswith("check(has_close_elements)")
    assert p.solutions["python"][0].startswith(p.starter_code)


@needs_data
def test_a_folder_loads_every_file_and_split_picks_files(tmp_path):
    assert len(load_problems(DATA)) == 300 + 131 + 164
    assert {p.source for p in load_problems(DATA, split="train")} == {"codecontests", "apps"}


@needs_data
def test_parquet_rows_load_like_jsonl(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [json.loads(line) for line in (DATA / "apps" / "train.jsonl").read_text().splitlines()[:5]]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "test-00000.parquet")
    got = load_problems(tmp_path / "test-00000.parquet")
    assert [p.id for p in got] == [str(r["problem_id"]) for r in rows] and got[0].split == "test"


def test_embedded_default_dataset_loads():
    problems = load_problems(None)
    assert problems and {p.source for p in problems} >= {"codecontests", "apps"}
    assert load_problems("embedded", limit=3) == problems[:3]


def test_format_detection_and_errors(tmp_path):
    assert detect_format({"task_id": 1, "prompt": "", "entry_point": "f", "test": ""}) == "humaneval"
    with pytest.raises(DatasetFormatError, match="unrecognised row"):
        detect_format({"text": "hi"})
    bad = tmp_path / "x.jsonl"
    bad.write_text('{"problem_id": 1, "question": "q", "input_output": "{not json"}\n')
    with pytest.raises(DatasetFormatError, match="input_output"):
        load_problems(bad)
    bad.write_text("{oops\n")
    with pytest.raises(DatasetFormatError, match="x.jsonl:1"):
        load_problems(bad)


def test_unknown_hub_name_without_cache_gives_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(DatasetFormatError, match="could not load 'deepmind/code_contests'"):
        load_problems("code_contests", split="test")


HUB_CACHE_SCRIPT = r"""
import glob, os, shutil, sys
import datasets
from codealign.loaders import load_problems

data = sys.argv[1]
# Let datasets write its own cache for the rows, then put it where a Hub download of
# deepmind/code_contests would have left it (<cache>/deepmind___code_contests/<config>/<version>/<hash>).
datasets.load_dataset("json", data_files={"test": data}, split="test")
root = datasets.config.HF_DATASETS_CACHE
built = [p for p in glob.glob(os.path.join(root, "json", "*", "*", "*")) if os.path.isdir(p)][0]
target = os.path.join(root, "deepmind___code_contests", "default", "0.0.0", os.path.basename(built))
shutil.copytree(built, target)
os.rename(os.path.join(target, "json-test.arrow"), os.path.join(target, "code_contests-test.arrow"))
datasets.config.HF_HUB_OFFLINE = True  # from here on, as on a machine without Hub access
problems = load_problems("deepmind/code_contests", split="test")
print(len(problems), problems[0].id, problems[0].split, problems[0].checker, len(problems[0].all_tests()))
"""


@needs_data
def test_hub_name_loads_through_datasets_from_the_offline_cache(tmp_path):
    """The real ``datasets.load_dataset("deepmind/code_contests")`` path, served from a local HF cache."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_DATASETS_OFFLINE": "0"}
    out = subprocess.run([sys.executable, "-c", HUB_CACHE_SCRIPT, str(DATA / "code_contests" / "train.jsonl")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["300", "846_E.", "Chemistry", "in", "Berland", "test", "codecontests", "10"]


def test_a_path_that_does_not_exist_is_said_so_not_tried_on_the_hub(tmp_path):
    for name in ("./nope.jsonl", str(tmp_path / "nope.jsonl"), "data/apps/nope.parquet", "~/nope.jsonl"):
        with pytest.raises(DatasetFormatError, match="file does not exist") as e:
            load_problems(name)
        assert "HFValidation" not in str(e.value)


def test_synthetic_dataset_is_the_split_codealign_train_uses():
    from codealign.synthetic_tasks import make_split

    split = make_split(0)
    test = load_problems("synthetic")
    assert [p.id for p in test] == [p.id for p in split.test] and all(p.split == "test" for p in test)
    assert [p.id for p in load_problems("synthetic", "heldout")] == [p.id for p in split.test]
    assert [p.id for p in load_problems("synthetic", "validation")] == [p.id for p in split.validation]
    assert [p.id for p in load_problems("synthetic", "train", limit=5)] == [p.id for p in split.train[:5]]
    assert [p.id for p in load_problems("synthetic:3")] == [p.id for p in make_split(3).test]
    with pytest.raises(DatasetFormatError, match="no split 'valid'"):
        load_problems("synthetic", "valid")
    with pytest.raises(DatasetFormatError, match="integer"):
        load_problems("synthetic:x")
