"""Sessions: mxnet and tests (everything CI runs), tour (the main job), conformance (the
matrix), docs, browser (the site in headless Chromium), bench. MXNet needs numpy < 1.24,
so it has its own venv and runs first; the tests session compares its recordings against
the other backends.

    python3 -m pip install nox && python3 -m nox -s mxnet tests
"""

import os
import shutil

import nox

nox.options.sessions = ["mxnet", "tests"]
nox.options.reuse_venv = "yes"
nox.options.error_on_missing_interpreters = True

PYTHON = "3.11"
CONSTRAINTS = ("-c", "constraints.txt")
#: A package index for PyTorch's CPU build, e.g. https://download.pytorch.org/whl/cpu: off a
#: machine that has torch's CPU wheel locally, the pinned torch otherwise resolves to the
#: CUDA build (several GB). Unset: pip resolves as configured (CI here).
TORCH_INDEX = os.environ.get("UNIFPARAM_TORCH_INDEX", "")
#: What the tour installs for each backend configuration (docs/install.md lists the same).
TOUR_EXTRAS = {
    "torch": "torch",
    "keras": "tensorflow", "keras:tensorflow": "tensorflow",
    "keras:jax": "keras,jax", "keras:torch": "keras,torch",
    "flax": "flax", "flax:linen": "flax", "flax:nnx": "flax",
    "mxnet": "mxnet",
}


def pip_args(extras: str, torch_index: str = TORCH_INDEX) -> list[str]:
    """``pip install`` arguments for this clone with ``extras``, pinned by the constraints
    (MXNet's own), taking torch from ``torch_index`` when given and torch is wanted."""
    wanted = set(extras.split(","))
    constraints = "constraints-mxnet.txt" if "mxnet" in wanted else "constraints.txt"
    index = ["--extra-index-url", torch_index] if torch_index and wanted & {"torch", "all"} \
        else []
    return ["-c", constraints, *index, "-e", f".[{extras}]"]


def tour_backend(args: list[str]) -> str:
    """The backend ``unifparam tour`` will run with these arguments."""
    for i, arg in enumerate(args):
        if arg == "--backend" and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--backend="):
            return arg.partition("=")[2]
    return os.environ.get("UNIFPARAM_BACKEND", "torch")


def install(session: nox.Session, extras: str = "all,test", **kwargs: bool) -> None:
    session.install(*pip_args(extras), **kwargs)


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Lint, the docs site, the conformance matrix on every configuration, the repo's tests."""
    install(session, "all,test,docs")
    # keras-hub declares tensorflow-text, which pulls the full tensorflow wheel over
    # tensorflow-cpu; its backbones need neither (tests/test_real_models.py)
    session.install(*CONSTRAINTS, "--no-deps", "keras-hub", "kagglehub", "kagglesdk")
    session.run("ruff", "check", "unifparam", "backends", "tests", "noxfile.py")
    build_docs(session)
    # the site in headless Chromium (says so and passes where none is installed)
    session.run("python", "tests/browser_check.py", "site", "--screenshots", "site-screenshots")
    session.run("unifparam", "conformance", "--backend", "all", "--json", "conformance.json")
    for keras_backend in ("jax", "torch"):  # Keras fixes its backend per process
        session.run("pytest", "tests/test_keras_native.py", "-q", "-p", "no:cacheprovider",
                    env={"KERAS_BACKEND": keras_backend})
    # the checkpoint matrix's keras:jax cells and GPT-2 into keras_hub's GPT2Backbone
    session.run("pytest", "tests/test_checkpoint_matrix.py", "tests/test_checkpoint_rename.py",
                "-q", "-p", "no:cacheprovider", "-k", "keras", env={"KERAS_BACKEND": "jax"})
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
def browser(session: nox.Session) -> None:
    """The built site in headless Chromium (tests/browser_check.py): every page renders, no
    raw markup, nothing wider than 1280 px; one screenshot per page in site-screenshots/.
    Skipped without Chromium (Debian: apt-get install chromium)."""
    if not any(shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome")):
        session.skip("no Chromium: apt-get install chromium")
    install(session, "all,docs")
    build_docs(session)
    session.run("python", "tests/browser_check.py", "site", "--screenshots", "site-screenshots")


@nox.session(python=PYTHON)
def tour(session: nox.Session) -> None:
    """The scenarios on UNIFPARAM_BACKEND (default torch): nox -s tour -- --backend keras:jax

    Installs only what that backend needs (TOUR_EXTRAS), showing pip's progress.
    """
    args = session.posargs or ["--backend", os.environ.get("UNIFPARAM_BACKEND", "torch")]
    backend = tour_backend(args)
    if backend not in TOUR_EXTRAS:
        session.error(f"Unknown backend {backend!r}: one of {', '.join(TOUR_EXTRAS)}")
    install(session, TOUR_EXTRAS[backend], silent=False)
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
    install(session, "mxnet,test,plot")
    session.run("unifparam", "conformance", "--backend", "mxnet", "--json",
                "conformance-mxnet.json")
    session.run("pytest", "tests/test_mxnet_native.py", "tests/test_real_models_mxnet.py", "-q",
                "-p", "no:cacheprovider",
                *session.posargs)
    session.run("python", "tests/test_crossbackend_mxnet.py", "record", ".crossbackend")
