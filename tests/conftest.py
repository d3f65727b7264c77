"""Test configuration: hypothesis profile and a fresh seed per test."""

import os

import pytest
from hypothesis import settings

import minitl as mt

settings.register_profile("default", max_examples=25, deadline=None)
settings.register_profile("ci", max_examples=25, deadline=None, derandomize=True)
settings.load_profile("ci" if os.environ.get("CI") else "default")


@pytest.fixture(autouse=True)
def _seed() -> None:
    mt.manual_seed(0)
