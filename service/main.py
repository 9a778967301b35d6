"""`sae-serve`: run the service under uvicorn with the settings from the environment."""

import logging
import signal

import uvicorn

from service.app import create_app
from service.observability import JsonFormatter
from service.settings import get_settings


def main() -> None:
    settings = get_settings()
    # uvicorn finishes in-flight requests on SIGTERM, then re-raises the signal to the previous
    # handler; a graceful shutdown is a clean exit, so that handler does nothing and we exit 0.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    handler = logging.StreamHandler()
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=settings.log_level.upper(), handlers=[handler])
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        timeout_graceful_shutdown=settings.graceful_shutdown_s,
        log_config=None,  # uvicorn's loggers go through the handler above
        access_log=False,  # the service writes its own access line for each request
    )


if __name__ == "__main__":
    main()
