"""evo.sandbox.graph (archive, ops, run): a model crosses to the scorer as a checked graph plus raw weights.

The seed model (tiny) and a few small modules go through export_model and back; every refusal is provoked either
through export_model or by hand-building or hand-editing archive bytes, since the scorer must refuse what a hostile
child could write, not only what export_model writes.
"""

import io
import json
import pickle
import weakref

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from evo.sandbox.child.graph_export import ExportError, export_model, weights_snapshot
from evo.sandbox.graph.archive import (
    MAGIC,
    WEIGHTS_MAGIC,
    ArchiveRefused,
    check_weights,
    read_archive,
    read_payload,
    read_weights,
)
from tests.support.asserts import one_line
from tests.support.genomes import tiny_source

# ---------------------------------------------------------------------------
# Archives by hand
# ---------------------------------------------------------------------------


def pack(header: dict, blob: bytes = b"") -> bytes:
    raw = json.dumps(header).encode()
    return MAGIC + len(raw).to_bytes(8, "little") + raw + blob


def unpack(data: bytes) -> tuple[dict, bytes]:
    size = int.from_bytes(data[len(MAGIC) : len(MAGIC) + 8], "little")
    start = len(MAGIC) + 8
    return json.loads(data[start : start + size]), data[start + size :]


def ref(name: str) -> dict:
    return {"node": name}


def node(name: str, op: str, *args, **kwargs) -> dict:
    return {"name": name, "op": op, "args": list(args), "kwargs": kwargs}


def build(nodes: list, output: str, weights: dict | None = None) -> bytes:
    """An archive with one user input "x", a parameter input "p_<name>" per weight, and the given nodes."""
    inputs, tensors, blobs, offset = [], [], [], 0
    for i, (name, t) in enumerate((weights or {}).items()):
        raw = t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        tensors.append({"name": name, "dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape),
                        "offset": offset, "nbytes": len(raw)})
        inputs.append({"name": f"p_{name}", "kind": "parameter", "tensor": i})
        blobs.append(raw)
        offset += len(raw)
    inputs.append({"name": "x", "kind": "user_input"})
    return pack({"inputs": inputs, "tensors": tensors, "nodes": nodes, "output": output}, b"".join(blobs))


def refusal(data: bytes) -> str:
    with pytest.raises(ArchiveRefused) as e:
        read_archive(data)
    return one_line(e)


def export_refusal(model: torch.nn.Module, example: torch.Tensor) -> str:
    with pytest.raises(ExportError) as e:
        export_model(model, example)
    return one_line(e)


SCALE = build([node("y", "aten.mul.Tensor", ref("x"), ref("p_w"))], "y", {"w": torch.tensor([2.0, 3.0])})

# ---------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def seed():
    """The tiny seed GPT with random (not zero) residual weights, an input, and its archive."""
    source = tiny_source()
    namespace = {"__name__": "seed_genome"}
    exec(compile(source[: source.index("torch.manual_seed(seed())")], "train.py", "exec"), namespace)
    torch.manual_seed(0)
    model = namespace["GPT"](256)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.1)
    x = torch.randint(0, 256, (2, 24))
    return model, x, export_model(model, x)


def test_seed_model_runs_from_its_archive_exactly_as_the_exported_program(seed):
    model, x, data = seed
    out = read_archive(data).callable("cpu")(x)
    reference = torch.export.export(model, (x,)).run_decompositions().module()(x)
    assert torch.equal(out, reference)
    with torch.no_grad():
        eager = model(x)
    assert out.shape == eager.shape and (out - eager).abs().max().item() <= 1e-5


def test_archive_counts_only_parameters_and_carries_non_persistent_buffers(seed):
    model, _, data = seed
    archive = read_archive(data)
    assert archive.num_params() == sum(p.numel() for p in model.parameters())
    kinds = {i.name: i.kind for i in archive.inputs}
    assert kinds["b_cos"] == "buffer" and list(kinds.values()).count("user_input") == 1


def test_archive_is_plain_json_and_raw_bytes(seed):
    data = seed[2]
    header, blob = unpack(data)
    assert data.startswith(MAGIC) and len(blob) == sum(t["nbytes"] for t in header["tensors"])
    assert {n["op"] for n in header["nodes"]} >= {"aten.mm.default", "aten.embedding.default"}
    embed = next(t for t in header["tensors"] if t["name"] == "embed.weight")
    raw = bytearray(blob[embed["offset"] : embed["offset"] + embed["nbytes"]])
    weights = torch.frombuffer(raw, dtype=torch.float32)
    assert torch.equal(weights.reshape(embed["shape"]), seed[0].embed.weight.detach())


def test_bf16_weights_constants_and_multi_output_ops_round_trip():
    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.randn(4, dtype=torch.bfloat16))

        def forward(self, x):
            a, b = x.split(2, dim=-1)
            top, where = x.max(dim=-1)
            y = (x.to(torch.bfloat16) * self.w).float() + torch.tensor([1.0, 2.0, 3.0, float("inf")])
            return y + torch.cat([b, a], -1) * top[:, None] + where[:, None]

    model, x = Model(), torch.randn(3, 4)
    archive = read_archive(export_model(model, x))
    assert archive.tensors[0].dtype == "bfloat16"
    assert torch.equal(archive.callable("cpu")(x), model(x))


def test_tensors_get_storage_of_their_own():
    f = read_archive(SCALE).callable("cpu")
    assert torch.equal(f(torch.ones(2)), torch.tensor([2.0, 3.0]))
    assert torch.equal(f(torch.ones(2)), torch.tensor([2.0, 3.0]))


def test_a_graph_traced_on_cuda_runs_on_the_scorers_device(seed):
    model, x, data = seed
    header, blob = unpack(data)
    text = json.dumps(header)
    assert '{"device": "cpu"}' in text
    moved = pack(json.loads(text.replace('{"device": "cpu"}', '{"device": "cuda:0"}')), blob)
    assert torch.equal(read_archive(moved).callable("cpu")(x), read_archive(data).callable("cpu")(x))
    full = build([node("y", "aten.full.default", [2], 1.5, device={"device": "cuda"})], "y")
    assert read_archive(full).callable("cpu")(torch.zeros(1)).device.type == "cpu"


def test_ops_that_name_no_device_allocate_on_the_scorers_device():
    full = build([node("y", "aten.full.default", [2], 1.5)], "y")
    assert read_archive(full).callable("meta")(torch.zeros(1, device="meta")).device.type == "meta"


def test_values_are_dropped_after_their_last_use():
    class Alive(TorchDispatchMode):
        """Counts, at every op, how many tensors made by earlier ops are still referenced."""

        def __init__(self):
            super().__init__()
            self.made, self.peak = [], 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            self.made.append(weakref.ref(out))
            self.peak = max(self.peak, sum(r() is not None for r in self.made))
            return out

    chain = [node("y0", "aten.relu.default", ref("x"))]
    chain += [node(f"y{i}", "aten.relu.default", ref(f"y{i - 1}")) for i in range(1, 10)]
    f, x = read_archive(build(chain, "y9")).callable("cpu"), torch.ones(3)
    with Alive() as alive:
        f(x)
    assert alive.peak == 2  # the op's input and its output, as in eager


def test_strings_that_look_like_code_are_only_strings():
    payload = "__import__('os').system('false')"
    data = build([node("y", "aten.div.Tensor_mode", ref("x"), 2.0, rounding_mode=payload)], "y")
    f = read_archive(data).callable("cpu")
    with pytest.raises(RuntimeError, match="rounding_mode"):
        f(torch.ones(2))


def test_attention_without_dropout_is_allowed():
    q = torch.randn(1, 2, 3, 4)
    data = build([node("a", "aten._scaled_dot_product_flash_attention_for_cpu.default", ref("x"), ref("x"), ref("x"),
                       0.0, True),
                  node("y", "getitem", ref("a"), 0)], "y")
    out = read_archive(data).callable("cpu")(q)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, q, q, is_causal=True))


# ---------------------------------------------------------------------------
# What export_model refuses
# ---------------------------------------------------------------------------


class CountsCalls(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(4))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    def forward(self, x):
        self.count += 1
        return x * self.w


class Branches(torch.nn.Module):
    def forward(self, x):
        return torch.cond(x.sum() > 0, lambda x: x * 2, lambda x: x - 1, (x,))


@torch.library.custom_op("evo_test::double", mutates_args=())
def double(x: torch.Tensor) -> torch.Tensor:
    return x * 2


@double.register_fake
def _(x):
    return torch.empty_like(x)


class CallsCustomOp(torch.nn.Module):
    def forward(self, x):
        return double(x) + 1


class Noisy(torch.nn.Module):
    def forward(self, x):
        return x + torch.rand_like(x)


class TwoOutputs(torch.nn.Module):
    def forward(self, x):
        return x, x + 1


def test_export_refuses_a_forward_that_updates_a_buffer():
    message = export_refusal(CountsCalls(), torch.randn(2, 4))
    assert "buffer 'count'" in message and "buffer mutation" in message


def test_export_refuses_higher_order_ops_and_custom_ops():
    assert "calls cond, which is not an aten op" in export_refusal(Branches(), torch.randn(3))
    assert "evo_test::double, which is not an aten op" in export_refusal(CallsCustomOp(), torch.randn(3))


def test_export_refuses_what_the_scorer_would_refuse():
    assert "op aten.rand_like.default is not allowed (random)" in export_refusal(Noisy(), torch.randn(3))
    assert "exactly one tensor" in export_refusal(TwoOutputs(), torch.randn(3))


def test_export_leaves_the_training_mode_as_it_was():
    model = torch.nn.Linear(2, 2).train()
    export_model(model, torch.randn(1, 2))
    assert model.training


# ---------------------------------------------------------------------------
# What read_archive refuses
# ---------------------------------------------------------------------------


def test_pickles_and_zips_are_not_archives():
    assert "looks like a pickle" in refusal(pickle.dumps({"w": [1.0]}))
    saved = io.BytesIO()
    torch.save({"w": torch.ones(2)}, saved)
    assert "looks like a zip" in refusal(saved.getvalue())
    assert refusal(b"EVOGRAPH\x02" + SCALE[9:]).startswith("not an evo graph archive")


def test_framing_must_be_exact():
    header, blob = unpack(SCALE)
    raw = json.dumps(header).encode()
    assert "runs past the end" in refusal(MAGIC + (len(raw) + 1).to_bytes(8, "little") + raw)
    assert "the header is" in refusal(MAGIC + (2**40).to_bytes(8, "little") + raw)
    assert "truncated" in refusal(MAGIC + b"\x01")
    assert "bytes after its last tensor" in refusal(SCALE + b"\x00")


@pytest.mark.parametrize("text, expected", [
    ('{"inputs": [], "inputs": []}', "appears twice"),
    ('{"inputs": NaN}', "not valid JSON"),
    ('[1, 2]', "the header must be an object"),
    ('{"inputs": [], "tensors": [], "nodes": [], "output": "x", "code": "1"}', "unknown key 'code'"),
])
def test_header_json_is_strict(text, expected):
    raw = text.encode()
    assert expected in refusal(MAGIC + len(raw).to_bytes(8, "little") + raw)


@pytest.mark.parametrize("op, reason", [
    ("aten.rand.default", "random"),
    ("aten.randn_like.default", "random"),
    ("aten.bernoulli.p", "random"),
    ("aten.native_dropout.default", "random"),
    ("aten.multinomial.default", "random"),
    ("aten.randperm.default", "random"),
    ("aten.normal.Tensor_float", "random"),
    ("aten.empty.memory_format", "uninitialised memory"),
    ("aten.empty_like.default", "uninitialised memory"),
    ("aten.empty_strided.default", "uninitialised memory"),
    ("aten.new_empty.default", "uninitialised memory"),
    ("aten.resize.default", "uninitialised memory"),
    ("aten.add_.Tensor", "in-place"),
    ("aten.relu_.default", "in-place"),
    ("aten.add.out", "out= variant"),
    ("aten.mm.dtype_out", "out= variant"),
    ("aten.from_file.default", "reads storage or files"),
    ("aten.set_.source_Tensor", "in-place"),
    ("aten._local_scalar_dense.default", "reads storage or files"),
    ("aten.nonzero.default", "data-dependent output shape"),
    ("aten._unsafe_index.Tensor", "skips bounds checks"),
    ("aten.frobnicate.default", "not on the allow-list"),
    ("aten.mm.no_such_overload", "no such overload"),
    ("aten.add.int", "not a tensor op"),
    ("aten.mul.left_t", "not a tensor op"),
    ("prims.add.default", "only aten ops are"),
    ("evo::x", "only aten ops are"),
    ("aten.__class__.__init__", "not on the allow-list"),
])
def test_ops_outside_the_allow_list_are_refused(op, reason):
    message = refusal(build([node("y", op, ref("x"))], "y"))
    assert message.startswith(f"op {op} is not allowed ({reason})"), message


def test_every_listed_op_is_a_pure_aten_op():
    from evo.sandbox.graph.ops import ALLOWED, ATTENTION, OpNotAllowed, resolve

    resolved = 0
    for packet in ALLOWED:
        for overload in getattr(torch.ops.aten, packet).overloads():
            try:
                op = resolve(f"aten.{packet}.{overload}")
            except OpNotAllowed:
                continue
            resolved += 1
            assert not op._schema.is_mutable and torch.Tag.out not in op.tags
            assert packet in ATTENTION or torch.Tag.nondeterministic_seeded not in op.tags
    assert resolved > 300


def test_attention_with_dropout_is_refused():
    data = build([node("a", "aten._scaled_dot_product_flash_attention_for_cpu.default", ref("x"), ref("x"), ref("x"),
                       0.1, True),
                  node("y", "getitem", ref("a"), 0)], "y")
    assert refusal(data).startswith("op aten._scaled_dot_product_flash_attention_for_cpu.default is not allowed "
                                    "(random: dropout_p is 0.1")
    data = build([node("y", "aten.scaled_dot_product_attention.default", ref("x"), ref("x"), ref("x"),
                       dropout_p={"float": "nan"})], "y")
    assert "(random: dropout_p" in refusal(data)


def test_symbolic_shapes_are_refused_not_evaluated():
    header, blob = unpack(SCALE)
    for size in ("s0", {"sym": "s0"}):
        header["tensors"][0]["shape"] = [size]
        message = refusal(pack(header, blob))
        assert message.startswith("tensor 'w' has a symbolic shape") and "symbolic shapes are not accepted" in message
    data = build([node("y", "aten.view.default", ref("x"), ["s0 * 2"])], "y")
    assert refusal(data).startswith("node 'y' argument 'size' has the string 's0 * 2' where an int belongs")


def test_references_must_point_back_to_defined_nodes():
    dangling = build([node("y", "aten.relu.default", ref("ghost"))], "y")
    assert refusal(dangling) == "node 'y' refers to an unknown node 'ghost'"
    forward = build([node("y", "aten.relu.default", ref("z")), node("z", "aten.relu.default", ref("x"))], "z")
    assert refusal(forward) == "node 'y' refers to node 'z' before it is defined"
    twice = build([node("y", "aten.relu.default", ref("x")), node("y", "aten.relu.default", ref("x"))], "y")
    assert refusal(twice) == "node 'y' is defined twice"
    assert refusal(build([], "nowhere")) == "output refers to an unknown node 'nowhere'"


def test_getitem_reads_only_tensor_outputs_of_multi_output_ops():
    single = build([node("a", "aten.relu.default", ref("x")), node("y", "getitem", ref("a"), 0)], "y")
    assert "not a multi-output op" in refusal(single)
    beyond = build([node("a", "aten.max.dim", ref("x"), 0), node("y", "getitem", ref("a"), 2)], "y")
    assert "has index" in refusal(beyond)
    whole = build([node("a", "aten.max.dim", ref("x"), 0), node("y", "aten.relu.default", ref("a"))], "y")
    assert "not a single tensor" in refusal(whole)


def test_arguments_are_checked_against_the_schema():
    assert "missing argument 'other'" in refusal(build([node("y", "aten.mul.Tensor", ref("x"))], "y"))
    assert "not an argument" in refusal(build([node("y", "aten.relu.default", ref("x"), bogus=1)], "y"))
    plain_device = build([node("y", "aten._to_copy.default", ref("x"), device="cuda")], "y")
    assert "argument 'device' must be a device" in refusal(plain_device)


def test_tensor_bytes_must_match_and_stay_inside_the_archive():
    header, blob = unpack(SCALE)

    def edited(**entry):
        h = json.loads(json.dumps(header))
        h["tensors"][0].update(entry)
        return refusal(pack(h, blob))

    assert edited(offset=4).startswith("tensor 'w' lies outside the archive")
    assert edited(nbytes=4).startswith("tensor 'w' says nbytes 4, but float32[2] takes 8")
    assert edited(dtype="complex64").startswith("tensor 'w' has dtype the string 'complex64', which is not allowed")
    assert edited(dtype="float8_e4m3fn").startswith("tensor 'w' has dtype")
    assert edited(shape=[-2]).startswith("tensor 'w' shape entry must be an int")


def test_overlapping_tensors_are_refused():
    data = build([node("y", "aten.mul.Tensor", ref("p_a"), ref("p_b"))], "y",
                 {"a": torch.ones(2), "b": torch.ones(2)})
    header, blob = unpack(data)
    header["tensors"][1]["offset"] = 4
    assert refusal(pack(header, blob[:12])).startswith("tensor 'b' overlaps tensor 'a'")


def test_exactly_one_user_input():
    header, blob = unpack(SCALE)
    header["inputs"].append({"name": "x2", "kind": "user_input"})
    assert refusal(pack(header, blob)) == "the archive has 2 user inputs; exactly one is accepted"


# ---------------------------------------------------------------------------
# The weights handed over at the budget's end
# ---------------------------------------------------------------------------

def test_the_graph_is_taken_only_with_the_weights_handed_over_before_it(seed):
    model, x, data = seed
    archive = read_archive(data)
    snapshot = weights_snapshot(model)
    check_weights(archive, read_weights(snapshot))  # the same model: accepted
    with torch.no_grad():
        trained_on = next(model.parameters())
        trained_on += 1e-3  # a step taken after the weights went out
    later = read_archive(export_model(model, x))
    with pytest.raises(ArchiveRefused) as e:
        check_weights(later, read_weights(snapshot))
    assert "handed over at the budget's end" in one_line(e)
    with torch.no_grad():
        trained_on -= 1e-3


def test_weights_files_are_checked_like_archives(seed):
    model, _, data = seed
    for bad in (b"", b"EVOWEIGHT\x01" + (10**9).to_bytes(8, "little"), pickle.dumps({"w": 1}), data):
        with pytest.raises(ArchiveRefused):
            read_weights(bad)


def _with_junk(snapshot: bytes, nbytes: int) -> bytes:
    """A weights file holding one more tensor than the model: junk riding along with the weights."""
    start = len(WEIGHTS_MAGIC) + 8
    size = int.from_bytes(snapshot[len(WEIGHTS_MAGIC):start], "little")
    header = json.loads(snapshot[start:start + size])
    blob = snapshot[start + size:]
    header["tensors"].append({"name": "junk", "dtype": "uint8", "shape": [nbytes], "offset": len(blob),
                              "nbytes": nbytes})
    raw = json.dumps(header).encode()
    return WEIGHTS_MAGIC + len(raw).to_bytes(8, "little") + raw + blob + bytes(nbytes)


def test_weights_that_no_graph_input_uses_are_refused(seed):
    model, x, _ = seed
    archive = read_archive(export_model(model, x))
    check_weights(archive, read_weights(weights_snapshot(model)))   # every tensor handed over is used
    with pytest.raises(ArchiveRefused, match="1 tensor .* that no input of the graph uses, such as 'junk'"):
        check_weights(archive, read_weights(_with_junk(weights_snapshot(model), 4096)))


def test_a_payload_is_read_only_when_its_size_is_what_its_header_declares(seed, tmp_path):
    model, _, data = seed
    path = tmp_path / "model.evograph"
    path.write_bytes(data)
    assert read_payload(path, MAGIC, "graph") == data
    snapshot = weights_snapshot(model)
    path.write_bytes(snapshot)
    assert read_payload(path, WEIGHTS_MAGIC, "weights") == snapshot
    with open(path, "ab") as f:          # 64 MiB past what the header declares: refused from the header alone
        f.truncate(len(snapshot) + 64 * 2**20)
    with pytest.raises(ArchiveRefused, match=f"hold {len(snapshot) + 64 * 2**20:,} bytes; their header declares "
                                             f"{len(snapshot):,}"):
        read_payload(path, WEIGHTS_MAGIC, "weights")
    path.write_bytes(b"PK\x03\x04" + bytes(2**20))   # not ours: cut, so its reader can say what it is
    assert len(read_payload(path, MAGIC, "graph")) <= 4096 + len(MAGIC) + 8
    with pytest.raises(ArchiveRefused, match="zip"):
        read_archive(read_payload(path, MAGIC, "graph"))


class BigConstant(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.table = torch.ones(32 * 1024)  # a plain attribute: export lifts it as a constant

    def forward(self, idx):
        return (self.table[:4] * idx[..., None].float())


def test_constants_outside_the_weights_are_limited():
    model = BigConstant()
    x = torch.zeros((2, 3), dtype=torch.long)
    with pytest.raises(ArchiveRefused, match="constants hold"):
        check_weights(read_archive(export_model(model, x)), read_weights(weights_snapshot(model)))
