"""Reading an LLM answer: hypothesis, edit blocks (in prose, in fences), a whole file; applying edits exactly."""

from operators.edits import Edit, apply_edits, closest_lines, parse_answer

PARENT = "A = 1\nB = 2\n\ndef f():\n    return A + B\n\ndef g():\n    return A + B\n"


def block(search: str, replace: str) -> str:
    return f"<<<<<<< SEARCH\n{search}\n=======\n{replace}\n>>>>>>> REPLACE\n"


def test_edit_blocks_are_found_among_prose_and_fences():
    text = ("Sure! Here is my idea.\n\n**Hypothesis:** a larger A helps.\n\n```python\n" + block("A = 1", "A = 3")
            + "```\nand also\n" + block("B = 2", "B = 4") + "Hope that helps.")
    answer = parse_answer(text, PARENT)
    assert answer.hypothesis == "a larger A helps."
    assert answer.edits == (Edit("A = 1", "A = 3"), Edit("B = 2", "B = 4"))
    assert apply_edits(PARENT, answer.edits) == (PARENT.replace("A = 1", "A = 3").replace("B = 2", "B = 4"), [])


def test_a_whole_file_in_a_fence_is_taken_when_there_are_no_edit_blocks():
    new = PARENT.replace("A = 1", "A = 5")
    answer = parse_answer(f"Hypothesis: five\n\n```python\n{new}```\n", PARENT)
    assert answer.full_source == new and not answer.edits and not answer.problem


def test_a_short_snippet_is_not_mistaken_for_the_whole_file():
    answer = parse_answer("Change this:\n```python\nA = 5\n```\n", PARENT)
    assert answer.full_source is None and "not a whole file" in answer.problem and not answer.malformed


def test_answers_without_code_say_so():
    assert parse_answer("", PARENT).problem == "the answer is empty"
    assert "neither edit blocks nor a code block" in parse_answer("I would tune the learning rate.", PARENT).problem


def test_a_cut_off_edit_block_is_malformed():
    answer = parse_answer("Hypothesis: x\n<<<<<<< SEARCH\nA = 1\n=======\nA = 2\n", PARENT)
    assert answer.malformed and "not closed" in answer.problem


def test_edits_apply_only_when_their_search_lines_occur_exactly_once():
    source, failures = apply_edits(PARENT, [Edit("    return A + B", "    return A * B")])
    assert source is None and "occur 2 times" in failures[0]
    source, failures = apply_edits(PARENT, [Edit("A = 1 ", "A = 2")])
    assert source is None and "do not occur" in failures[0]
    source, failures = apply_edits(PARENT, [Edit("", "A = 2")])
    assert source is None and "empty" in failures[0]


def test_edits_apply_in_order_and_an_empty_replace_deletes():
    edits = [Edit("def g():\n    return A + B", "def g():\n    return A - B"), Edit("B = 2\n", "")]
    source, failures = apply_edits(PARENT, edits)
    assert failures == []
    assert source == "A = 1\ndef f():\n    return A + B\n\ndef g():\n    return A - B\n"


def test_the_closest_lines_point_at_what_the_model_meant():
    first, last, text = closest_lines(PARENT, "def g():\n    return A+B")
    assert (first, last) == (7, 8) and text == "def g():\n    return A + B"
