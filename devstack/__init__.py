"""The local stack: the Chalice app on embedded moto behind an API Gateway emulation.

A development tool only: it lives outside chalicelib/ and is never deployed.
"""
