"""The old name of evo.sandbox.child.channel, for task folders whose prepare.py imports it (written by `evo init`
before the boundary became the evo.sandbox package). `evo init DIR --force` writes the current prepare.py."""

from evo.sandbox.child.channel import *  # noqa: F401,F403
