"""Writing a trained model as an archive (evo.sandbox.graph.archive's format): what submit() runs in the training
process.

    export_model(model, example) -> bytes    ExportError says what to change

- torch.export at the example's fixed shape, decomposed to ATen ops (so that any update of state shows as an
  output), then every node and tensor encoded as the archive format says
- the result is read back with read_archive before it is returned, so a model the scorer would refuse is refused
  here, in the child's own log, with the same reason
- nothing here is trusted: the scorer checks whatever bytes arrive, whoever wrote them
"""

from __future__ import annotations

import json
import math
import operator

import torch
from torch.export.graph_signature import InputKind, OutputKind, TensorArgument

from evo.errors import first_line
from evo.sandbox.graph.archive import (
    INT64,
    MAGIC,
    TENSOR_KINDS,
    WEIGHTS_MAGIC,
    ArchiveRefused,
    read_archive,
)
from evo.sandbox.graph.run import DTYPES, LAYOUTS, MEMORY_FORMATS


class ExportError(ValueError):
    """The model cannot be written as an archive; the message is one line that says what to change."""


def export_model(model: torch.nn.Module, example: torch.Tensor) -> bytes:
    """model (taking one tensor, returning one tensor) and an example input -> the archive's bytes.

    Exports with torch.export at the example's fixed shape, decomposes to ATen ops (which makes buffer updates
    show as outputs), and refuses with ExportError anything the scorer would refuse. The model is left in the
    training mode it had."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            program = torch.export.export(model, (example,))
        program = program.run_decompositions()
    except Exception as e:  # torch's own export errors run to many lines; the first says what went wrong
        raise ExportError(f"torch.export could not capture the model: {first_line(e, 300)}") from e
    finally:
        model.train(was_training)
    data = _write(program)
    try:
        read_archive(data)
    except ArchiveRefused as e:
        raise ExportError(f"the scorer would refuse this model: {e}") from None
    return data


def _write(program) -> bytes:
    signature = program.graph_signature
    _check_outputs(signature)
    nodes = list(program.graph.nodes)
    placeholders = [n for n in nodes if n.op == "placeholder"]
    if [n.name for n in placeholders] != [s.arg.name for s in signature.input_specs]:
        raise ExportError("the exported graph's inputs do not match its signature; export with a plain nn.Module")
    ops = {node: _op_name(node) for node in nodes if node.op == "call_function"}  # a HOP's name beats its get_attr
    inputs, tensors, chunks, offset = [], [], [], 0
    users = 0
    for spec in signature.input_specs:
        if spec.kind == InputKind.USER_INPUT:
            if not isinstance(spec.arg, TensorArgument):
                raise ExportError("the model's input must be a tensor (the token ids)")
            users += 1
            inputs.append({"name": spec.arg.name, "kind": "user_input"})
            continue
        if spec.kind not in TENSOR_KINDS:
            held = f" '{spec.target}'" if spec.target else ""
            raise ExportError(f"the exported graph has a {spec.kind.name.lower()} input{held}; only parameters, "
                              f"buffers and tensor constants can be exported (no script objects, no side effects)")
        value = _lifted_tensor(program, spec)
        raw = value.detach().contiguous().cpu().reshape(-1).view(torch.uint8).numpy()
        inputs.append({"name": spec.arg.name, "kind": TENSOR_KINDS[spec.kind], "tensor": len(tensors)})
        tensors.append({"name": spec.target, "dtype": str(value.dtype).removeprefix("torch."),
                        "shape": list(value.shape), "offset": offset, "nbytes": raw.nbytes})
        chunks.append(raw)
        offset += raw.nbytes
    if users != 1:
        raise ExportError(f"the model takes {users} inputs; it must take exactly one tensor (the token ids)")
    encoded, output = [], None
    for node in nodes:
        if node.op == "placeholder":
            continue
        if node.op == "output":
            output = node.args[0][0]
            continue
        if node.op == "get_attr":
            raise ExportError(f"node '{node.name}' reads attribute '{node.target}' (submodules of control flow or "
                              f"custom ops cannot be exported; write the forward with plain tensor ops)")
        if node.op != "call_function":
            raise ExportError(f"node '{node.name}' is a {node.op} node; only calls of aten ops can be exported")
        args = [_encode_value(a, node.name) for a in node.args]
        kwargs = {k: _encode_value(v, node.name) for k, v in node.kwargs.items()}
        encoded.append({"name": node.name, "op": ops[node], "args": args, "kwargs": kwargs})
    if not isinstance(output, torch.fx.Node):
        raise ExportError("the model must return one tensor (the logits)")
    header = json.dumps({"inputs": inputs, "tensors": tensors, "nodes": encoded, "output": output.name},
                        separators=(",", ":"), allow_nan=False).encode()
    return b"".join([MAGIC, len(header).to_bytes(8, "little"), header, *chunks])


def _check_outputs(signature) -> None:
    for spec in signature.output_specs:
        if spec.kind == OutputKind.BUFFER_MUTATION:
            raise ExportError(f"the model's forward updates buffer '{spec.target}' (a buffer mutation); a scored "
                              f"model must be a pure function of its input, so move the update out of forward()")
        if spec.kind == OutputKind.USER_INPUT_MUTATION:
            raise ExportError(f"the model's forward writes into its input '{spec.target}'; work on a copy instead")
        if spec.kind == OutputKind.PARAMETER_MUTATION:
            raise ExportError(f"the model's forward updates parameter '{spec.target}'; a scored model must be a "
                              f"pure function of its input, so move the update out of forward()")
        if spec.kind != OutputKind.USER_OUTPUT:
            raise ExportError(f"the exported graph has a {spec.kind.name.lower()} output; a scored model may only "
                              f"return its logits (no side effects in forward())")
    outputs = len(signature.output_specs)
    if outputs != 1:
        raise ExportError(f"the model returns {outputs} values; it must return exactly one tensor (the logits)")


def _lifted_tensor(program, spec) -> torch.Tensor:
    # Parameters and persistent buffers live in state_dict; non-persistent buffers and lifted constants in constants.
    in_state = spec.kind == InputKind.PARAMETER or (spec.kind == InputKind.BUFFER and spec.persistent)
    sources = (program.state_dict, program.constants) if in_state else (program.constants, program.state_dict)
    value = next((s[spec.target] for s in sources if spec.target in s), None)
    what = f"{TENSOR_KINDS[spec.kind]} '{spec.target}'"
    if not isinstance(value, torch.Tensor):
        raise ExportError(f"{what} is not a tensor ({type(value).__name__}); only tensors can be exported")
    if type(value) not in (torch.Tensor, torch.nn.Parameter) or value.layout != torch.strided:
        raise ExportError(f"{what} is a {type(value).__name__} with layout {value.layout}; only plain dense "
                          f"tensors can be exported")
    if value.is_meta:
        raise ExportError(f"{what} is on the meta device and has no data; materialise the model before submitting")
    if str(value.dtype).removeprefix("torch.") not in DTYPES:
        raise ExportError(f"{what} has dtype {value.dtype}; allowed dtypes are {', '.join(DTYPES)}")
    return value


def _op_name(node) -> str:
    """A call_function node's op as the archive names it, or ExportError for anything but aten ops and getitem."""
    target = node.target
    if target is operator.getitem:
        return "getitem"
    if isinstance(target, torch._ops.OpOverload) and target.namespace == "aten":
        return f"aten.{target._opname}.{target._overloadname}"
    shown = getattr(target, "__name__", type(target).__name__)
    if isinstance(target, torch._ops.OpOverload):
        shown = f"{target.namespace}::{target._opname}"
    raise ExportError(f"node '{node.name}' calls {shown}, which is not an aten op (higher-order ops such as "
                      f"torch.cond, custom ops and Python functions cannot be scored)")


def _encode_value(value, where: str):
    if isinstance(value, torch.fx.Node):
        return {"node": value.name}
    if isinstance(value, (torch.SymInt, torch.SymFloat, torch.SymBool)):
        raise ExportError(f"node '{where}' has a symbolic value ({value}): dynamic shapes are not supported, "
                          f"export with a fixed example shape")
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        if not INT64[0] <= value <= INT64[1]:
            raise ExportError(f"node '{where}' has the integer {value}, which does not fit in 64 bits")
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else {"float": repr(float(value))}
    if isinstance(value, (list, tuple)):
        return [_encode_value(v, where) for v in value]
    for key, cls, table in (("dtype", torch.dtype, DTYPES), ("layout", torch.layout, LAYOUTS),
                            ("memory_format", torch.memory_format, MEMORY_FORMATS)):
        if isinstance(value, cls):
            name = str(value).removeprefix("torch.")
            if name not in table:
                raise ExportError(f"node '{where}' uses {key} {value}; archives carry only {', '.join(table)}")
            return {key: name}
    if isinstance(value, torch.device):
        return {"device": str(value)}
    raise ExportError(f"node '{where}' has an argument of type {type(value).__name__}, which archives cannot carry")


def weights_snapshot(model: torch.nn.Module) -> bytes:
    """The model's parameters and buffers as they are now, in the weights format
    (evo.sandbox.graph.archive.read_weights): what submit() hands over first, at once, before the slower export."""
    tensors, chunks, offset = [], [], 0
    named = dict(model.named_parameters())
    named.update(model.named_buffers())
    for name, value in named.items():
        if str(value.dtype).removeprefix("torch.") not in DTYPES or value.layout != torch.strided or value.is_meta:
            continue  # export_model says what is wrong with it
        raw = value.detach().contiguous().cpu().reshape(-1).view(torch.uint8).numpy()
        tensors.append({"name": name, "dtype": str(value.dtype).removeprefix("torch."), "shape": list(value.shape),
                        "offset": offset, "nbytes": raw.nbytes})
        chunks.append(raw)
        offset += raw.nbytes
    header = json.dumps({"tensors": tensors}, separators=(",", ":")).encode()
    return b"".join([WEIGHTS_MAGIC, len(header).to_bytes(8, "little"), header, *chunks])
