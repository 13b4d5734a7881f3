"""Validation: a child that patches the harness or other modules, reads the validation split, or fixes its own
seed is rejected with a reason naming the line; a child that keeps the contract passes."""

import pytest

from genome import validate
from tests.support.genomes import seed_source

SEED = seed_source()
END = "submit(model)"


def _insert_before_submit(code: str) -> tuple[str, int]:
    """The seed with code inserted just before its submit(model) line, and the line number code starts at."""
    assert SEED.count(END) == 1
    before = SEED[:SEED.index(END)]
    return before + code + "\n" + SEED[SEED.index(END):], before.count("\n") + 1


def test_the_seed_genome_is_valid():
    assert validate(SEED).ok


@pytest.mark.parametrize("code, words", [
    ("import prepare\nprepare.evaluate_program = lambda *a: {'val_bpb': 0.0}", "prepare.evaluate_program"),
    ("F.cross_entropy = lambda *a, **k: torch.zeros(())", "torch.nn.functional.cross_entropy"),
    ("torch.nn.functional.softmax = None", "torch.nn.functional.softmax"),
    ("import builtins\nbuiltins.print = None", "builtins.print"),
    ("import sys\nsys.modules['prepare'] = None", "sys.modules"),
    ("setattr(F, 'cross_entropy', None)", "setattr"),
    ("import prepare\ndelattr(prepare, 'submit')", "delattr"),
    ("torch.manual_seed(1234)", "1234"),
    ("import random\nrandom.seed(0)", "random.seed"),
    ("import numpy as np\nnp.random.seed(7)", "numpy.random.seed"),
    ("torch.cuda.manual_seed_all(3)", "torch.cuda.manual_seed_all"),
    ("import random\nrandom.seed()", "without a seed"),
    ("import numpy as np\nrng = np.random.default_rng(0)", "numpy.random.default_rng"),
    ("g = torch.Generator().manual_seed(42)", "42"),
    ("path = '/root/.cache/evo/datasets/abc/val/val.bin'", "val.bin"),
    ("x = 'token_bytes.npy'", "token_bytes"),
    ("import os\nspec = os.environ.get('EVO_HARNESS_SPEC')", "EVO_"),
    ("import os\nos.environ['EVO_SEED'] = '1'", "environment"),
    ("import os\nos.environ.update(EVO_BUDGET_TOKENS='1')", "environment"),
    ("import numpy as np\ndata = np.fromfile('data.bin')", "numpy.fromfile"),
    ("state = torch.load('weights.pt')", "torch.load"),
    ("text = open('notes.txt').read()", "reading"),
    ("import prepare\nroot = prepare.active_dataset()", "prepare.active_dataset"),
    ("import prepare\ns = prepare._current()", "prepare._current"),
    ("exec('import prepare')", "exec"),
    ("seed = lambda: 0", "rebinds seed"),
])
def test_a_child_that_breaks_the_contract_is_rejected_at_the_line(code, words):
    source, line = _insert_before_submit(code)
    result = validate(source)
    assert result.status == "rejected"
    assert words in result.reason
    assert result.line is not None and line <= result.line <= line + code.count("\n")
    assert result.reason.startswith(f"line {result.line}: ")


@pytest.mark.parametrize("old, new, words", [
    ("from prepare import ", "from prepare import active_dataset, ", "active_dataset"),
    ("from prepare import ", "from prepare import evaluate_program, ", "evaluate_program"),
])
def test_importing_harness_internals_is_rejected(old, new, words):
    result = validate(SEED.replace(old, new, 1))
    assert not result.ok and words in result.reason
    assert result.line == next(i for i, ln in enumerate(SEED.splitlines(), 1) if ln.startswith(old))


@pytest.mark.parametrize("name", ["submit", "train_batches", "seed"])
def test_a_child_must_call_the_harness_api(name):
    if name == "seed":  # drop the seeding line itself, or the seeding check objects first
        lines = SEED.split("\n")
        i = max(i for i, line in enumerate(lines) if "seed()" in line)
        source = "\n".join(lines[:i] + [lines[i][:len(lines[i]) - len(lines[i].lstrip())] + "pass"] + lines[i + 1:])
    else:
        head, _, tail = SEED.rpartition(f"{name}(")  # the last call, after the docstring's mentions
        source = f"{head}print({tail}"
    result = validate(source)
    assert not result.ok
    assert f"never calls the harness's {name}()" in result.reason


@pytest.mark.parametrize("code", [
    "torch.backends.cudnn.benchmark = True",
    "torch.backends.cuda.matmul.allow_tf32 = True",
    "SEED = seed() + 1\ntorch.manual_seed(SEED)",
    "g = torch.Generator().manual_seed(seed())",
    "open('train_log.txt', 'w').write('done')",
    "model.eval()",
    "model = torch.compile(model)",
    "import prepare\nprint(prepare.budget(), prepare.progress())",
])
def test_what_the_contract_allows_passes(code):
    source, _ = _insert_before_submit(code)
    result = validate(source)
    assert result.ok, result.reason


def test_the_module_form_of_the_harness_api_is_valid():
    source = SEED.replace("from prepare import SEQ_LEN, progress, seed, submit, train_batches, vocab_size",
                          "import prepare\nfrom prepare import SEQ_LEN, progress, train_batches, vocab_size")
    source = source.replace("torch.manual_seed(seed())", "torch.manual_seed(prepare.seed())")
    source = source.replace("\nsubmit(model)", "\nprepare.submit(model)")
    assert validate(source).ok, validate(source).reason


def test_a_source_that_does_not_parse_is_rejected_not_raised():
    result = validate("def broken(:\n")
    assert result.status == "rejected" and result.line == 1 and "does not parse" in result.reason


def test_a_docstring_may_talk_about_the_harness():
    source = '"""Never reads val.bin or EVO_HARNESS_SPEC."""\n' + SEED
    assert validate(source).ok
