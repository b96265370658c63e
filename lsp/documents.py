"""Which document URIs the server can read, and why not, in words the editor can show.

pygls hands the server any URI a client names: one the editor has open, or else one it
reads from disk on first use. A missing file, a directory or a URI that is no file at all
(``http://...``, ``foo:bar``, a bare path) then failed deep inside a handler as an
internal error with a traceback. ``check_readable`` says up front, as a ``-32602``
message naming the file, what is wrong; the handlers call it before touching the text.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from pygls.uris import to_fs_path

FILE_SCHEME = "file"


class DocumentError(ValueError):
    """The document cannot be read; the message names it and says why."""


def check_readable(uri: str, is_open: bool) -> None:
    """Raise ``DocumentError`` unless the server can read ``uri``.

    An open document is read from the editor's copy whatever its scheme (``untitled:``
    included). Otherwise only a ``file:`` URI of an existing regular file can be read; any
    other scheme is an error, never a path relative to the server's directory.
    """
    if is_open:
        return
    scheme = urlsplit(uri).scheme
    if not scheme:
        raise DocumentError(
            f"{uri!r} is not a URI: expected file:///path/to/file or the URI of an open document"
        )
    if scheme.lower() != FILE_SCHEME:
        raise DocumentError(f"{uri} is not open in the editor and the server reads only file: URIs from disk")
    path = to_fs_path(uri)
    if not path:
        raise DocumentError(f"{uri} names no file")
    file = Path(path)
    if file.is_dir():
        raise DocumentError(f"{file} is a directory, not a file")
    if not file.exists():
        raise DocumentError(f"{file} does not exist (and {uri} is not open in the editor)")
    if not file.is_file():
        raise DocumentError(f"{file} is not a regular file")


def read_error(uri: str, error: OSError | UnicodeDecodeError) -> DocumentError:
    """A file that passed ``check_readable`` but could not be read (permissions, not UTF-8)."""
    if isinstance(error, UnicodeDecodeError):
        return DocumentError(f"{to_fs_path(uri) or uri} is not UTF-8 text")
    return DocumentError(f"cannot read {to_fs_path(uri) or uri}: {error.strerror or error}")
