"""Command-line flags built from the settings' dataclasses (evo.config).

- add_flags(): each field's flag metadata says its help, metavar and group, so a setting and its flag are written
  once; values() reads them back by field name.
- given(): which of them the user typed, as argparse resolved them (abbreviations included).
"""

from __future__ import annotations

import argparse
import dataclasses


def _kind(field: dataclasses.Field) -> type | None:
    """The argparse type of a field from its annotation (a string under postponed annotations)."""
    text = str(field.type)
    for name, kind in (("bool", bool), ("int", int), ("float", float), ("str", str), ("dict", str)):
        if text.split("|")[0].strip() == name:
            return kind
    return str


def add_flags(parser: argparse.ArgumentParser, cls, skip: tuple[str, ...] = ()) -> None:
    """Adds a --flag for every field of the dataclass cls that carries flag metadata (except skip)."""
    groups: dict[str, argparse._ActionsContainer] = {}
    for field in dataclasses.fields(cls):
        meta = field.metadata.get("flag")
        if meta is None or field.name in skip:
            continue
        target: argparse._ActionsContainer = parser
        if meta["exclusive"]:
            key = "x:" + meta["exclusive"]
            if key not in groups:
                groups[key] = parser.add_mutually_exclusive_group()
            target = groups[key]
        elif meta["group"]:
            if meta["group"] not in groups:
                groups[meta["group"]] = parser.add_argument_group(meta["group"])
            target = groups[meta["group"]]
        name = meta["name"] or "--" + field.name.replace("_", "-")
        kind = _kind(field)
        if kind is bool:
            if meta["negate"]:
                target.add_argument(name.replace("--", "--no-", 1), dest=field.name, action="store_false",
                                    help=meta["help"])
            else:
                target.add_argument(name, dest=field.name, action="store_true", help=meta["help"])
            continue
        if meta.get("repeat"):
            target.add_argument(name, dest=field.name, action="append", metavar=meta["metavar"], help=meta["help"])
            continue
        default = meta["cli_default"]
        if default is dataclasses.MISSING:
            default = field.default if field.default is not dataclasses.MISSING else None
        target.add_argument(name, dest=field.name, type=kind, default=default, metavar=meta["metavar"],
                            help=meta["help"])


def values(args: argparse.Namespace, cls, skip: tuple[str, ...] = ()) -> dict:
    """The parsed values of cls's flags, by field name."""
    found = {}
    for f in dataclasses.fields(cls):
        if "flag" in f.metadata and f.name not in skip:
            value = getattr(args, f.name)
            found[f.name] = tuple(value or ()) if f.metadata["flag"].get("repeat") else value
    return found


def given(argv: list[str], cls, skip: tuple[str, ...] = ()) -> set[str]:
    """The settings the user typed (as opposed to defaults), by field name. argv is parsed again by cls's flags with
    every default suppressed, so argparse resolves each flag as it did the first time (an abbreviation such as --pop
    for --population, a --no- form, --flag=value) and only the flags given land in the namespace."""
    parser = argparse.ArgumentParser(add_help=False)
    add_flags(parser, cls, skip)
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    typed, _ = parser.parse_known_args(argv)
    return set(vars(typed))
