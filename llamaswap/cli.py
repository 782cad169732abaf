"""The click CLI: the only module that prints, colours or exits.

Exit codes are decided here and only here:
  0  success (no errors; warnings allowed unless --strict)
  1  the config has errors / the answer is "no" (unknown model, plan differs with --exit-code)
  2  usage errors or an unreadable file
"""

from __future__ import annotations

import sys

import click

from llamaswap import __version__

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_USAGE = 2


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="llamaswap")
def cli() -> None:
    """Compile, dry-run, draw and serve llama-swap configs."""


@cli.command("fake-upstream")
@click.option("--port", type=int, required=True, help="Port to listen on (0 picks a free one).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--name", default="fake", show_default=True, help="Name echoed in every response.")
@click.option("--startup-delay", type=float, default=0.0, show_default=True,
              help="Seconds during which /health answers 503.")
@click.option("--fail-health", is_flag=True, help="/health never answers 200.")
@click.option("--exit-after", type=float, default=None,
              help="Exit by itself this many seconds after start (simulates a crash).")
@click.option("--token-delay", type=float, default=0.0, show_default=True,
              help="Seconds between streamed chunks.")
def fake_upstream_cmd(port: int, host: str, name: str, startup_delay: float, fail_health: bool,
                      exit_after: float | None, token_delay: float) -> None:
    """An OpenAI-compatible fake server for tests, demos and CI."""
    from llamaswap.testing import fake_upstream

    code = fake_upstream.run(
        host=host,
        port=port,
        name=name,
        startup_delay=startup_delay,
        fail_health=fail_health,
        exit_after=exit_after,
        token_delay=token_delay,
    )
    sys.exit(code)


def main() -> None:
    cli(prog_name="llamaswap")


if __name__ == "__main__":
    main()
