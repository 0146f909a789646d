"""Shared fixtures: the real composed config, shrunk and pointed at temporary folders."""

from __future__ import annotations

import shutil
from pathlib import Path

import mlflow
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
SLOW_TIMEOUT_S = 1200  # a slow end-to-end test (several workers, a study under load) may take minutes, not this


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slow tests get a longer timeout than the default suite's (pyproject's ``timeout``)."""
    for item in items:
        if item.get_closest_marker("slow") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(SLOW_TIMEOUT_S))


EXPERIMENTS = sorted(path.stem for path in (CONF_DIR / "experiment").glob("*.yaml"))


@pytest.fixture(autouse=True)
def no_inherited_tracking_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    """mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI; a CLI a later test starts must not inherit it."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder for the built small models, shared by every test (they build once)."""
    return tmp_path_factory.mktemp("models")


def retrain_one_weight(model: Path, into: Path) -> Path:
    """Copy a pipeline folder and flip one byte of its transformer weights: same architecture,
    same configs, other weights (what a retrain at the same path looks like)."""
    shutil.copytree(model, into)
    weights = next(into.glob("transformer/*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    return into


@pytest.fixture
def base_overrides(tmp_path: Path, model_dir: Path) -> list[str]:
    """Overrides every test config starts from: tiny model, one prompt, outputs in tmp_path."""
    return [
        f"paths.root_dir={tmp_path}",
        "model=tiny",
        f"model.path={model_dir}/tiny-wan",
        f"model.clip={model_dir}/tiny-clip",
        "prompts=smoke",
    ]


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow SQLite store, its schema made once by MLflow itself: making one runs MLflow's migrations
    (about 1.5 s), which every test measuring into a fresh store would pay again."""
    from harness.stores import tracking_uri

    folder = tmp_path_factory.mktemp("empty-store")
    mlflow.MlflowClient(tracking_uri(folder)).search_experiments()
    return folder / "mlflow.db"


@pytest.fixture
def make_cfg(tmp_path: Path, model_dir: Path, empty_store: Path):
    """Compose ``conf/config.yaml`` with overrides, on the tiny model, outputs in tmp_path; an empty MLflow store is
    there already (``store=False``: none, for a test that a bad input creates none)."""

    def _make(*overrides: str, model: str = "tiny", store: bool = True) -> DictConfig:
        if store and not (tmp_path / "mlruns" / "mlflow.db").exists():
            (tmp_path / "mlruns").mkdir(exist_ok=True)
            shutil.copyfile(empty_store, tmp_path / "mlruns" / "mlflow.db")
        GlobalHydra.instance().clear()
        base = [f"paths.root_dir={tmp_path}", f"model={model}"]
        if model == "tiny":
            base += [f"model.path={model_dir}/tiny-wan", f"model.clip={model_dir}/tiny-clip"]
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose("config", overrides=[*base, "prompts=smoke", *overrides])

    yield _make
    GlobalHydra.instance().clear()
    mlflow.end_run()


def store_client(root: Path) -> mlflow.MlflowClient:
    """A client on the MLflow store under ``root/mlruns``."""
    from harness.stores import tracking_uri

    return mlflow.MlflowClient(tracking_uri(root / "mlruns"))
