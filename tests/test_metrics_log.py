"""metrics.jsonl and TensorBoard hold the same numbers, each step's scalars written as one event."""

import math

from genpref.rundir import MetricsLog, read_metrics


def test_jsonl_and_tensorboard_agree(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log = MetricsLog(tmp_path, True, True, None)
    log.log(1, {"loss": 0.5, "lr": 1e-4})
    log.log(2, {"loss": 0.25, "lr": 1e-4, "grad_norm": math.nan})
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2]  # on disk before close
    log.close()
    assert read_metrics(tmp_path)[1] == {"step": 2, "loss": 0.25, "lr": 1e-4, "grad_norm": None}
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert sorted(events.Tags()["scalars"]) == ["loss", "lr"]  # NaN is not written
    assert [(e.step, e.value) for e in events.Scalars("loss")] == [(1, 0.5), (2, 0.25)]


def test_resume_drops_rows_after_the_checkpoint(tmp_path):
    log = MetricsLog(tmp_path, True, False, None)
    for step in (1, 2, 3):
        log.log(step, {"loss": float(step)})
    log.close()
    log = MetricsLog(tmp_path, True, False, 2)
    log.log(3, {"loss": 30.0})
    log.close()
    assert [(r["step"], r["loss"]) for r in read_metrics(tmp_path)] == [(1, 1.0), (2, 2.0), (3, 30.0)]
