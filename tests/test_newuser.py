"""What a new user trips on (issue 16): the demo's exit status, headless finding lines,
the fixed printed-mIoU scale, class names, progress counters, `segwatch init`."""
from __future__ import annotations

from segwatch.cli import demo_outcome


# ---------------------------------------------------------------------- demo exit status
def test_demo_exits_0_when_the_policy_stopped_the_faulty_run():
    report = {"status": "killed", "exit_code": 143,
              "actions": [{"kind": "kill", "finding": "pred.collapse", "step": 223, "by": "policy"}]}
    code, line = demo_outcome(report, 143)
    assert code == 0
    assert "pred.collapse" in line and "223" in line and "143" in line
    code, line = demo_outcome(report, 143, "zh")
    assert code == 0 and "143" in line and "演示" in line


def test_demo_keeps_the_training_status_when_nothing_was_acted_on():
    # a user's Ctrl-C (a kill by the user) or a crash: the demo did not show its point
    user_kill = {"actions": [{"kind": "kill", "finding": None, "step": 40, "by": "user"}]}
    assert demo_outcome(user_kill, 130)[0] == 130
    assert demo_outcome({}, 1)[0] == 1
    code, line = demo_outcome({"actions": []}, 0)
    assert code == 0 and "0" in line
