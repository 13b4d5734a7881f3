"""Runs a validated graph: the interpreter behind Archive.callable().

A graph is a list of Node(name, op, args, kwargs) in the archive's argument encoding (node references as
{"node": name}, enums as {"dtype": ...} and the like, non-finite floats as {"float": "inf"}); op is a resolved
OpOverload, or None for getitem. Program decodes the arguments once, then each call walks the nodes in order with
an environment from names to values, and drops each value after its last use so that peak memory stays what eager
execution would hold.

Every device argument is set to the scorer's device, given or not: a graph traced on CUDA runs wherever the
scorer runs, and no op can allocate anywhere else.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import torch

from evo.sandbox.graph.ops import type_path

DTYPES = {
    "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64,
    "int64": torch.int64, "int32": torch.int32, "int16": torch.int16, "int8": torch.int8, "uint8": torch.uint8,
    "bool": torch.bool,
}
LAYOUTS = {"strided": torch.strided}
MEMORY_FORMATS = {
    "contiguous_format": torch.contiguous_format, "preserve_format": torch.preserve_format,
    "channels_last": torch.channels_last, "channels_last_3d": torch.channels_last_3d,
}
FLOATS = {"inf": float("inf"), "-inf": float("-inf"), "nan": float("nan")}


@dataclass(frozen=True)
class Node:
    """One validated node: op is None for getitem, whose args are [{"node": source}, index]."""

    name: str
    op: torch._ops.OpOverload | None
    args: list
    kwargs: dict


@dataclass(frozen=True)
class Ref:
    """A decoded reference to the value of another node or input."""

    name: str


def decode(value, device: torch.device):
    """An argument in the archive encoding -> the Python value an op takes, with Ref for node references and the
    given device for every device."""
    if isinstance(value, list):
        return [decode(v, device) for v in value]
    if not isinstance(value, dict):
        return value
    (key, inner), = value.items()
    if key == "node":
        return Ref(inner)
    if key == "float":
        return FLOATS[inner]
    if key == "dtype":
        return DTYPES[inner]
    if key == "device":
        return device
    if key == "layout":
        return LAYOUTS[inner]
    return MEMORY_FORMATS[inner]


def _with_device(op: torch._ops.OpOverload, args: list, kwargs: dict, device: torch.device) -> None:
    """Sets every Device argument of the call to `device`, in place, whether the graph gave one or not."""
    for i, arg in enumerate(op._schema.arguments):
        if type_path(arg.real_type)[-1] != "DeviceObjType":
            continue
        if i < len(args) and not arg.kwarg_only:
            args[i] = device
        else:
            kwargs[arg.name] = device


def _refs(value, out: set) -> None:
    if isinstance(value, Ref):
        out.add(value.name)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _refs(v, out)
    elif isinstance(value, dict):
        for v in value.values():
            _refs(v, out)


def _bind(value, env: dict):
    if isinstance(value, Ref):
        return env[value.name]
    if isinstance(value, list):
        return [_bind(v, env) for v in value]
    return value


class Program:
    """A callable x -> output over a validated graph. tensors maps each non-user input's name to its tensor
    (already on `device`); input_name is the user input's name, output the name whose value is returned."""

    def __init__(self, nodes: list[Node], tensors: dict[str, torch.Tensor], input_name: str, output: str,
                 device: torch.device):
        self._tensors = dict(tensors)
        self._input = input_name
        self._output = output
        self._steps = []
        last_use: dict[str, int] = {}
        for i, node in enumerate(nodes):
            args = decode(node.args, device)
            kwargs = {k: decode(v, device) for k, v in node.kwargs.items()}
            if node.op is None:
                fn = operator.getitem
            else:
                fn = node.op
                _with_device(node.op, args, kwargs, device)
            used: set[str] = set()
            _refs(args, used)
            _refs(kwargs, used)
            for name in used:
                last_use[name] = i
            self._steps.append((node.name, fn, args, kwargs))
        # After step i, forget every value whose last reader was step i (values nobody reads go at once).
        self._frees: list[list[str]] = [[] for _ in nodes]
        for i, (name, _, _, _) in enumerate(self._steps):
            last_use.setdefault(name, i)
        for name, i in last_use.items():
            if name != output:
                self._frees[i].append(name)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        env = dict(self._tensors)
        env[self._input] = x
        with torch.no_grad():
            for (name, fn, args, kwargs), frees in zip(self._steps, self._frees):
                env[name] = fn(*_bind(args, env), **{k: _bind(v, env) for k, v in kwargs.items()})
                for dead in frees:
                    del env[dead]
            return env[self._output]
