"""Loading the text-to-video pipeline and the CLIP scorer's model, once per process.

Both load with ``from_pretrained`` from a hub id or a local folder. Small models the
harness builds itself (``build: tiny``) are built once into that folder first, so they
go through the same loader as real weights.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Mapping

import torch
from diffusers.utils import logging as diffusers_logging
from transformers.utils import logging as transformers_logging

from harness import CONF_DIR
from harness.atomic import file_lock
from harness.pipeline.device import dtype_name, resolve_device, resolve_dtype
from harness.pipeline.levers import Speed, check_compile_mode
from harness.pipeline.passes import WorkerWanPipeline
from harness.pipeline.weights import ModelUnavailableError, check_model_folder, check_pipeline_folder
from harness.pipeline.worker import Worker

log = logging.getLogger(__name__)

# Per-component loading bars add nothing for models that load in seconds.
diffusers_logging.disable_progress_bar()
transformers_logging.disable_progress_bar()

_PIPELINES: dict[tuple, "LoadedPipeline"] = {}
_COMPONENTS: dict[tuple, dict[str, Any]] = {}  # tokenizer, text encoder and VAE, shared by pipelines of one model
_CLIPS: dict[str, tuple[Any, Any]] = {}
LOAD_COUNT = {"pipeline": 0, "clip": 0}


@dataclass
class LoadedPipeline:
    """A loaded ``WanPipeline`` and where it runs."""

    pipe: Any
    device: torch.device
    dtype: torch.dtype
    name: str
    source: str
    attention: str = "native"
    warm_shapes: set[tuple[int, int, int]] = field(default_factory=set)  # (W, H, frames) warmed up already

    @cached_property
    def weights(self) -> str:
        """Fingerprint of the weights (:func:`weights_digest`): a retrained model gets a new one."""
        return weights_digest(self.source)

    def latent_grid(self, width: int, height: int, num_frames: int) -> tuple[int, int]:
        """Latent frames and transformer tokens of a video, by this model's own strides.

        Wan 2.1 compresses 4x in time and 8x in space and patches (1, 2, 2); a small model
        need not, so the strides are read from the pipeline's VAE config and transformer
        config rather than assumed.

        Args:
            width: frame width in pixels.
            height: frame height in pixels.
            num_frames: frames generated.

        Returns:
            ``(latent_frames, tokens)``.
        """
        temporal, spatial = self.pipe.vae_scale_factor_temporal, self.pipe.vae_scale_factor_spatial
        _, patch_h, patch_w = self.pipe.transformer.config.patch_size
        latent_frames = (num_frames - 1) // temporal + 1
        return latent_frames, latent_frames * (height // spatial // patch_h) * (width // spatial // patch_w)

    def check_shape(self, width: int, height: int, num_frames: int, asked: str) -> None:
        """Refuse a video this model cannot make: sides off its patch grid, or more positions than its RoPE has.

        Args:
            width: frame width in pixels.
            height: frame height in pixels.
            num_frames: frames generated.
            asked: the preset's size and frames, for the message.

        Raises:
            ValueError: naming the size, what the model allows, and why.
        """
        spatial, config = self.pipe.vae_scale_factor_spatial, self.pipe.transformer.config
        _, patch_h, patch_w = config.patch_size
        step_h, step_w = spatial * patch_h, spatial * patch_w
        if width % step_w or height % step_h:
            raise ValueError(
                f"{asked} generates {width}x{height}, which model {self.name!r} cannot make: width must "
                f"be a multiple of {step_w} and height of {step_h}"
            )
        latent_frames, _ = self.latent_grid(width, height, num_frames)
        longest = max(latent_frames, height // step_h, width // step_w)
        if longest > config.rope_max_seq_len:
            raise ValueError(
                f"{asked} generates {width}x{height} x {num_frames} frames, which model {self.name!r} "
                f"cannot make: {longest} positions along one axis, its RoPE has "
                f"{config.rope_max_seq_len}"
            )


def resolve_model(cfg: Any) -> Any:
    """A composed config with ``model=auto`` replaced by the model for this machine (``cfg`` is left as it is).

    ``auto`` picks ``choices.cuda`` when a CUDA device is present, else ``choices.cpu``,
    reading ``conf/model/<choice>.yaml`` (its interpolations resolve against the config). Each command
    resolves its config once, at its start, and passes the result down.

    Args:
        cfg: a composed config whose ``model`` node may be ``auto``.

    Returns:
        ``cfg`` itself when its model is not ``auto``; else a copy with the chosen model.
    """
    import copy

    from omegaconf import OmegaConf, open_dict

    if cfg.model.get("name") != "auto":
        return cfg
    kind = "cuda" if torch.cuda.is_available() else "cpu"
    choice = str(cfg.model.choices[kind])
    other = str(cfg.model.choices["cpu" if kind == "cuda" else "cuda"])
    node, resolved = OmegaConf.load(CONF_DIR / "model" / f"{choice}.yaml"), copy.deepcopy(cfg)
    with open_dict(resolved):
        resolved.model = node
    reason = "CUDA device present" if kind == "cuda" else "no CUDA device"
    log.info("model=auto chose %s (%s); choose the other with model=%s", choice, reason, other)
    return resolved


def use_attention(loaded: "LoadedPipeline", backend: str) -> None:
    """Switch the shared transformer's attention backend when a generation asks for another."""
    if loaded.attention != backend:
        loaded.pipe.transformer.set_attention_backend(backend)
        loaded.attention = backend


def _build_if_missing(kind: str, build: str | None, folder: Path, seed: int, architecture: Any = None) -> None:
    marker = folder / ("model_index.json" if kind == "wan" else "config.json")
    if build is None or marker.exists():
        return
    with file_lock(folder.parent / f".{folder.name}.build.lock"):  # workers starting together build it once
        if not marker.exists():
            _build(kind, build, folder, seed, architecture)


def _build(kind: str, build: str, folder: Path, seed: int, architecture: Any) -> None:
    from omegaconf import OmegaConf

    from harness.pipeline import builders

    builders = {
        ("wan", "tiny"): builders.build_tiny_wan,
        ("clip", "tiny"): builders.build_tiny_clip,
        ("wan", "random"): builders.build_random_wan,
    }
    if (kind, build) not in builders:
        raise ValueError(f"model build={build!r} is not something the harness can build; allowed: tiny, random")
    log.info("building the %s %s model into %s (once)", build, kind, folder)
    if build == "random":
        plain = (
            OmegaConf.to_container(architecture, resolve=True) if OmegaConf.is_config(architecture) else architecture
        )
        builders[(kind, build)](folder, seed=seed, architecture=plain)
    else:
        builders[(kind, build)](folder, seed=seed)


def _unavailable(what: str, path: str, error: Exception, setting: str) -> ModelUnavailableError:
    if Path(path).is_dir():  # a local folder that would not load: never a download of a local path
        reason = " ".join(f"{type(error).__name__}: {error}".split())[:300]
        return ModelUnavailableError(
            f"cannot load {what} from the folder {path!r} ({reason}); copy or download it again (a model the "
            f"harness builds: delete the folder, it is rebuilt), or point {setting} at another folder"
        )
    if isinstance(error, FileNotFoundError):
        problem = f"there is no folder {path!r}"
        fix = f"point {setting} at a downloaded folder in the from_pretrained layout"
    else:
        problem = f"it is not in the local hub cache and the hub is unreachable ({type(error).__name__})"
        fix = (
            f"download it where there is network (huggingface-cli download {path} --local-dir DIR) "
            f"and pass {setting}=DIR"
        )
    return ModelUnavailableError(
        f"cannot load {what} from {path!r}: {problem}; {fix}, or run the small model: model=tiny"
    )


def locate(path: str, what: str, setting: str) -> str:
    """Where to load weights from: a local folder, the local hub cache, or the hub itself.

    The hub is asked once, with a short timeout, so a machine without network fails in
    seconds instead of retrying for a minute.

    Args:
        path: a local folder or a hub id (``owner/name``).
        what: the model's name, for the error message.
        setting: the override that points at a folder, for the error message.

    Returns:
        A local folder, or the hub id when the hub answers.

    Raises:
        ModelUnavailableError: not on disk, not cached, hub unreachable.
    """
    if Path(path).exists():
        return path
    import huggingface_hub
    from huggingface_hub import constants

    looks_like_hub_id = path.count("/") == 1 and not path.startswith((".", "/", "~"))
    if looks_like_hub_id:
        try:
            return huggingface_hub.snapshot_download(path, local_files_only=True)
        except Exception:  # not cached (the hub client raises several kinds)
            pass
        if constants.HF_HUB_OFFLINE:
            raise _unavailable(what, path, ConnectionError("HF_HUB_OFFLINE is set"), setting)
        try:
            huggingface_hub.model_info(path, timeout=5)
            return path
        except Exception as error:
            raise _unavailable(what, path, error, setting) from error
    raise _unavailable(what, path, FileNotFoundError(path), setting)


def weights_digest(source: str) -> str:
    """A short fingerprint of a model folder (or of a hub id, when the weights are remote).

    Hashes every file's path, size and its first and last 64 KiB: cheap on billions of
    parameters, yet a retrained model (new weights, same architecture) gets a new digest.

    Args:
        source: a local folder, or a hub id.

    Returns:
        12 hex digits.
    """
    import hashlib

    digest = hashlib.sha256()
    folder = Path(source)
    if not folder.is_dir():
        digest.update(source.encode())
        return digest.hexdigest()[:12]
    chunk = 1 << 16
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        size = file.stat().st_size
        digest.update(f"{file.relative_to(folder)}:{size}".encode())
        with file.open("rb") as handle:
            digest.update(handle.read(chunk))
            if size > chunk:
                handle.seek(max(chunk, size - chunk))
                digest.update(handle.read())
    return digest.hexdigest()[:12]


def transformer_dtype(setting: str, device: torch.device, worker: Worker, speed: Speed) -> torch.dtype:
    """The transformer weights' dtype: the precision lever's, ``model.dtype``'s, or for ``auto`` the worker's.

    On CUDA the official code keeps float32 weights (and runs them under bfloat16 autocast), a ``WanPipeline``
    worker loads bfloat16 weights; a CPU runs float32. ``speed.precision=bfloat16`` loads bfloat16 weights.
    """
    if speed.precision == "bfloat16":
        return torch.bfloat16
    if setting == "auto" and device.type == "cuda" and worker.precision == "autocast_bf16":
        return torch.float32
    return resolve_dtype(setting, device)


def load_pipeline(model: Mapping[str, Any], worker: Worker = Worker(), speed: Speed = Speed()) -> LoadedPipeline:
    """Load (or reuse) the ``WanPipeline`` a model config names, its transformer as the worker and levers ask.

    Pipelines that differ only in their transformer (its dtype, compilation) share one tokenizer, text encoder
    and VAE: only the transformer is loaded again.

    Args:
        model: the ``model`` node (path, build, seed, device, dtype, vae_dtype).
        worker: the worker whose precision ``model.dtype: auto`` follows.
        speed: the levers that change the transformer itself: ``precision``, ``quant`` and ``compile`` (``off``,
            ``regional``: ``compile_repeated_blocks``, or ``full``: ``torch.compile`` of the transformer).
            Compiling cannot be undone, so each mode is its own transformer; compilation itself happens on
            the first generation.

    Returns:
        The pipeline on its device, loaded once per process and config.

    Raises:
        ValueError: bad device or dtype.
        ModelUnavailableError: weights neither on disk nor on a reachable hub.
    """
    device = resolve_device(str(model["device"]))
    dtype = transformer_dtype(str(model["dtype"]), device, worker, speed)
    text_dtype = resolve_dtype(str(model["dtype"]), device)
    vae_dtype = resolve_dtype(str(model.get("vae_dtype", "float32")), device)
    check_compile_mode(speed.compile)
    shared = (str(model["path"]), str(device), str(text_dtype), str(vae_dtype))
    key = (*shared, str(dtype), speed.compile, speed.quant)
    if key in _PIPELINES:
        return _PIPELINES[key]

    if model.get("materialize") == "device":
        pipe, path = _in_memory(model, device, dtype, text_dtype, vae_dtype, shared), _in_memory_source(model)
    else:
        pipe, path = _from_disk(model, dtype, text_dtype, vae_dtype, shared)
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    _COMPONENTS[shared] = {name: getattr(pipe, name) for name in ("tokenizer", "text_encoder", "vae", "scheduler")}
    quantize(pipe.transformer, speed.quant)
    if speed.compile == "regional":
        pipe.transformer.compile_repeated_blocks(fullgraph=True)
    elif speed.compile == "full":
        pipe.transformer.compile(fullgraph=True)
    LOAD_COUNT["pipeline"] += 1
    loaded = LoadedPipeline(pipe=pipe, device=device, dtype=dtype, name=str(model["name"]), source=path)
    _PIPELINES[key] = loaded
    log.info("loaded %s from %s on %s (transformer %s)", loaded.name, path, device, dtype_name(dtype))
    return loaded


def _from_disk(model: Mapping[str, Any], dtype, text_dtype, vae_dtype, shared: tuple) -> tuple[Any, str]:
    """The pipeline loaded with ``from_pretrained`` (a small model the harness builds is built first)."""
    path = str(model["path"])
    _build_if_missing("wan", model.get("build"), Path(path), int(model.get("seed", 0)), model.get("architecture"))
    path = locate(path, f"model {model['name']!r}", f"model={model['name']} model.path")
    if Path(path).is_dir():
        check_pipeline_folder(Path(path), "model.path")  # names a missing or corrupt file
    try:
        components = _COMPONENTS.get(shared) or _load_components(path, vae_dtype)
        pipe = WorkerWanPipeline.from_pretrained(
            path, **components, dtype={"transformer": dtype, "default": text_dtype}
        )
    except OSError as error:
        raise _unavailable(f"model {model['name']!r}", path, error, f"model={model['name']} model.path") from error
    return pipe, path


def _in_memory(model: Mapping[str, Any], device, dtype, text_dtype, vae_dtype, shared: tuple) -> Any:
    """``model.materialize: device``: the random architecture made on the device, nothing on disk (a GPU audit)."""
    from omegaconf import OmegaConf

    from harness.pipeline import builders

    architecture, seed = OmegaConf.to_container(model["architecture"], resolve=True), int(model.get("seed", 0))
    components = _COMPONENTS.get(shared) or builders.random_components(
        architecture, device, text_dtype, vae_dtype, seed
    )
    transformer = builders.random_transformer(architecture, device, dtype, seed)
    return WorkerWanPipeline(transformer=transformer, **components)


def _in_memory_source(model: Mapping[str, Any]) -> str:
    """What an in-memory random model is, as a fingerprint reads it: its architecture and seed."""
    import hashlib
    import json

    from omegaconf import OmegaConf

    plain = json.dumps(OmegaConf.to_container(model["architecture"], resolve=True), sort_keys=True)
    return f"random:{model.get('seed', 0)}:{hashlib.sha256(plain.encode()).hexdigest()[:12]}"


def quantize(transformer: torch.nn.Module, quant: str) -> None:
    """Quantize the transformer's linear layers in place with torchao (``speed.quant``); ``none`` leaves them."""
    if quant == "none":
        return
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, Int8WeightOnlyConfig, quantize_

    configs = {"int8_weight_only": Int8WeightOnlyConfig, "float8_dynamic": Float8DynamicActivationFloat8WeightConfig}
    quantize_(transformer, configs[quant]())


def _load_components(path: str, vae_dtype: torch.dtype) -> dict[str, Any]:
    """The VAE in its own dtype (diffusers recommends float32 decoding); the rest loads with the pipeline."""
    from diffusers import AutoencoderKLWan

    return {"vae": AutoencoderKLWan.from_pretrained(path, subfolder="vae", dtype=vae_dtype)}


class PooledCLIP(torch.nn.Module):
    """``CLIPModel`` whose feature methods return tensors, as torchmetrics' CLIPScore expects.

    transformers 5 returns model-output objects from ``get_image_features`` and
    ``get_text_features``; CLIPScore 1.9 calls ``.norm`` on them.
    """

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    @staticmethod
    def _tensor(output: Any) -> torch.Tensor:
        return output if torch.is_tensor(output) else output.pooler_output

    def get_image_features(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self._tensor(self.model.get_image_features(*args, **kwargs))

    def get_text_features(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self._tensor(self.model.get_text_features(*args, **kwargs))

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.model(*args, **kwargs)

    @property
    def config(self) -> Any:
        return self.model.config


def load_clip(model: Mapping[str, Any]) -> tuple[PooledCLIP, Any]:
    """Load (or reuse) the CLIP model and processor the model config names for scoring.

    Args:
        model: the ``model`` node (``clip``: hub id or folder; ``clip_build``; ``seed``).

    Returns:
        ``(model, processor)`` as torchmetrics' ``CLIPScore`` takes from a callable.

    Raises:
        ModelUnavailableError: weights neither on disk nor on a reachable hub.
    """
    path = str(model["clip"])
    if path in _CLIPS:
        return _CLIPS[path]
    key = path
    from transformers import CLIPModel, CLIPProcessor

    _build_if_missing("clip", model.get("clip_build"), Path(path), int(model.get("seed", 0)))
    path = locate(path, "CLIP", f"model={model['name']} model.clip")
    if Path(path).is_dir():
        check_model_folder(Path(path), "model.clip")
    try:
        clip = CLIPModel.from_pretrained(path).eval()
        # Without torchvision transformers falls back to its PIL image processor (same
        # results) and says so at warning level on every load.
        verbosity = transformers_logging.get_verbosity()
        transformers_logging.set_verbosity_error()
        try:
            processor = CLIPProcessor.from_pretrained(path)
        finally:
            transformers_logging.set_verbosity(verbosity)
    except Exception as error:  # OSError, a safetensors or JSON error...: said in one line
        raise _unavailable("CLIP", path, error, f"model={model['name']} model.clip") from error
    LOAD_COUNT["clip"] += 1
    _CLIPS[key] = (PooledCLIP(clip), processor)
    return _CLIPS[key]
