"""Loading big weights draws a tqdm bar on stderr; small ones (every tiny test model) load quietly."""

import re

import pytest

import hunyuan_core as hy
from hunyuan_core import progress


def final_bars(err: str) -> dict[str, str]:
    """The last drawn state of every bar in ``err``, by its description."""
    states = [s.strip() for s in re.split(r"[\r\n]", err) if s.strip().startswith("loading ")]
    return {s.split(":")[0]: s for s in states}


@pytest.fixture()
def small_threshold(monkeypatch):
    monkeypatch.setattr(progress, "LOADING_BAR_MIN_BYTES", 1)


def test_loading_draws_a_bar_per_part_that_reaches_its_total(tiny_official, small_threshold, capsys):
    hy.load_pipeline(tiny_official, device="cpu", dtype="fp32")
    out, err = capsys.readouterr()
    bars = final_bars(err)
    assert out == ""
    assert any("pytorch_model_ema.pt" in desc for desc in bars)  # the DiT
    assert sum(desc.startswith(("loading BERT", "loading mT5")) for desc in bars) == 2
    assert len(bars) == 4, bars  # + the VAE
    for state in bars.values():
        done, total = re.search(r"100%\|.*\| *([\d.]+\w*)/([\d.]+\w*) \[", state).groups()
        assert done == total, state


def test_default_threshold_keeps_small_models_quiet(tiny_official, capsys):
    assert progress.LOADING_BAR_MIN_BYTES == 256 * 2**20
    hy.load_pipeline(tiny_official, device="cpu", dtype="fp32")
    assert "loading" not in capsys.readouterr().err


def test_loading_bars_can_be_switched_off(tiny_official, small_threshold, capsys):
    hy.set_loading_bar_config(disable=True)
    try:
        hy.load_dit(tiny_official, device="cpu", dtype="fp32")
    finally:
        hy.set_loading_bar_config()
    assert "loading" not in capsys.readouterr().err
    hy.load_dit(tiny_official, device="cpu", dtype="fp32")
    assert "100%" in capsys.readouterr().err
