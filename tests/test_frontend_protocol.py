"""The kernel side of the ``keras2torch`` handshake: only the protocol version it speaks is accepted."""

from __future__ import annotations

import logging

from kerastorch_magic import frontend


class _Comm:
    def __init__(self):
        self.sent: list[dict] = []

    def send(self, data):
        self.sent.append(data)


def _hello(kind: str, version) -> dict:
    return {"header": {"session": "client-1"}, "content": {"data": {"type": kind, "version": version}}}


def test_a_frontend_speaking_the_protocol_version_is_acknowledged():
    link, comm = frontend.FrontendLink(shell=None), _Comm()
    link._on_msg(comm, _hello("hello", frontend.PROTOCOL_VERSION))
    assert link.acked == {"client-1": comm}
    assert comm.sent == [{"type": "hello", "version": frontend.PROTOCOL_VERSION}]


def test_another_protocol_version_is_refused_and_the_log_names_both(caplog):
    link, comm = frontend.FrontendLink(shell=None), _Comm()
    other = frontend.PROTOCOL_VERSION + 1
    with caplog.at_level(logging.WARNING, logger=frontend.log.name):
        link._on_msg(comm, _hello("hello_ack", other))
    assert link.acked == {} and comm.sent == []
    assert f"frontend speaks protocol {other}, not {frontend.PROTOCOL_VERSION}" in caplog.text
