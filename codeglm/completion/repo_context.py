"""Context from the rest of the workspace, chosen in the issue's order of precision:

1. ``import``: definitions of names used near the cursor in the files this file imports
   (resolved by the language's import rules, ``imports.imported_files``);
2. ``directory``: definitions of those names in the other files of the cursor's directory
   (Java's package, Go's package, a Python package's siblings);
3. ``recent``: regions of other files edited lately;
4. ``open`` (chosen by ``context``): definitions in other open documents.

Relevance bands keep that order through the prompt builder (which drops the least relevant
first); within a band a name used closer to the cursor ranks higher. Pure: everything comes
from the index and the arguments.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from codeglm.completion.imports import imported_files
from codeglm.completion.recent_edits import EditedRegion
from codeglm.completion.workspace_index import WorkspaceIndex
from codeglm.languages import Language

IMPORT_BAND = 2.0
DIRECTORY_BAND = 1.7
RECENT_BAND = 1.55
BAND_WIDTH = 0.29
# At most this many definitions of one name per band, and this many snippets in all.
PER_NAME = 2
MAX_REPO_SNIPPETS = 12
MAX_RECENT = 3


@dataclass(frozen=True)
class RepoSnippet:
    """A snippet from the workspace: ``source`` is "import", "directory" or "recent";
    ``path`` is relative to the workspace root."""

    source: str
    name: str
    path: str
    text: str
    relevance: float


@dataclass(frozen=True)
class WorkspaceContext:
    """What a completion may draw on beyond its own and the open documents."""

    index: WorkspaceIndex
    recent: tuple[EditedRegion, ...] = ()


def _definitions(
    index: WorkspaceIndex,
    source: str,
    band: float,
    names: Sequence[tuple[str, int]],
    paths: Collection[str],
    taken: set[tuple[str, str]],
) -> list[RepoSnippet]:
    found: list[RepoSnippet] = []
    for name, distance in names:
        count = 0
        for path, symbol in index.symbols_named(name, paths):
            if (path, name) in taken or count >= PER_NAME:
                continue
            taken.add((path, name))
            count += 1
            found.append(RepoSnippet(source, name, path, symbol.text, band + BAND_WIDTH / (1 + distance)))
    return found


def _language_of(index: WorkspaceIndex, path: str) -> str | None:
    indexed = index.file(path)
    return indexed.language_id if indexed is not None else None


def repo_snippets(
    workspace: WorkspaceContext,
    language: Language,
    importer: str | None,
    import_statements: Sequence[str],
    source_text: str,
    used: dict[str, int],
    defined_here: Collection[str],
) -> list[RepoSnippet]:
    """Workspace snippets for a cursor in ``importer`` (its path relative to the root, None when
    it is outside the workspace), most relevant first.

    ``used``: names near the cursor -> distance in lines; ``defined_here``: names the current
    file defines (its own definitions serve those).
    """
    index = workspace.index
    names = sorted(((n, d) for n, d in used.items() if n not in defined_here), key=lambda item: (item[1], item[0]))
    taken: set[tuple[str, str]] = set()
    snippets: list[RepoSnippet] = []
    if importer is not None:
        imported = imported_files(language, index, importer, import_statements, source_text)
        snippets += _definitions(index, "import", IMPORT_BAND, names, imported, taken)
        # A name the imports resolved is not looked for again next door.
        resolved = {s.name for s in snippets}
        directory = importer.rpartition("/")[0]
        siblings = [p for p in index.files_in(directory) if p != importer and _language_of(index, p) == language.id]
        unresolved = [(n, d) for n, d in names if n not in resolved]
        snippets += _definitions(index, "directory", DIRECTORY_BAND, unresolved, siblings, taken)
    snippets = snippets[:MAX_REPO_SNIPPETS]
    recent = [r for r in workspace.recent if r.path != importer][:MAX_RECENT]
    for i, region in enumerate(recent):
        snippets.append(RepoSnippet("recent", f"{region.path}:{region.first + 1}", region.path, region.text,
                                    RECENT_BAND + BAND_WIDTH / (1 + i) * 0.5))
    return sorted(snippets, key=lambda s: -s.relevance)


__all__ = ["RepoSnippet", "WorkspaceContext", "repo_snippets"]
