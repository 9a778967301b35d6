"""The gRPC transport over the core: the Open Inference Protocol's GRPCInferenceService, health and reflection."""
