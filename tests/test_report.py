"""Tests of hmmrnn.report: the pass rules, the JSON files, the tables and the book helpers."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from hmmrnn import paper, report, tolerances
from hmmrnn.report import Claim, ClaimError, ClaimRecorder, make_claim

REPO = Path(__file__).resolve().parent.parent


def judge(ours, paper, tolerance=None, kind="auto"):
    """A claim judged by its rule alone: a check against ``paper`` (beyond the paper when it is None)."""
    return make_claim("chapter", "x", ours, paper, tolerance, kind=kind, basis="beyond" if paper is None else "check")


# --------------------------------------------------------------------------- pass rules

class TestNumberRule:
    def test_inside_boundary_outside(self):
        assert judge(0.30, 0.31, 0.02).passed is True
        assert judge(0.29, 0.31, 0.02).passed is True  # |d| == tol passes
        assert judge(0.2899, 0.31, 0.02).passed is False
        assert judge(0.3301, 0.31, 0.02).passed is False
        assert judge(0.31, 0.31, 0.0).passed is True

    def test_float_rounding_at_the_boundary(self):
        # the cyclic HMM: exact 0.21425, the paper's rounded 0.2143, tolerance 5e-5
        assert judge(0.21425, 0.2143, 5e-5).passed is True
        assert judge(0.21424, 0.2143, 5e-5).passed is False

    def test_rule_and_fields(self):
        c = make_claim("ch", "my_id", np.float64(1.5), 2, 1.0, description="words", note="a note", basis="check")
        assert (c.rule, c.passed, c.result) == ("number", True, "pass")
        assert (c.chapter, c.id, c.description, c.note, c.tolerance) == ("ch", "my_id", "words", "a note", 1.0)
        assert type(c.ours) is float and type(c.paper) is int
        assert make_claim("ch", "my_id", 1, 2, 0.5, basis="check").description == "my_id"

    def test_non_finite_ours_fails(self):
        assert judge(float("nan"), 0.5, 1.0).passed is False
        assert judge(float("inf"), 0.5, 1e9).passed is False

    def test_needs_a_valid_tolerance(self):
        with pytest.raises(ClaimError, match="needs a tolerance"):
            judge(0.3, 0.31)
        for bad in (-0.1, float("nan"), float("inf"), "0.1"):
            with pytest.raises(ClaimError):
                judge(0.3, 0.31, bad)

    def test_bad_values(self):
        with pytest.raises(ClaimError, match="real number"):
            judge(True, 0.31, 0.1)  # a bool is not a number here
        with pytest.raises(ClaimError, match="real number"):
            judge("0.3", 0.31, 0.1)
        with pytest.raises(ClaimError, match="finite"):
            judge(0.3, float("nan"), 0.1)


class TestRangeRule:
    def test_inside_edges_outside(self):
        assert judge(10.0, (9.6, 10.1)).rule == "range"
        assert judge(10.0, (9.6, 10.1)).passed is True
        assert judge(9.6, (9.6, 10.1)).passed is True
        assert judge(10.1, (9.6, 10.1)).passed is True
        assert judge(10.2, (9.6, 10.1)).passed is False
        assert judge(9.5, (9.6, 10.1)).passed is False
        assert judge(10.2, (9.6, 10.1)).tolerance == 0.0

    def test_tolerance_widens_both_ends(self):
        assert judge(10.6, (9.6, 10.1), 0.5).passed is True
        assert judge(9.1, (9.6, 10.1), 0.5).passed is True
        assert judge(10.61, (9.6, 10.1), 0.5).passed is False
        assert judge(9.09, [9.6, 10.1], 0.5).passed is False  # a list works too

    def test_bad_ranges(self):
        with pytest.raises(ClaimError, match="low <= high"):
            judge(1.0, (2.0, 1.0))
        with pytest.raises(ClaimError):
            judge(1.0, (0.0, 1.0, 2.0), kind="range")
        with pytest.raises(ClaimError, match="finite"):
            judge(1.0, (0.0, float("inf")))
        with pytest.raises(ClaimError, match="real number"):
            judge(1.0, ("a", "b"))


class TestVectorRule:
    def test_every_entry_within_tolerance(self):
        c = judge(np.array([0.495, 0.0101, 0.4949]), (0.495, 0.01, 0.495), 5e-4, kind="vector")
        assert (c.rule, c.passed) == ("vector", True)
        assert c.ours == (0.495, 0.0101, 0.4949) and all(type(v) is float for v in c.ours)
        assert judge([0.495, 0.02, 0.495], (0.495, 0.01, 0.495), 5e-4, kind="vector").passed is False
        assert judge([0.495, float("nan"), 0.495], (0.495, 0.01, 0.495), 1.0, kind="vector").passed is False

    def test_never_inferred(self):
        with pytest.raises(ClaimError, match="kind='vector'"):
            judge([0.495, 0.01, 0.495], [0.495, 0.01, 0.495], 5e-4)

    def test_bad_vectors(self):
        with pytest.raises(ClaimError, match="2 numbers but paper has 3"):
            judge([1.0, 2.0], [1.0, 2.0, 3.0], 0.1, kind="vector")
        with pytest.raises(ClaimError, match="needs a tolerance"):
            judge([1.0], [1.0], kind="vector")
        with pytest.raises(ClaimError, match="empty"):
            judge([], [], 0.1, kind="vector")
        with pytest.raises(ClaimError, match="sequence"):
            judge(1.0, [1.0], 0.1, kind="vector")


class TestEqualAndBeyond:
    def test_bool_and_str(self):
        assert judge(True, True).passed is True
        assert judge(np.bool_(False), True).passed is False
        assert judge("orbit", "orbit").passed is True
        assert judge("fixed point", "orbit").passed is False
        assert judge(True, True).rule == "equal" and judge(True, True).tolerance is None

    def test_equal_errors(self):
        with pytest.raises(ClaimError, match="same type"):
            judge(1, True)
        with pytest.raises(ClaimError, match="same type"):
            judge("yes", True)
        with pytest.raises(ClaimError, match="no tolerance"):
            judge(True, True, 0.1)

    def test_beyond_the_paper(self):
        for ours in (0.29, 3, True, "orbit", [1.0, 2.0]):
            c = judge(ours, None)
            assert (c.rule, c.passed, c.result) == ("beyond", None, "beyond the paper")
        with pytest.raises(ClaimError, match="no paper value"):
            judge(0.3, 0.3, kind="beyond")
        with pytest.raises(ClaimError, match="no tolerance"):
            judge(0.3, None, 0.1)

    def test_bad_identifiers_and_kinds(self):
        with pytest.raises(ClaimError, match="kind"):
            judge(0.3, 0.3, 0.1, kind="approx")
        with pytest.raises(ClaimError, match="claim id"):
            make_claim("ch", "has space", 0.3, 0.3, 0.1, basis="check")
        with pytest.raises(ClaimError, match="chapter"):
            make_claim("../escape", "x", 0.3, 0.3, 0.1, basis="check")
        with pytest.raises(ClaimError, match="infer"):
            judge(0.3, {"a": 1}, 0.1)


# --------------------------------------------------------------------------- recorder and files

def sample_recorder() -> ClaimRecorder:
    rec = ClaimRecorder("demo", parameters={"seed": 0, "n": 10})
    rec.claim("lab", 0.068805, basis="check", paper_ref='LABILITY["linear2"]', tolerance="rounding_4_decimals",
              description="lability", note="rounded")
    rec.claim("loss", 10.4, basis="paper", paper_ref='BEST_VAL_LOSS["linear2"]', tolerance="loss_rounding", description="best loss")
    rec.claim("row", [0.9405, 0.01, 0.0495], basis="check", paper_ref="OUTPUT_TRANSITION_FIRST_ROW_LINEAR2",
              tolerance="rounding_4_decimals", kind="vector")
    rec.claim("orbit", True, basis="paper", paper_ref="ONE_WAY_ROTATION", description="closed orbit")
    rec.claim("shape", "std", basis="paper", paper_ref="RADIUS_LAW")
    rec.claim("share", 0.2878, basis="beyond", description="share from output 1")
    rec.claim("broken", float("nan"), basis="paper", paper_ref='PCA_VARIANCE["linear2"][0]', tolerance="explained_variance")
    rec.claim("pairs", 6.0, basis="paper", paper_ref="COMPLEX_PAIRS_NOMINAL", tolerance="paper_range",
              not_comparable="a sum over a window the paper does not use")
    return rec


def test_recorder_replaces_a_claim_with_the_same_id():
    rec = ClaimRecorder("demo")
    first = rec.claim("a", 1.0, basis="check", reference=1.0, tolerance="fit_lability")
    assert isinstance(first, Claim) and len(rec) == 1
    rec.claim("b", 2.0, basis="check", reference=1.0, tolerance="fit_lability")
    rec.claim("a", 5.0, basis="check", reference=1.0, tolerance="fit_lability")
    assert [c.id for c in rec.claims] == ["b", "a"] and rec.claims[-1].passed is False


def test_recorder_rejects_bad_chapters_and_parameters():
    with pytest.raises(ClaimError):
        ClaimRecorder("two words")
    with pytest.raises(ClaimError, match="JSON"):
        ClaimRecorder("demo", parameters={"rng": object()})


def test_table_text_is_stable():
    rec = ClaimRecorder("demo")
    rec.claim("lab", 0.068805, basis="check", paper_ref='LABILITY["linear2"]', tolerance="rounding_4_decimals", description="lability")
    rec.claim("loss", 10.44444, basis="paper", paper_ref='BEST_VAL_LOSS["linear2"]', tolerance="loss_rounding", description="best loss")
    rec.claim("share", -0.0, basis="beyond")
    expected = "\n".join(
        [
            "| claim     | basis  | paper       | ours    | tolerance | result           |",
            "|-----------|--------|-------------|---------|-----------|------------------|",
            "| lability  | check  | 0.0688      | 0.06881 | 5e-05     | pass             |",
            "| best loss | paper  | 9.6 to 10.1 | 10.44   | 0.05      | FAIL             |",
            "| share     | beyond | -           | 0       | -         | beyond the paper |",
            "",
            "paper: 0 pass, 1 fail, 0 not comparable; checks: 1 of 1 pass; 1 beyond the paper (not judged).",
        ]
    )
    assert rec.table() == expected
    assert ClaimRecorder("demo").table() == "(no claims recorded)"


def test_format_value():
    assert report.format_value(0.123456) == "0.1235"
    assert report.format_value(0.123456, digits=3) == "0.123"
    assert report.format_value(-0.0) == "0"
    assert report.format_value(5e-5) == "5e-05"
    assert report.format_value(3) == "3"
    assert report.format_value(True) == "yes"
    assert report.format_value((0.5, 1 / 3)) == "[0.5, 0.3333]"
    assert report.format_value(float("nan")) == "nan"
    assert report.format_value(None) == "-"
    # float noise does not decide a rounding boundary
    assert report.format_value(0.068805) == report.format_value(0.06880499999999999) == report.format_value(0.06880500000000002)


def test_json_round_trip(tmp_path):
    rec = sample_recorder()
    path = rec.save(tmp_path)
    assert path == tmp_path / "demo.json"
    data = json.loads(path.read_text())  # strict JSON: no NaN tokens
    assert data["format"] == report.FORMAT_VERSION and data["chapter"] == "demo"
    assert data["parameters"] == {"seed": 0, "n": 10}
    assert "NaN" not in path.read_text()
    loaded = report.collect(tmp_path)
    assert len(loaded) == len(rec.claims)
    for got, want in zip(loaded, rec.claims):
        if want.id == "broken":
            assert math.isnan(got.ours) and got.passed is False
            assert got.to_dict() == want.to_dict()
        else:
            assert got == want
    assert report.chapter_parameters(tmp_path) == {"demo": {"seed": 0, "n": 10}}
    assert isinstance(loaded[1].paper, tuple) and isinstance(loaded[2].ours, tuple)
    assert path.read_text() == rec.save(tmp_path).read_text()  # deterministic text


def test_save_is_atomic(tmp_path, monkeypatch):
    rec = sample_recorder()
    path = rec.save(tmp_path)
    before = path.read_text()
    rec.claim("new", 1.0, basis="check", reference=1.0, tolerance="count")

    def fail(*args, **kwargs):
        raise OSError("disk full")

    import hmmrnn.checkpoints

    monkeypatch.setattr(hmmrnn.checkpoints.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        rec.save(tmp_path)
    assert path.read_text() == before  # the old file is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo.json"]  # no temporary left


def test_default_folder_is_the_repository_not_the_cwd(tmp_path, monkeypatch):
    monkeypatch.delenv("HMMRNN_CLAIMS_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    assert report.repository_root() == REPO
    assert report.default_claims_folder() == REPO / "book" / "claims"
    monkeypatch.setenv("HMMRNN_CLAIMS_DIR", str(tmp_path / "elsewhere"))
    assert report.default_claims_folder() == (tmp_path / "elsewhere").resolve()
    path = ClaimRecorder("demo").save()
    assert path == (tmp_path / "elsewhere" / "demo.json").resolve()


def test_collect_order_and_missing_folder(tmp_path):
    assert report.collect(tmp_path / "nothing") == []
    for chapter in ("b_chapter", "a_chapter", "c_chapter"):
        rec = ClaimRecorder(chapter)
        rec.claim("x", 1.0, basis="check", reference=1.0, tolerance="count")
        rec.save(tmp_path)
    assert [c.chapter for c in report.collect(tmp_path)] == ["a_chapter", "b_chapter", "c_chapter"]
    ordered = report.collect(tmp_path, order=["c_chapter", "b_chapter"])
    assert [c.chapter for c in ordered] == ["c_chapter", "b_chapter", "a_chapter"]


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d.update(format=99), "format"),
        (lambda d: d.update(chapter="other"), "expected 'demo'"),
        (lambda d: d["claims"][0].update(passed=False), "disagrees"),
        (lambda d: d["claims"][0].update(chapter="other"), "belongs to"),
        (lambda d: d["claims"][0].update(extra=1), "unknown fields"),
        (lambda d: d["claims"][0].pop("ours"), "lacks"),
        (lambda d: d["claims"].append(dict(d["claims"][0])), "duplicate"),
        (lambda d: d["claims"][0].update(tolerance=-1), "tolerance"),
    ],
)
def test_collect_rejects_bad_files(tmp_path, edit, message):
    path = sample_recorder().save(tmp_path)
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    with pytest.raises(ClaimError, match=message) as info:
        report.collect(tmp_path)
    assert "demo.json" in str(info.value)


def test_collect_rejects_unreadable_json(tmp_path):
    (tmp_path / "demo.json").write_text("{not json")
    with pytest.raises(ClaimError, match="demo.json"):
        report.collect(tmp_path)


def test_render_html_and_markdown():
    claims = sample_recorder().claims + [make_claim("other", "y", 1.0, 2.0, 0.1, description="a < b & c", basis="check")]
    page = report.render(claims)
    assert page.startswith('<table class="hmmrnn-claims">')
    for header in ("chapter", "claim", "basis", "paper", "ours", "tolerance", "result"):
        assert f"<th>{header}</th>" in page
    assert "a &lt; b &amp; c" in page and "a < b" not in page
    assert page.count(">pass<") == 3 and page.count(">FAIL<") == 4 and page.count(">beyond the paper<") == 1
    assert page.count(">not comparable<") == 1
    assert "paper: 1 pass, 3 fail, 1 not comparable; checks: 2 of 3 pass; 1 beyond the paper" in page
    assert 'title="rounded | paper value: hmmrnn.paper.LABILITY[&quot;linear2&quot;] | tolerance rounding_4_decimals: half' in page
    assert "not comparable: a sum over a window the paper does not use" in page
    text = report.render(claims, fmt="markdown")
    assert text.splitlines()[0].split("|")[1].strip() == "chapter"
    assert "| other " in text and "9.6 to 10.1" in text
    assert report.render([]) == "<p>(no claims found)</p>"
    with pytest.raises(ValueError):
        report.render(claims, fmt="pdf")
    assert report.counts(claims) == {"total": 9, "passed": 3, "failed": 4, "not_comparable": 1, "beyond": 1}
    only_checks = [c for c in claims if c.basis == "check"]
    assert report.render(only_checks).endswith("<p>checks: 2 of 3 pass.</p>")
    assert ClaimRecorder("demo").table() == "(no claims recorded)"


# --------------------------------------------------------------------------- book helpers

def test_book_chapters_follow_the_toc():
    chapters = report.book_chapters(REPO)
    assert chapters[0] == REPO / "book" / "intro.md"
    assert chapters[-1] == REPO / "book" / "reproduction_report.ipynb"
    assert all(p.is_file() for p in chapters)
    assert len(set(chapters)) == len(chapters)


def test_book_chapters_reports_missing_files(tmp_path):
    (tmp_path / "book").mkdir()
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: book/intro\nchapters:\n  - file: book/missing\n")
    (tmp_path / "book" / "intro.md").write_text("# Intro\n")
    with pytest.raises(FileNotFoundError, match="book/missing"):
        report.book_chapters(tmp_path)


def test_sphinx_hooks_read_the_report_last_and_always():
    names = ["book/reproduction_report"]
    app = SimpleNamespace(config=SimpleNamespace(hmmrnn_report_docnames=names),
                          env=SimpleNamespace(found_docs={"book/intro", "book/zeta", "book/reproduction_report"}))
    docnames = ["book/intro", "book/reproduction_report", "book/zeta"]
    report._read_report_last(app, app.env, docnames)
    assert docnames == ["book/intro", "book/zeta", "book/reproduction_report"]
    assert report._always_outdated(app, app.env, set(), set(), set()) == names
    assert report._always_outdated(app, app.env, set(), set(names), set()) == []


def test_the_report_notebook_is_forced_to_execute():
    import nbformat

    nb = nbformat.read(REPO / "book" / "reproduction_report.ipynb", as_version=4)
    assert nb.metadata.get("mystnb", {}).get("execution_mode") == "force"
    assert os.path.exists(REPO / "_config.yml")
    assert "hmmrnn.report" in (REPO / "_config.yml").read_text()


# --------------------------------------------------------------------------- basis, paper_ref, tolerances, headline

class TestBasisAndPaperRef:
    def test_paper_value_is_the_value_of_paper_ref(self):
        c = make_claim("ch", "x", 9.7, None, basis="paper", paper_ref='BEST_VAL_LOSS["linear2"]', tolerance_key="loss_rounding")
        assert c.paper == paper.BEST_VAL_LOSS["linear2"] and c.tolerance == tolerances.TOLERANCES["loss_rounding"].value
        assert (c.rule, c.passed, c.basis) == ("range", True, "paper")
        assert report.resolve_paper_ref('PCA_VARIANCE["linear3"][1]') == paper.PCA_VARIANCE["linear3"][1]
        assert report.resolve_paper_ref("(0.0, TRANSITION_ERROR_MAX)") == (0.0, paper.TRANSITION_ERROR_MAX)
        with pytest.raises(ClaimError, match="is not the value of paper_ref"):
            make_claim("ch", "x", 9.7, (9.0, 10.1), basis="paper", paper_ref='BEST_VAL_LOSS["linear2"]', tolerance_key="loss_rounding")

    def test_a_paper_claim_needs_paper_ref_and_a_named_tolerance(self):
        with pytest.raises(ClaimError, match="paper_ref"):
            make_claim("ch", "x", 0.3, 0.31, 0.02, basis="paper")
        with pytest.raises(ClaimError, match="key of hmmrnn.tolerances"):
            make_claim("ch", "x", 9.7, None, 0.1, basis="paper", paper_ref='BEST_VAL_LOSS["linear2"]')
        rec = ClaimRecorder("demo")
        with pytest.raises(ClaimError, match="key of hmmrnn.tolerances"):
            rec.claim("x", 9.7, basis="paper", paper_ref='BEST_VAL_LOSS["linear2"]', tolerance=0.1)
        with pytest.raises(ClaimError, match="paper_ref"):
            rec.claim("x", 9.7, basis="paper", reference=(9.6, 10.1), tolerance="loss_rounding")
        with pytest.raises(ClaimError, match="no tolerance 'nope'"):
            rec.claim("x", 9.7, basis="paper", paper_ref='BEST_VAL_LOSS["linear2"]', tolerance="nope")
        with pytest.raises(ClaimError, match="is not 'epoch'"):
            make_claim("ch", "x", 80, None, 30, basis="paper", paper_ref='BIFURCATION_EPOCH["linear2"]', tolerance_key="epoch")
        with pytest.raises(ClaimError, match="computed"):
            make_claim("ch", "x", 41.0, None, basis="paper", paper_ref='NOISE_SENSITIVITY_GAMMA1["transition"]', tolerance_key="ci95")
        c = rec.claim("ci", 41.0, basis="paper", paper_ref='NOISE_SENSITIVITY_GAMMA1["transition"]',
                      tolerance=tolerances.computed("ci95", 1.5))
        assert (c.tolerance, c.tolerance_key, c.passed) == (1.5, "ci95", True)

    @pytest.mark.parametrize("ref, message", [
        ("__import__('os')", "only names"),
        ("BEST_VAL_LOSS.get('linear2')", "only names"),
        ("NOT_A_NAME", "does not resolve"),
        ('BEST_VAL_LOSS["linear9"]', "does not resolve"),
        ("BEST_VAL_LOSS[", "not an expression"),
        ("", "non-empty"),
    ])
    def test_bad_paper_refs(self, ref, message):
        with pytest.raises(ClaimError, match=message):
            report.resolve_paper_ref(ref)

    def test_bases(self):
        with pytest.raises(ClaimError, match="basis"):
            make_claim("ch", "x", 0.3, 0.31, 0.02, basis="paperish")
        with pytest.raises(ClaimError, match="no paper value"):
            make_claim("ch", "x", 0.3, None, basis="beyond", paper_ref="LABILITY['linear2']")
        with pytest.raises(ClaimError, match="reference value"):
            make_claim("ch", "x", 0.3, None, basis="check")
        with pytest.raises(ClaimError, match="'beyond' claim has no paper value"):
            make_claim("ch", "x", 0.3, 0.3, basis="check", kind="beyond")
        with pytest.raises(ClaimError, match="only a 'check'"):
            ClaimRecorder("demo").claim("x", True, basis="paper", paper_ref="ONE_WAY_ROTATION", reference=True)
        check = ClaimRecorder("demo").claim("x", True, basis="check", reference=True)
        assert (check.basis, check.paper_ref, check.passed) == ("check", None, True)

    def test_not_comparable_is_shown_never_judged(self):
        c = make_claim("ch", "x", 6.0, None, basis="paper", paper_ref="COMPLEX_PAIRS_NOMINAL", tolerance_key="paper_range",
                       not_comparable="a sum over a 21-step window")
        assert (c.passed, c.result, c.paper) == (None, "not comparable", paper.COMPLEX_PAIRS_NOMINAL)
        with pytest.raises(ClaimError, match="only a 'paper'"):
            make_claim("ch", "x", 6.0, (6, 9), basis="check", not_comparable="why")

    @pytest.mark.parametrize("edit, message", [
        (lambda c: c.update(paper=[9.0, 10.1]), "is not the value of paper_ref"),
        (lambda c: c.update(paper_ref='BEST_VAL_LOSS["linear3"]'), "is not the value of paper_ref"),
        (lambda c: c.pop("basis"), "no basis"),
        (lambda c: c.update(tolerance=0.5), "is not 'loss_rounding'"),
        (lambda c: c.update(not_comparable="why", passed=None) or c.update(basis="check"), "only a 'paper'"),
    ])
    def test_files_are_checked_against_hmmrnn_paper(self, tmp_path, edit, message):
        rec = ClaimRecorder("demo")
        rec.claim("loss", 10.4, basis="paper", paper_ref='BEST_VAL_LOSS["linear2"]', tolerance="loss_rounding")
        path = rec.save(tmp_path)
        data = json.loads(path.read_text())
        edit(data["claims"][0])
        path.write_text(json.dumps(data))
        with pytest.raises(ClaimError, match=message):
            report.collect(tmp_path)


def test_tolerances_table():
    for key, tol in tolerances.TOLERANCES.items():
        assert tol.key == key and len(tol.reason) > 20
        assert tol.value is None or (math.isfinite(tol.value) and tol.value >= 0)
    assert tolerances.tolerance("epoch").value == 20.0
    with pytest.raises(KeyError, match="computed"):
        tolerances.tolerance("ci95")
    with pytest.raises(KeyError, match="fixed"):
        tolerances.computed("epoch", 3.0)
    with pytest.raises(KeyError, match="no tolerance"):
        tolerances.computed("nope", 3.0)
    with pytest.raises(ValueError):
        tolerances.computed("ci95", float("nan"))


def test_headline_counts_paper_findings_once_by_chapter():
    first, second = ClaimRecorder("first"), ClaimRecorder("second")
    # one quantity in two chapters: counted once, in the first chapter; it fails if either claim fails
    first.claim("loss", 9.7, basis="paper", paper_ref='BEST_VAL_LOSS["linear2"]', tolerance="loss_rounding", quantity="best_val_loss:linear2")
    second.claim("loss_linear2", 9.7, basis="paper", paper_ref="BEST_VAL_LOSS['linear2']", tolerance="loss_rounding",
                 quantity="best_val_loss:linear2")
    first.claim("pc1", 59.8, basis="paper", paper_ref='PCA_VARIANCE["linear2"][0]', tolerance="explained_variance", quantity="pc1:linear2")
    second.claim("pc1_linear2", 50.0, basis="paper", paper_ref='PCA_VARIANCE["linear2"][0]', tolerance="explained_variance",
                 quantity="pc1:linear2")
    second.claim("pairs", 6.0, basis="paper", paper_ref="COMPLEX_PAIRS_NOMINAL", tolerance="paper_range", not_comparable="unit")
    second.claim("epoch", 80, basis="paper", paper_ref='BIFURCATION_EPOCH["linear2"]', tolerance="epoch")
    # checks and beyond-the-paper results never count
    second.claim("exact", 0.0688, basis="check", paper_ref='LABILITY["linear2"]', tolerance="rounding_4_decimals")
    second.claim("more", 1.0, basis="beyond")
    rows = report.headline(first.claims + second.claims)
    assert [(r.chapter, r.passed, r.failed, r.not_comparable) for r in rows] == [("first", 1, 1, 0), ("second", 1, 0, 1)]
    assert rows[0].quantities == ("best_val_loss:linear2", "pc1:linear2")
    text = report.render_headline(first.claims + second.claims)
    assert text.splitlines()[0].split("|")[1:5] == [" chapter      ", " pass ", " fail ", " not comparable "]
    assert "| all chapters | 2    | 1    | 1              | 4        |" in text
    assert report.render_headline(first.claims, fmt="html").startswith('<table class="hmmrnn-headline">')
    # one quantity claimed against two different paper values is an error
    second.claim("loss_linear2", 4.0, basis="paper", paper_ref='BEST_VAL_LOSS["linear3"]', tolerance="loss_rounding",
                 quantity="best_val_loss:linear2")
    with pytest.raises(ClaimError, match="different paper values"):
        report.headline(first.claims + second.claims)



def test_the_recorder_takes_no_typed_paper_value():
    rec = ClaimRecorder("demo")
    with pytest.raises(TypeError):
        rec.claim("x", 0.3, 0.31, 0.02)  # a typed paper value and tolerance: refused
    with pytest.raises(TypeError):
        rec.claim("x", 0.3)  # no basis


BOOK_CLAIMS = REPO / "book" / "claims"


def test_the_books_claims_have_a_basis_and_their_paper_values_come_from_hmmrnn_paper():
    claims = report.collect(BOOK_CLAIMS)  # re-resolves every paper_ref and re-judges every claim
    assert claims
    by_id = {(c.chapter, c.id): c for c in claims}
    assert all(c.basis in report.BASES for c in claims)
    # the targets chapter tests no finding of the paper: its judged claims are checks, the rest beyond the paper
    targets = [c for c in claims if c.chapter == "hmm_targets"]
    assert targets and all(c.basis == ("beyond" if c.rule == "beyond" else "check") for c in targets)
    assert by_id["training", "samples_exactly_one_hot"].basis == "check"
    assert by_id["kick_neurons", "n_groups"].basis == "check"
    for c in claims:
        if c.basis == "paper":
            assert c.paper_ref and report._same_value(report.resolve_paper_ref(c.paper_ref), c.paper)
            assert c.tolerance is None or c.tolerance_key is not None
    report.headline(claims)  # one paper value per quantity


def test_readme_and_intro_quote_the_current_headline():
    claims = report.collect(BOOK_CLAIMS, order=report.book_order(REPO))
    table = report.render_headline(claims)
    for doc in ("README.md", "book/intro.md"):
        assert table in (REPO / doc).read_text(), (
            f"{doc} does not quote the headline of book/claims; paste the output of "
            "python -c 'from hmmrnn import report; print(report.render_headline(report.collect(order=report.book_order())))'"
        )


def test_summary_html_marks_failing_rows_and_fits_the_page():
    rec = ClaimRecorder("demo")
    rec.claim("lab", 0.068805, basis="check", paper_ref='LABILITY["linear2"]', tolerance="rounding_4_decimals", description="lability")
    rec.claim("loss", 10.44444, basis="paper", paper_ref='BEST_VAL_LOSS["linear2"]', tolerance="loss_rounding", description="best loss")
    rec.claim("share", -0.0, basis="beyond", description="a share < 1 & more " + "long text " * 30)
    page = rec.summary()._repr_html_()
    assert page == rec.summary()._repr_html_()  # deterministic: no random ids
    assert "max-width:1280px" in page and "table-layout:fixed" in page and "overflow-wrap:break-word" in page
    rows = [line for line in page.splitlines() if line.startswith("<tr class=")]
    assert len(rows) == 3
    assert [r.split('"')[1] for r in rows] == ["claim-pass", "claim-fail", "claim-beyond"]
    assert "tr.claim-fail td{background:" in page
    for description in ("lability", "best loss", "a share &lt; 1 &amp; more"):
        assert page.count(f">{description}") == 1
    assert ">10.44<" in page and ">9.6 to 10.1<" in page and ">0.06881<" in page  # the table()'s digits
    assert "paper: 0 pass, 1 fail, 0 not comparable; checks: 1 of 1 pass; 1 beyond the paper (not judged)." in page
    assert ClaimRecorder("demo").summary()._repr_html_() == "<p>(no claims recorded)</p>"


def test_summary_text_is_short_and_stable():
    rec = ClaimRecorder("demo")
    rec.claim("lab", 0.068805, basis="check", paper_ref='LABILITY["linear2"]', tolerance="rounding_4_decimals", description="lability")
    rec.claim("loss", 10.44444, basis="paper", paper_ref='BEST_VAL_LOSS["linear2"]', tolerance="loss_rounding", description="best loss")
    rec.claim("share", -0.0, basis="beyond")
    assert repr(rec.summary()) == "\n".join(
        [
            "pass: lab = 0.06881 (paper 0.0688, tolerance 5e-05)",
            "FAIL: loss = 10.44 (paper 9.6 to 10.1, tolerance 0.05)",
            "beyond the paper: share = 0",
            "",
            "paper: 0 pass, 1 fail, 0 not comparable; checks: 1 of 1 pass; 1 beyond the paper (not judged).",
        ]
    )
    assert repr(ClaimRecorder("demo").summary()) == "(no claims recorded)"
