"""A proven lower bound on the loads of any schedule whose longest wait is within a budget.

Setting: one model runs at a time (the bench worlds put every model in one exclusive group),
and every request r (model m_r, arrival a_r) must be granted at some g_r with
a_r <= g_r <= a_r + W, while m_r is loaded. A *residency* is a maximal stretch of time in
which one model stays loaded; each starts with a load, so loads >= residencies.

The bound. Call a sequence of requests r_1, ..., r_k a *chain* when consecutive ones ask for
different models and a_{i+1} > a_i + W. In any feasible schedule:

1. g_i <= a_i + W < a_{i+1} <= g_{i+1}: the grants happen in chain order, strictly.
2. r_i and r_{i+1} are granted in different residencies (different models).
3. Residencies are disjoint intervals ordered in time. If r_i and r_j (i < j) were granted in
   the same residency R, every grant between them in time (g_{i+1} lies strictly between)
   would lie inside R too, so r_{i+1} would be served by R's model, which contradicts 2.

So the k grants fall in k distinct residencies: loads >= k for every chain, and the longest
chain is a lower bound (as is the number of distinct models asked for; we report the larger). It ignores load and service times (a schedule that loads instantly
and serves in no time meets it, which is why it is only a bound), and it holds for every
scheduler, clairvoyant or not.

Computing the longest chain: requests sorted by arrival; f(r) = 1 + max f(r') over r' with
a_{r'} < a_r - W and m_{r'} != m_r. The best f per model among the requests already past the
threshold, with the top two models kept, gives each f(r) in O(1): O(n log n) in all.
"""

from __future__ import annotations

from collections.abc import Iterable

from llamaswap.runtime.simulate import TraceRequest


def chain_bound(requests: Iterable[TraceRequest], budget: float) -> int:
    """The longest chain for max wait `budget` (seconds): fewest loads of any schedule."""
    reqs = sorted(requests, key=lambda r: r.at)
    if not reqs:
        return 0
    f = [0] * len(reqs)
    best: dict[str, int] = {}  # model -> best f among requests past the threshold
    top: list[tuple[int, str]] = []  # the two best (f, model) with distinct models
    j = 0
    for i, r in enumerate(reqs):
        while j < i and reqs[j].at < r.at - budget:
            m, v = reqs[j].model, f[j]
            if v > best.get(m, 0):
                best[m] = v
                top = sorted([(val, mod) for val, mod in top if mod != m] + [(v, m)], reverse=True)[:2]
            j += 1
        prev = next((val for val, mod in top if mod != r.model), 0)
        f[i] = prev + 1
    return max(max(f), len({r.model for r in reqs}))  # each model asked for loads at least once
