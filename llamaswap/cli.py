"""The click CLI: the only module that prints, colours or exits. It parses, prints and exits;
what it prints is computed by the compiler and the runtime (pure functions).

Exit codes are decided here and only here:
  0  success (no errors; warnings allowed unless --strict): the command returns
  1  the config has errors / the answer is "no" (unknown model, plan differs with --exit-code):
     the command raises `Fail`
  2  usage errors or an unreadable/unwritable file: `click.UsageError` / `click.BadParameter`,
     or `Fail(..., code=EXIT_USAGE)`
"""

from __future__ import annotations

import math
import os
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from llamaswap import __version__

# The compiler and the runtime are imported inside the commands that need them, on purpose:
# start-up time (`llamaswap compile` never loads aiohttp, `--help` loads neither).
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from llamaswap.compiler.plan import CompileOptions, Plan
    from llamaswap.compiler.virtual import PeerRoute
    from llamaswap.runtime.reload import ConfigSource
    from llamaswap.runtime.simulate import TraceIssue

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_USAGE = 2


class Seconds(click.ParamType):
    """A finite number of seconds >= 0 (click's FloatRange lets inf and nan through)."""

    name = "seconds"

    def convert(self, value, param, ctx):
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        if not math.isfinite(number) or number < 0:
            self.fail(f"{value!r} is not a finite number of seconds >= 0", param, ctx)
        return number


SECONDS = Seconds()


class Fail(click.ClickException):
    """End the command with `code` (EXIT_FAIL unless said otherwise), after printing `message`
    (if any) as is on stderr. Whatever the command printed before stays printed."""

    def __init__(self, message: str = "", code: int = EXIT_FAIL):
        super().__init__(message)
        self.exit_code = code  # type: ignore[misc]  # click's stubs make exit_code a ClassVar; ours is per instance

    def show(self, file=None) -> None:
        if self.message:
            click.echo(self.message, err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="llamaswap")
def cli() -> None:
    """Compile, dry-run, draw and serve llama-swap configs."""


# -- shared helpers ---------------------------------------------------------------------------

# Options and arguments more than one command takes, defined once.
config_argument = click.argument("config", type=click.Path(dir_okay=False))


class ConfigFile(click.Path):
    """A config file for a command that also takes --config-dir: a directory given instead
    says which option reads one (llama-swap's -config and -config-dir are easily mixed up)."""

    def __init__(self) -> None:
        super().__init__(dir_okay=False)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and os.path.isdir(value):
            self.fail(
                f"{value!r} is a directory; to merge the *.yml/*.yaml files in it, use --config-dir"
                f" {shlex.quote(value)} (llama-swap's -config-dir)",
                param,
                ctx,
            )
        return super().convert(value, param, ctx)


expand_budget_option = click.option(
    "--expand-budget",
    type=click.IntRange(min=0),
    default=None,
    metavar="N",
    help="Expand sets into concrete combinations up to N distinct ones in total; larger sets stay symbolic "
    "(default 100000).",
)


def format_option(choices: tuple[str, ...] | list[str], default: str | None, help: str | None = None):
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(list(choices)),
        default=default,
        show_default=default is not None,
        help=help,
    )


def output_option(help: str):
    """`-o FILE`, written with `write_output` (atomically, never half a file)."""
    return click.option(
        "-o", "--output", type=click.Path(dir_okay=False, writable=True), default=None, help=help
    )


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


def compile_config(path: str, expand_budget: int | None = None) -> Plan:
    return compile_source(read_config(path), path, expand_budget)


def check_policy(name: str, options: Mapping[str, object]) -> tuple[str | None, str, str | None] | None:
    """runtime.policies.check_policy, imported only for a policy other than the default:
    plain `fifo` (built in, no options) is always valid, and a `compile` of a config that
    does not name a policy need not load the runtime's scheduler (start-up time)."""
    if name == "fifo" and not options:
        return None
    from llamaswap.runtime.policies import check_policy as check

    return check(name, options)


def compile_options(expand_budget: int | None = None) -> CompileOptions:
    """The process environment (for `${env.X}`), the installed policies, the --expand-budget."""
    from llamaswap.compiler.plan import CompileOptions

    opts: dict = {"env": dict(os.environ), "policy_check": check_policy}
    if expand_budget is not None:
        opts["expand_budget"] = expand_budget
    return CompileOptions(**opts)


def compile_source(text: str, name: str, expand_budget: int | None = None) -> Plan:
    """Compile with the process environment (for `${env.X}`) and the --expand-budget."""
    from llamaswap.compiler.plan import compile_text

    return compile_text(text, name, compile_options(expand_budget))


def print_diagnostics(plan: Plan, fmt: str = "text", err: bool = True) -> None:
    from llamaswap.compiler.diagnostics import render_github, render_text

    if not plan.diagnostics:
        return
    if fmt == "github":
        click.echo(render_github(plan.diagnostics), nl=False, err=err)
    else:
        sources = {}
        for file in dict.fromkeys([plan.file, *(d.file for d in plan.diagnostics)]):
            try:
                sources[file] = read_config(file)
            except click.UsageError:
                pass
        click.echo(render_text(plan.diagnostics, sources), nl=False, err=err)


def write_output(path: str, data: str | bytes) -> None:
    """Write `-o FILE` atomically (a temporary file beside it, then a rename): a reader never
    sees half a file, and a failed write leaves the old one. Text is UTF-8."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise click.UsageError(f"{path}: cannot write: {exc.strerror or exc}") from None


# -- compile -----------------------------------------------------------------------------------


@cli.command("compile")
@click.argument("config", required=False, type=ConfigFile())
@click.option(
    "--config-dir",
    type=click.Path(file_okay=False),
    default=None,
    metavar="DIR",
    help="Also merge every *.yml/*.yaml file in DIR, in name order, as serve --config-dir does "
    "(llama-swap's -config-dir); CONFIG may then be left out.",
)
@format_option(["text", "json", "github"], "text", help="Output format.")
@click.option("--strict", is_flag=True, help="Treat warnings as errors (exit 1).")
@output_option("Write the compiled plan as JSON (only when there are no errors).")
@expand_budget_option
def compile_cmd(
    config: str | None,
    config_dir: str | None,
    fmt: str,
    strict: bool,
    output: str | None,
    expand_budget: int | None,
) -> None:
    """Check CONFIG (and/or the files in --config-dir): every problem at once, located, with
    hints. Exit 0 when it has no errors (warnings allowed unless --strict), 1 when it has, 2 on
    usage errors."""
    from llamaswap.compiler.diagnostics import Severity, dumps, summarize

    if config is None and config_dir is None:
        raise click.UsageError("give a CONFIG file, --config-dir DIR, or both")
    if config_dir is None:
        assert config is not None
        plan = compile_config(config, expand_budget)
    else:
        plan = compile_sources(config, config_dir, expand_budget)
    config = plan.file
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
            click.echo(
                f"{config}: {status} — {count(len(plan.models), 'model')}, {count(n_sets, what)} "
                f"({plan.engine} engine); {summarize(plan.diagnostics)}"
            )
    if failed:
        raise Fail()
    if output is not None:
        write_output(output, dumps(plan.artifact_json()) + "\n")


# -- plan --------------------------------------------------------------------------------------


def compile_or_exit(path: str, expand_budget: int | None) -> Plan:
    """Compile; on errors print the diagnostics and exit 1."""
    plan = compile_config(path, expand_budget)
    if not plan.ok:
        print_diagnostics(plan, "text", err=True)
        raise Fail(f"{path}: the config has errors; fix them first (llamaswap compile {path})")
    return plan


def resolve_or_exit(plan: Plan, name: str, what: str) -> str:
    real = plan.resolve_model(name)
    if real is None:
        from llamaswap.compiler.suggest import did_you_mean

        virtual = [s.id for s in plan.virtual.selectors] + [
            pin for p in plan.virtual.profiles for pin, _ in p.pins
        ]
        hint = did_you_mean(name, list(plan.models) + list(plan.aliases) + virtual, partial=True)
        hint = f" ({hint})" if hint else ""
        raise Fail(f"error: unknown model {name!r} in {what}{hint}; known models: {', '.join(plan.models)}")
    return real


def peer_route(plan: Plan, name: str) -> PeerRoute | None:
    """The peer route of `name` when it is no local model (local IDs and aliases win)."""
    return plan.virtual.route(name) if plan.resolve_model(name) is None else None


def explain_peer(plan: Plan, request: str, route: PeerRoute, fmt: str, via=None) -> None:
    """`plan --request` for a peer model: where it goes; nothing local changes. `via`: the
    profile pin / selector resolution that led to it (compiler/resolution.py), if any."""
    from llamaswap.compiler.diagnostics import dumps

    if fmt == "json":
        out = {"request": request, "peer": route.peer.id, "proxy": route.peer.proxy, "model": route.model}
        if via is not None:
            out["resolution"] = via.to_json()
        click.echo(dumps({**out, "evict": [], "swap": False}))
        return
    if via is not None:
        request = via.name
    click.echo(
        f"{request} is a peer model: forwarded to peer {route.peer.id} ({route.peer.proxy}) as "
        f"{route.model!r}, with no swap here: the running models stay as they are."
    )


def plan_resolution(
    plan: Plan, asked: str, profile: str | None, running: tuple[str, ...], in_flight: str | None
):
    """`plan --request` through the profile pins and selectors (compiler/resolution.py, as
    serve resolves them): the resolution (None when the ID is a plain model or alias, and no
    pin applies) and notes to print first. Running models count as ready."""
    from llamaswap.compiler.resolution import find_selector, is_virtual, pinned_by, resolve
    from llamaswap.compiler.suggest import did_you_mean

    names = [p.name for p in plan.virtual.profiles]
    notes: list[str] = []
    if profile is not None and profile not in names:
        hint = did_you_mean(profile, names) or (
            f"profiles: {', '.join(names)}" if names else "the config has none"
        )
        raise Fail(f"error: unknown profile {profile!r} in --profile ({hint})")
    known = plan.resolve_model(asked) is not None or find_selector(plan, asked) is not None
    if profile is None and not known:
        by = pinned_by(plan, asked)
        if len(by) == 1:
            profile = by[0]
            notes.append(
                f"note: '{asked}' is a pin of profile '{profile}' only; planned as if it were active "
                "(none is when llamaswap starts: PUT /api/profiles/active)"
            )
        elif by:
            raise Fail(
                f"error: '{asked}' is a pin of profiles {', '.join(by)}: say which is active with --profile"
            )
    if not is_virtual(plan, asked, profile):
        if in_flight is not None:
            raise click.UsageError("--in-flight goes with a --request that a spillover selector resolves")
        return None, notes
    counts: dict[tuple[str, str], int] = {}
    for item in (in_flight or "").split(","):
        if not item.strip():
            continue
        name, sep, value = item.partition("=")
        if not sep or not value.strip().isdigit():
            raise click.BadParameter(f"{item!r}: expected TARGET=N with N >= 0", param_hint="--in-flight")
        real = resolve_or_exit(plan, name.strip(), "--in-flight")
        for sel in plan.virtual.selectors:
            for t in sel.targets:
                if plan.resolve_model(t) == real:
                    counts[(sel.id, t)] = int(value)
    ready = set(running)
    via = resolve(
        plan, asked, profile=profile, state_of=lambda m: "ready" if m in ready else "stopped", inflight=counts
    )
    return via, notes


def show_refused(via, notes: list[str], fmt: str) -> None:
    """`plan --request` for an ID the active profile disables, or a selector with no target."""
    from llamaswap.compiler.diagnostics import dumps

    if fmt == "json":
        click.echo(
            dumps(
                {
                    "request": via.requested,
                    "resolution": via.to_json(),
                    "status": via.status,
                    "error": via.message,
                }
            )
        )
        return
    for line in notes + via.lines():
        click.echo(line)
    click.echo(f"The request gets {via.status}: {via.message}.")


PLAN_ALL_MAX = 2_000_000  # decisions `plan --all` / `--diff` / the transitions view will list


def states_or_fail(plan: Plan) -> list[tuple[str, ...]]:
    """Every reachable running state, for a listing of every decision; else exit 1 saying why."""
    from llamaswap.compiler.reachable import StatesError, reachable_states

    try:
        return reachable_states(plan, PLAN_ALL_MAX)
    except StatesError as exc:
        raise Fail(f"error: {exc.message}") from None


PLAN_PROGRESS_MIN = 20_000  # decisions; `plan --all` shows a progress bar (stderr) past this


def iter_decisions(plan: Plan, states: list[tuple[str, ...]], show_progress: bool):
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


@cli.command("plan")
@config_argument
@click.option(
    "--running", default=None, metavar="A,B", help="Models running now (IDs or aliases, comma-separated)."
)
@click.option(
    "--request",
    default=None,
    metavar="MODEL",
    help="The model a request asks for (ID, alias, selector, or a pin of a profile).",
)
@click.option(
    "--profile", default=None, metavar="NAME", help="With --request: the active profile (default: none)."
)
@click.option(
    "--in-flight",
    "in_flight",
    default=None,
    metavar="A=N,B=M",
    help="With --request: requests of the spillover selector in flight per target.",
)
@click.option("--explain", is_flag=True, help="Also list every candidate set, best first.")
@click.option("--all", "all_", is_flag=True, help="Print every precomputed decision.")
@click.option(
    "--diff",
    "diff_with",
    type=click.Path(dir_okay=False),
    default=None,
    metavar="NEW",
    help="Compare every decision of CONFIG with those of NEW.",
)
@click.option("--exit-code", is_flag=True, help="With --diff: exit 1 when some decision differs.")
@click.option(
    "--trace",
    "trace_file",
    type=click.Path(dir_okay=False),
    default=None,
    metavar="FILE",
    help="Replay a request trace through the scheduler with a virtual clock.",
)
@click.option(
    "--load-time",
    "load_times",
    multiple=True,
    metavar="MODEL=SECONDS",
    help="With --trace: a model's load time (repeatable; over the trace's own load_times).",
)
@click.option(
    "--default-load-time",
    type=SECONDS,
    default=1.0,
    show_default=True,
    help="With --trace: load time of models with none from --load-time or the trace.",
)
@click.option(
    "--max-wait",
    type=SECONDS,
    default=None,
    help="With --trace: override routing.scheduler.settings.fifo.max_wait (0 turns it off).",
)
@click.option("--verbose", is_flag=True, help="With --trace: add per-request details.")
@click.option(
    "--compare",
    default=None,
    metavar="P1,P2,...",
    help="With --trace: replay under each scheduling policy (e.g. fifo,hold) and print them side by side.",
)
@format_option(["text", "json"], "text")
@expand_budget_option
def plan_cmd(
    config: str,
    running: str | None,
    request: str | None,
    profile: str | None,
    in_flight: str | None,
    explain: bool,
    all_: bool,
    diff_with: str | None,
    exit_code: bool,
    trace_file: str | None,
    load_times: tuple[str, ...],
    default_load_time: float,
    max_wait: float | None,
    verbose: bool,
    compare: str | None,
    fmt: str,
    expand_budget: int | None,
) -> None:
    """Dry-run swap decisions for CONFIG.

    \b
    llamaswap plan CONFIG --running a,b --request c [--explain]
    llamaswap plan CONFIG --running a --request SELECTOR [--in-flight a=1] [--profile P]
    llamaswap plan CONFIG --all
    llamaswap plan OLD.yaml --diff NEW.yaml [--exit-code]
    llamaswap plan CONFIG --trace FILE [--load-time M=S ...] [--max-wait S] [--compare fifo,hold]
    """
    from llamaswap.compiler.diagnostics import dumps
    from llamaswap.compiler.explain import explain as explain_text
    from llamaswap.compiler.explain import explain_candidates, holding_sets, one_line

    modes = [request is not None, all_, diff_with is not None, trace_file is not None]
    if sum(modes) != 1:
        raise click.UsageError("give exactly one of --request, --all, --diff NEW or --trace FILE")
    if (running is not None or profile is not None or in_flight is not None) and request is None:
        raise click.UsageError("--running, --profile and --in-flight go with --request")
    if exit_code and diff_with is None:
        raise click.UsageError("--exit-code goes with --diff")
    if trace_file is None and (load_times or max_wait is not None or verbose or compare is not None):
        raise click.UsageError("--load-time, --max-wait, --verbose and --compare go with --trace")
    if compare is not None and verbose:
        raise click.UsageError("--verbose does not go with --compare")

    plan = compile_or_exit(config, expand_budget)

    if trace_file is not None:
        run_trace(plan, trace_file, load_times, default_load_time, max_wait, verbose, fmt, compare)
        return

    if request is not None:
        names = [n.strip() for n in (running or "").split(",") if n.strip()]
        state = tuple(sorted({resolve_or_exit(plan, n, "--running") for n in names}))
        from llamaswap.compiler.reachable import why_unreachable

        why = why_unreachable(plan, state)
        if why is not None:
            raise Fail(
                f"error: --running {','.join(names)}: this state cannot happen: {why}\n"
                f"hint: llamaswap graph {shlex.quote(config)} --view coexist --focus {shlex.quote(state[0])} "
                f"shows what may run beside {state[0]}"
            )
        asked = request.strip()
        via, notes = plan_resolution(plan, asked, profile, state, in_flight)
        if via is not None and via.status:
            show_refused(via, notes, fmt)
            return
        if (peer := peer_route(plan, via.name if via is not None else asked)) is not None:
            if fmt == "text":
                for line in notes + (via.lines() if via is not None else []):
                    click.echo(line)
            explain_peer(plan, asked, peer, fmt, via)
            return
        target = resolve_or_exit(plan, via.name if via is not None else asked, "--request")
        d = plan.policy.decide(target, state, explain=explain)
        after = tuple(sorted({*(m for m in state if m not in d.evict), target}))
        asked_model = via.name if via is not None else asked
        if fmt == "json":
            out = d.to_json(request=asked)
            if via is not None:
                out["resolution"] = via.to_json()
            if not explain:
                out.pop("candidates", None)
            elif plan.resources is not None:
                from llamaswap.compiler.resources import device_use

                out["devices"] = {
                    "before": device_use(plan.resources, state),
                    "after": device_use(plan.resources, after),
                }
            click.echo(dumps(out))
        else:
            for line in notes + (via.lines() if via is not None else []):
                click.echo(line)
            click.echo(explain_text(d, plan.engine, asked_model))
            if explain:
                if d.candidates:
                    click.echo("candidates (best first):")
                    for line in explain_candidates(d):
                        click.echo(line)
                elif plan.engine == "matrix" and target in state:
                    held = holding_sets(plan.sets, target, state)
                    click.echo(
                        "candidates: none to weigh (it is running); sets that hold it (* = with the "
                        "models running now):"
                        if held
                        else "candidates: none (it is in no set)"
                    )
                    for line in held:
                        click.echo(line)
                else:
                    click.echo(
                        "candidates: none (no set can hold it)"
                        if plan.engine == "matrix"
                        else "candidates: groups have no alternatives"
                    )
                if plan.resources is not None:
                    from llamaswap.compiler.resources import explain_devices

                    for line in explain_devices(plan.resources, state, after):
                        click.echo(line)
        return

    if all_:
        states = states_or_fail(plan)
        for d in iter_decisions(plan, states, show_progress=True):
            if fmt == "json":
                out = d.to_json()
                out.pop("candidates", None)
                click.echo(dumps(out))
            else:
                click.echo(one_line(d))
        return

    assert diff_with is not None
    from llamaswap.compiler.diff import diff_plans
    from llamaswap.compiler.reachable import StatesError

    new = compile_or_exit(diff_with, expand_budget)
    try:
        changes = diff_plans(plan, new, PLAN_ALL_MAX)
    except StatesError as exc:
        raise Fail(f"error: {exc.message}") from None
    differences = 0
    for change in changes:
        differences += 1
        if fmt == "json":
            click.echo(dumps(change.to_json()))
        else:
            for line in change.lines():
                click.echo(line)
    if fmt == "text":
        click.echo(f"{differences} decision(s) differ" if differences else "no decision differs", err=True)
    if exit_code and differences:
        raise Fail()


TRACE_ISSUES_SHOWN = 20  # a trace with more bad lines lists the first ones and a summary


def _trace_issues(
    trace_file: str, issues: Sequence[TraceIssue], unknown: Mapping[str, int], models: Iterable[str]
) -> str:
    """A trace's problems as `FILE:LINE: error: ...` lines: the first TRACE_ISSUES_SHOWN, then
    how many more, and, when lines name models the config does not have (`unknown`: each
    one's number of lines), which ones."""
    lines = [f"{trace_file}:{issue.line}: error: {issue.message}" for issue in issues[:TRACE_ISSUES_SHOWN]]
    if len(issues) > TRACE_ISSUES_SHOWN:
        lines.append(f"{trace_file}: ... and {len(issues) - TRACE_ISSUES_SHOWN} more errors")
    if unknown:
        named = ", ".join(f"{name} ({n} lines)" for name, n in sorted(unknown.items()))
        lines.append(
            f"{trace_file}: the config has no model {named}; the config's models: {', '.join(models)}"
            " (a trace from `trace export CONFIG` or `--model M` keeps only those)"
        )
    return "\n".join(lines)


def run_trace(
    plan: Plan,
    trace_file: str,
    load_times: tuple[str, ...],
    default_load_time: float,
    max_wait: float | None,
    verbose: bool,
    fmt: str,
    compare: str | None = None,
) -> None:
    """Replay a trace through the scheduler with a virtual clock (`plan --trace`), under the
    configured scheduling policy, or under each of `compare` side by side."""
    from llamaswap.compiler.diagnostics import dumps
    from llamaswap.runtime.policies import PolicyError
    from llamaswap.runtime.settings import scheduler_settings, scheduling_policy
    from llamaswap.runtime.simulate import (
        KEEP,
        TraceError,
        compare_table,
        parse_trace,
        resolve_trace,
        simulate,
        trace_load_times,
    )

    loads: dict[str, float] = {}
    for item in load_times:
        name, sep, value = item.partition("=")
        try:
            seconds = float(value)
        except ValueError:
            seconds = -1.0
        if not sep or not name.strip() or not (seconds >= 0 and seconds != float("inf")):
            raise click.BadParameter(
                f"{item!r}: expected MODEL=SECONDS with SECONDS >= 0", param_hint="--load-time"
            )
        loads[resolve_or_exit(plan, name.strip(), "--load-time")] = seconds
    text = read_config(trace_file)
    try:
        parsed = parse_trace(text.splitlines())
    except TraceError as exc:
        raise Fail(_trace_issues(trace_file, exc.issues, {}, plan.models)) from None
    try:
        resolved = resolve_trace(parsed, plan.resolve_model)
    except TraceError as exc:
        unknown: dict[str, int] = {}
        for r in parsed:
            if plan.resolve_model(r.model) is None:
                unknown[r.model] = unknown.get(r.model, 0) + 1
        raise Fail(_trace_issues(trace_file, exc.issues, unknown, plan.models)) from None
    # Load times the trace carries (`trace export` writes the ones the server measured), for
    # the models --load-time does not name; those of models the config no longer has are moot.
    from_trace: dict[str, float] = {}
    for name, seconds in trace_load_times(text.splitlines()).items():
        model = plan.resolve_model(name)
        if model is not None and model not in loads:
            from_trace[model] = seconds
    loads.update(from_trace)
    note = (
        "load times from the trace: " + ", ".join(f"{m}={v:g}s" for m, v in sorted(from_trace.items()))
        if from_trace
        else None
    )
    override = KEEP if max_wait is None else (None if max_wait == 0 else max_wait)
    if compare is not None:
        names = list(dict.fromkeys(n.strip() for n in compare.split(",") if n.strip()))
        if not names:
            raise click.BadParameter("expected policy names, e.g. fifo,hold", param_hint="--compare")
        results = {}
        for name in names:
            try:
                scheduling = scheduling_policy(plan, name)
            except PolicyError as exc:
                hint = f" ({exc.hint})" if exc.hint else ""
                raise click.BadParameter(f"{exc}{hint}", param_hint="--compare") from None
            results[name] = simulate(
                plan.policy,
                scheduler_settings(plan),
                resolved,
                loads,
                default_load_time,
                max_wait_override=override,
                scheduling=scheduling,
            )
        rows = compare_table(results, loads, default_load_time)
        if fmt == "json":
            click.echo(dumps({"trace": trace_file, "policies": rows}))
        else:
            click.echo(f"{len(resolved)} requests in {trace_file}")
            if note:
                click.echo(note)
            head = ("policy", "swaps", "load-s", "p50", "p95", "max", "mean", "makespan", "rejected")
            table = [head] + [
                (
                    name,
                    str(r["swaps"]),
                    f"{r['load_seconds']:g}",
                    f"{r['wait']['p50']:g}",
                    f"{r['wait']['p95']:g}",
                    f"{r['wait']['max']:g}",
                    f"{r['wait']['mean']:g}",
                    f"{r['makespan']:g}",
                    str(r["rejected"]),
                )
                for name, r in rows.items()
            ]
            widths = [max(len(row[i]) for row in table) for i in range(len(head))]
            for row in table:
                click.echo(
                    "  ".join(
                        c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))
                    ).rstrip()
                )
            click.echo(
                "waits in seconds (p50/p95/max/mean over granted requests); load-s: seconds spent loading"
            )
        return
    try:
        scheduling = scheduling_policy(plan)
    except PolicyError as exc:
        raise Fail(f"error: {exc}") from None
    result = simulate(
        plan.policy,
        scheduler_settings(plan),
        resolved,
        loads,
        default_load_time,
        max_wait_override=override,
        verbose=verbose,
        scheduling=scheduling,
    )
    if not result.get("rejected"):
        result.pop("rejected", None)  # keep the documented shape unless something was rejected
    if fmt == "json":
        click.echo(dumps(result))
    else:
        w = result["wait"]
        click.echo(
            f"{result['requests']} requests, {result['swaps']} swaps, makespan {result['makespan']:g}s"
        )
        if note:
            click.echo(note)
        click.echo(f"wait: mean {w['mean']:g}s, p50 {w['p50']:g}s, p95 {w['p95']:g}s, max {w['max']:g}s")
        for model in sorted(set(result["loads"]) | set(result["evictions"])):
            click.echo(
                f"  {model}: loaded {result['loads'].get(model, 0)}x, "
                f"evicted {result['evictions'].get(model, 0)}x"
            )
        if result.get("rejected"):
            click.echo(f"rejected: {result['rejected']}")
        click.echo("served order: " + " ".join(result["served_order"]))
        for row in result.get("per_request", []):
            click.echo(
                f"  {row['model']}: at {row['at']:g}s, granted {row['granted_at']}, "
                f"finished {row['finished_at']}, waited {row['wait']}"
            )


# -- graph -------------------------------------------------------------------------------------

GRAPH_FORMATS = ("dot", "mermaid", "json", "text", "svg", "png")
GRAPH_SUFFIXES = {
    ".dot": "dot",
    ".gv": "dot",
    ".mmd": "mermaid",
    ".mermaid": "mermaid",
    ".json": "json",
    ".txt": "text",
    ".svg": "svg",
    ".png": "png",
}


@cli.command("graph")
@config_argument
@click.option(
    "--view",
    type=click.Choice(["coexist", "refs", "sets", "transitions", "devices"]),
    required=True,
    help="coexist: which models may run together (coloured by device, with resources); refs: sets "
    "and their +refs (groups and members); sets: the maximal combinations; transitions: running "
    "states and the requests that move between them; devices: each combination's placement as "
    "per-device bars (resources).",
)
@format_option(
    GRAPH_FORMATS,
    None,
    help="Output format (default: from the -o suffix, else text). svg and png need Graphviz's dot.",
)
@output_option("Write to FILE instead of standard output.")
@click.option(
    "--focus",
    default=None,
    metavar="MODEL",
    help="Only the part of the view that involves MODEL (ID or alias).",
)
@expand_budget_option
def graph_cmd(
    config: str, view: str, fmt: str | None, output: str | None, focus: str | None, expand_budget: int | None
) -> None:
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
    example = f" (e.g. --focus {shlex.quote(plan.models[0])})" if plan.models else ""
    suggestion = f"draw one model's part with --focus MODEL{example}, or use --format text or json"

    states = None
    if view == "transitions":
        from llamaswap.compiler.reachable import StatesError, reachable_states

        try:
            states = reachable_states(plan, PLAN_ALL_MAX)
        except StatesError as exc:
            raise Fail(
                f"error: {exc.message}. The transitions view needs every state: draw one model's part of "
                f"another view instead, --view coexist --focus MODEL{example}"
            ) from None
        if draws and real_focus is None and len(states) > DRAW_MAX_NODES:
            raise Fail(
                f"error: {len(states):,} reachable running states, too many to draw (limit "
                f"{DRAW_MAX_NODES:,} nodes); {suggestion}"
            )
    try:
        g = build_graph(plan, view, focus=real_focus, states=states)
    except GraphError as exc:
        raise Fail(f"error: {exc.message}" + (f"; {exc.hint}" if exc.hint else "")) from None
    if draws:
        why = too_large(g)
        if why is not None:
            raise Fail(f"error: {why}; {suggestion}")

    if fmt in ("svg", "png"):
        from llamaswap.graphviz import GraphvizError
        from llamaswap.graphviz import render as graphviz_render

        try:
            data = graphviz_render(render_dot(g), fmt)
        except GraphvizError as exc:
            raise Fail(f"error: {exc}") from None
        if output is None:
            sys.stdout.flush()
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
        else:
            write_output(output, data)
    else:
        text = render(g, fmt)
        if output is None:
            click.echo(text, nl=False)
        else:
            write_output(output, text)


# -- serve -------------------------------------------------------------------------------------


def parse_listen(value: str) -> tuple[str, int]:
    if "/" in value:
        # A URL (http://host:port/...): its host and port are what was meant.
        address = value.split("://", 1)[-1].split("/", 1)[0] or "127.0.0.1:8080"
        raise click.BadParameter(f"{value!r}: expected HOST:PORT without a scheme or path, e.g. {address}")
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


def config_source(config: str | None, config_dir: str | None, expand_budget: int | None) -> ConfigSource:
    """Where serve's config comes from, read again on every hot reload: `--config`, and the
    `*.yml`/`*.yaml` files directly in `--config-dir` (sorted by name, listed anew each time),
    merged by llama-swap's rules; diagnostics point into the file each part came from."""
    from dataclasses import replace

    from llamaswap.compiler.diagnostics import sort_diagnostics
    from llamaswap.compiler.merge import Source, merge_sources
    from llamaswap.compiler.plan import Plan, compile_text
    from llamaswap.runtime.sources import ConfigSource, SourceError, file_source, read_text_file

    options = compile_options(expand_budget)
    if config_dir is None:
        assert config is not None
        return file_source(config, options)
    directory = Path(config_dir)

    def files() -> list[str]:
        try:
            names = sorted(
                p.name for p in directory.iterdir() if p.is_file() and p.name.endswith((".yml", ".yaml"))
            )
        except NotADirectoryError:
            raise SourceError(f"-config-dir {config_dir}: not a directory") from None
        except OSError as exc:
            raise SourceError(f"-config-dir {config_dir}: {exc.strerror or exc}") from None
        found = [str(directory / n) for n in names]
        if config is not None:
            mine = Path(config).resolve()
            if any(Path(f).resolve() == mine for f in found):
                raise SourceError(
                    f"-config path {config} is also present in -config-dir {config_dir}; remove it from one"
                )
            found.insert(0, config)
        if not found:
            raise SourceError(f"-config-dir {config_dir}: no *.yml or *.yaml files in it")
        return found

    def build(texts: Mapping[str, str], opts: CompileOptions) -> Plan:
        merged = merge_sources([Source(f, t) for f, t in texts.items()])
        names = list(texts)
        label = names[0] if len(names) == 1 else f"{config_dir} ({len(names)} files merged)"
        if merged.text is None:
            return Plan(
                file=label,
                engine="group",
                models=(),
                config=None,
                aliases={},
                ports={},
                sets=(),
                evict_costs={},
                groups=(),
                preload=(),
                priority={},
                diagnostics=sort_diagnostics(merged.diagnostics),
            )
        plan = compile_text(merged.text, label, opts)
        return replace(
            plan,
            diagnostics=sort_diagnostics(
                [*merged.diagnostics, *(merged.locate(d) for d in plan.diagnostics)]
            ),
        )

    paths = tuple(p for p in (config, config_dir) if p is not None)
    return ConfigSource(config_dir, paths, lambda: {f: read_text_file(f) for f in files()}, build, options)


def compile_sources(
    config: str | None, config_dir: str | None, expand_budget: int | None, source: ConfigSource | None = None
) -> Plan:
    """Compile what `config_source` names; an unreadable part is a usage error (exit 2)."""
    from llamaswap.runtime.sources import SourceError

    source = source or config_source(config, config_dir, expand_budget)
    try:
        plan, _ = source.compile({}, None)
    except SourceError as exc:
        raise click.UsageError(str(exc)) from None
    return plan


# -- trace -------------------------------------------------------------------------------------


@cli.group("trace")
def trace_group() -> None:
    """Request traces for `plan --trace`: export recorded traffic."""


@trace_group.command("export")
@click.argument("config", type=click.Path(dir_okay=False), required=False)
@click.option(
    "--db",
    "db",
    type=click.Path(dir_okay=False),
    default=None,
    metavar="PATH",
    help="The activity database (default: the one CONFIG's serve writes, store.path; without "
    "CONFIG, the default store, $XDG_DATA_HOME/llamaswap/activity.sqlite3).",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    help="Write the trace to FILE instead of standard output.",
)
@click.option(
    "--since", default=None, metavar="TIME", help="Only requests that arrived at or after TIME (RFC 3339)."
)
@click.option(
    "--until", default=None, metavar="TIME", help="Only requests that arrived before TIME (RFC 3339)."
)
@click.option("--model", "models", multiple=True, metavar="MODEL", help="Only these models (repeatable).")
@expand_budget_option
def trace_export_cmd(
    config: str | None,
    db: str | None,
    output: str | None,
    since: str | None,
    until: str | None,
    models: tuple[str, ...],
    expand_budget: int | None,
) -> None:
    """Turn the activity store's recorded requests into a trace file.

    \b
    llamaswap trace export CONFIG -o last-week.jsonl --since 2026-11-24T00:00:00Z
    llamaswap plan CONFIG --trace last-week.jsonl --compare fifo,hold

    Each recorded request becomes {"at", "model", "duration"}: seconds after the first one,
    the real model ID it was served by, and the time the model spent on it (total minus the
    wait for a grant). With CONFIG, requests for models it does not have are left out (a
    comment line counts them), so the trace replays against CONFIG. A first line
    {"load_times": {...}} gives each model's median load time (spawn to ready) as the server
    measured it, which `plan --trace` uses unless --load-time says otherwise."""
    import sqlite3

    from llamaswap.runtime.activity import load_times, parse_time, store_path
    from llamaswap.runtime.simulate import format_load_times, format_trace, trace_from_activity

    if db is None and config is None:
        # `serve` without a config (the built-in demo), or with one that sets no store.path,
        # writes here.
        from llamaswap.runtime.activity import default_path

        db = str(default_path())
    plan = None if config is None else compile_or_exit(config, expand_budget)
    if db is None:
        assert plan is not None
        path = store_path(plan.config)
        if path is None:
            raise Fail(f"{config}: store.path is ':memory:', so no activity was kept on disk")
        db = str(path)
    bounds = []
    for name, value in (("--since", since), ("--until", until)):
        try:
            bounds.append(None if value is None else parse_time(value))
        except ValueError:
            raise click.BadParameter(
                f"{value!r} is not an RFC 3339 time (e.g. 2026-11-24T09:00:00Z)", param_hint=name
            ) from None
    if not os.path.isfile(db):
        raise Fail(f"{db}: no activity database there (llamaswap serve writes it as it serves)")
    query = "SELECT ts, model, wait_ms, duration_ms FROM activity WHERE model != '(unknown)'"
    args: list = []
    if bounds[0] is not None:
        query += " AND ts >= ?"
        args.append(bounds[0])
    if bounds[1] is not None:
        query += " AND ts < ?"
        args.append(bounds[1])
    if models:
        query += f" AND model IN ({', '.join('?' for _ in models)})"
        args.extend(models)
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            rows = con.execute(query + " ORDER BY ts, id", args).fetchall()
            loads = load_times(con, bounds[0], bounds[1], models)
        finally:
            con.close()
    except sqlite3.Error as exc:
        raise Fail(f"{db}: cannot read the activity table: {exc}") from None
    left_out: dict[str, int] = {}
    if plan is not None:  # a store several configs shared (the default one) holds others' models
        known = set(plan.models)
        for row in rows:
            if row[1] not in known:
                left_out[row[1]] = left_out.get(row[1], 0) + 1
        if left_out:
            rows = [row for row in rows if row[1] in known]
            loads = {model: seconds for model, seconds in loads.items() if model in known}
    requests = trace_from_activity(rows)
    lines = [f"# {len(requests)} requests exported from {db}"]
    if left_out:
        counts = ", ".join(f"{model} ({n})" for model, n in sorted(left_out.items()))
        lines.append(f"# left out, for models {config} does not have: {counts}")
    if loads:
        lines += [
            "# load_times: the median seconds from spawn to ready of the loads recorded then",
            format_load_times(loads),
        ]
    lines += format_trace(requests)
    text = "\n".join(lines) + "\n"
    if output is None:
        click.echo(text, nl=False)
    else:
        Path(output).write_text(text, encoding="utf-8")
        click.echo(f"wrote {len(requests)} requests to {output}", err=True)


@cli.command("serve")
@click.argument("config_arg", metavar="[CONFIG]", type=ConfigFile(), required=False)
@click.option(
    "--config",
    "config_opt",
    type=ConfigFile(),
    default=None,
    metavar="FILE",
    help="The config file (llama-swap's -config; the same as CONFIG).",
)
@click.option(
    "--config-dir",
    type=click.Path(file_okay=False),
    default=None,
    metavar="DIR",
    help="Also merge every *.yml/*.yaml file in DIR, in name order (llama-swap's -config-dir).",
)
@click.option(
    "--listen",
    default=None,
    metavar="HOST:PORT",
    callback=lambda ctx, param, value: None if value is None else parse_listen(value),
    help="Address to listen on; :PORT means every interface, port 0 picks a free one "
    "[default: 127.0.0.1:8080, 127.0.0.1:8443 with TLS].",
)
@click.option(
    "--tls-cert-file",
    type=click.Path(dir_okay=False),
    default=None,
    metavar="FILE",
    help="TLS certificate (PEM); with --tls-key-file, serve HTTPS.",
)
@click.option(
    "--tls-key-file",
    type=click.Path(dir_okay=False),
    default=None,
    metavar="FILE",
    help="TLS private key (PEM).",
)
@click.option(
    "--watch-config",
    is_flag=True,
    help="Reload the config when the file (or --config-dir) changes, as SIGHUP and POST "
    "/api/config/reload do: only what changed restarts.",
)
@click.option("--version", "show_version", is_flag=True, help="Print the version and commit, and exit.")
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warn", "error"]),
    default=None,
    help="Log level (default: the config's logLevel).",
)
@click.option(
    "--shutdown-timeout",
    type=SECONDS,
    default=None,
    metavar="SECONDS",
    help="On SIGTERM/SIGINT, how long requests in flight may take to finish before "
    "the upstreams stop (default: the config's llamaswap.shutdownTimeout, 30).",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Log lines as text, or as one JSON object per line.",
)
@expand_budget_option
def serve_cmd(
    config_arg: str | None,
    config_opt: str | None,
    config_dir: str | None,
    listen: tuple[str, int] | None,
    tls_cert_file: str | None,
    tls_key_file: str | None,
    watch_config: bool,
    show_version: bool,
    log_level: str | None,
    shutdown_timeout: float | None,
    log_format: str,
    expand_budget: int | None,
) -> None:
    """Serve CONFIG (or the built-in demo) as an OpenAI-compatible proxy that starts and stops
    upstream servers as requests need them.

    \b
    llama-swap's command line works too:
      llamaswap serve -config config.yaml -listen :8080
      llamaswap -config config.yaml -config-dir conf.d -listen :8080"""
    import logging

    from llamaswap.runtime import loop as loops
    from llamaswap.runtime.logs import configure as configure_logs
    from llamaswap.runtime.reaper import AlreadyServing
    from llamaswap.runtime.serve import DEMO_NAME, demo_config_text, serve
    from llamaswap.runtime.sources import text_source

    if show_version:
        from llamaswap.buildinfo import version_line

        click.echo(version_line())
        return
    # The server reads the set DSL with the hand parser (same trees and errors as Lark's, no
    # Lark import at start-up: compiler/parse.py); compile, plan and graph keep Lark's.
    from llamaswap.compiler import parse as dsl_parse

    dsl_parse.use_parser("hand")
    if config_arg is not None and config_opt is not None and config_arg != config_opt:
        raise click.UsageError("give the config once: as CONFIG or with --config")
    config = config_opt or config_arg
    if (tls_cert_file is None) != (tls_key_file is None):
        raise Fail("both -tls-cert-file and -tls-key-file must be provided for TLS")
    tls = tls_cert_file is not None
    host, port = listen if listen is not None else ("127.0.0.1", 8443 if tls else 8080)
    if config is None and config_dir is None:
        demo = demo_config_text()
        plan = compile_source(demo, DEMO_NAME, expand_budget)
        source = text_source(demo, DEMO_NAME, plan.options)
    else:
        source = config_source(config, config_dir, expand_budget)
        plan = compile_sources(config, config_dir, expand_budget, source)
    what = "the built-in demo config" if config is None and config_dir is None else plan.file
    if not plan.ok:
        print_diagnostics(plan, "text", err=True)
        raise Fail(f"{what}: the config has errors; not serving")
    ssl_context = None
    if tls:
        import ssl

        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            ssl_context.load_cert_chain(tls_cert_file, tls_key_file)  # type: ignore[arg-type]
        except (OSError, ssl.SSLError) as exc:
            raise Fail(
                f"error: cannot use the TLS certificate {tls_cert_file} and key {tls_key_file}: "
                f"{getattr(exc, 'strerror', None) or exc}"
            ) from None
    # llama-swap reads an unknown logLevel as info (compile warns about it, LS412).
    c = plan.config
    configure_logs(
        log_level or (c.log_level if c else "info"),
        c.log_to_stdout if c else "proxy",
        c.log_time_format if c else "",
        log_format,
    )

    def announce(bound_host: str, bound_port: int) -> None:
        from llamaswap.runtime.banner import banner

        prefer = "chat-small" if what == "the built-in demo config" else None  # the demo's small chat model
        for line, to_err in banner(
            plan, what, bound_host, bound_port, loops.loop_name(), __version__, tls=tls, prefer=prefer
        ):
            if to_err and log_format == "json":  # stderr is the log: keep it one JSON object per line
                logging.getLogger("llamaswap.serve").warning(line) if line.startswith(
                    "note:"
                ) else logging.getLogger("llamaswap.serve").info(line)
            else:
                click.echo(line, err=to_err)
        sys.stdout.flush()

    try:
        loops.run(
            lambda: serve(
                plan,
                host,
                port,
                announce,
                ssl_context=ssl_context,
                source=source,
                watch=watch_config,
                shutdown_timeout=shutdown_timeout,
            )
        )
    except AlreadyServing as exc:
        raise Fail(f"error: {what}: {exc}", code=EXIT_USAGE) from None
    except OSError as exc:
        raise Fail(f"error: cannot listen on {host}:{port}: {exc.strerror or exc}", code=EXIT_USAGE) from None
    except KeyboardInterrupt:
        pass


@cli.command("fake-upstream")
@click.option("--port", type=int, required=True, help="Port to listen on (0 picks a free one).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--name", default="fake", show_default=True, help="Name echoed in every response.")
@click.option(
    "--startup-delay",
    type=float,
    default=0.0,
    show_default=True,
    help="Seconds during which /health answers 503.",
)
@click.option("--fail-health", is_flag=True, help="/health never answers 200.")
@click.option(
    "--exit-after",
    type=float,
    default=None,
    help="Exit by itself this many seconds after start (simulates a crash).",
)
@click.option(
    "--token-delay", type=float, default=0.0, show_default=True, help="Seconds between streamed chunks."
)
def fake_upstream_cmd(
    port: int,
    host: str,
    name: str,
    startup_delay: float,
    fail_health: bool,
    exit_after: float | None,
    token_delay: float,
) -> None:
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


def _without_pydantic_plugins() -> None:
    """Answer pydantic's plugin lookup with "none" without importing importlib.metadata.

    When pydantic builds its first model it imports `pydantic.plugin._loader`, which imports
    importlib.metadata (with email, zipfile, csv, ...) to scan every installed distribution
    for the `pydantic` entry-point group. No llamaswap command uses a pydantic plugin, and the
    lookup cost `compile` and `serve` ~20 ms of CPU at every start (in-process A/B) and serve
    ~0.4 MB. So the CLI registers a module of that name whose get_plugins() returns no
    plugins, as pydantic's own does under PYDANTIC_DISABLE_PLUGINS=__all__; a name pydantic
    may ask of it in a later version, other than get_plugins, loads pydantic's real module."""
    import importlib
    import types

    name = "pydantic.plugin._loader"
    if name in sys.modules:
        return
    module = types.ModuleType(name, "llamaswap: pydantic plugins are not looked up (cli.py)")

    def get_plugins() -> tuple[()]:
        return ()

    def __getattr__(attr: str) -> object:
        if attr.startswith("__"):  # the import system asks for __path__, __spec__, ...
            raise AttributeError(attr)
        if sys.modules.get(name) is module:
            del sys.modules[name]
        return getattr(importlib.import_module(name), attr)

    module.get_plugins = get_plugins  # type: ignore[attr-defined]
    module.__getattr__ = __getattr__  # type: ignore[method-assign]
    sys.modules[name] = module


def main() -> None:
    from llamaswap.argv import normalise

    _without_pydantic_plugins()
    args = normalise(sys.argv[1:])
    short = bool(args) and args[0] in SHORT_LIVED
    try:
        cli(args=args, prog_name="llamaswap")
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
