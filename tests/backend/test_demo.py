"""The demo, short form: the whole story runs, and every unit of every deposit is accounted for."""

from rich.console import Console

from kempelen.chain.contracts import ETH
from kempelen.demo.story import Demo, print_summary
from kempelen.sdk.amounts import to_base_units


def test_demo_short_form_accounts_for_every_unit(tmp_path):
    console = Console(record=True, width=120)
    demo = Demo(tmp_path / "demo", eth_tasks=8, usdc_tasks=24, console=console)
    result = demo.run()
    print_summary(result, console)
    for plan in result.batches:
        answers = plan.outcome["approved"] + plan.outcome["released"] + plan.outcome["rejected"]
        assert answers == len(plan.tasks) * 3  # every slot answered once
        reward = to_base_units(plan.reward, plan.decimals)
        fee = to_base_units(plan.relay_fee, plan.decimals)
        paid = (plan.outcome["approved"] + plan.outcome["released"]) * reward
        assert plan.funded.deposit == paid + answers * fee + plan.refunded
        assert plan.outcome["rejected"] > 0  # the spammer was caught
    assert [p.token == ETH for p in result.batches] == [True, False]
    assert result.labels_path.read_text().count("\n") == 8 + 24
    assert result.discrepancies == 0
    assert "where every unit of value went" in console.export_text()
