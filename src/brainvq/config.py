"""Loading nested dataclass configs from YAML, with unknown keys reported clearly."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from brainvq.errors import ConfigError

T = TypeVar("T")


#: the brainvq commit that last held the options of a config's ``REMOVED_FIELDS``
REMOVED_IN_COMMIT = "4f37c69"


def _drop_removed(cls: type, data: dict[str, Any], where: str) -> dict[str, Any]:
    """``data`` without the fields ``cls`` no longer has (its ``REMOVED_FIELDS``: name -> (the
    value it had by default, why it went)): an old config holding the default loads as if it did
    not, one asking for the removed behaviour is refused."""
    removed = getattr(cls, "REMOVED_FIELDS", {})
    for key in set(data) & set(removed):
        default, why = removed[key]
        if data[key] != default:
            raise ConfigError(
                f"{where or cls.__name__}.{key}: {data[key]!r} is no longer supported ({why}; the code is in "
                f"brainvq commit {REMOVED_IN_COMMIT}); remove the key or set it to {default!r}"
            )
    return {k: v for k, v in data.items() if k not in removed}


def from_dict(cls: type[T], data: dict[str, Any], where: str = "") -> T:
    """Build dataclass ``cls`` from a (nested) dict, rejecting unknown keys (fields it no longer
    has are accepted at their former default, :func:`_drop_removed`)."""
    if not isinstance(data, dict):
        raise ConfigError(f"config section {where or cls.__name__} must be a mapping")
    data = _drop_removed(cls, data, where)
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ConfigError(f"unknown config key(s) {sorted(unknown)} in {where or cls.__name__}")
    kwargs = {}
    for key, value in data.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = from_dict(hint, value, f"{where}.{key}" if where else key)
        kwargs[key] = value
    return cls(**kwargs)


def load_yaml_config(cls: type[T], path: str | Path, upgrade: Callable[[dict], dict] | None = None) -> T:
    """Read a YAML file (a run's ``config.yaml`` or a hand-written one) into ``cls``.

    ``upgrade`` maps the config of a run record (complete by construction, so missing fields
    mean an older brainvq) to today's fields; hand-written configs take the current defaults."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: expected a mapping of config sections")
    config = doc.get("config", doc)
    if upgrade and "environment" in doc and isinstance(config, dict):  # a run record (write_run_config)
        config = upgrade(config)
    return from_dict(cls, config)
