"""The commands the README and docs/ cite for their figures still exist as written: every
`python benchmarks/... --flag` names a script that defines that flag, and every `qkv ...` line parses
with the real command-line parser (and its config and --set keys load). Nothing is run."""

import re
import shlex
from pathlib import Path

import pytest

from qkv.cli import build_parser
from qkv.train.loop import LoopConfig
from qkv.train.optim import for_run as optim_for_run
from qkv.train.runconfig import load_run_config

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# CONFIG, OUT, M, seedS, [--set ...]: syntax or a placeholder, not a command as written
PLACEHOLDER = re.compile(r"(^|[\s=a-z])[A-Z]+(\s|$)|\.\.\.|\[")


def cited(prefix: str) -> list[tuple[str, str]]:
    """(doc name, command) for each inline `prefix ...` and each shell-block line starting with it."""
    found = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        inline = re.findall(rf"`({prefix} [^`]*)`", text)
        blocks = "\n".join(re.findall(r"```(?:sh|bash)\n(.*?)```", text, flags=re.S)).replace("\\\n", " ")
        lines = [line.split(" #")[0].split(" > ")[0].strip() for line in blocks.splitlines()]
        found += [(doc.name, c) for c in inline + [line for line in lines if line.startswith(prefix + " ")]]
    return sorted(set(found))


SCRIPTS = [(doc, c) for doc, c in cited("python") if not c.startswith("python -m")]
MESSAGE = re.compile(r"^qkv \S+:")  # `qkv generate: warning: ...` quotes what qkv prints
QKV = [(d, c) for d, c in cited("qkv") if not PLACEHOLDER.search(c) and not MESSAGE.match(c) and "--help" not in c]


def test_the_docs_cite_commands():
    assert len(SCRIPTS) > 30 and len(QKV) > 15  # the extraction itself works


def scripts_and_flags(command: str) -> list[tuple[str, list[str]]]:
    """`python a.py --x b.py --y` -> [("a.py", ["--x"]), ("b.py", ["--y"])]: a script may run another
    one with the arguments after it (`benchmarks/processes.py --runs 3 benchmarks/gpt.py --only small`)."""
    groups: list[tuple[str, list[str]]] = []
    for arg in shlex.split(command)[1:]:
        if arg.endswith(".py"):
            groups.append((arg, []))
        elif arg.startswith("--") and groups:
            groups[-1][1].append(arg.split("=")[0])
    return groups


def test_flags_after_an_inner_script_are_its_own():
    assert scripts_and_flags("python benchmarks/processes.py --runs 3 benchmarks/gpt.py --only small") == [
        ("benchmarks/processes.py", ["--runs"]),
        ("benchmarks/gpt.py", ["--only"]),
    ]


@pytest.mark.parametrize("doc, command", SCRIPTS, ids=[c for _, c in SCRIPTS])
def test_cited_script_and_flags_exist(doc, command):
    groups = scripts_and_flags(command)
    assert groups and shlex.split(command)[1] == groups[0][0], f"{doc}: {command} does not start with a script"
    for script, flags in groups:
        path = ROOT / script
        assert path.is_file(), f"{doc}: {script} does not exist"
        source = path.read_text() + (ROOT / "benchmarks" / "common.py").read_text()  # shared flags (--device)
        for flag in flags:
            assert f'"{flag}"' in source, f"{doc}: {script} defines no {flag}"


@pytest.mark.parametrize("doc, command", QKV, ids=[c for _, c in QKV])
def test_cited_qkv_command_parses(doc, command, monkeypatch):
    monkeypatch.chdir(ROOT)
    argv = shlex.split(command)[1:]
    parser = build_parser()
    if argv[0].startswith("--"):  # a top-level option (`qkv --version`)
        assert argv[0] in parser._option_string_actions, f"{doc}: qkv has no {argv[0]}"
        return
    sub = parser._subparsers._group_actions[0].choices[argv[0]]
    required = [a.option_strings[0] for a in sub._actions if a.required and a.option_strings]
    if len(argv) == 1 or any(r not in argv for r in required):  # prose naming a command or one option: those must exist
        assert all(a.split("=")[0] in sub._option_string_actions for a in argv[1:] if a.startswith("--"))
        return
    args = parser.parse_args(argv)
    config = getattr(args, "config", None)
    if config is not None:  # qkv train / plot schedule: the config and its --set keys load
        run = load_run_config(config, args.set)
        optim_for_run(run, LoopConfig.from_dict(run["train"], source=config).steps)


def _top_level_names(path: Path) -> set[str]:
    """What a module defines at its top level (functions, classes, assignments, imports), read from
    its source: importing benchmarks' sibling modules here would leave a `common` in sys.modules that
    experiments/ (which has its own common.py) would then import by mistake."""
    import ast

    names = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return names


def test_benchmark_scripts_import_only_names_that_exist():
    """A cited script that cannot start is a broken figure: every `from MODULE import NAME` in
    benchmarks/ naming qkv or a sibling benchmark module must find NAME (checked without running the
    scripts; `levers/train_profile.py` once imported constants that `seq2seq_train.py` had dropped)."""
    import ast
    import importlib
    import importlib.util

    siblings = {p.stem: _top_level_names(p) for p in (ROOT / "benchmarks").glob("*.py")}
    missing = []
    for script in sorted((ROOT / "benchmarks").rglob("*.py")):
        for node in ast.walk(ast.parse(script.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ImportFrom) or not node.module:
                continue
            for alias in node.names:
                if node.module in siblings:
                    found = alias.name in siblings[node.module]
                elif node.module.split(".")[0] == "qkv":
                    module = importlib.import_module(node.module)
                    found = hasattr(module, alias.name) or importlib.util.find_spec(f"{node.module}.{alias.name}")
                else:
                    continue
                if not found:
                    missing.append(f"{script.relative_to(ROOT)}: {node.module}.{alias.name}")
    assert not missing, missing
