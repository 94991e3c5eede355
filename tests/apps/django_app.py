"""A one-file Django project for `gunicorn tests.apps.django_app:application`: the login flow
of flask_app.py with Django's session and CSRF cookies. The settings it needs behind sockgate
are FORCE_SCRIPT_NAME and USE_X_FORWARDED_HOST."""

from __future__ import annotations

import django
from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.middleware.csrf import get_token
from django.urls import path, reverse

settings.configure(
    DEBUG=False,
    SECRET_KEY="tests only",
    ROOT_URLCONF=__name__,
    ALLOWED_HOSTS=["localhost", "127.0.0.1"],
    # The prefix sockgate strips (Django does not read X-Forwarded-Prefix); reverse() adds it.
    FORCE_SCRIPT_NAME="/app1",
    # Absolute URLs from X-Forwarded-Host (sockgate sends the client's Host there as well).
    USE_X_FORWARDED_HOST=True,
    MIDDLEWARE=[
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.middleware.csrf.CsrfViewMiddleware",
    ],
    INSTALLED_APPS=["django.contrib.sessions"],
    SESSION_ENGINE="django.contrib.sessions.backends.signed_cookies",
)
django.setup()


def index(request: HttpRequest) -> HttpResponse:
    user = request.session.get("user")
    if user is None:
        return HttpResponseRedirect("/login")  # by hand, as if at the root: sockgate fixes it
    home = request.build_absolute_uri(reverse("index"))
    return HttpResponse(f'<h1 id="hello">Hello {user}</h1><a id="home" href="{home}">home</a>')


def login(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        request.session["user"] = request.POST["user"]
        return HttpResponseRedirect(reverse("index"))  # built by Django: already /app1/
    return HttpResponse(
        f'<form method="post" action="{reverse("login")}">'
        f'<input type="hidden" name="csrfmiddlewaretoken" value="{get_token(request)}">'
        '<input name="user"><button type="submit">log in</button></form>'
    )


def links(request: HttpRequest) -> JsonResponse:
    return JsonResponse(
        {
            "index": reverse("index"),
            "external": request.build_absolute_uri(reverse("index")),
            "script_name": request.META.get("SCRIPT_NAME", ""),
            "path_info": request.path_info,
        }
    )


urlpatterns = [
    path("", index, name="index"),
    path("login", login, name="login"),
    path("links", links, name="links"),
]

from django.core.wsgi import get_wsgi_application  # noqa: E402

application = get_wsgi_application()
