"""Placeholder: written below."""
from .report import Section
KEY = "eta_trace"
TITLE = "eta_trace"
TARGETS = []
def run(ctx):
    return Section.missing(KEY, TITLE, "", "not written yet", TARGETS)
