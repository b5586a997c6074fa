"""Work shared by the processes of an `accelerate launch` outside the training loop (evaluation): each
process takes every world-th work item, and the results are gathered in item order on every process.
Without a launcher there is one process and everything stays local.

The items must not depend on who computes them (e.g. each batch seeds its own generator), so a sharded
evaluation gives the same numbers as a single process."""

from __future__ import annotations

from typing import Any


def state():
    """accelerate's PartialState: process index, count and device (it joins the process group when launched).
    ACCELERATE_USE_CPU=1 is honoured as by Accelerator (PartialState alone ignores it and would run each
    process of a CPU launch as a world of one)."""
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))


def describe() -> str:
    """'' for one process, else a line for the log saying how many share the work."""
    n = state().num_processes
    return f"{n} processes share the generation (each takes every {n}th batch)" if n > 1 else ""


def is_main() -> bool:
    return state().is_main_process


def my_items(n: int) -> range:
    """The indices of n work items that this process computes."""
    s = state()
    return range(s.process_index, n, s.num_processes)


def covered(k: int, n: int) -> int:
    """How many of the n items a progress bar on the main process should advance for its item k: the
    main process takes k = 0, world, 2·world, ..., so each of its items stands for the next `world`."""
    return max(0, min(state().num_processes, n - k))


def gather_in_order(local: dict[int, Any], n: int) -> list:
    """{item index: result} from each process -> the full list of n results in index order, on every process."""
    s = state()
    merged = dict(local)
    if s.num_processes > 1:
        from accelerate.utils import gather_object

        for part in gather_object([local]):
            merged.update(part)
    missing = [i for i in range(n) if i not in merged]
    if missing:
        raise RuntimeError(f"gather_in_order: items {missing[:5]} were computed by no process")
    return [merged[i] for i in range(n)]
