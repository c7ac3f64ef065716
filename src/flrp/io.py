"""Moved to :mod:`flrp.files` (a name that does not shadow the standard library's ``io``); these
names stay importable from here."""

from flrp.files import append_text, atomic_path, clean_temp_files, ensure_dir, fs_error, read_json, write_bytes, write_json, write_text

__all__ = ["append_text", "atomic_path", "clean_temp_files", "ensure_dir", "fs_error", "read_json", "write_bytes", "write_json", "write_text"]
