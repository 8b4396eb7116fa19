"""Quality control a requester can explain: majority labels, agreement, copied answers.

Pure functions over (worker, task_index, label) triples; the reasons they produce are
what goes into a rejection's content-addressed reason document.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Iterable, NamedTuple


class Label(NamedTuple):
    worker: str
    task_index: int
    label: str
    order: int = 0  # submission order (e.g. block number): the later of two identical answers copied


@dataclass(frozen=True)
class Verdict:
    worker: str
    reject: bool
    reason: str
    agreement: float  # share of the worker's labels equal to the other workers' majority
    answers: int


def majority_labels(labels: Iterable[Label], exclude: str | None = None) -> dict[int, str]:
    """Per task, the label most workers gave (ties broken by label order), optionally
    leaving one worker out so it is not judged against itself."""
    votes: dict[int, Counter] = defaultdict(Counter)
    for item in labels:
        if item.worker != exclude:
            votes[item.task_index][item.label] += 1
    majority = {}
    for task, counter in votes.items():
        top = max(counter.values())
        majority[task] = min(label for label, count in counter.items() if count == top)
    return majority


def copied_from(labels: list[Label], worker: str, min_shared: int = 20,
                threshold: float = 1.0) -> tuple[str, int] | None:
    """The other worker whose labels `worker` repeated, later, on (nearly) every shared task,
    with the number of shared tasks; None if there is none. Two honest workers who are each
    right 90% of the time agree on ~82% of tasks, so all of 20 shared tasks happen by chance
    less than 2% of the time per pair; the copy is the answer that came second."""
    mine = {l.task_index: l for l in labels if l.worker == worker}
    by_worker: dict[str, dict[int, Label]] = defaultdict(dict)
    for l in labels:
        if l.worker != worker:
            by_worker[l.worker][l.task_index] = l
    for other, theirs in sorted(by_worker.items()):
        shared = [t for t in mine if t in theirs]
        if len(shared) < min_shared:
            continue
        same = sum(mine[t].label == theirs[t].label for t in shared)
        later = sum(mine[t].order > theirs[t].order for t in shared)
        if same / len(shared) >= threshold and later * 2 > len(shared):
            return other, len(shared)
    return None


def review(labels: list[Label], min_agreement: float = 0.6, min_shared: int = 20,
           copy_threshold: float = 1.0) -> list[Verdict]:
    """One verdict per worker: reject a worker whose labels mostly disagree with the others'
    majority, or who repeats another worker's labels on every shared task."""
    verdicts = []
    for worker in sorted({l.worker for l in labels}):
        majority = majority_labels(labels, exclude=worker)
        mine = [l for l in labels if l.worker == worker and l.task_index in majority]
        agreement = sum(l.label == majority[l.task_index] for l in mine) / len(mine) if mine else 1.0
        copied = copied_from(labels, worker, min_shared, copy_threshold)
        if agreement < min_agreement:
            reason = (f"labels agree with the other workers' majority on {agreement:.0%} of "
                      f"{len(mine)} tasks (at least {min_agreement:.0%} required)")
            verdicts.append(Verdict(worker, True, reason, agreement, len(mine)))
        elif copied:
            other, shared = copied
            reason = f"labels identical to worker {other}'s on all {shared} tasks both answered"
            verdicts.append(Verdict(worker, True, reason, agreement, len(mine)))
        else:
            verdicts.append(Verdict(worker, False, "", agreement, len(mine)))
    return verdicts
