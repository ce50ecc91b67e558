"""Serving a saved model over HTTP: FastAPI on uvicorn, a JSON API and a web page.

``settings`` (the defaults and limits), ``images`` (request bytes -> a checked PIL image),
``bodies`` (a request body read within its limit -> image bytes), ``reader`` (the predictor and its
thread-safe use), ``app`` (the routes), ``server`` (a bound socket and uvicorn). The command is
``python -m text_recognizer.serve``.
"""
