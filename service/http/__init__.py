"""The HTTP transports over the core: native REST, the Open Inference Protocol's REST routes, docs and the demo."""
