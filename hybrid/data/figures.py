"""Figures of a dataset that people would rather look at than read."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from astropy.visualization import ZScaleInterval

from hybrid.data.dataset import read_dataset


def example_groups(candidates) -> list[tuple[str, np.ndarray]]:
    """(title, row indices) for every real type, injected transients and every bogus kind present."""
    groups = []
    src = candidates["label_source"].to_numpy()
    real = candidates["truth_real"].to_numpy(bool)
    for t in sorted(set(candidates.loc[real & (src != "injected"), "truth_type"])):
        groups.append(
            (
                f"real: {t}",
                np.flatnonzero(real & (src != "injected") & (candidates["truth_type"] == t).to_numpy()),
            )
        )
    if (src == "injected").any():
        groups.append(("injected: asteroid on galaxy", np.flatnonzero(src == "injected")))
    for k in sorted(set(candidates.loc[~real, "bogus_kind"])):
        groups.append((f"bogus: {k}", np.flatnonzero(~real & (candidates["bogus_kind"] == k).to_numpy())))
    return groups


def plot_examples(dataset: str | Path, out: str | Path, *, per_class: int = 3, seed: int = 0) -> Path:
    """Grid of science / reference / difference stamps: one row per class or bogus kind.

    Each panel is scaled with IRAF's zscale; the difference panel is symmetric about zero, so
    negative residuals (dipoles, fading sources) show as dark.
    """
    ds = read_dataset(dataset)
    rng = np.random.default_rng(seed)
    groups = example_groups(ds.candidates)
    channels = ds.meta["channels"]
    n_cols = per_class * len(channels)
    fig, axes = plt.subplots(len(groups), n_cols, figsize=(1.3 * n_cols, 1.45 * len(groups)), squeeze=False)
    zscale = ZScaleInterval()
    c = ds.candidates
    for r, (title, rows) in enumerate(groups):
        picks = rng.choice(rows, min(per_class, rows.size), replace=False)
        for j in range(per_class):
            for k, name in enumerate(channels):
                ax = axes[r, j * len(channels) + k]
                ax.set_xticks([])
                ax.set_yticks([])
                if j >= picks.size:
                    ax.axis("off")
                    continue
                stamp = np.asarray(ds.stamps[picks[j], k], float)
                finite = stamp[np.isfinite(stamp)]
                if finite.size == 0:
                    continue
                if name == "diff":
                    lim = max(abs(v) for v in zscale.get_limits(finite)) or 1.0
                    vmin, vmax, cmap = -lim, lim, "RdBu_r"
                else:
                    vmin, vmax = zscale.get_limits(finite)
                    cmap = "gray"
                ax.imshow(stamp, origin="lower", cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
                if r == 0 or j == 0:
                    ax.set_title(name, fontsize=7, pad=2)
                if k == 0:
                    row = c.iloc[picks[j]]
                    ax.text(1, 2, f"S/N {row['snr_psf']:.0f}", color="yellow", fontsize=5)
        axes[r, 0].set_ylabel(title, fontsize=7, rotation=0, ha="right", va="center")
    survey = ds.meta.get("survey", "")
    fig.suptitle(
        f"Example candidates of {ds.path.name} ({survey}, {ds.meta['stamp_size']} px stamps)", fontsize=9
    )
    fig.tight_layout(rect=(0.08, 0, 1, 0.98))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
