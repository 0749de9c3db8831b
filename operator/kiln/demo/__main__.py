"""`python -m kiln.demo [--keep] [--data-dir DIR]` runs the demo; `python -m kiln.demo down` stops
one kept running. Ctrl-C (or SIGTERM) at any point stops everything the demo started."""

from __future__ import annotations

import argparse
import pathlib
import signal
import sys
from types import FrameType

from rich.console import Console

from kiln.demo import display, lifecycle, stack


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kiln.demo", description=__doc__.splitlines()[0])
    parser.add_argument("action", nargs="?", choices=["run", "down"], default="run")
    parser.add_argument("--data-dir", type=pathlib.Path, default=pathlib.Path(".demo"))
    parser.add_argument("--keep", action="store_true", help="Leave the cluster, Prometheus and the operator up.")
    parser.add_argument("--crds", type=pathlib.Path, default=pathlib.Path("crds"), help="The CRDs to apply.")
    arguments = parser.parse_args(argv)
    # Plain output goes to logs and pipes, which wrap nothing: tables get room for their columns.
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
    demo_stack = stack.Stack(arguments.data_dir)
    if arguments.action == "down":
        stopped = demo_stack.stop()
        console.print("demo stopped" if stopped else f"no demo running from {arguments.data_dir}")
        return 0
    try:
        installed = stack.ensure_tools()
    except stack.DemoError as stopped:
        console.print(f"[bold red]demo not started:[/] {stopped}")
        return 2
    if installed:
        console.print(f"installed {', '.join(installed)} with apt")
    # Ctrl-C and SIGTERM end the demo the same way, even when started with SIGINT ignored (in the background).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    plain = lifecycle.plain() or not console.is_terminal
    shown: display.Display = display.PlainDisplay(console) if plain else display.LiveDisplay(console)
    demo = lifecycle.Demo(demo_stack, shown, arguments.crds)
    keep, code = arguments.keep, 0
    try:
        demo.run()
    except KeyboardInterrupt:
        keep, code = False, 130
        console.print("\n[bold]interrupted: stopping everything the demo started[/]")
    except stack.DemoError as stopped:
        keep, code = False, 1
        console.print(f"\n[bold red]demo stopped:[/] {stopped}")
    finally:
        # A second Ctrl-C must not cut the teardown short and leave processes behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        demo.finish()
        shown.close()
        if not keep:
            demo_stack.stop()
    demo.summary(console, keep)
    return code


if __name__ == "__main__":
    sys.exit(main())
