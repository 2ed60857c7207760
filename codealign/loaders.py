"""Dataset rows -> :class:`~codealign.problems.Problem`.

Three row formats are recognised from their columns, whether the rows come from the Hugging Face Hub
(``datasets.load_dataset``), a local JSONL/parquet file, or a directory of them:

==============  ================================================  =========================
format          columns that identify it                          checker
==============  ================================================  =========================
CodeContests    ``name``, ``description``, ``public_tests``       ``codecontests``
APPS            ``problem_id``, ``question``, ``input_output``    ``apps``
HumanEval       ``task_id``, ``prompt``, ``entry_point``, ``test`` ``tokens`` (asserts decide)
==============  ================================================  =========================

``load_problems(None)`` (or ``"embedded"``) gives the small dataset shipped in ``codealign/data``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from sandbox.spec import TestCase

from codealign.problems import DEFAULT_MEMORY_LIMIT_MB, DEFAULT_TIME_LIMIT_S, Problem

EMBEDDED_DIR = Path(__file__).resolve().parent / "data"
EMBEDDED_NAMES = ("embedded", "default")

#: Hub names known to hold these formats (any other hub name is tried too; its columns decide).
HUB_ALIASES = {
    "code_contests": "deepmind/code_contests",
    "codecontests": "deepmind/code_contests",
    "apps": "codeparrot/apps",
    "humaneval": "openai/openai_humaneval",
    "openai_humaneval": "openai/openai_humaneval",
}

# CodeContests' `difficulty` enum (the dataset's proto): 0 unknown, 1-5 EASY..HARDEST, 6 EXTERNAL,
# 7.. the Codeforces problem letter A, B, C...
_CC_DIFFICULTY_NAMES = {0: "UNKNOWN_DIFFICULTY", 1: "EASY", 2: "MEDIUM", 3: "HARD", 4: "HARDER", 5: "HARDEST", 6: "EXTERNAL"}
_CC_DIFFICULTY_NAMES.update({7 + i: chr(ord("A") + i) for i in range(22)})
_CC_LANGUAGES = {0: "unknown", 1: "python2", 2: "cpp", 3: "python", 4: "java"}


class DatasetFormatError(ValueError):
    """A row or file that is not in any recognised format."""


def detect_format(row: Mapping[str, Any]) -> str:
    """'codecontests', 'apps' or 'humaneval', from a row's columns."""
    keys = set(row)
    if {"name", "description", "public_tests"} <= keys:
        return "codecontests"
    if {"problem_id", "question", "input_output"} <= keys:
        return "apps"
    if {"task_id", "prompt", "entry_point", "test"} <= keys:
        return "humaneval"
    raise DatasetFormatError(
        f"unrecognised row with columns {sorted(keys)}; expected CodeContests (name, description, "
        "public_tests, ...), APPS (problem_id, question, input_output, ...) or HumanEval "
        "(task_id, prompt, entry_point, test) rows"
    )


def _tests(block: Mapping[str, Any] | None) -> list[TestCase]:
    if not block:
        return []
    ins, outs = block.get("input") or [], block.get("output") or []
    return [TestCase(input=i, output=o) for i, o in zip(ins, outs)]


def _by_language(block: Mapping[str, Any] | None) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    if not block:
        return out
    for lang, code in zip(block.get("language") or [], block.get("solution") or []):
        out.setdefault(_CC_LANGUAGES.get(int(lang), str(lang)), []).append(code)
    return out


def _cc_time_limit(value: Any) -> float:
    """CodeContests' ``time_limit`` ({seconds, nanos} or null) in seconds; null -> the default."""
    if not value:
        return DEFAULT_TIME_LIMIT_S
    seconds = float(value.get("seconds") or 0) + float(value.get("nanos") or 0) / 1e9
    return seconds if seconds > 0 else DEFAULT_TIME_LIMIT_S


def problem_from_codecontests(row: Mapping[str, Any], split: str) -> Problem:
    mem = int(row.get("memory_limit_bytes") or 0)
    difficulty = row.get("difficulty")
    return Problem(
        id=str(row["name"]),
        source="codecontests",
        split=split,
        statement=row["description"],
        public_tests=_tests(row.get("public_tests")),
        private_tests=_tests(row.get("private_tests")),
        generated_tests=_tests(row.get("generated_tests")),
        time_limit_s=_cc_time_limit(row.get("time_limit")),
        memory_limit_mb=mem // (1 << 20) if mem > 0 else DEFAULT_MEMORY_LIMIT_MB,
        difficulty=None if difficulty is None else _CC_DIFFICULTY_NAMES.get(int(difficulty), str(difficulty)),
        solutions=_by_language(row.get("solutions")),
        incorrect_solutions=_by_language(row.get("incorrect_solutions")),
        checker="codecontests",
        metadata={k: row[k] for k in ("source", "cf_contest_id", "cf_index", "cf_rating", "cf_tags") if k in row},
    )


def _json_field(value: Any, what: str, pid: str) -> Any:
    if value is None or value == "":
        return None
    if isinstance(value, (dict, list)):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as e:
        raise DatasetFormatError(f"APPS problem {pid}: field {what!r} is not valid JSON ({e})") from e


def problem_from_apps(row: Mapping[str, Any], split: str) -> Problem:
    pid = str(row["problem_id"])
    io = _json_field(row.get("input_output"), "input_output", pid) or {}
    solutions = _json_field(row.get("solutions"), "solutions", pid) or []
    fn_name = io.get("fn_name")
    tests = [TestCase(input=i, output=o) for i, o in zip(io.get("inputs") or [], io.get("outputs") or [])]
    question = row["question"]
    # APPS has no public/private split; the stdin tests quoted in the statement's examples are the
    # public ones (what a solver sees), so AlphaCode-style filtering has something to filter on.
    public = [t for t in tests if fn_name is None and isinstance(t.input, str) and t.input.strip() and t.input.strip() in question]
    public_ids = {id(t) for t in public}
    return Problem(
        id=pid,
        source="apps",
        split=split,
        statement=question,
        starter_code=row.get("starter_code") or "",
        fn_name=fn_name,
        public_tests=public,
        private_tests=[t for t in tests if id(t) not in public_ids],
        difficulty=row.get("difficulty") or None,
        solutions={"python": list(solutions)} if solutions else {},
        checker="apps",
        metadata={"url": row["url"]} if row.get("url") else {},
    )


def problem_from_humaneval(row: Mapping[str, Any], split: str) -> Problem:
    """HumanEval: the prompt is the starter code; ``check(entry_point)`` after the test code decides.

    The run gets one stdin test with empty input and empty expected output: a failing assert is a
    runtime error, so the sample passes exactly when ``check`` passes.
    """
    entry = row["entry_point"]
    solution = row.get("canonical_solution")
    return Problem(
        id=str(row["task_id"]),
        source="humaneval",
        split=split,
        statement=row["prompt"],
        starter_code=row["prompt"],
        fn_name=entry,
        private_tests=[TestCase(input="", output="")],
        solutions={"python": [row["prompt"] + solution]} if solution else {},
        checker="tokens",
        test_code=f"{row['test']}\n\ncheck({entry})\n",
    )


_CONVERTERS = {"codecontests": problem_from_codecontests, "apps": problem_from_apps, "humaneval": problem_from_humaneval}


def problems_from_rows(rows: Iterable[Mapping[str, Any]], split: str = "train") -> list[Problem]:
    """Convert rows of any recognised format (detected per row)."""
    out = []
    for row in rows:
        out.append(_CONVERTERS[detect_format(row)](row, split))
    return out


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise DatasetFormatError(f"{path}:{lineno}: not valid JSON ({e})") from e
    return rows


def _read_file(path: Path) -> list[dict]:
    name = path.name.lower()
    if name.endswith((".jsonl", ".json", ".jsonl.gz")):
        if name.endswith(".gz"):
            import gzip

            with gzip.open(path, "rt", encoding="utf-8") as f:
                return [json.loads(line) for line in f if line.strip()]
        return _read_jsonl(path)
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    raise DatasetFormatError(f"{path}: unsupported file type (use .jsonl, .jsonl.gz or .parquet)")


def _dataset_files(directory: Path, split: str | None) -> list[tuple[Path, str]]:
    files = sorted(p for p in directory.rglob("*") if p.is_file() and p.name.lower().endswith((".jsonl", ".jsonl.gz", ".parquet")))
    if split is not None:
        chosen = [p for p in files if p.name.split(".")[0].split("-")[0] == split]
        if chosen:
            return [(p, split) for p in chosen]
    return [(p, split or p.name.split(".")[0].split("-")[0]) for p in files]


def load_problems(name_or_path: str | Path | None = None, split: str | None = None, *, limit: int | None = None) -> list[Problem]:
    """Load problems from a local file or folder, a Hub dataset, or the embedded default.

    - ``None``, ``"embedded"`` or ``"default"``: the embedded dataset in ``codealign/data``.
    - ``"synthetic"`` or ``"synthetic:SEED"``: the generated task family ``codealign train`` learns on
      (:func:`codealign.synthetic_tasks.split_problems`; split ``"test"``, the held-out tasks ``train``
      reports, by default; ``"validation"`` for tuning).
    - A name that looks like a local path (starts with ``.``, ``/`` or ``~``, or ends in a data file
      extension) but does not exist: :class:`DatasetFormatError` saying so.
    - An existing path: a ``.jsonl``/``.jsonl.gz``/``.parquet`` file, or a folder of them (with
      ``split``, files named ``<split>.jsonl`` / ``<split>-*.parquet`` are preferred). The split
      defaults to the file name's stem.
    - Anything else: ``datasets.load_dataset(name, split=split or "test")`` (short names ``apps``,
      ``code_contests``, ``humaneval`` map to the Hub ids). Works offline when the HF cache holds it.

    ``limit`` keeps the first ``limit`` problems. Problem ids must be unique within the result.
    """
    name = None if name_or_path is None else str(name_or_path)
    if name is None or name in EMBEDDED_NAMES:
        problems = _load_local(EMBEDDED_DIR, split)
    elif name == "synthetic" or name.startswith("synthetic:"):
        problems = _load_synthetic(name, split)
    elif Path(name).expanduser().exists():
        problems = _load_local(Path(name).expanduser(), split)
    elif _looks_like_path(name):
        raise DatasetFormatError(f"{name}: file does not exist (a local dataset must be an existing .jsonl, .jsonl.gz or .parquet file or a folder of them)")
    else:
        problems = _load_hub(name, split or "test")
    if limit is not None:
        problems = problems[:limit]
    seen: set[str] = set()
    dupes = [p.id for p in problems if p.id in seen or seen.add(p.id)]
    if dupes:
        raise DatasetFormatError(f"duplicate problem ids in {name_or_path}: {dupes[:5]}")
    return problems


def _looks_like_path(name: str) -> bool:
    """A name the user meant as a local path (Hub ids are ``name`` or ``org/name``, never these)."""
    return name.startswith((".", "/", "~")) or name.lower().endswith((".jsonl", ".json", ".jsonl.gz", ".parquet")) or name.count("/") > 1


def _load_synthetic(name: str, split: str | None) -> list[Problem]:
    """``synthetic`` / ``synthetic:SEED``: the generated task family of ``codealign train`` (default split: test)."""
    from codealign.synthetic_tasks import split_problems

    seed_text = name.partition(":")[2] or "0"
    try:
        seed = int(seed_text)
    except ValueError:
        raise DatasetFormatError(f"{name!r}: the synthetic family's seed must be an integer, e.g. synthetic:3") from None
    try:
        return split_problems(split or "test", seed)
    except ValueError as e:
        raise DatasetFormatError(str(e)) from e


def _load_local(path: Path, split: str | None) -> list[Problem]:
    pairs = _dataset_files(path, split) if path.is_dir() else [(path, split or path.name.split(".")[0].split("-")[0])]
    if not pairs:
        raise DatasetFormatError(f"{path}: no .jsonl or .parquet files found")
    problems: list[Problem] = []
    for file, file_split in pairs:
        problems.extend(problems_from_rows(_read_file(file), file_split))
    return problems


def _load_hub(name: str, split: str) -> list[Problem]:
    import datasets

    hub_id = HUB_ALIASES.get(name.lower(), name)
    try:
        ds = datasets.load_dataset(hub_id, split=split)
    except Exception as e:  # noqa: BLE001 - re-raised with what the user can do about it
        raise DatasetFormatError(
            f"could not load {hub_id!r} split {split!r} with datasets.load_dataset ({type(e).__name__}: {e}). "
            "It is neither an existing local path nor a dataset in the Hugging Face cache; with no Hub access, "
            "pass a local .jsonl/.parquet file or folder in the dataset's row format."
        ) from e
    return problems_from_rows(ds, split)
