"""Import TensorFlow/Keras with the CPU settings this project measured (imported only inside model/).

oneDNN makes 3D convolutions 3-7x faster on the target CPU, so it is switched on unless the user
chose otherwise; TensorFlow's C++ log chatter is silenced at the same time.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

__all__ = ["keras", "tf", "software_versions"]


def software_versions() -> dict[str, str]:
    """Return the versions of the libraries that define a trained model's numerics."""
    import platform

    import numpy
    import skimage

    import bids_lesionchange

    return {
        "bids_lesionchange": str(getattr(bids_lesionchange, "__version__", "unknown")),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": numpy.__version__,
        "scikit-image": skimage.__version__,
        "python": platform.python_version(),
    }
