"""A real IPython kernel for the magic's tests, driven with jupyter_client like a frontend.

``KernelSession`` starts an ipykernel with this venv's Python (a temporary kernelspec) and hands
out clients, each with its own session id (``header.session``), as separate browser tabs would
have. ``Client.execute`` sends an ``execute_request`` (optionally with ``metadata.cellId`` like
JupyterLab) and returns the reply plus every IOPub message that answers it; ``Client.send_comm``
plays a frontend's side of a comm.
"""

from __future__ import annotations

import json
import os
import queue
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from jupyter_client import KernelManager
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.session import Session

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 120


@dataclass
class Run:
    """One execute_request: its reply content and the IOPub messages it caused."""

    msg_id: str
    reply: dict
    messages: list[dict] = field(default_factory=list)

    @property
    def status(self) -> str:
        return self.reply["status"]

    @property
    def payloads(self) -> list[dict]:
        return self.reply.get("payload", [])

    @property
    def next_inputs(self) -> list[dict]:
        return [p for p in self.payloads if p.get("source") == "set_next_input"]

    def of_type(self, *kinds: str) -> list[dict]:
        return [m for m in self.messages if m["header"]["msg_type"] in kinds]

    @property
    def stdout(self) -> str:
        return "".join(
            m["content"]["text"] for m in self.of_type("stream") if m["content"]["name"] == "stdout"
        )

    @property
    def stderr(self) -> str:
        return "".join(
            m["content"]["text"] for m in self.of_type("stream") if m["content"]["name"] == "stderr"
        )

    @property
    def errors(self) -> list[dict]:
        return [m["content"] for m in self.of_type("error")]

    @property
    def displays(self) -> list[dict]:
        return [m["content"]["data"] for m in self.of_type("display_data", "execute_result")]

    def comm_data(self, kind: str | None = None) -> list[dict]:
        """``data`` of the comm_open/comm_msg messages sent during this execution."""
        found = []
        for message in self.of_type("comm_open", "comm_msg"):
            data = message["content"].get("data") or {}
            if kind is None or data.get("type") == kind:
                found.append({**data, "_comm_id": message["content"]["comm_id"], "_msg": message})
        return found

    @property
    def upserts(self) -> list[dict]:
        return self.comm_data("upsert")

    @property
    def text(self) -> str:
        """All visible text: streams, text/plain of displays, error names and values."""
        parts = [self.stdout, self.stderr]
        parts += [d.get("text/plain", "") for d in self.displays]
        parts += [f"{e['ename']}: {e['evalue']}" for e in self.errors]
        return "\n".join(parts)


class Client:
    def __init__(self, manager: KernelManager):
        session = Session(key=manager.session.key, signature_scheme=manager.session.signature_scheme)
        self.kc = manager.client(session=session)
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=TIMEOUT)
        self.session_id = session.session

    def execute(self, code: str, cell_id: str | None = None, timeout: float = TIMEOUT) -> Run:
        content = {
            "code": code,
            "silent": False,
            "store_history": True,
            "user_expressions": {},
            "allow_stdin": False,
            "stop_on_error": True,
        }
        msg = self.kc.session.msg("execute_request", content, metadata={"cellId": cell_id} if cell_id else {})
        self.kc.shell_channel.send(msg)
        msg_id = msg["header"]["msg_id"]
        messages = self._iopub_until_idle(msg_id, timeout)
        deadline = time.monotonic() + timeout
        while True:
            reply = self.kc.get_shell_msg(timeout=max(1, deadline - time.monotonic()))
            if reply["parent_header"].get("msg_id") == msg_id:
                return Run(msg_id, reply["content"], messages)

    def _iopub_until_idle(self, msg_id: str, timeout: float) -> list[dict]:
        messages, deadline = [], time.monotonic() + timeout
        while True:
            try:
                message = self.kc.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"no idle status for {msg_id} within {timeout}s") from None
            if message["parent_header"].get("msg_id") != msg_id:
                continue
            if message["header"]["msg_type"] == "status":
                if message["content"]["execution_state"] == "idle":
                    return messages
                continue
            messages.append(message)

    def send_comm(self, comm_id: str, data: dict) -> None:
        """A frontend's comm_msg to the kernel (handled once the kernel is idle)."""
        self.kc.shell_channel.send(self.kc.session.msg("comm_msg", {"comm_id": comm_id, "data": data}))

    def open_comm(self, target: str, data: dict) -> tuple[str, list[dict]]:
        """A frontend-initiated comm_open: the new comm id and the IOPub messages it caused."""
        import uuid

        comm_id = uuid.uuid4().hex
        msg = self.kc.session.msg("comm_open", {"comm_id": comm_id, "target_name": target, "data": data})
        self.kc.shell_channel.send(msg)
        return comm_id, self._iopub_until_idle(msg["header"]["msg_id"], TIMEOUT)

    def flush_iopub(self) -> None:
        while True:
            try:
                self.kc.get_iopub_msg(timeout=0.2)
            except queue.Empty:
                return

    def stop(self) -> None:
        self.kc.stop_channels()


class KernelSession:
    """An ipykernel on this venv's Python, with the project importable and TF quiet."""

    def __init__(self, env: dict[str, str] | None = None):
        """``env``: more environment variables for the kernel (over this process's and the above)."""
        self._dir = tempfile.TemporaryDirectory(prefix="k2t-kernelspec-")
        spec_dir = Path(self._dir.name) / "k2t-test"
        spec_dir.mkdir()
        env = {
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            "TF_CPP_MIN_LOG_LEVEL": "3",
            "KERAS_BACKEND": "tensorflow",
            "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
        } | (env or {})
        spec = {
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "kerastorch_magic tests",
            "language": "python",
            "env": env,
        }
        (spec_dir / "kernel.json").write_text(json.dumps(spec))
        self.manager = KernelManager(
            kernel_name="k2t-test", kernel_spec_manager=KernelSpecManager(kernel_dirs=[self._dir.name])
        )
        self.manager.start_kernel(cwd=str(ROOT))
        self.clients: list[Client] = []

    def client(self) -> Client:
        client = Client(self.manager)
        self.clients.append(client)
        return client

    def shutdown(self) -> None:
        for client in self.clients:
            client.stop()
        self.manager.shutdown_kernel(now=True)
        self._dir.cleanup()
