"""Placeholder: written below."""
from .report import Section
KEY = "operator_bench"
TITLE = "operator_bench"
TARGETS = []
def run(ctx):
    return Section.missing(KEY, TITLE, "", "not written yet", TARGETS)
