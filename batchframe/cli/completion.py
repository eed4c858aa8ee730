"""Shell completion of ``-c`` (the project's concrete configs) and ``-p`` (parameter names, then values).

``-c`` reads the config files without running them. ``-p`` imports the project, as ``exec`` would,
to know its parameters; a parameter with few values (Enum, Literal such as ``executor``, bool)
completes ``NAME=`` to ``NAME=VALUE``.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import TYPE_CHECKING

import typer  # typer reads the annotations of a completion function at run time

if TYPE_CHECKING:
    from batchframe.project.load import Project
    from batchframe.project.params import ParamSpec


def _project_path(ctx: typer.Context) -> Path:
    # While completing an option value, click may leave PATH among the extra args.
    return Path(ctx.params.get("path") or (ctx.args[0] if ctx.args else "."))


def complete_config(ctx: typer.Context, incomplete: str) -> list[str]:
    """``-c``: the concrete configs of the project named on the command line."""
    from batchframe.project.configs import CONFIG_DIR, list_configs

    path = _project_path(ctx)
    config_dir = (path if path.is_dir() else path.parent) / CONFIG_DIR
    names = [name for name in list_configs(config_dir) if name.startswith(incomplete)]
    bases = _base_names(config_dir)
    return [name for name in names if _defines_a_concrete_class(config_dir / f"{name}.py", bases)]


def _classes(module: Path) -> list[ast.ClassDef] | None:
    """The top-level classes of ``module``, or None when it cannot be read or parsed."""
    try:
        tree = ast.parse(module.read_text(encoding="utf-8"), filename=str(module))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return None
    return [node for node in tree.body if isinstance(node, ast.ClassDef)]


def _name(node: ast.expr) -> str:
    """``Base`` for ``Base``, ``ABC`` for ``abc.ABC``: the last part of a dotted name."""
    if isinstance(node, ast.Attribute):
        return node.attr
    return node.id if isinstance(node, ast.Name) else ""


def _base_names(config_dir: Path) -> set[str]:
    """Names of the classes other config classes build on (``__init__.py`` included)."""
    modules = config_dir.glob("*.py")
    return {_name(base) for module in modules for cls in _classes(module) or [] for base in cls.bases}


def _defines_a_concrete_class(module: Path, bases: set[str]) -> bool:
    """Whether ``module`` defines a class ``exec -c`` could run: a subclass that is neither abstract nor a base."""
    classes = _classes(module)
    if classes is None:
        return True  # offered all the same: exec will say what is wrong with it
    return any(cls.bases and cls.name not in bases and not _is_abstract(cls) for cls in classes)


def _is_abstract(cls: ast.ClassDef) -> bool:
    """``abc.ABC`` among its bases, ``metaclass=ABCMeta`` or an ``@abstractmethod`` (as in ``_configs``)."""
    if any(_name(base) == "ABC" for base in cls.bases):
        return True
    if any(k.arg == "metaclass" and _name(k.value) == "ABCMeta" for k in cls.keywords):
        return True
    methods = [node for node in cls.body if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)]
    return any(_name(d) == "abstractmethod" for method in methods for d in method.decorator_list)


def complete_param(ctx: typer.Context, incomplete: str) -> list[tuple[str, str]]:
    """``-p``: ``NAME=`` for each parameter, then, after ``NAME=``, the values it takes when they are few."""
    specs = _param_specs(ctx)
    name, equals, partial = incomplete.partition("=")
    if not equals:
        return [(f"{n}=", spec.description or spec.type_name) for n, spec in specs.items() if n.startswith(name)]
    spec = specs.get(name) or next((s for s in specs.values() if name in s.aliases), None)
    return [(f"{name}={value}", "") for value in _values(spec) if value.startswith(partial)]


_PARAM_OPTIONS = ("-p", "--param", "--params")


def bash_split_values(ctx: typer.Context) -> list[str]:
    """The values after ``-p NAME=`` as bash asks for them: it splits the word at "=" (COMP_WORDBREAKS).

    click then takes NAME for the value of ``-p`` and asks the command, not ``-p``, to complete what
    follows "=". bash replaces only the text after "=", so the values come without ``NAME=``.
    """
    words, cword = _bash_words()
    before, current = words[:cword], (words[cword] if cword < len(words) else "")
    if current == "=":  # the cursor right after "=": "=" is the word being completed
        before, current = [*before, "="], ""
    if len(before) < 3 or before[-1] != "=" or before[-3] not in _PARAM_OPTIONS:
        return []
    return [value.partition("=")[2] for value, _ in complete_param(ctx, f"{before[-2]}={current}")]


def _bash_words() -> tuple[list[str], int]:
    """COMP_WORDS and COMP_CWORD, which only bash's completion script sets (empty elsewhere)."""
    import os
    import shlex

    raw = os.environ.get("COMP_WORDS", "")
    try:
        words = shlex.split(raw)
        cword = int(os.environ.get("COMP_CWORD", ""))
    except ValueError:  # an unfinished quote, or no COMP_CWORD
        return [], 0
    return words, cword


def _param_specs(ctx: typer.Context) -> dict[str, ParamSpec]:
    import logging

    logging.disable(logging.CRITICAL)  # importing the project may log; completion output is the shell's
    try:
        from batchframe.run.prepare import collect_specs

        return dict(collect_specs(_load_project(_project_path(ctx), ctx.params.get("config"))))
    except Exception:  # a broken project simply completes nothing
        return {}


def _load_project(path: Path, config: str | None) -> Project:
    """The project as ``exec`` loads it; with several configs and no ``-c`` yet, with the first one's."""
    from batchframe.errors import ConfigError
    from batchframe.project.load import load_project

    try:
        return load_project(path, config)
    except ConfigError as error:
        if config is not None or not error.available:
            raise
        return load_project(path, error.available[0])


def _values(spec: ParamSpec | None) -> list[str]:
    from batchframe.project.parsing import value_choices

    return (value_choices(spec.type) if spec is not None else None) or []
