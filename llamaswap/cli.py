"""The click CLI: the only module that prints, colours or exits.

Exit codes are decided here and only here:
  0  success (no errors; warnings allowed unless --strict)
  1  the config has errors / the answer is "no" (unknown model, plan differs with --exit-code)
  2  usage errors or an unreadable file
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from llamaswap import __version__

if TYPE_CHECKING:
    from llamaswap.compiler.plan import Plan

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_USAGE = 2


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="llamaswap")
def cli() -> None:
    """Compile, dry-run, draw and serve llama-swap configs."""


# -- shared helpers ---------------------------------------------------------------------------

def expand_budget_option(f):
    return click.option(
        "--expand-budget", type=click.IntRange(min=0), default=None, metavar="N",
        help="Expand sets into concrete combinations up to N in total; larger sets stay symbolic "
             "(default 100000).",
    )(f)


def read_config(path: str) -> str:
    """The config's text; unreadable files are usage errors (exit 2)."""
    try:
        data = Path(path).read_bytes()
    except IsADirectoryError:
        raise click.UsageError(f"{path}: is a directory, not a config file") from None
    except OSError as exc:
        raise click.UsageError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise click.UsageError(f"{path}: not UTF-8 text (byte {exc.start})") from None


def compile_config(path: str, expand_budget: int | None = None) -> "Plan":
    from llamaswap.compiler.plan import CompileOptions, compile_text

    opts = {"env": dict(os.environ)}
    if expand_budget is not None:
        opts["expand_budget"] = expand_budget
    return compile_text(read_config(path), path, CompileOptions(**opts))


def print_diagnostics(plan: "Plan", fmt: str = "text", err: bool = True) -> None:
    from llamaswap.compiler.diagnostics import render_github, render_text

    if not plan.diagnostics:
        return
    if fmt == "github":
        click.echo(render_github(plan.diagnostics), nl=False, err=err)
    else:
        try:
            sources = {plan.file: read_config(plan.file)}
        except click.UsageError:
            sources = {}
        click.echo(render_text(plan.diagnostics, sources), nl=False, err=err)


def write_atomically(path: str, text: str) -> None:
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise click.UsageError(f"{path}: cannot write: {exc.strerror or exc}") from None


# -- compile -----------------------------------------------------------------------------------

@cli.command("compile")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["text", "json", "github"]), default="text",
              show_default=True, help="Output format.")
@click.option("--strict", is_flag=True, help="Treat warnings as errors (exit 1).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Write the compiled plan as JSON (only when there are no errors).")
@expand_budget_option
def compile_cmd(config: str, fmt: str, strict: bool, output: str | None, expand_budget: int | None) -> None:
    """Check CONFIG: every problem at once, located, with hints. Exit 0 when it has no errors
    (warnings allowed unless --strict), 1 when it has, 2 on usage errors."""
    from llamaswap.compiler.diagnostics import Severity, dumps, summarize

    plan = compile_config(config, expand_budget)
    failed = not plan.ok or (strict and any(d.severity is Severity.WARNING for d in plan.diagnostics))
    if fmt == "json":
        click.echo(dumps(plan.compile_json()))
    elif fmt == "github":
        print_diagnostics(plan, "github", err=False)
    else:
        print_diagnostics(plan, "text", err=False)
        if plan.ok:
            n_sets = len(plan.sets) if plan.engine == "matrix" else len(plan.groups)
            what = "sets" if plan.engine == "matrix" else "groups"
            click.echo(f"{config}: ok — {len(plan.models)} models, {n_sets} {what} ({plan.engine} engine); "
                       f"{summarize(plan.diagnostics)}")
    if output is not None and plan.ok and not failed:
        write_atomically(output, dumps(plan.artifact_json()) + "\n")
    sys.exit(EXIT_FAIL if failed else EXIT_OK)


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
