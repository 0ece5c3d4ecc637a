"""Numbers in prose come from the committed tables: the marks of ``paper_repro.prose`` on a small table written
here, and on the repository's own README, docs and notebooks (a number changed by hand is caught)."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from paper_repro import prose
from paper_repro.tables import write_csv

pytestmark = pytest.mark.unit


@pytest.fixture
def tables(tmp_path):
    df = pd.DataFrame(
        {
            "setting": ["val", "val", "val", "val"],
            "attack": ["fm", "fm", "fm", "classic"],
            "defense": ["none", "none", "none", "none"],
            "seed": [0, 1, 2, 0],
            "asr": [0.90, 0.95, 0.97, 0.5],
            "acc": [0.81, 0.82, 0.86, 0.84],
        }
    )
    write_csv(df, tmp_path / "demo_quick.csv")
    return tmp_path


def test_parse_cell_reads_table_filters_column_and_aggregate():
    c = prose.parse_cell("demo@full: attack=FM patch; rung=1 per round, share 0.5 :: asr mean x100")
    assert (c.table, c.profile, c.column, c.aggregate, c.scale) == ("demo", "full", "asr", "mean", 100.0)
    assert c.where == (("attack", "FM patch"), ("rung", "1 per round, share 0.5"))
    assert prose.parse_cell("demo: seed=0 :: acc").aggregate == "one"
    for bad, says in (
        ("demo: attack=fm", "no ':: COLUMN'"),
        ("demo: attack=fm | asr", "no ':: COLUMN'"),
        ("demo: attack :: asr", "not 'column=value'"),
        ("demo: a=b :: asr average", "not one of"),
        (": a=b :: asr", "names no table"),
    ):
        with pytest.raises(prose.MarkError, match=says):
            prose.parse_cell(bad)


def test_a_marked_number_is_checked_at_its_written_precision(tables):
    # mean of fm's asr: (0.90 + 0.95 + 0.97) / 3 = 0.94
    ok = "ASR 0.94<!-- cell demo: attack=fm :: asr mean --> and 0.940<!-- cell demo: attack=fm :: asr mean -->"
    assert prose.fix_text(ok, tables_dir=tables)[1] == []
    # median 0.95, min of acc 0.81 → 81.0 %, seed as a number (0 matches 0.0), n of rows 3
    more = (
        "0.95<!-- cell demo: attack=fm :: asr median --> 81.0<!-- cell demo: attack=fm :: acc min x100 --> "
        "0.5<!-- cell demo: attack=classic; seed=0 :: asr --> 3<!-- cell demo: attack=fm :: asr n -->"
    )
    assert prose.fix_text(more, tables_dir=tables)[1] == []
    # how far fm's ACC lies below classic's on the seeds both have (seed 0: 0.84 − 0.81), in points: 3.0
    cost = "3.0<!-- cell demo: attack=fm :: acc mean x100 below attack=classic -->"
    assert prose.fix_text(cost, tables_dir=tables)[1] == []
    assert prose.parse_cell("demo: attack=fm :: acc mean below attack=classic; seed=0").below == (
        ("attack", "classic"),
        ("seed", "0"),
    )


def test_a_number_changed_by_hand_is_caught_and_rewritten(tables):
    text = "before\nASR 0.93<!-- cell demo: attack=fm :: asr mean --> after"
    new, problems = prose.fix_text(text, "doc.md", tables_dir=tables)
    assert [(p.line, p.written, p.expected) for p in problems] == [(2, "0.93", "0.94")]
    assert "doc.md:2" in str(problems[0])
    assert new == text.replace("0.93<", "0.94<")
    assert prose.fix_text(new, tables_dir=tables)[1] == []


def test_a_mark_that_names_nothing_says_what_is_wrong(tables):
    for spec, says in (
        ("demo: attack=fm :: asr", "3 rows of demo match"),
        ("demo: attack=sig :: asr mean", "no row of demo"),
        ("demo: colour=red :: asr mean", "no column 'colour'"),
        ("demo: attack=fm :: ASR mean", "no column 'ASR'"),
    ):
        with pytest.raises(prose.MarkError, match=says):
            prose.fix_text(f"x 0.1<!-- cell {spec} -->", "doc.md", tables_dir=tables)
    with pytest.raises(prose.MarkError, match="does not exist"):
        prose.fix_text("0.1<!-- cell nosuch: a=b :: asr mean -->", tables_dir=tables)


def test_a_generated_block_is_compared_with_what_draws_and_rewritten(tables, monkeypatch, tmp_path):
    import sys
    import types

    mod = types.ModuleType("_prose_demo")
    mod.draw = lambda profile, tables_dir: f"| n |\n|---|\n| {len(pd.read_csv(tables_dir / 'demo_quick.csv'))} |"
    monkeypatch.setitem(sys.modules, "_prose_demo", mod)
    monkeypatch.setitem(prose.BLOCKS, "demo", "_prose_demo:draw")
    doc = tmp_path / "doc.md"
    doc.write_text("# t\n<!-- BEGIN generated: demo -->\n| n |\n|---|\n| 3 |\n<!-- END generated -->\ntail\n")
    problems = prose.check([doc], tables, root=tmp_path)
    assert len(problems) == 1 and "block 'demo'" in problems[0].what and problems[0].line == 2
    prose.write([doc], tables, root=tmp_path)
    assert "| 4 |" in doc.read_text() and doc.read_text().endswith("<!-- END generated -->\ntail\n")
    assert prose.check([doc], tables, root=tmp_path) == []
    with pytest.raises(prose.MarkError, match="no generated block 'nope'"):
        prose.fix_text("<!-- BEGIN generated: nope -->\n<!-- END generated -->", tables_dir=tables)


def test_unmarked_counts_the_numbers_still_typed_by_hand():
    text = (
        "ASR 0.93 and 0.94<!-- cell demo: a=b :: asr mean --> `0.5` [v0.1](x.md) 12 and 1.5.\n"
        "```\n0.7\n```\n<!-- BEGIN generated: demo -->\n0.8\n<!-- END generated -->\n"
    )
    assert prose.unmarked(text) == 2  # 0.93 and 1.5; the marked, code, link, fenced and generated ones are not


def test_every_marked_number_in_the_repository_is_what_its_table_says():
    problems = prose.check()
    assert not problems, "\n".join(map(str, problems)) + "\nrun `python -m paper_repro.prose --write`"


def test_changing_one_marked_number_in_the_docs_by_hand_fails_the_check(tmp_path):
    marked = [p for p in prose.documents() if p.suffix == ".md" and prose.CELL.search(p.read_text())]
    assert marked, "no document carries a cell mark"
    src = marked[0]
    text = src.read_text()
    m = prose.CELL.search(text)
    digits = m["value"]
    changed = digits[:-1] + ("1" if digits[-1] != "1" else "2")
    copy = tmp_path / src.name
    copy.write_text(text[: m.start()] + changed + text[m.start() + len(digits) :])
    problems = prose.check([copy], root=tmp_path)
    assert [(p.written, p.expected) for p in problems] == [(changed, digits)]
    assert re.fullmatch(r"-?\d+(\.\d+)?", changed)


def test_an_interval_is_marked_as_the_tables_seed_interval(tables):
    # fm's asr 0.90, 0.95, 0.97: mean 0.94, sd 0.0361, t(0.975, 2) = 4.303 → 0.94 ± 0.0896, clipped at 1
    ok = "[0.850<!-- cell demo: attack=fm :: asr lo -->, 1.000<!-- cell demo: attack=fm :: asr hi -->]"
    assert prose.fix_text(ok, tables_dir=tables)[1] == []
    bad = prose.fix_text("[0.860<!-- cell demo: attack=fm :: asr lo -->]", tables_dir=tables)[1]
    assert [(p.written, p.expected) for p in bad] == [("0.860", "0.850")]


def test_rounding_is_half_up_and_a_number_is_read_whole(tables):
    assert (prose.formatted(0.125, "0.00"), prose.formatted(0.9351, "0.00"), prose.formatted(-0.0001, "0.0")) == (
        "0.13",
        "0.94",
        "0.0",
    )
    assert prose.fix_text("0.936<!-- cell demo: attack=fm :: asr max -->", tables_dir=tables)[1][0].expected == "0.970"
    # the tail of a longer token is not a number: '0.3-0.5' is a range, never rewritten as '0.3' and '-0.5'
    with pytest.raises(prose.MarkError, match="no number stands right before it"):
        prose.fix_text("ASR 0.3-0.5<!-- cell demo: attack=fm :: asr mean -->", tables_dir=tables)
    with pytest.raises(prose.MarkError, match="doc.md:2: a cell mark that is not read"):
        prose.fix_text("x\nASR 0.94 <!-- cell demo: attack=fm :: asr mean -->", "doc.md", tables_dir=tables)
    with pytest.raises(prose.MarkError, match="no row of demo"):  # n of nothing is a typo, not 0
        prose.fix_text("0<!-- cell demo: attack=FM :: asr n -->", tables_dir=tables)


def test_a_block_without_its_end_is_an_error_and_lines_count_in_the_written_text(tables, monkeypatch):
    import sys
    import types

    mod = types.ModuleType("_prose_short")
    mod.draw = lambda profile, tables_dir: "one line"
    monkeypatch.setitem(sys.modules, "_prose_short", mod)
    monkeypatch.setitem(prose.BLOCKS, "short", "_prose_short:draw")
    text = "<!-- BEGIN generated: short -->\na\nb\nc\n<!-- END generated -->\n"
    text += "ASR 0.93<!-- cell demo: attack=fm :: asr mean -->"
    assert [p.line for p in prose.fix_text(text, tables_dir=tables)[1]] == [6, 1]  # the cell first, then the block
    with pytest.raises(prose.MarkError, match="no END generated of its own"):
        prose.fix_text(
            "<!-- BEGIN generated: short -->\nx\n<!-- BEGIN generated: short -->\n<!-- END generated -->",
            tables_dir=tables,
        )


def test_json_and_const_marks_read_a_committed_file_and_a_constant_of_the_code(tmp_path):
    f = tmp_path / "bench.json"
    f.write_text('{"a": {"s": 6.4, "t": 0.6}, "ratios": {"x / y": 2.5}, "runs": [{"s": 1.25}], "name": "cpu"}')
    mark = f"<!-- json {f} :: "
    const = "<!-- const paper_repro.studies.claims:WORKS -->"
    text = f'10.7{mark}a.s / a.t --> 2.5{mark}ratios."x / y" --> 125{mark}runs.0.s x100 --> 0.8{const}'
    assert prose.fix_text(text)[1] == []
    assert prose.unmarked(text) == 0
    # a number changed by hand is caught and rewritten from the file
    new, problems = prose.fix_text(f"10.6{mark}a.s / a.t -->")
    assert [(p.written, p.expected) for p in problems] == [("10.6", "10.7")] and new.startswith("10.7")
    assert prose.fix_text("0.7<!-- const paper_repro.studies.claims:WORKS -->")[1][0].expected == "0.8"
    for bad, msg in (
        (f"1{mark}a.u -->", "no 'u' in 'a.u'"),
        (f"1{mark}name -->", "not a number"),
        (f"1{mark}runs.3.s -->", "no '3'"),
        ("1<!-- json nope.json :: a -->", "does not exist"),
        (f"1<!-- json {f} a -->", "has no ':: KEY'"),
        ("1<!-- const paper_repro.nope:X -->", "cannot import"),
        ("1<!-- const WORKS -->", "is not 'module:NAME'"),
    ):
        with pytest.raises(prose.MarkError, match=re.escape(msg)):
            prose.fix_text(bad)
    with pytest.raises(prose.MarkError, match="a json mark that is not read"):
        prose.fix_text(f"x 1.0 {mark}a.s -->")
