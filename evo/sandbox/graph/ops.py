"""Which ATen ops a scored graph may call, as data, and the check that applies it.

The rule is purity: the scored function depends only on its parameters and its input tokens. So an op is allowed
only if it is a plain tensor function: no state (nothing mutated in place, no out= buffers), no randomness, no files
or storages, no uninitialised memory, no output whose shape depends on the data, nothing outside the `aten`
namespace. ALLOWED lists op packets (`aten.<packet>.<overload>`) by hand; every overload of an allowed packet must
still pass the checks on its schema and tags (`.out` overloads and random overloads are refused even when the
packet is listed). The scaled-dot-product attention ops are tagged random because of their dropout; they are
allowed only when the node's dropout_p is 0.

    resolve(name) -> OpOverload          "aten.mm.default" -> torch.ops.aten.mm.default, or OpNotAllowed
    check_args(op, args, kwargs) -> None  per-node conditions (SDPA dropout_p == 0), or OpNotAllowed
    type_path(jit_type) -> tuple          a schema type as a path of kinds: ("OptionalType", "ListType", "IntType")

Names are looked up with getattr(torch.ops.aten, packet) only after the packet passed the allow-list, so an
archive can never make us touch an attribute we did not list.
"""

from __future__ import annotations

import re

import torch

ARITHMETIC = {
    "abs", "add", "addcdiv", "addcmul", "atan2", "bitwise_and", "bitwise_left_shift", "bitwise_not", "bitwise_or",
    "bitwise_right_shift", "bitwise_xor", "ceil", "clamp", "clamp_max", "clamp_min", "clip", "copysign", "div",
    "floor", "floor_divide", "fmax", "fmin", "fmod", "frac", "hypot", "lerp", "logaddexp", "logaddexp2", "maximum",
    "minimum", "mul", "nan_to_num", "neg", "pow", "reciprocal", "remainder", "round", "rsub", "sgn", "sign",
    "signbit", "square", "sub", "true_divide", "trunc", "xlogy",
}
ELEMENTWISE = {
    "acos", "acosh", "asin", "asinh", "atan", "atanh", "cos", "cosh", "digamma", "erf", "erfc", "erfinv", "exp",
    "exp2", "expm1", "lgamma", "log", "log10", "log1p", "log2", "logit", "rsqrt", "sigmoid", "sin", "sinh", "sqrt",
    "tan", "tanh",
}
COMPARISON = {
    "eq", "ge", "gt", "isclose", "isfinite", "isinf", "isnan", "le", "logical_and", "logical_not", "logical_or",
    "logical_xor", "lt", "ne", "where",
}
REDUCTION = {
    "all", "amax", "amin", "aminmax", "any", "argmax", "argmin", "cummax", "cummin", "cumprod", "cumsum",
    "linalg_vector_norm", "logcumsumexp", "logsumexp", "max", "mean", "min", "norm", "prod", "std", "std_mean",
    "sum", "var", "var_mean",
}
SHAPE = {
    "_unsafe_view", "alias", "cat", "chunk", "constant_pad_nd", "contiguous", "diag_embed", "diagonal", "expand",
    "expand_as", "flatten", "flip", "movedim", "narrow", "pad", "permute", "repeat", "reshape", "roll", "select",
    "slice", "split", "split_with_sizes", "squeeze", "stack", "t", "tile", "transpose", "tril", "triu", "unbind",
    "unflatten", "unfold", "unsqueeze", "view", "view_as",
}
INDEXING = {
    "copy", "embedding", "gather", "index", "index_add", "index_copy", "index_fill", "index_put", "index_select",
    "masked_fill", "scatter", "scatter_add", "scatter_reduce", "select_scatter", "slice_scatter", "take_along_dim",
}
MATMUL = {"addmm", "addmv", "baddbmm", "bmm", "dot", "einsum", "linear", "matmul", "mm", "mv", "outer"}
ACTIVATION = {
    "celu", "elu", "gelu", "glu", "hardsigmoid", "hardswish", "hardtanh", "leaky_relu", "log_sigmoid_forward",
    "mish", "relu", "relu6", "selu", "silu", "softplus", "threshold",
}
NORMALISATION = {
    "_fused_rms_norm", "_log_softmax", "_native_batch_norm_legit_no_training", "_safe_softmax", "_softmax",
    "group_norm", "layer_norm", "log_softmax", "native_group_norm", "native_layer_norm", "rms_norm", "softmax",
}
CREATION = {
    "arange", "full", "full_like", "lift_fresh_copy", "linspace", "new_full", "new_ones", "new_zeros", "ones",
    "ones_like", "scalar_tensor", "zeros", "zeros_like",
}
CAST = {"_to_copy", "clone", "detach", "to", "type_as"}
ORDERING = {"argsort", "kthvalue", "sort", "topk"}
CONVOLUTION = {
    "_adaptive_avg_pool2d", "avg_pool2d", "convolution", "max_pool2d_with_indices", "upsample_nearest2d",
}
ATTENTION = {
    "_scaled_dot_product_attention_math", "_scaled_dot_product_cudnn_attention",
    "_scaled_dot_product_efficient_attention", "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_flash_attention_for_cpu", "scaled_dot_product_attention",
}
ASSERTION = {"_assert_async", "_assert_tensor_metadata"}

ALLOWED = frozenset(
    ARITHMETIC | ELEMENTWISE | COMPARISON | REDUCTION | SHAPE | INDEXING | MATMUL | ACTIVATION | NORMALISATION
    | CREATION | CAST | ORDERING | CONVOLUTION | ATTENTION | ASSERTION
)

# Refused packets with a reason more useful than "not on the allow-list". Not needed for safety (the allow-list
# alone decides); they make the message say why.
RANDOM = {
    "alpha_dropout", "bernoulli", "cauchy", "dropout", "exponential", "feature_alpha_dropout", "feature_dropout",
    "geometric", "log_normal", "multinomial", "native_dropout", "normal", "poisson", "rand", "rand_like", "randint",
    "randint_like", "randn", "randn_like", "random", "randperm", "rrelu", "uniform",
}
UNINITIALISED = {
    "_resize_output", "empty", "empty_like", "empty_permuted", "empty_strided", "new_empty", "new_empty_strided",
    "resize", "resize_as",
}
STORAGE = {"_local_scalar_dense", "from_file", "item", "set", "source_", "storage_offset"}
DATA_DEPENDENT = {"masked_select", "nonzero", "nonzero_static", "repeat_interleave", "unique", "_unique2"}
UNCHECKED = {"_unsafe_index", "_unsafe_index_put", "_unsafe_masked_index", "as_strided"}

# Schema types an archive can carry (after any Optional/List wrappers), and the returns a node may have. The Python
# scalar overloads (aten.add.int, aten.mul.left_t, ...) fail these, which keeps list arithmetic and complex numbers
# out of graphs.
CARRIED = {
    "BoolType", "DeviceObjType", "FloatType", "IntType", "LayoutType", "MemoryFormatType", "NumberType",
    "ScalarTypeType", "StringType", "SymIntType", "TensorType",
}
TENSOR_RETURNS = {("TensorType",), ("OptionalType", "TensorType"), ("ListType", "TensorType")}

_NAME = re.compile(r"aten\.([A-Za-z_][A-Za-z0-9_]*)\.([A-Za-z_][A-Za-z0-9_]*)")


class OpNotAllowed(ValueError):
    """An op name or call that a scored graph may not contain; the message is one line starting with the op."""


def show(text: str, limit: int = 80) -> str:
    """A name as it goes into a one-line message: plain names as they are, anything odd quoted and cut short."""
    if re.fullmatch(r"[A-Za-z0-9_.:]{1,120}", text):
        return text
    quoted = repr(text)
    return quoted if len(quoted) <= limit else quoted[: limit - 4] + "...'"


def type_path(jit_type) -> tuple[str, ...]:
    """A schema argument's real type as the kinds from outside in: Optional[List[SymInt]] ->
    ("OptionalType", "ListType", "SymIntType")."""
    path = [jit_type.kind()]
    while path[-1] in ("OptionalType", "ListType") and len(path) < 8:
        jit_type = jit_type.getElementType()
        path.append(jit_type.kind())
    return tuple(path)


def _refused_packet_reason(packet: str) -> str:
    if packet in RANDOM:
        return "random"
    if packet in UNINITIALISED:
        return "uninitialised memory"
    if packet in STORAGE:
        return "reads storage or files"
    if packet in DATA_DEPENDENT:
        return "data-dependent output shape"
    if packet in UNCHECKED:
        return "skips bounds checks"
    if packet.endswith("_") and not packet.endswith("__"):
        return "in-place"
    return "not on the allow-list"


def resolve(name: str) -> torch._ops.OpOverload:
    """An archive's op name ("aten.mm.default") -> the OpOverload, after every check that depends on the op alone.

    Raises OpNotAllowed("op <name> is not allowed (<why>)") for anything outside the allow-list, any out= or
    mutating overload, and any random or data-dependent overload."""
    if not isinstance(name, str):
        raise OpNotAllowed(f"op name must be a string; got {type(name).__name__}")
    if not name.startswith("aten."):
        raise OpNotAllowed(f"op {show(name)} is not allowed (only aten ops are)")
    match = _NAME.fullmatch(name)
    if match is None:
        raise OpNotAllowed(f"op {show(name)} is not allowed (not of the form aten.<op>.<overload>)")
    packet_name, overload_name = match.groups()
    if packet_name not in ALLOWED:
        raise OpNotAllowed(f"op {name} is not allowed ({_refused_packet_reason(packet_name)})")
    if overload_name == "out" or overload_name.endswith("_out"):
        raise OpNotAllowed(f"op {name} is not allowed (out= variant)")
    packet = getattr(torch.ops.aten, packet_name)
    if overload_name not in packet.overloads():
        raise OpNotAllowed(f"op {name} is not allowed (no such overload)")
    op = getattr(packet, overload_name)
    if op.namespace != "aten":
        raise OpNotAllowed(f"op {name} is not allowed (only aten ops are)")
    if torch.Tag.out in op.tags:
        raise OpNotAllowed(f"op {name} is not allowed (out= variant)")
    if op._schema.is_mutable:
        raise OpNotAllowed(f"op {name} is not allowed (mutates its arguments)")
    if torch.Tag.nondeterministic_seeded in op.tags and packet_name not in ATTENTION:
        raise OpNotAllowed(f"op {name} is not allowed (random)")
    # aten.index.Tensor carries the tag for boolean-mask indexing; its shape still follows from the tensors given
    dynamic = torch.Tag.dynamic_output_shape in op.tags and packet_name != "index"
    if dynamic or torch.Tag.data_dependent_output in op.tags:
        raise OpNotAllowed(f"op {name} is not allowed (data-dependent output shape)")
    if packet_name in ATTENTION and overload_name != "default":
        raise OpNotAllowed(f"op {name} is not allowed (not on the allow-list)")
    for arg in op._schema.arguments:
        if type_path(arg.real_type)[-1] not in CARRIED:
            raise OpNotAllowed(f"op {name} is not allowed (not a tensor op)")
    for ret in op._schema.returns:
        kinds = type_path(ret.real_type)
        # flash and cudnn attention also return their sequence lengths as SymInts; nothing may read them
        if kinds not in TENSOR_RETURNS and not (packet_name in ATTENTION and kinds == ("SymIntType",)):
            raise OpNotAllowed(f"op {name} is not allowed (not a tensor op)")
    return op


def argument(op: torch._ops.OpOverload, args: list, kwargs: dict, name: str):
    """The value the call passes for the schema argument `name`: positional, keyword, or the schema default."""
    for i, arg in enumerate(op._schema.arguments):
        if arg.name != name:
            continue
        if name in kwargs:
            return kwargs[name]
        if i < len(args) and not arg.kwarg_only:
            return args[i]
        return arg.default_value if arg.has_default_value() else None
    raise KeyError(name)


def check_args(op: torch._ops.OpOverload, args: list, kwargs: dict) -> None:
    """Conditions on one call's arguments (plain Python values: numbers as numbers). Today: attention is allowed
    only without dropout, because dropout draws random numbers."""
    if op._opname in ATTENTION:
        p = argument(op, args, kwargs, "dropout_p")
        if type(p) not in (int, float) or p != 0:
            raise OpNotAllowed(f"op {op} is not allowed (random: dropout_p is {p!r}, must be 0)")
