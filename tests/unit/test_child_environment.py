"""The training and scoring processes' environment: an allow-list, plus what the user names with --env (a setting of
`evo eval` and `evo run`, stored with the run so that --resume and replay pass the same variables)."""

import pytest

from evo.cli import parser
from evo.cli.flags import values
from evo.config import EvalConfig, RunConfig
from evo.errors import ConfigError
from evo.sandbox.environment import clean_environment, passed_values

# What a user's shell may hold: secrets under every kind of name, beside what training needs.
USER_ENVIRONMENT = {
    "DATABASE_URL": "postgresql://app:hunter2-db@db.internal:5432/app", "MY_SERVICE_PASS": "hunter2-svc",
    "REDIS_URL": "redis://:hunter2-redis@cache:6379/0", "SENTRY_DSN": "https://abc@o1.ingest.sentry.io/2",
    "AWS_SECRET_ACCESS_KEY": "s", "HF_TOKEN": "t", "ANTHROPIC_BASE_URL": "http://127.0.0.1:9",
    "GITHUB_PAT": "ghp_hunter2", "CUDA_AUTH_TOKEN": "t2", "EVO_CACHE_DIR": "/c", "RAY_ADDRESS": "10.0.0.1:6379",
    "SSH_AUTH_SOCK": "/tmp/ssh-agent", "LD_PRELOAD": "/tmp/hook.so", "PYTHONSTARTUP": "/tmp/startup.py",
    "PATH": "/usr/bin:/bin", "HOME": "/home/u", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
    "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2", "OPENBLAS_CORETYPE": "Haswell", "OPENBLAS_L2_SIZE": "512",
    "CUDA_VISIBLE_DEVICES": "0", "NVIDIA_VISIBLE_DEVICES": "all", "CUDA_HOME": "/usr/local/cuda",
    "LD_LIBRARY_PATH": "/usr/local/cuda/lib64", "TRITON_INTERPRET": "1", "EVO_KERNELS": "torch",
    "PYTHONPATH": "/work/src",
}
NEEDED = {"PATH", "HOME", "LANG", "LC_ALL", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_CORETYPE",
          "OPENBLAS_L2_SIZE", "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "CUDA_HOME", "LD_LIBRARY_PATH",
          "TRITON_INTERPRET", "EVO_KERNELS", "PYTHONPATH"}


def test_a_child_gets_only_the_allowed_variables_whatever_the_others_are_called():
    env = clean_environment(USER_ENVIRONMENT, {})
    assert set(env) == NEEDED | {"PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED"}
    assert {k: env[k] for k in NEEDED} == {k: USER_ENVIRONMENT[k] for k in NEEDED}
    assert not any("hunter2" in v for v in env.values())


def test_a_named_variable_reaches_the_child_whatever_its_name():
    passed = passed_values(("DATABASE_URL", "HF_TOKEN"), USER_ENVIRONMENT)
    env = clean_environment(USER_ENVIRONMENT, {**passed, "OMP_NUM_THREADS": "1"})
    assert env["DATABASE_URL"] == USER_ENVIRONMENT["DATABASE_URL"] and env["HF_TOKEN"] == "t"
    assert env["OMP_NUM_THREADS"] == "1" and "MY_SERVICE_PASS" not in env


def test_env_flags_repeat_on_eval_and_run_and_the_run_stores_the_names():
    args = parser().parse_args(["eval", "train.py", "--env", "MY_TOOL", "--env", "DATABASE_URL", "--env", "MY_TOOL"])
    assert EvalConfig(**values(args, EvalConfig)).env == ("MY_TOOL", "DATABASE_URL")
    assert EvalConfig(**values(parser().parse_args(["eval", "train.py"]), EvalConfig)).env == ()
    args = parser().parse_args(["run", "--env", "MY_TOOL", "--env", "DATABASE_URL"])
    config = RunConfig(**{**values(args, RunConfig), "operators": {"hyper": 1.0}, "bounds": {}})
    stored = config.stored()
    assert stored["env"] == ("MY_TOOL", "DATABASE_URL")
    resumed = RunConfig(resume=True).with_stored({**stored, "env": list(stored["env"])}, set())
    assert resumed.env == ("MY_TOOL", "DATABASE_URL")
    with pytest.raises(ConfigError, match="--env OTHER conflicts with the stored run's MY_TOOL,DATABASE_URL"):
        RunConfig(env=("OTHER",)).with_stored(stored, {"env"})


@pytest.mark.parametrize("names, message", [
    (("DATABASE_URL=postgres://x",), "--env takes a variable's name, not its value"),
    (("MY-TOOL",), "is not an environment variable's name"),
    (("EVO_SEED",), "--env EVO_SEED: evo sets this variable itself"),
    (("TMPDIR",), "--env TMPDIR: evo sets this variable itself"),
])
def test_a_bad_env_name_says_what_is_wrong(names, message):
    for make in (RunConfig, EvalConfig):
        with pytest.raises(ConfigError, match=message):
            make(env=names)


def test_a_named_variable_that_is_not_set_is_refused_in_one_line():
    with pytest.raises(ConfigError, match="--env MY_TOOL: no such variable in this environment"):
        passed_values(("PATH", "MY_TOOL"), {"PATH": "/bin"})
