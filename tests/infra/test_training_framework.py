"""The shared training framework: one checkpoint layout and resume policy, the loop cadence, the tracker."""

import json
from pathlib import Path

import pytest

from videopoet.checkpoint import CheckpointError
from videopoet.config import ConfigError, to_dict
from videopoet.training.checkpoints import FORMAT_VERSION, CheckpointManager, config_diff
from videopoet.training.loop import Cadence, run_loop

CFG = {"optim": {"lr": 1e-3, "betas": [0.9, 0.99]}, "steps": 10, "model": {"channels": 8}}


def _manager(run_dir, config=CFG, keep=2):
    return CheckpointManager(run_dir, kind="test-train", config=config, keep=keep)


def _payload(directory: Path) -> None:
    (directory / "state.txt").write_text("x")


def test_layout_meta_and_latest(tmp_path):
    m = _manager(tmp_path)
    assert m.latest() is None and m.resume_point() is None
    for step in (2, 10, 4):
        m.save(step, _payload, extra={"epoch": 1})
    latest = m.latest()
    assert latest == tmp_path / "checkpoints" / "step_00000010"
    meta = json.loads((latest / "meta.json").read_text())
    assert meta["format_version"] == FORMAT_VERSION and meta["step"] == 10 and meta["config"] == CFG
    assert meta["extra"] == {"epoch": 1} and (latest / "state.txt").read_text() == "x"
    path, meta2 = m.resume_point()
    assert path == latest and meta2 == meta


def test_keep_last_n(tmp_path):
    m = _manager(tmp_path, keep=2)
    for step in range(1, 6):
        m.save(step, _payload)
    assert [p.name for p in m.steps()] == ["step_00000004", "step_00000005"]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_00000004", "step_00000005"]


def test_atomic_write_leaves_no_partial_directory(tmp_path):
    m = _manager(tmp_path)
    m.save(1, _payload)

    def dies(directory: Path) -> None:
        (directory / "half.bin").write_bytes(b"0" * 10)
        raise KeyboardInterrupt("killed while writing")

    with pytest.raises(KeyboardInterrupt):
        m.save(2, dies)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step_00000001"]
    assert m.latest().name == "step_00000001"
    # a staging directory left by a hard kill is never taken for a checkpoint
    m.begin(3)
    (m.staging_dir(3) / "half.bin").write_bytes(b"0")
    assert m.latest().name == "step_00000001" and m.resume_point()[0].name == "step_00000001"


def test_changed_config_is_refused_naming_the_differing_keys(tmp_path):
    _manager(tmp_path).save(3, _payload)
    changed = {**CFG, "optim": {"lr": 1e-2, "betas": [0.9, 0.99]}, "model": {"channels": 16}}
    with pytest.raises(ConfigError, match="different config") as err:
        _manager(tmp_path, config=changed).resume_point()
    message = str(err.value)
    assert "optim.lr" in message and "model.channels" in message and "betas" not in message
    assert "\n" not in message
    assert config_diff(CFG, changed) == ["model.channels", "optim.lr"]


def test_a_key_added_later_is_accepted_at_its_default_only(tmp_path):
    """A checkpoint written before a config key existed resumes when the run keeps the key's default."""
    _manager(tmp_path).save(3, _payload)
    defaults = {**CFG, "optim": {**CFG["optim"], "clip": 1.0}, "ema": {"decay": 0.0}}
    at_default = {**CFG, "optim": {**CFG["optim"], "clip": 1.0}, "ema": {"decay": 0.0}}
    manager = CheckpointManager(tmp_path, kind="test-train", config=at_default, defaults=defaults)
    assert manager.resume_point()[0].name == "step_00000003"
    for changed in ({**at_default, "optim": {**CFG["optim"], "clip": 0.5}}, {**at_default, "ema": {"decay": 0.9}}):
        with pytest.raises(ConfigError, match="different config"):
            CheckpointManager(tmp_path, kind="test-train", config=changed, defaults=defaults).resume_point()
    # a key the checkpoint has is never excused by the default, nor is a new key without a known default
    with pytest.raises(ConfigError, match="optim.lr"):
        CheckpointManager(tmp_path, kind="test-train", config={**CFG, "optim": {**CFG["optim"], "lr": 0.1}},
                          defaults={**CFG, "optim": {**CFG["optim"], "lr": 0.1}}).resume_point()
    with pytest.raises(ConfigError, match="extra"):
        CheckpointManager(tmp_path, kind="test-train", config={**CFG, "extra": 1}, defaults=CFG).resume_point()


def test_for_config_takes_the_defaults_from_the_config_dataclass(tmp_path):
    from videopoet.trainer.sr.config import RECIPES_TRAIN, SRTrainConfig

    cfg = RECIPES_TRAIN.get("tiny")
    manager = CheckpointManager.for_config(tmp_path, kind="sr-train", cfg=cfg)
    assert manager.defaults["objective"] == to_dict(SRTrainConfig().objective)
    manager.save(1, _payload)
    old = json.loads((manager.latest() / "meta.json").read_text())
    del old["config"]["objective"]["lr_drop"]  # as if written before the key existed
    (manager.latest() / "meta.json").write_text(json.dumps(old))
    assert CheckpointManager.for_config(tmp_path, kind="sr-train", cfg=cfg).resume_point() is not None
    cfg.objective.lr_drop = 0.3
    with pytest.raises(ConfigError, match="objective.lr_drop"):
        CheckpointManager.for_config(tmp_path, kind="sr-train", cfg=cfg).resume_point()


@pytest.mark.parametrize("old", ["train_state/step_00000002", "checkpoint_00000002", "checkpoints/step_00000002"])
def test_old_layouts_are_refused_with_their_version(tmp_path, old):
    d = tmp_path / old
    d.mkdir(parents=True)
    (d / "meta.json").write_text(json.dumps({"kind": "x", "format_version": 1, "config": {}}))
    with pytest.raises(CheckpointError, match="older layout.*format version 1"):
        _manager(tmp_path).resume_point()


class _Counter:
    """A minimal StatefulTrainer: the loss is the step number."""

    def __init__(self):
        self.step = 0
        self.saved: list[int] = []
        self.evaluated: list[int] = []

    def train_step(self):
        self.step += 1
        return {"loss": float(self.step)}

    def state_dict(self):
        return {"step": self.step}

    def load_state_dict(self, state):
        self.step = state["step"]

    def save_payload(self, directory):
        pass

    def load_payload(self, directory):
        pass

    def evaluate(self):
        self.evaluated.append(self.step)
        return {"eval/x": 1.0}

    def export(self, directory):
        return None


def test_loop_cadence_and_absolute_stop_after():
    t = _Counter()
    logged = []
    cadence = Cadence(max_steps=7, log_every=2, eval_every=3, save_every=3, stop_after=5)
    result = run_loop(t, cadence, save=lambda: t.saved.append(t.step),
                      log=lambda m, s, due: due and logged.append(s))
    assert result.stopped and result.reason == "stop_after" and result.step == 5
    assert t.saved == [3, 5] and t.evaluated == [3] and logged == [2, 4]  # a stop is a checkpoint
    # stop_after is absolute: resuming at step 5 with stop_after=5 runs nothing
    assert run_loop(t, cadence, save=lambda: t.saved.append(t.step)).steps_run == 0
    cadence.stop_after = None
    result = run_loop(t, cadence, save=lambda: t.saved.append(t.step))
    assert not result.stopped and result.step == 7 and t.saved == [3, 5, 6, 7] and t.evaluated == [3, 6, 7]


def test_loop_stop_request_checkpoints_at_a_step_boundary():
    t = _Counter()
    result = run_loop(t, Cadence(max_steps=100, save_every=50), save=lambda: t.saved.append(t.step),
                      stop_requested=lambda: t.step >= 4)
    assert result.reason == "stop_request" and result.step == 4 and t.saved == [4]


def test_tracker_logs_params_metrics_artifacts_and_tags(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from videopoet.tracking import Tracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("VIDEOPOET_EXPERIMENT", "test-framework")
    (tmp_path / "a.txt").write_text("hi")
    with Tracker.start("test-job", {"lr": 0.1}) as tracker:
        tracker.log_metrics({"loss": 1.0, "name": "skipped"}, step=1, flush=False)
        tracker.log_metrics({"loss": 0.5}, step=2)
        tracker.log_params({"extra": 3})
        tracker.log_artifact(tmp_path / "a.txt", "files")
        tracker.set_tags({"k": "v"})
        Tracker.attach(tracker.run_id).log_metrics({"worker/loss": 2.0}, step=1)
        run_id = tracker.run_id
    client = MlflowClient(uri)
    run = client.get_run(run_id)
    assert [m.value for m in client.get_metric_history(run_id, "loss")] == [1.0, 0.5]
    assert run.data.params["lr"] == "0.1" and run.data.params["extra"] == "3" and run.data.tags["k"] == "v"
    assert run.data.metrics["worker/loss"] == 2.0 and run.info.status == "FINISHED"
    assert [a.path for a in client.list_artifacts(run_id, "files")] == ["files/a.txt"]
    Tracker.disabled().log_metrics({"loss": 1.0}, step=0)  # a no-op on ranks > 0


def test_step_log_cuts_back_to_the_resumed_step_and_tracks_due_steps(tmp_path, monkeypatch):
    """A run killed between a log line and its checkpoint resumes at the checkpoint: the lines past it go.
    Due steps and the last step reach the MLflow run (a real one, on a SQLite file)."""
    import json

    from mlflow.tracking import MlflowClient

    from videopoet.tracking import Tracker
    from videopoet.training.step_log import StepLog

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    path = tmp_path / "losses.jsonl"
    path.write_text("".join(json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in range(1, 6)))
    with Tracker.start("step-log-test") as tracker, \
            StepLog(path, tracker, resumed_step=3, last_step=6) as log:
        log.log({"loss": 0.25}, 4, due=False)
        log.log({"loss": 0.2}, 5, due=True)
        log.log({"loss": 0.1}, 6, due=False)  # the last step always reaches the tracker
        log.on_eval({"eval/psnr": 20.0}, 6)
        run_id = tracker.run_id
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2, 3, 4, 5, 6]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert [m.step for m in client.get_metric_history(run_id, "loss")] == [5, 6]
    assert [m.value for m in client.get_metric_history(run_id, "eval/psnr")] == [20.0]
    assert log.eval_metrics == {"eval/psnr": 20.0}
    with StepLog(path, Tracker.disabled(), resumed_step=0, last_step=6, enabled=False):
        pass  # a rank other than 0 neither reads nor writes the file
    assert len(path.read_text().splitlines()) == 6
