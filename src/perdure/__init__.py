"""perdure: lightweight, transactional event processing for Python."""
