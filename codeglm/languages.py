"""The one table of languages: names, extensions, comment syntax, CodeGeeX tag, grammar,
and how HumanEval-X names each language and reports a failed assertion.

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
class UnitNodes:
    """A language's top-level tree-sitter nodes by what translation makes of them
    (``codeglm.translation.units`` splits a file into units by these)."""

    types: frozenset[str] = frozenset()  # hold a body of members (the class-like things)
    functions: frozenset[str] = frozenset()
    constants: frozenset[str] = frozenset()  # declarations that are neither (constants, typedefs, fields)
    leading: frozenset[str] = frozenset()  # belong to the item after them (comments, attributes, decorators)
    wrappers: frozenset[str] = frozenset()  # take the kind of what they wrap
    method_holders: frozenset[str] = frozenset()  # where a split class's methods go back in


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
    ``humaneval_name``: the language's name in HumanEval-X file names (``humaneval_js``),
    None for a language the benchmark does not have; ``humaneval_task_prefix``: in its
    task ids (``CPP/12``); ``assertion_pattern``: a regular expression (multi-line) for
    output that means a test assertion failed, as opposed to a crash.
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
    humaneval_task_prefix: str | None = None
    assertion_pattern: str | None = None
    unit_nodes: UnitNodes = UnitNodes()

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
        humaneval_task_prefix="Python",
        assertion_pattern='^AssertionError',
        unit_nodes=UnitNodes(
            types=frozenset({"class_definition"}),
            functions=frozenset({"function_definition"}),
            leading=frozenset({"comment", "decorator"}),
            wrappers=frozenset({"decorated_definition"}),
            method_holders=frozenset({"class_definition"}),
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
        humaneval_task_prefix="Java",
        assertion_pattern='java\\.lang\\.AssertionError',
        unit_nodes=UnitNodes(
            types=frozenset({"class_declaration", "interface_declaration", "enum_declaration", "record_declaration", "annotation_type_declaration"}),
            functions=frozenset({"method_declaration", "constructor_declaration"}),
            constants=frozenset({"local_variable_declaration", "field_declaration"}),
            leading=frozenset({"line_comment", "block_comment"}),
            method_holders=frozenset({"class_declaration"}),
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
        humaneval_task_prefix="CPP",
        assertion_pattern="Assertion `.*' failed",
        unit_nodes=UnitNodes(
            types=frozenset({"class_specifier", "struct_specifier", "union_specifier", "enum_specifier", "namespace_definition"}),
            functions=frozenset({"function_definition"}),
            constants=frozenset({"declaration", "preproc_def", "preproc_function_def", "alias_declaration", "type_definition"}),
            leading=frozenset({"comment"}),
            wrappers=frozenset({"template_declaration"}),
            method_holders=frozenset({"class_specifier", "struct_specifier"}),
        ),
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
        humaneval_task_prefix="JavaScript",
        assertion_pattern='console\\.assert failure|Assertion failed',
        unit_nodes=UnitNodes(
            types=frozenset({"class_declaration", "class"}),
            functions=frozenset({"function_declaration", "generator_function_declaration", "method_definition"}),
            constants=frozenset({"lexical_declaration", "variable_declaration"}),
            leading=frozenset({"comment", "decorator"}),
            wrappers=frozenset({"export_statement"}),
            method_holders=frozenset({"class_declaration", "class"}),
        ),
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
        humaneval_task_prefix="Go",
        assertion_pattern='Error Trace:|--- FAIL:',
        unit_nodes=UnitNodes(
            types=frozenset({"type_declaration"}),
            functions=frozenset({"function_declaration", "method_declaration"}),
            constants=frozenset({"const_declaration", "var_declaration"}),
            leading=frozenset({"comment"}),
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
        humaneval_task_prefix="Rust",
        assertion_pattern='assertion failed|assertion `left == right` failed|assertion `left != right` failed',
        unit_nodes=UnitNodes(
            types=frozenset({"struct_item", "enum_item", "union_item", "trait_item", "impl_item", "type_item", "mod_item"}),
            functions=frozenset({"function_item", "function_signature_item", "macro_definition"}),
            constants=frozenset({"const_item", "static_item"}),
            leading=frozenset({"line_comment", "block_comment", "attribute_item", "inner_attribute_item"}),
            method_holders=frozenset({"impl_item"}),
        ),
    ),
)


# HumanEval-X's languages, in the benchmark's own order (its tables and reports use it).
HUMANEVAL_X: tuple[str, ...] = ("python", "cpp", "java", "javascript", "go", "rust")
# Every language's unit nodes together: tree-sitter node types are grammar-specific, so
# translation can test a node against these without knowing its language.
ALL_UNIT_NODES = UnitNodes(
    **{
        name: frozenset().union(*(getattr(lang.unit_nodes, name) for lang in LANGUAGES))
        for name in UnitNodes.__dataclass_fields__
    }
)
# CodeGeeX was trained to translate between these: translation is offered between any two.
TRANSLATION_LANGUAGES: tuple[str, ...] = tuple(lang.id for lang in LANGUAGES if lang.humaneval_name)


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
