"""mounted_location: how a passthrough upstream's redirect is rewritten (pure)."""

from __future__ import annotations

import pytest

from llamaswap.runtime.proxy import mounted_location


@pytest.mark.parametrize(
    "location, base, expected",
    [
        ("http://127.0.0.1:5800/a?b=1", "http://127.0.0.1:5800", "/upstream/m/a?b=1"),
        ("HTTP://LOCALHOST:5800", "http://localhost:5800", "/upstream/m/"),
        ("http://127.0.0.1:5800?x", "http://127.0.0.1:5800", "/upstream/m/?x"),
        ("http://127.0.0.1:58000/a", "http://127.0.0.1:5800", "http://127.0.0.1:58000/a"),
        ("/a/b", "http://127.0.0.1:5800", "/upstream/m/a/b"),
        ("//cdn.example/x", "http://127.0.0.1:5800", "//cdn.example/x"),
        ("relative/x", "http://127.0.0.1:5800", "relative/x"),
        ("https://example.com/", "http://127.0.0.1:5800", "https://example.com/"),
        ("http://127.0.0.1:5800/base/x", "http://127.0.0.1:5800/base", "/upstream/m/x"),
        ("/base/x", "http://127.0.0.1:5800/base", "/upstream/m/x"),
        ("/other", "http://127.0.0.1:5800/base", "/other"),
    ],
)
def test_mounted_location(location, base, expected):
    assert mounted_location(location, base, "/upstream/m") == expected
