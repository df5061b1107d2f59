"""Which functions a worker may run: the built-ins and the modules it loaded.

Nothing else is reachable by name. A task name is looked up in a table
built when the worker starts; it is never imported, evaluated or resolved
by attribute access at run time, so a job cannot name `os:system` or
`builtins:eval` into existence.

Modules of the standard library are refused as task modules: each serves
functions (`os:system`, `subprocess:run`, `shutil:rmtree`, ...) that hand
whoever can submit a job the worker's account. Only name modules written
to be task modules.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from typing import Any, Callable

BUILTIN_MODULE = "sockpool.worker.tasks"


def public_functions(module_name: str) -> dict[str, Callable[..., Any]]:
    """The public top-level functions that `module_name` itself defines.

    Imported names (`from os import system`) do not count: a function is
    served only where it is defined.

    Raises:
        ImportError: the module cannot be imported.
    """
    module = importlib.import_module(module_name)
    return {
        name: obj
        for name, obj in vars(module).items()
        if not name.startswith("_") and inspect.isfunction(obj) and obj.__module__ == module.__name__
    }


def check_task_module(module_name: str) -> None:
    """Refuse modules no one should serve as tasks.

    Raises:
        ValueError: `module_name` is in the standard library or built in.
    """
    top = module_name.partition(".")[0]
    if top in sys.stdlib_module_names or top in sys.builtin_module_names:
        raise ValueError(
            f"refusing to serve the standard-library module {module_name!r} as tasks: "
            "its functions would let any job run commands or touch files as this worker. "
            "Name a module of your own that defines the tasks."
        )


def load_tasks(modules: list[str]) -> dict[str, Callable[..., Any]]:
    """Task name -> function, for the built-ins and each of `modules`.

    Raises:
        ValueError: one of the modules is refused (see `check_task_module`).
        ImportError: one of the modules cannot be imported.
    """
    for module_name in modules:
        check_task_module(module_name)
    tasks = dict(public_functions(BUILTIN_MODULE))
    for module_name in modules:
        for name, fn in public_functions(module_name).items():
            tasks[f"{module_name}:{name}"] = fn
    return tasks
