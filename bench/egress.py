"""CPU per outbound request through voicebot/egress, beside libcurl's own floor, against a local answer server.

    .venv/bin/python bench/egress.py [requests]

The server (asyncio, one fixed JSON answer to every request on a kept-alive
connection) runs in a process of its own on the second core; the requests
run here on the first, one after another, so the figure is the client's own
CPU: a model's 2 kB POST read whole and streamed, a VoIPBin ``say``, and the
same POST made with pycurl directly (what libcurl itself costs). For a
turn's whole cost, A/B against another commit, use bench/knee.py and
bench/first_word.py with ``--against``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from voicebot_testing.processes import free_port, wait_for  # noqa: E402

SERVER = r'''
import asyncio, sys
BODY = b'{"id":"msg_1","type":"message","role":"assistant","content":[{"type":"text","text":"It shipped."}],' \
       b'"stop_reason":"end_turn","usage":{"input_tokens":10,"output_tokens":5}}'
ANSWER = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\nrequest-id: req_1\r\n"
          b"date: Mon, 07 Dec 2026 10:00:00 GMT\r\n\r\n" % len(BODY)) + BODY
async def serve(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            await reader.readexactly(length)
            writer.write(ANSWER)
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()
async def main():
    async with await asyncio.start_server(serve, "127.0.0.1", int(sys.argv[1])) as server:
        await server.serve_forever()
asyncio.run(main())
'''


def cpu_us(action: Callable[[], object], rounds: int) -> float:
    for _ in range(min(300, rounds)):
        action()
    started = time.process_time()
    for _ in range(rounds):
        action()
    return 1e6 * (time.process_time() - started) / rounds


def main() -> None:
    import pycurl

    from voicebot.deadline import within
    from voicebot.egress import HTTP
    from voicebot.voipbin.client import VoipbinClient

    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 4000
    cores = sorted(os.sched_getaffinity(0))
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(port)])
    try:
        if len(cores) > 1:
            os.sched_setaffinity(server.pid, {cores[1]})
            os.sched_setaffinity(0, {cores[0]})
        wait_for(lambda: socket.create_connection(("127.0.0.1", port)).close() or True, what="answer server")
        url = f"http://127.0.0.1:{port}/v1/messages"
        body = json.dumps({"model": "m", "max_tokens": 50, "messages": [{"role": "user", "content": "x" * 2000}]}
                          ).encode()
        headers = {"Content-Type": "application/json", "Accept": "application/json", "x-api-key": "k",
                   "anthropic-version": "2023-06-01", "User-Agent": "bench"}
        http = HTTP(headers=headers)

        def whole() -> None:
            with within(5):
                http.request("POST", url, body=body, limit=1 << 22)

        def streamed() -> None:
            with within(5), http.stream("POST", url, body=body, limit=1 << 22) as answer:
                answer.read()

        voipbin = VoipbinClient(f"http://127.0.0.1:{port}", "key")
        curl = pycurl.Curl()
        curl_headers = [f"{name}: {value}" for name, value in headers.items()] + ["Expect:"]

        def bare() -> None:
            pieces: list[bytes] = []
            curl.setopt(pycurl.URL, url)
            curl.setopt(pycurl.POSTFIELDS, body)
            curl.setopt(pycurl.HTTPHEADER, curl_headers)
            curl.setopt(pycurl.WRITEFUNCTION, pieces.append)
            curl.setopt(pycurl.TIMEOUT_MS, 5000)
            curl.perform()

        print("| request (2 kB POST, kept-alive) | client CPU us |\n|---|---|")
        for name, action in [("egress, read whole", whole), ("egress, streamed", streamed),
                             ("VoIPBin say (its client on egress)",
                              lambda: voipbin.say("sp-1", "It shipped on Tuesday, and it should arrive by Friday.")),
                             ("pycurl alone (libcurl's floor)", bare)]:
            print(f"| {name} | {cpu_us(action, rounds):.0f} |", flush=True)
        http.close()
        voipbin.close()
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
