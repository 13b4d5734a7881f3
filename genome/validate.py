"""Validation of a child before it is trained: does it keep the task contract?

A valid child parses; imports from `prepare` only the harness API (the names in prepare.py's `__all__`, read by
genome.harness_api: HARNESS_API by default, or the names a caller passes); calls seed(), train_batches() and
submit(); and leaves the harness and the metric alone. It is `rejected`, with a reason naming the line, when it:

- imports anything else from prepare (`active_dataset`, `evaluate_program`, `_current`, ...), or uses it through
  `prepare.<name>` or getattr, or rebinds a harness name (`seed = lambda: 0`);
- assigns to, deletes, setattr()s or delattr()s an attribute of an imported module or object
  (`prepare.x = ...`, `F.cross_entropy = ...`, `builtins.print = ...`, `sys.modules[...] = ...`, `os.environ[...]`),
  except the torch backend switches (`torch.backends.*`, `torch._inductor.config.*`, `torch._dynamo.config.*`),
  which only tune kernels and cannot reach the evaluation (a fresh process);
- writes the environment (`os.environ.update`, `os.putenv`, ...);
- seeds a random generator with anything but the harness seed (`torch.manual_seed(1234)`, `random.seed()`,
  `np.random.default_rng(0)`): a seed must be `seed()` or a name assigned from an expression that calls it;
- reads the held-out splits or the cache: string literals naming `val.bin`, `test.bin`, `train.bin`, `token_bytes`,
  `active.json`, `.cache/evo` or an `EVO_` variable; or reads files at all (`open` for reading, `np.fromfile`,
  `np.load`, `np.memmap`, `torch.load`, `pickle.load`, `Path.read_text`): its data comes from train_batches();
- calls exec(), eval(), compile(), __import__() or importlib: code this check cannot read.

What it cannot catch (it reads the syntax tree; it is a first line, not the defence): aliasing beyond plain
`m = module` assignments, attribute names built at run time (`getattr(m, "a" + "b")`), patching through objects
reached by calls (`type(x).__add__ = ...` on a module's class), seeds laundered through arithmetic or function
parameters, and anything a C extension does. The defence is the harness: the training process never has the
validation split, the metric is computed from logits in a fresh process that runs no child code, and a causality
check refuses models that look ahead.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass

from genome.harness_api import HARNESS_API
from genome.syntax import parse

HARNESS_MODULE = "prepare"
REQUIRED_CALLS = ("seed", "train_batches", "submit")
FORBIDDEN_TEXT = ("val.bin", "test.bin", "train.bin", "token_bytes", "active.json", ".cache/evo", "EVO_")
ALLOWED_PATCH_PREFIXES = ("torch.backends.", "torch._inductor.config.", "torch._dynamo.config.")
SEED_METHODS = frozenset({"manual_seed", "manual_seed_all", "seed", "set_seed", "seed_everything"})
RNG_CONSTRUCTORS = frozenset({"random.Random", "random.SystemRandom", "numpy.random.default_rng",
                              "numpy.random.RandomState", "numpy.random.seed", "random.seed"})
FILE_READERS = frozenset({"numpy.fromfile", "numpy.memmap", "numpy.load", "numpy.loadtxt", "numpy.genfromtxt",
                          "torch.load", "torch.from_file", "pickle.load", "os.open", "io.open", "codecs.open"})
ENV_WRITERS = frozenset({"os.putenv", "os.unsetenv"})
ENV_METHODS = frozenset({"update", "setdefault", "pop", "popitem", "clear", "__setitem__", "__delitem__"})
OPAQUE_CALLS = frozenset({"exec", "eval", "compile", "__import__"})


@dataclass(frozen=True)
class Validation:
    """The verdict on a child: status "ok", or "rejected" with the reason (naming the line where there is one)."""

    status: str
    reason: str = ""
    line: int | None = None

    def __post_init__(self):
        if self.status not in ("ok", "rejected"):
            raise ValueError(f"a validation's status is 'ok' or 'rejected'; got {self.status!r}")
        if self.status == "rejected" and not self.reason:
            raise ValueError("a rejection needs a reason")

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def _docstrings(tree: ast.Module) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


class _Checker:
    """One pass over a syntax tree, collecting (line, message) problems."""

    def __init__(self, tree: ast.Module, api: frozenset[str]):
        self.tree = tree
        self.api = api
        self.problems: list[tuple[int, str]] = []
        self.imported: dict[str, str] = {"__builtins__": "builtins"}  # local name -> dotted path it stands for
        self.called: set[str] = set()
        self.seeded_names: set[str] = set()
        self.harness_aliases: set[str] = set()

    def problem(self, node: ast.AST | None, message: str) -> None:
        self.problems.append((getattr(node, "lineno", 0) or 0, message))

    # --- names -------------------------------------------------------------------------------------------------

    def path(self, node: ast.AST) -> str | None:
        """The dotted path an expression names when it is rooted at an imported name (`F.relu` ->
        "torch.nn.functional.relu"); subscripts show as "[]"."""
        parts = []
        while True:
            if isinstance(node, ast.Attribute):
                parts.append(node.attr)
                node = node.value
            elif isinstance(node, ast.Subscript):
                parts.append("[]")
                node = node.value
            else:
                break
        if isinstance(node, ast.Name) and node.id in self.imported:
            return ".".join([self.imported[node.id], *reversed(parts)])
        return None

    def harness_name(self, func: ast.AST) -> str | None:
        """The harness API name a call's function refers to, if it refers to one."""
        path = self.path(func)
        if path and path.startswith(HARNESS_MODULE + ".") and path.count(".") == 1:
            return path.split(".", 1)[1]
        return None

    def collect_imports(self) -> None:
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.asname:
                        self.imported[a.asname] = a.name
                    else:
                        root = a.name.split(".")[0]
                        self.imported[root] = root
            elif isinstance(node, ast.ImportFrom):
                module = "." * node.level + (node.module or "")
                for a in node.names:
                    if module == HARNESS_MODULE and (a.name == "*" or a.name not in self.api):
                        what = "everything (*)" if a.name == "*" else a.name
                        self.problem(node, f"imports {what} from prepare; only the harness API may be used "
                                           f"({', '.join(sorted(self.api))})")
                    if a.name != "*":
                        self.imported[a.asname or a.name] = f"{module}.{a.name}"
        self.harness_aliases = {n for n, p in self.imported.items() if p.startswith(HARNESS_MODULE + ".")}
        # `m = torch.nn.functional` makes m an alias too (to a fixed point: aliases of aliases; the first binding
        # of a name wins, so the loop ends).
        changed = True
        while changed:
            changed = False
            for node in ast.walk(self.tree):
                if isinstance(node, ast.Assign) and isinstance(node.value, (ast.Name, ast.Attribute)):
                    path = self.path(node.value)
                    for t in node.targets:
                        if path and isinstance(t, ast.Name) and t.id not in self.imported:
                            self.imported[t.id] = path
                            changed = True

    def derived_from_seed(self, node: ast.AST) -> bool:
        for inner in ast.walk(node):
            if isinstance(inner, ast.Call) and self.harness_name(inner.func) == "seed":
                return True
            if isinstance(inner, ast.Name) and inner.id in self.seeded_names:
                return True
        return False

    def collect_seeded_names(self) -> None:
        changed = True
        while changed:
            changed = False
            for node in ast.walk(self.tree):
                if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)) and node.value is not None:
                    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                    if self.derived_from_seed(node.value):
                        for t in targets:
                            if isinstance(t, ast.Name) and t.id not in self.seeded_names:
                                self.seeded_names.add(t.id)
                                changed = True

    # --- checks --------------------------------------------------------------------------------------------------

    def check_store(self, node: ast.AST) -> None:
        """An attribute or item assignment/deletion whose root is an imported module or object."""
        path = self.path(node)
        if path is None or path.startswith(ALLOWED_PATCH_PREFIXES):
            return
        if path.startswith("os.environ"):
            self.problem(node, "writes the environment (os.environ)")
        else:
            self.problem(node, f"assigns to {path.replace('.[]', '[...]')}, an attribute of an imported "
                               f"module or object; a child may not patch what it imports")

    def check_call(self, node: ast.Call) -> None:
        func = node.func
        harness = self.harness_name(func)
        if harness:
            self.called.add(harness)
        path = self.path(func)
        name = func.id if isinstance(func, ast.Name) else None
        if name in OPAQUE_CALLS and name not in self.imported or (path or "").startswith("importlib"):
            self.problem(node, f"calls {name or path}(): code this check cannot read")
        if name in ("setattr", "delattr", "getattr") and node.args:
            target = self.path(node.args[0])
            if target and name != "getattr" and not target.startswith(ALLOWED_PATCH_PREFIXES):
                self.problem(node, f"calls {name}() on {target}, an imported module or object")
            if target == HARNESS_MODULE and name == "getattr":
                attr = node.args[1] if len(node.args) > 1 else None
                if not (isinstance(attr, ast.Constant) and attr.value in self.api):
                    self.problem(node, "reads prepare through getattr(); only the harness API may be used")
        if isinstance(func, ast.Attribute) and func.attr in ("__setattr__", "__delattr__") and node.args:
            if self.path(node.args[0]):
                self.problem(node, f"calls {func.attr}() on an imported module or object")
        if path in ENV_WRITERS or (isinstance(func, ast.Attribute) and func.attr in ENV_METHODS
                                   and self.path(func.value) == "os.environ"):
            self.problem(node, "writes the environment")
        self.check_seeding(node, func, path, name)
        self.check_file_read(node, func, path, name)

    def check_seeding(self, node: ast.Call, func: ast.AST, path: str | None, name: str | None) -> None:
        if self.harness_name(func):
            return
        method = func.attr if isinstance(func, ast.Attribute) else (path or "").rsplit(".", 1)[-1] if name else None
        seeding = method in SEED_METHODS or path in RNG_CONSTRUCTORS
        if not seeding:
            return
        args = [*node.args, *(k.value for k in node.keywords)]
        shown = path or ast.unparse(func)
        if not args:
            self.problem(node, f"calls {shown}() without a seed: randomness must come from the harness seed()")
        elif not any(self.derived_from_seed(a) for a in args):
            self.problem(node, f"seeds with {ast.unparse(args[0])} in {shown}(...): a child must use the "
                               f"harness seed() (or a name assigned from it), not its own")

    def check_file_read(self, node: ast.Call, func: ast.AST, path: str | None, name: str | None) -> None:
        if path in FILE_READERS:
            self.problem(node, f"reads a file with {path}(); a child gets its data only through train_batches()")
        elif isinstance(func, ast.Attribute) and func.attr in ("read_text", "read_bytes"):
            self.problem(node, f"reads a file with .{func.attr}(); a child gets its data only through "
                               f"train_batches()")
        elif name == "open" and "open" not in self.imported:
            mode = node.args[1] if len(node.args) > 1 else next((k.value for k in node.keywords if k.arg == "mode"),
                                                                 None)
            text = mode.value if isinstance(mode, ast.Constant) and isinstance(mode.value, str) else "r"
            if "r" in text or "+" in text or not any(c in text for c in "wax"):
                self.problem(node, "opens a file for reading; a child gets its data only through train_batches()")

    def run(self) -> None:
        self.collect_imports()
        self.collect_seeded_names()
        harness_aliases = self.harness_aliases
        docstrings = _docstrings(self.tree)
        for node in ast.walk(self.tree):
            if isinstance(node, (ast.Attribute, ast.Subscript)) and isinstance(node.ctx, (ast.Store, ast.Del)):
                self.check_store(node)
            elif isinstance(node, ast.Attribute) and self.path(node.value) == HARNESS_MODULE \
                    and node.attr not in self.api:
                self.problem(node, f"uses prepare.{node.attr}, which is not part of the harness API")
            elif isinstance(node, ast.Call):
                self.check_call(node)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)) \
                    and node.id in harness_aliases:
                self.problem(node, f"rebinds {node.id}, a name imported from the harness")
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) \
                    and node.name in harness_aliases:
                self.problem(node, f"redefines {node.name}, a name imported from the harness")
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                hit = next((t for t in FORBIDDEN_TEXT if t in node.value), None)
                if hit:
                    self.problem(node, f"mentions {hit!r}: the validation split, the cache and the harness's "
                                       f"settings are off-limits to a child")
        for required in REQUIRED_CALLS:
            if required not in self.called:
                self.problem(None, f"never calls the harness's {required}(); a child must seed from seed(), "
                                   f"train on train_batches() and end with submit(model)")


def validate(source: str, api: Iterable[str] = HARNESS_API) -> Validation:
    """Checks source against the task contract (see the module docstring), with api the names it may import from
    prepare (by default the `__all__` of the prepare.py installed with genome; a caller whose task has its own
    prepare.py passes genome.harness_api.read_harness_api(that file)). Never raises for a bad source: returns
    Validation("rejected", reason, line) for the first problem by line, or Validation("ok")."""
    try:
        tree = parse(source)
    except SyntaxError as e:
        return Validation("rejected", f"line {e.lineno}: does not parse: {e.msg}", e.lineno)
    except ValueError as e:  # null bytes and the like
        return Validation("rejected", f"does not parse: {e}")
    checker = _Checker(tree, frozenset(api))
    checker.run()
    if not checker.problems:
        return Validation("ok")
    problems = sorted(checker.problems, key=lambda p: (p[0] == 0, p[0]))
    line, message = problems[0]
    more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
    if line:
        return Validation("rejected", f"line {line}: {message}{more}", line)
    return Validation("rejected", f"{message}{more}")
