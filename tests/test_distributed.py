"""Data-parallel training: two local worker processes under MultiWorkerMirroredStrategy (TF_CONFIG on
loopback ports) train to a model of the same shape as one process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from synthetic_training_data import write_training_data

from linnet_core.model.export import read_model_json
from linnet_core.model.predictor import Predictor
from linnet_core.model.train import cluster_from_env
from linnet_core.taxonomy import Taxonomy

CONFIG = {"shared_units": [32], "level_units": [16], "epochs": 2, "batch_size": 64}


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def _train_command(root: Path, output: Path) -> list[str]:
    return [sys.executable, "-m", "pipelines.cli", "train", "--data", str(root / "data"),
            "--config", str(root / "config.json"), "--output", str(output)]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory, gpt: Taxonomy) -> Path:
    root = tmp_path_factory.mktemp("distributed")
    write_training_data(root / "data", gpt, sizes={"train": 300, "validation": 90}, files_per_split=1)
    (root / "config.json").write_text(json.dumps(CONFIG))
    return root


@pytest.mark.trains_model
@pytest.mark.subprocesses
def test_two_workers_train_to_the_same_model_shape_as_one(data_root: Path, gpt: Taxonomy) -> None:
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    project = Path(__file__).resolve().parent.parent
    processes = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        env = {**os.environ, "TF_CONFIG": json.dumps(tf_config), "TF_CPP_MIN_LOG_LEVEL": "2"}
        command = _train_command(data_root, data_root / f"worker-{index}")
        processes.append(subprocess.Popen(command, cwd=project, env=env, stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT, text=True))
    logs = []
    try:
        for process in processes:
            logs.append(process.communicate(timeout=400)[0])
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    assert [p.returncode for p in processes] == [0, 0], logs[0][-3000:] + logs[1][-3000:]
    # The chief (worker 0) writes the model directory; the other worker writes nothing.
    assert not (data_root / "worker-1").exists()
    single = data_root / "single"
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    done = subprocess.run(_train_command(data_root, single), cwd=project, env=env, capture_output=True,
                          text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    chief = data_root / "worker-0"
    assert read_model_json(chief)["training"]["workers"] == 2
    assert read_model_json(single)["training"]["workers"] == 1
    two, one = (json.loads((d / "curves.json").read_text()) for d in (chief, single))
    assert two["epochs"] == one["epochs"] == [1, 2]
    assert set(two["levels"]) == set(one["levels"])
    rng = np.random.default_rng(0)
    inputs = {"text_embedding": rng.normal(size=(5, 384)), "title_embedding": rng.normal(size=(5, 384)),
              "image_embedding": np.zeros((5, 1280)), "image_present": np.zeros(5)}
    for method in ("predict", "level_probabilities"):
        shapes = [{k: v.shape for k, v in getattr(Predictor(d, gpt), method)(inputs).items()}
                  for d in (chief, single)]
        assert shapes[0] == shapes[1]


def test_without_tf_config_training_is_single_process() -> None:
    cluster = cluster_from_env({})
    assert (cluster.num_workers, cluster.worker_index, cluster.is_chief) == (1, 0, True)
    one_worker = {"TF_CONFIG": json.dumps({"cluster": {"worker": ["127.0.0.1:1"]},
                                           "task": {"type": "worker", "index": 0}})}
    assert cluster_from_env(one_worker).num_workers == 1
