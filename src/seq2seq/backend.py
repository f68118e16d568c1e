"""The one place that deals with which Keras backend runs (JAX or TensorFlow)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

import keras


def name() -> str:
    return keras.backend.backend()


@contextmanager
def tensorflow_not_imported() -> Iterator[None]:
    """Keep Keras from importing TensorFlow on other backends.

    When saving a model or setting seeds, Keras asks whether TensorFlow is available (to
    check `isinstance(x, tf.TensorShape)` and the like), which imports it whenever it is
    installed: about 400 MB of memory and seconds of start-up for nothing. If TensorFlow
    has not been imported, no object can be a TensorFlow object, so inside this block
    Keras is told it is unavailable. Keras's own state is restored on exit.
    """
    if name() == "tensorflow" or "tensorflow" in sys.modules:
        yield
        return
    try:
        from keras.src.utils.module_utils import tensorflow as lazy_tensorflow
    except ImportError:  # Keras reorganised its internals: nothing to avoid, just proceed
        yield
        return
    previous = lazy_tensorflow._available
    lazy_tensorflow._available = False
    try:
        yield
    finally:
        lazy_tensorflow._available = previous
