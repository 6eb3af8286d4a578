"""The study runner: finished runs are skipped, the deadline stops new runs, failures are recorded."""

from __future__ import annotations

from pathlib import Path

from hybrid.rundir import RunDir
from hybrid.tracking.runner import Job, StudyRunner, by_seed


def _runner(root: Path, records: list[dict], **kwargs: object) -> StudyRunner:
    options = {"jobs": 1, "deadline": None, "extra": [], "build_workers": 1, "in_process": False}
    return StudyRunner(root, **{**options, **kwargs}, on_record=records.append)


def test_finished_runs_are_skipped_and_the_deadline_stops_new_ones(tmp_path: Path) -> None:
    RunDir(tmp_path / "study" / "a").write_metrics({"auc": 1.0})
    jobs = [Job("study", "a", 0, ["x=1"], None), Job("study", "b", 0, ["x=2"], None)]
    records = _runner(tmp_path, [], deadline=1e-9).run(jobs)
    assert [r["status"] for r in records] == ["done before", "skipped (deadline)"]
    records = _runner(tmp_path, [], deadline=1e-9, skip_finished=False).run(jobs[:1])
    assert records[0]["status"] == "skipped (deadline)"  # the train task decides, not the runner


def test_a_failing_run_is_recorded_with_its_command_and_log(tmp_path: Path) -> None:
    seen: list[dict] = []
    job = Job("study", "nested/bad", None, ["no_such_group=1"], None)
    (record,) = _runner(tmp_path, seen).run([job])
    assert record["status"].startswith("failed (rc ") and seen == [record]
    assert "no_such_group=1" in record["command"] and "seed=" not in record["command"]
    log = tmp_path / "study" / "nested" / "bad.log"
    assert "no_such_group" in log.read_text()


def test_by_seed_interleaves_queues_seed_by_seed() -> None:
    a = [Job("a", f"a{s}", s, [], None) for s in (0, 1)]
    b = [Job("b", f"b{s}", s, [], None) for s in (0, 1)]
    assert [j.name for j in by_seed(a, b)] == ["a0", "b0", "a1", "b1"]
