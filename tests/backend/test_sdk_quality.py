"""Quality control: spammers and copiers are caught, honest workers are not."""

import random

from kempelen.sdk.quality import Label, agreement_rates, copied_from, majority_labels, review

LABELS = ("negative", "neutral", "positive")


def simulate(seed: int, tasks: int = 300, copier: bool = True, spammer: bool = True) -> list[Label]:
    rng = random.Random(seed)
    truth = [rng.choice(LABELS) for _ in range(tasks)]
    labels: list[Label] = []
    for task in range(tasks):
        for worker in rng.sample(["a", "b", "c", "d", "e", "f"], 3):
            label = truth[task] if rng.random() < 0.92 else rng.choice(LABELS)
            labels.append(Label(worker, task, label, task * 10))
            if copier and worker == "a":
                labels.append(Label("copier", task, label, task * 10 + 5))
        if spammer and rng.random() < 0.4:
            labels.append(Label("spammer", task, rng.choice(LABELS), task * 10 + 1))
    return labels


def test_majority_breaks_ties_by_label_order_and_can_exclude_a_worker():
    labels = [Label("a", 0, "x"), Label("b", 0, "y"), Label("c", 1, "z")]
    assert majority_labels(labels) == {0: "x", 1: "z"}
    assert majority_labels(labels, exclude="a") == {0: "y", 1: "z"}


def test_spammer_and_copier_rejected_honest_workers_kept_across_seeds():
    for seed in range(5):
        verdicts = {v.worker: v for v in review(simulate(seed))}
        assert verdicts["spammer"].reject, seed
        assert "majority" in verdicts["spammer"].reason
        assert verdicts["copier"].reject, seed
        assert "identical to those worker a gave earlier" in verdicts["copier"].reason
        assert not any(verdicts[w].reject for w in "abcdef"), (seed, [verdicts[w] for w in "abcdef"])


def test_the_source_of_a_copy_is_not_blamed():
    labels = simulate(3)
    rates = agreement_rates(labels)
    assert copied_from(labels, "a", rates) is None
    other, shared, chance = copied_from(labels, "copier", rates)
    assert other == "a" and shared > 40 and chance < 1e-4


def test_few_shared_tasks_are_not_enough_to_call_a_copy():
    labels = simulate(1, tasks=20, spammer=False)
    verdicts = {v.worker: v for v in review(labels)}
    assert not verdicts["copier"].reject  # too little evidence: identical on a handful of easy tasks
