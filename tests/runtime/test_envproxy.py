"""Which forward proxy a URL goes through, by Go's ProxyFromEnvironment rules."""

from __future__ import annotations

import pytest

from llamaswap.runtime.envproxy import ProxyEnv, shown

BOTH = {"HTTP_PROXY": "http://p:3128", "HTTPS_PROXY": "http://s:3129"}


def via(url: str, **environ: str) -> str | None:
    return ProxyEnv.from_environ(environ).proxy_for(url)


def test_the_scheme_picks_the_variable():
    assert via("http://peer.example:8080/v1", **BOTH) == "http://p:3128"
    assert via("https://api.example/v1", **BOTH) == "http://s:3129"
    assert via("https://api.example/v1", HTTP_PROXY="http://p:3128") is None
    assert via("http://peer.example/v1") is None


def test_upper_case_wins_and_lower_case_is_read_too():
    assert via("http://a.example/", HTTP_PROXY="http://up:1", http_proxy="http://low:2") == "http://up:1"
    assert via("http://a.example/", http_proxy="http://low:2") == "http://low:2"
    assert via("https://a.example/", https_proxy="low:2") == "http://low:2"  # no scheme: http


def test_cgi_ignores_http_proxy_only():
    env = {**BOTH, "REQUEST_METHOD": "GET"}
    assert via("http://a.example/", **env) is None
    assert via("https://a.example/", **env) == "http://s:3129"


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost:8080/",
        "http://LOCALHOST/",
        "http://127.0.0.1:9/",
        "http://127.1.2.3/",
        "http://[::1]:80/",
    ],
)
def test_loopback_is_never_proxied(url: str):
    assert via(url, **BOTH) is None


@pytest.mark.parametrize(
    ("no_proxy", "url", "direct"),
    [
        ("*", "http://anything.example/", True),
        ("example.com", "http://example.com/", True),
        ("example.com", "http://api.example.com/", True),
        ("example.com", "http://notexample.com/", False),
        (".example.com", "http://example.com/", False),
        (".example.com", "http://api.example.com/", True),
        ("*.example.com", "http://example.com/", False),
        ("*.example.com", "http://a.b.example.com/", True),
        ("example.com:8080", "http://example.com:8080/", True),
        ("example.com:8080", "http://example.com/", False),
        ("example.com:80", "http://example.com/", True),  # the scheme's default port
        ("Example.COM", "http://api.example.com/", True),
        ("10.0.0.0/8", "http://10.1.2.3:5000/", True),
        ("10.0.0.0/8", "http://11.1.2.3/", False),
        ("10.1.2.3", "http://10.1.2.3:7/", True),
        ("10.1.2.3:7", "http://10.1.2.3:8/", False),
        ("[2001:db8::1]:443", "https://[2001:db8::1]/", True),
        ("2001:db8::/32", "http://[2001:db8::5]/", True),
        (" a.example , ,b.example ", "http://b.example/", True),
        ("0.0.1", "http://10.0.0.1/", False),  # a name entry never matches an address
    ],
)
def test_no_proxy_entries(no_proxy: str, url: str, direct: bool):
    got = via(url, **BOTH, NO_PROXY=no_proxy)
    assert (got is None) == direct, (no_proxy, url, got)


def test_no_proxy_lower_case_is_read_when_upper_is_unset():
    assert via("http://a.example/", **BOTH, no_proxy="a.example") is None
    assert via("http://a.example/", **BOTH, NO_PROXY="b.example", no_proxy="a.example") == "http://p:3128"


def test_shown_leaves_credentials_out():
    assert shown("http://user:secret@proxy:3128") == "http://proxy:3128"
    assert shown("http://proxy:3128/path") == "http://proxy:3128/path"
    assert shown("http://u:p@proxy:3128/x@y") == "http://proxy:3128/x@y"
