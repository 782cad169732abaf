"""What-if launchers for bench/swap.py: measure a proposed runtime change without editing the
package. Not used by default; `swap.py --fast-upstream-exit` / `--poll-interval S` select them.

  python bench/whatif.py upstream ARGS...     the fake upstream (same options as
                                              `llamaswap fake-upstream`), but it leaves with
                                              os._exit() once its server is cleaned up, skipping
                                              the interpreter's teardown
  python bench/whatif.py serve --poll-interval S [--first-poll S] ARGS...
                                              `llamaswap serve ARGS...` with the health poll
                                              interval (processes.POLL_INTERVAL) and the first
                                              poll delay (FIRST_POLL_DELAY) set to S
"""

from __future__ import annotations

import os
import sys


def upstream(argv: list[str]) -> None:
    import click

    from llamaswap.cli import fake_upstream_cmd

    try:
        fake_upstream_cmd.main(argv, standalone_mode=False)
        code = 0
    except SystemExit as exc:  # the command ends with sys.exit(code)
        code = exc.code if isinstance(exc.code, int) else 1
    except click.ClickException as exc:
        exc.show()
        code = 2
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def serve(argv: list[str]) -> None:
    from llamaswap.runtime import processes

    interval = float(argv[argv.index("--poll-interval") + 1])
    first = float(argv[argv.index("--first-poll") + 1]) if "--first-poll" in argv else interval
    for flag in ("--poll-interval", "--first-poll"):
        if flag in argv:
            i = argv.index(flag)
            del argv[i:i + 2]
    processes.POLL_INTERVAL = interval
    processes.FIRST_POLL_DELAY = first
    from llamaswap.cli import cli

    cli.main(["serve", *argv], prog_name="llamaswap")


if __name__ == "__main__":
    {"upstream": upstream, "serve": serve}[sys.argv[1]](sys.argv[2:])
