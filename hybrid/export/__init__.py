"""Export bundles: the seam between learning and serving.

``hybrid export RUN_DIR --format onnx [--out DIR]`` (:func:`export_run`) writes::

    <bundle>/
      model.onnx           inputs  image   (batch, C, crop, crop) float32, normalised stamps
                                   tabular (batch, F) float32, raw features in preprocess.json order, NaN
                           outputs score   (batch,)    probability of real
                                   p_types (batch, K)  type probabilities, labels.json order
                                   ...     any further outputs (see below)
      weights.safetensors  the PyTorch state dict (HybridModel buffers included: feature statistics)
      preprocess.json      stamp channels, size, crop and normalisation (done in numpy before the graph,
                           :func:`hybrid.export.preprocess.normalize_stamps`: about 20x faster than in
                           torch, and ONNX has no nan-median); feature order, units, clip range, centre,
                           scale and imputation (done inside the graph); rotation averaging
      labels.json          what ``score`` means, the type names, every output's shape
      config.yaml          the run's resolved config
      golden.npz           a few real raw inputs and PyTorch's outputs for them
      manifest.json        format version, package versions, git sha, input/output shapes, source run and
                           its test metrics, SHA-256 of every other file

The batch axis is dynamic. A model without an image encoder has no ``image`` input, one without a
tabular encoder no ``tabular`` input. :func:`load_bundle` checks every checksum, then runs the golden
inputs through the numpy preprocessing and onnxruntime and compares with PyTorch's outputs (rtol 1e-4,
atol 1e-5): a bundle that loads reproduces its training code.

Extra outputs (the contract with :mod:`hybrid.uncertainty`): :func:`export_model` exports any module
whose ``forward(image, features)`` takes raw inputs and returns a tuple named by its
``output_names`` attribute, which must begin with ``score`` and ``p_types`` (e.g.
``hybrid.uncertainty.wrappers.UncertaintyModel``: ``score_std``, ``entropy``, ``mutual_info``). Every
HybridModel inside must normalise stamps the same way; the normaliser is lifted out of the graph while
exporting. :class:`hybrid.serving.Predictor` writes each further output of shape (batch,) as a column
of that name and each (batch, K) output as columns ``<name>_0 .. <name>_{K-1}``. Graphs must be
deterministic (MC-dropout sampling inside the graph would fail the golden check: export its samples as
an ensemble, or fix the masks).
"""

from hybrid.export.bundle import ATOL, RTOL, Bundle, BundleError, export_model, load_bundle
from hybrid.export.preprocess import feature_matrix, normalize_stamps

_FROM_RUN = ("ServingModel", "export_run", "load_run_model")

__all__ = [
    "ATOL",
    "RTOL",
    "Bundle",
    "BundleError",
    "ServingModel",
    "export_model",
    "export_run",
    "feature_matrix",
    "load_bundle",
    "load_run_model",
    "normalize_stamps",
]


def __getattr__(name: str):
    # export from a run needs torch and the model code; serving (load_bundle, Predictor) does not
    if name in _FROM_RUN:
        from hybrid.export import from_run

        return getattr(from_run, name)
    raise AttributeError(name)
