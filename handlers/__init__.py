"""Conversation policy: what happens to a turn, by conversation status. Wired only by bot/app.py."""
