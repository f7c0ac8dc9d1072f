"""The ceiling: a bare ASGI app under uvicorn that answers every request with a
constant prediction. Nothing served over HTTP from Python can be faster.

``python -m bench.ceiling --http_port PORT``
"""

from __future__ import annotations

import argparse

import uvicorn
from starlette.types import Receive, Scope, Send

ANSWER = b'{"predictions":[1]}'


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": ANSWER})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--http_port", type=int, required=True)
    args, _ = parser.parse_known_args()
    uvicorn.run(app, port=args.http_port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
