"""Watch banger's lifecycle events with the nats-py client (a NATS client banger did not write),
the way `nats sub 'banger.events.>'` would, and print each one as a JSON line on stdout:

    {"subject": ..., "headers": {...}, "data": <the event body, parsed>}

Usage: watch_events.py STACK_FILE
STACK_FILE is the stack file `banger up` wrote (<state_dir>/stack.toml): the bus URL and
credentials are read from its [nats] table and the subject prefix from `prefix`.
Prints "ready" on stderr once the subscription is in place; runs until killed.
"""

import asyncio
import json
import sys
import tomllib

import nats


async def main(stack_file: str) -> None:
    with open(stack_file, "rb") as f:
        stack = tomllib.load(f)
    conf = stack.get("nats", {})
    prefix = stack.get("prefix", "banger")
    nc = await nats.connect(
        servers=conf.get("urls", ["nats://127.0.0.1:4222"]),
        user=conf.get("user"),
        password=conf.get("password"),
    )

    async def on_event(msg):
        line = {
            "subject": msg.subject,
            "headers": dict(msg.headers or {}),
            "data": json.loads(msg.data),
        }
        print(json.dumps(line), flush=True)

    await nc.subscribe(f"{prefix}.events.>", cb=on_event)
    await nc.flush()
    print("ready", file=sys.stderr, flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
