"""Task name -> builder, listed explicitly (no registration by import side effect)."""

from qkv.tasks import lm, translation

TASKS = {"lm": lm.build, "translation": translation.build}
