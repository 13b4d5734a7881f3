"""A trained model as data: the archive the training child writes and the scorer reads.

- the child is untrusted: what it hands over is a functional ATen graph plus raw weights, in a format of our own
  that the scorer parses and checks itself
- no torch loader (torch.load, torch.export.load, pickle) touches the bytes, nothing in them is evaluated, and
  nothing runs until every part has been checked

    MAGIC (9 bytes) | header length (8 bytes, little-endian) | header (UTF-8 JSON) | tensor bytes

    header = {"inputs":  [{"name", "kind": "parameter"|"buffer"|"constant", "tensor": index}
                          | {"name", "kind": "user_input"}],                            in placeholder order
              "tensors": [{"name", "dtype", "shape", "offset", "nbytes"}],             offsets into the tensor bytes
              "nodes":   [{"name", "op": "aten.mm.default" | "getitem", "args": [...], "kwargs": {...}}],
              "output":  name of the node or input whose value the model returns}

Arguments: {"node": name} for a value, JSON for int, bool, null, str and finite floats, {"float": "inf"|"-inf"|"nan"},
lists, {"dtype": "float32"}, {"device": "cpu"}, {"layout": "strided"}, {"memory_format": "contiguous_format"}.
Tensors are contiguous, little-endian, back to back.

    export_model(model, example) -> bytes    in the training process (evo.sandbox.child.graph_export)
    read_archive(data) -> Archive            in the scorer; ArchiveRefused says what was refused
    Archive.callable(device) -> x -> logits  builds the tensors and the interpreter (evo.sandbox.graph.run)
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass

import torch
from torch.export.graph_signature import InputKind

from evo.errors import first_line
from evo.sandbox.graph.ops import OpNotAllowed, check_args, resolve, type_path
from evo.sandbox.graph.run import DTYPES, FLOATS, LAYOUTS, MEMORY_FORMATS, Node, Program

MAGIC = b"EVOGRAPH\x01"
MAX_HEADER_BYTES = 64 * 2**20
MAX_NODES = 200_000
MAX_RANK = 64
TENSOR_KINDS = {InputKind.PARAMETER: "parameter", InputKind.BUFFER: "buffer", InputKind.CONSTANT_TENSOR: "constant"}
INT64 = (-(2**63), 2**63 - 1)
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,199}")
_DEVICE = re.compile(r"[a-z_]{1,16}(:[0-9]{1,4})?")


class ArchiveRefused(Exception):
    """The scorer will not run these bytes; the message is one line naming what was refused."""


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: str
    shape: tuple[int, ...]
    offset: int
    nbytes: int


@dataclass(frozen=True)
class InputEntry:
    name: str
    kind: str
    tensor: int | None


@dataclass(frozen=True)
class Archive:
    """A checked archive. Nothing in it has run and no tensor has been built yet."""

    inputs: tuple[InputEntry, ...]
    tensors: tuple[TensorEntry, ...]
    nodes: tuple[Node, ...]
    output: str
    data: memoryview

    def num_params(self) -> int:
        """The number of elements in parameter tensors (buffers and constants not counted)."""
        return sum(math.prod(self.tensors[i.tensor].shape) for i in self.inputs if i.kind == "parameter")

    def callable(self, device) -> Program:
        """Builds every tensor on `device` (each from a private copy of its bytes, with storage of its own) and
        returns the model as a function x -> output that runs the graph there."""
        device = torch.device(device)
        built = [_build(t, self.data, device) for t in self.tensors]
        named = {i.name: built[i.tensor] for i in self.inputs if i.kind != "user_input"}
        user = next(i.name for i in self.inputs if i.kind == "user_input")
        return Program(list(self.nodes), named, user, self.output, device)


def _build(t: TensorEntry, data: memoryview, device: torch.device) -> torch.Tensor:
    dtype = DTYPES[t.dtype]
    if t.nbytes == 0:
        return torch.zeros(t.shape, dtype=dtype, device=device)
    raw = bytearray(data[t.offset : t.offset + t.nbytes])
    return torch.frombuffer(raw, dtype=dtype).reshape(t.shape).clone().to(device)


# ---------------------------------------------------------------------------
# Reading (the scorer)
# ---------------------------------------------------------------------------

def read_archive(data: bytes) -> Archive:
    """An archive's bytes -> a checked Archive; ArchiveRefused("<what> ...") at the first thing that is wrong.

    Checks the framing, the JSON's every type, the tensors' dtypes, shapes and byte ranges, the graph's order and
    references, each op against the allow-list (evo.sandbox.graph.ops) and each argument against the op's schema. Builds
    no tensor and runs nothing."""
    if not isinstance(data, bytes):
        data = bytes(data)  # a private copy: the caller cannot change what was checked
    if not data.startswith(MAGIC):
        raise ArchiveRefused(_not_ours(data))
    start = len(MAGIC) + 8
    if len(data) < start:
        raise ArchiveRefused("the archive is truncated (no header length)")
    size = int.from_bytes(data[len(MAGIC) : start], "little")
    if size > MAX_HEADER_BYTES:
        raise ArchiveRefused(f"the header is {size} bytes; at most {MAX_HEADER_BYTES} are accepted")
    if start + size > len(data):
        raise ArchiveRefused(f"the header length ({size}) runs past the end of the archive ({len(data)} bytes)")
    header = _parse_json(data[start : start + size])
    _keys(header, {"inputs", "tensors", "nodes", "output"}, "the header")
    blob = memoryview(data)[start + size :]
    tensors = _read_tensors(header["tensors"], len(blob))
    inputs = _read_inputs(header["inputs"], tensors)
    nodes, kinds = _read_nodes(header["nodes"], inputs)
    output = header["output"]
    if not isinstance(output, str):
        raise ArchiveRefused(f"output must be a node name; got {_describe(output)}")
    if kinds.get(output) != "tensor":
        raise ArchiveRefused(f"output refers to {_unknown_or_not_tensor(output, kinds)}")
    return Archive(tuple(inputs), tuple(tensors), tuple(nodes), output, blob)


WEIGHTS_MAGIC = b"EVOWEIGHT\x01"
MAX_CONSTANT_BYTES = 1 << 16  # lifted constants not among the handed-over weights (masks, small tables)


@dataclass(frozen=True)
class Weights:
    """The weights the child handed over at the budget's end: checked entries and their bytes."""

    tensors: dict[str, TensorEntry]
    data: memoryview

    def bytes_of(self, name: str) -> memoryview:
        t = self.tensors[name]
        return self.data[t.offset : t.offset + t.nbytes]


def read_weights(data: bytes) -> Weights:
    """The weights file (WEIGHTS_MAGIC, header length, {"tensors": [...]}, raw bytes) -> Weights, or
    ArchiveRefused. Same tensor rules as an archive's."""
    data = bytes(data)
    start = len(WEIGHTS_MAGIC) + 8
    if not data.startswith(WEIGHTS_MAGIC) or len(data) < start:
        raise ArchiveRefused("the weights handed over are not an evo weights file")
    size = int.from_bytes(data[len(WEIGHTS_MAGIC) : start], "little")
    if size > MAX_HEADER_BYTES or start + size > len(data):
        raise ArchiveRefused(f"the weights' header length ({size}) is out of range")
    header = _parse_json(data[start : start + size])
    _keys(header, {"tensors"}, "the weights' header")
    blob = memoryview(data)[start + size :]
    return Weights({t.name: t for t in _read_tensors(header["tensors"], len(blob))}, blob)


def check_weights(archive: Archive, weights: Weights) -> None:
    """Every parameter and buffer of the archive must be, byte for byte, the tensor of that name in the weights
    handed over at the budget's end (so training after that point changes nothing the scorer runs), and its other
    tensors (lifted constants) may hold at most MAX_CONSTANT_BYTES in all."""
    constants, used = 0, set()
    for entry in archive.inputs:
        if entry.kind == "user_input":
            continue
        t = archive.tensors[entry.tensor]
        if entry.kind == "constant":
            constants += t.nbytes
            continue
        used.add(t.name)
        w = weights.tensors.get(t.name)
        if w is None or (w.dtype, w.shape) != (t.dtype, t.shape) or \
                weights.bytes_of(t.name) != archive.data[t.offset : t.offset + t.nbytes]:
            raise ArchiveRefused(f"{entry.kind} {_q(t.name)} is not the tensor of that name handed over at the "
                                 f"budget's end")
    if constants > MAX_CONSTANT_BYTES:
        raise ArchiveRefused(f"the graph's constants hold {constants:,} bytes; at most {MAX_CONSTANT_BYTES:,} may "
                             f"lie outside the model's parameters and buffers")
    unused = sorted(set(weights.tensors) - used)
    if unused:
        held = sum(weights.tensors[name].nbytes for name in unused)
        raise ArchiveRefused(f"the weights handed over hold {len(unused)} tensor{'s' if len(unused) > 1 else ''} "
                             f"({held:,} bytes) that no input of the graph uses, such as {_q(unused[0])}")


def read_payload(path, magic: bytes, what: str) -> bytes:
    """A handed-over file (an archive or a weights file) as bytes for read_archive or read_weights, read only once
    its header says how large it must be: a file larger or smaller than its header and tensors declare is
    refused before the rest of it is read. A file whose framing or header is wrong is returned cut after what its
    reader needs to say so."""
    with open(path, "rb") as f:
        on_disk = os.fstat(f.fileno()).st_size
        start = len(magic) + 8
        head = f.read(start)
        if len(head) < start or not head.startswith(magic):
            return head + f.read(4096)
        size = int.from_bytes(head[len(magic):], "little")
        if size > MAX_HEADER_BYTES:
            return head
        header = f.read(size)
        declared = _declared_bytes(header)
        if declared is None:
            return head + header
        declared += start + size
        if on_disk != declared:
            raise ArchiveRefused(f"the {what} handed over hold {on_disk:,} bytes; their header declares {declared:,}")
        return head + header + f.read()


def _declared_bytes(header: bytes) -> int | None:
    """What the tensors of a header say they take, or None where the header is not what its reader accepts."""
    try:
        entries = _parse_json(header).get("tensors")
    except (ArchiveRefused, AttributeError):
        return None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        return None
    sizes = [e.get("nbytes") for e in entries]
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in sizes):
        return None
    return sum(sizes)


def _not_ours(data: bytes) -> str:
    if data[:2] == b"PK":
        return "not an evo graph archive (looks like a zip: torch.save and torch.export.save files are not accepted)"
    if data[:1] == b"\x80" or data[:1] in (b"(", b"]", b"}"):
        return "not an evo graph archive (looks like a pickle: pickled data is not accepted)"
    return f"not an evo graph archive (starts with {data[:9]!r}, not {MAGIC!r})"


def _parse_json(raw: bytes):
    def constant(name):
        raise ValueError(f"{name} is not JSON")

    def number(text):
        value = float(text)
        if not math.isfinite(value):
            raise ValueError(f"{text} overflows a float")
        return value

    def unique(pairs):
        out = {}
        for key, value in pairs:
            if key in out:
                raise ValueError(f"key {key!r} appears twice")
            out[key] = value
        return out

    try:
        return json.loads(raw.decode("utf-8"), parse_constant=constant, parse_float=number, object_pairs_hook=unique)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ArchiveRefused(f"the header is not valid JSON ({first_line(e, 120)})") from None


def _describe(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a bool"
    if isinstance(value, str):
        return f"the string {_q(value)}"
    if isinstance(value, dict):
        return f"an object with keys {_q(','.join(sorted(value)))}"
    return {int: "an int", float: "a float", list: "a list"}[type(value)]


def _keys(obj, expected: set[str], what: str) -> None:
    if not isinstance(obj, dict):
        raise ArchiveRefused(f"{what} must be an object; got {_describe(obj)}")
    if set(obj) != expected:
        extra, missing = sorted(set(obj) - expected), sorted(expected - set(obj))
        detail = f"unknown key {_q(extra[0])}" if extra else f"missing key '{missing[0]}'"
        raise ArchiveRefused(f"{what} has {detail}")


def _list(value, what: str, limit: int = MAX_NODES) -> list:
    if not isinstance(value, list):
        raise ArchiveRefused(f"{what} must be a list; got {_describe(value)}")
    if len(value) > limit:
        raise ArchiveRefused(f"{what} has {len(value)} entries; at most {limit} are accepted")
    return value


def _int(value, what: str, low: int = 0) -> int:
    if type(value) is not int or not low <= value <= INT64[1]:
        raise ArchiveRefused(f"{what} must be an int in [{low}, 2**63); got {_describe(value)}")
    return value


def _read_tensors(entries, available: int) -> list[TensorEntry]:
    tensors, names = [], set()
    for entry in _list(entries, "tensors"):
        _keys(entry, {"name", "dtype", "shape", "offset", "nbytes"}, "a tensor entry")
        name = entry["name"]
        if not isinstance(name, str) or not 0 < len(name) <= 1000 or not name.isprintable():
            raise ArchiveRefused(f"tensor name {_describe(name)} is not a printable string of 1 to 1000 characters")
        what = f"tensor {_q(name)}"
        if name in names:
            raise ArchiveRefused(f"{what} appears twice")
        names.add(name)
        dtype, shape = entry["dtype"], entry["shape"]
        if not isinstance(dtype, str) or dtype not in DTYPES:
            raise ArchiveRefused(f"{what} has dtype {_describe(dtype)}, which is not allowed ({', '.join(DTYPES)})")
        if not isinstance(shape, list) or len(shape) > MAX_RANK:
            raise ArchiveRefused(f"{what} shape must be a list of at most {MAX_RANK} ints; got {_describe(shape)}")
        for size in shape:
            if isinstance(size, (str, dict)):
                raise ArchiveRefused(f"{what} has a symbolic shape ({_describe(size)}): symbolic shapes are not "
                                     f"accepted")
            _int(size, f"{what} shape entry")
        offset, nbytes = _int(entry["offset"], f"{what} offset"), _int(entry["nbytes"], f"{what} nbytes")
        needed = math.prod(shape) * DTYPES[dtype].itemsize
        if nbytes != needed:
            raise ArchiveRefused(f"{what} says nbytes {nbytes}, but {dtype}{shape} takes {needed}")
        if offset + nbytes > available:
            raise ArchiveRefused(f"{what} lies outside the archive (bytes {offset} to {offset + nbytes} of "
                                 f"{available})")
        tensors.append(TensorEntry(name, dtype, tuple(shape), offset, nbytes))
    end, previous = 0, None
    for t in sorted((t for t in tensors if t.nbytes), key=lambda t: t.offset):
        if t.offset < end:
            raise ArchiveRefused(f"tensor {_q(t.name)} overlaps tensor {_q(previous.name)} (bytes {t.offset} to "
                                 f"{end})")
        if t.offset > end:
            raise ArchiveRefused(f"tensor {_q(t.name)} starts at byte {t.offset}, leaving bytes {end} to "
                                 f"{t.offset} unaccounted for")
        end, previous = t.offset + t.nbytes, t
    if end != available:
        raise ArchiveRefused(f"the archive has {available - end} bytes after its last tensor")
    return tensors


def _read_inputs(entries, tensors: list[TensorEntry]) -> list[InputEntry]:
    inputs, owner = [], {}
    for entry in _list(entries, "inputs"):
        kind = entry.get("kind") if isinstance(entry, dict) else None
        if kind not in ("parameter", "buffer", "constant", "user_input"):
            raise ArchiveRefused(f"input kind {_describe(kind)} is not one of parameter, buffer, constant, user_input")
        _keys(entry, {"name", "kind"} | ({"tensor"} if kind != "user_input" else set()), f"a {kind} input")
        name = _name(entry["name"], "input")
        index = None
        if kind != "user_input":
            index = _int(entry["tensor"], f"input '{name}' tensor index")
            if index >= len(tensors):
                raise ArchiveRefused(f"input '{name}' refers to tensor {index}, but there are {len(tensors)}")
            if index in owner:
                raise ArchiveRefused(f"tensor {_q(tensors[index].name)} is used by two inputs "
                                     f"('{owner[index]}' and '{name}')")
            owner[index] = name
        inputs.append(InputEntry(name, kind, index))
    unused = [t.name for i, t in enumerate(tensors) if i not in owner]
    if unused:
        raise ArchiveRefused(f"tensor {_q(unused[0])} belongs to no input")
    users = sum(i.kind == "user_input" for i in inputs)
    if users != 1:
        raise ArchiveRefused(f"the archive has {users} user inputs; exactly one is accepted")
    return inputs


def _name(value, what: str) -> str:
    if not isinstance(value, str) or not _IDENTIFIER.fullmatch(value):
        raise ArchiveRefused(f"{what} name {_describe(value)} is not an identifier of at most 200 characters")
    return value


def _q(text: str) -> str:
    """A name quoted for a one-line message: repr escapes newlines and quotes; very long names are cut."""
    quoted = repr(text)
    return quoted if len(quoted) <= 80 else quoted[:76] + "...'"


def _unknown_or_not_tensor(name: str, kinds: dict) -> str:
    if name not in kinds:
        return f"an unknown node {_q(name)}"
    return f"'{name}', which is not a single tensor"


def _read_nodes(entries, inputs: list[InputEntry]) -> tuple[list[Node], dict]:
    """The nodes, checked in order, and each defined name's kind: "tensor", "none", or a tuple of the kinds of a
    multi-output op's outputs ("list" for Tensor[] returns, read only through getitem)."""
    entries = _list(entries, "nodes")
    kinds: dict = {}
    for i in inputs:
        if i.name in kinds:
            raise ArchiveRefused(f"input '{i.name}' is defined twice")
        kinds[i.name] = "tensor"
    declared = set(kinds)
    for entry in entries:
        _keys(entry, {"name", "op", "args", "kwargs"}, "a node")
        name = _name(entry["name"], "node")
        if name in declared:
            raise ArchiveRefused(f"node '{name}' is defined twice")
        declared.add(name)
    nodes = []
    for entry in entries:
        name, args, kwargs = entry["name"], _list(entry["args"], f"node '{entry['name']}' args", 64), entry["kwargs"]
        if not isinstance(kwargs, dict):
            raise ArchiveRefused(f"node '{name}' kwargs must be an object; got {_describe(kwargs)}")
        where = (name, declared, kinds)
        if entry["op"] == "getitem":
            kinds[name] = _check_getitem(name, args, kwargs, where)
            nodes.append(Node(name, None, args, kwargs))
            continue
        try:
            op = resolve(entry["op"])
            _check_call(op, args, kwargs, where)
            check_args(op, args, kwargs)
        except OpNotAllowed as e:
            raise ArchiveRefused(f"{e}, in node '{name}'") from None
        returns = [type_path(r.real_type) for r in op._schema.returns]
        if not returns:
            kinds[name] = "none"
        elif returns == [("TensorType",)]:
            kinds[name] = "tensor"
        elif returns == [("ListType", "TensorType")]:
            kinds[name] = "list"
        else:
            kinds[name] = tuple("tensor" if r[-1] == "TensorType" else "other" for r in returns)
        nodes.append(Node(name, op, args, kwargs))
    return nodes, kinds


def _check_getitem(name: str, args: list, kwargs: dict, where) -> str:
    if kwargs or len(args) != 2 or not isinstance(args[0], dict) or set(args[0]) != {"node"}:
        raise ArchiveRefused(f"node '{name}' (getitem) must have args [{{\"node\": source}}, index] and no kwargs")
    source, index = args[0]["node"], args[1]
    _check_ref(source, where, any_kind=True)
    kind = where[2][source]
    if kind in ("tensor", "none"):
        raise ArchiveRefused(f"node '{name}' (getitem) reads from '{source}', which is not a multi-output op")
    if type(index) is not int or index < 0 or (kind != "list" and index >= len(kind)):
        raise ArchiveRefused(f"node '{name}' (getitem) has index {_describe(index)}; '{source}' has "
                             f"{'a list of' if kind == 'list' else len(kind)} outputs")
    if kind != "list" and kind[index] != "tensor":
        raise ArchiveRefused(f"node '{name}' (getitem) reads output {index} of '{source}', which is not a tensor")
    return "tensor"


def _check_ref(target, where, any_kind: bool = False) -> None:
    name, declared, kinds = where
    if not isinstance(target, str):
        raise ArchiveRefused(f"node '{name}' has a node reference that is {_describe(target)}, not a name")
    if target not in kinds:
        if target in declared:
            raise ArchiveRefused(f"node '{name}' refers to node '{target}' before it is defined")
        raise ArchiveRefused(f"node '{name}' refers to {_unknown_or_not_tensor(target, kinds)}")
    if not any_kind and kinds[target] != "tensor":
        raise ArchiveRefused(f"node '{name}' uses '{target}' as a tensor, but it is not a single tensor")


def _check_call(op, args: list, kwargs: dict, where) -> None:
    """Every argument against the op's schema: count, names, and each value's type."""
    name = where[0]
    schema = op._schema.arguments
    positional = [a for a in schema if not a.kwarg_only]
    if len(args) > len(positional):
        raise ArchiveRefused(f"node '{name}' passes {len(args)} positional args; {op} takes {len(positional)}")
    by_name = {a.name: a for a in schema}
    for key in kwargs:
        if key not in by_name:
            raise ArchiveRefused(f"node '{name}' passes {_describe(key)}, which is not an argument of {op}")
        if any(a.name == key for a in positional[: len(args)]):
            raise ArchiveRefused(f"node '{name}' passes argument '{key}' twice")
    for i, arg in enumerate(schema):
        given = i < len(args) and not arg.kwarg_only
        if not given and arg.name not in kwargs:
            if not arg.has_default_value():
                raise ArchiveRefused(f"node '{name}' is missing argument '{arg.name}' of {op}")
            continue
        value = args[i] if given else kwargs[arg.name]
        _check_value(value, type_path(arg.real_type), (*where, arg.name))


_TAGGED = {
    "ScalarTypeType": ("dtype", DTYPES.__contains__), "LayoutType": ("layout", LAYOUTS.__contains__),
    "MemoryFormatType": ("memory_format", MEMORY_FORMATS.__contains__),
    "DeviceObjType": ("device", lambda s: bool(_DEVICE.fullmatch(s))),
}


def _check_value(value, path: tuple, where) -> None:
    name, _, _, arg = where
    kind = path[0]
    if kind == "OptionalType":
        if value is not None:
            _check_value(value, path[1:], where)
        return
    if kind == "ListType":
        if isinstance(value, list):
            for v in value:
                _check_value(v, path[1:], where)
            return
        if path[1:] in (("IntType",), ("SymIntType",)) and type(value) is int:
            return  # int[N] arguments also take one int for every dimension
        raise ArchiveRefused(f"node '{name}' argument '{arg}' must be a list; got {_describe(value)}")
    if kind == "TensorType":
        if isinstance(value, dict) and set(value) == {"node"}:
            _check_ref(value["node"], where[:3])
            return
        if not (type(value) in (int, float, bool) or _is_float(value)):
            raise ArchiveRefused(f"node '{name}' argument '{arg}' must be a node reference or a number; got "
                                 f"{_describe(value)}")
        kind = "NumberType"  # FX passes Python scalars where a Tensor goes (x / 15.0 is div.Tensor(x, 15.0))
    if kind in ("IntType", "SymIntType"):
        if isinstance(value, (str, dict)):
            raise ArchiveRefused(f"node '{name}' argument '{arg}' has {_describe(value)} where an int belongs: "
                                 f"symbolic shapes are not accepted")
        _int(value, f"node '{name}' argument '{arg}'", INT64[0])
        return
    if kind in _TAGGED:
        key, allowed = _TAGGED[kind]
        tagged = isinstance(value, dict) and set(value) == {key} and isinstance(value[key], str)
        if not (tagged and allowed(value[key])):
            raise ArchiveRefused(f"node '{name}' argument '{arg}' must be a {key} like {{\"{key}\": ...}} with an "
                                 f"accepted value; got {_describe(value)}")
        return
    ok = {
        "BoolType": type(value) is bool,
        "StringType": isinstance(value, str),
        "FloatType": type(value) in (int, float) or _is_float(value),
        "NumberType": type(value) in (int, float, bool) or _is_float(value),
    }.get(kind, False)
    if type(value) is int and not INT64[0] <= value <= INT64[1]:
        ok = False
    if not ok:
        raise ArchiveRefused(f"node '{name}' argument '{arg}' must be {kind.removesuffix('Type').lower()}; got "
                             f"{_describe(value)}")


def _is_float(value) -> bool:
    return isinstance(value, dict) and set(value) == {"float"} and value["float"] in FLOATS
