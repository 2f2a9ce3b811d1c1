"""Backups that restore: a logical database export plus content-addressed copies of the objects.

- :mod:`.repository`: where backups live (a folder or an S3 bucket) and how they are laid out;
- :mod:`.database`: a consistent, streamed export of every table, and loading it back;
- :mod:`.service`: create, list, verify, restore and prune, as `chitram-admin backup` runs them.
"""
