"""Reading params.yaml and checking it against the declared schema.

The schema is data: every key maps to a check that returns ``None`` when the value
is allowed and a short description of what is allowed otherwise. Every stage
validates the whole file before doing any work, so a typo in any section fails in
seconds instead of after a long search.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from fmnist_pipeline.data import TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS
from fmnist_pipeline.errors import ParamsError, PipelineError

Check = Callable[[Any], "str | None"]
# A check of one key against the whole params: (value, params) -> problem or None.
Rule = Callable[[Any, Mapping[str, Any]], "str | None"]

# Element-wise activations that Keras resolves by name; a test keeps this list honest.
ACTIVATIONS = (
    "celu",
    "elu",
    "gelu",
    "hard_sigmoid",
    "hard_silu",
    "leaky_relu",
    "linear",
    "mish",
    "relu",
    "relu6",
    "selu",
    "sigmoid",
    "silu",
    "softplus",
    "softsign",
    "swish",
    "tanh",
)
STRATEGIES = ("random", "halving")
SCORINGS = ("accuracy", "balanced_accuracy", "f1_macro", "neg_log_loss")
BACKENDS = ("local", "dask")
# NumPy's and TensorFlow's seeds are unsigned 32-bit integers.
MAX_SEED = 2**32 - 1
# Pixels an image may be moved by augmentation: a quarter of its 28-pixel side.
MAX_SHIFT = 7
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
DATA_FILES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)
SOURCE_SCHEMES = ("http", "https", "file")
ADDRESS_RE = re.compile(r"^[a-z][a-z0-9+.-]*://\S+$")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


def integer(minimum: int | None = None, maximum: int | None = None) -> Check:
    """An integer, at least ``minimum`` and at most ``maximum`` when given."""
    bounds = [f">= {minimum}"] if minimum is not None else []
    bounds += [f"<= {maximum}"] if maximum is not None else []
    allowed = " ".join(["an integer", " and ".join(bounds)]).strip()

    def check(value: Any) -> str | None:
        if not _is_int(value):
            return allowed
        if (minimum is not None and value < minimum) or (
            maximum is not None and value > maximum
        ):
            return allowed
        return None

    return check


def number(gt: float | None = None, lt: float | None = None) -> Check:
    """A finite number strictly between the given bounds."""
    bounds = [f"> {gt}"] if gt is not None else []
    bounds += [f"< {lt}"] if lt is not None else []
    allowed = " ".join(["a number", " and ".join(bounds)]).strip()

    def check(value: Any) -> str | None:
        if not _is_number(value):
            return allowed
        if (gt is not None and value <= gt) or (lt is not None and value >= lt):
            return allowed
        return None

    return check


def fraction(value: Any) -> str | None:
    """A number in [0, 1)."""
    if not _is_number(value) or not 0 <= value < 1:
        return "a number >= 0 and < 1"
    return None


def boolean(value: Any) -> str | None:
    if not isinstance(value, bool):
        return "true or false"
    return None


def choice(options: tuple[str, ...]) -> Check:
    """One string out of ``options``."""

    def check(value: Any) -> str | None:
        if value not in options:
            return "one of " + ", ".join(options)
        return None

    return check


def non_empty_string(value: Any) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return "a non-empty string"
    return None


def optional(inner: Check) -> Check:
    """``null`` or whatever ``inner`` allows."""

    def check(value: Any) -> str | None:
        if value is None:
            return None
        problem = inner(value)
        return None if problem is None else f"null or {problem}"

    return check


def list_of(item: Check, what: str) -> Check:
    """A non-empty list whose items all pass ``item``."""

    def check(value: Any) -> str | None:
        if not isinstance(value, list) or not value:
            return f"a non-empty list of {what}"
        for entry in value:
            if item(entry) is not None:
                return f"a non-empty list of {what} ({entry!r} is not {item(entry)})"
        return None

    return check


def range_of(bound: Check, what: str, log: bool = False) -> Check:
    """A mapping ``{low: ..., high: ...}`` of two bounds with ``low`` below ``high``."""
    order = "low < high" if log else "low <= high"
    allowed = f"a mapping {{low: {what}, high: {what}}} with {order}"

    def check(value: Any) -> str | None:
        if not isinstance(value, Mapping) or set(value) != {"low", "high"}:
            return allowed
        low, high = value["low"], value["high"]
        if bound(low) is not None or bound(high) is not None:
            return allowed
        if low > high or (log and low == high):
            return allowed
        return None

    return check


def either(first: Check, second: Check) -> Check:
    def check(value: Any) -> str | None:
        problems = (first(value), second(value))
        if None in problems:
            return None
        return " or ".join(problems)

    return check


def scheduler_address(value: Any) -> str | None:
    if not isinstance(value, str) or not ADDRESS_RE.match(value):
        return "a dask scheduler address such as tcp://127.0.0.1:8786"
    return None


def required_when(other: str, equals: Any, what: str) -> Rule:
    """Not null when the key at dotted path ``other`` is ``equals``."""

    def check(value: Any, params: Mapping[str, Any]) -> str | None:
        if value is None and _lookup(params, other) == equals:
            return f"{what} when {other} is {equals}"
        return None

    return check


def source(value: Any) -> str | None:
    """A directory, or a base URL that the fetch stage can download from."""
    if non_empty_string(value) is None:
        scheme, separator, _ = value.partition("://")
        if not separator or scheme in SOURCE_SCHEMES:
            return None
    return "a directory or an http(s):// base URL"


def data_files(value: Any) -> str | None:
    """Each of the four data files, mapped to the SHA-256 of its decompressed bytes."""
    names = ", ".join(DATA_FILES)
    allowed = f"a mapping of {names} to SHA-256 hex digests"
    if not isinstance(value, Mapping) or set(value) != set(DATA_FILES):
        return allowed
    if not all(isinstance(d, str) and SHA256_RE.match(d) for d in value.values()):
        return allowed
    return None


# One candidate's value of each kind of searched hyperparameter ...
_unit = integer(1)
_activation = choice(ACTIVATIONS)
_learning_rate = number(gt=0)
# ... and the search space's choices or ranges of them.
_units = either(list_of(_unit, "integers >= 1"), range_of(_unit, "int >= 1"))
_activations = list_of(_activation, "Keras activation names")

SCHEMA: dict[str, Any] = {
    "fetch": {
        "sources": list_of(source, "directories or http(s) URLs"),
        "timeout": number(gt=0, lt=86400),
        "files": data_files,
    },
    "search": {
        "seed": integer(0, MAX_SEED),
        "subsample": optional(integer(20)),
        "n_iter": integer(1),
        "folds": integer(2),
        "scoring": choice(SCORINGS),
        "epochs": integer(1),
        "batch_size": integer(1),
        "label_smoothing": fraction,
        "flip_augment": boolean,
        "shift_augment": integer(0, MAX_SHIFT),
        "n_jobs": integer(1),
        "strategy": choice(STRATEGIES),
        "halving_factor": integer(2),
        "backend": choice(BACKENDS),
        "scheduler": optional(scheduler_address),
        "space": {
            "units_1": _units,
            "units_2": _units,
            "units_3": _units,
            "activation_1": _activations,
            "activation_2": _activations,
            "activation_3": _activations,
            "learning_rate": range_of(_learning_rate, "number > 0", log=True),
        },
    },
    "train": {
        "seed": integer(0, MAX_SEED),
        "max_epochs": integer(1),
        "batch_size": integer(1),
        "label_smoothing": fraction,
        "flip_augment": boolean,
        "shift_augment": integer(0, MAX_SHIFT),
        "validation_fraction": number(gt=0, lt=1),
        "patience": integer(1),
    },
    "evaluate": {
        "misclassified": integer(0),
    },
}


# The hyperparameters the search draws, in the order of ``search.space``.
SEARCHED = tuple(SCHEMA["search"]["space"])


def describe_candidate(params: Mapping[str, Any]) -> str:
    """One short line naming a candidate by its searched hyperparameters.

    >>> describe_candidate({"units_1": 256, "units_2": 128, "units_3": 64,
    ...     "activation_1": "relu", "activation_2": "elu", "activation_3": "gelu",
    ...     "learning_rate": 0.001})
    'units 256-128-64, relu/elu/gelu, learning_rate 0.001'
    """
    units = "-".join(str(params[f"units_{i}"]) for i in (1, 2, 3))
    activations = "/".join(str(params[f"activation_{i}"]) for i in (1, 2, 3))
    return f"units {units}, {activations}, learning_rate {params['learning_rate']:.3g}"


# What one candidate's value of each searched hyperparameter may be.
CANDIDATE_CHECKS: dict[str, Check] = {
    **{f"units_{i}": _unit for i in (1, 2, 3)},
    **{f"activation_{i}": _activation for i in (1, 2, 3)},
    "learning_rate": _learning_rate,
}


def check_candidate(params: Any, source: str) -> None:
    """Check a candidate read from ``source`` (the search's best params file).

    Raises
    ------
    PipelineError
        Naming the file and the first key that is missing, unknown or invalid.
    """
    rerun = "rerun `dvc repro -f search`"
    if not isinstance(params, Mapping) or set(params) != set(SEARCHED):
        raise PipelineError(
            f"{source}: got {_describe(params)}, expected a mapping of "
            f"{', '.join(SEARCHED)}; {rerun}"
        )
    for name, check in CANDIDATE_CHECKS.items():
        allowed = check(params[name])
        if allowed is not None:
            raise PipelineError(
                f"{source}: {name}: got {_describe(params[name])}, expected "
                f"{allowed}; {rerun}"
            )


# Rules that tie keys together, by the key that a problem is reported on. They run
# on keys that exist and passed SCHEMA.
RULES: dict[str, Rule] = {
    "search.scheduler": required_when(
        "search.backend", "dask", "a dask scheduler address such as tcp://host:8786"
    ),
}

_MISSING = object()


def _lookup(params: Any, path: str) -> Any:
    """The value at dotted ``path`` in ``params``, or ``_MISSING``."""
    node = params
    for key in path.split("."):
        if not isinstance(node, Mapping) or key not in node:
            return _MISSING
        node = node[key]
    return node


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _validate(value: Any, schema: Any, path: str) -> list[str]:
    if callable(schema):
        allowed = schema(value)
        if allowed is None:
            return []
        return [f"{path}: got {_describe(value)}, expected {allowed}"]
    if not isinstance(value, Mapping):
        return [f"{path}: got {_describe(value)}, expected a mapping"]
    problems = []
    for key in value:
        if key not in schema:
            known = ", ".join(schema)
            problems.append(
                f"{path}.{key}: unknown key (set to {_describe(value[key])}), "
                f"expected one of {known}"
            )
    for key, sub_schema in schema.items():
        if key not in value:
            problems.append(f"{path}.{key}: missing")
        else:
            problems.extend(_validate(value[key], sub_schema, f"{path}.{key}"))
    return problems


def validate_params(params: Any, source: str = "params.yaml") -> None:
    """Check ``params`` against :data:`SCHEMA`.

    Raises
    ------
    ParamsError
        One line per problem, each naming the key path, the value given and what
        is allowed.
    """
    if not isinstance(params, Mapping):
        raise ParamsError(f"{source}: expected a mapping of sections, got {params!r}")
    problems = []
    for key in params:
        if key not in SCHEMA:
            problems.append(
                f"{key}: unknown section, expected one of {', '.join(SCHEMA)}"
            )
    for section, schema in SCHEMA.items():
        if section not in params:
            problems.append(f"{section}: missing section")
        else:
            problems.extend(_validate(params[section], schema, section))
    for path, rule in RULES.items():
        value = _lookup(params, path)
        if value is _MISSING or any(p.startswith(f"{path}:") for p in problems):
            continue
        allowed = rule(value, params)
        if allowed is not None:
            problems.append(f"{path}: got {_describe(value)}, expected {allowed}")
    if problems:
        lines = "\n".join(f"{source}: {problem}" for problem in problems)
        raise ParamsError(f"{lines}\nFix the key(s) above in {source} and rerun.")


def load_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    """Read and validate the whole params file; return it as plain dicts."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ParamsError(f"{path}: cannot read ({error.strerror})") from error
    except UnicodeDecodeError as error:
        raise ParamsError(
            f"{path}: byte {error.start} is not UTF-8 text; save the file as UTF-8"
        ) from error
    try:
        params = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ParamsError(
            f"{path}:{where} is not valid YAML ({getattr(error, 'problem', error)})"
        ) from error
    validate_params(params, str(path))
    return params
