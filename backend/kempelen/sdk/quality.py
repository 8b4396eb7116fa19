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


def majority_labels(labels: Iterable[Label], exclude: str | None = None,
                    weights: dict[str, float] | None = None) -> dict[int, str]:
    """Per task, the label with the most (weighted) votes, ties broken by label order,
    optionally leaving one worker out so it is not judged against itself."""
    votes: dict[int, Counter] = defaultdict(Counter)
    for item in labels:
        if item.worker != exclude:
            votes[item.task_index][item.label] += (weights or {}).get(item.worker, 1.0)
    majority = {}
    for task, counter in votes.items():
        top = max(counter.values())
        majority[task] = min(label for label, count in counter.items() if count == top)
    return majority


def agreement_rates(labels: list[Label], rounds: int = 3) -> dict[str, tuple[float, int]]:
    """Each worker's agreement with the others' weighted majority, and on how many tasks.

    Weights start equal and become each worker's agreement (a few rounds, in the spirit of
    Dawid-Skene), so a random answerer stops swinging the majority honest workers are judged by.
    """
    workers = sorted({l.worker for l in labels})
    weights = {w: 1.0 for w in workers}
    rates: dict[str, tuple[float, int]] = {}
    for _ in range(rounds):
        for worker in workers:
            majority = majority_labels(labels, exclude=worker, weights=weights)
            mine = [l for l in labels if l.worker == worker and l.task_index in majority]
            agreed = sum(l.label == majority[l.task_index] for l in mine)
            rates[worker] = (agreed / len(mine) if mine else 1.0, len(mine))
        weights = {w: max(rate, 0.01) ** 2 for w, (rate, _) in rates.items()}
    return rates


def copied_from(labels: list[Label], worker: str, rates: dict[str, tuple[float, int]],
                alpha: float = 1e-3) -> tuple[str, int, float] | None:
    """The other worker whose labels `worker` repeated, later, on every shared task, when
    independent workers as accurate as these two would do so with probability below `alpha`
    (Bonferroni-corrected over all pairs); as (other, shared tasks, that probability).

    Two workers right a and b of the time agree on a task with probability about
    ab + (1-a)(1-b)/(L-1) over L labels; identical answers on all n shared tasks then happen
    by chance with that probability to the n-th power. The copy is the answer that came second.
    """
    mine = {l.task_index: l for l in labels if l.worker == worker}
    by_worker: dict[str, dict[int, Label]] = defaultdict(dict)
    for l in labels:
        if l.worker != worker:
            by_worker[l.worker][l.task_index] = l
    choices = max(len({l.label for l in labels}), 2)
    pairs = max(len(rates) * (len(rates) - 1) // 2, 1)
    weights = {w: max(rate, 0.01) ** 2 for w, (rate, _) in rates.items()}
    for other, theirs in sorted(by_worker.items()):
        shared = [t for t in mine if t in theirs]
        if not shared or any(mine[t].label != theirs[t].label for t in shared):
            continue
        if sum(mine[t].order > theirs[t].order for t in shared) * 2 <= len(shared):
            continue  # `worker` answered first: if anyone copied, it was the other one
        # Judge each against the rest only: a copier agrees with its source by construction.
        rest = [l for l in labels if l.worker not in (worker, other)]
        a = _accuracy(mine.values(), rest, weights)
        b = _accuracy(theirs.values(), rest, weights)
        chance = (a * b + (1 - a) * (1 - b) / (choices - 1)) ** len(shared)
        if chance * pairs < alpha:
            return other, len(shared), chance
    return None


def _accuracy(answers, rest: list[Label], weights: dict[str, float]) -> float:
    """Share of `answers` equal to the weighted majority of `rest` (1.0 when none compare)."""
    majority = majority_labels(rest, weights=weights)
    compared = [l for l in answers if l.task_index in majority]
    return sum(l.label == majority[l.task_index] for l in compared) / len(compared) if compared else 1.0


def review(labels: list[Label], min_agreement: float = 0.6, alpha: float = 1e-3) -> list[Verdict]:
    """One verdict per worker: reject a worker whose labels mostly disagree with the others'
    majority, or who repeats another worker's labels on every shared task."""
    verdicts = []
    rates = agreement_rates(labels)
    for worker, (agreement, answered) in rates.items():
        copied = copied_from(labels, worker, rates, alpha)
        if agreement < min_agreement:
            reason = (f"labels agree with the other workers' majority on {agreement:.0%} of "
                      f"{answered} tasks (at least {min_agreement:.0%} required)")
            verdicts.append(Verdict(worker, True, reason, agreement, answered))
        elif copied:
            other, shared, chance = copied
            reason = (f"labels identical to those worker {other} gave earlier on all {shared} tasks "
                      f"both answered; independent workers this accurate would match so with "
                      f"probability {chance:.1e}")
            verdicts.append(Verdict(worker, True, reason, agreement, answered))
        else:
            verdicts.append(Verdict(worker, False, "", agreement, answered))
    return verdicts
