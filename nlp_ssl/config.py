"""Typed configs: YAML files and ``key=value`` overrides become nested dataclasses.

A recipe declares one dataclass (usually a subclass of :class:`TrainingConfig` with nested sections such as
``data`` or ``model``). :func:`load_config` reads a YAML file, applies dotted overrides
(``model.hidden_size=512``), rejects unknown keys and coerces values by the field's declared type, so
``learning_rate: 2e-5`` (which YAML reads as a string) still becomes a float. Every problem becomes a
:class:`~nlp_ssl.errors.UserError` naming the key.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

from nlp_ssl.errors import UserError
from nlp_ssl.hub.publish import HubConfig

T = TypeVar("T")

_BOOL_STRINGS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}


@dataclasses.dataclass
class TrainingConfig(HubConfig):
    """Engine settings shared by every recipe; names follow transformers' ``TrainingArguments``.

    Beyond those names: ``max_time_minutes`` (a wall-clock budget: checkpoint, export and stop; rerun to
    continue), ``max_eval_batches`` (evaluate on a prefix of the held-out set) and ``peak_flops`` (the
    hardware peak for model-FLOPs utilisation; null measures it once per machine).
    ``metric_for_best_model`` keeps the weights of the best evaluation and exports those. A non-finite loss or
    gradient norm stops the run (``on_nonfinite: stop``) before anything is saved from the bad state, or
    (``skip``) drops that step's update, at most ``max_skipped_steps`` times. The Hub keys
    (``push_to_hub``, ``hub_model_id``, ``hub_strategy``, ...) come from :class:`~nlp_ssl.hub.publish.HubConfig`.
    """

    output_dir: str = "runs/default"
    overwrite_output_dir: bool = False
    max_steps: int = 1000
    learning_rate: float = 5e-4
    per_device_train_batch_size: int = 32
    per_device_eval_batch_size: int = 64
    gradient_accumulation_steps: int = 1
    warmup_steps: int = 0
    weight_decay: float = 0.01
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    lr_scheduler_type: str = "linear"
    logging_steps: int = 10
    eval_steps: int = 200
    max_eval_batches: int | None = None
    save_steps: int = 500
    save_total_limit: int | None = 2
    seed: int = 42
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    use_cpu: bool = False
    max_time_minutes: float | None = None
    report_to: list[str] = dataclasses.field(default_factory=lambda: ["tensorboard"])
    dataloader_num_workers: int = 0
    torch_compile: bool = False
    metric_for_best_model: str | None = None
    greater_is_better: bool | None = None
    peak_flops: float | None = None
    on_nonfinite: Literal["stop", "skip"] = "stop"
    max_skipped_steps: int = 10

    def __post_init__(self) -> None:
        super().__post_init__()
        positive = ["max_steps", "per_device_train_batch_size", "per_device_eval_batch_size",
                    "gradient_accumulation_steps", "logging_steps", "eval_steps", "save_steps"]
        for name in positive:
            if getattr(self, name) < 1:
                raise UserError(f"config key '{name}' must be >= 1, got {getattr(self, name)}")
        for name in ["warmup_steps", "weight_decay", "max_grad_norm", "dataloader_num_workers"]:
            if getattr(self, name) < 0:
                raise UserError(f"config key '{name}' must be >= 0, got {getattr(self, name)}")
        if not self.learning_rate > 0:
            raise UserError(f"config key 'learning_rate' must be > 0, got {self.learning_rate}")
        if self.max_time_minutes is not None and self.max_time_minutes <= 0:
            raise UserError("config key 'max_time_minutes' must be > 0 (or null for no budget)")
        if self.max_skipped_steps < 0:
            raise UserError(f"config key 'max_skipped_steps' must be >= 0, got {self.max_skipped_steps}")
        if self.peak_flops is not None and not self.peak_flops > 0:
            raise UserError("config key 'peak_flops' must be > 0 (FLOP/s; or null to measure it)")
        if self.save_total_limit is not None and self.save_total_limit < 1:
            raise UserError("config key 'save_total_limit' must be >= 1 (or null to keep every checkpoint)")
        from transformers import SchedulerType

        schedules = [t.value for t in SchedulerType]
        if self.lr_scheduler_type not in schedules:
            raise UserError(f"config key 'lr_scheduler_type' is '{self.lr_scheduler_type}'; choose one of {schedules}")
        known_trackers = {"tensorboard", "wandb", "mlflow", "comet_ml", "aim", "clearml", "dvclive", "swanlab", "trackio"}
        for tracker in self.report_to:
            if tracker not in known_trackers and tracker != "none":
                raise UserError(f"config key 'report_to' has unknown tracker '{tracker}'; choose from {sorted(known_trackers)} or []")


# ----------------------------------------------------------------------------------------------------------
# YAML + overrides -> dataclass


def load_config(cls: type[T], path: str | Path | None, overrides: list[str] | None = None) -> T:
    """Build ``cls`` from a YAML file and ``key=value`` overrides (dotted keys reach nested sections).

    Raises:
        UserError: missing/unparsable file, unknown key (with a close-match suggestion), wrong type.
    """
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"config file not found: {path} (run `nlp-ssl ls` to list the shipped configs)")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as err:
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise UserError(f"config file {path} is not valid YAML: {first}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise UserError(f"config file {path} must hold a mapping of keys to values, got {type(loaded).__name__}")
        raw = loaded
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"override '{item}' is not of the form key=value (e.g. max_steps=100)")
        _set_dotted(raw, key.strip(), yaml.safe_load(value) if value.strip() else None)
    return from_dict(cls, raw)


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise UserError(f"override '{dotted}': '{part}' is not a section")
        node = child
    node[parts[-1]] = value


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Recursively build dataclass ``cls`` from ``data``, validating keys and coercing types."""
    if not isinstance(data, dict):
        raise UserError(f"config section '{prefix.rstrip('.') or '<root>'}' must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f"; did you mean '{prefix}{close[0]}'?" if close else f"; valid keys here: {', '.join(sorted(fields))}"
            raise UserError(f"unknown config key '{prefix}{key}'{hint}")
        kwargs[key] = _coerce(value, hints[key], f"{prefix}{key}")
    try:
        return cls(**kwargs)
    except UserError:
        raise
    except (TypeError, ValueError) as err:
        raise UserError(f"invalid config section '{prefix.rstrip('.') or '<root>'}': {err}") from None


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    origin = get_origin(annotation)
    args = get_args(annotation)
    if annotation is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except UserError as err:
                errors.append(str(err))
        raise UserError(errors[0] if len(errors) == 1 else f"config key '{key}' has invalid value {value!r} (expected {_type_name(annotation)})")
    if origin is Literal:
        if value in args:
            return value
        raise UserError(f"config key '{key}' must be one of {list(args)}, got {value!r}")
    if dataclasses.is_dataclass(annotation):
        if isinstance(value, annotation):
            return value
        return from_dict(annotation, value if value is not None else {}, prefix=f"{key}.")
    if origin in (list, tuple):
        if value is None:
            raise UserError(f"config key '{key}' must be a list, got null")
        items = value if isinstance(value, (list, tuple)) else [value]
        inner = args[0] if args else Any
        coerced = [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(items)]
        return coerced if origin is list else tuple(coerced)
    if origin is dict:
        if not isinstance(value, dict):
            raise UserError(f"config key '{key}' must be a mapping, got {value!r}")
        return dict(value)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _BOOL_STRINGS:
            return _BOOL_STRINGS[value.lower()]
        raise UserError(f"config key '{key}' must be true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool):
            raise UserError(f"config key '{key}' must be an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                as_float = float(value)
            except ValueError:
                as_float = None
            if as_float is not None and as_float.is_integer():
                return int(as_float)
        raise UserError(f"config key '{key}' must be an integer, got {value!r}")
    if annotation is float:
        if isinstance(value, bool):
            raise UserError(f"config key '{key}' must be a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                # YAML 1.1 reads '2e-5' (no dot) as a string: accept it as the number it means.
                return float(value)
            except ValueError:
                pass
        raise UserError(f"config key '{key}' must be a number, got {value!r}")
    if annotation is str:
        if isinstance(value, (dict, list)) or value is None:
            raise UserError(f"config key '{key}' must be a string, got {value!r}")
        return str(value)
    return value


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def to_dict(config: Any) -> dict[str, Any]:
    """The resolved config as plain data (for ``config.yaml`` and trackers).

    Tuples become lists, as YAML reads them back, so a config compares equal to its own ``config.yaml``
    (the check that lets an interrupted run resume).
    """
    return _lists(dataclasses.asdict(config))


def _lists(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _lists(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_lists(v) for v in value]
    return value


def dump_yaml(config: Any) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False)
