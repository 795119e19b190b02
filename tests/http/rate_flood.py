"""A REST client over its rate limit, in a process of its own (so its loop never competes for
the test process's interpreter lock with the client whose latency the test measures).

    RAFTKV_FLOOD_TOKEN=TOKEN python rate_flood.py PORT SECONDS MAX_REQUESTS

GETs one key with that bearer token as fast as one keep-alive connection allows, for at most
SECONDS and MAX_REQUESTS, or until SIGINT; prints "flooding" once its first 429 came back,
then one JSON line: the count of answers per status, how long it ran, and one 429's
Retry-After and body.
It runs at a lower CPU priority: a flooder is another machine, and on a 2-core test box an
unniced load generator would take the CPU from the server and the measured client alike.
"""

from __future__ import annotations

import http.client
import json
import os
import sys
import time
from collections import Counter

HOST = "127.0.0.1"


def flood(port: int, seconds: float, max_requests: int) -> dict[str, object]:
    statuses: Counter[int] = Counter()
    sample: dict[str, object] = {}
    connection = http.client.HTTPConnection(HOST, port, timeout=10.0)
    headers = {"Authorization": f"Bearer {os.environ['RAFTKV_FLOOD_TOKEN']}"}
    started = time.monotonic()
    deadline = started + seconds
    try:
        for _ in range(max_requests):
            if time.monotonic() > deadline:
                break
            connection.request("GET", "/kv/flood", headers=headers)
            response = connection.getresponse()
            body = response.read()
            statuses[response.status] += 1
            if response.status == 429 and not sample:
                sample = {"retry_after": response.headers.get("Retry-After"), "body": body.decode()}
                print("flooding", flush=True)
    except KeyboardInterrupt:  # the test is done measuring
        pass
    finally:
        connection.close()
    return {"statuses": {str(k): v for k, v in statuses.items()},
            "seconds": time.monotonic() - started, **sample}


if __name__ == "__main__":
    port, seconds, max_requests = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
    os.nice(10)
    print(json.dumps(flood(port, seconds, max_requests)), flush=True)
