"""Tests of hmmrnn.chapter: a chapter's parameters checked at once, naming the bad one — an
unknown overridden name, a wrong type or range, a broken relation, a parameters cell and a
check that disagree. The cells run so far are passed as ``history`` (in a kernel: ``In``)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import numpy as np
import pytest
import yaml

from hmmrnn import chapter
from hmmrnn.chapter import ParameterError, check_parameters

PARAMS = 'seed = 0  # seed\nlength = 100\nscales = [0.5, 1.0]\nname = "linear2"\ntrain = False\nlr = 0.01\nout = None\n'
CHECK = "check_parameters(globals(), SPEC)"
SPEC = {
    "seed": chapter.Int(ge=0),
    "length": chapter.Int(ge=2),
    "scales": chapter.ListOf(chapter.Float(gt=0), increasing=True),
    "name": chapter.Choice(("linear2", "linear3")),
    "train": chapter.Bool(),
    "lr": chapter.Float(gt=0),
    "out": chapter.Optional(chapter.Str(empty=False)),
}


def namespace(injected: str | None = None) -> tuple[dict, list[str]]:
    """The kernel's globals and ``In`` after the parameters cell (and papermill's cell)."""
    ns: dict = {}
    exec(PARAMS, ns)
    history = [PARAMS]
    if injected is not None:
        exec(injected, ns)
        history.append(injected)
    return ns, history + [CHECK]


def test_defaults_pass():
    ns, history = namespace()
    assert check_parameters(ns, SPEC, history=history) is None


def test_valid_overrides_pass():
    ns, history = namespace('# Parameters\nseed = 3\nscales = [0.1, 2]\nout = "x"\nlr = 1\n')
    check_parameters(ns, SPEC, history=history)


def test_unknown_name_is_an_error_naming_it():
    ns, history = namespace("# Parameters\nsede = 1\n")
    with pytest.raises(ParameterError, match=r"unknown parameter\(s\) 'sede': this chapter's parameters are length, lr, name"):
        check_parameters(ns, SPEC, history=history)


@pytest.mark.parametrize("override, message", [
    ('seed = "notanumber"', "parameter 'seed' must be an integer >= 0, got 'notanumber'"),
    ("seed = -1", "parameter 'seed' must be an integer >= 0, got -1"),
    ("seed = True", "parameter 'seed' must be an integer >= 0, got True"),
    ("seed = 1.0", "parameter 'seed' must be an integer >= 0, got 1.0"),
    ("length = 1", "parameter 'length' must be an integer >= 2, got 1"),
    ("lr = 0", "parameter 'lr' must be a finite number > 0, got 0"),
    ('lr = float("nan")', "parameter 'lr' must be a finite number > 0, got nan"),
    ('lr = "0.1"', "parameter 'lr' must be a finite number > 0, got '0.1'"),
    ("train = 1", "parameter 'train' must be True or False, got 1"),
    ('name = "linear9"', "parameter 'name' must be one of 'linear2', 'linear3', got 'linear9'"),
    ('out = ""', "parameter 'out' must be None or a non-empty string, got ''"),
    ("scales = [1.0, 0.5]", "parameter 'scales' must be a list of at least 1 item(s), each a finite number > 0, strictly increasing"),
    ("scales = [0.5, -1]", "parameter 'scales' item 1 (-1) must be a finite number > 0"),
    ("scales = []", "parameter 'scales' must be a list of at least 1 item(s)"),
    ("scales = 0.5", "parameter 'scales' must be a list of at least 1 item(s)"),
])
def test_wrong_type_or_range_names_the_parameter(override, message):
    ns, history = namespace(f"# Parameters\n{override}\n")
    with pytest.raises(ParameterError) as info:
        check_parameters(ns, SPEC, history=history)
    assert str(info.value).startswith(message)


def test_numpy_numbers_are_numbers_but_numpy_bools_are_not_integers():
    ns, history = namespace()
    ns.update(seed=np.int64(3), lr=np.float32(0.5))
    check_parameters(ns, SPEC, history=history)
    ns["seed"] = np.bool_(True)
    with pytest.raises(ParameterError, match="'seed' must be an integer"):
        check_parameters(ns, SPEC, history=history)


def test_rules_relate_parameters():
    ns, history = namespace("# Parameters\nlength = 3\n")
    check_parameters(ns, SPEC, rules=["length > 2", "1.0 in scales"], history=history)
    with pytest.raises(ParameterError, match=r"parameters must satisfy length > seed \+ 5, got seed=0, length=3"):
        check_parameters(ns, SPEC, rules=["length > seed + 5"], history=history)


def test_parameters_cell_and_check_must_list_the_same_names():
    ns, history = namespace()
    spec = {k: v for k, v in SPEC.items() if k != "lr"}
    with pytest.raises(ParameterError, match=r"disagree: not checked: lr \(add them to the check_parameters call\)"):
        check_parameters(ns, spec, history=history)
    with pytest.raises(ParameterError, match="checked but not in the parameters cell: extra"):
        check_parameters({**ns, "extra": 1}, {**SPEC, "extra": chapter.Int()}, history=history)


def test_a_cell_that_is_not_literal_assignments_is_not_taken_for_the_parameters_cell():
    """Cells run out of order in a live session: the check does not compare with them."""
    ns, _ = namespace()
    check_parameters(ns, SPEC, history=["x = compute()\nseed = 1", CHECK])
    check_parameters(ns, SPEC, history=[CHECK, CHECK])  # the check cell run twice
    check_parameters(ns, SPEC, history=["other = 1", CHECK])  # literal, but no name in common
    check_parameters(ns, SPEC, history=[])  # outside a kernel, no history


def test_in_from_the_namespace_is_the_default_history():
    ns, history = namespace("# Parameters\nsede = 1\n")
    ns["In"] = [""] + history  # IPython's In starts with an empty entry
    with pytest.raises(ParameterError, match="unknown parameter"):
        check_parameters(ns, SPEC)


def test_a_parameter_missing_from_the_namespace():
    ns, history = namespace()
    del ns["lr"]
    with pytest.raises(ParameterError, match="parameter 'lr' is not defined"):
        check_parameters(ns, SPEC, history=[CHECK])


def test_device_and_checkpoint_kinds(tmp_path):
    device, ck = chapter.Device(), chapter.Checkpoint()
    assert [device.problem(v) for v in ("auto", "cpu", "cuda", "cuda:1")] == [None] * 4
    assert device.problem("gpu") and device.problem("cuda:x") and device.problem(0)
    assert ck.problem("linear2") is None
    assert "shipped:" in ck.problem(str(tmp_path))
    (tmp_path / "config.json").write_text("{}")
    assert ck.problem(str(tmp_path)) is None
    assert ck.problem("") and ck.problem(None)


def test_literal_assignments():
    assert chapter.literal_assignments(PARAMS) == ["seed", "length", "scales", "name", "train", "lr", "out"]
    assert chapter.literal_assignments("a = 1\nb = f(a)") is None
    assert chapter.literal_assignments("a = b = 1") is None
    assert chapter.literal_assignments("import os") is None
    assert chapter.literal_assignments("a = (") is None


# --------------------------------------------------------------------------- the chapters' check cells

BOOK = Path(__file__).resolve().parent.parent / "book"
CHAPTERS = sorted(p.stem for p in BOOK.glob("*.ipynb"))


def check_cell(stem: str) -> tuple[str, str]:
    """(the parameters cell, the cell right after it) of a chapter."""
    nb = nbformat.read(BOOK / f"{stem}.ipynb", as_version=4)
    index = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    return nb.cells[index].source, nb.cells[index + 1].source


def run_check(stem: str, overrides: dict | None) -> None:
    """Run a chapter's parameters cell, papermill's cell of ``overrides`` and its check cell, as a kernel would."""
    import hmmrnn
    from papermill.translators import PythonTranslator

    parameters, check = check_cell(stem)
    ns: dict = {"hmmrnn": hmmrnn}
    exec(parameters, ns)
    history = [parameters]
    if overrides is not None:
        injected = PythonTranslator.codify(overrides, comment="Parameters")
        exec(injected, ns)
        history.append(injected)
    ns["In"] = [*history, check]
    exec(check, ns)


@pytest.mark.parametrize("stem", CHAPTERS)
def test_every_chapter_checks_its_parameters_right_after_the_parameters_cell(stem, monkeypatch):
    monkeypatch.chdir(BOOK)  # chapters run in book/
    _, check = check_cell(stem)
    assert "chapter.check_parameters(globals()," in check
    run_check(stem, None)  # the defaults pass
    tiny = yaml.safe_load((BOOK / "params" / "tiny.yaml").read_text()) or {}
    run_check(stem, {**(tiny.get("all") or {}), **(tiny.get(stem) or {})})  # the tests' tiny sizes pass
    with pytest.raises(ParameterError, match=r"unknown parameter\(s\) 'sede'"):
        run_check(stem, {"sede": 1})


@pytest.mark.parametrize("overrides, message", [
    ({"sede": 1}, "unknown parameter(s) 'sede': this chapter's parameters are length, n_batches"),
    ({"seed": "notanumber"}, "parameter 'seed' must be an integer >= 0, got 'notanumber'"),
    ({"length": 1}, "parameter 'length' must be an integer >= 2, got 1"),
    ({"n_batches": 0}, "parameter 'n_batches' must be an integer >= 2, got 0"),
])
def test_hmm_targets_bad_parameters(overrides, message, monkeypatch):
    monkeypatch.chdir(BOOK)
    with pytest.raises(ParameterError) as info:
        run_check("hmm_targets", overrides)
    assert str(info.value).startswith(message)


@pytest.mark.parametrize("overrides, message", [
    ({"sede": 1}, "unknown parameter(s) 'sede'"),
    ({"seed": "notanumber"}, "parameter 'seed' must be an integer >= 0, got 'notanumber'"),
])
def test_papermill_run_with_a_bad_parameter_fails_at_the_check_cell(tmp_path, overrides, message):
    """A real papermill run of a chapter: it stops at the check cell, whose error names the
    parameter; no cell after it ran."""
    import papermill

    output = tmp_path / "out.ipynb"
    with pytest.raises(papermill.PapermillExecutionError) as info:
        papermill.execute_notebook(str(BOOK / "hmm_targets.ipynb"), str(output), parameters=overrides,
                                   kernel_name="python3", cwd=str(BOOK), progress_bar=False, log_output=False)
    assert info.value.ename == "ParameterError" and message in info.value.evalue
    nb = nbformat.read(output, as_version=4)
    index = next(i for i, c in enumerate(nb.cells) if "injected-parameters" in c.metadata.get("tags", []))
    code = [i for i, c in enumerate(nb.cells) if i > index and c.cell_type == "code"]  # papermill puts its error banner (markdown) before the failed cell
    failed = nb.cells[code[0]]
    assert "chapter.check_parameters" in failed.source
    assert any(o.get("ename") == "ParameterError" for o in failed.outputs)
    assert all(nb.cells[i].get("execution_count") is None for i in code[1:])


def test_rules_may_use_comprehensions():
    """A rule with a comprehension sees the parameters (a comprehension is its own scope before Python 3.12)."""
    ns = {"gains": [0.5, 1.0, 2.0, 4.0], "top": 2.0}
    spec = {"gains": chapter.ListOf(chapter.Float(gt=0)), "top": chapter.Float(gt=0)}
    check_parameters(ns, spec, rules=["len([g for g in gains if g <= top]) >= 3"])
    with pytest.raises(ParameterError, match="must satisfy"):
        check_parameters(dict(ns, top=0.6), spec, rules=["len([g for g in gains if g <= top]) >= 3"])
