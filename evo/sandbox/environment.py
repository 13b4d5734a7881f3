"""The environment of the training and scoring processes: built from an allow-list, never inherited whole.

A child can print whatever its environment holds into its log, and logs are stored and go into the LLM operators'
prompts, so a secret under any name (DATABASE_URL with its password, MY_SERVICE_PASS) must not reach it. The child
gets only these variables of the parent's environment, plus those the user names with --env (their values read
where `evo eval`, `evo run` or `evo replay` was started) and those evo sets for each evaluation:

    ALLOWED               PATH, HOME, USER, LOGNAME, LANG, LANGUAGE, TZ; PYTHONPATH, PYTHONHOME, PYTHONHASHSEED;
                          LD_LIBRARY_PATH, CC, CXX; CUBLAS_WORKSPACE_CONFIG, PYTORCH_CUDA_ALLOC_CONF;
                          GOTO_NUM_THREADS, BLIS_NUM_THREADS, VECLIB_MAXIMUM_THREADS, NUMEXPR_NUM_THREADS;
                          EVO_KERNELS (kernels.py's backend)
    ALLOWED_PREFIXES      LC_ (the locale); OMP_, KMP_, GOMP_, MKL_, OPENBLAS_, NVPL_ (threads and BLAS);
                          CUDA_, NVIDIA_, TRITON_ (the GPU and its compiler)

An allowed name that looks like a credential (is_secret: API_KEY, TOKEN, SECRET, PASSWORD, CREDENTIAL, ANTHROPIC_)
is dropped all the same; a variable the user names with --env is passed whatever its name. is_secret is also what
the driver scrubs from its own environment before Ray starts (evo.launch).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from evo.errors import ConfigError

ALLOWED = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ",
    "PYTHONPATH", "PYTHONHOME", "PYTHONHASHSEED",
    "LD_LIBRARY_PATH", "CC", "CXX", "CUBLAS_WORKSPACE_CONFIG", "PYTORCH_CUDA_ALLOC_CONF",
    "GOTO_NUM_THREADS", "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS",
    "EVO_KERNELS",
})
ALLOWED_PREFIXES = ("LC_", "OMP_", "KMP_", "GOMP_", "MKL_", "OPENBLAS_", "NVPL_", "CUDA_", "NVIDIA_", "TRITON_")
# Set by evo for each evaluation (evo.sandbox.evaluation): a value given with --env would be overwritten, so it is
# refused.
SET_BY_EVO = ("TMPDIR", "XDG_CACHE_HOME", "TRITON_CACHE_DIR", "TORCHINDUCTOR_CACHE_DIR", "HOME", "USER", "LOGNAME",
              "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED")

_SECRET = re.compile(r"(API_KEY|TOKEN|SECRET|PASSWORD|CREDENTIAL)|^ANTHROPIC_", re.IGNORECASE)
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def is_secret(name: str) -> bool:
    """Whether an environment variable looks like a credential (API keys, tokens, passwords, ANTHROPIC_*)."""
    return bool(_SECRET.search(name))


def is_allowed(name: str) -> bool:
    """Whether the parent's variable `name` may reach a child without being named with --env."""
    return (name in ALLOWED or name.startswith(ALLOWED_PREFIXES)) and not is_secret(name)


def clean_environment(base: Mapping[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    """The environment a child gets: the allowed variables of base, then extra (the worker's GPU, the variables
    named with --env, the thread count), then Python's output settings."""
    env = {k: v for k, v in base.items() if is_allowed(k)}
    env.update(extra)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def check_names(names: Iterable[str]) -> tuple[str, ...]:
    """--env NAME values, checked (a variable's name, not one evo sets itself), without repeats; ConfigError with
    the offending name otherwise."""
    checked: list[str] = []
    for name in names:
        if "=" in name:
            raise ConfigError(f"--env takes a variable's name, not its value (set the value in the environment); "
                              f"got {name.split('=', 1)[0]}=...")
        if not _NAME.match(name):
            raise ConfigError(f"--env {name!r} is not an environment variable's name (letters, digits and _)")
        if name.startswith("EVO_") or name in SET_BY_EVO:
            raise ConfigError(f"--env {name}: evo sets this variable itself; it cannot be passed")
        if name not in checked:
            checked.append(name)
    return tuple(checked)


def passed_values(names: Iterable[str], environ: Mapping[str, str]) -> dict[str, str]:
    """The values of the variables named with --env, from environ; ConfigError for one that is not set there."""
    for name in names:
        if name not in environ:
            raise ConfigError(f"--env {name}: no such variable in this environment; set it before starting evo")
    return {name: environ[name] for name in names}
