"""Import-only stand-in: composable nodes are not part of this project's tests."""


class _NotAvailable:
    """Any use raises: the real composition_interfaces is not installed in this environment."""

    def __init__(self, *args, **kwargs) -> None:
        raise RuntimeError("composition_interfaces is a test stand-in here (not on PyPI); "
                           "composable nodes cannot be loaded in these tests")


class LoadNode(_NotAvailable):
    Request = _NotAvailable
    Response = _NotAvailable


class UnloadNode(_NotAvailable):
    Request = _NotAvailable
    Response = _NotAvailable


class ListNodes(_NotAvailable):
    Request = _NotAvailable
    Response = _NotAvailable
