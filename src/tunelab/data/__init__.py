"""Data: readers (files, built-in sets, hub), record formats, chat templates."""
