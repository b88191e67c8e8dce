"""Shared pytest configuration: trio mode is on (pyproject), warnings are errors."""
