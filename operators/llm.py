"""LLM operators: mutation (one improvement of a parent) and crossover (one child combining two parents), through
the Anthropic Messages API.

An answer is a hypothesis plus edit blocks against the parent, or the whole file in a code fence
(operators/edits.py). Edits that do not apply exactly, a malformed edit block, or a result that does not parse get
one repair attempt in the same conversation (the cached prefix is reused); then the child is `invalid` with the
reason. An empty answer, prose without code, a partial code block or a failed API call make the child `invalid`
at once. Nothing a server answers escapes as an exception: the only exception is OperatorUnavailable, raised
before any call when the spend cap is reached, or when the API refuses the key or the model (llm_client).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from genome import Genome, diff_stats, unified_diff
from genome.syntax import parse
from operators.context import LLMContext
from operators.edits import apply_edits, closest_lines, parse_answer
from operators.errors import OperatorUnavailable
from operators.llm_client import LLMClient, Reply
from operators.prompts import crossover_prompt, mutation_prompt, repair_messages
from operators.variation import Variation, one_line

MUTATE = "llm.mutate"
CROSSOVER = "llm.crossover"


@dataclass
class _Outcome:
    source: str | None = None
    hypothesis: str = ""
    problems: list[str] = field(default_factory=list)
    details: str = ""
    repairable: bool = False


def _read(reply: Reply, parent_source: str) -> _Outcome:
    """The child source an answer makes of the parent, or what is wrong with it and whether a repair may help."""
    cut = " (the answer was cut off at max_tokens)" if reply.stop_reason == "max_tokens" else ""
    if reply.usage.status == "refused":
        return _Outcome(problems=["the model declined to answer"])
    answer = parse_answer(reply.text, parent_source)
    out = _Outcome(hypothesis=answer.hypothesis)
    if answer.problem:
        out.problems = [answer.problem + cut]
        out.repairable = answer.malformed
        return out
    if answer.edits:
        source, failures = apply_edits(parent_source, answer.edits)
        if failures:
            out.problems, out.repairable = failures, True
            notes = []
            for n, edit in enumerate(answer.edits, 1):
                if any(f.startswith(f"edit {n}: its SEARCH lines do not occur") for f in failures):
                    first, last, text = closest_lines(parent_source, edit.search)
                    notes.append(f"The parent's lines most like edit {n}'s SEARCH are {first}-{last}:\n"
                                 f"```\n{text}\n```")
            out.details = "\n".join(notes)
            return out
    else:
        source = answer.full_source
    if source == parent_source:
        out.problems = ["the answer leaves the parent unchanged"]
        return out
    try:
        parse(source)
    except (SyntaxError, ValueError) as e:  # ValueError: null bytes
        where = f"line {e.lineno}: {e.msg}" if isinstance(e, SyntaxError) else str(e)
        out.problems, out.repairable = [f"the new source does not parse: {where}{cut}"], True
        lines = source.split("\n")
        lo = max(0, (getattr(e, "lineno", None) or 1) - 4)
        out.details = f"Lines {lo + 1}-{min(len(lines), lo + 7)} of the new source:\n```\n" \
                      f"{chr(10).join(lines[lo:lo + 7])}\n```"
        return out
    out.source = source
    return out


def _description(hypothesis: str, parent_source: str, source: str, repaired: bool) -> str:
    added, removed = diff_stats(unified_diff(parent_source, source))
    size = f"[+{added}/-{removed}{', repaired' if repaired else ''}]"
    return f"{one_line(hypothesis, 170)} {size}" if hypothesis else f"(no hypothesis given) {size}"


def _propose(operator: str, parent: Genome, client: LLMClient, system: list[dict], messages: list[dict],
             max_tokens: int | None) -> Variation:
    reply = client.complete(system=system, messages=messages, operator=operator, max_tokens=max_tokens)
    usage = [reply.usage]
    if not reply.answered:
        return Variation.invalid(operator, f"the API call failed ({reply.usage.status}): {reply.usage.error}", usage)
    first = _read(reply, parent.source)
    if first.source is not None:
        return Variation.child(operator, first.source,
                               _description(first.hypothesis, parent.source, first.source, False), usage)
    problems = "; ".join(first.problems)
    if not first.repairable:
        return Variation.invalid(operator, problems, usage)
    if not client.budget_left():
        return Variation.invalid(operator, f"{problems}; no repair attempt: the LLM spend cap is reached", usage)
    try:
        repair = client.complete(system=system, messages=repair_messages(messages, reply.text, first.problems,
                                                                         first.details),
                                 operator=operator, purpose="repair", max_tokens=max_tokens)
    except OperatorUnavailable as e:  # the cap was reached meanwhile (another thread), or the key was revoked
        return Variation.invalid(operator, f"{problems}; no repair attempt: {e}", usage)
    usage.append(repair.usage)
    if not repair.answered:
        return Variation.invalid(operator, f"{problems}; the repair call failed ({repair.usage.status}): "
                                           f"{repair.usage.error}", usage)
    second = _read(repair, parent.source)
    if second.source is None:
        return Variation.invalid(operator, f"{problems}; after one repair attempt: {'; '.join(second.problems)}",
                                 usage)
    hypothesis = second.hypothesis or first.hypothesis
    return Variation.child(operator, second.source, _description(hypothesis, parent.source, second.source, True),
                           usage)


def mutate(parent: Genome, rng: random.Random, *, client: LLMClient, context: LLMContext = LLMContext(),
           max_tokens: int | None = None) -> Variation:
    """Asks the model for one improvement of parent, given program.md, the parent's ancestry and what the
    population tried lately (context). Returns the child, or `invalid` with the reason; usage holds a record per
    call. Raises OperatorUnavailable (before calling) when the spend cap is reached."""
    client.ensure_budget()
    system, messages = mutation_prompt(parent, context, rng)
    return _propose(MUTATE, parent, client, system, messages, max_tokens)


def crossover(a: Genome, b: Genome, rng: random.Random, *, ancestor: Genome | None = None, client: LLMClient,
              context: LLMContext = LLMContext(), max_tokens: int | None = None) -> Variation:
    """Asks the model for one child that combines what a and b each got right, shown their changes against their
    common ancestor (or against each other when there is none); context.parent is a's lineage, context.other
    b's. The child is written as edits against a. Same outcomes as mutate."""
    client.ensure_budget()
    system, messages = crossover_prompt(a, b, ancestor, context)
    return _propose(CROSSOVER, a, client, system, messages, max_tokens)
