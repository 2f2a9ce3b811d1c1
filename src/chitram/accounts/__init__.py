"""Accounts: users, web sessions, API tokens, and who may do what."""
