"""The one table of languages: names, extensions, comment syntax, CodeGeeX tag, grammar.

Adding a language is adding a row here (and its ``tree-sitter-<language>`` package).
Each row also carries the tree-sitter node types and queries that the completion
pipeline needs (definitions, imports, enclosing scopes), so nothing above this module
branches on a language id.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import cache
from pathlib import PurePath

import tree_sitter


class UnsupportedLanguageError(ValueError):
    """A language id, name or extension that is not in the table."""


@dataclass(frozen=True)
class Language:
    """One supported language.

    ``grammar``: (module, function) of the official tree-sitter package that returns
    the grammar pointer, loaded lazily by ``ts_language()``.
    ``definition_query``: a tree-sitter query whose matches capture ``@definition``
    (the whole definition) and ``@name`` (its name).
    ``scope_types``: nodes whose header counts as an enclosing function/class header.
    ``import_types``: top-level nodes that are imports/includes.
    ``identifier_types``: leaf nodes that name something (for "names used near the cursor").
    ``file_naming``: how source files are conventionally named ("snake_case",
    "PascalCase" after the main class, "camelCase" or "kebab-case").
    ``block_types``: where a ``:`` / ``{`` ending a line opens a block of statements:
    for indentation languages the compound statements whose ``:`` starts their body,
    for brace languages the brace-delimited bodies (not literals or initializers).
    """

    id: str
    vscode_ids: tuple[str, ...]
    display_name: str
    extensions: tuple[str, ...]
    line_comment: str
    block_comment: tuple[str, str] | None
    codegeex_tag: str
    humaneval_name: str | None
    grammar: tuple[str, str]
    definition_query: str
    scope_types: frozenset[str]
    import_types: frozenset[str]
    identifier_types: frozenset[str]
    file_naming: str
    # Python-like languages delimit blocks by indentation, the others by braces.
    indentation_blocks: bool = False
    block_types: frozenset[str] = frozenset()

    def ts_language(self) -> tree_sitter.Language:
        """The tree-sitter grammar (loaded once per process)."""
        return _load_grammar(self.grammar)

    def parser(self) -> tree_sitter.Parser:
        """A fresh parser for this language (parsers are not thread-safe: one per user)."""
        return tree_sitter.Parser(self.ts_language())

    def comment(self, text: str) -> str:
        """``text`` as line comments, one per line, each ending in a newline."""
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        return "".join(f"{self.line_comment} {line}".rstrip() + "\n" for line in lines)


@cache
def _load_grammar(grammar: tuple[str, str]) -> tree_sitter.Language:
    module_name, function_name = grammar
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        package = module_name.replace("_", "-")
        raise UnsupportedLanguageError(
            f"the tree-sitter grammar package {package!r} is not installed; run: pip install {package}"
        ) from exc
    return tree_sitter.Language(getattr(module, function_name)())


_C_FAMILY_COMMENT = ("/*", "*/")

LANGUAGES: tuple[Language, ...] = (
    Language(
        id="python",
        vscode_ids=("python",),
        display_name="Python",
        extensions=(".py", ".pyi", ".pyw"),
        line_comment="#",
        block_comment=None,
        codegeex_tag="# language: Python",
        humaneval_name="python",
        grammar=("tree_sitter_python", "language"),
        definition_query="""
            (function_definition name: (identifier) @name) @definition
            (class_definition name: (identifier) @name) @definition
            (module (expression_statement (assignment left: (identifier) @name)) @definition)
        """,
        scope_types=frozenset({"function_definition", "class_definition"}),
        import_types=frozenset({"import_statement", "import_from_statement", "future_import_statement"}),
        identifier_types=frozenset({"identifier"}),
        file_naming="snake_case",
        indentation_blocks=True,
        block_types=frozenset(
            {
                "function_definition", "class_definition", "if_statement", "elif_clause", "else_clause",
                "for_statement", "while_statement", "try_statement", "except_clause", "except_group_clause",
                "finally_clause", "with_statement", "match_statement", "case_clause",
            }
        ),
    ),
    Language(
        id="java",
        vscode_ids=("java",),
        display_name="Java",
        extensions=(".java",),
        line_comment="//",
        block_comment=_C_FAMILY_COMMENT,
        codegeex_tag="// language: Java",
        humaneval_name="java",
        grammar=("tree_sitter_java", "language"),
        definition_query="""
            (method_declaration name: (identifier) @name) @definition
            (constructor_declaration name: (identifier) @name) @definition
            (class_declaration name: (identifier) @name) @definition
            (interface_declaration name: (identifier) @name) @definition
            (enum_declaration name: (identifier) @name) @definition
            (record_declaration name: (identifier) @name) @definition
        """,
        scope_types=frozenset(
            {
                "method_declaration",
                "constructor_declaration",
                "class_declaration",
                "interface_declaration",
                "enum_declaration",
                "record_declaration",
            }
        ),
        import_types=frozenset({"import_declaration", "package_declaration"}),
        identifier_types=frozenset({"identifier", "type_identifier"}),
        file_naming="PascalCase",
        block_types=frozenset(
            {
                "block", "class_body", "interface_body", "enum_body", "constructor_body", "switch_block",
                "annotation_type_body",
            }
        ),
    ),
    Language(
        id="cpp",
        vscode_ids=("cpp", "cuda-cpp"),
        display_name="C++",
        extensions=(".cpp", ".cc", ".cxx", ".c++", ".hpp", ".hh", ".hxx", ".h++"),
        line_comment="//",
        block_comment=_C_FAMILY_COMMENT,
        codegeex_tag="// language: C++",
        humaneval_name="cpp",
        grammar=("tree_sitter_cpp", "language"),
        definition_query="""
            (function_definition declarator: (function_declarator
                declarator: [(identifier) (field_identifier)] @name)) @definition
            (function_definition declarator: (function_declarator
                declarator: (qualified_identifier name: (identifier) @name))) @definition
            (function_definition declarator: (pointer_declarator declarator: (function_declarator
                declarator: [(identifier) (field_identifier)] @name))) @definition
            (function_definition declarator: (reference_declarator (function_declarator
                declarator: [(identifier) (field_identifier)] @name))) @definition
            (class_specifier name: (type_identifier) @name body: (_)) @definition
            (struct_specifier name: (type_identifier) @name body: (_)) @definition
            (enum_specifier name: (type_identifier) @name body: (_)) @definition
            (type_definition declarator: (type_identifier) @name) @definition
            (alias_declaration name: (type_identifier) @name) @definition
        """,
        scope_types=frozenset(
            {"function_definition", "class_specifier", "struct_specifier", "namespace_definition"}
        ),
        import_types=frozenset({"preproc_include", "using_declaration"}),
        identifier_types=frozenset({"identifier", "type_identifier", "field_identifier"}),
        file_naming="snake_case",
        block_types=frozenset({"compound_statement", "field_declaration_list", "declaration_list", "enumerator_list"}),
    ),
    Language(
        id="c",
        vscode_ids=("c",),
        display_name="C",
        extensions=(".c", ".h"),
        line_comment="//",
        block_comment=_C_FAMILY_COMMENT,
        codegeex_tag="// language: C",
        humaneval_name=None,
        grammar=("tree_sitter_c", "language"),
        definition_query="""
            (function_definition declarator: (function_declarator declarator: (identifier) @name)) @definition
            (function_definition declarator: (pointer_declarator declarator: (function_declarator
                declarator: (identifier) @name))) @definition
            (struct_specifier name: (type_identifier) @name body: (_)) @definition
            (enum_specifier name: (type_identifier) @name body: (_)) @definition
            (type_definition declarator: (type_identifier) @name) @definition
        """,
        scope_types=frozenset({"function_definition", "struct_specifier"}),
        import_types=frozenset({"preproc_include"}),
        identifier_types=frozenset({"identifier", "type_identifier", "field_identifier"}),
        file_naming="snake_case",
        block_types=frozenset({"compound_statement", "field_declaration_list", "enumerator_list"}),
    ),
    Language(
        id="javascript",
        vscode_ids=("javascript", "javascriptreact"),
        display_name="JavaScript",
        extensions=(".js", ".mjs", ".cjs", ".jsx"),
        line_comment="//",
        block_comment=_C_FAMILY_COMMENT,
        codegeex_tag="// language: JavaScript",
        humaneval_name="js",
        grammar=("tree_sitter_javascript", "language"),
        definition_query="""
            (function_declaration name: (identifier) @name) @definition
            (generator_function_declaration name: (identifier) @name) @definition
            (class_declaration name: (identifier) @name) @definition
            (method_definition name: (property_identifier) @name) @definition
            (lexical_declaration (variable_declarator name: (identifier) @name
                value: [(arrow_function) (function_expression) (class)])) @definition
            (variable_declaration (variable_declarator name: (identifier) @name
                value: [(arrow_function) (function_expression) (class)])) @definition
        """,
        scope_types=frozenset(
            {
                "function_declaration",
                "generator_function_declaration",
                "class_declaration",
                "method_definition",
                "arrow_function",
                "function_expression",
            }
        ),
        import_types=frozenset({"import_statement"}),
        identifier_types=frozenset({"identifier", "property_identifier"}),
        file_naming="camelCase",
        block_types=frozenset({"statement_block", "class_body", "switch_body"}),
    ),
    Language(
        id="typescript",
        vscode_ids=("typescript", "typescriptreact"),
        display_name="TypeScript",
        extensions=(".ts", ".mts", ".cts", ".tsx"),
        line_comment="//",
        block_comment=_C_FAMILY_COMMENT,
        codegeex_tag="// language: TypeScript",
        humaneval_name=None,
        grammar=("tree_sitter_typescript", "language_typescript"),
        definition_query="""
            (function_declaration name: (identifier) @name) @definition
            (generator_function_declaration name: (identifier) @name) @definition
            (class_declaration name: (type_identifier) @name) @definition
            (abstract_class_declaration name: (type_identifier) @name) @definition
            (method_definition name: (property_identifier) @name) @definition
            (interface_declaration name: (type_identifier) @name) @definition
            (type_alias_declaration name: (type_identifier) @name) @definition
            (enum_declaration name: (identifier) @name) @definition
            (lexical_declaration (variable_declarator name: (identifier) @name
                value: [(arrow_function) (function_expression) (class)])) @definition
        """,
        scope_types=frozenset(
            {
                "function_declaration",
                "generator_function_declaration",
                "class_declaration",
                "abstract_class_declaration",
                "method_definition",
                "interface_declaration",
                "arrow_function",
                "function_expression",
            }
        ),
        import_types=frozenset({"import_statement"}),
        identifier_types=frozenset({"identifier", "type_identifier", "property_identifier"}),
        file_naming="camelCase",
        block_types=frozenset(
            {"statement_block", "class_body", "switch_body", "interface_body", "enum_body", "object_type"}
        ),
    ),
    Language(
        id="go",
        vscode_ids=("go",),
        display_name="Go",
        extensions=(".go",),
        line_comment="//",
        block_comment=_C_FAMILY_COMMENT,
        codegeex_tag="// language: Go",
        humaneval_name="go",
        grammar=("tree_sitter_go", "language"),
        definition_query="""
            (function_declaration name: (identifier) @name) @definition
            (method_declaration name: (field_identifier) @name) @definition
            (type_declaration (type_spec name: (type_identifier) @name)) @definition
        """,
        scope_types=frozenset({"function_declaration", "method_declaration", "func_literal"}),
        import_types=frozenset({"import_declaration", "package_clause"}),
        identifier_types=frozenset({"identifier", "type_identifier", "field_identifier"}),
        file_naming="snake_case",
        block_types=frozenset(
            {
                "block", "field_declaration_list", "interface_type", "expression_switch_statement",
                "type_switch_statement", "select_statement",
            }
        ),
    ),
    Language(
        id="rust",
        vscode_ids=("rust",),
        display_name="Rust",
        extensions=(".rs",),
        line_comment="//",
        block_comment=_C_FAMILY_COMMENT,
        codegeex_tag="// language: Rust",
        humaneval_name="rust",
        grammar=("tree_sitter_rust", "language"),
        definition_query="""
            (function_item name: (identifier) @name) @definition
            (function_signature_item name: (identifier) @name) @definition
            (struct_item name: (type_identifier) @name) @definition
            (enum_item name: (type_identifier) @name) @definition
            (trait_item name: (type_identifier) @name) @definition
            (type_item name: (type_identifier) @name) @definition
            (impl_item type: (type_identifier) @name) @definition
        """,
        scope_types=frozenset({"function_item", "impl_item", "trait_item", "mod_item", "closure_expression"}),
        import_types=frozenset({"use_declaration", "extern_crate_declaration"}),
        identifier_types=frozenset({"identifier", "type_identifier", "field_identifier"}),
        file_naming="snake_case",
        block_types=frozenset({"block", "declaration_list", "field_declaration_list", "enum_variant_list", "match_block"}),
    ),
)


def _index() -> dict[str, Language]:
    table: dict[str, Language] = {}
    for lang in LANGUAGES:
        keys = {lang.id, lang.display_name.lower(), *lang.vscode_ids, *lang.extensions}
        keys.update(ext.lstrip(".") for ext in lang.extensions)
        if lang.humaneval_name:
            keys.add(lang.humaneval_name)
        for key in keys:
            table.setdefault(key.lower(), lang)
    # Common spellings people type on the command line.
    for alias, target in {"c++": "cpp", "js": "javascript", "ts": "typescript", "golang": "go", "py": "python"}.items():
        table[alias] = table[target]
    return table


_BY_KEY = _index()


def get_language(name_or_id_or_extension: str) -> Language:
    """The row for an id, VS Code languageId, display name or file extension (any case)."""
    key = name_or_id_or_extension.strip().lower()
    found = _BY_KEY.get(key)
    if found is None:
        supported = ", ".join(lang.id for lang in LANGUAGES)
        raise UnsupportedLanguageError(
            f"unsupported language {name_or_id_or_extension!r}; supported: {supported}"
        )
    return found


def language_for_path(path: str | PurePath) -> Language | None:
    """The language of a file from its extension, or None when it is not supported."""
    suffix = PurePath(path).suffix.lower()
    if not suffix:
        return None
    return _BY_KEY.get(suffix)
