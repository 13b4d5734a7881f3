"""`evo run`: the run's flags (from RunConfig), the live view, stopping on Ctrl-C, SIGTERM or SIGHUP, and the
final lines."""

from __future__ import annotations

import argparse
import signal
import sys
from contextlib import contextmanager

from evo.cli.flags import add_flags, given, values
from evo.cli.live import LiveView
from evo.config import RunConfig
from evo.run_status import RunStatus


def run_args(p: argparse.ArgumentParser) -> None:
    add_flags(p, RunConfig)


def run(args, argv) -> int:
    from evo import launch, shield
    from operators.registry import REGISTRY

    settings = values(args, RunConfig)
    settings["operators"] = REGISTRY.parse_weights(args.operators)
    if not args.resume and settings["evaluations"] is None and settings["hours"] is None:
        settings["evaluations"] = 32
    config = RunConfig(**settings)
    ready = launch.settle(config, given(argv), notify=lambda m: print(f"evo run: {m}", file=sys.stderr))
    with launch.start(ready) as live:
        print(f"run {live.run_id} {'resumed' if live.resumed else 'started'}: {live.describe()}, "
              f"db {ready.config.db}", flush=True)
        if (why := shield.unavailable()) is not None:
            print(f"note: training runs without the shield on this machine ({why}): --allow-unshielded", flush=True)
        for note in live.notes:
            print(f"evo run: {note}", file=sys.stderr, flush=True)
        final = _watch(live, ready.config)
    return _report(final, ready.config)


@contextmanager
def _stop_signals():
    """SIGTERM and SIGHUP stop the run as Ctrl-C does (schedulers, containers and `timeout` send them). Yields the
    names of the signals received: Ray turns an interrupt inside its own waits into a plain KeyboardInterrupt, so
    the name cannot travel with the exception."""
    received: list[str] = []

    def handler(signum, frame):
        received.append(signal.Signals(signum).name)
        raise KeyboardInterrupt

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield received
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _watch(live, config: RunConfig) -> RunStatus:
    stopping = False
    said = 0
    with _stop_signals() as received, LiveView(quiet=config.quiet) as view:
        while True:
            try:
                final = live.done(timeout=1.0)
                if final is not None:
                    break
                status = live.status()
                for note in status.notes[said:]:
                    print(f"evo run: {note}", file=sys.stderr, flush=True)
                said = len(status.notes)
                view.update(status)
            except KeyboardInterrupt:
                what = received.pop() if received else "Ctrl-C"
                if stopping:
                    _stop_at_once(what, config)
                    raise
                stopping = True
                try:
                    print(f"\n{what}: stopping; in-flight evaluations are recorded as interrupted "
                          f"({what} again to stop at once)", file=sys.stderr, flush=True)
                    live.stop()
                except KeyboardInterrupt:  # the second one came while the first was being handled
                    _stop_at_once(received.pop() if received else "Ctrl-C", config)
                    raise
        if final.error is None:
            view.update(final)
    live.close()
    return final


def _stop_at_once(what: str, config: RunConfig) -> None:
    print(f"\n{what} again: stopping at once; every finished evaluation is stored. "
          f"resume with: evo run --resume --db {config.db}", file=sys.stderr, flush=True)


def _report(final: RunStatus, config: RunConfig) -> int:
    if final.error:
        print(f"evo run: error: {final.error}", file=sys.stderr)
        return 1
    ev = final.evaluations
    print(f"run {final.run_id} {final.status}: {ev.search_done} search, {ev.confirm_done} confirm, "
          f"{ev.noise_done} noise evaluations; {ev.failed} failed")
    best = final.best
    if best:
        spread = f" ± {best.std_bpb:.4f}" if best.std_bpb is not None else ""
        test = f"; test_bpb {best.test_bpb:.4f} (the test split, never selected on)" \
            if best.test_bpb is not None else ""
        print(f"best: {best.id}  val_bpb {best.mean_bpb:.4f}{spread} over {best.n} evaluations "
              f"({best.n_confirm} confirm){test}")
        print(f"lineage: evo lineage {best.id} --db {config.db}")
    if final.status == "interrupted":
        print(f"resume with: evo run --resume --db {config.db}")
        return 130
    return 0
