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


def test_one_list_of_execution_only_overrides_serves_the_runner_the_studies_and_cross_survey() -> None:
    """The runner's own defaults are execution-only; `hybrid study` names a study without them (and
    without where it runs); the cross-survey report lists every run's overrides without them."""
    import importlib.util

    from hybrid.tracking.runner import RUN_DEFAULTS, execution_only
    from hybrid.tracking.study import Study

    path = Path(__file__).resolve().parents[1] / "experiments" / "cross_survey.py"
    spec = importlib.util.spec_from_file_location("cross_survey_driver", path)
    cross_survey = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cross_survey)

    assert all(execution_only(o) for o in RUN_DEFAULTS)
    assert execution_only("+logger.wandb.tags=[a]") and not execution_only("train.batch_size=512")
    study = Study("s", sweep=[])
    assert study.tag([*RUN_DEFAULTS, "data.workers=8", "trainer=gpu", "paths.cache_dir=/x"]) == "s"
    assert study.tag(["train.lr=0.1", *RUN_DEFAULTS]) == study.tag(["train.lr=0.1"]) != "s"
    # the gpu preset's line of reports/cross_survey.md, from the base the driver builds
    base = ["trainer=gpu", "train.batch_size=512", "data.n_fields=48", "trainer.max_epochs=10"]
    base += ["data.workers=16", "data.progress=false", "trainer.enable_progress_bar=false"]
    base += ["logger.wandb.enabled=false", "train.threads=8"]
    assert cross_survey.execution_only is execution_only  # the driver keeps no list of its own
    line = " ".join(o for o in base if not cross_survey.execution_only(o))
    assert line == "trainer=gpu train.batch_size=512 data.n_fields=48 trainer.max_epochs=10"
