"""`genpref export` finds formats in the registry the modalities fill (genpref.exporters), by the run's model.kind."""

import pytest

from genpref import exporters
from genpref.cli import main
from genpref.errors import UserError


def run_dir(tmp_path, kind):
    run = tmp_path / kind
    run.mkdir()
    (run / "config.yaml").write_text(f"model:\n  kind: {kind}\n")
    return run


@pytest.mark.parametrize("kind, default, valid", [
    ("tiny-sd", "diffusers", ["diffusers", "kohya"]),
    ("sdxl", "diffusers", ["diffusers", "kohya"]),
    ("mdm", "released", ["released"]),
    ("tiny-mld", "released", ["released"]),
])
def test_each_model_kind_gets_its_modalitys_formats_and_default(kind, default, valid):
    assert exporters.for_kind(kind, None).name == default
    assert [name for name, e in exporters.load_all().items() if e.accepts(kind)] == valid
    assert all(exporters.for_kind(kind, name).name == name for name in valid)


def test_a_format_of_another_modality_is_refused_listing_the_valid_ones():
    with pytest.raises(UserError) as err:
        exporters.for_kind("tiny-mdm", "kohya")
    assert str(err.value) == ("--format 'kohya' (a format of other model kinds): model.kind 'tiny-mdm' exports as "
                              "released (the released MDM / MLD layouts with Mean/Std)")


def test_an_unknown_format_on_the_command_line_names_the_valid_ones(tmp_path, capsys):
    assert main(["export", str(run_dir(tmp_path, "tiny-sd")), "--format", "safetensors", "--out", str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err
    assert err.strip() == ("genpref: error: --format 'safetensors': model.kind 'tiny-sd' exports as diffusers (diffusers LoRA, "
                           "or a full fine-tune's pipeline directory), kohya (kohya LoRA for AUTOMATIC1111, ComfyUI, SD.Next)")
    assert not (tmp_path / "x").exists()


def test_a_model_kind_without_formats_says_so(tmp_path, capsys):
    assert main(["export", str(run_dir(tmp_path, "toy")), "--out", str(tmp_path / "x")]) == 1
    assert capsys.readouterr().err.strip() == "genpref: error: model.kind 'toy' has no export formats"


def test_the_default_format_is_used_when_none_is_given(tmp_path, monkeypatch):
    """The motion run's export goes to the registered default (released) without naming it."""
    calls = []
    fake = exporters.Exporter("released", lambda run, out: calls.append((run, out)) or tmp_path, "motion.adapter", "x", True)
    exporters.load_all()
    monkeypatch.setitem(exporters.FORMATS, "released", fake)
    monkeypatch.setattr("genpref.modelcard.write_model_card", lambda *a, **k: tmp_path / "card.md")
    run = run_dir(tmp_path, "mdm")
    assert main(["export", str(run), "--out", str(tmp_path / "out")]) == 0
    assert calls == [(str(run), str(tmp_path / "out"))]
