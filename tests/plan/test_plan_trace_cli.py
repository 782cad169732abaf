"""`llamaswap plan CONFIG --trace FILE`: the JSON report's shape, collation, aliases, load
times, `--max-wait` overriding the config, `--verbose`, and located errors for bad traces."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from llamaswap.cli import cli

EXCLUSIVE = """\
models:
  a: {cmd: "server --port ${PORT}", aliases: [alpha]}
  b: {cmd: "server --port ${PORT}"}
  c: {cmd: "server --port ${PORT}"}
"""

REPORT_KEYS = {"requests", "swaps", "loads", "evictions", "served_order", "wait", "makespan"}


def trace_run(tmp_path: Path, trace: str, *args: str, config: str = EXCLUSIVE):
    (tmp_path / "config.yaml").write_text(config)
    (tmp_path / "trace.jsonl").write_text(trace)
    return CliRunner().invoke(
        cli, ["plan", str(tmp_path / "config.yaml"), "--trace", str(tmp_path / "trace.jsonl"), *args]
    )


def test_abcabc_is_served_aabbcc_with_three_swaps(tmp_path):
    result = trace_run(tmp_path, "a\nb\nc\nalpha\nb\nc\n", "--default-load-time", "10", "--format", "json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report) == REPORT_KEYS
    assert report["served_order"] == ["a", "a", "b", "b", "c", "c"]
    assert report["swaps"] == 3
    assert report["loads"] == {"a": 1, "b": 1, "c": 1}
    assert report["evictions"] == {"a": 1, "b": 1}
    assert report["requests"] == 6
    assert report["makespan"] == 33.0  # three 10 s loads, then 1 s of service each
    assert set(report["wait"]) == {"mean", "p50", "p95", "max"}
    assert report["wait"]["max"] == 32.0


def test_load_times_verbose_and_text(tmp_path):
    trace = '{"at": 0, "model": "a", "duration": 2}\n{"at": 1, "model": "b"}\n'
    result = trace_run(
        tmp_path, trace, "--load-time", "alpha=3", "--load-time", "b=5", "--verbose", "--format", "json"
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    rows = report["per_request"]
    assert [(r["model"], r["at"], r["granted_at"], r["finished_at"], r["wait"]) for r in rows] == [
        ("a", 0.0, 3.0, 5.0, 3.0),  # a loads in 3 s, serves 2 s
        ("b", 1.0, 10.0, 11.0, 9.0),  # b waits for a to finish, then loads in 5 s
    ]
    text = trace_run(tmp_path, trace, "--load-time", "a=3")
    assert text.exit_code == 0
    assert "2 requests, 2 swaps" in text.stdout and "served order: a b" in text.stdout


def test_max_wait_override_bounds_a_starved_request(tmp_path):
    # Model a gets overlapping traffic for 100 s; b is asked for once at t=1.
    lines = [json.dumps({"at": t * 0.5, "model": "a", "duration": 1}) for t in range(200)]
    lines.insert(3, json.dumps({"at": 1, "model": "b", "duration": 1}))
    trace = "\n".join(lines) + "\n"
    off = json.loads(trace_run(tmp_path, trace, "--max-wait", "0", "--verbose", "--format", "json").stdout)
    on = json.loads(trace_run(tmp_path, trace, "--max-wait", "5", "--verbose", "--format", "json").stdout)

    def wait_of_b(report):
        return next(r["wait"] for r in report["per_request"] if r["model"] == "b")

    assert wait_of_b(off) > 90  # waits until the traffic on a stops
    assert wait_of_b(on) <= 5 + 1 + 1  # max_wait + a's remaining service + one load


def test_bad_traces_are_located_errors_not_tracebacks(tmp_path):
    result = trace_run(tmp_path, 'a\n{"at": -1, "model": "b"}\nnot-a-model\n')
    assert result.exit_code == 1
    assert ":2: error:" in result.stderr
    assert "Traceback" not in result.output
    result = trace_run(tmp_path, "a\nnot-a-model\n")
    assert result.exit_code == 1
    assert "trace.jsonl:2: error: unknown model 'not-a-model'" in result.stderr
    usage = trace_run(tmp_path, "a\n", "--load-time", "a=fast")
    assert usage.exit_code == 2
    missing = CliRunner().invoke(
        cli, ["plan", str(tmp_path / "config.yaml"), "--trace", str(tmp_path / "nope")]
    )
    assert missing.exit_code == 2


def test_numbers_json_or_floats_cannot_hold_are_errors_not_tracebacks(tmp_path):
    """An integer too large for a float, JSON nested past the parser's depth, and infinite or
    NaN seconds on the command line: each a located error (or a usage error), no traceback."""
    trace = 'a\n{"at": 1' + "0" * 400 + ', "model": "b"}\n' + "[" * 100_000 + "\n"
    trace += '{"load_times": {"a": 1' + "0" * 400 + "}}\n"
    result = trace_run(tmp_path, trace)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert ':2: error: "at" must be a number of seconds >= 0' in result.stderr
    assert ":3: error: invalid JSON: nested too deeply" in result.stderr
    assert (
        ":4: error: \"load_times\": 'a' must be a model name with a number of seconds >= 0" in result.stderr
    )
    for option in ("--default-load-time", "--max-wait"):
        for value in ("inf", "nan", "-1", "soon"):
            usage = trace_run(tmp_path, "a\n", option, value)
            assert usage.exit_code == 2, (option, value, usage.output)
            assert f"Invalid value for '{option}'" in usage.output


def test_a_trace_of_another_config_lists_the_first_errors_and_the_models_it_lacks(tmp_path):
    """A store shared by several configs exports requests for models this config lacks: the
    replay lists the first 20 bad lines, counts the rest, and names the missing models once."""
    lines = ["a"] + ["ghost"] * 30 + ["phantom"] * 5 + ["b"]
    result = trace_run(tmp_path, "\n".join(lines) + "\n")
    assert result.exit_code == 1
    errors = result.stderr.splitlines()
    assert errors[0].endswith("trace.jsonl:2: error: unknown model 'ghost'")
    assert len([e for e in errors if ": error: " in e]) == 20
    assert errors[20].endswith("trace.jsonl: ... and 15 more errors")
    assert errors[21].endswith(
        "trace.jsonl: the config has no model ghost (30 lines), phantom (5 lines); the config's "
        "models: a, b, c (a trace from `trace export CONFIG` or `--model M` keeps only those)"
    )
    assert len(errors) == 22
