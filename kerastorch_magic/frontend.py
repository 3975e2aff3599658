"""Where the generated cell goes: the kernel half of the ``keras2torch`` comm protocol.

Three ways to get the generated code into the notebook (DESIGN.md §6):

* **The JupyterLab extension** (``labextension/``). At ``%load_ext kerastorch_magic`` the kernel
  opens a comm on target ``keras2torch`` with ``{"type": "hello", "version": 1}``; the extension
  answers ``{"type": "hello_ack", "version": 1}`` on it (a frontend without the extension has no
  such target and closes the comm). Each magic run whose executing client acknowledged then sends,
  *while the cell executes* (so the message's parent header is that client's execute_request)::

      {"type": "upsert", "request_id", "source_cell_id", "code", "hash", "class_name"}

  and the extension inserts or updates the generated cell below the source cell, answering
  ``{"type": "upsert_result", "request_id", "status", "cell_id", "message"?}``. The answer arrives
  once the kernel is idle again: it is recorded (:attr:`FrontendLink.results`) and a failure is
  reported by the next run.
* **IPython's ``set_next_input``** payload when no extension answered (JupyterLab or Notebook 7
  without the extension, VS Code, the console; nbclient/papermill ignore it).
* **Always**, the code in the cell's output (a collapsed ``<details>`` plus ``text/plain``), so
  headless runs and HTML exports keep it.

Acknowledgements are tracked per client (``header.session`` of the ``hello_ack``): the upsert
goes over the comm only when the client executing the cell has the extension, because the
extension writes cells only for executions its own client requested. A client that has never
been greeted (it connected after ``%load_ext``, e.g. a reloaded page) is greeted with a fresh
``hello`` comm during its first run, which itself falls back to ``set_next_input``. A frontend
may also open a ``keras2torch`` comm itself (a page that connected after ``%load_ext``, where
``%load_ext`` is a no-op): with ``{"type": "hello_ack", "version": 1}`` the kernel records the
ack; with ``{"type": "hello", "version": 1}`` it records it too and answers ``hello`` on it.

The generated cell's first line is the marker :data:`MARKER` (through it the extension adopts a
cell that ``set_next_input`` inserted): ``# keras2torch: generated from cell <id>, body sha256
<first 16 hex of the body's sha256>. Re-run that cell to regenerate; edits here are kept.``
"""

from __future__ import annotations

import hashlib
import html
import logging
import re
import uuid
from collections import OrderedDict
from dataclasses import dataclass

COMM_TARGET = "keras2torch"
PROTOCOL_VERSION = 1
INSERT_MODES = ("auto", "comm", "payload", "none")
UNKNOWN_CELL = "unknown"
MARKER = (
    "# keras2torch: generated from cell {cell}, body sha256 {prefix}. "
    "Re-run that cell to regenerate; edits here are kept."
)
_RESULTS_KEPT = 64

log = logging.getLogger(__name__)


# -- the generated cell's text ----------------------------------------------------------------------
def marker_cell_id(cell_id: str | None) -> str:
    """The source cell id as written in the marker (the extension parses ``[A-Za-z0-9_.:-]+``)."""
    if not cell_id:
        return UNKNOWN_CELL
    return re.sub(r"[^A-Za-z0-9_.:-]", "_", str(cell_id))[:200] or UNKNOWN_CELL


def body_hash(code: str) -> str:
    """Hex sha256 of a generated cell's body: everything after its first (marker) line."""
    body = code.split("\n", 1)[1] if "\n" in code else ""
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


def with_marker(body: str, cell_id: str | None) -> str:
    """The full generated cell: the marker line, then ``body``."""
    prefix = hashlib.sha256(body.encode("utf-8")).hexdigest()[:16]
    return MARKER.format(cell=marker_cell_id(cell_id), prefix=prefix) + "\n" + body


# -- display ----------------------------------------------------------------------------------------
def display_code(code: str, summary: str) -> None:
    """Show the generated cell in the output: collapsed HTML for notebooks, the code as text/plain."""
    from IPython.display import display

    lines = code.count("\n") + 1
    markup = (
        '<details class="keras2torch-code"><summary>'
        f"{html.escape(summary)} ({lines} lines)</summary>"
        '<pre style="font-size: 0.9em; line-height: 1.3"><code class="language-python">'
        f"{html.escape(code)}</code></pre></details>"
    )
    display({"text/html": markup, "text/plain": code}, raw=True)


# -- the comm link ----------------------------------------------------------------------------------
@dataclass
class Delivery:
    """What happened to one generated cell."""

    route: str  # "comm" | "payload" | "none" | "skipped"
    request_id: str | None = None
    message: str = ""


def _current_session(shell) -> str | None:
    """``header.session`` of the request being executed (the client), when in a kernel."""
    header = getattr(shell, "parent_header", None)
    if isinstance(header, dict):
        session = header.get("session") or (header.get("header") or {}).get("session")
        if session:
            return str(session)
    return None


def _is_dummy(comm) -> bool:
    """The ``comm`` package's no-kernel stand-in (plain IPython, a terminal): nobody listens."""
    try:
        from comm import DummyComm
    except ImportError:  # pragma: no cover
        return False
    return isinstance(comm, DummyComm)


class FrontendLink:
    """The kernel's side of the ``keras2torch`` protocol for one IPython shell."""

    def __init__(self, shell):
        self.shell = shell
        self.acked: dict[str | None, object] = {}  # client session -> the comm it acknowledged on
        self.greeted: set[str | None] = set()  # sessions that executed while a hello went out
        self.comms: list = []  # comms this kernel opened and that are still open
        self.results: OrderedDict[str, dict] = OrderedDict()  # request_id -> upsert_result data
        self.sent: OrderedDict[str, dict] = OrderedDict()  # request_id -> what was sent (no code)
        self.last_payload: dict[str, str] = {}  # source cell id -> hash sent by set_next_input
        self._target_registered = False

    # -- handshake ----------------------------------------------------------------------------------
    def hello(self) -> None:
        """Open a ``keras2torch`` comm saying hello (at ``%load_ext`` and for new clients)."""
        try:
            from comm import create_comm
        except ImportError:  # pragma: no cover - ipykernel depends on comm
            return
        self.register_target()
        comm = create_comm(target_name=COMM_TARGET, data={"type": "hello", "version": PROTOCOL_VERSION})
        self.greeted.add(_current_session(self.shell))
        if _is_dummy(comm):
            return
        self._watch(comm)

    def register_target(self) -> None:
        """Accept comms that a frontend opens on ``keras2torch`` (a late client's own handshake)."""
        if self._target_registered:
            return
        try:
            from comm import get_comm_manager

            get_comm_manager().register_target(COMM_TARGET, self._frontend_opened)
        except Exception:  # noqa: BLE001 - no kernel: nothing can open comms anyway
            log.debug("keras2torch: no comm manager", exc_info=True)
            return
        self._target_registered = True

    def _frontend_opened(self, comm, msg) -> None:
        self._watch(comm)
        self._on_msg(comm, msg)

    def _watch(self, comm) -> None:
        self.comms.append(comm)
        comm.on_msg(lambda msg, comm=comm: self._on_msg(comm, msg))
        comm.on_close(lambda msg, comm=comm: self._on_close(comm, msg))

    def _on_msg(self, comm, msg) -> None:
        data = (msg.get("content") or {}).get("data") or {}
        session = (msg.get("header") or {}).get("session")
        kind = data.get("type") if isinstance(data, dict) else None
        if kind in ("hello_ack", "hello"):
            if data.get("version") != PROTOCOL_VERSION:
                log.warning(
                    "keras2torch: frontend speaks protocol %r, not %d", data.get("version"), PROTOCOL_VERSION
                )
                return
            self.acked[session] = comm
            self.greeted.add(session)
            if kind == "hello":  # a frontend-initiated handshake: answer like at %load_ext
                comm.send({"type": "hello", "version": PROTOCOL_VERSION})
        elif kind == "upsert_result":
            request_id = str(data.get("request_id", ""))
            self.results[request_id] = dict(data)
            while len(self.results) > _RESULTS_KEPT:
                self.results.popitem(last=False)
            log.info("keras2torch: upsert %s -> %s", request_id, data.get("status"))

    def _on_close(self, comm, msg) -> None:
        if comm in self.comms:
            self.comms.remove(comm)
        for session in [s for s, c in self.acked.items() if c is comm]:
            del self.acked[session]

    # -- state --------------------------------------------------------------------------------------
    def extension_comm(self, session: str | None = None):
        """The comm on which the executing client acknowledged, or None (no extension there)."""
        session = _current_session(self.shell) if session is None else session
        if session is None:  # not in a kernel request: any acknowledgement will do
            return next(iter(self.acked.values()), None)
        return self.acked.get(session)

    @property
    def last_result(self) -> dict | None:
        return next(reversed(self.results.values()), None) if self.results else None

    def take_failures(self) -> list[str]:
        """Messages of upserts the extension reported as failed since the last call."""
        failures = []
        for request_id, result in self.results.items():
            sent = self.sent.get(request_id)
            if result.get("status") == "error" and sent is not None and not sent.get("reported"):
                sent["reported"] = True
                failures.append(str(result.get("message") or "no reason given"))
        return failures

    # -- delivery -----------------------------------------------------------------------------------
    def send_upsert(self, comm, code: str, source_cell_id: str | None, class_name: str) -> str:
        request_id = uuid.uuid4().hex
        data = {
            "type": "upsert",
            "request_id": request_id,
            "source_cell_id": source_cell_id or UNKNOWN_CELL,
            "code": code,
            "hash": body_hash(code),
            "class_name": class_name,
        }
        comm.send(data)
        self.sent[request_id] = {"source_cell_id": data["source_cell_id"], "hash": data["hash"]}
        while len(self.sent) > _RESULTS_KEPT:
            self.sent.popitem(last=False)
        return request_id

    def deliver(self, code: str, source_cell_id: str | None, class_name: str, mode: str) -> Delivery:
        """Write the generated cell by ``mode`` (``auto``: the extension if it answered, else
        ``set_next_input``, not repeated while the code of a source cell stays the same)."""
        if mode == "none":
            return Delivery("none", message="shown above only (--insert none)")
        session = _current_session(self.shell)
        comm = self.extension_comm(session) if mode in ("auto", "comm") else None
        if comm is not None:
            request_id = self.send_upsert(comm, code, source_cell_id, class_name)
            return Delivery("comm", request_id, "sent to the keras2torch JupyterLab extension")
        if mode == "comm":  # checked before the cell ran: only a comm closed meanwhile gets here
            raise RuntimeError("--insert comm: the keras2torch extension closed its comm")
        if mode == "auto" and session not in self.greeted and session is not None:
            self.hello()  # a client we never greeted: the next run can use its extension
        digest = body_hash(code)
        if mode == "auto" and source_cell_id and self.last_payload.get(source_cell_id) == digest:
            return Delivery(
                "skipped",
                message="unchanged since the cell written by the previous run of this cell; not "
                "inserted again (--insert payload inserts anyway)",
            )
        self.shell.set_next_input(code, replace=False)
        if source_cell_id:
            self.last_payload[source_cell_id] = digest
        return Delivery("payload", message="inserted below by set_next_input (no extension answered)")


def get_link(shell=None) -> FrontendLink | None:
    """The :class:`FrontendLink` of ``shell`` (default: the running IPython), once loaded."""
    if shell is None:
        from IPython import get_ipython

        shell = get_ipython()
    magics = getattr(getattr(shell, "magics_manager", None), "registry", {}).get("Keras2TorchMagics")
    return getattr(magics, "link", None)
