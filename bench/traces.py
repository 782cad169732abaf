"""Seeded request traces of four kinds, for comparing scheduling policies (`bench/policies.py`).

Each kind is a small world: a config (models that swap on one GPU: one exclusive group, so
at most one model runs at a time), each model's load time, and a generator of requests
(`TraceRequest(at, model, duration)`) in the trace format of `llamaswap plan --trace`.
The seed draws everything, including the world's own parameters (load times, rates, session
lengths vary by +-25 % around the kind's centre), so different seeds are different but
similar workloads, not the same one reshuffled.

Kinds:
- `agentic`: an agentic coding session. A big coder model (about 30 s to load) answers the
  agent's turns (bursts of sequential calls separated by tool runs), a small fast model
  applies edits and writes commit messages, an embedding model indexes and searches code.
- `chat-rag-tts`: chat with retrieval and speech. Each user turn embeds the question, asks the
  chat model, and speaks the answer; documents are re-indexed in occasional bursts.
- `image-batch`: long image-generation batches (one image after the other) with occasional
  chat in between (a few messages, a person reading and typing).
- `office`: an office day over six models with Zipf popularity: people arrive, work in
  sessions of a few requests with one model, and leave; lunch is quieter.

`renamed(world)` is the same world under shuffled model names (so set order, and with it
FIFO's pick among equally cheap victims, falls on other models).
`write_trace(path, requests)` writes JSON lines; `python bench/traces.py KIND SEED` prints one.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from llamaswap.runtime.simulate import TraceRequest

KINDS = ("agentic", "chat-rag-tts", "image-batch", "office")


@dataclass(frozen=True)
class World:
    kind: str
    seed: int
    load_times: dict[str, float]
    requests: list[TraceRequest]

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(sorted(self.load_times))

    def config(self, slots: int = 1, layout: str = "any") -> str:
        """A llama-swap config. `slots` 1: every model in one swapping, exclusive group (one
        model runs at a time, which is what bench/lowerbound.py's bound assumes). More: a
        matrix whose sets follow `layout`, so a load has a choice of victims:

        - `any`: any `slots` models fit together (one set per combination, in name order);
        - `slow-first`: the same sets, listing the slowest-loading models first (the solver
          tries sets in order, so FIFO's pick among equally cheap victims keeps slow models);
        - `big-alone`: the slowest model runs alone; any `slots` of the others fit together;
        - `big-plus-one`: the slowest model fits beside any one other; any `slots` + 1 of
          the others fit together (a big model that takes most of the GPU)."""
        lines = ["models:"]
        for m in self.models:
            # concurrencyLimit 100: the worlds' bursts (re-indexing, batches) would otherwise
            # meet llama-swap's default of 10 and turn into 429s, which count in no wait.
            lines += [
                f"  {m}:",
                f"    cmd: llamaswap fake-upstream --port ${{PORT}} --model {m}",
                "    concurrencyLimit: 100",
            ]
        if slots <= 1:
            lines += ["groups:", "  gpu:", "    swap: true", "    exclusive: true", "    members:"]
            lines += [f"      - {m}" for m in self.models]
            return "\n".join(lines) + "\n"
        if layout not in LAYOUTS:
            raise ValueError(f"unknown layout {layout!r} (layouts: {', '.join(LAYOUTS)})")
        slowest = sorted(self.models, key=lambda m: (-self.load_times[m], m))
        big, rest = slowest[0], [m for m in self.models if m != slowest[0]]
        if layout == "any":
            sets = list(itertools.combinations(self.models, min(slots, len(self.models))))
        elif layout == "slow-first":
            sets = list(itertools.combinations(slowest, min(slots, len(slowest))))
        elif layout == "big-alone":
            sets = [(big,), *itertools.combinations(rest, min(slots, len(rest)))]
        else:  # big-plus-one
            sets = [(big, m) for m in rest] + list(itertools.combinations(rest, min(slots + 1, len(rest))))
        lines += ["matrix:", "  sets:"]
        for i, combo in enumerate(sets):
            lines.append(f'    s{i}: "{" & ".join(combo)}"')
        return "\n".join(lines) + "\n"


LAYOUTS = ("any", "slow-first", "big-alone", "big-plus-one")


def _jit(rng: random.Random, centre: float, spread: float = 0.25) -> float:
    return centre * rng.uniform(1 - spread, 1 + spread)


def _r(x: float) -> float:
    return round(x, 3)


def agentic(rng: random.Random, hours: float = 1.5) -> tuple[dict[str, float], list[TraceRequest]]:
    loads = {"coder-32b": _jit(rng, 30), "coder-1b": _jit(rng, 4), "embed": _jit(rng, 2)}
    out: list[TraceRequest] = []
    t = 0.0
    end = hours * 3600
    while t < end:
        # One agent turn: a chain of big-model calls, each followed by tool work; small-model
        # edits and embedding searches happen inside the turn.
        calls = rng.randint(3, 12)
        for _ in range(calls):
            dur = rng.lognormvariate(math.log(_jit(rng, 12)), 0.5)
            out.append(TraceRequest(t, "coder-32b", dur))
            t += dur + rng.uniform(0.2, 1.0)
            r = rng.random()
            if r < 0.35:  # apply an edit with the small model
                n = rng.randint(1, 3)
                for _ in range(n):
                    d = rng.uniform(0.3, 2.0)
                    out.append(TraceRequest(t, "coder-1b", d))
                    t += d + rng.uniform(0.05, 0.3)
            elif r < 0.55:  # search the code base
                n = rng.randint(1, 4)
                for _ in range(n):
                    out.append(TraceRequest(t, "embed", rng.uniform(0.05, 0.3)))
                    t += rng.uniform(0.05, 0.4)
            t += rng.expovariate(1 / _jit(rng, 6))  # running tools, tests
        if rng.random() < 0.3:  # commit message / summary with the small model
            out.append(TraceRequest(t, "coder-1b", rng.uniform(0.5, 2)))
        if rng.random() < 0.15:  # re-index changed files
            for _ in range(rng.randint(5, 30)):
                out.append(TraceRequest(t, "embed", rng.uniform(0.05, 0.3)))
                t += rng.uniform(0.0, 0.2)
        t += rng.expovariate(1 / _jit(rng, 45))  # the human reads the diff, writes the next prompt
    return loads, out


def chat_rag_tts(rng: random.Random, hours: float = 1.5) -> tuple[dict[str, float], list[TraceRequest]]:
    loads = {"chat-8b": _jit(rng, 10), "embed": _jit(rng, 2), "tts": _jit(rng, 5)}
    out: list[TraceRequest] = []
    end = hours * 3600
    users = rng.randint(2, 4)
    for _ in range(users):
        t = rng.uniform(0, 600)
        while t < end:
            turns = rng.randint(2, 10)
            for _ in range(turns):
                out.append(TraceRequest(t, "embed", rng.uniform(0.05, 0.2)))
                t += rng.uniform(0.2, 0.5)
                dur = rng.lognormvariate(math.log(_jit(rng, 6)), 0.5)
                out.append(TraceRequest(t, "chat-8b", dur))
                t += dur
                if rng.random() < 0.6:
                    out.append(TraceRequest(t, "tts", rng.uniform(1, 4)))
                t += rng.expovariate(1 / _jit(rng, 40))  # listen, think, type
            t += rng.expovariate(1 / _jit(rng, 600))  # away
    t = rng.uniform(0, end)
    for _ in range(rng.randint(1, 4)):  # re-indexing bursts
        t = rng.uniform(0, end)
        for _ in range(rng.randint(20, 80)):
            out.append(TraceRequest(t, "embed", rng.uniform(0.1, 0.4)))
            t += rng.uniform(0.1, 0.5)
    return loads, out


def image_batch(rng: random.Random, hours: float = 2.0) -> tuple[dict[str, float], list[TraceRequest]]:
    loads = {"sdxl": _jit(rng, 15), "chat-8b": _jit(rng, 10)}
    out: list[TraceRequest] = []
    end = hours * 3600
    t = rng.uniform(0, 120)
    while t < end:  # batches: one image after the other, a client that submits as it goes
        n = rng.randint(40, 200)
        step = _jit(rng, 7)
        for _ in range(n):
            dur = _jit(rng, step * 0.8, 0.15)
            out.append(TraceRequest(t, "sdxl", dur))
            t += step * rng.uniform(0.9, 1.1)
        t += rng.expovariate(1 / _jit(rng, 300))
    t = rng.uniform(0, 600)
    while t < end:  # occasional chat: a few messages, a person reading and typing
        for _ in range(rng.randint(1, 5)):
            dur = rng.lognormvariate(math.log(_jit(rng, 5)), 0.5)
            out.append(TraceRequest(t, "chat-8b", dur))
            t += dur + rng.expovariate(1 / _jit(rng, 25))
        t += rng.expovariate(1 / _jit(rng, 900))
    return loads, out


def office(rng: random.Random, hours: float = 8.0) -> tuple[dict[str, float], list[TraceRequest]]:
    names = ["llama-70b", "qwen-32b", "coder-14b", "mistral-7b", "vision-11b", "whisper"]
    centre = [35, 20, 12, 6, 10, 3]
    loads = {m: _jit(rng, c) for m, c in zip(names, centre)}
    order = names[:]
    rng.shuffle(order)  # popularity rank is not load order
    s = _jit(rng, 1.1, 0.2)
    weights = [1 / (k + 1) ** s for k in range(len(order))]
    out: list[TraceRequest] = []
    end = hours * 3600
    people = rng.randint(8, 20)
    for _ in range(people):
        t = rng.uniform(0, 3600)  # arrival in the first hour
        leave = end - rng.uniform(0, 3600)
        while t < leave:
            model = rng.choices(order, weights)[0]
            for _ in range(rng.randint(1, 8)):  # a session with one model
                dur = rng.lognormvariate(math.log(_jit(rng, 5)), 0.7)
                out.append(TraceRequest(t, model, dur))
                t += dur + rng.expovariate(1 / _jit(rng, 30))
            gap = rng.expovariate(1 / _jit(rng, 900))
            if 4 * 3600 <= t < 5 * 3600:  # lunch
                gap *= 3
            t += gap
    return loads, out


GENERATORS: dict[str, Callable[[random.Random], tuple[dict[str, float], list[TraceRequest]]]] = {
    "agentic": agentic,
    "chat-rag-tts": chat_rag_tts,
    "image-batch": image_batch,
    "office": office,
}


def generate(kind: str, seed: int) -> World:
    """The world of `kind` drawn from `seed` (same kind and seed: the same world)."""
    if kind not in GENERATORS:
        raise ValueError(f"unknown trace kind {kind!r} (kinds: {', '.join(KINDS)})")
    rng = random.Random(f"{kind}:{seed}")
    loads, requests = GENERATORS[kind](rng)
    requests = sorted(
        (TraceRequest(_r(r.at), r.model, _r(r.duration)) for r in requests), key=lambda r: (r.at, r.model)
    )
    return World(kind, seed, {m: _r(v) for m, v in loads.items()}, requests)


def renamed(world: World) -> World:
    """The same world with its models renamed by a seeded shuffle (`b-embed`, `a-tts`, ...):
    the eviction policy's solver order, which follows the names, then favours other models.
    FIFO's choice of victim among equally cheap sets is that order, so this is the world an
    arbitrary naming gives it."""
    order = list(world.models)
    random.Random(f"names:{world.kind}:{world.seed}").shuffle(order)
    name = {m: f"{chr(ord('a') + i)}-{m}" for i, m in enumerate(order)}
    return World(
        world.kind,
        world.seed,
        {name[m]: t for m, t in world.load_times.items()},
        [TraceRequest(r.at, name[r.model], r.duration) for r in world.requests],
    )


def trace_lines(requests: list[TraceRequest]) -> list[str]:
    return [json.dumps({"at": r.at, "model": r.model, "duration": r.duration}) for r in requests]


def write_trace(path: Path, requests: list[TraceRequest]) -> None:
    path.write_text("\n".join(trace_lines(requests)) + "\n")


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in KINDS:
        raise SystemExit(f"usage: python bench/traces.py {{{'|'.join(KINDS)}}} SEED")
    world = generate(sys.argv[1], int(sys.argv[2]))
    print(
        f"# {world.kind} seed {world.seed}; load times: "
        + ", ".join(f"{m}={v:g}s" for m, v in sorted(world.load_times.items()))
    )
    print("\n".join(trace_lines(world.requests)))
