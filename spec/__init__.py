"""End-to-end specs against a running Kong with the suite (see conftest.py)."""
