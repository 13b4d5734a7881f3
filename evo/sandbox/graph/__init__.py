"""The model as data: the archive format (archive), the allowed ops (ops) and the interpreter (run)."""
