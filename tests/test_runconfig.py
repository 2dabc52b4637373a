"""Run config errors point at the line (or the --set) that holds the bad key."""

import pytest

from qkv.config import ConfigError
from qkv.models.gpt import PRESETS
from qkv.train.loop import LoopConfig
from qkv.train.optim import OptimConfig, for_run
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


def _optim(tmp_path, text: str, steps: int = 1000) -> OptimConfig:
    path = tmp_path / "run.toml"
    path.write_text('out = "runs/x"\n' + text)
    return for_run(load_run_config(path, []), steps)


def test_each_task_starts_from_its_own_papers_optimiser(tmp_path):
    lm = _optim(tmp_path, 'task = "lm"\n', steps=5000)  # GPT-3 Small's settings, warm-up 2%, decay to the end
    assert (lm.schedule, lm.lr, lm.min_lr, lm.beta2) == ("cosine", 6e-4, 6e-5, 0.95)
    assert (lm.weight_decay, lm.clip_norm) == (0.1, 1.0)
    assert (lm.warmup_steps, lm.total_steps, lm.label_smoothing) == (100, 5000, 0.0)
    tuned = _optim(tmp_path, 'task = "classify"\n', steps=200)
    assert (tuned.lr, tuned.warmup_steps, tuned.total_steps, tuned.weight_decay) == (3e-5, 20, 200, 0.01)
    assert _optim(tmp_path, 'task = "bert_pretrain"\n', steps=10).warmup_steps == 1  # never 0
    paper = _optim(tmp_path, 'task = "translation"\n')  # the class defaults: sec 5.3-5.4
    assert paper == OptimConfig(total_steps=1000)
    assert (paper.schedule, paper.warmup_steps, paper.label_smoothing) == ("noam", 4000, 0.1)


def test_the_section_overrides_the_task_defaults(tmp_path):
    cfg = _optim(tmp_path, 'task = "lm"\n[optim]\nlr = 1e-3\nwarmup_steps = 7\ntotal_steps = 900\n')
    assert (cfg.lr, cfg.warmup_steps, cfg.total_steps, cfg.beta2) == (1e-3, 7, 900, 0.95)


def test_cosine_decay_ends_at_a_tenth_of_the_peak_set_and_never_rises(tmp_path):
    # the LM default decays 6e-4 to 6e-5; a fine-tuning peak of 3e-5 used to "decay" up to 6e-5
    assert _optim(tmp_path, 'task = "lm"\n[optim]\nlr = 3e-5\n').min_lr == pytest.approx(3e-6)
    assert _optim(tmp_path, 'task = "lm"\n[optim]\nlr = 3e-5\nmin_lr = 0.0\n').min_lr == 0.0
    with pytest.raises(ConfigError, match=r"run.toml:5 \[optim\]: min_lr 0.0001 is above lr 3e-05: the cosine"):
        _optim(tmp_path, 'task = "lm"\n[optim]\nlr = 3e-5\nmin_lr = 1e-4\n')


def test_a_schedule_without_its_peak_rate_is_an_error(tmp_path):
    # translation's default lr is eq. (3)'s factor 1.0, which as a cosine peak would diverge
    with pytest.raises(ConfigError, match=r"run.toml:4 \[optim\]: schedule 'cosine' needs `lr`"):
        _optim(tmp_path, 'task = "translation"\n[optim]\nschedule = "cosine"\n')


def test_label_smoothing_outside_translation_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match=r"run.toml:5 \[optim\]: label smoothing applies to the translation task"):
        _optim(tmp_path, 'task = "lm"\n[optim]\nlr = 1e-3\nlabel_smoothing = 0.1\n')


def test_an_unknown_key_suggests_the_one_meant(tmp_path):
    run, path = run_of(tmp_path, overrides=["train.stepz=3"])
    with pytest.raises(ConfigError, match=r"for LoopConfig; did you mean 'steps'\?$"):
        section_config(run, "train", LoopConfig)
    path.write_text('task = "lm"\nout = "x"\n[data]\nvocab_size = 500\n')  # the field is bpe_vocab_size
    from qkv.tasks.lm import LMDataConfig

    with pytest.raises(ConfigError, match=rf"^{path}:4 \[data\]: .*did you mean 'bpe_vocab_size'\?$"):
        section_config(load_run_config(path, []), "data", LMDataConfig)
    run, _ = run_of(tmp_path, overrides=["train.xyzzy=3"])
    with pytest.raises(ConfigError, match=r"for LoopConfig; expected one of \['steps', 'batch_size', "):
        section_config(run, "train", LoopConfig)


def test_a_key_under_the_wrong_section_names_its_section(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('task = "lm"\nout = "x"\n[model]\npreset = "char-tiny"\n[train]\nsteps = 3\nlr = 1e-3\n')
    run = load_run_config(path, ["optim.batch_size=4", "data.dropout=0.1"])
    with pytest.raises(ConfigError, match=rf"^{path}:7 \[train\]: `lr` is a key of \[optim\], not \[train\]$"):
        section_config(run, "train", LoopConfig)
    with pytest.raises(ConfigError, match=r"\(--set optim.batch_size=4\): `batch_size` is a key of \[train\]"):
        section_config(run, "optim", OptimConfig)
    from qkv.tasks.lm import LMDataConfig

    with pytest.raises(ConfigError, match=r"`dropout` is a key of \[model\], not \[data\]$"):
        section_config(run, "data", LMDataConfig)
    run = load_run_config(path, ["model.val_fraction=0.2"])
    with pytest.raises(ConfigError, match=r"`val_fraction` is a key of \[data\], not \[model\]$"):
        model_config(PRESETS, run)
    # a key of another task's [data] is not "misplaced" here: the ordinary unknown-key error
    run = load_run_config(path, ["model.src_files=[]"])
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['src_files'\] for GPTConfig"):
        model_config(PRESETS, run)


def test_model_keys_the_data_decides_are_refused_unless_they_agree(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('task = "lm"\nout = "x"\n[model]\npreset = "char-tiny"\nvocab_size = 500\n')
    run = load_run_config(path, [])
    # before, the tokenizer's size silently replaced the one asked for
    message = rf"^{path}:5 \[model\]: `vocab_size` is decided by the data here \(65\), so \[model\] cannot set it; "
    with pytest.raises(ConfigError, match=message + r"set \[data\] `bpe_vocab_size` instead$"):
        model_config(PRESETS, run, vocab_size=65)
    assert model_config(PRESETS, run, vocab_size=500).vocab_size == 500  # the same value: nothing to refuse


def test_a_missing_file_and_a_directory_are_told_apart(tmp_path):
    with pytest.raises(ConfigError, match=r"nope.toml: no such file$"):
        load_run_config(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match=r": is a directory, not a run config"):
        load_run_config(tmp_path)


def test_keys_this_run_does_not_use_are_noted(tmp_path, capsys):
    # a --set that switches the schedule leaves the cosine keys in the file on purpose: a note, not an error
    cfg = _optim(tmp_path, 'task = "lm"\n[optim]\nlr = 1e-3\nwarmup_steps = 7\ntotal_steps = 900\nmin_lr = 0.0\n')
    assert capsys.readouterr().err == ""
    path = tmp_path / "run.toml"
    run = load_run_config(path, ["optim.schedule=constant"])
    cfg = for_run(run, 1000)
    assert cfg.lr_at(1, 256) == cfg.lr_at(500, 256) == 1e-3
    assert capsys.readouterr().err.splitlines() == [
        f'note: {path}:{line} [optim]: `{key}` is used only with schedule = {readers} (this one is "constant"),'
        " so not here"
        for line, key, readers in (
            (5, "warmup_steps", '"noam" or "inverse_sqrt" or "cosine"'),
            (6, "total_steps", '"cosine"'),
            (7, "min_lr", '"cosine"'),
        )
    ]
    for_run(run, 1000)  # once a run, not once a call
    assert capsys.readouterr().err == ""
