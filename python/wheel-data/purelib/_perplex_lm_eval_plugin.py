"""Lets ``lm_eval --model perplex`` find perplex's backend.

perplex declares its backend under the ``lm_eval.models`` entry-point group, but lm-evaluation-
harness releases up to 0.4.13 never read that group: their command line knows only the models
in its own ``lm_eval.models`` package. Python imports this module at startup (through
``perplex-lm-eval.pth``); all it does then is watch for ``lm_eval.models`` being imported, and
after it is, register every backend installed under the group as a lazy placeholder in lm-eval's
model registry. Nothing is imported before lm-eval is, and a backend's own code is loaded
only when it is asked for. A release that registers the group itself finds the names taken and
is left alone.
"""

import importlib.abc
import importlib.machinery
import sys

GROUP = "lm_eval.models"


def _register_backends() -> None:
    from importlib.metadata import entry_points

    from lm_eval.api.registry import model_registry

    found = entry_points()
    backends = found.select(group=GROUP) if hasattr(found, "select") else found.get(GROUP, [])
    for backend in backends:
        if backend.name not in model_registry:
            # As "module:class", the placeholder lm-eval upgrades in place when the backend's
            # module registers its class on import.
            model_registry.register(backend.name, target=backend.value)


class _WatchLmEvalModels(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "lm_eval.models":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        run_module = spec.loader.exec_module

        def run_and_register(module):
            run_module(module)
            try:
                _register_backends()
            except Exception as error:  # an older lm-eval without placeholders: say so, go on
                print(f"perplex: cannot register lm-eval backends ({error})", file=sys.stderr)

        spec.loader.exec_module = run_and_register
        return spec


sys.meta_path.insert(0, _WatchLmEvalModels())
