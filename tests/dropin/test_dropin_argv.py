"""llama-swap's Go-style flags are read as llamaswap serve's options (llamaswap.argv)."""

from __future__ import annotations

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
        (["serve", "-configs", "x"], ["serve", "-configs", "x"]),
        ([], []),
    ],
)
def test_normalise(argv, expected):
    assert normalise(argv) == expected
