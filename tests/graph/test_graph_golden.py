"""Golden files for every view x format of every config drawn (own configs and samples)."""

from __future__ import annotations

import pytest
from golden_helper import assert_golden, stale_goldens, updating
from graph_cases import CASE_VIEWS, GOLDEN, TEXT_FORMATS, outcome, run_graph


@pytest.mark.parametrize("fmt", TEXT_FORMATS)
@pytest.mark.parametrize("case, view", CASE_VIEWS, ids=lambda x: str(x))
def test_golden(case, view, fmt):
    suffix, text = outcome(run_graph(case, view, fmt))
    path = case.golden(view, fmt)
    stale = path.with_name(path.name + ".err") if suffix == "" else path
    if updating():
        stale.unlink(missing_ok=True)
    else:
        assert not stale.exists(), (
            f"{stale.name} is stale: the run {'succeeded' if suffix == '' else 'failed'}"
        )
    assert_golden(path.with_name(path.name + suffix), text)


def test_no_orphan_goldens():
    expected = {
        c.golden(v, f).with_name(c.golden(v, f).name + s)
        for c, v in CASE_VIEWS
        for f in TEXT_FORMATS
        for s in ("", ".err")
    }
    orphans = stale_goldens(GOLDEN, expected)
    assert not orphans, f"golden files without a case: {[str(p.relative_to(GOLDEN)) for p in orphans]}"
