"""The state file on a disk that stops taking writes (full, read-only): serving goes on, and
the log says once that the next llamaswap could not find what this one runs; it says so again
only after writes worked in between."""

from __future__ import annotations

import json
import os

from llamaswap.runtime import reaper


def test_a_state_file_that_cannot_be_written_is_said_once(tmp_path):
    said: list[str] = []
    state = reaper.StateFile(tmp_path, "k", "/x/config.yaml", said.append)
    state.acquire()
    assert said == []
    # Where the new state is written first is taken (as a full disk refuses it).
    blocker = state.path.with_name(state.path.name + ".tmp")
    blocker.mkdir()
    state.add(reaper.Upstream("a", os.getpid(), os.getpid(), reaper.start_time(os.getpid()), 1))
    state.add(reaper.Upstream("b", 1, 1, None, 2))
    assert len(said) == 1, said
    assert said[0].startswith(f"cannot write the state file {state.path} (") and said[0].endswith(
        "); until it can, the next llamaswap cannot find what this one runs"
    )
    assert json.loads(state.path.read_text())["upstreams"] == []  # the last good file stays whole
    blocker.rmdir()
    state.remove(1)
    assert [u["model"] for u in json.loads(state.path.read_text())["upstreams"]] == ["a"]
    blocker.mkdir()
    state.remove(os.getpid())
    assert len(said) == 2
    blocker.rmdir()
    state.release()
    assert not state.path.exists()
