"""Helpers shared by tests (imported as `support.*`; tests/ is on sys.path via conftest)."""
