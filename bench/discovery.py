"""Placeholder: written below."""
from .report import Section
KEY = "discovery"
TITLE = "discovery"
TARGETS = []
def run(ctx):
    return Section.missing(KEY, TITLE, "", "not written yet", TARGETS)
