"""Click options generated from the typed stage configs (:mod:`phonecli.config`), and the run-lifecycle flags.

``@config_options(ProbeConfig)`` adds one option per config field (flag, help, choices, default
from the field) and hands the command a validated ``config=ProbeConfig(...)`` instead of the
separate values, so a command's options and its config fields cannot drift apart.
"""

from __future__ import annotations

import functools
from dataclasses import MISSING, fields

import click

from phonecli.config import StageConfig, field_types, flag_of

_UNSET = object()


def _click_option(f) -> click.Option:
    m = f.metadata
    flag = flag_of(f)
    types = [t for t in field_types(f) if t is not type(None)]
    kw: dict = {"help": m.get("help") or None}
    if m.get("metavar"):
        kw["metavar"] = m["metavar"]
    decls = [flag, f.name]
    if types == [bool]:
        decls = [f"{flag}/--no-{flag[2:]}", f.name]
        kw["default"] = f.default
        kw["show_default"] = True
    elif getattr(types[0], "__origin__", None) is tuple:
        kw["multiple"] = True
        kw["default"] = ()
    else:
        if m.get("choices"):
            kw["type"] = click.Choice(list(m["choices"]))
        elif types[0] in (int, float):
            kw["type"] = types[0]
        if f.default is MISSING:
            kw["required"] = True
        else:
            kw["default"] = f.default
            kw["show_default"] = m.get("show_default", True) and f.default is not None
    return click.Option(decls, **kw)


def config_options(cls: type[StageConfig]):
    """Decorator: one click option per field of ``cls``; the command receives ``config=cls(...)``."""

    def deco(fn):
        names = [f.name for f in fields(cls)]

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            values = {n: kwargs.pop(n) for n in names}
            kwargs["config"] = cls(**values)
            return fn(*args, **kwargs)

        params = getattr(fn, "__click_params__", [])
        # click applies decorators bottom-up and reverses the list: the fields keep their order in --help
        wrapper.__click_params__ = params + [_click_option(f) for f in reversed(fields(cls))]
        return wrapper

    return deco


def lifecycle_options(fn):
    """``--overwrite`` / ``--resume`` (see :mod:`phonecli.runs`: a finished run is never replaced silently)."""
    fn = click.option("--resume", is_flag=True, default=False,
                      help="Continue an interrupted run from its last checkpoint (a complete run: nothing to do).")(fn)
    fn = click.option("--overwrite", is_flag=True, default=False,
                      help="Replace an existing run at --out whole (its metrics, predictions and plots go too).")(fn)
    return fn
