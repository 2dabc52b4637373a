"""Run configuration files: TOML with sections, plus `--set section.key=value` overrides.

    task = "lm"                 # which family/task trains (see qkv.tasks.TASKS)
    out = "runs/shakespeare"    # where checkpoints and logs go
    init = "runs/bert/best"     # optional: a checkpoint to start from (fine-tuning)
    [data]  ...                 # the task's data settings
    [model] preset = "char-tiny", and any model config field to override
    [train] ...                 # qkv.train.loop.LoopConfig
    [optim] ...                 # qkv.train.optim.OptimConfig

Every key is checked: an unknown one, or a value of the wrong type, is an error naming the file and,
where one key is to blame, the line that sets it (or the `--set` that did).
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path
from typing import Any, Callable, TypeVar

from qkv.config import ConfigError, close_key

SECTIONS = ("data", "model", "train", "optim")
# init: a checkpoint to start from (fine-tuning); init_weights = false takes only its shape and tokenizer
TOP_LEVEL = ("task", "out", "init", "init_weights", *SECTIONS)


def parse_override(text: str) -> tuple[list[str], Any]:
    """ "train.steps=100" -> (["train", "steps"], 100). Values are TOML literals; bare words are strings."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {text!r}: expected section.key=value")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return key.split("."), value


def load_run_config(path: str | Path, overrides: list[str] = ()) -> dict[str, Any]:
    """The config file as a dict with every section present, overrides applied, top-level keys checked."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{p}: is a directory, not a run config (a TOML file, such as those in configs/)")
    if not p.is_file():
        raise ConfigError(f"{p}: no such file")
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise ConfigError(f"{p}: invalid UTF-8 ({err.reason} at byte {err.start})") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{p}: {err}") from None
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {text!r}: {k} is not a section")
        node[keys[-1]] = value
        data.setdefault("_set", {})[".".join(keys)] = text
    unknown = sorted(set(data) - set(TOP_LEVEL) - {"_set"})
    if unknown:
        raise ConfigError(f"{p}: unknown key(s) {unknown}; expected {list(TOP_LEVEL)}")
    for name in ("task", "out"):
        if not isinstance(data.get(name), str):
            raise ConfigError(f"{p}: `{name}` must be given as a string")
    if not isinstance(data.get("init", ""), str):
        raise ConfigError(f"{p}: `init` must be a checkpoint directory (a string)")
    if not isinstance(data.get("init_weights", True), bool):
        raise ConfigError(f"{p}: `init_weights` must be true or false")
    if "init_weights" in data and not data.get("init"):
        raise ConfigError(f"{p}: `init_weights` needs `init` (the checkpoint whose shape and tokenizer to take)")
    for section in SECTIONS:
        if not isinstance(data.setdefault(section, {}), dict):
            raise ConfigError(f"{p}: [{section}] must be a table")
    data["_source"] = str(p)
    return data


def where(run: dict[str, Any], section: str, key: str | None) -> str:
    """ "FILE:LINE [section]" for the line of FILE that sets section.key (a `--set` that overrides it is
    named instead); just "FILE [section]" when the key is not written on a line of its own. The key
    may be bare or quoted, under its [section] header or dotted (`section.key = ...`) before any."""
    source = run["_source"]
    if key is None:
        return f"{source} [{section}]"
    if f"{section}.{key}" in run.get("_set", {}):
        return f"{source} [{section}] (--set {run['_set'][f'{section}.{key}']})"
    under_header = re.compile(rf"\s*{_toml_key(key)}\s*=")
    dotted = re.compile(rf"\s*{_toml_key(section)}\s*\.\s*{_toml_key(key)}\s*=")
    current = ""  # the table the line is in; "" before the first header
    for number, line in enumerate(Path(source).read_text(encoding="utf-8").splitlines(), 1):
        header = re.match(r"\s*\[([^\[\]]+)\]", line)
        if header:
            current = header.group(1).strip().strip("\"'")
        elif (current == section and under_header.match(line)) or (current == "" and dotted.match(line)):
            return f"{source}:{number} [{section}]"
    return f"{source} [{section}]"


def _toml_key(word: str) -> str:
    """A regex for `word` as a TOML key: bare, "quoted" or 'quoted'."""
    w = re.escape(word)
    return rf"""(?:{w}|"{w}"|'{w}')"""


C = TypeVar("C")


def _located(run: dict[str, Any], section: str, build: Callable[[str], C]) -> C:
    """build(source) with a ConfigError's source replaced by where its key is set."""
    plain = f"{run['_source']} [{section}]"
    try:
        return build(plain)
    except ConfigError as err:
        message = str(err)
        if err.key is None or not message.startswith(plain):
            raise
        raise ConfigError(where(run, section, err.key) + message[len(plain) :], key=err.key) from None


def _classes(task: str) -> dict[str, type]:
    """Section -> its config class for `task` ([data] and [model] depend on the task)."""
    from qkv.tasks.registry import SECTION_CLASSES  # here, not above: the tasks import this module
    from qkv.train.loop import LoopConfig
    from qkv.train.optim import OptimConfig

    return {"train": LoopConfig, "optim": OptimConfig, **SECTION_CLASSES.get(task, {})}


def check_placement(run: dict[str, Any], section: str, known: list[str]) -> None:
    """Raise when a key of [section] is none of `known` but is a key of another section (`lr` under
    [train], `dropout` under [train] instead of [model]), naming the section it belongs to, and the
    key of this section it may be short for (`vocab_size` under an LM's [data]: `bpe_vocab_size`)."""
    homes = _classes(run["task"])
    for key in run[section]:
        home = next((s for s, cls in homes.items() if s != section and key in cls.field_names()), None)
        if key not in known and home is not None:
            meant = close_key(key, known, spelling=False)
            hint = f"; or did you mean {meant!r}?" if meant else ""
            raise ConfigError(
                f"{where(run, section, key)}: `{key}` is a key of [{home}], not [{section}]{hint}", key=key
            )


def note_unused(run: dict[str, Any], section: str, key: str, condition: str) -> None:
    """One line on stderr for a key that the run config sets but this run does not use (`min_lr`
    without cosine decay, `bpe_vocab_size` with a character tokenizer): it may be there by mistake, or
    something else may be; a note, not a refusal, since a `--set` that switches the schedule or the
    tokenizer leaves the other's keys in the file on purpose."""
    noted = run.setdefault("_noted", set())
    if key in run[section] and (section, key) not in noted:
        noted.add((section, key))
        print(f"note: {where(run, section, key)}: `{key}` is used only {condition}, so not here", file=sys.stderr)


def section_config(run: dict[str, Any], section: str, cls: type[C]) -> C:
    """The run config's [section] table as the config class `cls` (strict: see `Config.from_dict`)."""
    check_placement(run, section, cls.field_names())
    return _located(run, section, lambda source: cls.from_dict(run[section], source=source))


def model_config(presets: dict, run: dict[str, Any], **forced: Any):
    """The [model] section: a preset by name, then field overrides, then values the data decides."""
    fields = dict(run["model"])
    name = fields.pop("preset", None)
    if name is None or name not in presets:
        raise ConfigError(f"{where(run, 'model', 'preset')}: preset must be one of {sorted(presets)}, got {name!r}")
    base = presets[name]
    check_placement(run, "model", base.field_names())
    for key in sorted(fields.keys() & forced.keys()):  # vocabulary sizes, special ids: the data's
        if fields[key] != forced[key]:
            data = _classes(run["task"]).get("data")
            data_key = close_key(key, data.field_names()) if data else None
            hint = f"; set [data] `{data_key}` instead" if data_key else ""
            raise ConfigError(
                f"{where(run, 'model', key)}: `{key}` is decided by the data here ({forced[key]!r}), so [model] "
                f"cannot set it{hint}",
                key=key,
            )
    merged = {**base.to_dict(), **fields, **forced}
    return _located(run, "model", lambda source: type(base).from_dict(merged, source=source))
