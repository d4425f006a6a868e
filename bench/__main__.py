"""`python -m bench`: run every benchmark (or `--only` some) and write the Markdown report.

A benchmark that cannot run (a missing tool, a component not there yet, a crash) becomes a section
saying "not measured" and why; the others still run and the report is still written.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

from . import autoscale_bench, discovery, eta_trace, gpu, http_overhead, media, operator_bench, reliability, ws_overhead
from .context import Context
from .procs import REPO
from .report import Machine, Section, load_average, render, replace_section

BENCHMARKS = [http_overhead, ws_overhead, eta_trace, discovery, operator_bench, media, autoscale_bench, reliability, gpu]
DEFAULT_OUT = REPO / "docs" / "benchmarks.md"


def run_one(module, ctx: Context) -> Section:
    started = time.monotonic()
    print(f"== bench: {module.KEY} ({module.TITLE})", flush=True)
    try:
        section = module.run(ctx)
    except Exception as exc:  # noqa: BLE001 - one broken benchmark must not lose the others' numbers
        traceback.print_exc()
        reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        section = Section.missing(module.KEY, module.TITLE, _method(module), reason, module.TARGETS)
    section.seconds = time.monotonic() - started
    for target in section.targets:
        print(f"   {target.name}: {target.met} ({target.detail})", flush=True)
    return section


def _replace(out: Path, section: Section, machine: Machine, recorded: bool) -> None:
    if not recorded:
        section.notes.append(f"Measured in a separate run ({machine.date}, commit {machine.commit}, load average "
                             f"{machine.load_before} before, {machine.load_after} after) that replaced this "
                             f"benchmark's figures of the full run: `python -m bench --only {section.key} --replace`.")
    out.write_text(replace_section(out.read_text(), section))


def _method(module) -> str:
    return " ".join(module.__doc__.split("\n", 1)[1].split())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    keys = [m.KEY for m in BENCHMARKS]
    parser.add_argument("--only", help=f"comma-separated subset of: {', '.join(keys)}")
    parser.add_argument("--quick", action="store_true", help="shorter windows, for trying the harness")
    parser.add_argument("--replace", action="store_true",
                        help="with --only: run those again and put them in place of theirs in docs/benchmarks.md "
                             "(each marked as measured in a separate run)")
    parser.add_argument("--out", type=Path, help=f"report path (default {DEFAULT_OUT.relative_to(REPO)}; "
                        "with --only or --quick: tmp/bench/benchmarks-partial.md)")
    args = parser.parse_args(argv)
    chosen = BENCHMARKS
    if args.only:
        wanted = [k.strip() for k in args.only.split(",") if k.strip()]
        unknown = sorted(set(wanted) - set(keys))
        if unknown:
            parser.error(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(keys)}")
        chosen = [m for m in BENCHMARKS if m.KEY in wanted]
    if args.replace and not args.only:
        parser.error("--replace needs --only")
    partial = bool(args.only or args.quick) and not args.replace
    out = args.out or (REPO / "tmp" / "bench" / "benchmarks-partial.md" if partial else DEFAULT_OUT)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    ctx = Context(log_dir=REPO / "tmp" / "bench" / stamp, quick=args.quick)
    ctx.log_dir.mkdir(parents=True, exist_ok=True)
    machine = Machine.describe()
    command = "python -m bench" + "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
    out.parent.mkdir(parents=True, exist_ok=True)
    sections: list[Section] = []
    for module in chosen:
        sections.append(run_one(module, ctx))
        # Written after every benchmark, so an interrupted run keeps what it measured.
        machine.load_after = load_average()
        if args.replace:
            _replace(out, sections[-1], machine, getattr(module, "RECORDED", False))
        else:
            out.write_text(render(sections, machine, command))
    print(f"wrote {out} (logs in {ctx.log_dir})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
