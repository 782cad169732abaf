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
        help="Expand sets into concrete combinations up to N distinct ones in total; larger sets stay symbolic "
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
            def count(n: int, word: str) -> str:
                return f"{n} {word}{'' if n == 1 else 's'}"

            n_sets = len(plan.sets) if plan.engine == "matrix" else len(plan.groups)
            what = "set" if plan.engine == "matrix" else "group"
            status = "failed (--strict: warnings are errors)" if failed else "ok"
            click.echo(f"{config}: {status} — {count(len(plan.models), 'model')}, {count(n_sets, what)} "
                       f"({plan.engine} engine); {summarize(plan.diagnostics)}")
    if output is not None and plan.ok and not failed:
        write_atomically(output, dumps(plan.artifact_json()) + "\n")
    sys.exit(EXIT_FAIL if failed else EXIT_OK)


# -- plan --------------------------------------------------------------------------------------

def compile_or_exit(path: str, expand_budget: int | None) -> "Plan":
    """Compile; on errors print the diagnostics and exit 1."""
    plan = compile_config(path, expand_budget)
    if not plan.ok:
        print_diagnostics(plan, "text", err=True)
        click.echo(f"{path}: the config has errors; fix them first (llamaswap compile {path})", err=True)
        sys.exit(EXIT_FAIL)
    return plan


def resolve_or_exit(plan: "Plan", name: str, what: str) -> str:
    real = plan.resolve_model(name)
    if real is None:
        from llamaswap.compiler.resolve import suggest

        guess = suggest(name, list(plan.models) + list(plan.aliases))
        hint = f" (did you mean '{guess}'?)" if guess else ""
        click.echo(f"error: unknown model {name!r} in {what}{hint}; known models: {', '.join(plan.models)}",
                   err=True)
        sys.exit(EXIT_FAIL)
    return real


PLAN_ALL_MAX = 2_000_000  # decisions `plan --all` / `--diff` will list when there is no table


def reachable_states(plan: "Plan", progress: bool = False) -> list[tuple[str, ...]]:
    """Every reachable running state (from the table, or enumerated on demand)."""
    from llamaswap.compiler.precompute import group_states, matrix_states

    table = plan.policy.table
    if table is not None:
        return list(table.states)
    # Past the precompute budget every decision is a symbolic solve (tens of µs each):
    # cap the listing at PLAN_ALL_MAX decisions rather than run for hours.
    limit = max(1, PLAN_ALL_MAX // max(1, len(plan.models)))
    if plan.engine == "matrix":
        symbolic = [s.name for s in plan.sets if s.combinations is None]
        if symbolic:
            click.echo(f"error: set(s) {', '.join(symbolic)} are symbolic (too large to expand), so the "
                       "reachable states cannot be listed; raise --expand-budget to expand them", err=True)
            sys.exit(EXIT_FAIL)
        states = matrix_states(plan.models, plan.sets, limit)
    else:
        states = group_states(plan.policy, limit)  # type: ignore[arg-type]
    if states is None:
        click.echo(f"error: more than {limit:,} reachable running states (x {len(plan.models)} models: over "
                   f"{PLAN_ALL_MAX:,} decisions); too many to list", err=True)
        sys.exit(EXIT_FAIL)
    return states


PLAN_PROGRESS_MIN = 20_000  # decisions; `plan --all` shows a progress bar (stderr) past this


def iter_decisions(plan: "Plan", states: list[tuple[str, ...]], show_progress: bool):
    total = len(states) * len(plan.models)
    policy = plan.policy
    if show_progress and total > PLAN_PROGRESS_MIN:
        with click.progressbar(length=total, label="deciding", file=sys.stderr) as bar:
            for state in states:
                for target in plan.models:
                    yield policy.decide(target, state)
                bar.update(len(plan.models))
    else:
        for state in states:
            for target in plan.models:
                yield policy.decide(target, state)


def decision_key(d) -> tuple:
    return (d.evict, d.set, d.target_set)


@cli.command("plan")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--running", default=None, metavar="A,B", help="Models running now (IDs or aliases, comma-separated).")
@click.option("--request", default=None, metavar="MODEL", help="The model a request asks for (ID or alias).")
@click.option("--explain", is_flag=True, help="Also list every candidate set, best first.")
@click.option("--all", "all_", is_flag=True, help="Print every precomputed decision.")
@click.option("--diff", "diff_with", type=click.Path(dir_okay=False), default=None, metavar="NEW",
              help="Compare every decision of CONFIG with those of NEW.")
@click.option("--exit-code", is_flag=True, help="With --diff: exit 1 when some decision differs.")
@click.option("--trace", "trace_file", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Replay a request trace through the scheduler with a virtual clock.")
@click.option("--load-time", "load_times", multiple=True, metavar="MODEL=SECONDS",
              help="With --trace: a model's load time (repeatable).")
@click.option("--default-load-time", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="With --trace: load time of models without --load-time.")
@click.option("--max-wait", type=click.FloatRange(min=0), default=None,
              help="With --trace: override routing.scheduler.settings.fifo.max_wait (0 turns it off).")
@click.option("--verbose", is_flag=True, help="With --trace: add per-request details.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@expand_budget_option
def plan_cmd(config: str, running: str | None, request: str | None, explain: bool, all_: bool,
             diff_with: str | None, exit_code: bool, trace_file: str | None, load_times: tuple[str, ...],
             default_load_time: float, max_wait: float | None, verbose: bool, fmt: str,
             expand_budget: int | None) -> None:
    """Dry-run swap decisions for CONFIG.

    \b
    llamaswap plan CONFIG --running a,b --request c [--explain]
    llamaswap plan CONFIG --all
    llamaswap plan OLD.yaml --diff NEW.yaml [--exit-code]
    llamaswap plan CONFIG --trace FILE [--load-time M=S ...] [--max-wait S]
    """
    from llamaswap.compiler.diagnostics import dumps
    from llamaswap.compiler.explain import explain as explain_text, explain_candidates, one_line

    modes = [request is not None, all_, diff_with is not None, trace_file is not None]
    if sum(modes) != 1:
        raise click.UsageError("give exactly one of --request, --all, --diff NEW or --trace FILE")
    if running is not None and request is None:
        raise click.UsageError("--running goes with --request")
    if exit_code and diff_with is None:
        raise click.UsageError("--exit-code goes with --diff")
    if trace_file is None and (load_times or max_wait is not None or verbose):
        raise click.UsageError("--load-time, --max-wait and --verbose go with --trace")

    plan = compile_or_exit(config, expand_budget)

    if trace_file is not None:
        run_trace(plan, trace_file, load_times, default_load_time, max_wait, verbose, fmt)
        return

    if request is not None:
        target = resolve_or_exit(plan, request.strip(), "--request")
        names = [n.strip() for n in (running or "").split(",") if n.strip()]
        state = tuple(sorted({resolve_or_exit(plan, n, "--running") for n in names}))
        d = plan.policy.decide(target, state, explain=explain)
        if fmt == "json":
            out = d.to_json(request=request.strip())
            if not explain:
                out.pop("candidates", None)
            click.echo(dumps(out))
        else:
            click.echo(explain_text(d, plan.engine, request.strip()))
            if explain:
                if d.candidates:
                    click.echo("candidates (best first):")
                    for line in explain_candidates(d):
                        click.echo(line)
                else:
                    click.echo("candidates: none (no set can hold it)" if plan.engine == "matrix"
                               else "candidates: groups have no alternatives")
        sys.exit(EXIT_OK)

    if all_:
        states = reachable_states(plan)
        for d in iter_decisions(plan, states, show_progress=True):
            if fmt == "json":
                out = d.to_json()
                out.pop("candidates", None)
                click.echo(dumps(out))
            else:
                click.echo(one_line(d))
        sys.exit(EXIT_OK)

    assert diff_with is not None
    new = compile_or_exit(diff_with, expand_budget)
    states = sorted(set(reachable_states(plan)) | set(reachable_states(new)), key=lambda s: (len(s), s))
    models = sorted(set(plan.models) | set(new.models))
    differences = 0
    for state in states:
        for target in models:
            old_d = plan.policy.decide(target, state) if target in plan.models else None
            new_d = new.policy.decide(target, state) if target in new.models else None
            if old_d is not None and new_d is not None and decision_key(old_d) == decision_key(new_d):
                continue
            differences += 1
            if fmt == "json":
                click.echo(dumps({
                    "running": list(state), "request": target,
                    "old": None if old_d is None else _diff_side(old_d),
                    "new": None if new_d is None else _diff_side(new_d),
                }))
            else:
                click.echo(f"[{', '.join(state)}] + {target}")
                click.echo(f"  - old: {_diff_text(old_d)}")
                click.echo(f"  + new: {_diff_text(new_d)}")
    if fmt == "text":
        click.echo(f"{differences} decision(s) differ" if differences else "no decision differs", err=True)
    sys.exit(EXIT_FAIL if exit_code and differences else EXIT_OK)


def _diff_side(d) -> dict:
    out = d.to_json()
    out.pop("candidates", None)
    for k in ("request", "model", "running"):
        out.pop(k, None)
    return out


def _diff_text(d) -> str:
    if d is None:
        return "unknown model (not in this config)"
    return (f"evict [{', '.join(d.evict)}]; set {d.set or '-'} [{', '.join(d.target_set)}]; cost {d.cost}")


def run_trace(plan: "Plan", trace_file: str, load_times: tuple[str, ...], default_load_time: float,
              max_wait: float | None, verbose: bool, fmt: str) -> None:
    """Replay a trace through the scheduler with a virtual clock (`plan --trace`)."""
    from dataclasses import replace

    from llamaswap.compiler.diagnostics import dumps
    from llamaswap.runtime.settings import scheduler_settings
    from llamaswap.runtime.simulate import KEEP, TraceError, TraceIssue, parse_trace, simulate

    loads: dict[str, float] = {}
    for item in load_times:
        name, sep, value = item.partition("=")
        try:
            seconds = float(value)
        except ValueError:
            seconds = -1.0
        if not sep or not name.strip() or not (seconds >= 0 and seconds != float("inf")):
            raise click.BadParameter(f"{item!r}: expected MODEL=SECONDS with SECONDS >= 0",
                                     param_hint="--load-time")
        loads[resolve_or_exit(plan, name.strip(), "--load-time")] = seconds
    text = read_config(trace_file)
    try:
        requests = parse_trace(text.splitlines())
        issues = []
        resolved = []
        for r in requests:
            real = plan.resolve_model(r.model)
            if real is None:
                issues.append(TraceIssue(r.line, f"unknown model {r.model!r}"))
            else:
                resolved.append(replace(r, model=real))
        if issues:
            raise TraceError(issues)
    except TraceError as exc:
        for issue in exc.issues:
            click.echo(f"{trace_file}:{issue.line}: error: {issue.message}", err=True)
        sys.exit(EXIT_FAIL)
    override = KEEP if max_wait is None else (None if max_wait == 0 else max_wait)
    result = simulate(plan.policy, scheduler_settings(plan), resolved, loads, default_load_time,
                      max_wait_override=override, verbose=verbose)
    if not result.get("rejected"):
        result.pop("rejected", None)  # keep the documented shape unless something was rejected
    if fmt == "json":
        click.echo(dumps(result))
    else:
        w = result["wait"]
        click.echo(f"{result['requests']} requests, {result['swaps']} swaps, makespan {result['makespan']:g}s")
        click.echo(f"wait: mean {w['mean']:g}s, p50 {w['p50']:g}s, p95 {w['p95']:g}s, max {w['max']:g}s")
        for model in sorted(set(result["loads"]) | set(result["evictions"])):
            click.echo(f"  {model}: loaded {result['loads'].get(model, 0)}x, "
                       f"evicted {result['evictions'].get(model, 0)}x")
        if result.get("rejected"):
            click.echo(f"rejected: {result['rejected']}")
        click.echo("served order: " + " ".join(result["served_order"]))
        for row in result.get("per_request", []):
            click.echo(f"  {row['model']}: at {row['at']:g}s, granted {row['granted_at']}, "
                       f"finished {row['finished_at']}, waited {row['wait']}")
    sys.exit(EXIT_OK)


# -- graph -------------------------------------------------------------------------------------

GRAPH_FORMATS = ("dot", "mermaid", "json", "text", "svg", "png")
GRAPH_SUFFIXES = {".dot": "dot", ".gv": "dot", ".mmd": "mermaid", ".mermaid": "mermaid", ".json": "json",
                  ".txt": "text", ".svg": "svg", ".png": "png"}


@cli.command("graph")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--view", type=click.Choice(["coexist", "refs", "sets", "transitions"]), required=True,
              help="coexist: which models may run together; refs: sets and their +refs (groups and members); "
                   "sets: the maximal combinations; transitions: running states and the requests that move "
                   "between them.")
@click.option("--format", "fmt", type=click.Choice(GRAPH_FORMATS), default=None,
              help="Output format (default: from the -o suffix, else text). svg and png need Graphviz's dot.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Write to FILE instead of standard output.")
@click.option("--focus", default=None, metavar="MODEL",
              help="Only the part of the view that involves MODEL (ID or alias).")
@expand_budget_option
def graph_cmd(config: str, view: str, fmt: str | None, output: str | None, focus: str | None,
              expand_budget: int | None) -> None:
    """Draw CONFIG as a graph: one VIEW, in one FORMAT.

    \b
    llamaswap graph CONFIG --view coexist --format dot | dot -Tsvg > coexist.svg
    llamaswap graph CONFIG --view transitions --focus MODEL -o transitions.png

    Exit 1 when the config has errors, the view cannot be built, or the graph is too large to
    draw (then --focus MODEL, --format text or --format json still work)."""
    from llamaswap.compiler.graph import DRAW_MAX_NODES, GraphError, build_graph, too_large
    from llamaswap.compiler.render import render, render_dot

    if fmt is None:
        fmt = GRAPH_SUFFIXES.get(Path(output).suffix.lower(), "text") if output else "text"
    draws = fmt in ("dot", "mermaid", "svg", "png")
    if fmt == "png" and output is None and sys.stdout.isatty():
        raise click.UsageError("png is binary: write it to a file with -o FILE")
    plan = compile_or_exit(config, expand_budget)
    real_focus = resolve_or_exit(plan, focus.strip(), "--focus") if focus is not None else None
    suggestion = "draw one model's part with --focus MODEL, or use --format text or json"

    states = None
    if view == "transitions":
        states = reachable_states(plan)
        if draws and real_focus is None and len(states) > DRAW_MAX_NODES:
            click.echo(f"error: {len(states):,} reachable running states, too many to draw (limit "
                       f"{DRAW_MAX_NODES:,} nodes); {suggestion}", err=True)
            sys.exit(EXIT_FAIL)
    try:
        g = build_graph(plan, view, focus=real_focus, states=states)
    except GraphError as exc:
        click.echo(f"error: {exc.message}" + (f"; {exc.hint}" if exc.hint else ""), err=True)
        sys.exit(EXIT_FAIL)
    if draws:
        why = too_large(g)
        if why is not None:
            click.echo(f"error: {why}; {suggestion}", err=True)
            sys.exit(EXIT_FAIL)

    if fmt in ("svg", "png"):
        from llamaswap.graphviz import GraphvizError, render as graphviz_render

        try:
            data = graphviz_render(render_dot(g), fmt)
        except GraphvizError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_FAIL)
        if output is None:
            sys.stdout.flush()
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
        else:
            write_bytes_atomically(output, data)
    else:
        text = render(g, fmt)
        if output is None:
            click.echo(text, nl=False)
        else:
            write_atomically(output, text)
    sys.exit(EXIT_OK)


def write_bytes_atomically(path: str, data: bytes) -> None:
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise click.UsageError(f"{path}: cannot write: {exc.strerror or exc}") from None


# -- serve -------------------------------------------------------------------------------------

def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", value
    host = host.strip("[]") or "0.0.0.0"
    try:
        number = int(port)
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected HOST:PORT, e.g. 127.0.0.1:8080") from None
    if not 0 <= number <= 65535:
        raise click.BadParameter(f"{value!r}: port must be between 0 and 65535")
    return host, number


@cli.command("serve")
@click.argument("config", type=click.Path(dir_okay=False), required=False)
@click.option("--listen", default="127.0.0.1:8080", show_default=True, metavar="HOST:PORT",
              callback=lambda ctx, param, value: parse_listen(value),
              help="Address to listen on (port 0 picks a free one).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warn", "error"]), default=None,
              help="Log level (default: the config's logLevel).")
@expand_budget_option
def serve_cmd(config: str | None, listen: tuple[str, int], log_level: str | None,
              expand_budget: int | None) -> None:
    """Serve CONFIG (or the built-in demo) as an OpenAI-compatible proxy that starts and stops
    upstream servers as requests need them."""
    import logging

    from llamaswap.compiler.plan import CompileOptions, compile_text
    from llamaswap.runtime import loop as loops
    from llamaswap.runtime.serve import DEMO_NAME, demo_config_text, serve

    host, port = listen
    if config is None:
        opts = {"env": dict(os.environ)}
        if expand_budget is not None:
            opts["expand_budget"] = expand_budget
        plan = compile_text(demo_config_text(), DEMO_NAME, CompileOptions(**opts))
    else:
        plan = compile_config(config, expand_budget)
    if not plan.ok:
        print_diagnostics(plan, "text", err=True)
        click.echo(f"{config}: the config has errors; not serving", err=True)
        sys.exit(EXIT_FAIL)
    level = (log_level or (plan.config.log_level if plan.config else "info")).upper()
    logging.basicConfig(level={"WARN": "WARNING"}.get(level, level), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    def announce(bound_host: str, bound_port: int) -> None:
        shown = "127.0.0.1" if bound_host in ("0.0.0.0", "") else bound_host
        url = f"http://{shown}:{bound_port}"
        what = "the built-in demo config" if config is None else config
        click.echo(f"llamaswap {__version__} serving {what} on {url} "
                   f"({len(plan.models)} models, {plan.engine} engine, {loops.loop_name()})")
        if bound_host not in ("127.0.0.1", "localhost", "::1"):
            click.echo(f"note: listening on {bound_host}: reachable from other hosts", err=True)
        example = "chat-small" if config is None else plan.models[0]
        click.echo("try:")
        click.echo(f"  curl -s {url}/v1/chat/completions -H 'Content-Type: application/json' "
                   f"-d '{{\"model\": \"{example}\", \"messages\": [{{\"role\": \"user\", "
                   f"\"content\": \"hello\"}}]}}'")
        click.echo(f"  curl -s {url}/v1/models")
        click.echo("stop with Ctrl-C", err=True)
        sys.stdout.flush()

    try:
        loops.run(lambda: serve(plan, host, port, announce))
    except OSError as exc:
        click.echo(f"error: cannot listen on {host}:{port}: {exc.strerror or exc}", err=True)
        sys.exit(EXIT_USAGE)
    except KeyboardInterrupt:
        pass
    sys.exit(EXIT_OK)


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
    # Exit at once, like a native server: interpreter teardown would add a few hundred
    # milliseconds to every stop (and to every swap that evicts a fake upstream).
    _flush_and_exit(code)


# Commands that run, print and end: skip the interpreter's teardown (freeing every module's
# objects costs a third of a short compile's wall time) once their output is flushed.
SHORT_LIVED = frozenset({"compile", "plan", "graph"})


def main() -> None:
    short = len(sys.argv) > 1 and sys.argv[1] in SHORT_LIVED
    try:
        cli(prog_name="llamaswap")
    except SystemExit as exc:
        if not short:
            raise
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if exc.code is not None and not isinstance(exc.code, int):
            print(exc.code, file=sys.stderr)
        _flush_and_exit(code)
    if short:
        _flush_and_exit(0)


def _flush_and_exit(code: int) -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (e.g. `| head`): nothing left to say
            pass
    os._exit(code)


if __name__ == "__main__":
    main()
