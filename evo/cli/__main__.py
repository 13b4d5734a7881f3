from evo.cli import run

run()
