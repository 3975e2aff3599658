"""``keras2torch --check``: progress on stderr unless ``-q``; float32 drift alone passes, and says so."""

from __future__ import annotations

import pytest
from test_drift import chaotic_chain

from kerastorch_magic import cli


@pytest.fixture(scope="module")
def drifting_model(tmp_path_factory):
    """60 chaotic Dense(tanh) layers: beyond 1e-4 end to end, every layer exact on its own."""
    path = tmp_path_factory.mktemp("drift") / "chaotic.keras"
    chaotic_chain().save(path)
    return path


def test_drift_only_exits_0_with_the_drift_verdict_and_progress_on_stderr(drifting_model, tmp_path, capsys):
    assert cli.main([str(drifting_model), "-o", str(tmp_path / "net.py"), "--check"]) == 0
    out, err = capsys.readouterr()
    verdict = out.strip().splitlines()[-1]
    assert verdict.startswith("keras2torch --check: OK (float32 drift only): no conversion error")
    assert "float32 round-off amplified through 60 layers" in verdict
    assert " drift" in out  # the table's status column
    # Progress: the CLI's steps, then compare's "layer k of N" line (both phases), on stderr only.
    assert "keras2torch: comparing Keras and PyTorch layer by layer..." in err
    assert "keras2torch: compared 60 layer outputs in" in err
    assert "compared 60 layer outputs" not in out


def test_quiet_check_prints_only_the_verdict(drifting_model, tmp_path, capsys):
    assert cli.main([str(drifting_model), "-o", str(tmp_path / "net.py"), "--check", "-q"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.count("\n") == 1 and out.startswith("keras2torch --check: OK (float32 drift only)")


def test_a_real_mismatch_inside_the_drift_still_exits_1(drifting_model, tmp_path, capsys, monkeypatch):
    from kerastorch_magic import conversion as conversion_module

    real = conversion_module.convert
    broken = []

    def wrong_bias(*args, **kwargs):
        result = real(*args, **kwargs)
        bias = [key for key in result.state_dict if key.endswith(".bias")][40]  # the 41st layer's
        result.state_dict[bias][:8] += 0.5
        broken.append(bias.removesuffix(".bias"))
        return result

    monkeypatch.setattr(conversion_module, "convert", wrong_bias)
    assert cli.main([str(drifting_model), "-o", str(tmp_path / "net.py"), "--check", "-q"]) == 1
    out = capsys.readouterr().out
    assert out.startswith("keras2torch --check: MISMATCH") and f"first: {broken[0]!r}" in out
