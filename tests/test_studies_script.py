"""``scripts/studies.py`` (the README's worked studies): which studies run, in what order, and
the Markdown tables it prints. The studies themselves need the real datasets and minutes of
training; they are run by hand (see the README)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "studies.py"


@pytest.fixture
def studies(monkeypatch):
    spec = importlib.util.spec_from_file_location("studies_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    called: list[str] = []
    fake = {name: (lambda options, name=name: called.append(name) or f"<{name}>")
            for name in module.STUDIES}  # fmt: skip
    monkeypatch.setattr(module, "STUDIES", fake)
    return module, called


def test_no_study_named_runs_all_three_in_order(studies, capsys):
    module, called = studies
    module.main(["--data-dir", "/nowhere"])
    assert called == ["scaling", "semantics", "adamw"]
    assert "## semantics\n\n<semantics>" in capsys.readouterr().out


def test_named_studies_run_alone_and_unknown_ones_are_refused(studies, capsys):
    module, called = studies
    module.main(["adamw"])
    assert called == ["adamw"]
    with pytest.raises(SystemExit) as exit_info:
        module.main(["nope"])
    assert exit_info.value.code == 2 and "unknown study nope" in capsys.readouterr().err


def test_table_is_markdown(studies):
    module, _ = studies
    text = module.table(["a", "b"], [["1", "2"]])
    assert text.splitlines() == ["| a | b |", "|---|---|", "| 1 | 2 |"]
