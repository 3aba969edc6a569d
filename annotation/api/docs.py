"""Swagger UI at /api/docs/, under the site's strict Content-Security-Policy.

drf-spectacular's split view serves the page's start-up script as a file of its own (``?script``) rather
than inline, and our template drops the inline <style>. Swagger UI's CSS draws its icons from data: URLs,
so this page alone may load images from data: as well; nothing else is widened.
"""

from __future__ import annotations

from csp.decorators import csp_update
from django.utils.decorators import method_decorator
from drf_spectacular.views import SpectacularSwaggerSplitView


@method_decorator(csp_update({"img-src": ["data:"]}), name="dispatch")
class SwaggerUiView(SpectacularSwaggerSplitView):
    template_name = "api/swagger_ui.html"
