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


@pytest.mark.parametrize(
    "text, line",
    [
        ('task = "lm"\nout = "runs/x"\n[model]\npreset = "char-tiny"\n[optim]\n"lr" = "fast"\n', 6),  # quoted key
        ('task = "lm"\nout = "runs/x"\noptim.lr = "fast"\n[model]\npreset = "char-tiny"\n', 3),  # dotted
        ('task = "lm"\nout = "runs/x"\n[model]\npreset = "char-tiny"\n[ "optim" ]\n\'lr\' = "fast"\n', 6),
    ],
    ids=["quoted", "dotted", "quoted-header"],
)
def test_quoted_and_dotted_keys_name_their_line(tmp_path, text, line):
    path = tmp_path / "run.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=rf"^{path}:{line} \[optim\]: OptimConfig.lr: expected float"):
        section_config(load_run_config(path, []), "optim", OptimConfig)


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


def test_a_value_out_of_range_names_its_line(tmp_path):
    run, path = run_of(tmp_path, lr="0")
    with pytest.raises(ConfigError, match=rf"^{path}:10 \[optim\]: lr must be > 0$"):
        section_config(run, "optim", OptimConfig)


@pytest.mark.parametrize(
    "setting, message",
    [
        ("train.threads=-1", "train.threads must be at least 0"),  # was torch's traceback at the first step
        ("train.max_minutes=-1", "train.max_minutes must be at least 0"),
        ("optim.weight_decay=-0.1", "weight_decay must be at least 0"),
        ("optim.clip_norm=-1", "clip_norm must be at least 0"),
        ("optim.beta2=1", r"beta2 must be in \[0, 1\)"),
        ("optim.eps=0", "eps must be > 0"),
        ("model.dropout=1", r"dropout must be in \[0, 1\)"),
    ],
)
def test_values_out_of_range_are_refused(tmp_path, setting, message):
    run, path = run_of(tmp_path, overrides=[setting])
    section, _ = setting.split(".", 1)
    with pytest.raises(ConfigError, match=rf"\(--set {setting}\): {message}$"):
        if section == "model":
            model_config(PRESETS, run, vocab_size=65)
        else:
            section_config(run, section, {"train": LoopConfig, "optim": OptimConfig}[section])
