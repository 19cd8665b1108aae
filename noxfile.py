"""Sessions: mxnet and tests (everything CI runs), tour (the main job), conformance (the
matrix), docs, bench. MXNet needs numpy < 1.24, so it has its own venv and runs first; the
tests session compares its recordings against the other backends.

    python3 -m pip install nox && python3 -m nox -s mxnet tests
"""

import os

import nox

nox.options.sessions = ["mxnet", "tests"]
nox.options.reuse_venv = "yes"
nox.options.error_on_missing_interpreters = True

PYTHON = "3.11"
CONSTRAINTS = ("-c", "constraints.txt")


def install(session: nox.Session, extras: str = "all,test") -> None:
    session.install(*CONSTRAINTS, "-e", f".[{extras}]")


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Lint, the docs site, the conformance matrix on every configuration, the repo's tests."""
    install(session, "all,test,docs")
    # keras-hub declares tensorflow-text, which pulls the full tensorflow wheel over
    # tensorflow-cpu; its backbones need neither (tests/test_real_models.py)
    session.install(*CONSTRAINTS, "--no-deps", "keras-hub", "kagglehub", "kagglesdk")
    session.run("ruff", "check", "unifparam", "backends", "tests", "noxfile.py")
    build_docs(session)
    session.run("unifparam", "conformance", "--backend", "all", "--json", "conformance.json")
    for keras_backend in ("jax", "torch"):  # Keras fixes its backend per process
        session.run("pytest", "tests/test_keras_native.py", "-q", "-p", "no:cacheprovider",
                    env={"KERAS_BACKEND": keras_backend})
    session.run("pytest", "tests", "-p", "no:cacheprovider", *session.posargs,
                env={"KERAS_BACKEND": "tensorflow"})


def build_docs(session: nox.Session) -> None:
    """Build the site into site/; --strict fails on any warning (broken link, bad reference)."""
    session.run("mkdocs", "build", "--strict", env={"NO_MKDOCS_2_WARNING": "1"})


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    """The documentation site (mkdocs-material, API reference from the docstrings) into site/.

    The build runs each tutorial (docs/tutorials) on every installed backend configuration,
    hence the frameworks; results are cached in .cache/tutorials. The other pages' code
    blocks run in the tests session (tests/test_docs.py).
    """
    install(session, "all,docs")
    build_docs(session)


@nox.session(python=PYTHON)
def tour(session: nox.Session) -> None:
    """The scenarios on UNIFPARAM_BACKEND (default torch): nox -s tour -- --backend keras:jax"""
    install(session)
    args = session.posargs or ["--backend", os.environ.get("UNIFPARAM_BACKEND", "torch")]
    session.run("unifparam", "tour", *args)


@nox.session(python=PYTHON)
def conformance(session: nox.Session) -> None:
    """The scenario x backend matrix: nox -s conformance -- --backend flax"""
    install(session)
    session.run("unifparam", "conformance", *(session.posargs or ["--backend", "all"]))


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Benchmarks, side by side with each framework's native path (kept out of tests)."""
    install(session)
    session.run("python", "-m", "benchmarks", *session.posargs)


@nox.session(python=PYTHON)
def sweep(session: nox.Session) -> None:
    """The whole adoption sweep (tests/test_sweep.py with UNIFPARAM_SWEEP=full): more real
    models per family than the tests session runs, keras_hub on each Keras backend."""
    install(session, "all,test")
    session.install(*CONSTRAINTS, "--no-deps", "keras-hub", "kagglehub", "kagglesdk")
    for backend, only in (("jax", []), ("tensorflow", ["-k", "keras_hub"]),
                          ("torch", ["-k", "keras_hub"])):
        session.run("pytest", "tests/test_sweep.py", "-q", "-p", "no:cacheprovider", *only,
                    *session.posargs, env={"UNIFPARAM_SWEEP": "full", "KERAS_BACKEND": backend})


@nox.session(python=PYTHON)
def mxnet(session: nox.Session) -> None:
    """MXNet Gluon in its own venv: mxnet 1.9.1 needs numpy < 1.24, the main venv has 2.x.

    Runs the conformance suite and the native tests, then records what the main tests
    compare against torch (tests/test_crossbackend_mxnet.py) into .crossbackend/: the
    cross-backend recording, the tour's text, one checkpoint per cross-backend case and the
    tutorials' outputs (matplotlib for their figures).
    Run it before `nox -s tests`; that suite also finds this venv's interpreter.
    """
    session.install("-c", "constraints-mxnet.txt", "-e", ".[mxnet,test,plot]")
    session.run("unifparam", "conformance", "--backend", "mxnet", "--json",
                "conformance-mxnet.json")
    session.run("pytest", "tests/test_mxnet_native.py", "tests/test_real_models_mxnet.py", "-q",
                "-p", "no:cacheprovider",
                *session.posargs)
    session.run("python", "tests/test_crossbackend_mxnet.py", "record", ".crossbackend")
