"""Checking a model directory before anything in it is loaded: it may come from anyone.

`check(model_dir)` reads the files `Seq2Seq.load` reads and refuses, with a ModelFileError
naming the file and the line, field or layer, what it cannot use:

- config.json: not UTF-8 or not JSON (line and column), written by a newer seq2seq
  (`versions.seq2seq`), or a setting `Config.from_dict` refuses;
- source_vocab.json, target_vocab.json: not JSON, keys missing or unexpected, a tokenizer
  seq2seq does not have (or not the config's level), a subword model file outside the
  directory or that is not a SentencePiece model with pieces, tokens that are not strings
  or repeat, or the special tokens not at ids 0-3;
- model.keras: not a zip archive holding a config.json, or an object in that config other
  than Keras's built-in ones (layers, ops, initializers, ...) and seq2seq's registered
  classes: in particular `Lambda` (it runs Python code stored in the file), the layers
  that wrap outside code (TFSMLayer, TorchModuleWrapper, JaxLayer, FlaxLayer), Python
  functions stored as code, and any module outside keras and seq2seq.

`check_sizes`, once Keras has loaded the checked model, compares its input and output
sizes with the vocabularies'. `check_checkpoint` checks what `--resume` reads besides.

Nothing is deserialized here: the archive's config.json is read as JSON. Keras then loads
the checked file with `safe_mode=True` (api.Seq2Seq.load), which refuses such code too.
"""

from __future__ import annotations

import json
import zipfile
import zlib
from importlib import metadata
from pathlib import Path
from typing import Any

from .config import Config, ConfigError
from .errors import UserError
from .files import CHECKPOINT_STATE_FILE, CONFIG_FILE, MODEL_FILE, SOURCE_VOCAB_FILE, TARGET_VOCAB_FILE
from .vocab import SPECIALS

FIX = "fix the file, or train the model again"
TRUST = "load model directories only from sources you trust, or train the model again"
MAX_JSON_BYTES = 64 * 1024 * 1024  # far above any real config or vocabulary

# Keras's own encodings of values inside a config (tensors, arrays, slices, ...): data, no code.
KERAS_VALUES = {"__keras_tensor__", "__tensor__", "__numpy__", "__bytes__", "__ellipsis__", "__slice__"}
# Keras classes that run code the file stores or names.
CODE_LAYERS = {"Lambda", "TFSMLayer", "TorchModuleWrapper", "JaxLayer", "FlaxLayer"}
# What a vocabulary file's tokenizer may hold, by kind (vocab.Codec.save writes them).
TOKENIZER_KEYS = {
    "char": {"kind", "lowercase"},
    "word": {"kind", "lowercase", "marks"},
    "subword": {"kind", "lowercase", "model_file"},
}


class ModelFileError(UserError, ValueError):
    """A file of a model directory is damaged, edited, from a newer seq2seq, or unsafe to
    load; the message names the file and the line, field or layer."""


def check(model_dir: str | Path) -> Config:
    """Check every file of `model_dir` that loading reads (see the module's docstring);
    its settings if all are sound, else ModelFileError."""
    model_dir = Path(model_dir)
    config = check_config(model_dir / CONFIG_FILE)
    for name in (SOURCE_VOCAB_FILE, TARGET_VOCAB_FILE):
        check_vocabulary(model_dir / name, level=config.level)
    check_model_file(model_dir / MODEL_FILE)
    return config


def check_config(path: str | Path) -> Config:
    """config.json's settings: valid JSON, from this version of seq2seq or an older one,
    every setting known, of its type and in its range."""
    path = Path(path)
    values = _read_json(path)
    if isinstance(values, dict):
        _check_version(path, values.get("versions"))
    try:
        return Config.from_dict(values)
    except ConfigError as error:
        raise ModelFileError(f"{path}: {error}; {FIX}") from None


def check_vocabulary(path: str | Path, level: str | None = None) -> None:
    """A vocabulary file as `vocab.Codec.save` writes it: {"tokenizer": {...}, "tokens": [...]}
    with the special tokens first and no token twice. With `level`, its tokenizer must be
    that kind."""
    path = Path(path)
    document = _read_json(path)

    def refuse(reason: str) -> ModelFileError:
        return ModelFileError(f"{path}: {reason}; {FIX}")

    if not isinstance(document, dict):
        raise refuse(f"expected a JSON object with 'tokenizer' and 'tokens', got {_kind(document)}")
    _check_keys(document, {"tokenizer", "tokens"}, {"tokenizer", "tokens"}, "", refuse)
    tokenizer = document["tokenizer"]
    if not isinstance(tokenizer, dict):
        raise refuse(f"tokenizer: expected an object, got {_kind(tokenizer)}")
    kind = tokenizer.get("kind")
    if kind not in TOKENIZER_KEYS:
        raise refuse(f"tokenizer.kind: must be one of {', '.join(TOKENIZER_KEYS)}; got {kind!r}")
    if level is not None and kind != level:
        raise refuse(f"tokenizer.kind: {kind!r}, but config.json's level is {level!r}")
    required = {"kind", "model_file"} if kind == "subword" else {"kind"}
    _check_keys(tokenizer, TOKENIZER_KEYS[kind], required, "tokenizer.", refuse)
    for flag in ("lowercase", "marks"):
        if not isinstance(tokenizer.get(flag, False), bool):
            raise refuse(f"tokenizer.{flag}: expected true or false, got {tokenizer[flag]!r}")
    if kind == "subword":
        name = tokenizer["model_file"]
        if not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\\" in name:
            raise refuse(f"tokenizer.model_file: expected a file name beside the vocabulary, got {name!r}")
        if not (path.parent / name).is_file():
            raise refuse(f"tokenizer.model_file: no file {name!r} in {path.parent}")
        check_sentencepiece(path.parent / name)
    tokens = document["tokens"]
    if not isinstance(tokens, list):
        raise refuse(f"tokens: expected a list of strings, got {_kind(tokens)}")
    first: dict[str, int] = {}
    for i, token in enumerate(tokens):
        if not isinstance(token, str):
            raise refuse(f"tokens[{i}]: expected a string, got {token!r}")
        if i < len(SPECIALS) and token != SPECIALS[i]:
            raise refuse(
                f"tokens[{i}]: expected {SPECIALS[i]!r}, got {token!r} "
                f"(the special tokens {' '.join(SPECIALS)} come first, at ids 0-{len(SPECIALS) - 1})"
            )
        if token in first:
            raise refuse(f"tokens[{i}]: {token!r} repeats tokens[{first[token]}] (a token has one id)")
        first[token] = i
    if len(tokens) < len(SPECIALS):
        raise refuse(f"tokens: {len(tokens)} tokens, fewer than the special tokens {' '.join(SPECIALS)}")


def check_sentencepiece(path: str | Path) -> None:
    """A subword vocabulary's .spm file: a SentencePiece model that parses and has pieces
    (parsed by sentencepiece from the file's bytes: a protobuf, no code)."""
    import sentencepiece

    path = Path(path)
    try:
        pieces = sentencepiece.SentencePieceProcessor(model_proto=path.read_bytes()).GetPieceSize()
    except RuntimeError:  # sentencepiece's only word on it is the C++ line that failed
        raise ModelFileError(f"{path}: not a SentencePiece model (it does not parse); {FIX}") from None
    if pieces == 0:
        raise ModelFileError(f"{path}: a SentencePiece model without pieces; {FIX}")


def check_sizes(
    model_dir: str | Path, model: Any, source_tokens: int, target_tokens: int, model_file: str = MODEL_FILE
) -> None:
    """After loading: the model's input rows and output width are the vocabularies' sizes
    (else ids would silently index past a table, or outputs name no token): files from
    different models, or a vocabulary edited after training. `model_file`: the loaded
    model's file, relative to `model_dir`, for the message."""
    model_dir = Path(model_dir)
    names = {layer.name for layer in model.layers}
    source_layer = "source_embedding" if "source_embedding" in names else "source_projection"
    sizes = {
        SOURCE_VOCAB_FILE: (source_tokens, model.get_layer(source_layer).weights[0].shape[0], f"{source_layer} rows"),
        TARGET_VOCAB_FILE: (target_tokens, model.outputs[0].shape[-1], "outputs"),
    }
    for name, (tokens, model_size, what) in sizes.items():
        if tokens != model_size:
            raise ModelFileError(
                f"{model_dir / name}: {tokens} tokens, but {model_file} has {model_size} {what} "
                f"(the files come from different models); {FIX}"
            )


def check_checkpoint(directory: str | Path) -> dict[str, Any]:
    """A training checkpoint (`callbacks.TrainingCheckpoint` writes it): state.json an object with
    the epochs done, seconds, callbacks' state and random states, and model.keras as
    `check_model_file` wants it. Returns the state."""
    directory = Path(directory)
    path = directory / CHECKPOINT_STATE_FILE
    advice = "fix the file, or train again without --resume"
    state = _read_json(path, advice)

    def refuse(reason: str) -> ModelFileError:
        return ModelFileError(f"{path}: {reason}; {advice}")

    if not isinstance(state, dict):
        raise refuse(f"expected a JSON object, got {_kind(state)}")
    keys = {"epochs_done", "seconds", "callbacks", "random_states"}
    _check_keys(state, keys, keys, "", refuse)
    epochs = state["epochs_done"]
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 0:
        raise refuse(f"epochs_done: expected a whole number of epochs, got {epochs!r}")
    kinds = {"seconds": ((int, float), "a number"), "callbacks": (dict, "an object"), "random_states": (list, "a list")}
    for key, (kind, described) in kinds.items():
        if not isinstance(state[key], kind) or isinstance(state[key], bool):
            raise refuse(f"{key}: expected {described}, got {state[key]!r}")
    check_model_file(directory / MODEL_FILE)
    return state


def check_model_file(path: str | Path) -> None:
    """model.keras: a zip archive whose config.json names only Keras's built-in objects and
    seq2seq's registered classes (read as JSON: nothing is deserialized)."""
    from . import losses, model  # noqa: F401  (they register seq2seq's classes, to check names against)

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: missing; is this a directory made by `seq2seq train`?")
    if not zipfile.is_zipfile(path):
        raise ModelFileError(
            f"{path}: not a Keras model file (not a zip archive); the file is damaged or was replaced: {TRUST}"
        )
    try:
        with zipfile.ZipFile(path) as archive:
            try:
                info = archive.getinfo("config.json")
            except KeyError:
                raise ModelFileError(f"{path}: not a Keras model file (no config.json inside); {TRUST}") from None
            if info.file_size > MAX_JSON_BYTES:
                raise ModelFileError(f"{path}: config.json inside is {info.file_size:,} bytes, too large; {TRUST}")
            raw = archive.read(info)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, NotImplementedError, EOFError) as error:
        raise ModelFileError(f"{path}: a damaged zip archive ({error}); {TRUST}") from None
    config = _parse_json(raw, f"{path} (its config.json)", TRUST)
    for node, layer in _objects(config):
        reason = _refusal(node)
        if reason:
            where = f"layer {layer!r}: " if layer else ""
            raise ModelFileError(
                f"{path}: refusing to load {where}{reason}; only Keras's built-in layers and seq2seq's own are "
                f"allowed: {TRUST}"
            )


def _read_json(path: Path, advice: str = FIX) -> Any:
    if not path.is_file():
        raise ModelFileError(f"{path}: missing; is this a directory made by `seq2seq train`?")
    if path.stat().st_size > MAX_JSON_BYTES:
        raise ModelFileError(f"{path}: {path.stat().st_size:,} bytes, too large for this file; {advice}")
    return _parse_json(path.read_bytes(), str(path), advice)


def _parse_json(raw: bytes, where: str, advice: str) -> Any:
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise ModelFileError(f"{where}: not valid UTF-8 (byte {error.start}); {advice}") from None
    except json.JSONDecodeError as error:
        raise ModelFileError(
            f"{where}: line {error.lineno}, column {error.colno}: not valid JSON: {error.msg}; {advice}"
        ) from None
    except RecursionError:
        raise ModelFileError(f"{where}: JSON nested too deeply; {advice}") from None


def _check_version(path: Path, versions: Any) -> None:
    """ModelFileError if `versions.seq2seq` names a newer release than the one running."""
    from packaging.version import InvalidVersion, Version

    written = versions.get("seq2seq") if isinstance(versions, dict) else None
    if not isinstance(written, str):
        return  # written without package metadata (a source checkout): nothing to compare
    running = _running_version()
    try:
        newer = Version(written).release > Version(running).release
    except InvalidVersion:
        raise ModelFileError(f"{path}: versions.seq2seq: not a version number: {written!r}; {FIX}") from None
    if newer:
        raise ModelFileError(
            f"{path}: written by seq2seq {written}, newer than this one ({running}); "
            "upgrade seq2seq (pip install --upgrade seq2seq) to load it"
        )


def _running_version() -> str:
    from . import __version__

    try:
        return metadata.version("seq2seq")
    except metadata.PackageNotFoundError:
        return __version__


def _check_keys(document: dict, allowed: set[str], required: set[str], prefix: str, refuse) -> None:
    if missing := sorted(required - set(document)):
        raise refuse(f"{prefix}{missing[0]}: missing")
    if unexpected := sorted(set(document) - allowed):
        raise refuse(f"{prefix}{unexpected[0]}: unexpected key (expected {', '.join(sorted(allowed))})")


def _objects(config: Any) -> list[tuple[dict, str | None]]:
    """Every serialized object in a Keras config (a dict with a class_name), with the name
    of the innermost layer around it. Iterative: a config may nest deeply."""
    found = []
    stack: list[tuple[Any, str | None]] = [(config, None)]
    while stack:
        node, layer = stack.pop()
        if isinstance(node, dict):
            if "class_name" in node:
                inner = node.get("config")
                if isinstance(inner, dict) and isinstance(inner.get("name"), str):
                    layer = inner["name"]
                found.append((node, layer))
            stack.extend((value, layer) for value in node.values())
        elif isinstance(node, list):
            stack.extend((value, layer) for value in node)
    return found


def _refusal(node: dict) -> str | None:
    """Why a serialized object must not be loaded, or None when it may."""
    import keras

    try:  # Keras's own list of the functions a model config must not name (Keras 3.9 and later)
        from keras.src.saving.serialization_lib import NON_MODELING_APIS
    except ImportError:
        NON_MODELING_APIS = frozenset()

    name, module, registered = node.get("class_name"), node.get("module"), node.get("registered_name")
    if not isinstance(name, str):
        return f"an object whose class_name is {name!r}"
    if name == "__lambda__":
        return "a Python lambda (code stored in the file)"
    if name in KERAS_VALUES and module is None:
        return None
    if name in CODE_LAYERS:
        return f"class {name} ({module}): it runs code stored in or named by the file"
    if not isinstance(module, str):
        return f"class {name}: it names no module"
    if name == "function":  # a function by name: its name is the object's config
        function = node.get("config")
        if not isinstance(function, str):
            return f"a function stored as {function!r}"
        name = function
    package = module.split(".")[0]
    if package == "keras":
        if f"{module}.{name}" in NON_MODELING_APIS:
            return f"{module}.{name}: not part of a model (Keras refuses it too)"
        return None
    if package == "seq2seq":
        if not (isinstance(registered, str) and registered.startswith("seq2seq>")):
            return f"class {name} ({module}): not one of seq2seq's registered classes"
        if keras.saving.get_registered_object(registered) is None:
            return f"class {registered}: seq2seq has no such class (written by a newer version?)"
        return None
    builtin = module == "builtins" and node.get("class_name") == "function"  # Keras's own functions, by name
    if builtin and (">" not in name or name.startswith("seq2seq>")):
        return None
    return f"class {name} from module {module!r}: only keras and seq2seq are allowed"


def _kind(value: Any) -> str:
    kinds = {list: "a list", dict: "an object", str: "a string", bool: "true or false", type(None): "null"}
    return kinds.get(type(value), "a number")
