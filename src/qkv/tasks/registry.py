"""Task name -> builder, listed explicitly (no registration by import side effect)."""

from qkv.tasks import lm

TASKS = {"lm": lm.build}
