"""llama-swap's Go-style flags are read as llamaswap serve's options (llamaswap.argv)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from llamaswap.argv import normalise


@pytest.mark.parametrize(
    "argv, expected",
    [
        (
            ["serve", "-config", "c.yaml", "-listen", ":8080"],
            ["serve", "--config", "c.yaml", "--listen", ":8080"],
        ),
        (["serve", "--config", "c.yaml"], ["serve", "--config", "c.yaml"]),
        (
            ["serve", "-config=c.yaml", "-config-dir=conf.d"],
            ["serve", "--config=c.yaml", "--config-dir=conf.d"],
        ),
        (
            ["serve", "-tls-cert-file", "c.pem", "-tls-key-file", "k.pem"],
            ["serve", "--tls-cert-file", "c.pem", "--tls-key-file", "k.pem"],
        ),
        (["serve", "-watch-config", "-version"], ["serve", "--watch-config", "--version"]),
        (["serve", "-watch-config=true", "-version=false"], ["serve", "--watch-config"]),
        (["serve", "-watch-config=maybe"], ["serve", "--watch-config=maybe"]),
        (["serve", "-log-level", "debug", "-h"], ["serve", "--log-level", "debug", "-h"]),
        # the llama-swap way, no subcommand
        (["-config", "c.yaml", "-listen", ":9000"], ["serve", "--config", "c.yaml", "--listen", ":9000"]),
        (["-version"], ["serve", "--version"]),
        (["--config", "c.yaml"], ["serve", "--config", "c.yaml"]),
        # left alone
        (["--version"], ["--version"]),
        (["compile", "-config", "x"], ["compile", "-config", "x"]),
        (["serve", "c.yaml", "--", "-config"], ["serve", "c.yaml", "--", "-config"]),
        # Any other Go-style word is an option too (serve has no short options but -h), so
        # click names it ("No such option '--listn'. Did you mean '--listen'?") instead of
        # its first letter ("No such option '-l'").
        (["serve", "-configs", "x"], ["serve", "--configs", "x"]),
        (["-config", "c.yaml", "-listn", ":80"], ["serve", "--config", "c.yaml", "--listn", ":80"]),
        (["serve", "-shutdown-timeout", "5"], ["serve", "--shutdown-timeout", "5"]),
        # ... but not a value, a negative number or a lone dash
        (["serve", "-config", "-odd.yaml"], ["serve", "--config", "-odd.yaml"]),
        (["serve", "--expand-budget", "-1", "-"], ["serve", "--expand-budget", "-1", "-"]),
        ([], []),
    ],
)
def test_normalise(argv, expected):
    assert normalise(argv) == expected


@pytest.mark.parametrize(
    "argv, message",
    [
        (["-config", "c.yaml", "-listn", ":8080"], "No such option '--listn'. Did you mean '--listen'?"),
        (["serve", "-watch-cofig"], "No such option '--watch-cofig'."),
    ],
)
def test_a_misspelt_go_style_flag_is_named_in_the_error(argv, message):
    out = subprocess.run(
        [sys.executable, "-m", "llamaswap", *argv], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2
    assert message in out.stderr, out.stderr


@pytest.mark.parametrize(
    "argv",
    [["-config", "{d}", "-listen", "127.0.0.1:0"], ["serve", "{d}"], ["compile", "{d}"]],
)
def test_a_directory_given_as_the_config_names_config_dir(tmp_path, argv):
    """llama-swap's -config takes a file and -config-dir a directory. Before: `Invalid value
    for '--config': File 'conf.d' is a directory.`, with no word on the option that reads one."""
    conf = tmp_path / "conf d"
    conf.mkdir()
    (conf / "a.yaml").write_text("models: {}\n")
    out = subprocess.run(
        [sys.executable, "-m", "llamaswap", *(a.format(d=conf) for a in argv)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert (
        f"{str(conf)!r} is a directory; to merge the *.yml/*.yaml files in it, use --config-dir"
        f" '{conf}' (llama-swap's -config-dir)"
    ) in out.stderr, out.stderr
