"""No untested prose: the README's Python examples run as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_examples_run(tmp_path, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "the README has no python example"
    monkeypatch.chdir(tmp_path)
    for code in blocks:
        exec(compile(code, str(README), "exec"), {})
    out = capsys.readouterr().out
    assert "torch.Size([1, 3, 100])" in out  # the encoder-decoder example
    assert "torch.Size([1, 12, 32])" in out and "to be or not" in out  # the GPT example


def test_quick_start_is_exactly_two_commands():
    text = README.read_text()
    quick = text.split("## Quick start", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    assert quick.strip().splitlines() == ["make demo", "make test"]
