"""A ROS domain id that no other run on this host holds, so that runs started side by side (the
demo, test sessions) never see each other's topics. Each id is held by a TCP port lock on
localhost, as ros-domain-coordinator does; the lock lasts as long as its socket."""

from __future__ import annotations

import os
import random
import socket

DOMAIN_IDS = range(1, 101)
LOCK_BASE_PORT = 32768        # id N is held by 127.0.0.1:(LOCK_BASE_PORT + N)


def reserve_domain_id() -> tuple[int, socket.socket]:
    """(id, lock): a domain id in 1..100 held until `lock` is closed (or the process ends).
    RuntimeError when every id is held."""
    candidates = list(DOMAIN_IDS)
    random.Random(os.getpid()).shuffle(candidates)
    for domain_id in candidates:
        lock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            lock.bind(("127.0.0.1", LOCK_BASE_PORT + domain_id))
        except OSError:
            lock.close()
            continue
        return domain_id, lock
    raise RuntimeError(f"no free ROS domain id in {DOMAIN_IDS.start}..{DOMAIN_IDS.stop - 1} "
                       "on this host")
