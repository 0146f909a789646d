"""Every bad input, store, path or file is refused by the real CLI in one line, and leaves the stores as they were.

Each case runs ``python -m harness.<command>`` against a project root that already holds a real
MLflow store (one finished run) and a real Optuna study (one complete trial), damaged or
pointed elsewhere as the case says. The refusal must exit non-zero with exactly one line on
stderr, ``error: ...`` naming the setting or file, print no traceback and no password, and
leave every MLflow run and Optuna trial unchanged. (How fast they are refused is measured by
``benchmarks/refusal_time.py``, not here.)
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CONF_DIR

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "p/ss@w0rd:9"  # holds '/', '@' and ':' as users type them
QUERY_PASSWORD = "qu3ry/s3cr@t"
UNREACHABLE = f"'postgresql://harness:{PASSWORD}@127.0.0.1:1/optuna'"
SECRETS = (PASSWORD, QUERY_PASSWORD, "p%2Fss%40w0rd", "ss@w0rd", "s3cr@t")


@pytest.fixture(scope="module")
def populated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project root with a real MLflow store (one finished run) and a study (one complete trial)."""
    import mlflow
    import optuna

    from harness.stores import tracking_uri

    root = tmp_path_factory.mktemp("populated")
    client = mlflow.MlflowClient(tracking_uri(root / "mlruns"))
    experiment = client.create_experiment("wan-presets/tiny")
    client.set_terminated(client.create_run(experiment, run_name="earlier").info.run_id, "FINISHED")
    study = optuna.create_study(study_name="video_fast", storage=f"sqlite:///{root / 'mlruns' / 'optuna.db'}")
    study.tell(study.ask({"sample_steps": optuna.distributions.IntDistribution(4, 25)}), 1.0)
    return root


@pytest.fixture(scope="module")
def pipeline_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny WanPipeline folder, to copy and damage."""
    from harness.pipeline.builders import build_tiny_wan

    folder = tmp_path_factory.mktemp("pipeline") / "tiny-wan"
    build_tiny_wan(folder, seed=0)
    return folder


def stores(root: Path) -> dict[str, object]:
    """Every MLflow run (id, status, end time) and Optuna trial (id, state, completion) under ``root``; a damaged
    database's bytes (it must stay as it is), or None where there is none."""
    state: dict[str, object] = {}
    for name, query in (
        ("mlflow.db", "SELECT run_uuid, status, end_time FROM runs ORDER BY run_uuid"),
        ("optuna.db", "SELECT trial_id, state, datetime_complete FROM trials ORDER BY trial_id"),
    ):
        path = root / "mlruns" / name
        if not path.exists():
            state[name] = None
            continue
        try:
            with sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True) as database:
                state[name] = database.execute(query).fetchall()
        except sqlite3.DatabaseError:
            state[name] = path.read_bytes()
    return state


def garbage(path: Path) -> None:
    path.write_bytes(bytes(range(256)) * 20)


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:8192])


def local_model(damage):
    """A setup that copies the tiny pipeline into the root as a local folder and damages one file in it."""

    def setup(root: Path, pipeline: Path) -> None:
        shutil.copytree(pipeline, root / "model")
        damage(root / "model")

    return setup


CASES = {
    # corrupt or unusable stores
    "garbage mlflow.db": (
        "run",
        [],
        lambda r, p: garbage(r / "mlruns/mlflow.db"),
        "paths.mlruns_dir=",
        "mlflow.db is not a SQLite database",
    ),
    "truncated mlflow.db": (
        "run",
        [],
        lambda r, p: truncate(r / "mlruns/mlflow.db"),
        "paths.mlruns_dir=",
        "mlflow.db is truncated",
    ),
    "garbage optuna.db, report": (
        "report",
        [],
        lambda r, p: garbage(r / "mlruns/optuna.db"),
        "paths.mlruns_dir=",
        "optuna.db is not a SQLite database",
    ),
    "garbage optuna.db, search": (
        "search",
        [],
        lambda r, p: garbage(r / "mlruns/optuna.db"),
        "paths.mlruns_dir=",
        "optuna.db is not a SQLite database",
    ),
    "storage in a missing folder": (
        "search",
        ["search.storage=sqlite:////proc/harness/optuna.db"],
        None,
        "search.storage=",
        "cannot be written",
    ),
    "storage in a read-only folder": (
        "search",
        ["search.storage=sqlite:////sys/optuna.db"],
        None,
        "search.storage=",
        "cannot be written",
    ),
    "study name of 300 characters": (
        "search",
        ["search.study_name=" + "a" * 300],
        None,
        "search.study_name=",
        "(300 characters)",
    ),
    "study name with a quote": (
        "search",
        ['search.study_name="it\'s"'],
        None,
        "search.study_name=",
        "is not a study name",
    ),
    "study with a quote, report": ("report", ['study="it\'s"'], None, "study=", "is not a study name"),
    "unknown tracking scheme": ("run", ["tracking.uri=garbage://x"], None, "tracking.uri='garbage://x'", "allowed:"),
    "tracking server down": ("run", ["tracking.uri=http://127.0.0.1:9"], None, "tracking.uri=", "does not answer"),
    "unreachable PostgreSQL, report": (
        "report",
        [f"search.storage={UNREACHABLE}"],
        None,
        "search.storage='postgresql://harness:***@127.0.0.1:1/optuna'",
        "cannot be reached",
    ),
    "unreachable PostgreSQL, select": (
        "select",
        [f"search.storage={UNREACHABLE}"],
        None,
        "search.storage=",
        "cannot be reached",
    ),
    "unreachable PostgreSQL, dashboard": (
        "dashboard",
        [f"search.storage={UNREACHABLE}"],
        None,
        "search.storage=",
        "cannot be reached",
    ),
    "unreachable PostgreSQL, search": (
        "search",
        [f"search.storage='postgresql://harness@/optuna?host=/nonexistent&password={QUERY_PASSWORD}'"],
        None,
        "password=***",
        "cannot be reached",
    ),
    "unknown storage scheme, dashboard": (
        "dashboard",
        ["search.storage=redis://x/y"],
        None,
        "search.storage='redis://x/y'",
        "allowed:",
    ),
    "no storage yet, report": (
        "report",
        [],
        lambda r, p: (r / "mlruns/optuna.db").unlink(),
        "paths.mlruns_dir=",
        "run harness.search first",
    ),
    # unusable paths
    "log_dir that cannot be made": (
        "run",
        ["paths.log_dir=/proc/harness-outputs"],
        None,
        "paths.log_dir=",
        "cannot be written",
    ),
    "read-only log_dir": (
        "search",
        ["paths.log_dir=/sys/harness-outputs"],
        None,
        "paths.log_dir=",
        "cannot be written",
    ),
    "read-only cache_dir": (
        "run",
        ["paths.cache_dir=/sys/harness-cache"],
        None,
        "paths.cache_dir=",
        "cannot be written",
    ),
    "root_dir is a file": (
        "run",
        ["paths.root_dir={root}/a-file"],
        lambda r, p: (r / "a-file").write_text("x"),
        "paths.root_dir=",
        "is a file",
    ),
    # values that used to pass validation and fail mid-run
    "shift 1e308": ("run", ["preset.sample_shift=1e308"], None, "preset.sample_shift=1e+308", "from 0.01 to 39.6"),
    "guidance 1e308": (
        "run",
        ["preset.sample_guide_scale=1e308"],
        None,
        "preset.sample_guide_scale=1e+308",
        "from 0 to 100",
    ),
    "1000 steps at shift 5": ("run", ["preset.sample_steps=1000"], None, "preset.sample_shift=5.0", "at 1000 steps"),
    "floor nan": (
        "search",
        ["search.floors.psnr_db.value=nan"],
        None,
        "search.floors.psnr_db.value=nan",
        "finite number",
    ),
    "floor abc": (
        "search",
        ["search.floors.psnr_db.value=abc"],
        None,
        "search.floors.psnr_db.value='abc'",
        "finite number",
    ),
    "space past the solvers": (
        "search",
        ["search.space.sample_shift.high=50"],
        None,
        "search.space:",
        "sample_shift.high=50",
    ),
    # misleading lines
    "truncated weights": (
        "run",
        ["model=wan2.1-t2v-1.3b", "model.path={root}/model", "quality.clip=false"],
        local_model(lambda m: truncate(m / "transformer/diffusion_pytorch_model.safetensors")),
        "model.path=",
        "transformer/diffusion_pytorch_model.safetensors is truncated",
    ),
    "garbage weights": (
        "run",
        ["model=wan2.1-t2v-1.3b", "model.path={root}/model", "quality.clip=false"],
        local_model(lambda m: garbage(m / "vae/diffusion_pytorch_model.safetensors")),
        "model.path=",
        "vae/diffusion_pytorch_model.safetensors is truncated or not a safetensors file",
    ),
    "missing weights": (
        "run",
        ["model=wan2.1-t2v-1.3b", "model.path={root}/model", "quality.clip=false"],
        local_model(lambda m: (m / "text_encoder/model.safetensors").unlink()),
        "model.path=",
        "text_encoder/ holds config.json but no weights file",
    ),
    "missing model_index.json": (
        "run",
        ["model=wan2.1-t2v-1.3b", "model.path={root}/model", "quality.clip=false"],
        local_model(lambda m: (m / "model_index.json").unlink()),
        "model.path=",
        "has no model_index.json",
    ),
    "garbage model_index.json": (
        "run",
        ["model=wan2.1-t2v-1.3b", "model.path={root}/model", "quality.clip=false"],
        local_model(lambda m: (m / "model_index.json").write_text("{oops")),
        "model.path=",
        "model_index.json is not valid JSON",
    ),
    "binary preset file": (
        "run",
        ["preset_file={root}/preset.yaml"],
        lambda r, p: garbage(r / "preset.yaml"),
        "preset_file=",
        "is not a text file",
    ),
    "study name with a slash": (
        "search",
        ["search.study_name=a/b"],
        None,
        "search.study_name='a/b'",
        "is not a study name",
    ),
    "a count that is not a number": ("run", ["timing.repeats=abc"], None, "timing.repeats", "converted to Integer"),
    "a switch that is not true or false": ("search", ["quality.clip=maybe"], None, "quality.clip", "not a valid bool"),
    "size that is not W*H": ("run", ["preset.size=12"], None, "preset.size=12", "'W*H' (width*height"),
    "audit steps out of range": (
        "audit",
        ["audit.steps=[4,0]"],
        None,
        "audit.steps: preset.sample_steps=0",
        "an integer from 1 to 1000",
    ),
    "unknown experiment": (
        "run",
        ["+experiment=nope"],
        None,
        "experiment='nope'",
        "allowed: aggressive, balanced, baseline, quality_first",
    ),
    "experiment without +": ("run", ["experiment=balanced"], None, "+experiment=NAME", "allowed:"),
    "unknown model": ("run", ["model=nope"], None, "model='nope'", "allowed: auto, tiny, toy"),
    "unknown prompts": ("select", ["prompts=nope"], None, "prompts='nope'", "allowed: default, smoke, vbench"),
    "override that cannot be read": (
        "run",
        [f"search.storage=postgresql://harness:{PASSWORD}@h/db?a=b"],
        None,
        "cannot be read",
        "quote a value",
    ),
}


# Each class above keeps a case in the default suite; these neighbours of theirs run with the slow tests (CI runs
# both): a refusal is a process start, about a second each.
NEIGHBOURS = {
    "truncated mlflow.db", "garbage optuna.db, search", "storage in a read-only folder", "study with a quote, report",
    "tracking server down", "unreachable PostgreSQL, select", "unreachable PostgreSQL, dashboard",
    "log_dir that cannot be made", "read-only cache_dir", "guidance 1e308", "1000 steps at shift 5", "floor abc",
    "garbage weights", "missing weights", "garbage model_index.json", "experiment without +", "unknown prompts",
    "a switch that is not true or false",
}  # fmt: skip


@pytest.mark.parametrize(
    "case", [pytest.param(case, marks=pytest.mark.slow) if case in NEIGHBOURS else case for case in CASES]
)
def test_a_bad_input_is_one_line_and_leaves_the_stores_as_they_were(case, populated, pipeline_folder, tmp_path):
    command, overrides, setup, setting, allowed = CASES[case]
    root = tmp_path / "root"
    shutil.copytree(populated, root)
    if setup is not None:
        setup(root, pipeline_folder)
    before = stores(root)
    arguments = [f"paths.root_dir={root}", "model=tiny", "prompts=smoke", *[o.format(root=root) for o in overrides]]
    result = subprocess.run([sys.executable, "-m", f"harness.{command}", *arguments],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)  # fmt: skip
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1, result.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-2000:]
    assert setting in lines[0] and allowed in lines[0], lines[0]
    output = result.stdout + result.stderr
    assert "Traceback" not in output and "huggingface-cli" not in output
    assert not any(secret in output for secret in SECRETS), output
    assert stores(root) == before  # no run, no trial added or changed, no store created
    hydra_files = (
        [path for path in (root / "outputs").rglob("*") if path.is_file()] if (root / "outputs").exists() else []
    )
    assert not any(secret in path.read_text() for path in hydra_files for secret in SECRETS)


def test_checking_the_settings_imports_neither_torch_nor_diffusers_nor_mlflow():
    # what every command imports before its checks: its module, and the modules of Hydra's callbacks (conf/config.yaml)
    code = (
        "import sys; from hydra import compose, initialize_config_dir; from harness.checks import check_search\n"
        "import harness.run, harness.search, harness.measure.terminal, harness.outputs\n"
        f"with initialize_config_dir(config_dir={str(CONF_DIR)!r}, version_base='1.3'):\n"
        "    cfg = compose('config', overrides=['model=tiny', 'paths.root_dir=/tmp/harness-check-imports'])\n"
        "try:\n    check_search(cfg)\nexcept ValueError:\n    pass\n"
        "print(sorted(m for m in ('torch', 'diffusers', 'mlflow', 'transformers', 'scipy.stats') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stderr[-2000:]


def test_float8_on_a_cpu_is_refused_without_importing_torch():
    # a refusal in about a second: importing torch alone takes two on this machine
    code = (
        "import sys; from omegaconf import OmegaConf; from harness.pipeline.levers import check_quant_here\n"
        "cfg = OmegaConf.create({'speed': {'quant': 'float8_dynamic'}, 'model': {'device': 'cpu'}})\n"
        "try:\n    check_quant_here(cfg)\nexcept ValueError as error:\n    print(error)\n"
        "print('torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    refusal, imported = result.stdout.strip().splitlines()[-2:]
    assert "needs float8 matmuls (a GPU of sm89 or later: Ada, Hopper), not a CPU" in refusal, result.stderr[-2000:]
    assert imported == "False"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the driver's traces are Linux paths")
def test_a_gpu_driver_s_trace_sends_float8_to_torch_s_own_check(tmp_path, monkeypatch):
    from omegaconf import OmegaConf

    from harness.pipeline import levers

    (tmp_path / "dev").mkdir()
    assert levers._no_cuda_here(tmp_path)  # no driver's trace: torch could not see a GPU here
    for trace in ("dev/nvidia0", "proc/driver/nvidia", "dev/dxg", "dev/kfd"):  # NVIDIA, its driver, WSL, ROCm
        marked = tmp_path / trace.replace("/", "_")
        (marked / trace).parent.mkdir(parents=True)
        (marked / trace).touch()
        (marked / "dev").mkdir(exist_ok=True)
        assert not levers._no_cuda_here(marked), trace

    asked = []
    monkeypatch.setattr(levers, "check_quant", lambda quant, device: asked.append((quant, device.type)))
    monkeypatch.setattr(levers, "_no_cuda_here", lambda: False)  # a driver is there: torch decides
    levers.check_quant_here(OmegaConf.create({"speed": {"quant": "float8_dynamic"}, "model": {"device": "auto"}}))
    assert asked == [("float8_dynamic", "cpu")]  # torch finds no CUDA device on this machine and says so


def test_hydra_full_error_keeps_the_traceback_for_developers(tmp_path):
    environment = {**os.environ, "HYDRA_FULL_ERROR": "1"}
    result = subprocess.run([sys.executable, "-m", "harness.run", f"paths.root_dir={tmp_path}", "preset.size=12"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120, env=environment)  # fmt: skip
    assert result.returncode == 1 and "Traceback" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("ValueError: preset.size=12 is not 'W*H'")
