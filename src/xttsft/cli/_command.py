"""Commands whose options are generated from the settings.

A command names the settings it takes (``"train"``: every train setting; ``"synth.language"``: one).
Each becomes an option built from its field: the flag from the name (``num_epochs`` gives
``--num-epochs``; an on/off setting gives ``--x/--no-x``), the type from the annotation (``int | "auto"``
parses as either), the default and the help from the field, grouped in a help panel (:class:`Cli` on
the field). Only what is not a setting is written by hand in the command's signature: positional
inputs, ``--out``, ``--force``, ``--json``...

The flags given are collected from click's own parameters (``ctx.params`` and
``ctx.get_parameter_source``): a flag left out is no value, so the environment, .env files and the
config file still apply under it. The global options (``--workdir``, ``--config``, ``-v``, ``-q``)
are accepted after the command as well as before it.

The options are built the first time click looks at a command's parameters (its own ``--help``, its
parse, its completion), so ``xttsft --help`` never imports the settings (pydantic-settings costs about
0.1 s to import).
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, TypeVar

import typer
from typer.core import TyperCommand, TyperGroup

from xttsft.cli._common import err_console, set_state, state
from xttsft.logs import configure_logging

if TYPE_CHECKING:
    from pydantic.fields import FieldInfo

F = TypeVar("F", bound=Callable[..., Any])

#: ``ctx.meta`` keys: the settings given as flags ({section: {field: value}}) and the flag of each
_FLAGS = "xttsft.flags"
_FLAG_NAMES = "xttsft.flag_names"
_GLOBAL_PREFIX = "global__"
GLOBAL_PANEL = "Global options"

JSON_OPTION: Any = typer.Option(
    False, "--json", help="Print the result as JSON on stdout (nothing else goes there) instead of tables."
)


def global_options(panel: str | None = None) -> dict[str, Any]:
    """The global options, declared once: the app's callback takes them before the command, every
    command after it (in the ``panel`` of its help)."""
    return {
        "workdir": typer.Option(
            Path("."),
            "--workdir",
            "-w",
            help="Workspace folder: data, checkpoints and logs live under it.",
            file_okay=False,
            show_default="current folder",
            rich_help_panel=panel,
        ),
        "config": typer.Option(
            None,
            "--config",
            help="TOML config file (default: xttsft.toml in the workdir, if present).",
            dir_okay=False,
            rich_help_panel=panel,
        ),
        "verbose": typer.Option(
            False, "--verbose", "-v", help="Show debug messages and tracebacks.", rich_help_panel=panel
        ),
        "quiet": typer.Option(
            False, "--quiet", "-q", help="Only warnings and errors; no progress bars.", rich_help_panel=panel
        ),
    }


_GLOBAL_TYPES: dict[str, Any] = {"workdir": Path, "config": Path | None, "verbose": bool, "quiet": bool}


@dataclass(frozen=True)
class Setting:
    """A setting a command takes, by ``"section.field"``. ``flag`` replaces its long flag on this
    command (eval's ``--whisper-model`` for ``transcribe.model``); ``also`` are more settings that the
    same flag sets (run-all's ``--language``: transcribe's, build's and synth's)."""

    name: str
    flag: str | None = None
    also: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Target:
    """Where the value of one generated option goes."""

    settings: tuple[tuple[str, str], ...]  # (section, field), first the one it is built from
    flag: str  # its long flag, as provenance names it


# ------------------------------------------------------------------ the command class


class XttsftCommand(TyperCommand):
    """A command whose settings options are generated (see the module) and which takes the global
    options after its name too. Subclasses name the settings in ``takes``."""

    takes: ClassVar[tuple[str | Setting, ...]] = ()
    _own: list[Any]
    _complete: bool

    @property  # click assigns a plain list; the generated options join it on first use
    def params(self) -> list[Any]:
        if not self._complete:
            self._complete = True
            generated, _ = _generated(type(self).takes)
            self._own.extend([*generated, *_subcommand_globals()])
            _hide_flag_metavars(self._own)
        return self._own

    @params.setter
    def params(self, value: list[Any]) -> None:
        self._own, self._complete = list(value), False

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)
        _hide_flag_metavars([option])
        return option

    def invoke(self, ctx: Any) -> Any:
        """Move the settings and global options given out of ``ctx.params`` (the function takes only
        its own), into ``ctx.meta`` and the app state; then run the function."""
        _, targets = _generated(type(self).takes)
        given = {name: ctx.params.pop(name) for name in [*targets, *_global_names()] if name in ctx.params}
        given = {name: value for name, value in given.items() if _from_command_line(ctx, name)}
        sections: dict[str, dict[str, Any]] = {}
        names: dict[str, dict[str, str]] = {}
        for name, value in given.items():
            target = targets.get(name)
            for section, field in target.settings if target is not None else ():
                sections.setdefault(section, {})[field] = value
                names.setdefault(section, {})[field] = targets[name].flag
        ctx.meta[_FLAGS], ctx.meta[_FLAG_NAMES] = sections, names
        _apply_globals(ctx, {n.removeprefix(_GLOBAL_PREFIX): v for n, v in given.items() if n not in targets})
        return super().invoke(ctx)


class XttsftGroup(TyperGroup):
    """The app: its on/off options show no ``<bool>`` type, as a command's do."""

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)
        _hide_flag_metavars(params)
        return params


def command(app: typer.Typer, name: str, *takes: str | Setting) -> Callable[[F], F]:
    """Register a command that takes the settings ``takes`` as generated options."""
    cls = type(f"{name.title().replace('-', '')}Command", (XttsftCommand,), {"takes": takes})
    return app.command(name, cls=cls)


def settings_options(cmd: Any) -> list[tuple[Any, str, str]]:
    """``(option, section, field)`` of every setting a command takes, the one each option is built from."""
    if not isinstance(cmd, XttsftCommand):
        return []
    options, targets = _generated(type(cmd).takes)
    return [(o, *targets[o.name].settings[0]) for o in options]


def flags(ctx: typer.Context) -> dict[str, dict[str, Any]]:
    """The settings given as flags to this command: ``{section: {field: value}}``."""
    return ctx.meta.get(_FLAGS, {})


def load(ctx: typer.Context, file_logs: bool = True) -> Any:
    """The settings (the flags given included) and the workspace: ``settings, ws = load(ctx)``."""
    settings, _, ws = load_with_provenance(ctx, file_logs)
    return settings, ws


def load_with_provenance(ctx: typer.Context, file_logs: bool = True) -> Any:
    """Like :func:`load`, plus where every value came from."""
    return state(ctx).load_with_provenance(file_logs, flag_names=ctx.meta.get(_FLAG_NAMES), **flags(ctx))


# ------------------------------------------------------------------ global options after the command


def _from_command_line(ctx: Any, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return source is not None and source.name == "COMMANDLINE"


@cache
def _subcommand_globals() -> tuple[Any, ...]:
    options = {f"{_GLOBAL_PREFIX}{n}": (_GLOBAL_TYPES[n], o) for n, o in global_options(GLOBAL_PANEL).items()}
    return tuple(_click_params(options))


def _global_names() -> list[str]:
    return [f"{_GLOBAL_PREFIX}{n}" for n in _GLOBAL_TYPES]


def _apply_globals(ctx: Any, given: dict[str, Any]) -> None:
    """Global options given after the command replace those before it."""
    if not given:
        return

    st = state(ctx)
    verbose = st.verbose or bool(given.get("verbose"))
    quiet = (st.quiet or bool(given.get("quiet"))) and not verbose
    new = replace(
        st,
        workdir=given.get("workdir", st.workdir),
        config_file=given.get("config", st.config_file),
        verbose=verbose,
        quiet=quiet,
    )
    ctx.find_root().obj = set_state(new)
    if (verbose, quiet) != (st.verbose, st.quiet):
        configure_logging(err_console, verbose=verbose, quiet=quiet)


def _hide_flag_metavars(params: Iterable[Any]) -> None:
    """An on/off flag takes no value, so its help shows no type (typer would show ``<bool>``)."""
    for p in params:
        if p is not None and getattr(p, "is_flag", False) and p.metavar is None:
            p.metavar = ""


# ------------------------------------------------------------------ options from fields


@cache
def _generated(takes: tuple[str | Setting, ...]) -> tuple[tuple[Any, ...], dict[str, _Target]]:
    """The click options of the settings ``takes``, and where each one's value goes."""
    options: dict[str, tuple[Any, Any]] = {}
    targets: dict[str, _Target] = {}
    for setting in _expand(takes):
        name = setting.name.replace(".", "__")
        annotation, option, flag = _option(setting)
        options[name] = (annotation, option)
        targets[name] = _Target(tuple(_split(n) for n in (setting.name, *setting.also)), flag)
    return tuple(_click_params(options)), targets


def _expand(takes: Iterable[str | Setting]) -> list[Setting]:
    """``"train"`` is every train setting; ``"train.seed"`` one of them."""
    from xttsft.settings import SECTIONS

    out: list[Setting] = []
    for item in takes:
        if isinstance(item, str) and "." not in item:
            out += [Setting(f"{item}.{field}") for field in SECTIONS[item].model_fields]
        else:
            out.append(item if isinstance(item, Setting) else Setting(item))
    return out


def _split(name: str) -> tuple[str, str]:
    section, field = name.split(".")
    return section, field


def _click_params(options: dict[str, tuple[Any, Any]]) -> list[Any]:
    """Click parameters from ``{name: (annotation, typer.Option(...))}``, made by typer itself: from a
    function with that signature, as for any command."""

    def declared(**values: Any) -> None:
        """Only its signature is read."""

    declared.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation)
            for name, (annotation, option) in options.items()
        ]
    )
    holder = typer.Typer(add_completion=False)
    holder.command()(declared)
    return list(typer.main.get_command(holder).params)


def _option(setting: Setting) -> tuple[Any, Any, str]:
    """``(annotation, typer.Option(...), long flag)`` of one setting, from its field."""
    from xttsft.settings import SECTIONS, cli_of

    section, field = _split(setting.name)
    cls = SECTIONS[section]
    info = cls.model_fields[field]
    annotation, extra = _cli_type(info)
    default = info.get_default(call_default_factory=True)
    extra.setdefault("show_default", default not in (None, []))
    decls = flag_decls(section, field, setting.flag)
    option = typer.Option(default, *decls, help=info.description, rich_help_panel=cli_of(cls, field).panel, **extra)
    return annotation, option, decls[0].split("/")[0]


def flag_decls(section: str, field: str, flag: str | None = None) -> tuple[str, ...]:
    """The flags of a setting on its stage's command (``flag`` replaces its long one): an on/off
    setting's is its on flag and the same with "no-" (or its :class:`Cli`'s off name), another's its
    long flag and aliases. ``scripts/settings_table.py`` shows them in docs/configuration.md."""
    from xttsft.settings import SECTIONS, cli_of

    cls = SECTIONS[section]
    cli = cli_of(cls, field)
    long = flag or cli.flag or "--" + field.replace("_", "-")
    if _cli_type(cls.model_fields[field])[0] is bool:
        return (f"{long}/{cli.off or long[:2] + 'no-' + long[2:]}",)
    return (long, *cli.aliases)


def _cli_type(info: FieldInfo) -> tuple[Any, dict[str, Any]]:
    """The type a setting parses as on the command line, and the option's arguments that go with it.

    A union with ``"auto"`` parses as its other member or ``auto``: an on/off setting that can be
    ``auto`` takes on, off or auto (a flag could not say auto, to override a .env file's value)."""
    members = _members(info.annotation)
    auto = [m for m in members if typing.get_origin(m) is Literal and typing.get_args(m) == ("auto",)]
    rest = [m for m in members if m not in auto]
    if len(rest) != 1:
        raise TypeError(f"no command-line type for {info.annotation!r}")
    kind = rest[0]
    if not auto:
        return kind, {}
    if kind in (int, float, bool):
        return str, {
            "parser": _or_auto(kind),
            "metavar": "<on|off|auto>" if kind is bool else f"<{kind.__name__}|auto>",
        }
    raise TypeError(f"no command-line type for {info.annotation!r}")


def _members(annotation: Any) -> list[Any]:
    """The types of a union (``None`` left out), each without its constraints (``Annotated``)."""
    members = (
        typing.get_args(annotation)
        if typing.get_origin(annotation) in (typing.Union, types.UnionType)
        else (annotation,)
    )
    return [typing.get_args(m)[0] if typing.get_origin(m) is Annotated else m for m in members if m is not type(None)]


def _or_auto(kind: type) -> Callable[[Any], Any]:
    """A parser of ``auto`` or a value of ``kind`` (on/off, true/false, yes/no, 1/0 for a bool, as in
    the environment), whose error says so."""
    what = {int: "a whole number", float: "a number", bool: "on, off"}[kind]

    def parse(value: Any) -> Any:
        if value == "auto" or type(value) is kind:
            return value
        text = str(value).strip()
        if text.lower() == "auto":
            return "auto"
        from pydantic import TypeAdapter, ValidationError
        from pydantic_core import PydanticCustomError

        try:
            return TypeAdapter(kind).validate_python(text)
        except ValidationError:
            raise PydanticCustomError("or_auto", f"{text!r} is not {what} or auto.") from None

    parse.__name__ = f"{kind.__name__}_or_auto"
    return parse
