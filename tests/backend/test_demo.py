"""The demo, short form: the whole story runs, and every unit of every deposit is accounted for."""

import re

from rich.console import Console

from kempelen.chain.contracts import ETH
from kempelen.demo.story import UNSETTLED_TASKS, Demo, print_summary
from kempelen.sdk.amounts import to_base_units


def test_demo_short_form_accounts_for_every_unit(tmp_path):
    console = Console(record=True, width=120)
    demo = Demo(tmp_path / "demo", eth_tasks=8, usdc_tasks=24, settled_tasks=6, console=console)
    result = demo.run()
    print_summary(result, console)
    for plan in result.batches:
        outcome = plan.outcome
        answers = outcome["approved"] + outcome["released"] + outcome["rejected"] + outcome["settled"]
        assert answers == len(plan.tasks) * 3  # every slot answered once, paid by one path
        reward = to_base_units(plan.reward, plan.decimals)
        fee = to_base_units(plan.relay_fee, plan.decimals)
        paid = (outcome["approved"] + outcome["released"] + outcome["settled"]) * reward
        assert plan.funded.deposit == paid + answers * fee + plan.refunded
        if plan.settlement:  # settled in two signed settlements; the rest went direct and was released
            assert outcome["settled"] == (len(plan.tasks) - UNSETTLED_TASKS) * 3
            assert outcome["released"] == UNSETTLED_TASKS * 3 and not outcome["approved"]
        else:
            assert outcome["rejected"] > 0  # the spammer was caught
    assert [(p.token == ETH, p.settlement) for p in result.batches] == [(True, False), (False, False), (False, True)]
    assert result.labels_path.read_text().count("\n") == 8 + 24 + 6
    assert result.discrepancies == 0
    text = console.export_text()
    assert "where every unit of value went" in text and "answers settled" in text
    assert "the safety valve" in text
    # The settlement batch's fallen-back answers belong to workers with settled answers: their
    # sealed words were opened before the direct path took the rest.
    assert re.search(r"opened the sealed settled words of [1-9]\d* workers", text), text
