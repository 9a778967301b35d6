"""Client mistakes as exceptions that carry their HTTP status, raised by decoding code that knows no HTTP."""


class InputError(Exception):
    status_code = 400

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class UndecodableInput(InputError):
    status_code = 400


class NotFound(InputError):
    status_code = 404


class RequestTimeout(InputError):
    status_code = 408


class TooLarge(InputError):
    status_code = 413


class UnsupportedMediaType(InputError):
    status_code = 415


class InvalidInput(InputError):
    status_code = 422
