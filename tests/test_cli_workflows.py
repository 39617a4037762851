"""``aqueue workflows list|show|cancel`` through the CLI's entry point."""

from __future__ import annotations

import aqueue
from tests.test_cli_admin import Cli, cli

__all__ = ["cli"]


def test_list_show_and_cancel(cli: Cli) -> None:
    async def make(app: aqueue.App) -> tuple[int, int]:
        send = app.registry.get("send")
        assert send is not None
        wf = aqueue.Workflow("signup")
        wf.add("welcome", send.build(to="a@example.com"))
        wf.add("follow-up", send.build(to="a@example.com"), deps=["welcome"])
        run = await app.enqueue_workflow(wf)
        batch = await app.enqueue_batch([send.build(to="b@example.com")])
        return run.id, batch.id

    wf_id, batch_id = cli.with_app(make)
    assert cli("workflows", "list") == 0, cli.err
    assert "signup" in cli.out and "available 1, pending 1" in cli.out
    assert "2 workflow(s) and batch(es)" in cli.out
    listed = cli.json("workflows", "list", "--kind", "batch")
    assert [w["id"] for w in listed] == [batch_id]
    page = cli.json("workflows", "list", "--limit", "1")
    assert [w["id"] for w in page] == [batch_id]
    assert [w["id"] for w in cli.json("workflows", "list", "--cursor", str(batch_id))] == [wf_id]

    assert cli("workflows", "show", str(wf_id)) == 0, cli.err
    assert f"workflow {wf_id} 'signup': running" in cli.out
    assert "follow-up" in cli.out and "pending" in cli.out
    shown = cli.json("workflows", "show", str(wf_id))
    assert [j["step"] for j in shown["jobs"]] == ["welcome", "follow-up"]

    assert cli("workflows", "cancel", str(wf_id)) == 0, cli.err
    assert "2 job(s)" in cli.out
    assert cli.json("workflows", "show", str(wf_id))["state"] == "cancelled"
    assert cli("workflows", "show", "999999") == 3
    assert "workflow or batch 999999 does not exist" in cli.err
