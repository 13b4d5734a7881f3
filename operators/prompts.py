"""Prompt templates and builders for the LLM operators.

Layout, for prompt caching: the system text, program.md and the parent's source come first and never change for a
given parent, each ending in a cache_control breakpoint; what changes from call to call (fitness, ancestry, the
population's recent attempts, the request) comes after the last breakpoint. A crossover's second parent takes the
fourth breakpoint (the API allows four).
"""

from __future__ import annotations

import random

from genome import Genome, unified_diff
from genome.harness_api import HARNESS_NAMES
from operators.context import Attempt, Lineage, LLMContext, Step

CACHE = {"type": "ephemeral"}
MAX_STEPS = 30
STEPS_WITH_DIFFS = 5
MAX_STEP_DIFF_CHARS = 2_000
MAX_ATTEMPTS = 40
MAX_DIFF_CHARS = 12_000

SYSTEM = f"""You improve a small language-model training script, train.py, inside an evolutionary search. Every \
child you write is trained for the same fixed budget by a fixed harness (prepare.py) and scored by val_bpb, \
bits per byte on held-out text: lower is better. The best children become parents of the next ones.

The contract; a child that breaks it is rejected without training:
- train.py uses the harness only through `from prepare import ...` of: {", ".join(HARNESS_NAMES)}.
- Every random generator is seeded from seed(); a child never picks its own seed.
- Training data comes only from train_batches(B, T, device), which stops when the budget is spent. Tie schedules \
to progress() (the share of the budget spent), not to step counts or your own clock.
- Training ends with submit(model), where model(idx[B, T]) returns logits[B, T, vocab_size()]. The harness \
computes the loss from those logits in a separate process, and rejects a model whose logits at position t \
depend on tokens after t.
- No assignments to attributes of imported modules, no reading files or environment variables, no exec/eval.
- The budget is the same for every child: a bigger or slower model sees fewer tokens.

Start your answer with the line

Hypothesis: <what you change, and why you expect val_bpb to drop>

followed by one or more edit blocks against the parent, each replacing lines that occur exactly once in it:

<<<<<<< SEARCH
<the exact lines of the parent to replace, indentation included>
=======
<the lines to put in their place>
>>>>>>> REPLACE

Make one coherent change, not a rewrite; quote few but unique lines in each SEARCH. If the change touches most of \
the file, give the whole new train.py in a single ```python code block instead of edit blocks."""

FOCI = (
    "the optimiser (its kind, its per-group learning rates, betas, weight decay)",
    "the learning-rate schedule over the budget (warmup, decay, final value)",
    "the architecture (attention, MLP, normalisation, embeddings, residual scaling)",
    "throughput: getting more useful tokens through the model within the same budget",
    "initialisation and numerical stability",
    "the balance of depth, width and batch size for this budget",
)


def _fmt(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "not measured"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def _step_line(n: int, step: Step, with_diff: bool) -> str:
    op = f"[{step.operator}] " if step.operator else ""
    line = (f"{n}. {op}{step.description} -> val_bpb {_fmt(step.val_bpb)} "
            f"({_fmt(step.delta_bpb, signed=True)} against its parent)")
    if with_diff and step.diff:
        diff = step.diff if len(step.diff) <= MAX_STEP_DIFF_CHARS else step.diff[:MAX_STEP_DIFF_CHARS] + "\n...\n"
        line += f"\n```diff\n{diff.rstrip()}\n```"
    return line


def _attempt_line(a: Attempt) -> str:
    op = f"[{a.operator}] " if a.operator else ""
    delta = f", {_fmt(a.delta_bpb, signed=True)}" if a.delta_bpb is not None else ""
    why = f" ({a.reason})" if a.reason else ""
    return f"- {op}{a.status}{delta}: {a.description}{why}"


def lineage_text(title: str, lineage: Lineage) -> str:
    """The fitness and ancestry of one parent, oldest step first (the last MAX_STEPS of them)."""
    out = [f"{title}: val_bpb {_fmt(lineage.val_bpb)}."]
    steps = lineage.steps[-MAX_STEPS:]
    if steps:
        skipped = len(lineage.steps) - len(steps)
        out.append("The changes that led to it, oldest first"
                   + (f" ({skipped} earlier ones left out)" if skipped else "") + ":")
        out += [_step_line(i + 1 + skipped, s, i >= len(steps) - STEPS_WITH_DIFFS) for i, s in enumerate(steps)]
    else:
        out.append("It is the seed train.py: no changes led to it yet.")
    return "\n".join(out)


def recent_text(recent: tuple[Attempt, ...]) -> str:
    """What the population tried lately (the last MAX_ATTEMPTS), oldest first."""
    if not recent:
        return "The population has not tried anything else yet."
    shown = recent[-MAX_ATTEMPTS:]
    kept = sum(a.status == "kept" for a in shown)
    return "\n".join([f"What the population tried lately, oldest first ({kept} of {len(shown)} kept; a negative "
                      f"change in val_bpb is an improvement):", *map(_attempt_line, shown)])


def _noise_text(noise: float | None) -> str:
    if noise is None:
        return ""
    return (f"Seed noise: val_bpb varies by about {noise:.4f} (one standard deviation) between seeds, so smaller "
            f"changes are not evidence either way.\n\n")


def _bounds_text(bounds: tuple[tuple[str, float, float], ...]) -> str:
    if not bounds:
        return ""
    ranges = ", ".join(f"{name} {low:g} to {high:g}" for name, low, high in bounds)
    return (f"This run keeps some constants of train.py within bounds, and rejects without training a child that "
            f"sets one outside them: {ranges}.\n\n")


def _system() -> list[dict]:
    return [{"type": "text", "text": SYSTEM, "cache_control": CACHE}]


def _program_block(program: str) -> dict:
    text = program.strip() or "(program.md is empty: use your own judgement.)"
    return {"type": "text", "text": f"program.md, the research direction from the person running the search:\n\n"
                                    f"{text}", "cache_control": CACHE}


def _source_block(title: str, genome: Genome) -> dict:
    source = genome.source if genome.source.endswith("\n") else genome.source + "\n"
    return {"type": "text", "text": f"{title} (individual {genome.short_id}), train.py:\n\n```python\n"
                                    f"{source}```", "cache_control": CACHE}


def _trim(diff: str) -> str:
    if len(diff) <= MAX_DIFF_CHARS:
        return diff or "(no changes)\n"
    return diff[:MAX_DIFF_CHARS] + f"\n... ({len(diff) - MAX_DIFF_CHARS} more characters of diff left out)\n"


def mutation_prompt(parent: Genome, context: LLMContext, rng: random.Random) -> tuple[list[dict], list[dict]]:
    """(system, messages) asking for one improvement of parent. rng picks an optional focus, so concurrent calls
    on one parent do not all chase the same idea."""
    focus = rng.choice(FOCI) if rng.random() < 0.5 else None
    request = [lineage_text("The parent", context.parent), "", recent_text(context.recent), "",
               _noise_text(context.noise_bpb) + _bounds_text(context.bounds)
               + "Propose one change to the parent that you expect to lower val_bpb. "
               "Do not repeat an idea that failed above unless you can say why it will work this time."]
    if focus:
        request.append(f"If nothing more promising comes to mind, consider {focus}.")
    messages = [{"role": "user", "content": [
        _program_block(context.program),
        _source_block("The parent", parent),
        {"type": "text", "text": "\n".join(request)},
    ]}]
    return _system(), messages


def crossover_prompt(a: Genome, b: Genome, ancestor: Genome | None, context: LLMContext) \
        -> tuple[list[dict], list[dict]]:
    """(system, messages) asking for one child of a and b that keeps what each got right; edits go against a."""
    other = context.other or Lineage()
    if ancestor is not None:
        changes = (f"Both descend from individual {ancestor.short_id}. Parent A's changes against it:\n\n```diff\n"
                   f"{_trim(unified_diff(ancestor.source, a.source, a_name='ancestor/train.py', b_name='A/train.py'))}"
                   f"```\n\nParent B's changes against it:\n\n```diff\n"
                   f"{_trim(unified_diff(ancestor.source, b.source, a_name='ancestor/train.py', b_name='B/train.py'))}"
                   f"```")
    else:
        changes = ("The parents have no known common ancestor. How B differs from A:\n\n```diff\n"
                   f"{_trim(unified_diff(a.source, b.source, a_name='A/train.py', b_name='B/train.py'))}```")
    request = "\n".join([
        lineage_text("Parent A", context.parent), "", lineage_text("Parent B", other), "", changes, "",
        recent_text(context.recent), "",
        _noise_text(context.noise_bpb) + _bounds_text(context.bounds)
        + "Write one child that combines what each parent got right (and drops what did not help), as edit blocks "
        "against parent A, or the whole file. Say in the hypothesis which parts come from which parent."])
    messages = [{"role": "user", "content": [
        _program_block(context.program),
        _source_block("Parent A", a),
        _source_block("Parent B", b),
        {"type": "text", "text": request},
    ]}]
    return _system(), messages


def repair_messages(messages: list[dict], answer: str, problems: list[str], details: str) -> list[dict]:
    """The conversation continued: the model's answer, and a request to fix what did not apply or parse."""
    listed = "\n".join(f"- {p}" for p in problems)
    return [*messages, {"role": "assistant", "content": answer}, {"role": "user", "content": (
        f"Your answer could not be used:\n{listed}\n{details}\nReply with the complete, corrected set of edit "
        f"blocks against the original parent (not against your previous answer), or the whole file in one "
        f"```python code block. Keep the same hypothesis.")}]
