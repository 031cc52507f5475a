"""Progress lines: rate and ETA from the units done in this process, one write per line."""

from __future__ import annotations

from prunepi.progress import Progress, format_duration, say


def test_format_duration():
    assert [format_duration(s) for s in (0, 37.4, 245, 3725)] == ["0s", "37s", "4m05s", "1h02m"]


def test_rate_and_eta_count_only_work_done_since_start():
    p = Progress(total=100, unit="episodes", done0=20, start=0.0)
    assert p.rate(30, now=5.0) == 2.0  # 10 episodes in 5 s, not 30
    assert p.line(30, now=5.0) == "30/100 episodes  2.00 episodes/s  elapsed 5s  ETA 35s"
    assert p.line(20, now=0.0).endswith("ETA ?")  # nothing done yet: no rate


def test_say_writes_each_line_once(capfd):
    say("[x] one line")
    assert capfd.readouterr().out == "[x] one line\n"


def test_tune_prints_one_line_per_finished_trial(capfd):
    from types import SimpleNamespace

    from tune.progress import TrialProgress

    cb = TrialProgress(total=4)
    trial = SimpleNamespace(trial_id="t1", last_result={"success_rate": 0.5, "score": 0.375})
    cb.on_trial_complete(1, [trial], trial)
    cb.on_trial_error(2, [trial], trial)
    lines = capfd.readouterr().out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("[tune] 1/4 trials") and "t1 done  success_rate 0.5" in lines[0]
    assert lines[1].startswith("[tune] 2/4 trials") and "t1 errored" in lines[1]
