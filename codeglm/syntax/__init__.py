"""tree-sitter parsing shared by completion and translation: the syntax guard."""
