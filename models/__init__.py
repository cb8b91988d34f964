"""Pydantic models shared by workflows, activities and the gateway.

Belongs here: domain objects, workflow and activity inputs/results (one model each, so fields can
be added without breaking running workflows), API request/response schemas and enums. No I/O.
"""
