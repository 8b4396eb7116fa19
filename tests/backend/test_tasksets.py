"""kempelen.protocol.tasksets: the task sets review calls and review events name answers by."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kempelen.protocol.tasksets import TASKS_PER_SET, set_tasks, task_sets

A = "0x" + "aa" * 20
B = "0x" + "BB" * 20
C = "0x" + "cC" * 20


def test_one_set_per_worker_and_96_task_group():
    assert task_sets([(A, 0), (A, 5), (A, 95), (A, 96), (A, 191), (A, 192)]) == [
        (A, 0, 1 | 1 << 5 | 1 << 95), (A, 96, 1 | 1 << 95), (A, 192, 1)]
    assert task_sets([(A, 3), (B, 3)]) == [(A, 0, 1 << 3), (B, 0, 1 << 3)]


def test_sets_sorted_by_worker_then_group_whatever_the_input_order():
    refs = [(B, 200), (C, 7), (A, 100), (B, 1), (A, 2), (C, 96 * 40 + 1)]
    assert task_sets(refs) == [(A, 0, 1 << 2), (A, 96, 1 << 4), (B, 0, 1 << 1), (B, 192, 1 << 8),
                               (C, 0, 1 << 7), (C, 96 * 40, 1 << 1)]
    assert task_sets(reversed(refs)) == task_sets(refs)


def test_workers_compare_case_insensitively():
    upper, lower = "0x" + "AB" * 20, "0x" + "ab" * 20
    ((worker, first, tasks),) = task_sets([(upper, 1), (lower, 2)])
    assert (worker.lower(), first, tasks) == (lower, 0, 0b110)
    sets = task_sets([(lower, 1), ("0x" + "Ac" * 20, 0), (upper, 97)])
    assert [(w.lower(), first) for w, first, _ in sets] == [(lower, 0), (lower, 96), ("0x" + "ac" * 20, 0)]


def test_empty_input_has_no_sets():
    assert task_sets([]) == []
    assert set_tasks(96, 0) == []


@pytest.mark.parametrize("refs", [
    [(A, 3), (A, 3)],
    [(A, 3), (B, 4), (A.upper().replace("0X", "0x"), 3)],  # the same worker spelled differently
    [(A, 2**32 - 1), (A, 2**32 - 1)],
])
def test_an_answer_named_twice_is_refused(refs):
    with pytest.raises(ValueError, match="named twice"):
        task_sets(refs)


@pytest.mark.parametrize("task", [-1, 2**32, 2**40])
def test_task_indexes_outside_uint32_are_refused(task):
    with pytest.raises(ValueError, match="not a uint32"):
        task_sets([(A, 0), (A, task)])


def test_the_last_uint32_task_is_in_range():
    last = 2**32 - 1
    ((worker, first, tasks),) = task_sets([(A, last)])
    assert first % TASKS_PER_SET == 0 and first + tasks.bit_length() - 1 == last
    assert set_tasks(first, tasks) == [last]


def test_set_tasks_reads_bits_ascending():
    assert set_tasks(0, 0b1011) == [0, 1, 3]
    assert set_tasks(96, 1 << 95 | 1) == [96, 191]


workers = st.sampled_from([A, B, C, A.upper().replace("0X", "0x")])
answer_sets = st.sets(st.tuples(workers, st.integers(0, 2**32 - 1)) | st.tuples(workers, st.integers(0, 400)),
                      max_size=60)


@given(answer_sets)
def test_sets_name_exactly_the_answers_once(refs):
    refs = {(w.lower(), t) for w, t in refs}  # one answer per worker and task, whatever the case
    sets = task_sets(sorted(refs, key=lambda r: (r[1], r[0])))
    assert [(w.lower(), first) for w, first, _ in sets] == sorted({(w, t - t % 96) for w, t in refs})
    for _, first, tasks in sets:
        assert first % TASKS_PER_SET == 0 and 0 < tasks < 1 << TASKS_PER_SET  # what the escrow accepts
    named = [(w.lower(), t) for w, first, tasks in sets for t in set_tasks(first, tasks)]
    assert sorted(named) == sorted(refs)


@given(st.integers(0, 2**32 // 96 - 1), st.integers(1, 2**96 - 1))
def test_set_tasks_round_trips_through_task_sets(group, tasks):
    first = group * TASKS_PER_SET
    named = set_tasks(first, tasks)
    assert named == sorted(named) and all(first <= t < first + TASKS_PER_SET for t in named)
    assert task_sets((A, t) for t in named) == [(A, first, tasks)]
