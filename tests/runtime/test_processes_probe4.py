"""A timed-out health check says where the upstream listens when that is not the proxy's port
(a cmd that binds another port than the proxy names, e.g. llama-server's default 8080), and
says nothing more when it listens where it should but never answers 200."""

from __future__ import annotations

import pytest
from support.upstream import free_port
from test_processes import Recorder, make_spec, py, run

from llamaswap.runtime.processes import ModelProcess, ProcessState, StartError

# Binds a port of its own (not the proxy's) at once, says which, and never answers.
OTHER_PORT = """
    import socket, time
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    print("bound", s.getsockname()[1], flush=True)
    time.sleep(60)
"""


def test_a_health_timeout_names_the_port_the_upstream_listens_on_instead():
    async def scenario():
        rec = Recorder()
        spec = make_spec(py(OTHER_PORT), check_endpoint="/health", health_check_timeout=3)
        process = ModelProcess(spec, on_state_change=rec)
        with pytest.raises(StartError) as info:
            await process.ensure_ready()
        assert info.value.kind == "health_timeout"
        port = spec.proxy.rsplit(":", 1)[1]
        bound = next(line for line in process.log.history() if line.startswith("bound "))
        assert (
            f" (it listens on 127.0.0.1:{bound.split()[1]}, not on the proxy's port {port}: does cmd bind "
            "that port?); "
        ) in str(info.value), str(info.value)
        await rec.wait_for(ProcessState.STOPPED)
        await process.shutdown()

    run(scenario())


def test_a_health_timeout_of_an_upstream_on_its_port_adds_nothing():
    port = free_port()
    # Listens on the proxy's port at once, and never answers (a model still loading).
    on_its_port = OTHER_PORT.replace('("127.0.0.1", 0)', f'("127.0.0.1", {port})')

    async def scenario():
        spec = make_spec(py(on_its_port), port=port, check_endpoint="/health", health_check_timeout=3)
        process = ModelProcess(spec)
        with pytest.raises(StartError) as info:
            await process.ensure_ready()
        assert any(line.startswith("bound ") for line in process.log.history())
        assert str(info.value) == (
            f"health check timed out after 3s: model 'm' never answered 200 at {spec.health_url}; "
            "its output is in /logs/stream/m"
        )
        await process.shutdown()

    run(scenario())
