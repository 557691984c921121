"""Config checks that run before any work: every ``_target_`` node is checked against its signature.

The schema of a component is the signature of the class it names, so nothing is declared twice:
unknown keys, wrong types and ``Literal`` choices are reported with the full config key, and range
checks (eps >= 0, steps >= 1, ...) come from the constructors, re-raised with the key too.
"""

from __future__ import annotations

import inspect
import types
import typing
from typing import Any, Iterator, Literal, Union, get_args, get_origin

import hydra
from omegaconf import DictConfig, ListConfig, OmegaConf

from robustxai.errors import ConfigError


def iter_target_nodes(node: Any, key: str = "") -> Iterator[tuple[str, DictConfig]]:
    """Yield ``(full_key, node)`` for every config node that has a ``_target_``, outermost first."""
    if isinstance(node, DictConfig):
        if "_target_" in node:
            yield key, node
        for child_key in node.keys():
            if str(child_key).startswith("_") or str(child_key) == "hydra":
                continue
            child = node._get_node(child_key)
            if isinstance(child, (DictConfig, ListConfig)):
                yield from iter_target_nodes(child, f"{key}.{child_key}" if key else str(child_key))
    elif isinstance(node, ListConfig):
        for i, child in enumerate(node):
            yield from iter_target_nodes(child, f"{key}[{i}]")


def _resolve_target(target: str, key: str) -> Any:
    try:
        return hydra.utils.get_object(target)
    except Exception as err:
        raise ConfigError(f"`{key}._target_`: cannot import {target!r} ({err}). "
                          f"Check the spelling of the class path.") from err


def _type_ok(value: Any, annotation: Any) -> bool:
    """A lenient check of plain values against simple annotations; unknown annotations pass."""
    if annotation is inspect.Parameter.empty or annotation is Any:
        return True
    origin = get_origin(annotation)
    if origin is Literal:
        return value in get_args(annotation)
    if origin in (Union, types.UnionType):
        return any(_type_ok(value, arg) for arg in get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    return True


def _describe(annotation: Any) -> str:
    """``Literal['a', 'b'] | None`` -> "one of 'a', 'b', or None"; ``float`` -> "float"."""
    origin = get_origin(annotation)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(annotation))
    if origin in (Union, types.UnionType):
        return " or ".join("None" if arg is type(None) else _describe(arg) for arg in get_args(annotation))
    return getattr(annotation, "__name__", str(annotation)).replace("typing.", "")


def check_node(key: str, node: DictConfig) -> None:
    """Check one ``_target_`` node's keys and plain values against the target's signature."""
    target = _resolve_target(node["_target_"], key)
    try:
        signature = inspect.signature(target)
        hints = typing.get_type_hints(target.__init__ if inspect.isclass(target) else target)
    except (TypeError, ValueError, NameError):
        return
    params = signature.parameters
    accepts_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    for name in node.keys():
        name = str(name)
        if name.startswith("_"):
            continue
        full = f"{key}.{name}" if key else name
        if name not in params:
            if accepts_kwargs:
                continue
            valid = ", ".join(p for p in params if p != "self")
            raise ConfigError(f"`{full}`: {node['_target_']} has no argument {name!r}. Valid keys: {valid}.")
        value = node._get_node(name)
        if OmegaConf.is_missing(node, name):
            continue
        if isinstance(value, (DictConfig, ListConfig)):
            continue
        resolved = OmegaConf.select(node, name, throw_on_resolution_failure=True)
        annotation = hints.get(name, params[name].annotation)
        if not _type_ok(resolved, annotation):
            raise ConfigError(f"`{full}` = {resolved!r} is invalid: it must be {_describe(annotation)}.")


def check_optimizer(key: str, node: DictConfig) -> None:
    """Build a partial ``torch.optim`` optimiser on a dummy parameter, so a bad lr or beta fails before training."""
    import torch

    target = _resolve_target(node["_target_"], key)
    if not (inspect.isclass(target) and issubclass(target, torch.optim.Optimizer) and node.get("_partial_", False)):
        return
    factory = instantiate(node, key)
    try:
        factory([torch.nn.Parameter(torch.zeros(1))])
    except (ValueError, TypeError) as err:
        values = ", ".join(f"{k}={v}" for k, v in node.items() if not str(k).startswith("_"))
        raise ConfigError(f"invalid config at `{key}` ({values}): {err}") from err


def validate_config(cfg: DictConfig) -> None:
    """Check every component node of ``cfg`` before anything is built."""
    for key, node in iter_target_nodes(cfg):
        check_node(key, node)
        check_optimizer(key, node)


def instantiate(node: DictConfig, key: str, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` that reports a constructor's complaint with the config key."""
    try:
        return hydra.utils.instantiate(node, **kwargs)
    except Exception as err:
        cause = err
        while cause.__cause__ is not None and type(cause).__name__ == "InstantiationException":
            cause = cause.__cause__
        message = str(cause).split("\nfull_key:")[0].strip()
        full_key = _full_key_from(str(err)) or key
        raise ConfigError(f"invalid config at `{full_key}`: {message}") from err


def _full_key_from(message: str) -> str | None:
    for line in message.splitlines():
        if line.startswith("full_key:"):
            return line.split(":", 1)[1].strip() or None
    return None
