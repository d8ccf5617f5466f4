"""Reference BLAKE3 for the tests: the `blake3` package from PyPI (the official bindings)."""

import blake3


def hex(data: bytes) -> str:
    return blake3.blake3(data).hexdigest()
