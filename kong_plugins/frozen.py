"""Building frozen dataclasses on the request path without paying for their frozenness.

A frozen dataclass's ``__init__`` assigns each field through ``object.__setattr__`` (its own
``__setattr__`` refuses): ~0.1 us a field, 1.6 us for the fifteen of
:class:`~kong_plugins.identity.RequestFacts`, which every plugin builds once or twice a request. A mutable
twin with the same slots assigns them directly (~0.2 us for all fifteen); switching the built
object's class to the frozen one afterwards (allowed between classes of identical layout) gives the
very object the frozen class's constructor would have: same type, fields, equality and hash, and
frozen from then on. The builder is one generated function (as dataclasses generates
``__init__``) doing the twin's assignments itself, not a call of the twin: one Python frame a build.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import MISSING, Field, field, fields, is_dataclass, make_dataclass
from typing import Any, TypeVar

T = TypeVar("T")


def positional_builder(cls: type[T]) -> Callable[..., T]:
    """A function building ``cls(*args)`` -- positional arguments in field order, defaults as
    ``cls`` has them -- for a frozen dataclass with slots and no ``__post_init__``.

    The twin is checked at once: a class this does not fit raises ``TypeError`` at import, never
    on a request.
    """
    params = getattr(cls, "__dataclass_params__", None)
    if not is_dataclass(cls) or params is None or not params.frozen or "__slots__" not in cls.__dict__:
        raise TypeError(f"{cls.__name__}: a frozen dataclass with slots is needed")
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__}: __post_init__ would not run")
    specs: list[tuple[str, Any, Field[Any]]] = []
    for f in fields(cls):
        if f.default is not MISSING:
            spec: Field[Any] = field(default=f.default)
        elif f.default_factory is not MISSING:
            spec = field(default_factory=f.default_factory)
        else:
            spec = field()
        specs.append((f.name, f.type, spec))
    twin = make_dataclass(f"_Mutable{cls.__name__}", specs, slots=True, eq=False, repr=False, match_args=False)
    if twin.__slots__ != cls.__slots__:  # type: ignore[attr-defined]
        raise TypeError(f"{cls.__name__}: its slots differ from its fields")

    build: Callable[..., T] = _generated_builder(cls, twin, fields(cls))
    try:
        build(*(None for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING))
    except TypeError as exc:  # the interpreter refused the class switch
        raise TypeError(f"{cls.__name__}: cannot be built through a twin ({exc})") from exc
    return build


#: The default of a parameter whose field has a ``default_factory``: the factory is called when
#: the argument is this (left out), as in the ``__init__`` dataclasses generates.
_CALL_FACTORY = object()


def _generated_builder(cls: type[T], twin: type[Any], cls_fields: tuple[Field[Any], ...]) -> Callable[..., T]:
    """``build(*args)`` as one generated function: the twin's instance made bare, its slots
    assigned in the builder's own frame, its class switched to ``cls``.

    Calling the twin instead (``twin(*args)``) cost a second Python frame per build, its
    generated ``__init__``; this one does that ``__init__``'s assignments itself. Parameters are
    positional-only (``twin(*args)`` took no keywords), defaults as the fields have them.
    """
    # Parameters are the field names (a missing one is named in the TypeError, as the twin's
    # __init__ named it); the builder's own names start with "__", which no field name does
    # (a class body mangles such a name into "_Class__name").
    namespace: dict[str, Any] = {"__new": object.__new__, "__twin": twin, "__frozen": cls,
                                 "__CALL_FACTORY": _CALL_FACTORY}
    params: list[str] = []
    assignments: list[str] = []
    for f in cls_fields:  # the twin's order: checked by its slots being cls's
        if f.default is not MISSING:
            namespace[f"__default_{f.name}"] = f.default
            params.append(f"{f.name}=__default_{f.name}")
            assignments.append(f"    __obj.{f.name} = {f.name}")
        elif f.default_factory is not MISSING:
            namespace[f"__factory_{f.name}"] = f.default_factory
            params.append(f"{f.name}=__CALL_FACTORY")
            assignments.append(f"    __obj.{f.name} = __factory_{f.name}() if {f.name} is __CALL_FACTORY else {f.name}")
        else:
            params.append(f.name)
            assignments.append(f"    __obj.{f.name} = {f.name}")
    name = f"build_{cls.__name__}"
    source = "\n".join([
        f"def {name}({', '.join(params)}{', /' if params else ''}):",
        "    __obj = __new(__twin)",
        *assignments,
        "    __obj.__class__ = __frozen  # the layouts are identical: only the type (and its frozenness) changes",
        "    return __obj",
    ])
    exec(compile(source, f"<positional_builder {cls.__module__}.{cls.__qualname__}>", "exec"), namespace)
    build: Callable[..., T] = namespace[name]
    build.__doc__ = f"``{cls.__name__}(*args)``, built through a mutable twin (kong_plugins.frozen)."
    return build


__all__ = ["positional_builder"]
