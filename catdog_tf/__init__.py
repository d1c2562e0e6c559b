"""catdog_tf: cats vs dogs with TensorFlow.

The folders follow the data, one way: data (Kaggle files -> records -> tf.data) -> models
(backbones, head) -> training (one trainer, k-fold) -> inference (predict, evaluate, ensemble,
export); tools and bench apart. `python -m catdog_tf.<tool>` entry points are thin: their flags
come from the dataclasses in config.py. BUILD.md maps every module.
"""

import os as _os

# TF's C++ INFO lines (oneDNN, CPU features) drown the progress output; warnings stay.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

__version__ = "0.1.0"
