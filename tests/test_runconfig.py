"""Run config errors point at the line (or the --set) that holds the bad key."""

import pytest

from qkv.config import ConfigError
from qkv.models.gpt import PRESETS
from qkv.train.loop import LoopConfig
from qkv.train.optim import OptimConfig
from qkv.train.runconfig import load_run_config, model_config, section_config

CONFIG = """task = "lm"
out = "runs/x"

[model]
preset = "char-tiny"
n_heads = {n_heads}

[optim]
# a comment that mentions lr = 1 is not the line
  lr  = {lr}
"""


def run_of(tmp_path, lr="1e-3", n_heads="4", overrides=()):
    path = tmp_path / "run.toml"
    path.write_text(CONFIG.format(lr=lr, n_heads=n_heads))
    return load_run_config(path, list(overrides)), path


def test_a_bad_value_names_its_line(tmp_path):
    run, path = run_of(tmp_path, lr='"fast"')
    with pytest.raises(ConfigError, match=rf"^{path}:10 \[optim\]: OptimConfig.lr: expected float, got str 'fast'$"):
        section_config(run, "optim", OptimConfig)
    run, path = run_of(tmp_path, n_heads='"4"')
    with pytest.raises(ConfigError, match=rf"^{path}:6 \[model\]: GPTConfig.n_heads: expected int"):
        model_config(PRESETS, run, vocab_size=65)


def test_a_bad_override_names_the_set(tmp_path):
    run, path = run_of(tmp_path, overrides=["optim.lr=fast"])
    with pytest.raises(ConfigError, match=rf"^{path} \[optim\] \(--set optim.lr=fast\): OptimConfig.lr"):
        section_config(run, "optim", OptimConfig)
    run, path = run_of(tmp_path, overrides=["train.stepz=3"])
    with pytest.raises(ConfigError, match=r"\(--set train.stepz=3\): unknown key\(s\) \['stepz'\] for LoopConfig"):
        section_config(run, "train", LoopConfig)


def test_errors_of_several_fields_name_the_section_only(tmp_path):
    run, path = run_of(tmp_path, n_heads="3")  # d_model 128 is not divisible by 3: no one line to blame
    with pytest.raises(ConfigError, match=rf"^{path} \[model\]: d_model=128 is not divisible by n_heads=3$"):
        model_config(PRESETS, run, vocab_size=65)


def test_good_sections_load(tmp_path):
    run, _ = run_of(tmp_path, overrides=["train.steps=7"])
    assert section_config(run, "optim", OptimConfig).lr == 1e-3
    assert section_config(run, "train", LoopConfig).steps == 7
    assert model_config(PRESETS, run, vocab_size=65).n_heads == 4
