"""Task sets: how review calls (approve, reject, release) and review and submission events name
answers. One set is one worker's answers in one group of 96 tasks, the unit of the escrow's
answer words: task `firstTask + b` for every set bit b of `tasks` (ITaskEscrow.TaskSet).
Pure functions, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable

TASKS_PER_SET = 96


def task_sets(refs: Iterable[tuple[str, int]]) -> list[tuple[str, int, int]]:
    """(worker, firstTask, tasks) sets naming the (worker, taskIndex) answers, one per worker and
    96-task group, sorted by worker (case-insensitively) then group: the escrow credits a
    worker's consecutive sets together. Raises ValueError for an answer named twice or a task
    index outside uint32."""
    sets: dict[tuple[str, int], list] = {}
    for worker, task in refs:
        task = int(task)
        if not 0 <= task < 1 << 32:
            raise ValueError(f"task index {task} is not a uint32")
        first = task - task % TASKS_PER_SET
        entry = sets.setdefault((worker.lower(), first), [worker, first, 0])
        bit = 1 << (task - first)
        if entry[2] & bit:
            raise ValueError(f"the answer of {worker} to task {task} is named twice")
        entry[2] |= bit
    return [tuple(sets[key]) for key in sorted(sets)]


def set_tasks(first_task: int, tasks: int) -> list[int]:
    """The task indexes a set (or an event's firstTask and tasks) names, ascending."""
    found = []
    while tasks:
        low = tasks & -tasks
        found.append(first_task + low.bit_length() - 1)
        tasks ^= low
    return found
