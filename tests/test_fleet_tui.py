"""The Ranks tab (issue 18 item 2), driven with Pilot: a fleet of 2 nodes x 2 ranks (merged
FleetState, NaN on node 1's second rank), a single node's 2-rank run (the tab appears once
the run turns out distributed), and a single process (no tab)."""
from __future__ import annotations

import io

import pytest
from rich.console import Console
from textual.widgets import DataTable

from segwatch.fleet import FleetState, merge_node_events
from segwatch.tui import SegwatchApp
from segwatch.tui.panels.ranks import RanksPanel

from test_fleet import NODES, node_events

SIZE = (110, 60)


def screen_text(app) -> str:
    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), record=True,
                      force_terminal=True, color_system=None, legacy_windows=False)
    console.print(app.screen._compositor.render_update(full=True, screen_stack=app._background_screens))
    return console.export_text()


def _cells(table: DataTable, col: str) -> list[str]:
    return [str(table.get_cell(row, col)) for row in table.rows]


async def test_ranks_tab_of_a_fleet_names_nodes_and_the_nan_rank():
    events = list(merge_node_events([node_events(0), node_events(1, nan_rank=3)]))
    app = SegwatchApp(events=events, live=False, state=FleetState(nodes=NODES))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("9")
        await pilot.pause()
        panel = app.query_one("#panel-ranks", RanksPanel)
        table = panel.query_one("#ranks-table", DataTable)
        assert _cells(table, "rank") == ["0", "1", "2", "3"]
        assert _cells(table, "node") == ["0", "0", "1", "1"]
        assert _cells(table, "step") == ["20", "20", "20", "20"]
        assert _cells(table, "nan") == ["0", "0", "0", "1"]
        assert _cells(table, "end") == ["finished"] * 4
        assert len(panel.query(".rank-curve")) == 4          # one loss curve per rank
        text = screen_text(app)
        assert "4 ranks (world size 4) on 2 nodes" in text
        assert "loss[3]  node 1" in text


@pytest.mark.slow
async def test_ranks_tab_appears_for_a_one_node_distributed_run_only():
    one_node = [dict(e, world_size=2, local_world_size=2) if e.get("type") == "hello" else dict(e, world_size=2)
                for e in node_events(0) if e.get("rank") is not None]
    app = SegwatchApp(events=one_node, live=False)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("9")
        await pilot.pause()
        table = app.query_one("#panel-ranks", RanksPanel).query_one("#ranks-table", DataTable)
        assert _cells(table, "rank") == ["0", "1"]
        assert _cells(table, "node") == ["–", "–"]
    single = [{k: v for k, v in e.items() if k not in ("rank", "world_size")} for e in node_events(0)
              if e.get("rank") in (None, 0)]
    app = SegwatchApp(events=single, live=False)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("9")          # no such tab: nothing happens
        await pilot.pause()
        assert not app.query("#panel-ranks")
        assert app.query_one("#tabs").active == "overview"


@pytest.mark.slow
async def test_app_attached_to_two_recorded_nodes_through_the_fleet_client(tmp_path):
    from segwatch.fleet.sources import FleetClient
    from test_fleet import write_node_runs

    dirs = write_node_runs(tmp_path, nan_rank=3)
    client = FleetClient([{"target": str(d), "name": d.name} for d in reversed(dirs)])
    try:
        app = SegwatchApp(client=client, live=True, state=client.new_state())
        async with app.run_test(size=SIZE) as pilot:
            for _ in range(100):
                await pilot.pause(0.05)
                if app.view.stream_ended:
                    break
            assert app.view.stream_ended
            await pilot.press("9")
            await pilot.pause()
            table = app.query_one("#panel-ranks", RanksPanel).query_one("#ranks-table", DataTable)
            assert _cells(table, "node") == ["0", "0", "1", "1"]
            assert _cells(table, "nan") == ["0", "0", "0", "1"]
            assert app.state.findings["loss.nonfinite"].evidence["node"] == 1
            assert app.state.status == "finished"
    finally:
        client.close()
