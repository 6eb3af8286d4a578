"""Fused model against image-only and catalog-only on the default benchmark (the quickstart setup).

    python experiments/modalities_quickstart.py [OVERRIDES...]

Trains the three configurations of the same HybridModel on the default dataset, one after the other,
and writes reports/quickstart_modalities.md with real-bogus AUC, FNR at 1% FPR and type macro-F1 on
the test split (by object). Each run keeps its directory under outputs/modalities/.
"""

from __future__ import annotations

import sys
from pathlib import Path

from hybrid.cli import load_config
from hybrid.training import train

CONFIGS = {
    "fused (image + catalog)": [],
    "image only": ["tabular_encoder=none"],
    "catalog only": ["image_encoder=none"],
}
KEYS = ("auc", "fnr_at_1pct_fpr", "fpr_at_1pct_fnr", "ece", "type_macro_f1", "type_accuracy")


def main(overrides: list[str]) -> Path:
    rows = []
    for name, extra in CONFIGS.items():
        run_dir = Path("outputs/modalities") / name.split()[0]
        metrics = train(load_config([*overrides, *extra, f"run_dir={run_dir}"]))
        rows.append((name, metrics))
    lines = [
        "# Fused against single modalities (quickstart setup)",
        "",
        "Written by `python experiments/modalities_quickstart.py`; default dataset (ZTF-like, ZOGY), "
        "test split by object, one seed. Lower is better for FNR, FPR and ECE.",
        "",
        "| model | " + " | ".join(KEYS) + " | epochs |",
        "|---|" + "---|" * (len(KEYS) + 1),
    ]
    for name, m in rows:
        lines.append(f"| {name} | " + " | ".join(f"{m[k]:.4f}" for k in KEYS) + f" | {m['epochs']} |")
    out = Path("reports/quickstart_modalities.md")
    out.write_text("\n".join(lines) + "\n")
    return out


if __name__ == "__main__":
    print(main(sys.argv[1:]))
