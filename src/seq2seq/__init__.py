"""seq2seq: train LSTM encoder-decoder networks on pairs of texts and generate with them."""

import os

# JAX is the default backend (fastest on CPU here); KERAS_BACKEND=tensorflow selects the
# textbook's stack. This must happen before Keras is first imported.
os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__all__ = ["Config", "Seq2Seq"]
__version__ = "0.1.0"


def __getattr__(name: str):
    """`Config` and `Seq2Seq` are imported on first use: importing the package stays cheap,
    so the `seq2seq` command can restart its process before Keras loads (launch.py)."""
    if name == "Config":
        from .config import Config

        return Config
    if name == "Seq2Seq":
        from .api import Seq2Seq

        return Seq2Seq
    raise AttributeError(f"module 'seq2seq' has no attribute {name!r}")
