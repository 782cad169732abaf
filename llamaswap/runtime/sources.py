"""Sources: where the served config comes from (a file, or a text such as the built-in demo),
how to read it and how to compile it. Kept apart from reload.py so that `serve` can compile
and start listening before the web framework is imported."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from llamaswap.compiler.plan import CompileOptions, Plan, compile_text


class SourceError(Exception):
    """The config cannot be read (the message names the file and why)."""


@dataclass(frozen=True)
class ConfigSource:
    """Where the served config comes from: the paths `--watch-config` polls, how to read
    them, and how to compile what was read."""

    name: str
    paths: tuple[str, ...]
    read: Callable[[], dict[str, str]]  # file -> text; raises SourceError
    build: Callable[[Mapping[str, str], CompileOptions], Plan]
    options: CompileOptions = field(default_factory=CompileOptions)

    def compile(
        self, keep_ports: Mapping[str, int], keep_start_port: int | None
    ) -> tuple[Plan, dict[str, str]]:
        texts = self.read()
        options = dataclasses.replace(
            self.options, keep_ports=dict(keep_ports), keep_start_port=keep_start_port
        )
        return self.build(texts, options), texts


def read_text_file(path: str) -> str:
    try:
        data = Path(path).read_bytes()
    except IsADirectoryError:
        raise SourceError(f"{path}: is a directory, not a config file") from None
    except OSError as exc:
        raise SourceError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SourceError(f"{path}: not UTF-8 text (byte {exc.start})") from None


def file_source(path: str, options: CompileOptions) -> ConfigSource:
    """One config file."""
    return ConfigSource(
        path,
        (path,),
        lambda: {path: read_text_file(path)},
        lambda texts, opts: compile_text(texts[path], path, opts),
        options,
    )


def text_source(text: str, name: str, options: CompileOptions) -> ConfigSource:
    """A config that is not a file (the built-in demo): reloading it changes nothing."""
    return ConfigSource(
        name, (), lambda: {name: text}, lambda texts, opts: compile_text(texts[name], name, opts), options
    )
