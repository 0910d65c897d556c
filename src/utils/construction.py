"""Objects that remember how they were built, and the Hydra config that builds them again.

A class that inherits :class:`RecordsArguments` keeps the arguments of its outermost constructor
call (defaults filled in) as ``init_arguments``, whoever calls it: Hydra, a notebook or a test.
:func:`construction_config` turns such an object, a ``functools.partial`` of a class (Hydra's
``_partial_``) or plain data into the config ``hydra.utils.instantiate`` rebuilds it from, the way
diffusers' ``register_to_config`` lets a model save itself without a caller setting state on it.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

INIT_ARGUMENTS = "init_arguments"


class NotDescribable(ValueError):
    """An object with no recorded construction (a class outside SR Lab, a lambda)."""


def _is_sequence(value: Any) -> bool:
    """Lists, tuples and other sequences (OmegaConf's ListConfig, which Hydra passes), not text.
    A config holds each of them as a list."""
    return isinstance(value, Sequence) and not isinstance(value, str | bytes)


def _record(instance: Any, init: Callable[..., None], args: tuple, kwargs: dict) -> None:
    if INIT_ARGUMENTS in instance.__dict__:  # a subclass's constructor already recorded itself
        return
    bound = inspect.signature(init).bind(instance, *args, **kwargs)
    bound.apply_defaults()
    arguments: dict[str, Any] = {}
    for name, parameter in list(inspect.signature(init).parameters.items())[1:]:
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            arguments.update(bound.arguments.get(name, {}))
        elif parameter.kind is not inspect.Parameter.VAR_POSITIONAL:
            arguments[name] = bound.arguments[name]
    instance.__dict__[INIT_ARGUMENTS] = arguments


class RecordsArguments:
    """Mixin: every subclass's ``__init__`` records its arguments in ``init_arguments``."""

    init_arguments: dict[str, Any]
    _wrapped: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" not in cls.__dict__:
            return
        init = cls.__dict__["__init__"]

        @functools.wraps(init)
        def recording_init(self: Any, *args: Any, **kw: Any) -> None:
            _record(self, init, args, kw)
            init(self, *args, **kw)

        cls.__init__ = recording_init  # type: ignore[method-assign]


def target_name(obj: Callable[..., Any]) -> str:
    """``module.Qualname`` of a class or function, the spelling ``_target_`` takes."""
    return f"{obj.__module__}.{obj.__qualname__}"


def construction_config(
    obj: Any,
    aliases: Mapping[Any, str] | None = None,
    arguments_of: Callable[[Any], Mapping[str, Any] | None] | None = None,
) -> Any:
    """The config that builds ``obj`` again. ``aliases`` maps a class or function to the name
    SR Lab's configs spell it with (``torch.optim.Adam`` for ``torch.optim.adam.Adam``).
    ``arguments_of`` gives the constructor arguments of objects that record none themselves
    (torch's parameter-free losses), or None where it does not know them either.

    Raises:
        NotDescribable: ``obj`` (or something inside it) records no construction.
    """
    aliases = aliases or {}

    def describe(value: Any) -> Any:
        return construction_config(value, aliases, arguments_of)

    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    if isinstance(obj, Mapping):
        return {str(k): describe(v) for k, v in obj.items()}
    if _is_sequence(obj):
        return [describe(v) for v in obj]
    if isinstance(obj, functools.partial) and not obj.args:
        name = aliases.get(obj.func) or target_name(obj.func)
        keywords = {k: describe(v) for k, v in obj.keywords.items()}
        # Rebuilt with plain lists and dicts, as the call got them (OmegaConf's containers,
        # passed on, fail libraries that test for a tuple or list).
        return {"_target_": name, "_partial_": True, "_convert_": "all", **keywords}
    recorded = obj.__dict__.get(INIT_ARGUMENTS) if hasattr(obj, "__dict__") else None
    if recorded is None and arguments_of is not None:
        recorded = arguments_of(obj)
    if recorded is not None:
        cls = type(obj)
        arguments = {k: describe(v) for k, v in recorded.items()}
        return {"_target_": aliases.get(cls) or target_name(cls), **arguments}
    raise NotDescribable(f"{type(obj).__name__} does not record how it was built")
