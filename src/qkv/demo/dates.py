"""The demo's task: a date written out in English words -> the same date in ISO form.

    "twenty first of november two thousand twenty six"  ->  "2026-11-21"
    "march third nineteen oh five"                      ->  "1905-03-03"

Each output digit depends on particular input words, and the year, last in the words, comes first in
the output, so a model must learn a real alignment with reordering: the cross-attention heat map shows it.
"""

from __future__ import annotations

import datetime as dt
import random

ONES = (
    "zero one two three four five six seven eight nine "
    "ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen"
).split()
TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
ORDINALS = (
    "_ first second third fourth fifth sixth seventh eighth ninth "
    "tenth eleventh twelfth thirteenth fourteenth fifteenth sixteenth seventeenth eighteenth nineteenth"
).split()
MONTHS = "january february march april may june july august september october november december".split()
FIRST_DAY, LAST_DAY = dt.date(1900, 1, 1), dt.date(2099, 12, 31)


def number_words(n: int) -> list[str]:
    """0..99 -> words, e.g. 42 -> ["forty", "two"]."""
    if n < 20:
        return [ONES[n]]
    return [TENS[n // 10]] + ([ONES[n % 10]] if n % 10 else [])


def ordinal_words(n: int) -> list[str]:
    """1..31 -> ordinal words, e.g. 21 -> ["twenty", "first"], 30 -> ["thirtieth"]."""
    if n < 20:
        return [ORDINALS[n]]
    if n % 10 == 0:
        return [TENS[n // 10][:-1] + "ieth"]  # twentieth, thirtieth
    return [TENS[n // 10], ORDINALS[n % 10]]


def year_words(y: int) -> list[str]:
    """1900..2099 the way people say them: nineteen oh five, nineteen hundred, two thousand twenty six."""
    century, rest = divmod(y, 100)
    if century == 19:
        if rest == 0:
            return ["nineteen", "hundred"]
        return ["nineteen"] + (["oh", ONES[rest]] if rest < 10 else number_words(rest))
    return ["two", "thousand"] + (number_words(rest) if rest else [])


def spell(date: dt.date, style: int) -> list[str]:
    """Style 0: "<day> of <month> <year>"; style 1: "<month> <day> <year>"."""
    day, month, year = ordinal_words(date.day), [MONTHS[date.month - 1]], year_words(date.year)
    return day + ["of"] + month + year if style == 0 else month + day + year


def iso(date: dt.date) -> list[str]:
    """The target, one symbol per character: ["2", "0", "2", "6", "-", ...]."""
    return list(date.isoformat())


def vocabulary() -> list[str]:
    """Every source word and target character, for one shared vocabulary (sec 3.4 ties them)."""
    words = ONES + TENS[2:] + ORDINALS[1:] + ["twentieth", "thirtieth"] + MONTHS + ["of", "oh", "hundred", "thousand"]
    return words + list("0123456789-")


class DateTask:
    """Random dates, with a held-out set that training never sees."""

    def __init__(self, seed: int = 0, n_test: int = 1000) -> None:
        self.rng = random.Random(seed)
        n_days = (LAST_DAY - FIRST_DAY).days + 1
        held = self.rng.sample(range(n_days), n_test)
        self.test = [(FIRST_DAY + dt.timedelta(days=d), self.rng.randrange(2)) for d in held]
        self.held = set(held)
        self.n_days = n_days

    def sample(self) -> tuple[dt.date, int]:
        """A random (date, style) not in the held-out set."""
        while True:
            d = self.rng.randrange(self.n_days)
            if d not in self.held:
                return FIRST_DAY + dt.timedelta(days=d), self.rng.randrange(2)
