"""The HTTP API's library side, without Ray: request and response schemas, upload limits and
checks, API-key authentication, Host/Origin policy and security headers, previews and examples.

The Serve graph (``serve/``) wires these into FastAPI routes and deployments; everything here
is unit tested without a Ray cluster (docs/api.md describes the API itself).
"""
