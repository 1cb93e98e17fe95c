"""The wire: an authenticated, encrypted, replay-proof channel from the shared secret."""
