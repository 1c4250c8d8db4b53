"""The HTTP edge: routes, the OpenAPI document, problem+json, the console."""
