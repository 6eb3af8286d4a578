"""Writing and loading export bundles (the contract is in :mod:`hybrid.export`)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import platform
import shutil
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from hybrid.data.dataset import replace_directory
from hybrid.export.preprocess import feature_matrix, normalize_stamps

FORMAT_VERSION = 1
MODEL = "model.onnx"
WEIGHTS = "weights.safetensors"
PREPROCESS = "preprocess.json"
LABELS = "labels.json"
CONFIG = "config.yaml"
MANIFEST = "manifest.json"
GOLDEN = "golden.npz"
#: outputs every bundle has; any further output is passed through by the Predictor
REQUIRED_OUTPUTS = ("score", "p_types")
#: tolerance of the golden pair and of the parity tests (onnxruntime against PyTorch)
RTOL, ATOL = 1e-4, 1e-5


class BundleError(ValueError):
    """A bundle that is incomplete, altered, or does not reproduce its golden outputs; names the file."""


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import torch

    import hybrid

    return {
        "hybrid": hybrid.__version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


@contextlib.contextmanager
def _normalisation_outside(module) -> Iterator[dict[str, Any]]:
    """Swap every HybridModel's stamp normaliser for the identity while exporting; yields its settings.

    The graph then takes normalised stamps; :func:`hybrid.export.preprocess.normalize_stamps` does the
    normalisation in numpy. All HybridModels inside ``module`` (an ensemble, say) must agree on it.
    """
    from torch import nn

    from hybrid.models import HybridModel

    models = [m for m in module.modules() if isinstance(m, HybridModel)]
    if not models:
        raise BundleError(f"{type(module).__name__}: no HybridModel inside; nothing to export")
    settings = {(m.stamps.mode, m.stamps.crop, float(m.stamps.clip)) for m in models}
    if len(settings) != 1:
        raise BundleError(f"the exported models normalise stamps differently: {sorted(settings)}")
    mode, crop, clip = settings.pop()
    saved = [m.stamps for m in models]
    try:
        for m in models:
            m.stamps = nn.Identity()
        yield {"mode": mode, "crop": crop, "clip": clip, "models": models}
    finally:
        for m, s in zip(models, saved, strict=True):
            m.stamps = s


def export_model(
    module,
    out: str | Path,
    *,
    channels: list[str],
    stamp_size: int,
    features: dict[str, str],
    golden_stamps: np.ndarray,
    golden_features: np.ndarray,
    labels: list[str],
    config: str = "",
    source: dict | None = None,
    extra_preprocess: dict | None = None,
    opset: int = 18,
) -> Path:
    """Write a bundle for ``module`` to ``out`` (atomically: a temporary sibling renamed into place).

    Args:
        module: ``forward(image, features)`` on raw inputs (stamps in ADU with NaN, features with gaps)
            returning a tuple of tensors named by ``module.output_names`` (default ``("score",
            "p_types")``); holds one or more HybridModels (see :func:`_normalisation_outside`).
        out: bundle directory.
        channels: stamp channel names in input order; [] for a catalog-only model.
        stamp_size: stamp size (px) the model was trained on (before any crop).
        features: feature name -> unit, in input order; {} for an image-only model.
        golden_stamps, golden_features: a few real raw inputs (N, C, S, S) and (N, F) for the golden pair.
        labels: the type names of ``p_types``.
        config: the resolved training config (YAML text).
        source: provenance (run directory, checkpoint, metrics).
        extra_preprocess: further entries for preprocess.json (e.g. rotation averaging).
        opset: ONNX opset.
    """
    import onnx
    import torch
    from safetensors.torch import save_file

    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    module = module.eval()
    output_names = tuple(getattr(module, "output_names", REQUIRED_OUTPUTS))
    missing = [o for o in REQUIRED_OUTPUTS if o not in output_names]
    if missing:
        raise BundleError(f"{type(module).__name__}: outputs {missing} missing from {output_names}")
    use_image, use_tab = bool(channels), bool(features)
    g_img = torch.from_numpy(np.ascontiguousarray(golden_stamps, np.float32)) if use_image else None
    g_tab = torch.from_numpy(np.ascontiguousarray(golden_features, np.float32)) if use_tab else None
    with torch.no_grad():
        expected = [t.float().numpy() for t in module(g_img, g_tab)]  # raw inputs, PyTorch's own normaliser
    with _normalisation_outside(module) as norm:
        image = None
        if use_image:
            image = torch.from_numpy(
                normalize_stamps(golden_stamps, mode=norm["mode"], crop=norm["crop"], clip=norm["clip"])
            )
        names = [n for n, used in (("image", use_image), ("tabular", use_tab)) if used]
        args = tuple(a for a in (image, g_tab) if a is not None)

        class _Graph(torch.nn.Module):  # positional inputs of the modalities present only
            def __init__(self, inner) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, *inputs):
                it = iter(inputs)
                return self.inner(next(it) if use_image else None, next(it) if use_tab else None)

        batch = torch.export.Dim("batch", min=1)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                _Graph(module).eval(),
                args,
                str(tmp / MODEL),
                input_names=names,
                output_names=list(output_names),
                dynamic_shapes=(tuple({0: batch} for _ in args),),  # one entry: the *inputs tuple
                dynamo=True,
                opset_version=opset,
                optimize=True,
                external_data=False,  # one self-contained model.onnx
            )
        save_file({k: v.detach().contiguous() for k, v in module.state_dict().items()}, str(tmp / WEIGHTS))
        (tmp / WEIGHTS).chmod(0o644)
    graph = onnx.load(str(tmp / MODEL))
    onnx.checker.check_model(graph)
    outputs = {
        o.name: [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim] for o in graph.graph.output
    }
    inputs = {
        i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.graph.input
    }

    preprocess = {
        "format_version": FORMAT_VERSION,
        "image": None,
        "tabular": None,
        **(extra_preprocess or {}),
    }
    if use_image:
        preprocess["image"] = {
            "input": "image",
            "channels": list(channels),
            "units": "survey counts (ADU / DN), NaN where there are no data",
            "stamp_size": int(stamp_size),
            "crop": norm["crop"],
            "normalisation": {
                "mode": norm["mode"],
                "clip": norm["clip"],
                "definition": {
                    "noise": "per stamp and channel: (x - median) / (1.4826 MAD), lower medians of the "
                    "finite pixels, clipped at +-clip; NaN -> 0",
                    "l2": "per stamp and channel: x / ||x||_2 with NaN as 0 (braai)",
                    "none": "NaN -> 0",
                }[norm["mode"]],
                "where": "numpy before the graph (hybrid.export.preprocess.normalize_stamps)",
            },
            "shape": inputs["image"][1:],
        }
    if use_tab:
        fp = next(m.features for m in norm["models"] if m.features is not None)
        stats = fp.to_dict()
        preprocess["tabular"] = {
            "input": "tabular",
            "features": [
                {
                    "name": name,
                    "unit": unit,
                    "clip_lo": stats["lo"][j],
                    "clip_hi": stats["hi"][j],
                    "center": stats["center"][j],
                    "scale": stats["scale"][j],
                }
                for j, (name, unit) in enumerate(features.items())
            ],
            "imputation": stats["imputation"],
            "where": "inside the graph: raw features in, NaN for missing",
        }
    (tmp / PREPROCESS).write_text(json.dumps(preprocess, indent=2))
    (tmp / LABELS).write_text(
        json.dumps(
            {
                "score": "probability that the candidate is real (astrophysical), not bogus",
                "p_types": list(labels),
                "outputs": {name: outputs[name] for name in output_names},
            },
            indent=2,
        )
    )
    (tmp / CONFIG).write_text(config)
    np.savez(
        tmp / GOLDEN,
        stamps=np.asarray(golden_stamps, np.float32),
        features=np.asarray(golden_features, np.float32),
        **{f"out_{name}": value for name, value in zip(output_names, expected, strict=True)},
    )
    from hybrid.data.build import git_sha

    files = sorted(p.name for p in tmp.iterdir())
    manifest = {
        "format_version": FORMAT_VERSION,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git_sha": git_sha(),
        "versions": _versions(),
        "inputs": inputs,
        "outputs": outputs,
        "golden": {
            "file": GOLDEN,
            "n": len(golden_stamps if use_image else golden_features),
            "rtol": RTOL,
            "atol": ATOL,
        },
        "source": source or {},
        "sha256": {name: sha256(tmp / name) for name in files},
    }
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
    try:
        load_bundle(tmp)  # a bundle that does not reproduce its golden pair never replaces a good one
    except BundleError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_directory(tmp, out)
    return out


@dataclass
class Bundle:
    """An opened, verified bundle: its documents and an onnxruntime session."""

    path: Path
    manifest: dict
    preprocess: dict
    labels: dict
    session: Any  # onnxruntime.InferenceSession

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.session.get_inputs()]

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.session.get_outputs()]

    @property
    def stamp_size(self) -> int:
        image = self.preprocess.get("image")
        return int(image["stamp_size"]) if image else 63

    @property
    def feature_names(self) -> list[str]:
        tab = self.preprocess.get("tabular")
        return [f["name"] for f in tab["features"]] if tab else []

    def inputs(self, stamps: np.ndarray | None, features: np.ndarray | None) -> dict[str, np.ndarray]:
        """The graph's feeds from raw stamps (N, C, S, S) in the bundle's channel order and raw features."""
        feeds = {}
        image = self.preprocess.get("image")
        if image:
            n = image["normalisation"]
            feeds["image"] = normalize_stamps(stamps, mode=n["mode"], crop=image["crop"], clip=n["clip"])
        if self.preprocess.get("tabular"):
            feeds["tabular"] = np.ascontiguousarray(features, np.float32)
        return feeds

    def run(self, stamps: np.ndarray | None, features: np.ndarray | None) -> dict[str, np.ndarray]:
        """Output name -> array for raw inputs."""
        values = self.session.run(None, self.inputs(stamps, features))
        return dict(zip(self.output_names, values, strict=True))

    def feature_matrix(self, table) -> np.ndarray:
        return feature_matrix(table, self.feature_names)

    @property
    def version(self) -> str:
        """The model version: ``hybrid-`` and 16 hex digits of the SHA-256 of the files' digests.

        Content-addressed (the manifest's per-file SHA-256, not the path or the export time): copies
        of one bundle share it, and any change to graph, weights, preprocessing or labels changes it.
        """
        digests = json.dumps(self.manifest["sha256"], sort_keys=True).encode()
        return "hybrid-" + hashlib.sha256(digests).hexdigest()[:16]


def session_options(threads: int = 0):
    """onnxruntime options: ``threads`` intra-op threads (0: onnxruntime's default), sequential graph."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.set_denormal_as_zero", "1")  # denormals stall CPU arithmetic
    return so


def load_bundle(path: str | Path, *, threads: int = 0, verify: bool = True) -> Bundle:
    """Open a bundle: check every file against the manifest's SHA-256, then the golden pair.

    Raises:
        BundleError: a missing or altered file, or outputs that differ from the golden ones beyond
            ``rtol``/``atol`` (another onnxruntime or numpy that changes the numbers, for instance).
    """
    import onnxruntime as ort

    path = Path(path)
    if not (path / MANIFEST).is_file():
        raise BundleError(f"{path / MANIFEST}: missing; is {path} an export bundle?")
    manifest = json.loads((path / MANIFEST).read_text())
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BundleError(
            f"{path / MANIFEST}: format_version {manifest.get('format_version')}, expected {FORMAT_VERSION}"
        )
    for name, digest in manifest["sha256"].items():
        f = path / name
        if not f.is_file():
            raise BundleError(f"{f}: missing from the bundle")
        if verify and sha256(f) != digest:
            raise BundleError(f"{f}: SHA-256 differs from {MANIFEST}; the file was changed after export")
    session = ort.InferenceSession(
        str(path / MODEL), session_options(threads), providers=["CPUExecutionProvider"]
    )
    bundle = Bundle(
        path,
        manifest,
        json.loads((path / PREPROCESS).read_text()),
        json.loads((path / LABELS).read_text()),
        session,
    )
    if verify:
        check_golden(bundle)
    return bundle


def check_golden(bundle: Bundle) -> None:
    """Run the golden inputs through preprocessing and the graph; compare with the stored outputs."""
    g = bundle.manifest["golden"]
    with np.load(bundle.path / g["file"]) as z:
        stamps, features = z["stamps"], z["features"]
        expected = {k[4:]: z[k] for k in z.files if k.startswith("out_")}
    got = bundle.run(stamps, features)
    for name, want in expected.items():
        if name not in got:
            raise BundleError(f"{bundle.path / MODEL}: output {name!r} of the golden pair is missing")
        if not np.allclose(got[name], want, rtol=g["rtol"], atol=g["atol"]):
            err = float(np.max(np.abs(got[name] - want)))
            raise BundleError(
                f"{bundle.path}: output {name!r} differs from the golden output by up to {err:.3g} "
                f"(rtol {g['rtol']}, atol {g['atol']}); versions at export: {bundle.manifest['versions']}"
            )
