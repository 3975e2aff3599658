"""Headless notebook runs that insert generated cells the way JupyterLab does.

``%%keras2torch`` hands its generated cell to the frontend: through the JupyterLab extension, or
as a ``set_next_input`` payload that JupyterLab turns into a new cell below the magic cell.
nbclient (and so ``jupyter nbconvert --execute``, papermill) ignores those payloads, so a headless
run would never see, nor run, the generated cells. This file closes the gap: with it, each
``set_next_input`` payload becomes a new code cell right below the cell that sent it, which the run
then executes like any other cell, exactly as a person clicking through the notebook would.

Two ways to use it:

* as an nbconvert config file (what ``scripts/quickstart.sh`` does)::

      jupyter nbconvert --execute --to html --config scripts/jupyterlab_cells.py notebook.ipynb

* from Python: ``install(client)`` on an ``nbclient.NotebookClient`` before ``client.execute()``.

Inserted cells carry ``metadata.kerastorch_magic.inserted_from`` (the id of the magic's cell).
"""

from __future__ import annotations

import nbformat

METADATA_KEY = "kerastorch_magic"


class InsertNextInput:
    """nbclient hooks turning ``set_next_input`` payloads into cells below the sender."""

    def __init__(self):
        self.notebook = None
        self.inserted: list[int] = []  # indexes of the cells inserted, in the final notebook

    def on_notebook_start(self, notebook, **_):
        self.notebook = notebook

    def on_cell_executed(self, cell, cell_index, execute_reply, **_):
        if self.notebook is None or not execute_reply:
            return
        payloads = execute_reply.get("content", {}).get("payload", []) or []
        position = cell_index + 1
        for payload in payloads:
            if payload.get("source") != "set_next_input":
                continue
            if payload.get("replace"):  # replace=True rewrites the sender itself (JupyterLab does so too)
                cell.source = payload["text"]
                continue
            new = nbformat.v4.new_code_cell(payload["text"])
            new.metadata[METADATA_KEY] = {"inserted_from": cell.get("id")}
            # The enumeration over notebook.cells in nbclient/nbconvert reaches it next.
            self.notebook.cells.insert(position, new)
            self.inserted = [i + 1 if i >= position else i for i in self.inserted] + [position]
            position += 1


def install(client) -> InsertNextInput:
    """Attach the hooks to an ``nbclient.NotebookClient`` (or nbconvert ``ExecutePreprocessor``)."""
    hooks = InsertNextInput()
    client.on_notebook_start = hooks.on_notebook_start
    client.on_cell_executed = hooks.on_cell_executed
    if getattr(client, "nb", None) is not None:
        hooks.notebook = client.nb
    return hooks


if "get_config" in globals():  # loaded as a Jupyter config file (nbconvert --config ...)
    # Plain functions: traitlets may deep-copy config values, and a bound method's copy would
    # carry a copy of the hooks' state.
    _hooks = InsertNextInput()
    c = get_config()  # noqa: F821
    c.ExecutePreprocessor.on_notebook_start = lambda **kwargs: _hooks.on_notebook_start(**kwargs)
    c.ExecutePreprocessor.on_cell_executed = lambda **kwargs: _hooks.on_cell_executed(**kwargs)
