"""Static files for `make serve`: WhiteNoise's compressed, content-hashed storage, without rewriting
references inside JavaScript files.

Django rewrites ``//# sourceMappingURL=...`` comments in JS to hashed names and stops collectstatic when
the map is not there; vendored minified scripts (Chart.js) name maps that are not shipped. The page
scripts import each other by relative path (ES modules), which is left as written either way, so JS is
copied and hashed but not rewritten. CSS references (url(), @import, source maps) are still rewritten.
"""

from __future__ import annotations

from whitenoise.storage import CompressedManifestStaticFilesStorage


class StaticStorage(CompressedManifestStaticFilesStorage):
    patterns = tuple(
        (glob, rules) for glob, rules in CompressedManifestStaticFilesStorage.patterns if glob != "*.js"
    )
