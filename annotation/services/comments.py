"""Members' comments on cells: plain text, stored as typed (pages show it as text, never as HTML)."""

from __future__ import annotations

from django.contrib.auth.models import User

from annotation.models import COMMENT_MAX_CHARS, Cell, Comment


class CommentError(ValueError):
    """A comment that is refused (empty, too long); the message says why."""


def comment_add(*, cell: Cell, author: User, text: str) -> Comment:
    # NUL cannot be stored by PostgreSQL; other control characters but newlines and tabs are noise.
    cleaned = "".join(ch for ch in str(text) if ch in "\n\t" or ch >= " ").strip()
    if not cleaned:
        raise CommentError("a comment needs some text")
    if len(cleaned) > COMMENT_MAX_CHARS:
        raise CommentError(f"a comment has at most {COMMENT_MAX_CHARS} characters ({len(cleaned)} given)")
    return Comment.objects.create(cell=cell, author=author, text=cleaned)
