"""Each experiment's fast mode shows the direction of its result (no timing is asserted)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))


def test_order_needs_positional_encoding():
    from positional_encoding import run

    steps = 300
    none, sinusoidal = run("none", steps)[-1][1], run("sinusoidal", steps)[-1][1]
    # without positions the encoder cannot tell the order, so reversal stays near chance (0 exact matches)
    assert none < 0.05 and sinusoidal > 0.8
