"""The search policy: what to evaluate next and who survives, with no Ray, no store and no sandbox.

- policy: SearchPolicy (the population, confirmation, the run's phases)
- proposals: Proposer (which operator makes the next child, what it is told, what became of it), vary()
- selection: parent choice, elites and survivors
- islands: the population as a ring of sub-populations
"""
