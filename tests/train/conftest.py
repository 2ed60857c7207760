"""Test isolation for the trainer's tests."""

import pytest


@pytest.fixture(autouse=True)
def fresh_accelerator_settings():
    """accelerate keeps one set of accelerator settings per process (its mixed precision among them) and
    refuses a second ``Accelerator`` with other settings; a training process makes one, tests make many.
    Forget the settings after each test (the process state stays)."""
    yield
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=False)
