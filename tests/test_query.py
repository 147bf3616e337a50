"""The catalog query language: every filter of --where, task files, HEST-1k queries and the API is parsed by us
into an expression over the table's columns only — no functions, subqueries or file access — and means what an
independent row-by-row evaluator says it means (a fuzz pass over the grammar)."""

from __future__ import annotations

import random

import numpy as np
import polars as pl
import pytest

from hestdata.errors import InputError
from hestdata.store.query import evaluate, filter_frame, parse, to_polars

DF = pl.DataFrame({
    "id": ["a", "b", "c", "d", "e", "f"],
    "organ": ["breast", "Breast", "skin", None, "bowel", "brain"],
    "n_spots": [10, 250, None, 3000, 42, 0],
    "pixel_size_um": [0.5, 0.25, 1.0, None, 0.73, 2.0],
    "public": [True, False, True, None, True, False],
    "patch_arrays": [["224px_0.5um"], [], ["224px_0.5um", "64px_1um"], None, ["64px_1um"], []],
})

ATTACKS = [
    "id = (SELECT column_1 FROM read_csv('/etc/passwd') LIMIT 1)",
    "id IN (SELECT * FROM read_csv('/etc/hostname'))",
    "read_csv('/etc/passwd') IS NOT NULL",
    "id = 'a'; DROP TABLE catalog",
    "organ = upper('breast')",
    "EXISTS (SELECT 1)",
    "id = 'a' UNION SELECT * FROM read_parquet('/etc/shadow')",
    "CAST(n_spots AS VARCHAR) = '10'",
    "id = \"/etc/passwd\"",
    "* = 1",
]


@pytest.mark.parametrize("text", ATTACKS)
def test_attacks_are_refused_naming_the_construct_and_read_nothing(text, monkeypatch):
    import builtins

    opened = []
    real_open = builtins.open
    monkeypatch.setattr(builtins, "open", lambda f, *a, **k: opened.append(f) or real_open(f, *a, **k))
    with pytest.raises(InputError) as e:
        filter_frame(DF, text, "the catalog")
    msg = str(e.value)
    assert text[:20] in msg or repr(text)[:20] in msg
    assert any(w in msg for w in ("not supported", "unknown column", "unsupported character", "unexpected",
                                  "expected")), msg
    assert "root:x" not in msg and not opened


def test_the_language_means_what_it_says():
    def ids(q):
        return filter_frame(DF, q, "t")["id"].to_list()

    assert ids("organ = 'breast'") == ["a"]
    assert ids("organ ILIKE 'breast'") == ["a", "b"]
    assert ids("organ LIKE 'b%'") == ["a", "e", "f"] and ids("organ LIKE 'b_ain'") == ["f"]
    assert ids("organ NOT LIKE 'b%'") == ["b", "c"]  # LIKE is case-sensitive; NULL organ: unknown, not kept
    assert ids("n_spots BETWEEN 10 AND 300") == ["a", "b", "e"]
    assert ids("n_spots >= 42 AND NOT (organ = 'bowel')") == ["b"]
    assert ids("organ IN ('skin', 'brain') OR pixel_size_um < 0.3") == ["b", "c", "f"]
    assert ids("organ NOT IN ('skin')") == ["a", "b", "e", "f"]
    assert ids("n_spots IS NULL") == ["c"] and ids("organ IS NOT NULL AND public") == ["a", "c", "e"]
    assert ids("'224px_0.5um' IN patch_arrays") == ["a", "c"] == ids("patch_arrays CONTAINS '224px_0.5um'")
    assert ids("\"n_spots\" <> 0 and id == 'd'") == ["d"]
    assert ids("organ = 'it''s'") == []
    with pytest.raises(InputError, match="unknown column 'tissue'"):
        ids("tissue = 'x'")
    with pytest.raises(InputError, match="failed"):  # a text column compared with a number
        ids("organ > 3")
    with pytest.raises(InputError, match="empty"):
        ids("   ")
    with pytest.raises(InputError, match="at most"):
        ids("id = 'a' OR " * 500 + "id = 'b'")
    assert filter_frame(DF, pl.col("id") == "a", "t")["id"].to_list() == ["a"]  # the API's polars expressions


COLS = {"organ": ["'breast'", "'Breast'", "'skin'", "'x'"], "n_spots": ["0", "10", "42", "250", "-1", "1e3"],
        "pixel_size_um": ["0.5", "0.25", "1.0", ".73"], "id": ["'a'", "'d'", "'zz'"]}
OPS = ["=", "!=", "<", "<=", ">", ">="]


def _random_condition(rng: random.Random, depth: int = 0) -> str:
    r = rng.random()
    if depth < 3 and r < 0.3:
        return f"({_random_condition(rng, depth + 1)}) {rng.choice(['AND', 'OR', 'and', 'Or'])} " \
               f"{_random_condition(rng, depth + 1)}"
    if depth < 3 and r < 0.4:
        return f"NOT {_random_condition(rng, depth + 1)}"
    col = rng.choice(list(COLS))
    kind = rng.random()
    if kind < 0.4:
        return f"{col} {rng.choice(OPS)} {rng.choice(COLS[col])}"
    if kind < 0.55:
        return f"{col} {rng.choice(['IN', 'NOT IN'])} ({', '.join(rng.sample(COLS[col], 2))})"
    if kind < 0.65:
        return f"{col} IS {rng.choice(['', 'NOT '])}NULL"
    if kind < 0.75 and col in ("organ", "id"):
        return f"{col} {rng.choice(['LIKE', 'ILIKE', 'NOT LIKE'])} '{rng.choice(['b%', '_k%', '%e%', 'a'])}'"
    if kind < 0.85 and col in ("n_spots", "pixel_size_um"):
        lo, hi = sorted(rng.sample(COLS[col], 2), key=float)
        return f"{col} BETWEEN {lo} AND {hi}"
    if kind < 0.92:
        return f"'{rng.choice(['224px_0.5um', '64px_1um'])}' IN patch_arrays"
    return rng.choice(["public", "NOT public"])


def test_fuzz_valid_conditions_agree_with_the_row_evaluator():
    rng = random.Random(7)
    rows = DF.to_dicts()
    for _ in range(400):
        q = _random_condition(rng)
        tree = parse(q, DF.schema)
        got = DF.filter(to_polars(tree))["id"].to_list()
        want = [r["id"] for r in rows if evaluate(tree, r) is True]
        assert got == want, q


def test_fuzz_garbage_is_an_input_error_never_a_crash():
    rng = np.random.default_rng(3)
    pieces = ["id", "organ", "=", "'x'", "(", ")", ",", "AND", "OR", "NOT", "IN", "LIKE", "IS", "NULL", "42", "-",
              ";", "*", "SELECT", "read_csv", "BETWEEN", "\"", "'", "<>", "CONTAINS", "patch_arrays", "TRUE", ".5"]
    for _ in range(1000):
        q = " ".join(rng.choice(pieces, size=rng.integers(1, 9)))
        try:
            filter_frame(DF, q, "t")
        except InputError:
            pass


def test_a_shared_task_file_and_a_cli_where_cannot_read_the_disk(her2st_root, tmp_path):
    import socket

    from typer.testing import CliRunner

    import hestdata
    from hestdata.cli import app

    task = tmp_path / "evil.yaml"
    task.write_text("name: evil\ntype: expression\ngroup_by: patient\n"
                    "samples: \"id = (SELECT column_1 FROM read_csv('/etc/hostname') LIMIT 1)\"\n")
    with pytest.raises(InputError, match="not supported") as e:
        hestdata.run_benchmark(her2st_root, "color-stats", task, leaderboard=False, cache_dir=tmp_path / "c")
    assert socket.gethostname() not in str(e.value).replace("/etc/hostname", "")
    r = CliRunner().invoke(app, ["download", str(her2st_root), str(tmp_path / "d"), "--where",
                                 "id = (SELECT column_1 FROM read_csv('/etc/passwd') LIMIT 1)"])
    assert r.exit_code == 1 and "root:x" not in r.output and "--where" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "d").exists()
