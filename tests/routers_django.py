"""URLs of the Django app in tests/routers.py (ROOT_URLCONF)."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.urls import path

from tests.routers import _hit


def _view(name: str) -> Any:
    def view(request: HttpRequest, **kw: Any) -> HttpResponse:
        return HttpResponse(_hit(name))

    return view


urlpatterns = [
    path("admin", _view("admin")),
    path("admin/<str:page>", _view("admin-page")),
    path("items", _view("items")),
    path("items/<str:id>", _view("item")),
    path("health", _view("health")),
]
