"""Simulated labeling work for the demo: sentiment tasks with known truth, and the workers
who answer them — honest ones, a spammer answering at random, and a copier."""

from __future__ import annotations

import random
from dataclasses import dataclass

LABELS = ("negative", "neutral", "positive")

_SUBJECTS = ("The delivery", "This phone", "Our hotel room", "The support team", "The new update",
             "The coffee", "This course", "The checkout page", "The museum tour", "The train ride")
_PHRASES = {
    "positive": ("was wonderful", "exceeded every expectation", "made my day", "works perfectly",
                 "was friendly and fast"),
    "negative": ("was a complete mess", "broke after two days", "was rude and slow",
                 "never arrived", "is impossible to use"),
    "neutral": ("arrived on Tuesday", "is blue", "lasted about an hour", "has two buttons",
                "was as described"),
}


@dataclass(frozen=True)
class Task:
    text: str
    truth: str

    def payload(self) -> dict:
        return {"kind": "sentiment", "text": self.text, "labels": list(LABELS)}


def make_tasks(count: int, rng: random.Random) -> list[Task]:
    tasks = []
    for _ in range(count):
        truth = rng.choice(LABELS)
        tasks.append(Task(f"{rng.choice(_SUBJECTS)} {rng.choice(_PHRASES[truth])}.", truth))
    return tasks


@dataclass(frozen=True)
class SimulatedWorker:
    name: str
    kind: str  # honest | spammer | copier
    accuracy: float = 0.92
    copies: str | None = None  # the honest worker a copier copies

    def label(self, task: Task, rng: random.Random, copied: str | None = None) -> str:
        if self.kind == "copier" and copied is not None:
            return copied
        if self.kind == "spammer" or rng.random() > self.accuracy:
            return rng.choice(LABELS)
        return task.truth


def assign(task_count: int, answers_per_task: int, workers: list[SimulatedWorker],
           rng: random.Random) -> list[list[int]]:
    """Which workers answer each task: `answers_per_task` distinct ones. A copier only takes
    tasks its victim took (it needs something to copy); everyone else spreads evenly."""
    victim_of = {i: next(j for j, o in enumerate(workers) if o.name == w.copies)
                 for i, w in enumerate(workers) if w.kind == "copier"}
    load = [0] * len(workers)
    plan = []
    for _ in range(task_count):
        free = [i for i in range(len(workers)) if i not in victim_of]
        chosen = sorted(rng.sample(free, len(free)), key=lambda i: load[i])[:answers_per_task]
        for copier, victim in victim_of.items():
            if victim in chosen and rng.random() < 0.7:
                chosen[-1 if chosen[-1] != victim else -2] = copier
        for i in chosen:
            load[i] += 1
        plan.append(chosen)
    return plan
