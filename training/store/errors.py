"""What can go wrong when reading or writing a model store."""


class StoreError(Exception):
    """The store could not be read or written; the message says where and why."""


class StoreUnavailableError(StoreError):
    """The store cannot be reached, or refuses our credentials."""


class IntegrityError(StoreError):
    """A published file is missing, torn, tampered with or unsafe to load."""


class FileTooLargeError(IntegrityError):
    """A stored file is larger than a reader will read."""

    def __init__(self, where: str, max_bytes: int) -> None:
        super().__init__(f"{where}: larger than the limit of {max_bytes} bytes")
