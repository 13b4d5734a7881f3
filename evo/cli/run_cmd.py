"""`evo run`: the run's flags (from RunConfig), the live view, stopping on Ctrl-C, SIGTERM or SIGHUP, and the
final lines."""

from __future__ import annotations

import argparse
import faulthandler
import os
import signal
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

from evo.cli.flags import add_flags, given, values
from evo.cli.live import LiveView
from evo.config import RunConfig, parse_bounds
from evo.run_status import RunStatus
from evo.text import mean_std, one_line

# How long a stopping run may take to store its in-flight evaluations before the driver stops at once (seconds;
# EVO_STOP_GRACE_S overrides it). A healthy run stops in a second or two: this bounds a stuck one.
STOP_GRACE_S = 60.0


def run_args(p: argparse.ArgumentParser) -> None:
    add_flags(p, RunConfig)


def run(args, argv) -> int:
    from evo import launch
    from evo.sandbox import shield
    from operators.registry import REGISTRY

    settings = values(args, RunConfig)
    settings["operators"] = REGISTRY.parse_weights(args.operators)
    settings["bounds"] = parse_bounds(args.bounds)
    if not args.resume and settings["evaluations"] is None and settings["hours"] is None:
        settings["evaluations"] = 32
    config = RunConfig(**settings)
    ready = launch.settle(config, given(argv, RunConfig), notify=lambda m: print(f"evo run: {m}", file=sys.stderr))
    with launch.start(ready) as live:
        print(f"run {live.run_id} {'resumed' if live.resumed else 'started'}: {live.describe()}, "
              f"db {ready.config.db}", flush=True)
        if (why := shield.unavailable()) is not None:
            print(f"note: training runs without the shield on this machine ({why}): --allow-unshielded", flush=True)
        for note in live.notes:
            print(one_line(f"evo run: {note}"), file=sys.stderr, flush=True)
        final = _watch(live, ready.config)
    return _report(final, ready.config)


@contextmanager
def _stop_signals():
    """SIGTERM and SIGHUP stop the run as Ctrl-C does (schedulers, containers and `timeout` send them), and Ctrl-C
    works even where the process inherited it ignored or blocked. Yields the names of the signals received: Ray
    turns an interrupt inside its own waits into a plain KeyboardInterrupt, so the name cannot travel with it."""
    received: list[str] = []

    def handler(signum, frame):
        received.append(signal.Signals(signum).name)
        raise KeyboardInterrupt

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    # Ctrl-C too, whatever this process inherited: a command started with & from a script (or by a runner that
    # does so) begins with SIGINT ignored, and Python then leaves it ignored; a blocked mask is inherited as well.
    previous[signal.SIGINT] = signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGHUP})
    try:
        yield received
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _watch(live, config: RunConfig) -> RunStatus:
    import ray

    stopping = None
    said = 0
    silent = False
    with _stop_signals() as received, LiveView(quiet=config.quiet) as view:
        while True:
            try:
                final = live.done(timeout=1.0)
                if final is not None:
                    break
                try:
                    status = live.status()
                except ray.exceptions.GetTimeoutError:
                    if not silent:
                        print("evo run: the run has not answered for 30 s; still waiting (Ctrl-C stops it)",
                              file=sys.stderr, flush=True)
                    silent = True
                    continue
                silent = False
                for note in status.notes[said:]:
                    print(one_line(f"evo run: {note}"), file=sys.stderr, flush=True)
                said = len(status.notes)
                view.update(status)
            except KeyboardInterrupt:
                what = received.pop() if received else "Ctrl-C"
                if stopping is not None:
                    stopping.cancel()
                    _stop_at_once(what, config)
                    raise
                stopping = _stop_watchdog(live, config)
                try:
                    print(f"\n{what}: stopping; in-flight evaluations are recorded as interrupted "
                          f"({what} again to stop at once)", file=sys.stderr, flush=True)
                    live.stop()
                except KeyboardInterrupt:  # the second one came while the first was being handled
                    stopping.cancel()
                    _stop_at_once(received.pop() if received else "Ctrl-C", config)
                    raise
        if stopping is not None:
            stopping.cancel()
        if final.error is None:
            view.update(final)
    live.close()
    return final


def stop_grace() -> float:
    try:
        return float(os.environ.get("EVO_STOP_GRACE_S", STOP_GRACE_S))
    except ValueError:
        return STOP_GRACE_S


def _stop_watchdog(live, config: RunConfig) -> threading.Timer:
    """Bounds the stop: when the run has not ended stop_grace() seconds after it was asked to, the driver writes
    where each of its threads and the run actor's was (beside the store) and stops at once, as a second Ctrl-C
    would. Every finished evaluation is stored already; the run is resumed as after a kill."""
    grace = stop_grace()

    def fire():
        path = Path(f"{config.db}.stop-stacks.txt")
        try:
            with path.open("w") as f:
                f.write("the driver (evo run):\n")
                f.flush()
                faulthandler.dump_traceback(file=f, all_threads=True)
                f.write("\nthe run actor:\n" + live.stacks() + "\n")
            where = f"; where its threads were: {path}"
        except OSError:
            where = ""
        print(f"\nevo run: the run did not stop within {grace:g} s of being asked to: stopping at once{where}; "
              f"every finished evaluation is stored. resume with: evo run --resume --db {config.db}",
              file=sys.stderr, flush=True)
        ending = threading.Thread(target=_shutdown_ray, daemon=True)
        ending.start()
        ending.join(10.0)
        os._exit(130)

    timer = threading.Timer(grace, fire)
    timer.daemon = True
    timer.start()
    return timer


def _shutdown_ray() -> None:
    try:
        import ray

        ray.shutdown()
    except Exception:  # stopping at once: whatever Ray left behind ends with its reaper
        pass


def _stop_at_once(what: str, config: RunConfig) -> None:
    print(f"\n{what} again: stopping at once; every finished evaluation is stored. "
          f"resume with: evo run --resume --db {config.db}", file=sys.stderr, flush=True)


def _report(final: RunStatus, config: RunConfig) -> int:
    if final.error:
        print(one_line(f"evo run: error: {final.error}"), file=sys.stderr)
        return 1
    ev = final.evaluations
    print(f"run {final.run_id} {final.status}: {ev.search_done} search, {ev.confirm_done} confirm, "
          f"{ev.noise_done} noise evaluations; {ev.failed} failed")
    best = final.best
    if best:
        test = f"; test_bpb {best.test_bpb:.4f} (the test split, never selected on)" \
            if best.test_bpb is not None else ""
        print(f"best: {best.id}  val_bpb {mean_std(best.mean_bpb, best.std_bpb, best.n, f'{best.n_confirm} confirm')}"
              f"{test}")
        print(f"lineage: evo lineage {best.id} --db {config.db}")
    if final.status == "interrupted":
        print(f"resume with: evo run --resume --db {config.db}")
        return 130
    return 0
