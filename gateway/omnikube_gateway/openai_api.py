"""Placeholder router; its owner replaces this module."""

from fastapi import APIRouter

router = APIRouter()
