"""The search policy: what to evaluate next and who survives, with no Ray, no store and no sandbox.

- policy: SearchPolicy (the population, confirmation, the run's phases)
- selection: parent choice, elites and survivors
- islands: the population as a ring of sub-populations
"""
