"""Genome records and their ids (content hashes)."""

import hashlib
import json
import os
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genome import Genome, content_hash, normalise
from tests.support.genomes import ROOT, seed_source


def test_genome_id_is_the_sha256_of_the_source_cut_to_16_hex_digits():
    source = seed_source()
    assert Genome.seed(source).id == hashlib.sha256(source.encode()).hexdigest()[:16]
    assert content_hash("") == "e3b0c44298fc1c14"  # sha256 of nothing, a known value


@given(st.text(alphabet=st.characters(blacklist_characters="\r")))
def test_windows_line_endings_do_not_change_the_id(text):
    assert content_hash(text.replace("\n", "\r\n")) == content_hash(text)


@given(st.text())
def test_line_endings_are_the_only_normalisation(text):
    assert content_hash(text) == content_hash(normalise(text))
    assert normalise(text) == text.replace("\r\n", "\n")


@given(st.text(min_size=1), st.text(min_size=1))
def test_different_normalised_sources_have_different_ids(a, b):
    if normalise(a) != normalise(b):
        assert content_hash(a) != content_hash(b)


@settings(max_examples=5, deadline=None)
@given(st.lists(st.text(), min_size=1, max_size=20))
def test_hashes_are_stable_across_runs(texts):
    """Another interpreter, with another hash() salt, computes the same ids."""
    code = ("import json, sys; from genome import content_hash; "
            "print(json.dumps([content_hash(t) for t in json.load(sys.stdin)]))")
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], input=json.dumps(texts), capture_output=True, text=True,
                         env=env, cwd=ROOT, check=True)
    assert json.loads(out.stdout) == [content_hash(t) for t in texts]


def test_a_genome_keeps_its_parents_operator_and_one_line_description():
    parent = Genome.seed("x = 1\n")
    child = Genome("x = 2\r\n", (parent.id,), "hyper.mutate", "x 1 -> 2")
    assert child.source == "x = 2\n"
    assert child.parents == (parent.id,)
    assert child.id == content_hash("x = 2\n") != parent.id
    assert child.short_id == child.id[:8]
    assert parent.parents == () and parent.operator == "seed"


@pytest.mark.parametrize("kwargs, message", [
    ({"description": "two\nlines"}, "one line"),
    ({"parents": ("a", "b", "c")}, "at most two"),
    ({"parents": ("",)}, "non-empty"),
    ({"operator": ""}, "operator"),
])
def test_a_malformed_genome_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Genome("x = 1\n", **kwargs)
