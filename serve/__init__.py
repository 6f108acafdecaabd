"""The Ray Serve graph that serves a model bundle over HTTP (see docs/api.md).

``serve.app:build_app`` builds the application: an authenticated FastAPI ingress in front of
separately scaled deployments (Preprocess, ViewClassifier, VideoEncoder, AnatomicalAttention,
RAIRetriever), each a plain class here that calls :class:`echoprime.inference.StudyInterpreter`.
"""
