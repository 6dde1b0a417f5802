"""The trainer (like open_clip_train beside open_clip): params, data, main loop, distributed setup."""
