"""The paper's published numbers (Jha et al., IJCAI 2021, Tables 1-3).

Captum max-sensitivity, 100 ImageNet validation images x 5 repetitions, ODE -> SDE
(normalized noise). Used beside our numbers where the setting matches (same
architecture, ImageNet).
"""

from __future__ import annotations

__all__ = ["PAPER_SENSITIVITY"]

# arch -> method -> (ODE, SDE)
PAPER_SENSITIVITY: dict[str, dict[str, tuple[float, float]]] = {
    "resnet50": {  # Table 1
        "saliency": (0.5952, 0.5510),
        "integrated_gradients": (0.5788, 0.4498),
        "deeplift": (0.7498, 0.6134),
        "deeplift_shap": (0.3566, 0.3230),
    },
    "wide_resnet101_2": {  # Table 2
        "saliency": (0.5972, 0.5480),
        "integrated_gradients": (0.5958, 0.4940),
        "deeplift": (0.8226, 0.6674),
        "deeplift_shap": (0.3332, 0.3236),
    },
    "resnext101_32x8d": {  # Table 3
        "saliency": (0.6204, 0.5570),
        "integrated_gradients": (0.6068, 0.4976),
        "deeplift": (0.7972, 0.7130),
        "deeplift_shap": (0.3692, 0.3302),
    },
}
