"""A fixture for test modules that run many small forwards on the CPU.

Tiny inputs gain nothing from a second intra-op thread, and on a busy machine (several test runs on
two cores) OpenMP threads that wait for each other make a 0.3 s forward take 10 s. Import
``one_cpu_thread`` into a test module to run it with one thread (restored afterwards).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_cpu_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
